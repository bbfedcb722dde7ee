//! privateer's admission webhooks over HTTPS:
//!
//! - `/mutate`: records each public image of a Pod as an `ImageMirror` and rewrites the Pod
//!   per `rewritePolicy` (scheduling gate, original-images annotation, pull secrets, pull
//!   policy); gives PersistentVolumeClaims the default storage class.
//! - `/validate`: image policy over every image of a Pod.
//! - `/image-policy`: the same policy as an `ImageReview` answer.
//!
//! Decisions are pure (`mutate.rs`, `policy.rs`); `review.rs` does the I/O they ask for;
//! `server.rs` is the transport, `tls.rs` the reloading certificate.

mod metrics;
mod mirrors;
pub mod mutate;
pub mod policy;
mod review;
mod server;
mod tls;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use privateer_api::Config;
use privateer_api::config::TargetKind;
use privateer_ecr::{EcrOptions, EcrProvider};
use privateer_image::{Reference, TargetNaming};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error("TLS certificate: {0}")]
    Tls(String),
    #[error("webhook.listen {listen}: {source}")]
    Listen {
        listen: String,
        source: std::io::Error,
    },
    #[error("ECR (policy.ecrCompliance): {0}")]
    Ecr(#[from] privateer_ecr::TargetError),
}

/// What every request shares.
pub struct Webhook {
    config: Config,
    naming: Option<TargetNaming>,
    /// Normalized names of privateer's own images, never rewritten.
    own_images: Vec<String>,
    cluster: Arc<mirrors::Cluster>,
    /// Asked by the ECR compliance rule; `None` when that rule is off or the target is not ECR.
    provider: Option<EcrProvider>,
    metrics: Arc<metrics::Metrics>,
}

impl Webhook {
    /// Start the namespace cache (it runs until `stop`), read mirrors from `mirrors`, and
    /// connect to ECR when a rule needs it.
    /// `own_images` are privateer's images (any tag), which it never rewrites.
    pub async fn new(
        client: kube::Client,
        config: Config,
        own_images: &[String],
        mirrors: Arc<privateer_index::MirrorIndex>,
        stop: CancellationToken,
    ) -> Result<Self, Error> {
        let naming = if config.target.registry.is_empty() {
            None
        } else {
            Some(
                TargetNaming::new(&config.target.registry, &config.target.prefix)
                    .map_err(|e| Error::Config(format!("target: {e}")))?,
            )
        };
        let provider =
            if config.policy.ecr_compliance.enabled && config.target.kind == TargetKind::Ecr {
                let options = EcrOptions {
                    cache_ttl: config.policy.ecr_compliance.cache_ttl.into(),
                    ..EcrOptions::default()
                };
                Some(Box::pin(EcrProvider::connect(&config.target, options)).await?)
            } else {
                None
            };
        let request_timeout: Duration = config.webhook.request_timeout.into();
        let cluster = Arc::new(mirrors::Cluster::start(
            client,
            mirrors,
            request_timeout / 3,
            stop,
        ));
        let metrics = Arc::new(metrics::Metrics::new());
        let _ = metrics.cluster.set(cluster.clone());
        Ok(Self {
            own_images: own_images
                .iter()
                .filter_map(|image| Reference::parse(image).ok())
                .map(|r| r.name())
                .collect(),
            config,
            naming,
            cluster,
            provider,
            metrics,
        })
    }

    /// Readiness (caches synced) and metrics for the plain port (`privateer-health`).
    pub fn probe(&self) -> Arc<dyn privateer_health::Probe> {
        self.metrics.clone()
    }
}

/// A running webhook server.
pub struct Serving {
    pub address: SocketAddr,
    pub done: tokio::task::JoinHandle<()>,
}

/// Bind `webhook.listen` and serve until `stop` is cancelled; `done` ends after the drain.
pub async fn serve(webhook: Arc<Webhook>, stop: CancellationToken) -> Result<Serving, Error> {
    let config = &webhook.config.webhook;
    let tls = tls::server_config(
        Path::new(&config.tls_cert_file),
        Path::new(&config.tls_key_file),
        webhook.metrics.clone(),
        stop.clone(),
    )?;
    let (listener, address) =
        server::bind(&config.listen)
            .await
            .map_err(|source| Error::Listen {
                listen: config.listen.clone(),
                source,
            })?;
    let limits = server::Limits::from_config(&webhook.config);
    let done = tokio::spawn(server::serve(listener, tls, webhook, limits, stop));
    Ok(Serving { address, done })
}
