//! The ImagePolicyWebhook way (kube-image-bouncer's): kube-apiserver started with the
//! ImagePolicyWebhook admission plugin, its admission configuration's kubeconfig pointing at
//! `privateer webhook`'s `/image-policy`. `:latest` is denied with privateer's message, an
//! allowed image runs on the node, and with `defaultAllow: false` and privateer stopped Pods
//! are refused — the plugin's own behaviour, documented in the README.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use privateer_e2e::TestEnv;
use privateer_e2e::pki::Ca;
use privateer_e2e::process::free_port;
use serde_json::json;

mod common;
use common::*;

fn pod(name: &str, image: &str) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"containers": [{"name": "main", "image": image, "command": ["sleep", "3600"]}]}}))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_asks_privateer_through_the_image_policy_webhook_plugin() {
    // The admission configuration is read when the API server starts: write it first.
    let dir = std::env::temp_dir().join(format!("privateer-image-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = Ca::new("privateer-image-policy-ca").unwrap();
    let cert = ca.serving_cert(&dir, "webhook", &[]).unwrap();
    let ca_file = dir.join("ca.crt");
    ca.write_cert(&ca_file).unwrap();
    let port = free_port().unwrap();
    let kubeconfig = dir.join("image-policy.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: privateer\n  cluster:\n    server: https://127.0.0.1:{port}/image-policy\n    certificate-authority: {}\nusers:\n- name: apiserver\n  user: {{}}\ncontexts:\n- name: privateer\n  context: {{cluster: privateer, user: apiserver}}\ncurrent-context: privateer\n",
            ca_file.display()
        ),
    )
    .unwrap();
    let admission = dir.join("admission.yaml");
    std::fs::write(
        &admission,
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n- name: ImagePolicyWebhook\n  configuration:\n    imagePolicy:\n      kubeConfigFile: {}\n      allowTTL: 1\n      denyTTL: 1\n      retryBackoff: 100\n      defaultAllow: false\n",
            kubeconfig.display()
        ),
    )
    .unwrap();
    let Some(env) = TestEnv::full()
        .image_policy_config(admission)
        .start_or_skip("ImagePolicyWebhook")
        .await
        .unwrap()
    else {
        return;
    };
    prepare_cluster(&env).await;
    for tag in ["1.36", "1.37", "latest"] {
        env.push_runnable("library/busybox", tag, &["sh"])
            .await
            .unwrap();
    }
    let tls = format!(
        "webhook: {{listen: \"127.0.0.1:{port}\", tlsCertFile: \"{}\", tlsKeyFile: \"{}\"}}\npolicy: {{denyLatest: {{enabled: true}}}}",
        cert.cert.display(),
        cert.key.display()
    );
    let (mut privateer, metrics) = start_operator(&env, "image-policy", "webhook", &tls);
    wait_ready(&metrics, &privateer).await;

    let pods: Api<Pod> = Api::namespaced(env.client(), "default");
    let denied = pods
        .create(&PostParams::default(), &pod("latest", "busybox:latest"))
        .await
        .unwrap_err()
        .to_string();
    assert!(denied.contains("denyLatest"), "{denied}");

    pods.create(&PostParams::default(), &pod("allowed", "busybox:1.36"))
        .await
        .unwrap();
    let running = wait_for_pod(&pods, "allowed", "Running", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await;
    assert_eq!(
        running.spec.unwrap().node_name.as_deref(),
        Some(privateer_e2e::node::NODE_NAME)
    );

    // defaultAllow: false — the plugin refuses what it cannot ask about.
    privateer.stop();
    let refused = pods
        .create(&PostParams::default(), &pod("unasked", "busybox:1.37"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("is forbidden") && refused.contains("/image-policy"),
        "{refused}"
    );
    drop(env);
    let _ = std::fs::remove_dir_all(&dir);
}
