//! A burst: one Deployment of `replicas` Pods, each with the same 3 new images, admitted by
//! `privateer run` (registered as the chart registers it, Gate mode, copies through Jobs on
//! the real node). The Pods select no node, so after release they wait unscheduled instead of
//! crowding the one test node; what is measured is admission and release.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use privateer_api::{ImageMirror, names};
use privateer_e2e::TestEnv;
use privateer_e2e::images::{Format, Image, Pusher, layer};
use privateer_e2e::process::rss_kib;
use privateer_e2e::registry::oci_client;
use serde_json::json;

use super::cluster;
use crate::Args;

const NAMESPACE: &str = "burst";
const WEBHOOK: &str = "mutate.privateer.dev";

pub struct Burst {
    pub replicas: usize,
    /// From the Deployment's creation until every Pod exists and none is gated.
    pub released_seconds: f64,
    /// Until the last Pod was created (the ReplicaSet controller's pace).
    pub created_seconds: f64,
    /// The API server's own p99 of the mutating webhook's admission latency (bucket bound).
    pub webhook_p99_seconds: Option<f64>,
    pub webhook_p50_seconds: Option<f64>,
    pub mirrors: usize,
    pub peak_rss_mib: u64,
}

pub async fn run(env: &TestEnv, args: &Args, replicas: usize) -> anyhow::Result<Burst> {
    let source = env.source.as_ref().context("no source registry")?;
    let pusher = Pusher::new(oci_client(), source.auth());
    let mut images = Vec::new();
    for (i, app) in ["a", "b", "c"].into_iter().enumerate() {
        let repository = format!("bench/burst-{app}");
        let image = Image::new(
            Format::Docker,
            "linux/amd64",
            vec![layer(2_000_000 + i as u64, 4096)],
        );
        pusher
            .push_image(&source.host, &repository, "1", &image)
            .await?;
        images.push(format!("docker.io/{repository}:1"));
    }
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?;
    Api::<Namespace>::all(env.client())
        .create(&PostParams::default(), &namespace)
        .await?;
    let (mut privateer, _) = privateer_e2e::operator::start_registered(
        env,
        &args.privateer,
        "burst-run",
        "run",
        "target: {prefix: bench-burst}\n",
    )
    .await?;
    let before = cluster::webhook_buckets(&cluster::apiserver_metrics(env).await?, WEBHOOK);
    let containers: Vec<_> = images
        .iter()
        .enumerate()
        .map(|(i, image)| json!({"name": format!("c{i}"), "image": image}))
        .collect();
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "burst", "namespace": NAMESPACE},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "burst"}},
            "template": {
                "metadata": {"labels": {"app": "burst"}},
                "spec": {
                    "containers": containers,
                    "nodeSelector": {"privateer.dev/bench": "nowhere"},
                    "terminationGracePeriodSeconds": 0,
                },
            },
        },
    }))?;
    let deployments: Api<Deployment> = Api::namespaced(env.client(), NAMESPACE);
    let started = Instant::now();
    deployments
        .create(&PostParams::default(), &deployment)
        .await?;
    let pods: Api<Pod> = Api::namespaced(env.client(), NAMESPACE);
    let (mut created_seconds, mut last_count) = (0.0, 0);
    let released_seconds = loop {
        let listed = pods
            .list(&ListParams::default().labels("app=burst"))
            .await?;
        if listed.items.len() > last_count {
            last_count = listed.items.len();
            created_seconds = started.elapsed().as_secs_f64();
        }
        let gated = listed.items.iter().filter(|p| gated(p)).count();
        if listed.items.len() >= replicas && gated == 0 {
            break started.elapsed().as_secs_f64();
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!(
                "burst: {} of {replicas} Pods, {gated} gated after 10 minutes\n{}",
                listed.items.len(),
                privateer.log_tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let after = cluster::webhook_buckets(&cluster::apiserver_metrics(env).await?, WEBHOOK);
    let peak_rss_mib = rss_kib(privateer.pid()).1 / 1024;
    let mirrors = Api::<ImageMirror>::all(env.client())
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|m| m.spec.source.contains("bench/burst-"))
        .count();
    deployments
        .delete("burst", &DeleteParams::background())
        .await?;
    privateer.stop();
    Ok(Burst {
        replicas,
        released_seconds,
        created_seconds,
        webhook_p99_seconds: cluster::quantile(&before, &after, 0.99),
        webhook_p50_seconds: cluster::quantile(&before, &after, 0.5),
        mirrors,
        peak_rss_mib,
    })
}

fn gated(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .is_some_and(|gates| gates.iter().any(|g| g.name == names::SCHEDULING_GATE))
}
