//! Workload Pods on the real node under the other outcomes of admission: `WhenReady` runs the
//! first Pod from the source and a later one from the mirror; under `Gate`, a Pod whose mirror
//! Failed is released with its original image restored and runs from the source; a generic
//! target is pulled with the imagePullSecret the webhook injects (the node has no credentials
//! for it).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, PostParams};
use privateer_api::{ImageMirror, Phase};
use privateer_e2e::env::wait_pod_phase;
use privateer_e2e::moto::{ACCOUNT, REGION};
use privateer_e2e::node::NODE_IP;
use privateer_e2e::registry::Registry;
use serde_json::json;

mod common;
use common::*;

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

    pods.create(&PostParams::default(), &apps_pod("first", "redis:7.2"))
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
    pods.create(&PostParams::default(), &apps_pod("later", "redis:7.2"))
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
        .create(&PostParams::default(), &apps_pod("cache", "redis:7.2"))
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

/// A `kubernetes.io/dockerconfigjson` Secret for `host`.
fn docker_secret(name: &str, namespace: &str, host: &str, user: &str, password: &str) -> Secret {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let config = json!({"auths": {host: {"auth": auth}}}).to_string();
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": config}}))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generic_target_is_pulled_with_the_image_pull_secret_the_webhook_injects() {
    let Some(env) = prepared("a generic target on the node").await else {
        return;
    };
    // A registry the node has no credentials for: only the Pod's pull secret opens it.
    let generic =
        Registry::start_at("generic", &env.dir, Some(("puller", "s3cret")), NODE_IP).unwrap();
    env.node().unwrap().add_registry(&generic.host).unwrap();
    let digest = env
        .push_runnable("library/redis", "7.2", &["sleep", "3600"])
        .await
        .unwrap();
    let push = docker_secret(
        "generic-push",
        "privateer",
        &generic.host,
        "puller",
        "s3cret",
    );
    Api::<Secret>::namespaced(env.client(), "privateer")
        .create(&PostParams::default(), &push)
        .await
        .unwrap();
    let extra = format!(
        "target: {{kind: generic, registry: \"{}\", prefix: mirror, insecure: true, credentialsSecret: generic-push}}
webhook: {{imagePullSecrets: {{names: [generic-pull], mode: Append}}}}",
        generic.host
    );
    let privateer = start_registered(&env, "generic", &extra).await;
    let pull = docker_secret("generic-pull", "apps", &generic.host, "puller", "s3cret");
    Api::<Secret>::namespaced(env.client(), "apps")
        .create(&PostParams::default(), &pull)
        .await
        .unwrap();

    let pods: Api<Pod> = Api::namespaced(env.client(), "apps");
    pods.create(&PostParams::default(), &apps_pod("cache", "redis:7.2"))
        .await
        .unwrap();
    let mirrors: Api<ImageMirror> = Api::all(env.client());
    wait_for_phase(
        &mirrors,
        &mirror_name("redis:7.2"),
        Phase::Ready,
        &privateer,
    )
    .await;
    let running = wait_pod_phase(&pods, "cache", "Running").await.unwrap();
    let secrets: Vec<String> = running
        .spec
        .as_ref()
        .unwrap()
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|s| s.name.clone())
        .collect();
    assert_eq!(secrets, ["generic-pull"]);
    let (image, id) = image_of(&running);
    let target = format!("{}/mirror/docker.io/library/redis", generic.host);
    assert_eq!(image, format!("{target}:7.2@{digest}"));
    assert_eq!(id, format!("{target}@{digest}"));
}
