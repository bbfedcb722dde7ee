//! The webhook server over real TLS on loopback: garbage gets clear answers, a rotated
//! certificate is served without a failed handshake, slow clients are cut off, and with the
//! API server unreachable a Pod is admitted unchanged.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use privateer_api::Config;
use privateer_e2e::https::{Connection, client_config};
use privateer_e2e::pki::Ca;
use privateer_e2e::process::free_port;
use privateer_webhook::{Serving, Webhook, serve};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

fn fixture(name: &str) -> Bytes {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    Bytes::from(std::fs::read(path).unwrap())
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("privateer-webhook-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Write a certificate the way the kubelet updates a Secret volume: a new timestamped
/// directory, then the `..data` symlink swapped to it in one rename.
fn publish(dir: &Path, ca: &Ca, generation: u32) {
    let version = dir.join(format!("..v{generation}"));
    std::fs::create_dir_all(&version).unwrap();
    let cert = ca.serving_cert(&version, "tls", &[]).unwrap();
    assert!(cert.cert.ends_with("tls.crt"));
    let staging = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&staging);
    std::os::unix::fs::symlink(format!("..v{generation}"), &staging).unwrap();
    std::fs::rename(&staging, dir.join("..data")).unwrap();
    for file in ["tls.crt", "tls.key"] {
        let link = dir.join(file);
        if !link.exists() {
            std::os::unix::fs::symlink(format!("..data/{file}"), &link).unwrap();
        }
    }
}

struct Server {
    serving: Serving,
    stop: CancellationToken,
    metrics_addr: std::net::SocketAddr,
}

/// A webhook whose API server does not answer (nothing listens on its port).
async fn start(config: Config) -> Server {
    let unreachable = format!("https://127.0.0.1:{}", free_port().unwrap());
    let client = kube::Client::try_from(kube::Config::new(unreachable.parse().unwrap())).unwrap();
    let stop = CancellationToken::new();
    let index = privateer_index::MirrorIndex::start(client.clone(), stop.clone());
    let webhook = Webhook::new(client, config, &[], index, stop.clone())
        .await
        .unwrap();
    let metrics_addr = privateer_health::serve("127.0.0.1:0", vec![webhook.probe()], stop.clone())
        .await
        .unwrap();
    let serving = serve(Arc::new(webhook), stop.clone()).await.unwrap();
    Server {
        serving,
        stop,
        metrics_addr,
    }
}

fn config(tls: &Path) -> Config {
    let mut config = Config::default();
    config.target.registry = "123456789012.dkr.ecr.eu-west-1.amazonaws.com".into();
    config.webhook.listen = "127.0.0.1:0".into();
    config.webhook.tls_cert_file = tls.join("tls.crt").display().to_string();
    config.webhook.tls_key_file = tls.join("tls.key").display().to_string();
    config.webhook.max_body_bytes = 64 * 1024;
    config.webhook.request_timeout = Duration::from_secs(2).into();
    config.webhook.wait_timeout = Duration::from_secs(1).into();
    config
}

async fn plain_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_gets_clear_answers_and_policy_names_the_rule() {
    let dir = scratch("garbage");
    let ca = Ca::new("webhook-ca").unwrap();
    publish(&dir, &ca, 1);
    let mut config = config(&dir);
    config.policy.allowed_registries.enabled = true;
    config.policy.allowed_registries.registries = vec!["docker.io".into()];
    config.policy.deny_latest.enabled = true;
    let server = start(config).await;
    let tls = client_config(&[&ca.cert_pem]).unwrap();
    let mut conn = Connection::open(server.serving.address, tls).await.unwrap();

    let (status, body) = conn
        .post("/mutate", Bytes::from_static(b"{not json"))
        .await
        .unwrap();
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("not an AdmissionReview"));

    let empty = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#;
    let (status, body) = conn
        .post("/mutate", Bytes::from_static(empty))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["response"]["allowed"], false);

    let (status, body) = conn
        .post("/mutate", fixture("review-service.json"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        answer["response"]["uid"],
        "6d6f2c1e-0000-4000-8000-000000000003"
    );
    assert_eq!(answer["response"]["allowed"], false);
    assert!(
        answer["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("not Service")
    );

    let big = Bytes::from(vec![b' '; 100 * 1024]);
    let (status, body) = conn.post("/validate", big).await.unwrap();
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));

    // The same connection still serves after every refusal.
    let (status, body) = conn
        .post("/image-policy", fixture("imagereview.json"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["kind"], "ImageReview");
    assert_eq!(answer["status"]["allowed"], false);
    let reason = answer["status"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("docker.io.evil.com/nginx") && reason.contains("allowedRegistries"),
        "{reason}"
    );
    assert!(
        reason.contains("\"busybox\"") && reason.contains("denyLatest"),
        "{reason}"
    );
    assert!(!reason.contains("\"nginx:1.27\""), "{reason}");

    let (status, _) = conn.post("/nope", Bytes::new()).await.unwrap();
    assert_eq!(status, 404);

    let metrics = plain_get(server.metrics_addr, "/metrics").await;
    assert!(
        metrics.contains("privateer_webhook_denials_total{rule=\"allowedRegistries\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("endpoint=\"mutate\",outcome=\"badRequest\""),
        "{metrics}"
    );
    server.stop.cancel();
    server.serving.done.await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn api_server_down_admits_the_pod_unchanged() {
    let dir = scratch("down");
    let ca = Ca::new("webhook-ca").unwrap();
    publish(&dir, &ca, 1);
    let server = start(config(&dir)).await;
    let mut conn = Connection::open(
        server.serving.address,
        client_config(&[&ca.cert_pem]).unwrap(),
    )
    .await
    .unwrap();
    let (status, body) = conn
        .post("/mutate", fixture("review-pod.json"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    let response = &answer["response"];
    assert_eq!(response["allowed"], true);
    assert!(
        response["patch"].is_null(),
        "admitted unchanged: {response}"
    );
    assert!(
        response["warnings"][0]
            .as_str()
            .unwrap()
            .contains("unchanged"),
        "{response}"
    );
    let ready = plain_get(server.metrics_addr, "/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 503"), "never synced: {ready}");
    let metrics = plain_get(server.metrics_addr, "/metrics").await;
    assert!(
        metrics
            .contains("privateer_webhook_admitted_unchanged_total{reason=\"mirrorNotRecorded\"} 1"),
        "{metrics}"
    );
    server.stop.cancel();
    server.serving.done.await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_certificate_is_served_without_a_failed_handshake() {
    let dir = scratch("rotate");
    let (old_ca, new_ca) = (Ca::new("old-ca").unwrap(), Ca::new("new-ca").unwrap());
    publish(&dir, &old_ca, 1);
    let server = start(config(&dir)).await;
    let addr = server.serving.address;
    let tls = client_config(&[&old_ca.cert_pem, &new_ca.cert_pem]).unwrap();
    let first = Connection::open(addr, tls.clone())
        .await
        .unwrap()
        .server_cert;

    // Handshake continuously while the Secret is rotated.
    let running = Arc::new(AtomicBool::new(true));
    let (handshakes, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let hammer = {
        let (running, handshakes, failures, tls) = (
            running.clone(),
            handshakes.clone(),
            failures.clone(),
            tls.clone(),
        );
        tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                match Connection::open(addr, tls.clone()).await {
                    Ok(_) => handshakes.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failures.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish(&dir, &new_ca, 2);
    let mut rotated = None;
    for _ in 0..100 {
        let cert = Connection::open(addr, tls.clone())
            .await
            .unwrap()
            .server_cert;
        if cert != first {
            rotated = Some(cert);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rotated = rotated.expect("the new certificate is served within 10 s");
    // Only the new CA is trusted now: the handshake proves which certificate is served.
    let only_new = client_config(&[&new_ca.cert_pem]).unwrap();
    Connection::open(addr, only_new.clone()).await.unwrap();

    // A broken renewal keeps the previous certificate serving.
    std::fs::write(
        dir.join("..v2/tls.crt"),
        b"-----BEGIN CERTIFICATE-----\ngarbage\n",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let still = Connection::open(addr, only_new).await.unwrap().server_cert;
    assert_eq!(still, rotated);
    running.store(false, Ordering::Relaxed);
    hammer.await.unwrap();
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "no failed handshake during rotation"
    );
    assert!(handshakes.load(Ordering::Relaxed) > 10);
    let metrics = plain_get(server.metrics_addr, "/metrics").await;
    assert!(
        metrics.contains("privateer_webhook_tls_reloads_total{reason=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("privateer_webhook_tls_reloads_total{reason=\"error\"} 1"),
        "{metrics}"
    );
    server.stop.cancel();
    server.serving.done.await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_are_cut_off_and_stop_drains() {
    let dir = scratch("slow");
    let ca = Ca::new("webhook-ca").unwrap();
    publish(&dir, &ca, 1);
    let server = start(config(&dir)).await;
    let addr = server.serving.address;

    // Never finishes its TLS handshake.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Finishes the handshake, then sends half a header line.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut slow = tokio_rustls::TlsConnector::from(client_config(&[&ca.cert_pem]).unwrap())
        .connect(name, tcp)
        .await
        .unwrap();
    slow.write_all(b"POST /mutate HTTP/1.1\r\nhost: 127.0")
        .await
        .unwrap();
    slow.flush().await.unwrap();
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "silent client still connected"
    );
    let answer = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut buf)).await;
    assert!(
        matches!(answer, Ok(Ok(_)) | Ok(Err(_))),
        "slow client still connected"
    );

    // Stop: a connection idle in keep-alive is closed and serve() returns.
    let mut idle = Connection::open(addr, client_config(&[&ca.cert_pem]).unwrap())
        .await
        .unwrap();
    let (status, _) = idle
        .post("/validate", fixture("review-pod.json"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    server.stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), server.serving.done)
        .await
        .expect("drained")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
