//! The report over hand-made Pods and ImageMirrors: workloads, states, runs-from, denials.

use k8s_openapi::api::core::v1::Pod;
use privateer_api::{Config, ImageMirror};
use privateer_report::{Inputs, Report, Row, RunsFrom, State, build, render_table, workload};
use serde_json::json;

const TARGET: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";

fn config() -> Config {
    let mut config = Config::default();
    config.target.registry = TARGET.into();
    config
}

fn pod(namespace: &str, name: &str, owner: Option<(&str, &str)>, images: &[&str]) -> Pod {
    let mut meta = json!({"name": name, "namespace": namespace, "labels": {}});
    if let Some((kind, owner)) = owner {
        meta["ownerReferences"] = json!([{
            "apiVersion": "apps/v1", "kind": kind, "name": owner, "uid": "u", "controller": true
        }]);
        if kind == "ReplicaSet" {
            meta["labels"]["pod-template-hash"] = json!("5d8f9c7b6");
        }
    }
    serde_json::from_value(json!({
        "metadata": meta,
        "spec": {"containers": images.iter().enumerate()
            .map(|(i, image)| json!({"name": format!("c{i}"), "image": image}))
            .collect::<Vec<_>>()},
        "status": {"phase": "Running"}
    }))
    .expect("a Pod")
}

fn mirror(name: &str, source: &str, status: serde_json::Value) -> ImageMirror {
    serde_json::from_value(json!({
        "apiVersion": "privateer.dev/v1alpha1", "kind": "ImageMirror",
        "metadata": {"name": name}, "spec": {"source": source}, "status": status
    }))
    .expect("an ImageMirror")
}

fn row<'a>(report: &'a Report, workload: &str, image: &str) -> &'a Row {
    report
        .rows
        .iter()
        .find(|r| r.workload == workload && r.image == image)
        .unwrap_or_else(|| panic!("no row {workload} {image}: {report:#?}"))
}

fn nginx_ready() -> ImageMirror {
    let name = privateer_image::object_name(
        &privateer_image::Reference::parse("nginx:1.27").expect("a reference"),
    );
    mirror(
        &name,
        "docker.io/library/nginx:1.27",
        json!({"phase": "Ready", "targetImage":
            format!("{TARGET}/mirror/docker.io/library/nginx@sha256:{}", "a".repeat(64))}),
    )
}

#[test]
fn a_replica_set_made_by_a_deployment_is_shown_as_the_deployment() {
    let p = pod(
        "web",
        "web-5d8f9c7b6-x",
        Some(("ReplicaSet", "web-5d8f9c7b6")),
        &[],
    );
    assert_eq!(workload(&p), "Deployment/web");
    let p = pod("db", "db-0", Some(("StatefulSet", "db")), &[]);
    assert_eq!(workload(&p), "StatefulSet/db");
    let p = pod("x", "lonely", None, &[]);
    assert_eq!(workload(&p), "Pod/lonely");
}

#[test]
fn replicas_are_one_row_and_each_image_gets_its_state() {
    let rs = Some(("ReplicaSet", "web-5d8f9c7b6"));
    let inputs = Inputs {
        pods: vec![
            pod(
                "web",
                "web-5d8f9c7b6-a",
                rs,
                &["nginx:1.27", "busybox:1.36"],
            ),
            pod(
                "web",
                "web-5d8f9c7b6-b",
                rs,
                &["nginx:1.27", "busybox:1.36"],
            ),
            pod("web", "own", None, &[&format!("{TARGET}/team/app:1")]),
        ],
        mirrors: vec![nginx_ready()],
        ..Inputs::default()
    };
    let report = build(&config(), &[], &inputs);
    assert_eq!(report.rows.len(), 3, "{report:#?}");
    let nginx = row(&report, "Deployment/web", "nginx:1.27");
    assert_eq!((nginx.pods, nginx.state), (2, State::Ready));
    assert_eq!(nginx.runs_from, RunsFrom::Source);
    assert!(
        nginx
            .target_image
            .as_deref()
            .is_some_and(|t| t.contains("@sha256:"))
    );
    let busybox = row(&report, "Deployment/web", "busybox:1.36");
    assert_eq!(busybox.state, State::NotRecorded);
    assert!(busybox.image_mirror.is_some());
    let private = row(&report, "Pod/own", &format!("{TARGET}/team/app:1"));
    assert_eq!(private.state, State::Private);
    assert_eq!(report.images_by_state.get("Ready"), Some(&1));
    assert_eq!(report.images_by_state.get("NotRecorded"), Some(&1));
    assert!(report.workloads_denied.is_empty());
}

