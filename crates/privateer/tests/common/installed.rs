//! privateer installed by `helm install` on the real node, as a platform team installs it:
//! the chart's defaults but for where this environment's registries and ECR API are.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, PostParams};
use privateer_api::{ImageMirror, Phase};
use privateer_e2e::TestEnv;
use privateer_e2e::moto::{ACCOUNT, REGION};
use serde_json::json;

pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../charts/privateer");
pub const NAMESPACE: &str = "privateer";
/// The operator's Pods (not the copy Jobs').
pub const OPERATOR_PODS: &str = "app.kubernetes.io/name=privateer,app.kubernetes.io/component=run";

/// Values for this environment: the image `just image` built, the target (moto's ECR and its
/// registry), `docker.io` served by `source` (the source registry's host, or a proxy in front
/// of it).
pub fn values(env: &TestEnv, source: &str) -> String {
    let target = &env.target.as_ref().unwrap().host;
    let moto = &env.moto.as_ref().unwrap().endpoint;
    let (repository, tag) = env
        .privateer_image
        .as_deref()
        .unwrap()
        .rsplit_once(':')
        .unwrap();
    format!(
        "image: {{repository: \"{repository}\", tag: \"{tag}\"}}
config:
  target:
    registry: {ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com
    ecr: {{region: {REGION}, endpointUrl: \"{moto}\", registryEndpoint: \"http://{target}\"}}
  sources:
    endpoints:
      docker.io: {{url: \"http://{source}\"}}
"
    )
}

/// `helm template` runs offline and, built from source, assumes Kubernetes 1.20; the chart
/// needs 1.33 or later.
const KUBE_VERSION: &str = "1.34.0";

/// `helm template privateer CHART -n privateer` for Kubernetes KUBE_VERSION, plus `args`.
pub fn template(env: &TestEnv, args: &[&str]) -> std::process::Command {
    let mut command = env.helm();
    command.args([
        "template",
        "privateer",
        CHART,
        "-n",
        "privateer",
        "--kube-version",
        KUBE_VERSION,
    ]);
    command.args(args);
    command
}

/// Run `command` to success; its stdout (the failure shows both streams).
pub fn run(mut command: std::process::Command, what: &str) -> String {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn helm(env: &TestEnv, args: &[&str]) -> String {
    let out = env.helm().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `helm install privateer` with `values(env, source)` and then `extra` (a values file Helm
/// merges over it; may be empty), waiting for the Deployment; then until the API server
/// reaches the webhook through its Service in namespace `apps` (created); returns the NOTES. Ready replicas are not yet a reachable Service: kube-proxy programs the ClusterIP a
/// moment later, and until then the API server's call fails (failurePolicy Ignore admits the
/// Pod unchanged); a server-side dry run (nothing recorded) shows when it answers.
pub async fn install(env: &TestEnv, source: &str, extra: &str, apps: &str) -> String {
    let base = env.dir.join("values.yaml");
    std::fs::write(&base, values(env, source)).unwrap();
    let overrides = env.dir.join("values-extra.yaml");
    std::fs::write(&overrides, extra).unwrap();
    let (base, overrides) = (base.display().to_string(), overrides.display().to_string());
    let notes = helm(
        env,
        &[
            "install",
            "privateer",
            CHART,
            "-n",
            NAMESPACE,
            "--create-namespace",
            "-f",
            &base,
            "-f",
            &overrides,
            "--wait",
            "--timeout",
            "180s",
        ],
    );
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": apps}})).unwrap();
    Api::<Namespace>::all(env.client())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    wait_webhook_answers(env, apps).await;
    notes
}

/// Until a dry-run Pod of `nginx:1.27` in `namespace` comes back rewritten to the target.
pub async fn wait_webhook_answers(env: &TestEnv, namespace: &str) {
    let pods: Api<Pod> = Api::namespaced(env.client(), namespace);
    eventually(
        60,
        "the webhook answers through its Service",
        async || match dry_run_image(&pods).await? {
            image if image.starts_with(&ecr_prefix()) => Ok(()),
            image => Err(image),
        },
    )
    .await;
}

/// What a server-side dry run of a Pod of `nginx:1.27` is admitted as (nothing recorded).
pub async fn dry_run_image(pods: &Api<Pod>) -> Result<String, String> {
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let trial: Pod = serde_json::from_value(json!({"metadata": {"generateName": "trial-"},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}))
    .unwrap();
    let pod = pods
        .create(&dry_run, &trial)
        .await
        .map_err(|e| e.to_string())?;
    Ok(pod.spec.unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default())
}

/// `<account>.dkr.ecr.<region>.amazonaws.com/`: how rewritten images start.
pub fn ecr_prefix() -> String {
    format!("{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/")
}

/// The copy Jobs of `image`'s mirror (those it has not left after a failure).
pub async fn copy_jobs(env: &TestEnv, image: &str) -> Vec<Job> {
    let label = privateer_controller::copy_member_label(&super::mirror_name(image));
    Api::<Job>::namespaced(env.client(), NAMESPACE)
        .list(&ListParams::default().labels(&label))
        .await
        .unwrap()
        .items
}

/// The mirror of `image` once Ready, within `seconds`.
pub async fn mirror_ready(env: &TestEnv, image: &str, seconds: u64) -> ImageMirror {
    let mirrors: Api<ImageMirror> = Api::all(env.client());
    let name = super::mirror_name(image);
    eventually(seconds, &format!("{name} is Ready"), async || {
        let mirror = mirrors.get(&name).await.map_err(|e| e.to_string())?;
        match mirror.phase() {
            Phase::Ready => Ok(mirror),
            _ => Err(format!("{:?}", mirror.status)),
        }
    })
    .await
}

/// The operator's Pods.
pub async fn operator_pods(env: &TestEnv) -> Vec<Pod> {
    Api::<Pod>::namespaced(env.client(), NAMESPACE)
        .list(&ListParams::default().labels(OPERATOR_PODS))
        .await
        .unwrap()
        .items
}

pub fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Polls `what` every 250 ms for up to `seconds`; the last value on timeout in the panic.
pub async fn eventually<T: std::fmt::Debug>(
    seconds: u64,
    what: &str,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let mut last = String::new();
    for _ in 0..seconds * 4 {
        match check().await {
            Ok(value) => return value,
            Err(now) => last = now,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{what} did not happen in {seconds} s; last seen: {last}")
}
