//! One real node: containerd + runc + CNI (Debian's), kubelet, kube-proxy and kube-scheduler
//! (built from the control plane's Kubernetes module). Every file, socket and state path lives
//! under `<environment>/node/`; dropping the node kills its containers and shims, unmounts what
//! it mounted and removes its cgroups, then [`network::Network`] removes the bridge.

pub mod network;
mod runtime;
pub mod teardown;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Node as NodeObject;

use crate::pki::Ca;
use crate::process::{Managed, free_port};
pub use network::{NODE_IP, POD_SUBNET};
pub use runtime::Mirror;

/// The node's name (and hostname override).
pub const NODE_NAME: &str = "privateer-node";
/// The sandbox image containerd runs for every Pod, served from the local images registry.
pub const SANDBOX_IMAGE: &str = "registry.k8s.io/pause:3.10";

/// Paths in the command lines of the node's programs, by which a sweep finds what a killed
/// earlier run left behind.
pub const STALE_MARKERS: [&str; 4] = [
    "/node/containerd/config.toml",
    "/node/containerd/containerd.sock",
    "/node/kubelet/config.yaml",
    "/node/kube-proxy.yaml",
];

/// What the node is told about the cluster.
pub struct NodeSpec<'a> {
    /// kubelet, kube-proxy and kube-scheduler are here.
    pub bin: &'a Path,
    /// The environment's directory; the node lives in `<dir>/node`.
    pub dir: &'a Path,
    pub ca: &'a Ca,
    /// The API server, as the node's programs reach it.
    pub api_url: &'a str,
    /// `(kubelet, kube-proxy, kube-scheduler)` bearer tokens.
    pub tokens: [&'a str; 3],
    /// Registry hosts and where containerd pulls them from.
    pub mirrors: Vec<Mirror>,
}

/// The running node; dropping it stops everything it started.
pub struct Node {
    dir: PathBuf,
    /// containerd, kubelet, kube-proxy, kube-scheduler (stopped in reverse).
    processes: Vec<Managed>,
    proxy: PathBuf,
}

impl Node {
    pub async fn start(spec: NodeSpec<'_>, client: &kube::Client) -> anyhow::Result<Node> {
        let dir = spec.dir.join("node");
        std::fs::create_dir_all(&dir)?;
        ensure_disk_room(&dir)?;
        let mut node = Node {
            dir: dir.clone(),
            processes: Vec::new(),
            proxy: spec.bin.join("kube-proxy"),
        };
        let ca_file = dir.join("ca.crt");
        spec.ca.write_cert(&ca_file)?;
        let socket = runtime::write_config(&dir, &spec.mirrors)?;
        let mut containerd = std::process::Command::new("containerd");
        containerd
            .arg("--config")
            .arg(dir.join("containerd/config.toml"));
        let containerd = Managed::spawn("containerd", containerd, &dir)?;
        node.processes.push(containerd);
        wait_for_socket(&socket, &mut node.processes[0]).await?;

        let kubeconfig = |name: &str, token: &str| -> anyhow::Result<PathBuf> {
            let path = dir.join(format!("{name}.kubeconfig"));
            std::fs::write(
                &path,
                crate::controlplane::kubeconfig_yaml(spec.api_url, &ca_file, token, name),
            )?;
            Ok(path)
        };
        let kubelet = kubelet_command(
            &spec,
            &dir,
            &ca_file,
            &socket,
            &kubeconfig("kubelet", spec.tokens[0])?,
        )?;
        node.processes
            .push(Managed::spawn("kubelet", kubelet, &dir)?);
        let proxy = proxy_command(&spec, &dir, &kubeconfig("kube-proxy", spec.tokens[1])?)?;
        node.processes
            .push(Managed::spawn("kube-proxy", proxy, &dir)?);
        let mut scheduler = std::process::Command::new(spec.bin.join("kube-scheduler"));
        let scheduler_kubeconfig = kubeconfig("kube-scheduler", spec.tokens[2])?;
        scheduler
            .arg(format!("--kubeconfig={}", scheduler_kubeconfig.display()))
            .arg(format!(
                "--authentication-kubeconfig={}",
                scheduler_kubeconfig.display()
            ))
            .arg(format!(
                "--authorization-kubeconfig={}",
                scheduler_kubeconfig.display()
            ))
            .args(["--leader-elect=false", "--bind-address=127.0.0.1", "--v=1"])
            .arg(format!("--secure-port={}", free_port()?));
        node.processes
            .push(Managed::spawn("kube-scheduler", scheduler, &dir)?);
        node.wait_ready(client).await?;
        Ok(node)
    }