#[test]
fn a_rewritten_pod_runs_from_the_mirror_and_is_judged_on_what_it_asked_for() {
    let mut p = pod(
        "web",
        "p",
        None,
        &[&format!("{TARGET}/mirror/docker.io/library/nginx:1.27")],
    );
    p.metadata.annotations = Some(
        [(
            "privateer.dev/original-images".to_owned(),
            json!({"c0": "nginx:1.27"}).to_string(),
        )]
        .into(),
    );
    let inputs = Inputs {
        pods: vec![p],
        mirrors: vec![nginx_ready()],
        ..Inputs::default()
    };
    let report = build(&config(), &[], &inputs);
    let nginx = row(&report, "Pod/p", "nginx:1.27");
    assert_eq!(
        (nginx.state, nginx.runs_from),
        (State::Ready, RunsFrom::Mirror)
    );
}

#[test]
fn the_policy_is_judged_as_the_pod_would_run_under_gate() {
    let mut config = config();
    config.policy.deny_latest.enabled = true;
    config.policy.require_digest.enabled = true;
    let inputs = Inputs {
        pods: vec![
            pod("a", "ready", None, &["nginx:1.27"]),
            pod("b", "latest", None, &["redis"]),
            pod("c", "new", None, &["busybox:1.36"]),
        ],
        mirrors: vec![nginx_ready()],
        ..Inputs::default()
    };
    let report = build(&config, &[], &inputs);
    // Gate rewrites a Ready mirror to its pinned copy: requireDigest holds.
    assert!(
        row(&report, "Pod/ready", "nginx:1.27")
            .would_deny
            .is_empty()
    );
    // :latest is never mirrored, and denied.
    let redis = row(&report, "Pod/latest", "redis");
    assert_eq!(redis.state, State::NotMirrored);
    let rules: Vec<&str> = redis.would_deny.iter().map(|d| d.rule).collect();
    assert_eq!(rules, ["denyLatest", "requireDigest"], "{redis:#?}");
    // Not mirrored yet: Gate would hold it, then rewrite to the tag until Ready.
    let busybox = row(&report, "Pod/new", "busybox:1.36");
    assert_eq!(busybox.would_deny[0].rule, "requireDigest");
    assert_eq!(report.workloads_denied, ["b/Pod/latest", "c/Pod/new"]);
    let table = render_table(&report);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split("   ")
        .collect();
    assert_eq!(header[0], "NAMESPACE", "{table}");
    assert!(table.contains("denyLatest,requireDigest"), "{table}");
    assert!(table.contains("2 workloads would be denied"), "{table}");
}

#[test]
fn skipped_namespaces_finished_pods_and_failed_copies() {
    let busybox = privateer_image::object_name(
        &privateer_image::Reference::parse("busybox:1.36").expect("a reference"),
    );
    let mut done = pod("a", "done", None, &["nginx:1.27"]);
    done.status = serde_json::from_value(json!({"phase": "Succeeded"})).ok();
    let inputs = Inputs {
        pods: vec![
            pod("quiet", "q", None, &["nginx:1.27"]),
            pod("a", "f", None, &["busybox:1.36"]),
            done,
        ],
        mirrors: vec![mirror(
            &busybox,
            "docker.io/library/busybox:1.36",
            json!({"phase": "Failed", "lastError": "manifest unknown"}),
        )],
        skipped_namespaces: ["quiet".to_owned()].into(),
    };
    let report = build(&config(), &[], &inputs);
    assert_eq!(
        report.rows.len(),
        2,
        "a Succeeded Pod uses nothing: {report:#?}"
    );
    let quiet = row(&report, "Pod/q", "nginx:1.27");
    assert_eq!(quiet.state, State::NotMirrored);
    assert!(
        quiet
            .note
            .as_deref()
            .is_some_and(|n| n.contains("privateer.dev/skip"))
    );
    let failed = row(&report, "Pod/f", "busybox:1.36");
    assert_eq!(failed.state, State::Failed);
    assert_eq!(failed.note.as_deref(), Some("manifest unknown"));
    let json = serde_json::to_value(&report).expect("JSON");
    assert_eq!(json["rows"][0]["state"], "Failed");
    assert_eq!(json["rows"][0]["imageMirror"], busybox.as_str());
}
