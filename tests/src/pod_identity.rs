//! IRSA as EKS provides it: the mutation of EKS's Pod Identity webhook
//! (`amazon-eks-pod-identity-webhook`; its Go module is not served here, so the harness applies
//! the same documented mutation). A Pod whose ServiceAccount carries
//! `eks.amazonaws.com/role-arn` gets a projected ServiceAccount token (audience
//! `sts.amazonaws.com`, issued by the real API server) mounted at EKS's path, and the variables
//! that make the AWS SDK exchange it at STS `AssumeRoleWithWebIdentity`. The one addition:
//! `AWS_ENDPOINT_URL_STS` points at moto's STS, as a private cluster's STS VPC endpoint would.
//! Registered with `failurePolicy: Ignore`, as EKS registers its own.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::ServiceAccount;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::pki::Ca;

pub const ROLE_ANNOTATION: &str = "eks.amazonaws.com/role-arn";
pub const AUDIENCE: &str = "sts.amazonaws.com";
pub const TOKEN_DIR: &str = "/var/run/secrets/eks.amazonaws.com/serviceaccount";
const VOLUME: &str = "aws-iam-token";
const CONFIGURATION: &str = "pod-identity-webhook";
/// EKS's default token lifetime (`eks.amazonaws.com/token-expiration`).
const EXPIRATION_SECONDS: i64 = 86400;

/// The webhook server's task; dropping it stops serving (the API server then ignores it).
pub struct PodIdentityWebhook {
    task: JoinHandle<()>,
}

struct Settings {
    client: kube::Client,
    region: String,
    sts_endpoint: String,
}

impl PodIdentityWebhook {
    /// Serves on a free loopback port with a certificate from `ca` and registers itself for
    /// Pod creation.
    pub async fn start(
        dir: &Path,
        ca: &Ca,
        client: kube::Client,
        region: &str,
        sts_endpoint: &str,
    ) -> anyhow::Result<Self> {
        let cert = ca.serving_cert(dir, "pod-identity-webhook", &[])?;
        let chain = CertificateDer::pem_file_iter(&cert.cert)?.collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(&cert.key)?;
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("https://{}/mutate", listener.local_addr()?);
        let settings = Arc::new(Settings {
            client: client.clone(),
            region: region.to_owned(),
            sts_endpoint: sts_endpoint.to_owned(),
        });
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, settings) = (acceptor.clone(), settings.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = service_fn(move |request| answer(request, settings.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let webhook = Self { task };
        register(client, &url, &ca.cert_pem).await?;
        Ok(webhook)
    }
}

impl Drop for PodIdentityWebhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn register(client: kube::Client, url: &str, ca_pem: &str) -> anyhow::Result<()> {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    let configuration: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": CONFIGURATION},
        "webhooks": [{
            "name": "iam-for-pods.amazonaws.com",
            "clientConfig": {
                "url": url,
                "caBundle": base64::engine::general_purpose::STANDARD.encode(ca_pem),
            },
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                "resources": ["pods"]}],
            "objectSelector": {"matchExpressions": [{
                "key": "eks.amazonaws.com/skip-pod-identity-webhook", "operator": "DoesNotExist"}]},
            "failurePolicy": "Ignore",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "reinvocationPolicy": "IfNeeded",
        }],
    }))?;
    kube::Api::<MutatingWebhookConfiguration>::all(client)
        .create(&Default::default(), &configuration)
        .await
        .context("register the pod identity webhook")?;
    Ok(())
}

async fn answer(
    request: Request<Incoming>,
    settings: Arc<Settings>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let reply = match review(request, &settings).await {
        Ok(review) => Response::new(Full::new(Bytes::from(review.to_string()))),
        Err(error) => {
            tracing::warn!("pod identity webhook: {error:#}");
            let mut response = Response::new(Full::new(Bytes::from(format!("{error:#}"))));
            *response.status_mut() = hyper::StatusCode::BAD_REQUEST;
            response
        }
    };
    Ok(reply)
}

async fn review(request: Request<Incoming>, settings: &Settings) -> anyhow::Result<Value> {
    let body = Limited::new(request.into_body(), 4 << 20)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("read the review: {e}"))?
        .to_bytes();
    let review: Value = serde_json::from_slice(&body)?;
    let request = &review["request"];
    let uid = request["uid"].as_str().context("review without uid")?;
    let namespace = request["namespace"].as_str().unwrap_or("default");
    let pod = &request["object"];
    let account = pod["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or("default");
    let role = kube::Api::<ServiceAccount>::namespaced(settings.client.clone(), namespace)
        .get_opt(account)
        .await?
        .and_then(|sa| sa.metadata.annotations?.remove(ROLE_ANNOTATION));
    let mut response = json!({"uid": uid, "allowed": true});
    if let Some(role) = role {
        let patch = Value::Array(patch(pod, &role, settings));
        response["patchType"] = json!("JSONPatch");
        response["patch"] =
            json!(base64::engine::general_purpose::STANDARD.encode(patch.to_string()));
    }
    Ok(
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "response": response}),
    )
}

/// The JSON patch: the token volume, and in every (init) container its mount and the
/// variables it does not set itself.
fn patch(pod: &Value, role: &str, settings: &Settings) -> Vec<Value> {
    let spec = &pod["spec"];
    let volumes = spec["volumes"].as_array();
    if volumes.is_some_and(|v| v.iter().any(|v| v["name"] == VOLUME)) {
        return Vec::new();
    }
    let token_file = format!("{TOKEN_DIR}/token");
    let variables = [
        ("AWS_ROLE_ARN", role),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", &token_file),
        ("AWS_STS_REGIONAL_ENDPOINTS", "regional"),
        ("AWS_DEFAULT_REGION", &settings.region),
        ("AWS_REGION", &settings.region),
        ("AWS_ENDPOINT_URL_STS", &settings.sts_endpoint),
    ];
    let mut ops = Vec::new();
    let volume = json!({"name": VOLUME, "projected": {"sources": [{"serviceAccountToken": {
        "audience": AUDIENCE, "expirationSeconds": EXPIRATION_SECONDS, "path": "token"}}]}});
    push(&mut ops, "/spec/volumes", volumes.is_some(), volume);
    for kind in ["containers", "initContainers"] {
        for (i, container) in spec[kind].as_array().into_iter().flatten().enumerate() {
            let base = format!("/spec/{kind}/{i}");
            let env = container["env"].as_array();
            let mut has_env = env.is_some();
            for (name, value) in variables {
                if env.is_some_and(|e| e.iter().any(|v| v["name"] == name)) {
                    continue;
                }
                let var = json!({"name": name, "value": value});
                push(&mut ops, &format!("{base}/env"), has_env, var);
                has_env = true;
            }
            let mount = json!({"name": VOLUME, "mountPath": TOKEN_DIR, "readOnly": true});
            let has_mounts = container["volumeMounts"].is_array();
            push(&mut ops, &format!("{base}/volumeMounts"), has_mounts, mount);
        }
    }
    ops
}

/// Appends `item` to the array at `path`, creating the array when it does not exist yet.
fn push(ops: &mut Vec<Value>, path: &str, exists: bool, item: Value) {
    if exists {
        ops.push(json!({"op": "add", "path": format!("{path}/-"), "value": item}));
    } else {
        ops.push(json!({"op": "add", "path": path, "value": [item]}));
    }
}
