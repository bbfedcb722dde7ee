//! The controller end to end on the real control plane: `privateer controller` as a process,
//! copy Jobs run by the Job controller as containers of privateer's image on the real node, moto
//! as the ECR API and an htpasswd `docker-registry` as its data plane, another `docker-registry`
//! serving docker.io.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use privateer_api::{ImageMirror, ImageMirrorSpec, Phase, names};
use privateer_e2e::TestEnv;

mod common;
use common::*;
use privateer_e2e::images::{Format, Index, Pusher};
use privateer_e2e::moto::{ACCOUNT, REGION};
use privateer_e2e::process::Managed;
use privateer_e2e::registry::oci_client;
use privateer_image::{Reference, object_name};

/// The controller process and its metrics address.
fn start_controller_named(env: &TestEnv, name: &str, executor: Executor) -> (Managed, String) {
    let extra = if executor == Executor::Inline {
        "copy: {executor: inline}\n"
    } else {
        ""
    };
    start_operator(env, name, "controller", extra)
}

fn start_controller(env: &TestEnv) -> (Managed, String) {
    start_controller_named(env, "controller", Executor::Job)
}

fn mirror(name: &str, source: &str) -> ImageMirror {
    ImageMirror::new(name, ImageMirrorSpec::for_source(source))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_image_mirror_is_copied_by_a_job_and_reported_ready() {
    let Some(env) = prepared("controller end to end").await else {
        return;
    };
    let client = env.client();

    // docker.io/library/nginx:1.27, served by the "public" registry.
    let source = env.source.as_ref().unwrap();
    let index = Index::multi_platform(Format::Docker, &["linux/amd64", "linux/arm64"], 7, 4096);
    Pusher::new(oci_client(), source.auth())
        .push_index(&source.host, "library/nginx", "1.27", &index)
        .await
        .unwrap();
    // A mirror that passes the CRD schema but not deserialization (999999999h is over 100 years)
    // must not stop the watch for the others.
    let resource = kube::api::ApiResource::erase::<ImageMirror>(&());
    let raw: Api<kube::api::DynamicObject> = Api::all_with(client.clone(), &resource);
    let malformed: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "privateer.dev/v1alpha1", "kind": "ImageMirror",
        "metadata": {"name": "malformed"},
        "spec": {"source": "busybox:1", "refreshInterval": "999999999h"}
    }))
    .unwrap();
    raw.create(&PostParams::default(), &malformed)
        .await
        .unwrap();
    let (controller, metrics) = start_controller(&env);
    let mirrors: Api<ImageMirror> = Api::all(client.clone());
    let pp = PostParams::default();

    // Named as the webhook names it, so gated Pods find it.
    let nginx = object_name(&Reference::parse("nginx:1.27").unwrap());
    mirrors
        .create(&pp, &mirror(&nginx, "nginx:1.27"))
        .await
        .unwrap();
    mirrors
        .create(&pp, &mirror("missing", "docker.io/library/missing:1"))
        .await
        .unwrap();
    mirrors
        .create(&pp, &mirror("invalid", "docker.io/Library/nginx:1"))
        .await
        .unwrap();

    let ready = wait_for_phase(&mirrors, &nginx, Phase::Ready, &controller).await;
    let status = ready.status.unwrap();
    let target_repo = "mirror/docker.io/library/nginx";
    assert_eq!(
        status.target_image.as_deref(),
        Some(
            format!(
                "{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{target_repo}:1.27@{}",
                index.manifest.digest
            )
            .as_str()
        )
    );
    assert_eq!(
        status.source_digest.as_deref(),
        Some(index.manifest.digest.as_str())
    );
    assert_eq!(status.copied_platforms, ["linux/amd64", "linux/arm64"]);
    assert_eq!(status.attempts, 0);
    assert!(status.conditions.iter().any(|c| c.type_ == "Ready"
        && c.status == "True"
        && c.observed_generation == ready.metadata.generation));
    // The target (moto's data plane) holds the index, byte for byte.
    let target = env.target.as_ref().unwrap();
    let (bytes, digest) = Pusher::new(oci_client(), target.auth())
        .pull_manifest(&target.host, target_repo, "1.27")
        .await
        .unwrap();
    assert_eq!(digest, index.manifest.digest);
    assert_eq!(bytes, index.manifest.data);
    let jobs: Api<Job> = Api::namespaced(client.clone(), "privateer");
    let job_name = status.job_name.unwrap();
    let job = jobs.get(&job_name).await.unwrap();
    assert_eq!(
        job.metadata.owner_references.unwrap()[0].name,
        nginx,
        "the Job is owned by its ImageMirror"
    );

    // Metrics and health on the plain port.
    let (code, text) = http_get(&metrics, "/metrics");
    assert_eq!(code, "200");
    assert!(
        text.contains("privateer_copies_total{result=\"success\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("privateer_mirrors{phase=\"Ready\"} 1"),
        "{text}"
    );
    assert!(text.contains("privateer_copy_bytes_count 1"), "{text}");
    // Every mirror's spec has been observed: nothing is due.
    assert!(
        text.contains("privateer_reconcile_queue_depth{state=\"due\"} 0"),
        "{text}"
    );
    assert_eq!(http_get(&metrics, "/readyz").0, "200");
    assert_eq!(http_get(&metrics, "/healthz").0, "200");

    // A source that does not exist fails once, with the reason, and no Job.
    let missing = wait_for_phase(&mirrors, "missing", Phase::Failed, &controller).await;
    let status = missing.status.unwrap();
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap()
            .contains("does not exist"),
        "{status:?}"
    );
    assert_eq!(status.attempts, 0);
    let invalid = wait_for_phase(&mirrors, "invalid", Phase::Failed, &controller).await;
    let ready_condition = &invalid.status.unwrap().conditions[0];
    assert_eq!(ready_condition.reason, "InvalidSource");
    let all_jobs = jobs.list(&ListParams::default()).await.unwrap();
    assert_eq!(all_jobs.items.len(), 1, "only the nginx copy ran a Job");

    gated_pods_are_released_or_restored(&env, &controller).await;

    // Deleting the ImageMirror garbage-collects its Job (the real garbage collector).
    mirrors
        .delete(&nginx, &DeleteParams::default())
        .await
        .unwrap();
    let deleted = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if jobs.get_opt(&job_name).await.unwrap().is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    assert!(deleted.is_ok(), "the Job outlived its ImageMirror");
}

