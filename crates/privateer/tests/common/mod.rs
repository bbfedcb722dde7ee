//! What the end-to-end tests of the operator share: its configuration against the local
//! environment, starting `privateer controller|webhook|run`, cluster preparation, waits.
#![allow(dead_code, clippy::unwrap_used)] // each test file uses a part; a failed unwrap fails the test

use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::runtime::wait::await_condition;
use privateer_api::{ImageMirror, Phase, names};
use privateer_e2e::TestEnv;
use privateer_e2e::moto::{ACCESS_KEY, ACCOUNT, REGION, SECRET_KEY};
use privateer_e2e::pki::Ca;
use privateer_e2e::process::{Managed, free_port};
use serde_json::json;

pub mod installed;

#[derive(PartialEq, Eq, Clone, Copy)]
pub enum Executor {
    Job,
    Inline,
}

pub fn config_yaml(env: &TestEnv) -> String {
    let source = &env.source.as_ref().unwrap().host;
    let target = &env.target.as_ref().unwrap().host;
    let moto = &env.moto.as_ref().unwrap().endpoint;
    // Copy Jobs run privateer's image on the node (the environment pushed it).
    let image = env.privateer_image.as_deref().unwrap_or("privateer:none");
    format!(
        "namespace: privateer
target:
  registry: {ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com
  ecr:
    region: {REGION}
    endpointUrl: {moto}
    registryEndpoint: http://{target}
sources:
  endpoints:
    docker.io: {{url: \"http://{source}\"}}
copy:
  job: {{image: \"{image}\"}}
controller:
  retry: {{initialBackoff: 1s, maxBackoff: 2s, maxAttempts: 3, slowRetryInterval: 30s}}
  leaderElection: {{leaseDuration: 4s}}
webhook:
  gateTimeout: 8s
"
    )
}

/// Start `privateer <subcommand>` with the environment's configuration deep-merged with
/// `extra` (YAML documents separated by `---`; later keys win); returns the process and its metrics address.
pub fn start_operator(
    env: &TestEnv,
    name: &str,
    subcommand: &str,
    extra: &str,
) -> (Managed, String) {
    let config = env.dir.join(format!("{name}.yaml"));
    let metrics = format!("127.0.0.1:{}", free_port().unwrap());
    let mut merged: serde_yaml::Value = serde_yaml::from_str(&config_yaml(env)).unwrap();
    let extra = format!("metrics: {{listen: \"{metrics}\"}}\n---\n{extra}");
    // `extra` may hold several YAML documents, merged in order.
    for document in extra.split("\n---\n") {
        let value: serde_yaml::Value = serde_yaml::from_str(document).unwrap();
        if !value.is_null() {
            merge(&mut merged, value);
        }
    }
    let yaml = serde_yaml::to_string(&merged).unwrap();
    std::fs::write(&config, yaml).unwrap();
    let command = operator_command(env, subcommand, &config);
    (Managed::spawn(name, command, &env.dir).unwrap(), metrics)
}

/// `privateer <subcommand> --config <config>` against the environment's cluster and moto.
pub fn operator_command(env: &TestEnv, subcommand: &str, config: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_privateer"));
    command
        .args([subcommand, "--config"])
        .arg(config)
        .env_clear()
        .env("KUBECONFIG", env.kubeconfig.as_ref().unwrap())
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "info");
    command
}

fn merge(base: &mut serde_yaml::Value, extra: serde_yaml::Value) {
    match (base, extra) {
        (serde_yaml::Value::Mapping(base), serde_yaml::Value::Mapping(extra)) => {
            for (key, value) in extra {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, extra) => *base = extra,
    }
}

pub fn http_get(address: &str, path: &str) -> (String, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-w",
            "\n%{http_code}",
            &format!("http://{address}{path}"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
    (code.to_owned(), body.to_owned())
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
    let client = env.client();
    env.install_crd().await.unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "privateer"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "privateer");
    let account: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "privateer-copy"}}))
            .unwrap();
    accounts
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
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
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let skip = json!({"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "privateer"]},
        {"key": names::SKIP, "operator": "NotIn", "values": ["true"]}]});
    let mutating: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": "privateer"},
        "webhooks": [{
            "name": "mutate.privateer.dev",
            "clientConfig": {"url": format!("{url}/mutate"), "caBundle": ca},
            "rules": [
                {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]},
                {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["pods/ephemeralcontainers"]}],
            "failurePolicy": "Ignore", "sideEffects": "NoneOnDryRun", "timeoutSeconds": 10,
            "reinvocationPolicy": "IfNeeded", "admissionReviewVersions": ["v1"],
            "namespaceSelector": skip,
        }]
    }))
    .unwrap();
    let validating: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": "privateer"},
        "webhooks": [{
            "name": "validate.privateer.dev",
            "clientConfig": {"url": format!("{url}/validate"), "caBundle": ca},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
            "failurePolicy": "Ignore", "sideEffects": "None", "timeoutSeconds": 10,
            "admissionReviewVersions": ["v1"], "namespaceSelector": skip,
        }]
    }))
    .unwrap();
    let pp = PostParams::default();
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .create(&pp, &mutating)
        .await
        .unwrap();
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .create(&pp, &validating)
        .await
        .unwrap();
}

pub async fn wait_ready(metrics: &str, process: &Managed) {
    for _ in 0..150 {
        if http_get(metrics, "/readyz").0 == "200" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "privateer run never became ready:\n{}",
        process.log_tail(40)
    );
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
    let ca = Ca::new("privateer-webhook-ca").unwrap();
    let cert = ca.serving_cert(&env.dir, name, &[]).unwrap();
    let port = free_port().unwrap();
    let tls = format!(
        "webhook: {{listen: \"127.0.0.1:{port}\", tlsCertFile: \"{}\", tlsKeyFile: \"{}\"}}",
        cert.cert.display(),
        cert.key.display()
    );
    let (privateer, metrics) = start_operator(env, name, "run", &format!("{tls}\n---\n{extra}"));
    wait_ready(&metrics, &privateer).await;
    register(
        &env.client(),
        &format!("https://127.0.0.1:{port}"),
        &ca.cert_pem,
    )
    .await;
    (privateer, metrics)
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