    /// Until the Node object reports Ready (every process checked alive meanwhile).
    async fn wait_ready(&mut self, client: &kube::Client) -> anyhow::Result<()> {
        let nodes: kube::Api<NodeObject> = kube::Api::all(client.clone());
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(node)) = nodes.get_opt(NODE_NAME).await
                && node
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            {
                return Ok(());
            }
            for process in &mut self.processes {
                process.check_alive()?;
            }
            if Instant::now() > deadline {
                bail!(
                    "node {NODE_NAME} not Ready after 120 s; kubelet log:\n{}",
                    self.processes[1].log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub fn pids(&self) -> Vec<u32> {
        self.processes.iter().map(Managed::pid).collect()
    }

    /// (name, PID) of containerd, kubelet, kube-proxy, kube-scheduler.
    pub fn named_pids(&self) -> Vec<(String, u32)> {
        self.processes
            .iter()
            .map(|p| (p.name().to_owned(), p.pid()))
            .collect()
    }

    /// Kills containerd and starts it again; returns once its socket is back.
    pub async fn restart_containerd(&mut self) -> anyhow::Result<()> {
        let socket = self.dir.join("containerd/containerd.sock");
        let containerd = &mut self.processes[0];
        containerd.stop();
        let _ = std::fs::remove_file(&socket);
        containerd.restart()?;
        wait_for_socket(&socket, containerd).await
    }

    /// Lets the node pull from one more plain-HTTP registry, without credentials of its own (a
    /// Pod's imagePullSecrets then authenticate).
    pub fn add_registry(&self, host: &str) -> anyhow::Result<()> {
        runtime::write_host(&self.dir, host, host)
    }

    /// containerd's CLI against this node's containerd (namespace `k8s.io`, the CRI's).
    pub fn ctr(&self) -> std::process::Command {
        let mut command = std::process::Command::new("ctr");
        command
            .arg("--address")
            .arg(self.dir.join("containerd/containerd.sock"))
            .args(["--namespace", "k8s.io"]);
        command
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // The kubelet first, so that nothing restarts what is killed below.
        while self.processes.len() > 1 {
            if let Some(mut process) = self.processes.pop() {
                process.stop();
            }
        }
        let socket = self.dir.join("containerd/containerd.sock");
        teardown::kill_containers(&[&socket.display().to_string()]);
        if let Some(mut containerd) = self.processes.pop() {
            containerd.stop();
        }
        teardown::unmount_under(&self.dir);
        teardown::remove_cgroups();
        teardown::remove_log_links(&self.dir.join("kubelet/logs"));
        teardown::remove_cni_results();
        // kube-proxy's own cleanup mode removes the iptables rules it wrote.
        let _ = std::process::Command::new(&self.proxy)
            .arg("--cleanup")
            .output();
    }
}

async fn wait_for_socket(socket: &Path, containerd: &mut Managed) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        containerd.check_alive()?;
        if Instant::now() > deadline {
            bail!("containerd did not open {} in 30 s", socket.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn kubelet_command(
    spec: &NodeSpec<'_>,
    dir: &Path,
    ca_file: &Path,
    socket: &Path,
    kubeconfig: &Path,
) -> anyhow::Result<std::process::Command> {
    let root = dir.join("kubelet");
    std::fs::create_dir_all(root.join("logs"))?;
    let serving = spec
        .ca
        .serving_cert(&root, "kubelet", &[&NODE_IP.to_string(), NODE_NAME])?;
    let config = root.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroup v1 with the cgroupfs driver is what this machine has; accepted explicitly.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
address: {NODE_IP}
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz}
tlsCertFile: {cert}
tlsPrivateKeyFile: {key}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: Webhook}}
containerRuntimeEndpoint: unix://{socket}
podLogsDir: {logs}
volumePluginDir: {plugins}
# A test machine's disk and memory are whatever they are: never evict for them.
evictionHard: {{memory.available: 1Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
makeIPTablesUtilChains: false
resolvConf: /etc/resolv.conf
syncFrequency: 10s
fileCheckFrequency: 10s
nodeStatusUpdateFrequency: 2s
",
            port = free_port()?,
            healthz = free_port()?,
            cert = serving.cert.display(),
            key = serving.key.display(),
            ca = ca_file.display(),
            socket = socket.display(),
            logs = root.join("logs").display(),
            plugins = root.join("volume-plugins").display(),
        ),
    )
    .context("write the kubelet configuration")?;
    let mut command = std::process::Command::new(spec.bin.join("kubelet"));
    command
        .arg(format!("--config={}", config.display()))
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!("--root-dir={}", root.join("root").display()))
        .arg(format!("--cert-dir={}", root.join("pki").display()))
        .arg(format!("--node-ip={NODE_IP}"))
        .arg(format!("--hostname-override={NODE_NAME}"))
        .arg("--v=1");
    Ok(command)
}

fn proxy_command(
    spec: &NodeSpec<'_>,
    dir: &Path,
    kubeconfig: &Path,
) -> anyhow::Result<std::process::Command> {
    let config = dir.join("kube-proxy.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {{kubeconfig: {kubeconfig}}}
hostnameOverride: {NODE_NAME}
bindAddress: {NODE_IP}
clusterCIDR: {POD_SUBNET}
healthzBindAddress: 127.0.0.1:{healthz}
metricsBindAddress: 127.0.0.1:{metrics}
# Services answer on ClusterIPs only, never on a port of this machine's addresses.
nodePortAddresses: [{NODE_IP}/32]
# Never touch the machine's conntrack sysctls (they are global).
conntrack: {{maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}}
",
            kubeconfig = kubeconfig.display(),
            healthz = free_port()?,
            metrics = free_port()?,
        ),
    )?;
    let mut command = std::process::Command::new(spec.bin.join("kube-proxy"));
    command
        .arg(format!("--config={}", config.display()))
        .arg("--v=1");
    Ok(command)
}

/// Free space the node needs, in percent of its filesystem: its kubelet evicts below 1% and
/// taints itself with disk pressure, after which no Pod is scheduled and tests only time out.
const DISK_FREE_PERCENT_MIN: u64 = 2;

fn ensure_disk_room(dir: &Path) -> anyhow::Result<()> {
    let out = std::process::Command::new("df")
        .args(["-B1", "--output=avail,size"])
        .arg(dir)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let numbers: Vec<u64> = text
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    let [avail, size] = numbers[..] else {
        bail!("df {}: unexpected output {text:?}", dir.display());
    };
    anyhow::ensure!(
        avail.saturating_mul(100) >= size.saturating_mul(DISK_FREE_PERCENT_MIN),
        "{}: {} GiB free of {} GiB, under {DISK_FREE_PERCENT_MIN}%: the node's kubelet would \
         taint itself with disk pressure and start no Pod. Free space first (old test \
         binaries under the target directory's debug/deps are the usual bulk).",
        dir.display(),
        avail >> 30,
        size >> 30
    );
    Ok(())
}
