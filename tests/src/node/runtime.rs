//! containerd's configuration for the node: its own root, state, socket and runc root under
//! `<node>/containerd`, the CNI bridge, and registry hosts the way real nodes map them
//! (`hosts.toml` per host under `config_path`; credentials in the CRI registry configuration,
//! as a node image bakes in a registry credential).

use std::path::{Path, PathBuf};

use super::network::{BRIDGE, NODE_IP, POD_SUBNET};

/// A registry host as image references name it, and the local registry that serves it.
#[derive(Clone, Debug)]
pub struct Mirror {
    /// `docker.io`, `registry.k8s.io`, `<account>.dkr.ecr.<region>.amazonaws.com`, or the local
    /// registry's own `host:port`.
    pub host: String,
    /// `host:port` of the local registry (plain HTTP).
    pub endpoint: String,
    /// Node-level credentials for it (the ECR target), if it asks.
    pub credentials: Option<(String, String)>,
}

/// containerd pulls images named `host/…` from the plain-HTTP registry at `endpoint`
/// (`certs.d/<host>/hosts.toml`, read at each pull, so a registry can be added to a running
/// node).
pub fn write_host(node: &Path, host: &str, endpoint: &str) -> anyhow::Result<()> {
    let dir = node.join("containerd/certs.d").join(host);
    std::fs::create_dir_all(&dir)?;
    // `server` is the only upstream: nothing falls back to the real registry.
    std::fs::write(
        dir.join("hosts.toml"),
        format!(
            "server = \"http://{endpoint}\"\n\n[host.\"http://{endpoint}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    )?;
    Ok(())
}

/// Writes `config.toml`, the `hosts.toml` files and the CNI configuration; returns the socket.
pub fn write_config(node: &Path, mirrors: &[Mirror]) -> anyhow::Result<PathBuf> {
    let dir = node.join("containerd");
    let hosts = dir.join("certs.d");
    let cni = node.join("cni");
    std::fs::create_dir_all(&hosts)?;
    std::fs::create_dir_all(cni.join("net.d"))?;
    let socket = dir.join("containerd.sock");
    let mut auth = String::new();
    for mirror in mirrors {
        write_host(node, &mirror.host, &mirror.endpoint)?;
        if let Some((user, password)) = &mirror.credentials {
            auth.push_str(&format!(
                "\n[plugins.\"io.containerd.grpc.v1.cri\".registry.configs.\"{}\".auth]\n  username = \"{user}\"\n  password = \"{password}\"\n",
                mirror.endpoint
            ));
        }
    }
    std::fs::write(
        dir.join("config.toml"),
        format!(
            r#"version = 2
root = "{root}"
state = "{state}"
# Plugins that would reach outside the node's directory, or are not used.
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

# The tasks service needs the v1 runtime loaded; its state stays here too.
[plugins."io.containerd.runtime.v1.linux"]
  runtime_root = "{runc}-v1"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox}"
  # This machine's root may not lower oom_score_adj (no CAP_SYS_RESOURCE).
  restrict_oom_score_adj = true
  # Pod network namespaces mounted under the state directory, not /var/run/netns.
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        Root = "{runc}"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_conf}"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{hosts}"
{auth}"#,
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            socket = socket.display(),
            sandbox = super::SANDBOX_IMAGE,
            runc = dir.join("runc").display(),
            cni_conf = cni.join("net.d").display(),
            hosts = hosts.display(),
        ),
    )?;
    // The bridge exists already (network.rs) with the node's address as the Pods' gateway;
    // no ipMasq: nothing a Pod sends is rewritten to leave the machine.
    std::fs::write(
        cni.join("net.d/10-privateer.conflist"),
        serde_json::to_vec_pretty(&serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "privateer",
            "plugins": [{
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_SUBNET, "gateway": NODE_IP.to_string()}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": cni.join("ipam").display().to_string(),
                },
            }],
        }))?,
    )?;
    Ok(socket)
}
