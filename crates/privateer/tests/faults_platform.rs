//! Fault drills of the platform around privateer, on the real node with privateer installed by
//! Helm: the API server restarts during a burst of 50 Pods; the target registry's disk fills
//! (the copy fails with a message naming it, and succeeds once space returns); the webhook's
//! certificate Secret is rotated while Pods are admitted (none admitted without privateer).
//! Each ends with nothing lost: every ImageMirror Ready, every Pod released and Running from
//! its mirror, exactly one copy Job per mirror and digest.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, ListParams, PostParams};
use privateer_api::{ImageMirror, ImageMirrorSpec};
use privateer_e2e::TestEnv;
use privateer_e2e::node::network::run;
use serde_json::json;

mod common;
use common::installed::*;
use common::mirror_name;

const APPS: &str = "apps";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_restart_during_a_burst_of_50_pods_loses_none() {
    let Some(mut env) = TestEnv::full()
        .start_or_skip("API server restarted during a burst")
        .await
        .unwrap()
    else {
        return;
    };
    let images: Vec<String> = (0..5).map(|i| format!("burst-{i}:1.0")).collect();
    for i in 0..5 {
        env.push_runnable(&format!("library/burst-{i}"), "1.0", &["sleep", "3600"])
            .await
            .unwrap();
    }
    let source = env.source.as_ref().unwrap().host.clone();
    install(&env, &source, "", APPS).await;
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(env.client(), APPS);
    // The API server is killed after the third Deployment: their ReplicaSets are creating
    // Pods and the webhook is admitting them; the last two are created once it is back.
    let mut before = 0;
    for (i, image) in images.iter().enumerate() {
        if i == 3 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            before = Api::<Pod>::namespaced(env.client(), APPS)
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .len();
            env.restart_api_server().await.unwrap();
        }
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": format!("burst-{i}"), "namespace": APPS},
            "spec": {"replicas": 10, "selector": {"matchLabels": {"app": format!("burst-{i}")}},
                "template": {"metadata": {"labels": {"app": format!("burst-{i}")}},
                    "spec": {"terminationGracePeriodSeconds": 0,
                        "containers": [{"name": "app", "image": image}]}}}});
        deployments
            .create(
                &PostParams::default(),
                &serde_json::from_value(deployment).unwrap(),
            )
            .await
            .unwrap();
    }
    eprintln!("{before} of 50 Pods existed when the API server was killed");

    for image in &images {
        mirror_ready(&env, image, 180).await;
        assert_eq!(copy_jobs(&env, image).await.len(), 1, "{image}");
    }
    let pods: Api<Pod> = Api::namespaced(env.client(), APPS);
    let running = eventually(240, "50 Pods Running from their mirrors", async || {
        let all = pods
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items;
        let running: Vec<Pod> = all.into_iter().filter(|p| phase(p) == "Running").collect();
        if running.len() == 50 {
            Ok(running)
        } else {
            Err(format!("{} Running", running.len()))
        }
    })
    .await;
    for pod in &running {
        let image = pod.spec.as_ref().unwrap().containers[0]
            .image
            .clone()
            .unwrap();
        assert!(
            image.starts_with(&ecr_prefix()) && image.contains("@sha256:"),
            "{image}"
        );
    }
    let mirrors = Api::<ImageMirror>::all(env.client())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(mirrors.len(), 5, "one mirror per image");
}

