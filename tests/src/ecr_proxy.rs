//! A loopback HTTP proxy in front of moto that counts ECR API calls by action and answers
//! chosen calls with throttling, server or access-denied errors, as ECR would. The provider's
//! tests use it to prove what was (not) called, and that retries happen.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What an injected failure looks like on the wire (AWS JSON 1.1 error shapes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 400 `ThrottlingException`.
    Throttle,
    /// 500 `ServerException`.
    ServerError,
    /// 400 `AccessDeniedException`.
    AccessDenied,
}

#[derive(Default)]
struct State {
    calls: BTreeMap<String, u32>,
    /// action → (fault, times left)
    faults: BTreeMap<String, (Fault, u32)>,
}

pub struct EcrProxy {
    /// `http://127.0.0.1:<port>`: use it as the ECR endpoint.
    pub endpoint: String,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl EcrProxy {
    /// Listen on a free loopback port and forward to `upstream` (moto's endpoint).
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(Mutex::new(State::default()));
        let upstream: Arc<str> = upstream.trim_end_matches('/').into();
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (state, upstream, client) = (shared.clone(), upstream.clone(), client.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        handle(request, state.clone(), upstream.clone(), client.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            endpoint,
            state,
            task,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Calls of `action` (e.g. `GetAuthorizationToken`) so far, failed ones included.
    pub fn calls(&self, action: &str) -> u32 {
        self.state().calls.get(action).copied().unwrap_or(0)
    }

    /// Every action called so far and how often.
    pub fn all_calls(&self) -> BTreeMap<String, u32> {
        self.state().calls.clone()
    }

    pub fn reset_calls(&self) {
        self.state().calls.clear();
    }

    /// Answer the next `times` calls of `action` with `fault`.
    pub fn fail(&self, action: &str, fault: Fault, times: u32) {
        self.state()
            .faults
            .insert(action.to_owned(), (fault, times));
    }
}

impl Drop for EcrProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    request: Request<Incoming>,
    state: Arc<Mutex<State>>,
    upstream: Arc<str>,
    client: Client<HttpConnector, Full<Bytes>>,
) -> anyhow::Result<Response<Full<Bytes>>> {
    let action = request
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit('.').next())
        .unwrap_or("unknown")
        .to_owned();
    let fault = {
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        *state.calls.entry(action.clone()).or_default() += 1;
        match state.faults.get_mut(&action) {
            Some((fault, left)) if *left > 0 => {
                *left -= 1;
                Some(*fault)
            }
            _ => None,
        }
    };
    if let Some(fault) = fault {
        let (status, code, message) = match fault {
            Fault::Throttle => (
                StatusCode::BAD_REQUEST,
                "ThrottlingException",
                "Rate exceeded",
            ),
            Fault::ServerError => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServerException",
                "injected server error",
            ),
            Fault::AccessDenied => (
                StatusCode::BAD_REQUEST,
                "AccessDeniedException",
                "User: arn:aws:sts::123456789012:assumed-role/privateer is not authorized",
            ),
        };
        let body = serde_json::json!({"__type": code, "message": message}).to_string();
        return Ok(Response::builder()
            .status(status)
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amzn-errortype", code)
            .body(Full::new(Bytes::from(body)))?);
    }
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut forward = Request::builder()
        .method(parts.method)
        .uri(format!("{upstream}{path}"));
    for (name, value) in &parts.headers {
        forward = forward.header(name, value);
    }
    let response = client
        .request(forward.body(Full::new(body))?)
        .await
        .context("forwarding to moto")?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Response::from_parts(parts, Full::new(body)))
}
