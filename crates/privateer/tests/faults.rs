//! Fault drills on the real node, with privateer installed by Helm and a slow "public" source
//! (a throttling proxy), so that a copy Job is mid-blob when something fails: the leader
//! privateer Pod is killed, the copy container is killed, containerd restarts. Each ends with
//! nothing lost: the ImageMirror Ready, the workload Pod released (not gated past
//! `gateTimeout`) and Running from the mirror, exactly one copy Job for the mirror and digest,
//! and no manifest in the target before the copy finished.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use privateer_e2e::TestEnv;
use privateer_e2e::node::NODE_IP;
use privateer_e2e::throttle::Throttle;
use serde_json::json;

mod common;
use common::installed::*;

const APPS: &str = "apps";
const IMAGE: &str = "slow:1.0";
/// 6 MiB at 512 KiB/s: a copy of about 12 s.
const PAYLOAD: usize = 6 << 20;
const RATE: usize = 512 << 10;
const GATE_TIMEOUT_SECS: u64 = 180;

/// The environment, a slow source serving `docker.io/library/slow:1.0`, privateer installed,
/// and a Deployment of that image whose Pod waits at the gate; returns once its copy Pod runs.
async fn slow_copy_running(test: &str) -> Option<(TestEnv, Throttle, Pod)> {
    let env = TestEnv::full().start_or_skip(test).await.unwrap()?;
    let source = env.source.as_ref().unwrap();
    privateer_e2e::images::Pusher::new(privateer_e2e::registry::oci_client(), source.auth())
        .push_runnable_with_payload(
            &source.host,
            "library/slow",
            "1.0",
            &["sleep", "3600"],
            PAYLOAD,
        )
        .await
        .unwrap();
    let throttle = Throttle::start(NODE_IP, source.host.parse().unwrap(), RATE)
        .await
        .unwrap();
    let extra = format!(
        "config:\n  webhook: {{gateTimeout: {GATE_TIMEOUT_SECS}s}}\nextraEnv: [{{name: RUST_LOG, value: \"info,privateer_controller=debug\"}}]\n"
    );
    install(&env, &throttle.host, &extra, APPS).await;
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "slow", "namespace": APPS},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "slow"}},
            "template": {"metadata": {"labels": {"app": "slow"}},
                "spec": {"terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "app", "image": IMAGE}]}}}});
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(env.client(), APPS)
        .create(
            &PostParams::default(),
            &serde_json::from_value(deployment).unwrap(),
        )
        .await
        .unwrap();
    let pod = eventually(60, "the copy Pod runs", async || {
        let pods = copy_pods(&env).await;
        pods.into_iter()
            .find(|p| phase(p) == "Running")
            .ok_or_else(|| "no copy Pod Running".to_owned())
    })
    .await;
    // A moment into the blob.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Some((env, throttle, pod))
}

async fn copy_pods(env: &TestEnv) -> Vec<Pod> {
    let mut pods = Vec::new();
    for job in copy_jobs(env, IMAGE).await {
        let label = format!("job-name={}", job.metadata.name.unwrap());
        pods.extend(
            Api::<Pod>::namespaced(env.client(), NAMESPACE)
                .list(&ListParams::default().labels(&label))
                .await
                .unwrap()
                .items,
        );
    }
    pods
}

/// SIGKILL to the Pod's (first) container, through the node's containerd.
fn kill_container(env: &TestEnv, pod: &Pod) {
    let id = pod
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .container_id
        .clone()
        .unwrap();
    let id = id.trim_start_matches("containerd://");
    let out = env
        .node()
        .unwrap()
        .ctr()
        .args(["task", "kill", "--signal", "SIGKILL", id])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The tags of every repository in the target registry.
fn target_tags(env: &TestEnv) -> Vec<String> {
    let target = env.target.as_ref().unwrap();
    let (user, password) = target.credentials.clone().unwrap();
    let get = |path: &str| -> serde_json::Value {
        let out = std::process::Command::new("curl")
            .args(["-sf", "-u", &format!("{user}:{password}")])
            .arg(format!("http://{}{path}", target.host))
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    };
    let mut tags = Vec::new();
    for repository in get("/v2/_catalog")["repositories"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let repository = repository.as_str().unwrap();
        for tag in get(&format!("/v2/{repository}/tags/list"))["tags"]
            .as_array()
            .into_iter()
            .flatten()
        {
            tags.push(format!("{repository}:{}", tag.as_str().unwrap()));
        }
    }
    tags
}

/// Nothing lost: the mirror Ready, one Job for it, the Pod released and Running from it.
async fn nothing_lost(env: &TestEnv) {
    let mirror = mirror_ready(env, IMAGE, 120).await;
    let jobs = copy_jobs(env, IMAGE).await;
    assert_eq!(
        jobs.len(),
        1,
        "one copy Job per mirror and digest: {jobs:?}"
    );
    let digest = mirror.status.unwrap().source_digest.unwrap();
    let pods: Api<Pod> = Api::namespaced(env.client(), APPS);
    let pod = eventually(
        GATE_TIMEOUT_SECS,
        "the Pod runs from the mirror",
        async || {
            let all = pods
                .list(&ListParams::default().labels("app=slow"))
                .await
                .map_err(|e| e.to_string())?;
            all.items
                .into_iter()
                .find(|p| phase(p) == "Running")
                .ok_or_else(|| "no Running Pod".to_owned())
        },
    )
    .await;
    let spec = pod.spec.as_ref().unwrap();
    assert!(spec.scheduling_gates.as_ref().is_none_or(Vec::is_empty));
    let image = spec.containers[0].image.clone().unwrap();
    assert!(
        image.starts_with(&ecr_prefix()) && image.ends_with(&digest),
        "{image}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_mid_copy_hands_over_within_the_lease_and_loses_nothing() {
    let Some((env, _throttle, _copy)) = slow_copy_running("leader killed mid-copy").await else {
        return;
    };
    let leases: Api<Lease> = Api::namespaced(env.client(), NAMESPACE);
    let holder = |lease: &Lease| {
        lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default()
    };
    let operator: Api<Pod> = Api::namespaced(env.client(), NAMESPACE);
    let replicas = operator_pods(&env).await;
    let lease = leases.get("privateer-controller").await.unwrap();
    let leader = replicas
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .find(|name| holder(&lease).contains(name.as_str()))
        .expect("a replica holds the Lease");
    // A crash, not a shutdown (which hands the Lease over at once): SIGKILL to its container,
    // and the Pod deleted so that the kubelet does not start it again under the same name.
    let leader_pod = replicas
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(leader.as_str()))
        .unwrap();
    let killed = Instant::now();
    kill_container(&env, leader_pod);
    operator
        .delete(&leader, &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let successor = eventually(60, "a standby takes the Lease", async || {
        let lease = leases
            .get("privateer-controller")
            .await
            .map_err(|e| e.to_string())?;
        let now = holder(&lease);
        if !now.is_empty() && !now.contains(leader.as_str()) {
            Ok(now)
        } else {
            Err(now)
        }
    })
    .await;
    let takeover = killed.elapsed();
    eprintln!(
        "{successor} took over {:.1} s after the leader was killed",
        takeover.as_secs_f64()
    );
    // The lease (15 s by default) runs out, then a standby's next try takes it.
    assert!(
        takeover < Duration::from_secs(15 + 10),
        "hand-over took {takeover:?}"
    );
    nothing_lost(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_copy_container_mid_blob_retries_without_a_partial_manifest() {
    let Some((env, _throttle, copy)) = slow_copy_running("copy container killed mid-blob").await
    else {
        return;
    };
    kill_container(&env, &copy);
    // Blobs go first and the manifest last: nothing is tagged in the target yet.
    let tags = target_tags(&env);
    assert!(
        tags.is_empty(),
        "a manifest before the copy finished: {tags:?}"
    );
    nothing_lost(&env).await;
    let job = copy_jobs(&env, IMAGE).await.remove(0);
    let status = job.status.unwrap();
    assert_eq!(status.succeeded, Some(1), "{status:?}");
    assert!(
        status.failed.unwrap_or(0) >= 1,
        "the killed Pod: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_containerd_mid_copy_keeps_the_copy_running() {
    let Some((mut env, _throttle, copy)) = slow_copy_running("containerd restarted").await else {
        return;
    };
    env.restart_containerd().await.unwrap();
    nothing_lost(&env).await;
    // The copy Pod ran through: its container survived under its shim.
    let job = copy_jobs(&env, IMAGE).await.remove(0);
    let status = job.status.unwrap();
    assert_eq!(status.succeeded, Some(1), "{status:?}");
    assert_eq!(status.failed.unwrap_or(0), 0, "{status:?}");
    let copy_name = copy.metadata.name.unwrap();
    let finished = Api::<Pod>::namespaced(env.client(), NAMESPACE)
        .get(&copy_name)
        .await
        .unwrap();
    assert_eq!(phase(&finished), "Succeeded", "{:?}", finished.status);
}
