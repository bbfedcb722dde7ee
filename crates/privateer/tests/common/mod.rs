//! What the end-to-end tests of the operator share: its configuration against the local
//! environment, starting `privateer controller|webhook|run`, cluster preparation, waits.
#![allow(dead_code, clippy::unwrap_used)] // each test file uses a part; a failed unwrap fails the test

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, PostParams};
use kube::runtime::wait::await_condition;
use privateer_api::{ImageMirror, Phase};
use privateer_e2e::process::Managed;
use privateer_e2e::{TestEnv, operator};
use serde_json::json;

pub mod installed;

#[derive(PartialEq, Eq, Clone, Copy)]
pub enum Executor {
    Job,
    Inline,
}

pub fn config_yaml(env: &TestEnv) -> String {
    operator::config_yaml(env).unwrap()
}

/// Start `privateer <subcommand>` with the environment's configuration deep-merged with
/// `extra` (YAML documents separated by `---`; later keys win); returns the process and its metrics address.
pub fn start_operator(
    env: &TestEnv,
    name: &str,
    subcommand: &str,
    extra: &str,
) -> (Managed, String) {
    operator::start(env, privateer(), name, subcommand, extra).unwrap()
}

/// `privateer <subcommand> --config <config>` against the environment's cluster and moto.
pub fn operator_command(env: &TestEnv, subcommand: &str, config: &std::path::Path) -> Command {
    operator::command(env, privateer(), subcommand, config).unwrap()
}

/// The debug build under test.
fn privateer() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_privateer"))
}

pub fn http_get(address: &str, path: &str) -> (String, String) {
    operator::http_get(address, path).unwrap()
}

/// The full environment with the cluster prepared; `None` when the environment is not
/// installed (the test then skips, or fails under PRIVATEER_REQUIRE_TESTENV).
pub async fn prepared(test: &str) -> Option<TestEnv> {
    let env = TestEnv::full().start_or_skip(test).await.unwrap()?;
    prepare_cluster(&env).await;
    Some(env)
}

/// The CRD, the operator namespace and the copy pods' service account (as the chart makes them).
pub async fn prepare_cluster(env: &TestEnv) {
    operator::prepare_cluster(env).await.unwrap()
}

/// Wait until the mirror reaches `phase`; the controller's log tail on timeout.
pub async fn wait_for_phase(
    mirrors: &Api<ImageMirror>,
    name: &str,
    phase: Phase,
    controller: &Managed,
) -> ImageMirror {
    let reached = await_condition(mirrors.clone(), name, move |m: Option<&ImageMirror>| {
        m.is_some_and(|m| m.phase() == phase)
    });
    match tokio::time::timeout(Duration::from_secs(90), reached).await {
        Ok(Ok(Some(mirror))) => mirror,
        _ => {
            let now = mirrors.get(name).await.ok();
            panic!(
                "{name} did not reach {phase:?}: {:?}\ncontroller log:\n{}",
                now.and_then(|m| m.status),
                controller.log_tail(40)
            )
        }
    }
}

pub async fn wait_for_pod(
    pods: &Api<Pod>,
    name: &str,
    what: &str,
    done: impl Fn(&Pod) -> bool,
) -> Pod {
    for _ in 0..200 {
        let pod = pods.get(name).await.unwrap();
        if done(&pod) {
            return pod;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("pod {name}: {what} did not happen in 40 s")
}

pub fn ungated(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .is_none_or(Vec::is_empty)
}

/// Register privateer's webhooks as the chart does, pointing at `url` on this machine.
pub async fn register(client: &kube::Client, url: &str, ca_pem: &str) {
    operator::register(client, url, ca_pem).await.unwrap()
}

pub async fn wait_ready(metrics: &str, process: &Managed) {
    operator::wait_ready(metrics, process).await.unwrap()
}

/// The `apps` namespace, `privateer run` with `extra` configuration serving the webhook over
/// TLS on a free port, registered with the API server, ready.
pub async fn start_registered(env: &TestEnv, name: &str, extra: &str) -> Managed {
    start_registered_with_metrics(env, name, extra).await.0
}

/// [`start_registered`], with the address of its plain port (`/metrics`).
pub async fn start_registered_with_metrics(
    env: &TestEnv,
    name: &str,
    extra: &str,
) -> (Managed, String) {
    let apps: Namespace = serde_json::from_value(json!({"metadata": {"name": "apps"}})).unwrap();
    Api::<Namespace>::all(env.client())
        .create(&PostParams::default(), &apps)
        .await
        .unwrap();
    operator::start_registered(env, privateer(), name, "run", extra)
        .await
        .unwrap()
}

/// A Pod of one container `app` running `image` in the `apps` namespace.
pub fn apps_pod(name: &str, image: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "apps"},
        "spec": {"containers": [{"name": "app", "image": image}]}
    }))
    .unwrap()
}

/// The ImageMirror name privateer gives `image`.
pub fn mirror_name(image: &str) -> String {
    privateer_image::object_name(&privateer_image::Reference::parse(image).unwrap())
}
