//! The webhooks end to end: `privateer run` registered with the real API server through
//! Mutating- and ValidatingWebhookConfigurations (`clientConfig.url` → 127.0.0.1, `caBundle`);
//! Pods created through the API server are stored rewritten and gated, released once the
//! controller has mirrored them, denied by policy with a message, dryRun creates nothing, an
//! ephemeral container records its mirror, and with privateer stopped Pods are still admitted.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use privateer_api::{ImageMirror, names};
use privateer_e2e::images::{Format, Image, Index, Pusher, layer};
use privateer_e2e::moto::{ACCOUNT, REGION};
use privateer_e2e::registry::oci_client;
use serde_json::json;

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_rewritten_gated_released_and_judged_through_the_api_server() {
    let Some(env) = prepared("webhook end to end").await else {
        return;
    };
    let client = env.client();
    let source = env.source.as_ref().unwrap();
    let pusher = Pusher::new(oci_client(), source.auth());
    let index = Index::multi_platform(Format::Oci, &["linux/amd64", "linux/arm64"], 21, 2048);
    pusher
        .push_index(&source.host, "library/nginx", "1.27", &index)
        .await
        .unwrap();
    let busybox = Image::new(Format::Oci, "linux/amd64", vec![layer(22, 1024)]);
    pusher
        .push_image(&source.host, "library/busybox", "1.36", &busybox)
        .await
        .unwrap();
    let extra = "webhook: {gateTimeout: 120s}\npolicy: {denyLatest: {enabled: true}}";
    let mut privateer = start_registered(&env, "run", extra).await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), "apps");
    let mirrors: Api<ImageMirror> = Api::all(client.clone());
    let pp = PostParams::default();
    let target = format!("{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/mirror/docker.io/library");

    // Gate: stored rewritten, gated, labelled, with the originals recorded.
    let stored = pods
        .create(&pp, &apps_pod("web", "nginx:1.27"))
        .await
        .unwrap();
    let spec = stored.spec.as_ref().unwrap();
    assert_eq!(
        spec.containers[0].image.as_deref(),
        Some(format!("{target}/nginx:1.27").as_str())
    );
    let gates: Vec<&str> = spec
        .scheduling_gates
        .iter()
        .flatten()
        .map(|g| g.name.as_str())
        .collect();
    assert_eq!(gates, [names::SCHEDULING_GATE]);
    assert_eq!(
        stored.labels().get(names::LABEL_GATED).map(String::as_str),
        Some("true")
    );
    assert_eq!(
        stored
            .annotations()
            .get(names::ANNOTATION_ORIGINAL_IMAGES)
            .map(String::as_str),
        Some(r#"{"app":"nginx:1.27"}"#)
    );
    let recorded = mirrors.get(&mirror_name("nginx:1.27")).await.unwrap();
    assert_eq!(recorded.spec.source, "docker.io/library/nginx:1.27");
    assert_eq!(
        recorded
            .annotations()
            .get(names::ANNOTATION_CREATED_BY)
            .map(String::as_str),
        Some("webhook")
    );

    // The controller in the same process mirrors it and releases the gate.
    let released = wait_for_pod(&pods, "web", "release of the gate", ungated).await;
    assert!(!released.labels().contains_key(names::LABEL_GATED));
    let image = released.spec.unwrap().containers[0].image.clone().unwrap();
    assert!(image.starts_with(&format!("{target}/nginx")), "{image}");
    assert!(
        image.contains("@sha256:"),
        "released pinned by digest: {image}"
    );

    // A second Pod of the same image is rewritten to the Ready mirror, pinned, and not gated.
    let second = pods
        .create(&pp, &apps_pod("web-2", "nginx:1.27"))
        .await
        .unwrap();
    let spec = second.spec.unwrap();
    assert_eq!(
        spec.containers[0].image.as_deref(),
        Some(format!("{target}/nginx:1.27@{}", index.manifest.digest).as_str())
    );
    assert!(spec.scheduling_gates.is_none_or(|g| g.is_empty()));

    // Policy: denied through the API server with container, image and rule named.
    let denied = pods
        .create(&pp, &apps_pod("latest", "busybox:latest"))
        .await
        .unwrap_err();
    let message = denied.to_string();
    assert!(
        message.contains("container \"app\"") && message.contains("denyLatest"),
        "{message}"
    );

    // dryRun: the answer shows the rewrite, nothing is recorded.
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let shown = pods
        .create(&dry, &apps_pod("dry", "redis:7.2"))
        .await
        .unwrap();
    assert!(
        shown.spec.unwrap().containers[0]
            .image
            .as_deref()
            .unwrap()
            .starts_with(&target)
    );
    assert!(
        mirrors
            .get_opt(&mirror_name("redis:7.2"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(pods.get_opt("dry").await.unwrap().is_none());

    // An ephemeral container (pods/ephemeralcontainers UPDATE) records its mirror.
    let debug = json!({"spec": {"ephemeralContainers": [
        {"name": "debug", "image": "busybox:1.36", "targetContainerName": "app"}]}});
    pods.patch_ephemeral_containers("web", &PatchParams::default(), &Patch::Strategic(debug))
        .await
        .unwrap();
    assert!(
        mirrors
            .get_opt(&mirror_name("busybox:1.36"))
            .await
            .unwrap()
            .is_some()
    );

    // privateer stopped: failurePolicy Ignore admits Pods as they are.
    privateer.stop();
    let unchanged = pods
        .create(&pp, &apps_pod("while-down", "nginx:1.27"))
        .await
        .unwrap();
    assert_eq!(
        unchanged.spec.unwrap().containers[0].image.as_deref(),
        Some("nginx:1.27")
    );
}

/// rewritePolicy Wait: the admission request waits for the copy (inline, same process) and the
/// Pod is stored pointing at the mirror pinned by digest; a source that does not exist fails
/// fast and the Pod keeps its image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_holds_the_request_until_the_mirror_is_ready() {
    let Some(env) = prepared("webhook Wait policy").await else {
        return;
    };
    let client = env.client();
    let source = env.source.as_ref().unwrap();
    let redis = Image::new(Format::Oci, "linux/amd64", vec![layer(41, 4096)]);
    Pusher::new(oci_client(), source.auth())
        .push_image(&source.host, "library/redis", "7.2", &redis)
        .await
        .unwrap();
    let extra = "webhook: {rewritePolicy: Wait, waitTimeout: 6s, requestTimeout: 8s}
copy: {executor: inline}";
    let privateer = start_registered(&env, "wait", extra).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "apps");

    let stored = pods
        .create(&PostParams::default(), &apps_pod("cache", "redis:7.2"))
        .await
        .unwrap();
    let spec = stored.spec.unwrap();
    let target = format!("{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/mirror/docker.io/library");
    assert_eq!(
        spec.containers[0].image.as_deref(),
        Some(format!("{target}/redis:7.2@{}", redis.manifest.digest).as_str()),
        "privateer log:\n{}",
        privateer.log_tail(30)
    );
    assert!(
        spec.scheduling_gates.is_none_or(|g| g.is_empty()),
        "Wait never gates"
    );

    let missing = pods
        .create(
            &PostParams::default(),
            &apps_pod("missing", "docker.io/library/missing:1"),
        )
        .await
        .unwrap();
    assert_eq!(
        missing.spec.unwrap().containers[0].image.as_deref(),
        Some("docker.io/library/missing:1")
    );
}
