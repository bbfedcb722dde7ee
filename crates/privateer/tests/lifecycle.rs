//! The mirror's life through `privateer run` and a Pod on the real node: the controller counts
//! the Pods that use a mirror (`status.usage`, the `PODS` column, `privateer_mirrors_unused`),
//! and with `controller.retention.unusedFor` deletes the mirrors privateer recorded once no Pod
//! has used them for that long, keeping those declared by hand unless labelled for retention;
//! `controller.targetCheck` notices an image deleted from the target and copies it again, also
//! before a gated Pod is released to it.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use privateer_api::{ImageMirror, ImageMirrorSpec, Phase, names};
use privateer_e2e::env::wait_pod_phase;

mod common;
use common::installed::{eventually, mirror_ready};
use common::*;

/// The value of the metric line starting with `series` (`name{labels}`), 0 when absent.
fn metric(metrics: &str, series: &str) -> f64 {
    let (_, text) = http_get(metrics, "/metrics");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

/// What a lifecycle rule or a person does: the manifest `digest` of the mirror of
/// `docker.io/<repository>` is deleted from the target registry.
fn delete_from_target(env: &privateer_e2e::TestEnv, repository: &str, digest: &str) {
    let target = env.target.as_ref().unwrap();
    let mut delete = std::process::Command::new("curl");
    delete.args(["-sf", "-X", "DELETE"]);
    if let Some((user, password)) = &target.credentials {
        delete.args(["-u", &format!("{user}:{password}")]);
    }
    let url = format!(
        "http://{}/v2/mirror/docker.io/{repository}/manifests/{digest}",
        target.host
    );
    let deleted = delete.arg(&url).status().unwrap();
    assert!(deleted.success(), "DELETE {url}");
}

/// The TargetMissing Events about the mirror `name`.
async fn target_missing_events(env: &privateer_e2e::TestEnv, name: &str) -> usize {
    let events: Api<Event> = Api::all(env.client());
    let missing = events
        .list(&ListParams::default().fields("reason=TargetMissing"))
        .await
        .unwrap();
    missing
        .items
        .iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .count()
}

/// Until the mirror `name` says `pods` Pods use it, with the time of the last change.
async fn wait_usage(mirrors: &Api<ImageMirror>, name: &str, pods: u32, what: &str) {
    eventually(30, what, async || {
        let mirror = mirrors.get(name).await.map_err(|e| e.to_string())?;
        let usage = mirror.status.as_ref().and_then(|s| s.usage.as_ref());
        match usage.map(|u| (u.pods, u.last_used_time.is_some())) {
            Some((counted, true)) if counted == pods => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_counted_on_their_mirror_and_unused_recorded_mirrors_are_retired() {
    let Some(env) = prepared("usage and retention").await else {
        return;
    };
    env.push_runnable("library/counted", "1", &["sleep", "3600"])
        .await
        .unwrap();
    let client = env.client();
    let mirrors: Api<ImageMirror> = Api::all(client.clone());
    // Declared by hand before privateer starts: one kept, one labelled for retention.
    let kept = mirror_name("declared:1");
    let labelled = mirror_name("declared:2");
    mirrors
        .create(
            &PostParams::default(),
            &ImageMirror::new(&kept, ImageMirrorSpec::for_source("declared:1")),
        )
        .await
        .unwrap();
    let mut retained = ImageMirror::new(&labelled, ImageMirrorSpec::for_source("declared:2"));
    retained.metadata.labels = Some([(names::LABEL_RETENTION.into(), "true".into())].into());
    mirrors
        .create(&PostParams::default(), &retained)
        .await
        .unwrap();

    let unused_for: u64 = 8;
    let (privateer, metrics) = start_registered_with_metrics(
        &env,
        "lifecycle",
        &format!("controller: {{retention: {{unusedFor: {unused_for}s}}}}"),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "apps");
    pods.create(&PostParams::default(), &apps_pod("counted", "counted:1"))
        .await
        .unwrap();
    let running = wait_pod_phase(&pods, "counted", "Running").await.unwrap();
    let image = running.spec.unwrap().containers[0].image.clone().unwrap();
    assert!(
        image.contains("/mirror/docker.io/library/counted"),
        "{image}"
    );

    let name = mirror_name("counted:1");
    wait_usage(&mirrors, &name, 1, "the Pod counted on its mirror").await;
    let table = env
        .kubectl()
        .args(["get", "imagemirrors", &name])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    let (header, row) = table.split_once('\n').unwrap();
    let column = header.split_whitespace().position(|c| c == "PODS").unwrap();
    assert_eq!(row.split_whitespace().nth(column), Some("1"), "{table}");
    // Used longer than unusedFor: still there (the Pod uses it).
    tokio::time::sleep(std::time::Duration::from_secs(unused_for + 2)).await;
    assert!(
        mirrors.get_opt(&name).await.unwrap().is_some(),
        "in use, kept"
    );
    assert_eq!(
        metric(&metrics, "privateer_mirrors_unused"),
        1.0,
        "the kept declared one"
    );

    pods.delete("counted", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    wait_usage(&mirrors, &name, 0, "the mirror unused").await;
    eventually(
        unused_for + 20,
        "the unused recorded mirror retired",
        async || match mirrors.get_opt(&name).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(m) => Err(format!("still there: {:?}", m.status)),
        },
    )
    .await;
    assert!(
        mirrors.get_opt(&labelled).await.unwrap().is_none(),
        "labelled for retention"
    );
    assert!(
        mirrors.get_opt(&kept).await.unwrap().is_some(),
        "declared by hand: kept\n{}",
        privateer.log_tail(20)
    );
    assert_eq!(
        metric(
            &metrics,
            "privateer_mirrors_retired_total{result=\"deleted\"}"
        ),
        2.0
    );
    let events: Api<Event> = Api::all(client.clone());
    let retired = events
        .list(&ListParams::default().fields("reason=Retired"))
        .await
        .unwrap();
    let about: Vec<_> = retired
        .items
        .iter()
        .filter_map(|e| e.involved_object.name.clone())
        .collect();
    assert!(about.contains(&name), "a Retired Event: {about:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_deleted_from_the_target_is_noticed_and_copied_again() {
    let Some(env) = prepared("a mirror's image deleted from the target").await else {
        return;
    };
    let digest = env
        .push_runnable("library/stale", "1", &["sleep", "3600"])
        .await
        .unwrap();
    let (_privateer, metrics) = start_registered_with_metrics(
        &env,
        "target-check",
        "controller: {targetCheck: {interval: 2s, perMinute: 600}}",
    )
    .await;
    let mirrors: Api<ImageMirror> = Api::all(env.client());
    let name = mirror_name("stale:1");
    mirrors
        .create(
            &PostParams::default(),
            &ImageMirror::new(&name, ImageMirrorSpec::for_source("stale:1")),
        )
        .await
        .unwrap();
    let ready = mirror_ready(&env, "stale:1", 60).await;
    let copied_at = ready.status.unwrap().last_sync_time.unwrap();
    // Checked between refreshes (the default refresh is 6 h away).
    eventually(20, "a target check recorded", async || {
        let mirror = mirrors.get(&name).await.map_err(|e| e.to_string())?;
        let status = mirror.status.unwrap_or_default();
        status
            .last_target_check_time
            .clone()
            .ok_or_else(|| format!("{status:?}"))
    })
    .await;

    // A lifecycle rule, a person: the image goes from the target.
    delete_from_target(&env, "library/stale", &digest);

    eventually(60, "copied again", async || {
        let mirror = mirrors.get(&name).await.map_err(|e| e.to_string())?;
        let status = mirror.status.unwrap_or_default();
        match (&status.phase, &status.last_sync_time) {
            (Some(Phase::Ready), Some(synced)) if synced.0 > copied_at.0 => Ok(()),
            _ => Err(format!("{status:?}")),
        }
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(env.client(), "apps");
    pods.create(&PostParams::default(), &apps_pod("fresh", "stale:1"))
        .await
        .unwrap();
    wait_pod_phase(&pods, "fresh", "Running").await.unwrap();
    assert!(
        target_missing_events(&env, &name).await >= 1,
        "a TargetMissing Event"
    );
    let checks = |result: &str| {
        metric(
            &metrics,
            &format!("privateer_target_checks_total{{result=\"{result}\"}}"),
        )
    };
    // At least once: a reconcile woken by the deleted Job may still see the Ready status.
    assert!(checks("missing") >= 1.0);
    assert!(checks("present") >= 1.0);
}

/// A gated Pod waits for a new image while another of its images, mirrored long ago, is deleted
/// from the target. The periodic check is off: only the look before the release notices the
/// loss, has the image copied again, and releases the Pod once the target holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gated_pod_is_not_released_to_an_image_the_target_lost() {
    let Some(env) = prepared("a look at the target before a gate release").await else {
        return;
    };
    let lost = env
        .push_runnable("library/lost", "1", &["sleep", "3600"])
        .await
        .unwrap();
    env.push_runnable("library/newer", "1", &["sleep", "3600"])
        .await
        .unwrap();
    let (_privateer, metrics) = start_registered_with_metrics(
        &env,
        "before-release",
        "controller: {targetCheck: {interval: 0s, beforeRelease: 1s}}\nwebhook: {gateTimeout: 120s}",
    )
    .await;
    let mirrors: Api<ImageMirror> = Api::all(env.client());
    let name = mirror_name("lost:1");
    mirrors
        .create(
            &PostParams::default(),
            &ImageMirror::new(&name, ImageMirrorSpec::for_source("lost:1")),
        )
        .await
        .unwrap();
    let ready = mirror_ready(&env, "lost:1", 60).await;
    let copied_at = ready.status.unwrap().last_sync_time.unwrap();
    delete_from_target(&env, "library/lost", &lost);
    // Older than beforeRelease by the time the Pod could be released.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;

    let pods: Api<Pod> = Api::namespaced(env.client(), "apps");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "both", "namespace": "apps"},
        "spec": {"containers": [
            {"name": "app", "image": "lost:1"},
            {"name": "side", "image": "newer:1"},
        ]}
    }))
    .unwrap();
    let admitted = pods.create(&PostParams::default(), &pod).await.unwrap();
    assert!(
        !ungated(&admitted),
        "newer:1 is not mirrored yet: the Pod waits"
    );
    wait_pod_phase(&pods, "both", "Running").await.unwrap();

    let mirror = mirrors.get(&name).await.unwrap();
    let status = mirror.status.unwrap_or_default();
    assert_eq!(status.phase, Some(Phase::Ready));
    assert!(
        status.last_sync_time.as_ref().unwrap().0 > copied_at.0,
        "lost:1 was copied again: {status:?}"
    );
    assert!(target_missing_events(&env, &name).await >= 1);
    let missing = metric(
        &metrics,
        "privateer_target_checks_total{result=\"missing\"}",
    );
    assert!(missing >= 1.0, "{missing}");
    // Both containers run from the mirror, pinned to what it holds.
    let running = pods.get("both").await.unwrap();
    let images: Vec<String> = running
        .spec
        .unwrap()
        .containers
        .into_iter()
        .filter_map(|c| c.image)
        .collect();
    assert!(
        images
            .iter()
            .all(|i| i.contains("/mirror/docker.io/") && i.contains("@sha256:")),
        "{images:?}"
    );
}
