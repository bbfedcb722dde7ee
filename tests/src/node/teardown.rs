//! What a stopped node leaves unless it is removed: container processes and their shims,
//! mounts (rootfs, shm, network namespaces, the kubelet's volumes), the `kubepods` cgroups and
//! the kubelet's log symlinks. Each sweep is also run before a node starts, for what a killed
//! earlier run left.

use std::path::{Path, PathBuf};

/// PIDs in every `kubepods` cgroup (every hierarchy of cgroup v1, or the unified one).
fn pod_pids() -> Vec<u32> {
    let mut pids = Vec::new();
    for root in kubepods_roots() {
        for dir in walk_dirs(&root) {
            if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
            }
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// `/sys/fs/cgroup/<hierarchy>/kubepods` (v1) and `/sys/fs/cgroup/kubepods` (v2).
fn kubepods_roots() -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    let mut roots = vec![base.join("kubepods")];
    if let Ok(entries) = std::fs::read_dir(base) {
        for entry in entries.flatten() {
            // Co-mounted hierarchies appear twice (cpu,cpuacct and its symlinks).
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                roots.push(entry.path().join("kubepods"));
            }
        }
    }
    roots.retain(|r| r.is_dir());
    roots
}

/// `dir` and every directory below it, deepest last.
fn walk_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_owned()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(entries) = std::fs::read_dir(&out[i]) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(entry.path());
                }
            }
        }
        i += 1;
    }
    out
}

/// PIDs whose command line mentions `needle` (the shims carry containerd's socket path).
fn pids_mentioning(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(needle)
        {
            pids.push(pid);
        }
    }
    pids
}

fn kill(pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let mut command = std::process::Command::new("kill");
    command.arg("-KILL");
    command.args(pids.iter().map(u32::to_string));
    let _ = command.output();
}

/// Kills every container process and every process whose command line mentions one of
/// `needles` (the shims name containerd's socket), then waits (bounded) until they are gone.
pub fn kill_containers(needles: &[&str]) {
    for _ in 0..50 {
        let mut pids = pod_pids();
        for needle in needles {
            pids.extend(
                pids_mentioning(needle)
                    .into_iter()
                    .filter(|p| *p != std::process::id()),
            );
        }
        if pids.is_empty() {
            return;
        }
        kill(&pids);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Mount points at or below `dir`, deepest first (from /proc/self/mountinfo).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        // mountinfo escapes spaces and the like as octal; our directories have none.
        .map(PathBuf::from)
        .filter(|m| m.starts_with(dir))
        .collect();
    mounts.sort();
    mounts.dedup();
    mounts.reverse();
    mounts
}

/// Unmounts everything below `dir` (lazily where a mount is still busy).
pub fn unmount_under(dir: &Path) {
    for _ in 0..5 {
        let mounts = mounts_under(dir);
        if mounts.is_empty() {
            return;
        }
        for mount in mounts {
            let ok = std::process::Command::new("umount")
                .arg(&mount)
                .output()
                .is_ok_and(|o| o.status.success());
            if !ok {
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(&mount)
                    .output();
            }
        }
    }
}

/// Removes the `kubepods` cgroups, deepest first (their processes must be gone).
pub fn remove_cgroups() {
    for root in kubepods_roots() {
        for dir in walk_dirs(&root).iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The kubelet links `/var/log/containers/*.log` to the Pod logs; removes links into `logs`.
pub fn remove_log_links(logs: &Path) {
    let Ok(entries) = std::fs::read_dir("/var/log/containers") else {
        return;
    };
    for entry in entries.flatten() {
        if let Ok(target) = std::fs::read_link(entry.path())
            && target.starts_with(logs)
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Everything left by any node, before a new one starts (the machine-wide lock is held, so
/// nothing of these belongs to a live node): node programs, containers, cgroups, log links.
pub fn sweep_stale() {
    // The node's programs name files under `<environment>/node/` (see `super::Layout`).
    kill_containers(&super::STALE_MARKERS);
    unmount_stale();
    remove_cgroups();
    remove_cni_results();
    if let Ok(entries) = std::fs::read_dir("/var/log/containers") {
        for entry in entries.flatten() {
            if std::fs::read_link(entry.path()).is_ok() && !entry.path().exists() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Unmounts what a killed earlier node left (mounts under some `<environment>/node/`).
pub fn unmount_stale() {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut stale: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|m| m.contains("/node/containerd/") || m.contains("/node/kubelet/"))
        .map(PathBuf::from)
        .collect();
    stale.sort();
    for mount in stale.iter().rev() {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(mount)
            .output();
    }
}

/// libcni caches each attachment's result under /var/lib/cni/results as
/// `<network>-<container>-<interface>`; the node's network is called `privateer`.
pub fn remove_cni_results() {
    let Ok(entries) = std::fs::read_dir("/var/lib/cni/results") else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("privateer-")
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
