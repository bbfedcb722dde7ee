//! The plain-HTTP port every privateer process serves (`metrics.listen`): `/healthz` (the
//! process answers), `/readyz` (every component is ready) and `/metrics` (the Prometheus text
//! of every component). `privateer run` holds webhook and controller in one process, so the
//! port is shared: each component is a [`Probe`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

/// One component's view on the plain port.
pub trait Probe: Send + Sync {
    /// `Err(why)` while the component cannot do its job yet.
    fn ready(&self) -> Result<(), String>;
    /// Its metrics in the OpenMetrics text format, without the `# EOF` trailer (this port adds
    /// it once after every component's): prometheus-client's `encode_registry`.
    fn metrics(&self) -> String;
}

/// Serve until `stop` is cancelled; returns the bound address (port 0 picks one).
pub async fn serve(
    listen: &str,
    probes: Vec<Arc<dyn Probe>>,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let address = listener.local_addr()?;
    let probes = Arc::new(probes);
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                () = stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::debug!("metrics port: accept: {e}");
                        continue;
                    }
                },
            };
            let probes = probes.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let probes = probes.clone();
                    async move { Ok::<_, Infallible>(answer(request.uri().path(), &probes)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(address)
}

fn answer(path: &str, probes: &[Arc<dyn Probe>]) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/metrics" => {
            let mut text: String = probes.iter().map(|p| p.metrics()).collect();
            text.push_str("# EOF\n");
            (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text,
            )
        }
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" => {
            let waiting: Vec<String> = probes.iter().filter_map(|p| p.ready().err()).collect();
            if waiting.is_empty() {
                (StatusCode::OK, "text/plain", "ok\n".to_owned())
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("not ready: {}\n", waiting.join("; ")),
                )
            }
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Result<(), String>, &'static str);
    impl Probe for Fixed {
        fn ready(&self) -> Result<(), String> {
            self.0.clone()
        }
        fn metrics(&self) -> String {
            self.1.to_owned()
        }
    }

    #[test]
    fn joins_metrics_and_names_every_unready_component() {
        let probes: Vec<Arc<dyn Probe>> = vec![
            Arc::new(Fixed(Ok(()), "a_total 1\n")),
            Arc::new(Fixed(
                Err("webhook: cache not synced".into()),
                "b_total 2\n",
            )),
        ];
        let metrics = answer("/metrics", &probes);
        assert_eq!(metrics.status(), StatusCode::OK);
        let ready = answer("/readyz", &probes);
        assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer("/healthz", &probes).status(), StatusCode::OK);
        assert_eq!(answer("/nope", &probes).status(), StatusCode::NOT_FOUND);
    }
}
