//! Stopping the environment leaves nothing: no process (by PID), no mount under its directory,
//! no bridge, no `kubepods` cgroup — after a Pod ran on the node. Its own test binary, so that
//! no other environment's node starts meanwhile (one node per machine; tests in one binary run
//! in parallel, binaries one after another).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use privateer_e2e::TestEnv;
use privateer_e2e::env::wait_pod_phase;
use privateer_e2e::process::pid_alive;
use serde_json::json;

#[tokio::test]
async fn everything_stops_when_the_environment_is_dropped() {
    let Some(env) = TestEnv::full().start_or_skip("cleanup").await.unwrap() else {
        return;
    };
    let pids = env.pids();
    assert!(pids.len() >= 6, "{pids:?}");
    assert!(pids.iter().all(|pid| pid_alive(*pid)));
    let dir = env.dir.clone();
    // A running Pod, so that there are containers, shims, mounts and a network namespace.
    let pods: Api<Pod> = Api::namespaced(env.client(), "default");
    env.push_runnable("library/busybox", "1.36", &["sh"])
        .await
        .unwrap();
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "idle"},
        "spec": {"containers": [{"name": "idle", "image": "busybox:1.36", "command": ["sleep", "3600"]}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    wait_pod_phase(&pods, "idle", "Running")
        .await
        .unwrap()
        .status
        .unwrap();
    drop(env);
    let left: Vec<u32> = pids.into_iter().filter(|pid| pid_alive(*pid)).collect();
    assert!(left.is_empty(), "processes left behind: {left:?}");
    assert!(!dir.exists(), "environment directory left behind");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let ours: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(&*dir.to_string_lossy()))
        .collect();
    assert!(ours.is_empty(), "mounts left behind: {ours:?}");
    assert!(
        !std::path::Path::new("/sys/class/net/privateer0").exists(),
        "the node's bridge was left behind"
    );
    let cgroups: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .filter(|h| h.path().join("kubepods").exists())
        .map(|h| h.path())
        .collect();
    assert!(
        cgroups.is_empty(),
        "kubepods cgroups left behind in {cgroups:?}"
    );
}