/// A tmpfs over a directory, unmounted on drop (also when the test fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: PathBuf, size: &str) -> Self {
        let options = format!("size={size}");
        let path = dir.display().to_string();
        run("mount", &["-t", "tmpfs", "-o", &options, "tmpfs", &path]).unwrap();
        Self(dir)
    }

    fn resize(&self, size: &str) {
        let options = format!("remount,size={size}");
        run("mount", &["-o", &options, &self.0.display().to_string()]).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("--lazy")
            .arg(&self.0)
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_target_disk_fails_the_copy_clearly_and_it_recovers_when_space_returns() {
    let Some(env) = TestEnv::full()
        .start_or_skip("target registry disk full")
        .await
        .unwrap()
    else {
        return;
    };
    // The target registry stores on a 4 MiB filesystem; the image is 8 MiB.
    let disk = Tmpfs::mount(env.dir.join("target/data"), "4m");
    let source = env.source.as_ref().unwrap();
    privateer_e2e::images::Pusher::new(privateer_e2e::registry::oci_client(), source.auth())
        .push_runnable_with_payload(&source.host, "library/big", "1.0", &["sleep", "1"], 8 << 20)
        .await
        .unwrap();
    let source = source.host.clone();
    let extra = "config:
  copy: {job: {backoffLimit: 0}}
  controller: {retry: {initialBackoff: 2s, maxBackoff: 5s, maxAttempts: 20}}
";
    install(&env, &source, extra, APPS).await;
    let image = "big:1.0";
    let mirror = ImageMirror::new(&mirror_name(image), ImageMirrorSpec::for_source(image));
    let mirrors: Api<ImageMirror> = Api::all(env.client());
    mirrors
        .create(&PostParams::default(), &mirror)
        .await
        .unwrap();
    let error = eventually(120, "the copy fails on the full disk", async || {
        let mirror = mirrors
            .get(&mirror_name(image))
            .await
            .map_err(|e| e.to_string())?;
        let status = mirror.status.unwrap_or_default();
        match status.last_error {
            Some(error) if status.attempts >= 1 => Ok(error),
            _ => Err(format!("{:?} attempts {}", status.phase, status.attempts)),
        }
    })
    .await;
    eprintln!("the mirror's error on a full disk: {error}");
    assert!(
        error.contains("No space left on device"),
        "the error does not say the target is out of space: {error}"
    );
    disk.resize("64m");
    let ready = mirror_ready(&env, image, 120).await;
    assert_eq!(copy_jobs(&env, image).await.len(), 1);
    assert!(ready.status.unwrap().target_image.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_webhook_certificate_fails_no_admission() {
    let Some(env) = TestEnv::full()
        .start_or_skip("webhook certificate rotated")
        .await
        .unwrap()
    else {
        return;
    };
    env.push_runnable("library/nginx", "1.27", &["sleep", "3600"])
        .await
        .unwrap();
    // The platform's own CA and a Secret it renews (as cert-manager does: same CA, new key).
    let service = "privateer-webhook";
    let names = [
        format!("{service}.{NAMESPACE}.svc"),
        format!("{service}.{NAMESPACE}.svc.cluster.local"),
    ];
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let issue = |generation: &str| {
        let dir = env.dir.join(format!("webhook-{generation}"));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = env.ca.serving_cert(&dir, "tls", &names).unwrap();
        let pem = std::fs::read_to_string(&cert.cert).unwrap();
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "privateer-webhook-tls", "namespace": NAMESPACE},
            "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": pem, "tls.key": std::fs::read_to_string(&cert.key).unwrap()},
        }))
        .unwrap();
        (secret, pem)
    };
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).unwrap();
    Api::<Namespace>::all(env.client())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(env.client(), NAMESPACE);
    let (first, _) = issue("1");
    secrets
        .create(&PostParams::default(), &first)
        .await
        .unwrap();
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(&env.ca.cert_pem);
    let extra = format!(
        "tls: {{mode: secret, secretName: privateer-webhook-tls, caBundle: \"{ca_bundle}\"}}\n"
    );
    let source = env.source.as_ref().unwrap().host.clone();
    install(&env, &source, &extra, APPS).await;
    let failed_open_before = failed_open(&env).await;

    // Admissions all through the rotation, each must come back rewritten.
    let stop = Arc::new(AtomicBool::new(false));
    let (admitted, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let admitting = tokio::spawn({
        let (stop, admitted, failed) = (stop.clone(), admitted.clone(), failed.clone());
        let pods: Api<Pod> = Api::namespaced(env.client(), APPS);
        async move {
            while !stop.load(Ordering::Relaxed) {
                match dry_run_image(&pods).await {
                    Ok(image) if image.starts_with(&ecr_prefix()) => {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        eprintln!("admission without privateer: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (second, second_pem) = issue("2");
    secrets
        .replace("privateer-webhook-tls", &PostParams::default(), &second)
        .await
        .unwrap();
    // Every replica serves the new certificate (the kubelet updates the mounted Secret,
    // privateer reloads it without a restart).
    let second_der = privateer_e2e::https::certificate_der(&second_pem).unwrap();
    let tls = privateer_e2e::https::client_config(&[&env.ca.cert_pem]).unwrap();
    eventually(
        150,
        "every replica serves the new certificate",
        async || {
            let replicas = operator_pods(&env).await;
            for pod in &replicas {
                let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap();
                let address = format!("{ip}:8443").parse().unwrap();
                let connection = privateer_e2e::https::Connection::open(address, tls.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                if connection.server_cert != second_der {
                    return Err(format!("{} still serves the old one", ip));
                }
            }
            Ok(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    admitting.await.unwrap();
    let (admitted, failed) = (
        admitted.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    eprintln!("{admitted} admissions during the rotation, {failed} without privateer");
    assert!(admitted > 20, "{admitted}");
    assert_eq!(failed, 0);
    // The API server's own count of calls that failed open (failurePolicy Ignore) while the
    // certificate rotated; install's readiness probe may have failed open before it.
    assert_eq!(failed_open(&env).await, failed_open_before);
}

/// The API server's count of privateer webhook calls that failed open.
async fn failed_open(env: &TestEnv) -> f64 {
    let metrics = env
        .client()
        .request_text(http::Request::get("/metrics").body(Vec::new()).unwrap())
        .await
        .unwrap();
    metrics
        .lines()
        .filter(|l| l.starts_with("apiserver_admission_webhook_fail_open_count"))
        .filter(|l| l.contains("privateer.dev"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}
