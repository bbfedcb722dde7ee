//! `/metrics` (Prometheus text), `/healthz` and `/readyz` on the plain metrics port. Labels are
//! low-cardinality: results, outcomes and phases, never image names.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kube::runtime::reflector::Store;
use privateer_api::{ImageMirror, Phase};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: String,
}

pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ResultLabel, Counter>,
    pub copies: Family<ResultLabel, Counter>,
    pub copy_bytes: Histogram,
    pub copy_seconds: Histogram,
    mirrors: Family<PhaseLabel, Gauge>,
    /// The controller's ImageMirror cache, counted by phase at each scrape.
    mirror_cache: MirrorCache,
    pub ready: AtomicBool,
}

/// The ImageMirror reflector of the running controller (none while standing by); shared by
/// the gate releaser (no API call per gated Pod) and the phase gauges.
pub type MirrorCache = Arc<std::sync::Mutex<Option<Store<ImageMirror>>>>;

impl Metrics {
    pub fn new(mirror_cache: MirrorCache) -> Self {
        let mut registry = Registry::with_prefix("privateer");
        let reconciles = Family::<ResultLabel, Counter>::default();
        registry.register(
            "reconciles",
            "ImageMirror reconciles by result",
            reconciles.clone(),
        );
        let copies = Family::<ResultLabel, Counter>::default();
        registry.register("copies", "Finished copy Jobs by outcome", copies.clone());
        // 1 MiB .. 64 GiB.
        let copy_bytes = Histogram::new(exponential_buckets(1_048_576.0, 4.0, 9));
        registry.register(
            "copy_bytes",
            "Bytes of the images copied",
            copy_bytes.clone(),
        );
        // 0.5 s .. ~2 h.
        let copy_seconds = Histogram::new(exponential_buckets(0.5, 3.0, 9));
        registry.register(
            "copy_seconds",
            "Wall time of successful copies",
            copy_seconds.clone(),
        );
        let mirrors = Family::<PhaseLabel, Gauge>::default();
        registry.register("mirrors", "ImageMirrors by phase", mirrors.clone());
        Self {
            registry,
            reconciles,
            copies,
            copy_bytes,
            copy_seconds,
            mirrors,
            mirror_cache,
            ready: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    pub fn count(family: &Family<ResultLabel, Counter>, result: &str) {
        family
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    /// The exposition text, with the phase gauges refreshed from the cache.
    pub fn render(&self) -> String {
        let store = self
            .mirror_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(store) = store {
            for phase in [
                Phase::Pending,
                Phase::Mirroring,
                Phase::Ready,
                Phase::Failed,
            ] {
                let count = store.state().iter().filter(|m| m.phase() == phase).count();
                self.mirrors
                    .get_or_create(&PhaseLabel {
                        phase: phase.as_str().to_owned(),
                    })
                    .set(i64::try_from(count).unwrap_or(i64::MAX));
            }
        }
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

/// Serve until `stop` is cancelled.
pub async fn serve(
    listen: &str,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                () = stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(_) => continue,
                },
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let metrics = metrics.clone();
                    async move { Ok::<_, std::convert::Infallible>(answer(&request, &metrics)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(address)
}

fn answer(request: &Request<hyper::body::Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, body) = match request.uri().path() {
        "/metrics" => (StatusCode::OK, metrics.render()),
        "/healthz" => (StatusCode::OK, "ok\n".to_owned()),
        "/readyz" if metrics.ready.load(Ordering::SeqCst) => (StatusCode::OK, "ok\n".to_owned()),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: connecting to the API server\n".to_owned(),
        ),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}