/// A Pod as the webhook leaves it under rewritePolicy Gate.
fn gated_pod(name: &str, original: &str, rewritten: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "apps",
            "labels": {names::LABEL_GATED: "true"},
            "annotations": {names::ANNOTATION_ORIGINAL_IMAGES: serde_json::json!({"app": original}).to_string()}},
        "spec": {"schedulingGates": [{"name": names::SCHEDULING_GATE}],
            "containers": [{"name": "app", "image": rewritten}]}
    }))
    .unwrap()
}

fn image(pod: &Pod) -> String {
    pod.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap()
}

async fn gated_pods_are_released_or_restored(env: &TestEnv, controller: &Managed) {
    let client = env.client();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let apps: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "apps"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &apps)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "apps");
    let ecr = format!("{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/mirror/docker.io/library");
    let pp = PostParams::default();

    // nginx:1.27 is mirrored: the gate goes, the image is the mirror pinned by digest.
    let rewritten = format!("{ecr}/nginx:1.27");
    pods.create(&pp, &gated_pod("ready", "nginx:1.27", &rewritten))
        .await
        .unwrap();
    let pod = wait_for_pod(&pods, "ready", "release", ungated).await;
    assert!(
        image(&pod).starts_with(&format!("{rewritten}@sha256:")),
        "{}",
        image(&pod)
    );
    assert!(!pod.labels().contains_key(names::LABEL_GATED));

    // A mirror that failed: the original image comes back, with an Event saying why.
    let failed_source = "docker.io/library/gone:3";
    let failed_name = object_name(&Reference::parse(failed_source).unwrap());
    let mirrors: Api<ImageMirror> = Api::all(client.clone());
    mirrors
        .create(&pp, &mirror(&failed_name, failed_source))
        .await
        .unwrap();
    wait_for_phase(&mirrors, &failed_name, Phase::Failed, controller).await;
    pods.create(
        &pp,
        &gated_pod("failed", "gone:3", &format!("{ecr}/gone:3")),
    )
    .await
    .unwrap();
    let pod = wait_for_pod(&pods, "failed", "restore", ungated).await;
    assert_eq!(image(&pod), "gone:3");

    // No mirror at all and gateTimeout (8 s) passes: restored too.
    pods.create(
        &pp,
        &gated_pod("late", "never:1", &format!("{ecr}/never:1")),
    )
    .await
    .unwrap();
    let pod = wait_for_pod(&pods, "late", "restore after gateTimeout", ungated).await;
    assert_eq!(image(&pod), "never:1");
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), "apps");
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(reasons.iter().any(|r| r == "ImagesRestored"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "Released"), "{reasons:?}");

    // Backfill follows the webhook's rules: nothing for a Pod in a namespace labelled
    // privateer.dev/skip=true (created first: the watch delivers it before the next one).
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let quiet: k8s_openapi::api::core::v1::Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "quiet", "labels": {names::SKIP: "true"}}
    }))
    .unwrap();
    namespaces.create(&pp, &quiet).await.unwrap();
    let skipped: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "skipped", "namespace": "quiet"},
        "spec": {"containers": [{"name": "app", "image": "quay.io/org/skipped:1"}]}
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), "quiet")
        .create(&pp, &skipped)
        .await
        .unwrap();
    let not_backfilled = object_name(&Reference::parse("quay.io/org/skipped:1").unwrap());

    // Backfill: a Pod admitted without the webhook still gets its ImageMirror.
    let plain: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "plain", "namespace": "apps"},
        "spec": {"containers": [{"name": "app", "image": "quay.io/org/tool:2.1"}]}
    }))
    .unwrap();
    pods.create(&pp, &plain).await.unwrap();
    let backfilled = object_name(&Reference::parse("quay.io/org/tool:2.1").unwrap());
    for _ in 0..100 {
        if mirrors.get_opt(&backfilled).await.unwrap().is_some() {
            assert!(
                mirrors.get_opt(&not_backfilled).await.unwrap().is_none(),
                "backfill mirrored a Pod of a skip-labelled namespace"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("backfill did not create {backfilled}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_controller_takes_over_when_the_leader_dies() {
    let Some(env) = TestEnv::full()
        .start_or_skip("controller leader election")
        .await
        .unwrap()
    else {
        return;
    };
    // Before the CRD is installed the controller exits, saying what to do.
    let (mut early, _) = start_controller_named(&env, "early", Executor::Job);
    for _ in 0..100 {
        if early.check_alive().is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = early.log_tail(5);
    assert!(
        early.check_alive().is_err(),
        "still running without the CRD"
    );
    assert!(
        log.contains("CRD is not installed") && log.contains("kubectl apply"),
        "{log}"
    );

    prepare_cluster(&env).await;
    let source = env.source.as_ref().unwrap();
    let image = privateer_e2e::images::Image::new(
        Format::Oci,
        "linux/amd64",
        vec![privateer_e2e::images::layer(9, 2048)],
    );
    Pusher::new(oci_client(), source.auth())
        .push_image(&source.host, "library/redis", "7", &image)
        .await
        .unwrap();
    // These two copy inline, in their own process (executor `inline`).
    let (mut first, _) = start_controller_named(&env, "first", Executor::Inline);
    let (second, _) = start_controller_named(&env, "second", Executor::Inline);
    let leases: Api<Lease> = Api::namespaced(env.client(), "privateer");
    let holder = |lease: Option<Lease>| {
        lease
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .unwrap_or_default()
    };
    let mut leader = String::new();
    for _ in 0..100 {
        leader = holder(leases.get_opt("privateer-controller").await.unwrap());
        if !leader.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (mut dead, alive) = if leader.ends_with(&format!("-{}", first.pid())) {
        (first, second)
    } else {
        assert!(
            leader.ends_with(&format!("-{}", second.pid())),
            "holder {leader:?}"
        );
        first.check_alive().unwrap();
        (second, first)
    };
    dead.stop();
    let mirrors: Api<ImageMirror> = Api::all(env.client());
    let name = object_name(&Reference::parse("redis:7").unwrap());
    mirrors
        .create(&PostParams::default(), &mirror(&name, "redis:7"))
        .await
        .unwrap();
    let ready = wait_for_phase(&mirrors, &name, Phase::Ready, &alive).await;
    assert!(ready.status.unwrap().target_image.is_some());
    let jobs: Api<Job> = Api::namespaced(env.client(), "privateer");
    assert!(
        jobs.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "the inline executor runs no Job"
    );
    let target = env.target.as_ref().unwrap();
    let (_, digest) = Pusher::new(oci_client(), target.auth())
        .pull_manifest(&target.host, "mirror/docker.io/library/redis", "7")
        .await
        .unwrap();
    assert_eq!(digest, image.manifest.digest);
    let now = holder(leases.get_opt("privateer-controller").await.unwrap());
    assert!(
        now.ends_with(&format!("-{}", alive.pid())),
        "the standby holds the lease: {now:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_heal_and_a_restarted_controller_reuses_its_job() {
    let Some(mut env) = prepared("controller outages").await else {
        return;
    };
    let source = env.source.as_ref().unwrap();
    let pusher = Pusher::new(oci_client(), source.auth());
    for (repository, seed) in [("library/busybox", 11), ("library/alpine", 12)] {
        let image = privateer_e2e::images::Image::new(
            Format::Oci,
            "linux/amd64",
            vec![privateer_e2e::images::layer(seed, 2048)],
        );
        pusher
            .push_image(&source.host, repository, "1", &image)
            .await
            .unwrap();
    }
    let (mut controller, _) = start_controller(&env);
    let mirrors: Api<ImageMirror> = Api::all(env.client());
    let pp = PostParams::default();

    // The source registry is down: transient failures, counted, then Ready once it is back.
    env.source.as_mut().unwrap().process.stop();
    let busybox = object_name(&Reference::parse("busybox:1").unwrap());
    let mut deleting = mirror(&busybox, "busybox:1");
    deleting.spec.deletion_policy = privateer_api::DeletionPolicy::Delete;
    mirrors.create(&pp, &deleting).await.unwrap();
    let mut failing = None;
    for _ in 0..100 {
        let status = mirrors
            .get(&busybox)
            .await
            .unwrap()
            .status
            .unwrap_or_default();
        if status.attempts >= 1 {
            failing = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let failing = failing.expect("attempts counted while the source is down");
    assert!(failing.next_retry_time.is_some(), "{failing:?}");
    assert!(failing.last_error.is_some(), "{failing:?}");
    env.source.as_mut().unwrap().restart().unwrap();
    let ready = wait_for_phase(&mirrors, &busybox, Phase::Ready, &controller).await;
    let status = ready.status.unwrap();
    assert_eq!(status.attempts, 0);
    assert_eq!(status.last_error, None);
    // deletionPolicy Delete: held by privateer's finalizer, let go once the image is deleted.
    assert!(
        ready
            .metadata
            .finalizers
            .unwrap_or_default()
            .iter()
            .any(|f| f == names::FINALIZER)
    );
    mirrors
        .delete(&busybox, &DeleteParams::default())
        .await
        .unwrap();
    let mut gone = false;
    for _ in 0..100 {
        if mirrors.get_opt(&busybox).await.unwrap().is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        gone,
        "the finalizer was not released:\n{}",
        controller.log_tail(20)
    );

    // Killed once its Job exists, restarted: the same Job is read, not a second one made.
    let alpine = object_name(&Reference::parse("alpine:1").unwrap());
    mirrors
        .create(&pp, &mirror(&alpine, "alpine:1"))
        .await
        .unwrap();
    let jobs: Api<Job> = Api::namespaced(env.client(), "privateer");
    let selector = privateer_controller::copy_member_label(&alpine);
    for _ in 0..100 {
        if !jobs
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    controller.stop();
    let (controller, _) = start_controller_named(&env, "restarted", Executor::Job);
    wait_for_phase(&mirrors, &alpine, Phase::Ready, &controller).await;
    let made = jobs
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap();
    assert_eq!(made.items.len(), 1, "one Job for one copy");
}
