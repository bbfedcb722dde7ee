//! Audit mode on the real node: under `rewritePolicy: Record` a Deployment's Pods run from the
//! source, unchanged, while their mirror is recorded and copied; `privateer report` then lists
//! the images in use by namespace and workload, their mirrors, and what the policy of the
//! configuration a team means to switch to would deny (table from the chart's ConfigMap, JSON
//! from a file).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, PostParams};
use privateer_api::names;
use privateer_e2e::env::{TestEnv, wait_pod_phase};
use serde_json::{Value, json};

mod common;
use common::installed::{eventually, mirror_ready};
use common::*;

/// `privateer report ARGS` against the environment's cluster; its stdout.
fn report(env: &TestEnv, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_privateer"))
        .arg("report")
        .args(args)
        .env_clear()
        .env("KUBECONFIG", env.kubeconfig.as_ref().unwrap())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "privateer report {args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_leaves_pods_on_the_source_and_the_report_shows_what_gate_would_change() {
    let Some(env) = prepared("Record and privateer report").await else {
        return;
    };
    for tag in ["1", "latest"] {
        env.push_runnable("library/audited", tag, &["sleep", "3600"])
            .await
            .unwrap();
    }
    let _privateer = start_registered(&env, "record", "webhook: {rewritePolicy: Record}").await;
    let client = env.client();
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "shop", "namespace": "apps"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "shop"}},
            "template": {
                "metadata": {"labels": {"app": "shop"}},
                "spec": {"containers": [{"name": "web", "image": "audited:1"}]}
            }
        }
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), "apps")
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "apps");
    pods.create(&PostParams::default(), &apps_pod("loose", "audited"))
        .await
        .unwrap();
    wait_pod_phase(&pods, "loose", "Running").await.unwrap();
    let shop = eventually(90, "both shop Pods running", async || {
        let listed = pods
            .list(&ListParams::default().labels("app=shop"))
            .await
            .map_err(|e| e.to_string())?;
        let running = listed
            .items
            .iter()
            .filter(|p| installed::phase(p) == "Running")
            .count();
        if running == 2 {
            Ok(listed.items)
        } else {
            Err(format!("{running} running"))
        }
    })
    .await;
    for pod in &shop {
        let container = &pod.spec.as_ref().unwrap().containers[0];
        assert_eq!(container.image.as_deref(), Some("audited:1"), "unchanged");
        let annotations = pod.metadata.annotations.clone().unwrap_or_default();
        assert!(
            !annotations.contains_key(names::ANNOTATION_ORIGINAL_IMAGES),
            "{annotations:?}"
        );
        assert!(ungated(pod));
        assert!(pod.spec.as_ref().unwrap().image_pull_secrets.is_none());
    }
    // Recorded and copied all the same.
    mirror_ready(&env, "audited:1", 60).await;
    mirror_ready(&env, "audited", 60).await;

    // The table, with the running configuration from the chart's ConfigMap.
    let running_config = std::fs::read_to_string(env.dir.join("record.yaml")).unwrap();
    let map: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "privateer", "namespace": "privateer"},
        "data": {"config.yaml": running_config}
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), "privateer")
        .create(&PostParams::default(), &map)
        .await
        .unwrap();
    let table = report(&env, &["-n", "apps"]);
    let shop_line = table
        .lines()
        .find(|l| l.contains("Deployment/shop"))
        .unwrap_or_else(|| panic!("{table}"));
    let cells: Vec<&str> = shop_line.split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "apps",
            "Deployment/shop",
            "web",
            "audited:1",
            "2",
            "Ready",
            "source",
            "-"
        ],
        "{table}"
    );
    assert!(table.contains("0 workloads would be denied"), "{table}");

    // JSON, judged by the configuration the team means to switch to: Gate, no :latest.
    let planned = env.dir.join("planned.yaml");
    std::fs::write(
        &planned,
        format!("{running_config}\npolicy:\n  denyLatest: {{enabled: true}}\n")
            .replace("rewritePolicy: Record", "rewritePolicy: Gate"),
    )
    .unwrap();
    let json: Value = serde_json::from_str(&report(
        &env,
        &["--config", planned.to_str().unwrap(), "-o", "json"],
    ))
    .unwrap();
    let rows = json["rows"].as_array().unwrap();
    let row = |workload: &str| {
        rows.iter()
            .find(|r| r["namespace"] == "apps" && r["workload"] == workload)
            .unwrap_or_else(|| panic!("no {workload}: {json:#}"))
    };
    let shop = row("Deployment/shop");
    assert_eq!(shop["state"], "Ready", "{json:#}");
    assert_eq!(shop["runsFrom"], "Source");
    assert_eq!(shop["pods"], 2);
    assert!(shop["targetImage"].as_str().unwrap().contains("@sha256:"));
    assert!(shop.get("wouldDeny").is_none(), "{shop:#}");
    let loose = row("Pod/loose");
    assert_eq!(loose["image"], "audited");
    assert_eq!(
        loose["state"], "NotMirrored",
        "denied images are never mirrored"
    );
    assert_eq!(loose["wouldDeny"][0]["rule"], "denyLatest", "{loose:#}");
    assert_eq!(json["workloadsDenied"], json!(["apps/Pod/loose"]));
}
