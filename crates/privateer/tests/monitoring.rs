//! The chart's PrometheusRule and Grafana dashboard: rendered by `helm template`, the rules
//! checked and unit-tested by promtool (each alert fires on the series it is about, and not
//! before its threshold), and every privateer metric either names one that `privateer run`
//! exports on its plain port.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use privateer_e2e::moto::{ACCOUNT, REGION};
use serde_json::Value;

mod common;
#[path = "common/peers.rs"]
mod peers;
use common::installed::{run, template};
use common::*;
use peers::{peer, peers_present, succeeded};

/// promtool's unit tests of the rules (the chart's defaults: failedFor 15m, 15 gated minutes).
const RULE_TESTS: &str = r#"rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'privateer_mirrors{phase="Failed"}'
        values: '0 0 1x40'
      - series: 'privateer_gated_pod_oldest_seconds'
        values: '0+60x40'
      - series: 'privateer_copies_total{result="failure"}'
        values: '0+1x60'
      - series: 'privateer_copies_total{result="success"}'
        values: '5x60'
      - series: 'privateer_source_throttled_total{host="docker.io"}'
        values: '0x20 1x40'
    alert_rule_test:
      - {eval_time: 10m, alertname: PrivateerMirrorFailed, exp_alerts: []}
      - eval_time: 20m
        alertname: PrivateerMirrorFailed
        exp_alerts:
          - exp_labels: {severity: warning}
            exp_annotations:
              summary: "1 ImageMirrors are Failed"
              description: "Pods that use them run from the public source or are refused; kubectl get imagemirrors shows status.lastError."
      - {eval_time: 14m, alertname: PrivateerPodGatedTooLong, exp_alerts: []}
      - eval_time: 20m
        alertname: PrivateerPodGatedTooLong
        exp_alerts:
          - exp_labels: {severity: warning}
            exp_annotations:
              summary: "A Pod has waited for its mirrors for more than 15 minutes"
              description: "webhook.gateTimeout should have released it with its original images; the gate releaser may be stuck (privateer's log, kubectl get pods -l privateer.dev/gated=true -A)."
      - eval_time: 50m
        alertname: PrivateerCopiesFailing
        exp_alerts:
          - exp_labels: {severity: warning}
            exp_annotations:
              summary: "Every copy of the last 30 minutes failed"
              description: "Check the target registry's credentials and reachability (privateer target check) and the sources' (status.lastError)."
      - {eval_time: 50m, alertname: PrivateerWebhookErrors, exp_alerts: []}
      - {eval_time: 15m, alertname: PrivateerSourceThrottled, exp_alerts: []}
      - eval_time: 25m
        alertname: PrivateerSourceThrottled
        exp_alerts:
          - exp_labels: {severity: info, host: docker.io}
            exp_annotations:
              summary: "docker.io refused privateer's requests with 429 in the last 30 minutes"
              description: "Its mirrors wait for its Retry-After; set or lower sources.rateLimits for it (or give it credentials) so copies stay inside its budget."
      - {eval_time: 59m, alertname: PrivateerSourceThrottled, exp_alerts: []}
"#;

/// The PrometheusRule's `spec` and the dashboard's JSON, from `helm template` with both on.
fn rendered(env: &privateer_e2e::TestEnv) -> (Value, Value) {
    let registry = format!("config.target.registry={ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com");
    let enabled = [
        "--set",
        &registry,
        "--set",
        "metrics.prometheusRule.enabled=true",
        "--set",
        "metrics.grafanaDashboard.enabled=true",
    ];
    let text = run(template(env, &enabled), "helm template");
    let (mut rule, mut dashboard) = (None, None);
    for document in text.split("\n---") {
        let object: Value = serde_yaml::from_str(document).unwrap();
        match object["kind"].as_str() {
            Some("PrometheusRule") => rule = Some(object["spec"].clone()),
            Some("ConfigMap") if object["metadata"]["name"] == "privateer-dashboard" => {
                let json = object["data"]["privateer.json"].as_str().unwrap();
                assert_eq!(
                    object["metadata"]["labels"]["grafana_dashboard"], "1",
                    "the sidecar's label"
                );
                dashboard = Some(serde_json::from_str(json).unwrap());
            }
            _ => {}
        }
    }
    (
        rule.expect("a PrometheusRule"),
        dashboard.expect("the dashboard"),
    )
}

/// The privateer metric families an expression names (`_total`, `_bucket`, `_sum`, `_count`
/// are the samples of a family).
fn families_named(expr: &str, into: &mut BTreeSet<String>) {
    for (start, _) in expr.match_indices("privateer_") {
        let name: String = expr[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let family = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name);
        into.insert(family.to_owned());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_alerts_and_dashboard_hold_and_name_metrics_privateer_exports() {
    let Some(env) = prepared("the chart's alerts and dashboard").await else {
        return;
    };
    if !peers_present("the chart's alerts and dashboard") {
        return;
    }
    let (rule, dashboard) = rendered(&env);
    std::fs::write(
        env.dir.join("rules.yaml"),
        serde_yaml::to_string(&rule).unwrap(),
    )
    .unwrap();
    std::fs::write(env.dir.join("rules_test.yaml"), RULE_TESTS).unwrap();
    let checked = peer(&env.dir, "promtool", &["check", "rules", "rules.yaml"]);
    succeeded(&checked, "promtool check rules");
    let tested = peer(&env.dir, "promtool", &["test", "rules", "rules_test.yaml"]);
    succeeded(&tested, "promtool test rules");

    let mut named = BTreeSet::new();
    for group in rule["groups"].as_array().unwrap() {
        for alert in group["rules"].as_array().unwrap() {
            families_named(alert["expr"].as_str().unwrap(), &mut named);
        }
    }
    let panels = dashboard["panels"].as_array().unwrap();
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            families_named(target["expr"].as_str().unwrap(), &mut named);
        }
    }
    assert!(named.len() >= 10, "{named:?}");

    // One Pod denied by denyLatest: admission requests, their latency and a denial are counted
    // (the other families are exported at 0 from the start).
    let (_privateer, metrics) =
        start_registered_with_metrics(&env, "monitoring", "policy: {denyLatest: {enabled: true}}")
            .await;
    let pods: Api<Pod> = Api::namespaced(env.client(), "apps");
    let denied = pods
        .create(&PostParams::default(), &apps_pod("latest", "nginx:latest"))
        .await;
    assert!(denied.is_err(), "denied by denyLatest: {denied:?}");
    let (code, text) = http_get(&metrics, "/metrics");
    assert_eq!(code, "200");
    let exported: BTreeSet<String> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let unknown: Vec<&String> = named.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "the chart names metrics privateer does not export: {unknown:?}\nexported: {exported:?}"
    );
}
