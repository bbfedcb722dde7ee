//! What the `privateer copy` end-to-end tests share: scratch directories with their
//! registries, running the binary as a copy Job runs it, and reading what it reported.
#![allow(dead_code)] // each test file uses its own part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use privateer_e2e::images::Pusher;
use privateer_e2e::registry::{Registry, oci_client};
use serde_json::Value;

/// A scratch directory removed at the end, with the registries it holds stopped by drop.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Option<Self> {
        if !Path::new("/usr/bin/docker-registry").exists() {
            assert!(
                std::env::var_os("PRIVATEER_REQUIRE_TESTENV").is_none(),
                "docker-registry is missing: run `just setup`"
            );
            eprintln!("!!! SKIPPED {name}: docker-registry is missing (just setup)");
            return None;
        }
        let dir =
            std::env::temp_dir().join(format!("privateer-copy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Some(Self { dir })
    }

    pub fn registry(&self, name: &str, credentials: Option<(&str, &str)>) -> Registry {
        Registry::start(name, &self.dir, credentials).unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct Run {
    pub output: Output,
    /// The termination message, parsed.
    pub result: Value,
}

impl Run {
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }
    pub fn events(&self, kind: &str) -> Vec<Value> {
        self.stderr()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["event"] == kind)
            .collect()
    }
}

pub fn privateer_copy(dir: &Path, args: &[&str]) -> Run {
    let log = dir.join("termination-log");
    let _ = std::fs::remove_file(&log);
    let output = Command::new(env!("CARGO_BIN_EXE_privateer"))
        .arg("copy")
        .args(args)
        .arg("--json")
        .arg("--termination-log")
        .arg(&log)
        .args(["--retries", "3", "--retry-delay-ms", "50"])
        .output()
        .unwrap();
    let result = std::fs::read_to_string(&log)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    Run { output, result }
}

pub fn insecure(registries: &[&Registry]) -> Vec<String> {
    registries
        .iter()
        .flat_map(|r| ["--insecure-registry".to_owned(), r.host.clone()])
        .collect()
}

pub fn pusher(registry: &Registry) -> Pusher {
    Pusher::new(oci_client(), registry.auth())
}

pub async fn has_manifest(registry: &Registry, repository: &str, at: &str) -> bool {
    pusher(registry)
        .pull_manifest(&registry.host, repository, at)
        .await
        .is_ok()
}

/// `privateer copy <from>/<src> <to>/<dst> [extra…]`, both registries over plain HTTP.
pub fn copy_between(
    scratch: &Scratch,
    from: &Registry,
    src: &str,
    to: &Registry,
    dst: &str,
    extra: &[&str],
) -> Run {
    let source = format!("{}/{src}", from.host);
    let destination = format!("{}/{dst}", to.host);
    let mut args = vec![source.as_str(), destination.as_str()];
    args.extend_from_slice(extra);
    let plain = insecure(&[from, to]);
    args.extend(plain.iter().map(String::as_str));
    privateer_copy(&scratch.dir, &args)
}
