//! HTTPS for the API server: TLS (rustls), HTTP/1.1 keep-alive (hyper), a capped body, a
//! header-read timeout and a whole-request deadline below the webhook's `timeoutSeconds`,
//! bounded connections and requests, and a graceful drain on shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::Webhook;
use crate::review::{Answered, BadRequest};

/// Open connections at once (the API server keeps a few per replica alive).
const MAX_CONNECTIONS: usize = 1024;
/// Requests being answered at once; more wait for a slot within their deadline.
const MAX_IN_FLIGHT: usize = 256;

pub struct Limits {
    pub max_body_bytes: usize,
    /// The whole request: body read, answer, and under `Wait` the wait.
    pub request_timeout: Duration,
    /// TLS handshake and request headers.
    pub header_timeout: Duration,
}

impl Limits {
    pub fn from_config(config: &privateer_api::Config) -> Self {
        let request_timeout: Duration = config.webhook.request_timeout.into();
        Self {
            max_body_bytes: usize::try_from(config.webhook.max_body_bytes).unwrap_or(usize::MAX),
            request_timeout,
            header_timeout: request_timeout.min(Duration::from_secs(5)),
        }
    }
}

/// Serve until `stop` is cancelled, then drain: no new connections, requests in flight
/// finish (up to the request timeout), idle keep-alive connections close.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    webhook: Arc<Webhook>,
    limits: Limits,
    stop: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let limits = Arc::new(limits);
    let graceful = GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => break,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::debug!("accept: {e}");
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let webhook = webhook.clone();
        let limits = limits.clone();
        let in_flight = in_flight.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let stream =
                match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, "TLS handshake: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let header_timeout = limits.header_timeout;
            let service = service_fn(move |request| {
                let webhook = webhook.clone();
                let limits = limits.clone();
                let in_flight = in_flight.clone();
                async move { Ok::<_, Infallible>(handle(request, &webhook, &limits, &in_flight).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(%peer, "connection: {e}");
            }
        });
    }
    drop(listener);
    let drain = limits.request_timeout + Duration::from_secs(1);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {drain:?}; closing them");
    }
}

async fn handle(
    request: Request<Incoming>,
    webhook: &Webhook,
    limits: &Limits,
    in_flight: &Semaphore,
) -> Response<Full<Bytes>> {
    let endpoint = match route(&request) {
        Ok(endpoint) => endpoint,
        Err((status, text)) => return plain(status, text),
    };
    let work = async {
        let bytes = read_body(request, limits).await?;
        let _slot = in_flight
            .acquire()
            .await
            .map_err(|_| (StatusCode::SERVICE_UNAVAILABLE, "shutting down".to_owned()))?;
        let started = Instant::now();
        let answered = match endpoint {
            "mutate" => webhook.mutate(&bytes).await,
            "validate" => webhook.validate(&bytes).await,
            _ => webhook.image_policy(&bytes).await,
        };
        Ok((answered, started))
    };
    let (status, body, outcome, started) = settle(
        tokio::time::timeout(limits.request_timeout, work).await,
        limits,
    );
    // Latency is the answer's, from a whole body: a body that never arrived has none.
    let seconds = started.map(|s| s.elapsed().as_secs_f64());
    webhook.metrics.request(endpoint, outcome, seconds);
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// The endpoint a request is for, or the answer to a wrong path or method.
fn route(request: &Request<Incoming>) -> Result<&'static str, (StatusCode, &'static str)> {
    let endpoint = match request.uri().path() {
        "/mutate" => "mutate",
        "/validate" => "validate",
        "/image-policy" => "image-policy",
        _ => {
            return Err((
                StatusCode::NOT_FOUND,
                "not found: privateer serves /mutate, /validate and /image-policy",
            ));
        }
    };
    if request.method() != Method::POST {
        return Err((
            StatusCode::METHOD_NOT_ALLOWED,
            "POST an AdmissionReview or ImageReview",
        ));
    }
    Ok(endpoint)
}

/// The whole body, at most `webhook.maxBodyBytes`.
async fn read_body(
    request: Request<Incoming>,
    limits: &Limits,
) -> Result<Bytes, (StatusCode, String)> {
    let body = Limited::new(request.into_body(), limits.max_body_bytes);
    match body.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body larger than webhook.maxBodyBytes ({} bytes)",
                limits.max_body_bytes
            ),
        )),
        Err(e) => Err((StatusCode::BAD_REQUEST, format!("reading the body: {e}"))),
    }
}

type Worked = Result<(Result<Answered, BadRequest>, Instant), (StatusCode, String)>;

/// What the answer is: status, body, the outcome label and when the work started.
fn settle(
    worked: Result<Worked, tokio::time::error::Elapsed>,
    limits: &Limits,
) -> (StatusCode, Vec<u8>, &'static str, Option<Instant>) {
    match worked {
        Ok(Ok((Ok(Answered { body, outcome }), started))) => {
            (StatusCode::OK, body, outcome, Some(started))
        }
        Ok(Ok((Err(BadRequest(problem)), started))) => (
            StatusCode::BAD_REQUEST,
            message(&problem),
            "badRequest",
            Some(started),
        ),
        Ok(Err((status, problem))) => (status, message(&problem), "badRequest", None),
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            message(&format!(
                "no answer within webhook.requestTimeout ({:?})",
                limits.request_timeout
            )),
            "timeout",
            None,
        ),
    }
}

fn message(problem: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"error": problem})).unwrap_or_default()
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}

/// Bind `listen` (port 0 picks one).
pub async fn bind(listen: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(listen).await?;
    let address = listener.local_addr()?;
    Ok((listener, address))
}
