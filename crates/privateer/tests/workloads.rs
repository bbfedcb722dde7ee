//! Workload Pods on the real node under the other outcomes of admission: `WhenReady` runs the
//! first Pod from the source and a later one from the mirror; under `Gate`, a Pod whose mirror
//! Failed is released with its original image restored and runs from the source.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use privateer_api::{ImageMirror, Phase};
use privateer_e2e::env::wait_pod_phase;
use privateer_e2e::moto::{ACCOUNT, REGION};
use privateer_image::{Reference, object_name};
use serde_json::json;

mod common;
use common::*;

fn pod(name: &str, image: &str) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": "apps"},
        "spec": {"containers": [{"name": "app", "image": image}]}}))
    .unwrap()
}

fn image_of(pod: &Pod) -> (String, String) {
    let spec = pod.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap();
    let id = pod
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .image_id
        .clone();
    (spec, id)
}

fn mirror_name(image: &str) -> String {
    object_name(&Reference::parse(image).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_ready_runs_the_first_pod_from_the_source_and_a_later_one_from_the_mirror() {
    let Some(env) = prepared("WhenReady on the node").await else {
        return;
    };
    let digest = env
        .push_runnable("library/redis", "7.2", &["sleep", "3600"])
        .await
        .unwrap();
    let privateer =
        start_registered(&env, "when-ready", "webhook: {rewritePolicy: WhenReady}").await;
    let pods: Api<Pod> = Api::namespaced(env.client(), "apps");

    pods.create(&PostParams::default(), &pod("first", "redis:7.2"))
        .await
        .unwrap();
    let first = wait_pod_phase(&pods, "first", "Running").await.unwrap();
    let (image, id) = image_of(&first);
    assert_eq!(image, "redis:7.2", "the first Pod is left on the source");
    assert_eq!(id, format!("docker.io/library/redis@{digest}"));

    let mirrors: Api<ImageMirror> = Api::all(env.client());
    wait_for_phase(
        &mirrors,
        &mirror_name("redis:7.2"),
        Phase::Ready,
        &privateer,
    )
    .await;
    pods.create(&PostParams::default(), &pod("later", "redis:7.2"))
        .await
        .unwrap();
    let later = wait_pod_phase(&pods, "later", "Running").await.unwrap();
    let (image, id) = image_of(&later);
    let target = format!("{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/mirror/docker.io/library/redis");
    assert_eq!(image, format!("{target}:7.2@{digest}"));
    assert_eq!(id, format!("{target}@{digest}"), "pulled from the mirror");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_whose_mirror_fails_runs_from_its_restored_original_image() {
    let Some(env) = prepared("a failed mirror on the node").await else {
        return;
    };
    // Two layers, one allowed: the copy is refused before any blob moves, the source still
    // serves the image to the node.
    let digest = env
        .push_runnable("library/redis", "7.2", &["sleep", "3600"])
        .await
        .unwrap();
    let privateer = start_registered(&env, "failing", "registries: {limits: {layers: 1}}").await;
    let pods: Api<Pod> = Api::namespaced(env.client(), "apps");
    let stored = pods
        .create(&PostParams::default(), &pod("cache", "redis:7.2"))
        .await
        .unwrap();
    let spec = stored.spec.unwrap();
    assert!(
        spec.containers[0]
            .image
            .as_deref()
            .unwrap()
            .contains(".dkr.ecr.")
    );
    assert!(
        spec.scheduling_gates.is_some_and(|g| !g.is_empty()),
        "held by the gate"
    );

    let mirrors: Api<ImageMirror> = Api::all(env.client());
    let failed = wait_for_phase(
        &mirrors,
        &mirror_name("redis:7.2"),
        Phase::Failed,
        &privateer,
    )
    .await;
    let error = failed.status.unwrap().last_error.unwrap_or_default();
    assert!(error.contains("layers"), "{error}");
    let running = wait_pod_phase(&pods, "cache", "Running").await.unwrap();
    let (image, id) = image_of(&running);
    assert_eq!(image, "redis:7.2", "the original image is restored");
    assert_eq!(id, format!("docker.io/library/redis@{digest}"));
}
