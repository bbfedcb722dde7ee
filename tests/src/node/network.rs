//! The node's Pod network on this machine only: one Linux bridge with the node's address, a
//! pod subnet behind it, and a firewall chain that drops whatever a Pod sends anywhere but this
//! machine and other Pods (no masquerade, no route out), and another that refuses the host's
//! own traffic to a ClusterIP no Service answers. One node at a time per machine: the
//! names are fixed, so a machine-wide lock guards them.

use std::fs::File;
use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{Context, bail};

/// The bridge Pods attach to; its address is the node's (what Pods reach the host on).
pub const BRIDGE: &str = "privateer0";
/// The node's own address on the bridge: servers Pods must reach listen here.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 217, 0, 1);
/// The Pods' addresses.
pub const POD_SUBNET: &str = "10.217.0.0/24";
/// ClusterIPs (the API server's `--service-cluster-ip-range`); `kubernetes.default` is .1.
pub const SERVICE_SUBNET: &str = "10.0.0.0/24";
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// Our FORWARD chain: Pod traffic that would leave the machine is dropped here.
const CHAIN: &str = "PRIVATEER-NODE";
/// Our OUTPUT chain: the host's traffic to a ClusterIP kube-proxy has not (yet) translated.
const HOST_CHAIN: &str = "PRIVATEER-HOST";

/// Held while a node exists on this machine; waits for another environment's node to end.
pub struct NodeLock {
    _file: File,
}

impl NodeLock {
    pub fn acquire() -> anyhow::Result<Self> {
        let path = crate::tools::cache_dir().join("node.lock");
        std::fs::create_dir_all(crate::tools::cache_dir())?;
        let file = File::create(&path).with_context(|| format!("create {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                eprintln!(
                    "waiting for the node of another environment on this machine ({} is locked; `just dev-down` stops the dev one)",
                    path.display()
                );
                file.lock()?;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        Ok(Self { _file: file })
    }
}

/// `ip`/`iptables` with arguments; fails with its stderr.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The bridge and the firewall chain; removed on drop.
pub struct Network {
    _private: (),
}

impl Network {
    /// Removes what a killed earlier environment left, then creates the bridge and the chain.
    pub fn create() -> anyhow::Result<Self> {
        remove();
        let address = format!("{NODE_IP}/24");
        run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
        let network = Self { _private: () };
        run("ip", &["addr", "add", &address, "dev", BRIDGE])?;
        run("ip", &["link", "set", BRIDGE, "up"])?;
        // Forwarding only between Pods (a ClusterIP answered by another Pod) and back; the CNI
        // bridge plugin switches ip_forward on, so whatever else a Pod sends is dropped here.
        run("iptables", &["-N", CHAIN])?;
        run("iptables", &["-A", CHAIN, "-d", POD_SUBNET, "-j", "RETURN"])?;
        run("iptables", &["-A", CHAIN, "-s", POD_SUBNET, "-j", "DROP"])?;
        run("iptables", &["-A", CHAIN, "-i", BRIDGE, "-j", "DROP"])?;
        run("iptables", &["-I", "FORWARD", "1", "-j", CHAIN])?;
        // A ClusterIP has no route of its own: until kube-proxy programs a Service (or after
        // it removed one) the API server's call to it would follow the default route off this
        // machine. The filter table sees packets after kube-proxy's DNAT, so only untranslated
        // ones are refused here, at once.
        run("iptables", &["-N", HOST_CHAIN])?;
        run(
            "iptables",
            &[
                "-A",
                HOST_CHAIN,
                "-d",
                SERVICE_SUBNET,
                "-p",
                "tcp",
                "-j",
                "REJECT",
                "--reject-with",
                "tcp-reset",
            ],
        )?;
        run(
            "iptables",
            &["-A", HOST_CHAIN, "-d", SERVICE_SUBNET, "-j", "REJECT"],
        )?;
        run("iptables", &["-I", "OUTPUT", "1", "-j", HOST_CHAIN])?;
        Ok(network)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        remove();
    }
}

fn remove() {
    for (hook, chain) in [("FORWARD", CHAIN), ("OUTPUT", HOST_CHAIN)] {
        while succeeds("iptables", &["-D", hook, "-j", chain]) {}
        if succeeds("iptables", &["-F", chain]) {
            let _ = run("iptables", &["-X", chain]);
        }
    }
    if std::path::Path::new(&format!("/sys/class/net/{BRIDGE}")).exists() {
        let _ = run("ip", &["link", "delete", BRIDGE]);
    }
}
