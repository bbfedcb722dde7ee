//! The Helm chart on the real control plane: `helm lint`, `helm template`, `helm install` (the
//! API server accepts every object), `helm upgrade` keeping the certificate, then privateer run
//! here against the release's own configuration and certificate, a Pod admitted through the
//! chart's own webhook configuration, and `helm uninstall` leaving ImageMirrors in place.
//! (No node here: the Deployment's Pods stay Pending; `in_cluster.rs` installs it for real.)
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use privateer_api::{ImageMirror, Phase, names};
use privateer_e2e::TestEnv;
use privateer_e2e::images::{Format, Image, Pusher, layer};
use privateer_e2e::moto::{ACCOUNT, REGION};
use privateer_e2e::process::{Managed, free_port};
use privateer_e2e::registry::oci_client;
use privateer_image::{Reference, object_name};
use serde_json::json;

mod common;
use common::installed::{CHART, run, template};
use common::*;

fn helm(env: &TestEnv, args: &[&str]) -> Command {
    let mut command = env.helm();
    command.args(args);
    command
}

/// Values for this environment: ECR emulated by moto, docker.io from the local source registry,
/// inline copies (no node runs Jobs here), the webhook called at a URL on this machine.
fn values(env: &TestEnv, port: u16) -> String {
    let source = &env.source.as_ref().unwrap().host;
    let target = &env.target.as_ref().unwrap().host;
    let moto = &env.moto.as_ref().unwrap().endpoint;
    format!(
        "config:
  target:
    registry: {ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com
    ecr: {{region: {REGION}, endpointUrl: \"{moto}\", registryEndpoint: \"http://{target}\"}}
  sources:
    endpoints:
      docker.io: {{url: \"http://{source}\"}}
  copy: {{executor: inline}}
  policy:
    denyLatest: {{enabled: true}}
webhook:
  url: https://127.0.0.1:{port}
tls:
  extraIPs: [127.0.0.1]
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_installs_upgrades_admits_and_uninstalls() {
    let Some(env) = TestEnv::builder()
        .control_plane()
        .registries()
        .moto()
        .start_or_skip("Helm chart end to end")
        .await
        .unwrap()
    else {
        return;
    };
    let client = env.client();
    let port = free_port().unwrap();
    let values_file = env.dir.join("values.yaml");
    std::fs::write(&values_file, values(&env, port)).unwrap();
    let values_arg = values_file.display().to_string();

    let lint = run(helm(&env, &["lint", CHART, "-f", &values_arg]), "helm lint");
    assert!(lint.contains("0 chart(s) failed"), "{lint}");
    let rendered = run(template(&env, &["-f", &values_arg]), "helm template");
    for kind in [
        "Deployment",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "PodDisruptionBudget",
        "ClusterRole",
    ] {
        assert!(
            rendered.contains(&format!("kind: {kind}\n")),
            "{kind} missing"
        );
    }
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    for example in [
        "values-eks.yaml",
        "values-generic.yaml",
        "values-policy-only.yaml",
    ] {
        let file = format!("{examples}/{example}");
        run(template(&env, &["-f", &file]), example);
    }
    // The other two TLS modes: cert-manager injects the CA; a given Secret brings its own.
    let cert_manager = run(
        template(&env, &["--set", "tls.mode=certManager"]),
        "helm template (certManager)",
    );
    assert!(cert_manager.contains("kind: Certificate\n"));
    assert!(cert_manager.contains("cert-manager.io/inject-ca-from: privateer/privateer-webhook"));
    let given = run(
        template(
            &env,
            &[
                "--set",
                "tls.mode=secret",
                "--set",
                "tls.secretName=mine",
                "--set",
                "tls.caBundle=Q0E=",
            ],
        ),
        "helm template (secret)",
    );
    assert!(given.contains("caBundle: Q0E=") && given.contains("secretName: mine"));
    assert!(
        !given.contains("kind: Secret\n"),
        "the chart makes no Secret of its own"
    );
    let missing = template(&env, &["--set", "tls.mode=secret"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&missing.stderr).contains("tls.secretName"));
    // A typo in the values fails before anything reaches the cluster.
    let typo = template(&env, &["--set", "config.webhook.rewritePolicy=Sometimes"])
        .output()
        .unwrap();
    assert!(!typo.status.success());
    assert!(String::from_utf8_lossy(&typo.stderr).contains("rewritePolicy"));

    run(
        helm(
            &env,
            &[
                "install",
                "privateer",
                CHART,
                "-n",
                "privateer",
                "--create-namespace",
                "-f",
                &values_arg,
            ],
        ),
        "helm install",
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "privateer");
    let secret = secrets.get("privateer-webhook-tls").await.unwrap();
    let ca = secret.data.as_ref().unwrap()["ca.crt"].0.clone();
    let mutating = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get("privateer")
        .await
        .unwrap();
    let hook = &mutating.webhooks.as_ref().unwrap()[0];
    assert_eq!(
        hook.client_config.url.as_deref(),
        Some(format!("https://127.0.0.1:{port}/mutate").as_str())
    );
    assert_eq!(hook.client_config.ca_bundle.as_ref().unwrap().0, ca);
    assert_eq!(hook.failure_policy.as_deref(), Some("Ignore"));
    assert!(
        Api::<ValidatingWebhookConfiguration>::all(client.clone())
            .get_opt("privateer")
            .await
            .unwrap()
            .is_some(),
        "a policy is enabled, so the validating webhook is on"
    );
    let deployment = Api::<Deployment>::namespaced(client.clone(), "privateer")
        .get("privateer")
        .await
        .unwrap();
    assert_eq!(deployment.spec.unwrap().replicas, Some(2));

    // The examples are accepted by the API server as they are.
    let mut apply = env.kubectl();
    apply.args(["apply", "--dry-run=server", "-f"]);
    apply.arg(format!("{examples}/prewarm.yaml"));
    run(
        apply,
        "kubectl apply --dry-run=server examples/prewarm.yaml",
    );

    // Upgrade: the certificate stays (no caBundle change while Pods roll).
    run(
        helm(
            &env,
            &[
                "upgrade",
                "privateer",
                CHART,
                "-n",
                "privateer",
                "-f",
                &values_arg,
                "--set",
                "replicaCount=3",
            ],
        ),
        "helm upgrade",
    );
    let after = secrets.get("privateer-webhook-tls").await.unwrap();
    assert_eq!(after.data, secret.data, "helm upgrade kept the certificate");

    // privateer here, with the release's configuration and certificate, on local addresses.
    let config_map = Api::<ConfigMap>::namespaced(client.clone(), "privateer")
        .get("privateer")
        .await
        .unwrap();
    let mut config: serde_yaml::Value =
        serde_yaml::from_str(&config_map.data.unwrap()["config.yaml"]).unwrap();
    let data = secret.data.unwrap();
    let (cert, key) = (env.dir.join("tls.crt"), env.dir.join("tls.key"));
    std::fs::write(&cert, &data["tls.crt"].0).unwrap();
    std::fs::write(&key, &data["tls.key"].0).unwrap();
    let metrics = format!("127.0.0.1:{}", free_port().unwrap());
    config["webhook"]["listen"] = format!("127.0.0.1:{port}").into();
    config["webhook"]["tlsCertFile"] = cert.display().to_string().into();
    config["webhook"]["tlsKeyFile"] = key.display().to_string().into();
    config["metrics"]["listen"] = metrics.clone().into();
    let config_file = env.dir.join("release-config.yaml");
    std::fs::write(&config_file, serde_yaml::to_string(&config).unwrap()).unwrap();
    let command = operator_command(&env, "run", &config_file);
    let privateer = Managed::spawn("privateer", command, &env.dir).unwrap();
    let mut ready = false;
    for _ in 0..150 {
        if http_get(&metrics, "/readyz").0 == "200" {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        ready,
        "privateer run never became ready:\n{}",
        privateer.log_tail(30)
    );

    let source = env.source.as_ref().unwrap();
    let image = Image::new(Format::Oci, "linux/amd64", vec![layer(31, 2048)]);
    Pusher::new(oci_client(), source.auth())
        .push_image(&source.host, "library/nginx", "1.27", &image)
        .await
        .unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for (name, labels) in [
        ("team-a", json!({"team": "a"})),
        ("skipped", json!({names::SKIP: "true"})),
    ] {
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
    }
    let pod = |image: &str| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "web"},
            "spec": {"containers": [{"name": "app", "image": image}]}}))
        .unwrap()
    };
    let team: Api<Pod> = Api::namespaced(client.clone(), "team-a");
    let stored = team
        .create(&PostParams::default(), &pod("nginx:1.27"))
        .await
        .unwrap();
    let target = format!("{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/mirror/docker.io/library/nginx");
    let spec = stored.spec.unwrap();
    assert_eq!(
        spec.containers[0].image.as_deref(),
        Some(format!("{target}:1.27").as_str())
    );
    assert!(
        spec.scheduling_gates.is_some_and(|g| g.len() == 1),
        "gated until mirrored"
    );
    let denied = team
        .create(&PostParams::default(), &pod("busybox:latest"))
        .await
        .unwrap_err();
    assert!(denied.to_string().contains("denyLatest"), "{denied}");
    let skipped: Api<Pod> = Api::namespaced(client.clone(), "skipped");
    let untouched = skipped
        .create(&PostParams::default(), &pod("nginx:1.27"))
        .await
        .unwrap();
    assert_eq!(
        untouched.spec.unwrap().containers[0].image.as_deref(),
        Some("nginx:1.27")
    );

    let mirrors: Api<ImageMirror> = Api::all(client.clone());
    let name = object_name(&Reference::parse("nginx:1.27").unwrap());
    wait_for_phase(&mirrors, &name, Phase::Ready, &privateer).await;
    wait_for_pod(&team, "web", "release of the gate", ungated).await;

    // Uninstall leaves the CRD, the ImageMirrors and the mirrored image.
    run(
        helm(&env, &["uninstall", "privateer", "-n", "privateer"]),
        "helm uninstall",
    );
    let mirror = mirrors.get(&name).await.unwrap();
    assert_eq!(mirror.phase(), Phase::Ready);
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    assert!(
        crds.get_opt(names::CRD_NAME).await.unwrap().is_some(),
        "the CRD stays"
    );
    let webhooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    assert!(
        webhooks.get_opt("privateer").await.unwrap().is_none(),
        "the webhooks go with the release"
    );
    let target_registry = env.target.as_ref().unwrap();
    Pusher::new(oci_client(), target_registry.auth())
        .pull_manifest(
            &target_registry.host,
            "mirror/docker.io/library/nginx",
            "1.27",
        )
        .await
        .unwrap();
}
