//! Where the environment's programs are, and what to do when one is missing.

use std::path::{Path, PathBuf};

use anyhow::bail;

const VERSIONS: &str = include_str!("../controlplane/versions.env");

/// `PRIVATEER_CACHE`, or `~/.cache/privateer`: built tools that outlive a clone.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("PRIVATEER_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cache/privateer"),
    }
}

fn version(key: &str) -> &'static str {
    VERSIONS
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or("unknown")
}

/// The pinned Kubernetes version (`tests/controlplane/versions.env`).
pub fn kubernetes_version() -> &'static str {
    version("KUBERNETES_VERSION")
}

/// Where `tests/controlplane/build.sh` puts the control plane for the pinned versions.
pub fn controlplane_bin_dir() -> PathBuf {
    cache_dir()
        .join("controlplane")
        .join(format!(
            "k8s-{}_etcd-{}_helm-{}",
            version("KUBERNETES_VERSION"),
            version("ETCD_VERSION"),
            version("HELM_VERSION")
        ))
        .join("bin")
}

/// The moto venv made by `tests/setup.sh`.
pub fn moto_server() -> PathBuf {
    cache_dir().join("moto-venv/bin/moto_server")
}

/// A supply-chain test peer built by `tests/peers/build.sh` (cosign, oras, referrers-registry).
pub fn peer(name: &str) -> PathBuf {
    cache_dir().join("peers/bin").join(name)
}

/// Debian's `docker-registry`.
pub fn docker_registry() -> PathBuf {
    PathBuf::from("/usr/bin/docker-registry")
}

/// The `privateer` binary of this build (`cargo test --workspace` builds it beside the tests),
/// or `PRIVATEER_BIN`.
pub fn privateer_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PRIVATEER_BIN") {
        return PathBuf::from(path);
    }
    // Test executables live in target/<profile>/deps; the binary in target/<profile>.
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("privateer")
}

/// The programs a run needs, checked up front so a missing one is named, not discovered late.
pub fn require(paths: &[PathBuf]) -> anyhow::Result<()> {
    let missing: Vec<String> = paths
        .iter()
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing: {} (run `just setup`, which installs the Debian packages, the moto venv and \
             builds the control plane)",
            missing.join(", ")
        );
    }
    Ok(())
}

/// True when CI demands the environment (`PRIVATEER_REQUIRE_TESTENV`): missing parts fail.
pub fn environment_required() -> bool {
    std::env::var_os("PRIVATEER_REQUIRE_TESTENV").is_some_and(|v| !v.is_empty() && v != "0")
}

/// The workspace's root directory (where `target/` and the `Dockerfile` are).
pub fn workspace_dir() -> PathBuf {
    // At run time first: one cached target directory serves several clones, and cargo reuses a
    // binary built in another clone when its sources are older, so a path baked in at
    // compile time may name that other clone. `just` exports PRIVATEER_WORKSPACE; cargo sets
    // CARGO_MANIFEST_DIR for the tests it runs.
    if let Some(dir) = std::env::var_os("PRIVATEER_WORKSPACE") {
        return PathBuf::from(dir);
    }
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    // This crate (tests/) or a sibling crate (crates/*) runs: the workspace is above.
    manifest_dir
        .ancestors()
        .find(|dir| dir.join("justfile").is_file())
        .map(Path::to_path_buf)
        .unwrap_or(manifest_dir)
}

/// The static sandbox program `tests/setup.sh` builds (`tests/node/pause.rs`).
pub fn pause_program() -> PathBuf {
    cache_dir().join("bin/pause")
}
