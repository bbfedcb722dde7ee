//! privateer itself against this environment, as a host process: its configuration (the
//! cluster, moto as the ECR API, `docker.io` served by the source registry), starting
//! `privateer controller|webhook|run`, and registering its webhooks as the chart does. Shared
//! by the end-to-end tests (debug build) and the benchmarks (release build).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::api::{Api, PostParams};
use privateer_api::names;
use serde_json::json;

use crate::TestEnv;
use crate::moto::{ACCESS_KEY, ACCOUNT, REGION, SECRET_KEY};
use crate::pki::Ca;
use crate::process::{Managed, free_port};

/// The configuration every run starts from; tests and benchmarks merge their own over it.
pub fn config_yaml(env: &TestEnv) -> anyhow::Result<String> {
    let source = &env.source.as_ref().context("no source registry")?.host;
    let target = &env.target.as_ref().context("no target registry")?.host;
    let moto = &env.moto.as_ref().context("no moto")?.endpoint;
    // Copy Jobs run privateer's image on the node (the environment pushed it).
    let image = env.privateer_image.as_deref().unwrap_or("privateer:none");
    Ok(format!(
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
    ))
}

/// `config_yaml` deep-merged with `extra` (YAML documents separated by `---`; later keys win).
pub fn merged_config(env: &TestEnv, extra: &str) -> anyhow::Result<String> {
    let mut merged: serde_yaml::Value = serde_yaml::from_str(&config_yaml(env)?)?;
    for document in extra.split("\n---\n") {
        let value: serde_yaml::Value =
            serde_yaml::from_str(document).with_context(|| format!("extra config {document}"))?;
        if !value.is_null() {
            merge(&mut merged, value);
        }
    }
    Ok(serde_yaml::to_string(&merged)?)
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

/// `binary <subcommand>` (a privateer build) with the merged configuration and metrics on a
/// free port; returns the process and its metrics address.
pub fn start(
    env: &TestEnv,
    binary: &Path,
    name: &str,
    subcommand: &str,
    extra: &str,
) -> anyhow::Result<(Managed, String)> {
    let config = env.dir.join(format!("{name}.yaml"));
    let metrics = format!("127.0.0.1:{}", free_port()?);
    let extra = format!("metrics: {{listen: \"{metrics}\"}}\n---\n{extra}");
    std::fs::write(&config, merged_config(env, &extra)?)?;
    let command = command(env, binary, subcommand, &config)?;
    Ok((Managed::spawn(name, command, &env.dir)?, metrics))
}

/// `binary <subcommand> --config <config>` against the environment's cluster and moto.
pub fn command(
    env: &TestEnv,
    binary: &Path,
    subcommand: &str,
    config: &Path,
) -> anyhow::Result<Command> {
    let mut command = Command::new(binary);
    command
        .args([subcommand, "--config"])
        .arg(config)
        .env_clear()
        .env("KUBECONFIG", env.kubeconfig.as_ref().context("no cluster")?)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "info");
    // The allocator's knobs pass through, to measure them (`just bench scale`).
    for knob in ["MALLOC_ARENA_MAX", "MALLOC_TRIM_THRESHOLD_"] {
        if let Some(value) = std::env::var_os(knob) {
            command.env(knob, value);
        }
    }
    Ok(command)
}

/// `curl` GET `http://address/path`: (status code, body).
pub fn http_get(address: &str, path: &str) -> anyhow::Result<(String, String)> {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .arg(format!("http://{address}{path}"))
        .output()
        .context("run curl")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
    Ok((code.to_owned(), body.to_owned()))
}

/// Until `/readyz` on the metrics port answers 200 (30 s).
pub async fn wait_ready(metrics: &str, process: &Managed) -> anyhow::Result<()> {
    for _ in 0..150 {
        if http_get(metrics, "/readyz")?.0 == "200" {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!(
        "{} never became ready:\n{}",
        process.name(),
        process.log_tail(40)
    )
}

/// Register privateer's webhooks as the chart does, pointing at `url` on this machine.
pub async fn register(client: &kube::Client, url: &str, ca_pem: &str) -> anyhow::Result<()> {
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
    }))?;
    let validating: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": "privateer"},
        "webhooks": [{
            "name": "validate.privateer.dev",
            "clientConfig": {"url": format!("{url}/validate"), "caBundle": ca},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
            "failurePolicy": "Ignore", "sideEffects": "None", "timeoutSeconds": 10,
            "admissionReviewVersions": ["v1"], "namespaceSelector": skip,
        }]
    }))?;
    // Replacing what an earlier registration in this environment left.
    let pp = PostParams::default();
    let gone = kube::api::DeleteParams::default();
    let mutating_api = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let _ = mutating_api.delete("privateer", &gone).await;
    mutating_api.create(&pp, &mutating).await?;
    let validating_api = Api::<ValidatingWebhookConfiguration>::all(client.clone());
    let _ = validating_api.delete("privateer", &gone).await;
    validating_api.create(&pp, &validating).await?;
    Ok(())
}

/// A CA, a free port of 127.0.0.1 and the `webhook:` configuration serving TLS there with a
/// certificate of that CA.
pub fn serving_tls(env: &TestEnv, name: &str) -> anyhow::Result<(Ca, u16, String)> {
    let ca = Ca::new("privateer-webhook-ca")?;
    let cert = ca.serving_cert(&env.dir, name, &[])?;
    let port = free_port()?;
    let tls = format!(
        "webhook: {{listen: \"127.0.0.1:{port}\", tlsCertFile: \"{}\", tlsKeyFile: \"{}\"}}",
        cert.cert.display(),
        cert.key.display()
    );
    Ok((ca, port, tls))
}

/// `binary <subcommand>` (`run` or `webhook`) with `extra` configuration serving the webhook
/// over TLS on a free port of 127.0.0.1, ready and registered with the API server; returns the
/// process and its metrics address.
pub async fn start_registered(
    env: &TestEnv,
    binary: &Path,
    name: &str,
    subcommand: &str,
    extra: &str,
) -> anyhow::Result<(Managed, String)> {
    let (ca, port, tls) = serving_tls(env, name)?;
    let (process, metrics) = start(
        env,
        binary,
        name,
        subcommand,
        &format!("{tls}\n---\n{extra}"),
    )?;
    wait_ready(&metrics, &process).await?;
    register(
        &env.client(),
        &format!("https://127.0.0.1:{port}"),
        &ca.cert_pem,
    )
    .await?;
    Ok((process, metrics))
}

/// What the chart makes before privateer starts: the CRD, the operator namespace and the copy
/// Pods' service account.
pub async fn prepare_cluster(env: &TestEnv) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
    let client = env.client();
    env.install_crd().await?;
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": "privateer"}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "privateer-copy"}}))?;
    Api::<ServiceAccount>::namespaced(client, "privateer")
        .create(&PostParams::default(), &account)
        .await?;
    Ok(())
}
