//! A registry that misbehaves on purpose, on loopback: it serves one small image over the
//! distribution protocol and, per `Fault`, crafts the answers a hostile or broken public
//! registry could send (tokens that cannot be headers, stalls, oversized or over-counted
//! manifests, bad digests, redirect tricks). It records what it was asked. It runs on its own
//! thread and runtime, and stops when dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::json;
use sha2::{Digest as _, Sha256, Sha512};

/// What the registry does wrong.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Nothing: a well-behaved anonymous registry.
    None,
    /// Bearer auth whose token endpoint answers a token holding CR/LF.
    TokenWithCrLf,
    /// Bearer auth whose token endpoint answers a token of this many bytes.
    HugeToken(usize),
    /// Bearer auth whose token endpoint never answers.
    StallToken,
    /// Accept connections, read the request, never answer.
    NeverAnswer,
    /// Send the manifest's headers and half its body, then nothing.
    StallManifestBody,
    /// Send the layer's headers and half its bytes, then nothing.
    StallBlobBody,
    /// Send half the layer's bytes, then close the connection.
    BreakBlobBody,
    /// A manifest padded to this many bytes; `chunked` hides its length.
    HugeManifest { bytes: usize, chunked: bool },
    /// HEAD without `Docker-Content-Digest`, the GET a manifest of this many bytes.
    HeadWithoutDigestHugeManifest(usize),
    /// A manifest naming this many layers.
    ManyLayers(usize),
    /// An index naming this many children.
    ManyChildren(usize),
    /// The manifest is addressed by its sha512 digest (legal, and rare).
    Sha512Digest,
    /// The manifest declares the layer one byte bigger than it is.
    BlobShorterThanDeclared,
    /// Every blob request redirects to itself.
    RedirectLoop,
    /// Blob requests redirect to this URL.
    RedirectBlobsTo(String),
    /// `Docker-Content-Digest` answered with this value.
    DigestHeader(String),
    /// Two layers of 2^64-1 bytes.
    OverflowingSizes,
    /// A layer whose media type merely contains "foreign".
    ForeignLookalikeLayer,
    /// The first `first` requests answer 429 with this `Retry-After`, then all is well.
    TooManyRequests { first: usize, retry_after: String },
    /// The first `first` blob GETs answer 429 with this `Retry-After` (a resolve, a HEAD,
    /// passes; the copy that pulls is throttled), then all is well.
    TooManyRequestsOnBlobs { first: usize, retry_after: String },
    /// Answer 500 with this body to everything.
    ErrorBody(String),
}

/// A request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
}

/// The running server.
pub struct HostileRegistry {
    /// `127.0.0.1:<port>`.
    pub host: String,
    /// The repository the image lives in.
    pub repository: String,
    pub tag: String,
    /// The digest the image's manifest is addressed by (sha512 under `Fault::Sha512Digest`).
    pub digest: String,
    pub layer: Bytes,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Content {
    fault: Fault,
    host: String,
    manifest: Bytes,
    digest: String,
    config: Bytes,
    layer: Bytes,
}

const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn fake_digest(i: usize) -> String {
    sha256(format!("missing-{i}").as_bytes())
}

fn manifest(fault: &Fault, config: &Bytes, layer: &Bytes) -> Bytes {
    let descriptor = |media_type: &str, digest: String, size: u64| json!({"mediaType": media_type, "digest": digest, "size": size});
    let layer_size = layer.len() as u64;
    let layers = match fault {
        Fault::ManyLayers(n) => (0..*n)
            .map(|i| descriptor(LAYER_TYPE, fake_digest(i), 1))
            .collect(),
        Fault::OverflowingSizes => vec![
            descriptor(LAYER_TYPE, fake_digest(1), u64::MAX),
            descriptor(LAYER_TYPE, fake_digest(2), u64::MAX),
        ],
        Fault::BlobShorterThanDeclared => {
            vec![descriptor(LAYER_TYPE, sha256(layer), layer_size + 1)]
        }
        Fault::ForeignLookalikeLayer => vec![descriptor(
            "application/vnd.example.not-foreign.tar",
            sha256(layer),
            layer_size,
        )],
        _ => vec![descriptor(LAYER_TYPE, sha256(layer), layer_size)],
    };
    if let Fault::ManyChildren(n) = fault {
        let children: Vec<_> = (0..*n)
            .map(|i| {
                let mut child = descriptor(MANIFEST_TYPE, fake_digest(i), 100);
                child["platform"] = json!({"os": "linux", "architecture": format!("arch{i}")});
                child
            })
            .collect();
        return Bytes::from(
            json!({"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": children}).to_string(),
        );
    }
    let mut value = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": descriptor(CONFIG_TYPE, sha256(config), config.len() as u64),
        "layers": layers,
    });
    let padding = match fault {
        Fault::HugeManifest { bytes, .. } | Fault::HeadWithoutDigestHugeManifest(bytes) => *bytes,
        _ => 0,
    };
    if padding > 0 {
        value["annotations"] = json!({"padding": "x".repeat(padding)});
    }
    Bytes::from(value.to_string())
}

impl HostileRegistry {
    pub fn start(fault: Fault) -> anyhow::Result<Self> {
        Self::start_at(std::net::Ipv4Addr::LOCALHOST, fault)
    }

    /// Listening on `address` (the node's, for copy Jobs to reach it).
    pub fn start_at(address: std::net::Ipv4Addr, fault: Fault) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind((address, 0))?;
        listener.set_nonblocking(true)?;
        let addr: SocketAddr = listener.local_addr()?;
        let host = addr.to_string();
        let config = Bytes::from(
            r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        );
        let layer = Bytes::from(
            (0..64 * 1024u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
                .collect::<Vec<u8>>(),
        );
        let manifest = manifest(&fault, &config, &layer);
        let digest = match fault {
            Fault::Sha512Digest => format!("sha512:{:x}", Sha512::digest(&manifest)),
            _ => sha256(&manifest),
        };
        let content = Arc::new(Content {
            fault,
            host: host.clone(),
            manifest,
            digest: digest.clone(),
            config,
            layer: layer.clone(),
        });
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let recorded = seen.clone();
        let thread = std::thread::Builder::new()
            .name("hostile-registry".into())
            .spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(serve(listener, content, recorded, stopped));
            })?;
        Ok(Self {
            host,
            repository: "hostile/image".into(),
            tag: "1.0".into(),
            digest,
            layer,
            seen,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `host/repository:tag`.
    pub fn reference(&self) -> String {
        format!("{}/{}:{}", self.host, self.repository, self.tag)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for HostileRegistry {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    content: Arc<Content>,
    seen: Arc<Mutex<Vec<Seen>>>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        let accepted = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else { continue };
        let content = content.clone();
        let seen = seen.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let content = content.clone();
                let seen = seen.clone();
                async move { Ok::<_, Infallible>(answer(&content, &seen, request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type Body = BoxBody<Bytes, std::io::Error>;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// `first` bytes, then either nothing ever again (`stall`) or a broken connection.
fn partial(first: Bytes, stall: bool) -> Body {
    let rest = futures::stream::once(async move {
        if stall {
            futures::future::pending::<()>().await;
        }
        Err(std::io::Error::other("connection broken on purpose"))
    });
    let stream = futures::stream::once(async move { Ok(Frame::data(first)) }).chain(rest);
    BodyExt::boxed(StreamBody::new(stream))
}

fn chunked(bytes: Bytes) -> Body {
    let chunks: Vec<Result<Frame<Bytes>, std::io::Error>> = bytes
        .chunks(64 * 1024)
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    BodyExt::boxed(StreamBody::new(futures::stream::iter(chunks)))
}

fn respond(status: StatusCode, headers: &[(&str, String)], body: Body) -> Response<Body> {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, value.as_str());
    }
    builder
        .body(body)
        .unwrap_or_else(|_| Response::new(full("bad response")))
}

async fn answer(
    content: &Content,
    seen: &Mutex<Vec<Seen>>,
    request: Request<Incoming>,
) -> Response<Body> {
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    let authorization = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let is_blob_get = method == "GET" && path.contains("/blobs/");
    let (count, blob_gets) = {
        let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.push(Seen {
            method: method.clone(),
            path: path.clone(),
            authorization: authorization.clone(),
        });
        let blob_gets = seen
            .iter()
            .filter(|s| s.method == "GET" && s.path.contains("/blobs/"))
            .count();
        (seen.len(), blob_gets)
    };
    let fault = &content.fault;
    match fault {
        Fault::TooManyRequests { first, retry_after } if count <= *first => {
            return too_many_requests(retry_after);
        }
        Fault::TooManyRequestsOnBlobs { first, retry_after }
            if is_blob_get && blob_gets <= *first =>
        {
            return too_many_requests(retry_after);
        }
        Fault::NeverAnswer => futures::future::pending::<()>().await,
        Fault::ErrorBody(body) => {
            return respond(StatusCode::INTERNAL_SERVER_ERROR, &[], full(body.clone()));
        }
        _ => {}
    }
    let bearer = matches!(
        fault,
        Fault::TokenWithCrLf | Fault::HugeToken(_) | Fault::StallToken
    );
    if path == "/token" {
        let token = match fault {
            Fault::StallToken => futures::future::pending::<String>().await,
            Fault::HugeToken(n) => "t".repeat(*n),
            _ => "abc\r\nX-Injected: 1".into(),
        };
        return respond(
            StatusCode::OK,
            &[("content-type", "application/json".into())],
            full(json!({ "token": token }).to_string()),
        );
    }
    if matches!(fault, Fault::RedirectBlobsTo(_)) && authorization.is_none() {
        return respond(
            StatusCode::UNAUTHORIZED,
            &[("www-authenticate", r#"Basic realm="hostile""#.into())],
            full(""),
        );
    }
    if bearer && authorization.is_none() {
        let challenge = format!(
            r#"Bearer realm="http://{}/token",service="hostile",scope="repository:hostile/image:pull""#,
            content.host
        );
        return respond(
            StatusCode::UNAUTHORIZED,
            &[("www-authenticate", challenge)],
            full(r#"{"errors":[{"code":"UNAUTHORIZED","message":"log in"}]}"#),
        );
    }
    let Some(rest) = path.strip_prefix("/v2/hostile/image/") else {
        return if path == "/v2/" {
            respond(StatusCode::OK, &[], full("{}"))
        } else {
            respond(StatusCode::NOT_FOUND, &[], full(""))
        };
    };
    if let Some(reference) = rest.strip_prefix("manifests/") {
        return manifest_answer(content, &method, reference);
    }
    if let Some(digest) = rest.strip_prefix("blobs/") {
        return blob_answer(content, &method, &path, digest);
    }
    if rest.starts_with("tags/list") {
        return respond(
            StatusCode::OK,
            &[],
            full(r#"{"name":"hostile/image","tags":["1.0"]}"#),
        );
    }
    respond(StatusCode::NOT_FOUND, &[], full(""))
}

fn too_many_requests(retry_after: &str) -> Response<Body> {
    let body = r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"rate limited"}]}"#;
    respond(
        StatusCode::TOO_MANY_REQUESTS,
        &[("retry-after", retry_after.to_owned())],
        full(body),
    )
}

fn manifest_answer(content: &Content, method: &str, reference: &str) -> Response<Body> {
    let fault = &content.fault;
    if reference != "1.0" && reference != content.digest {
        return respond(
            StatusCode::NOT_FOUND,
            &[],
            full(r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"no such manifest"}]}"#),
        );
    }
    let media_type = match fault {
        Fault::ManyChildren(_) => INDEX_TYPE,
        _ => MANIFEST_TYPE,
    };
    let mut headers = vec![("content-type", media_type.to_owned())];
    match fault {
        Fault::HeadWithoutDigestHugeManifest(_) => {}
        Fault::DigestHeader(value) => headers.push(("docker-content-digest", value.clone())),
        _ => headers.push(("docker-content-digest", content.digest.clone())),
    }
    let is_chunked = matches!(fault, Fault::HugeManifest { chunked: true, .. });
    if !is_chunked {
        headers.push(("content-length", content.manifest.len().to_string()));
    }
    if method == "HEAD" {
        return respond(StatusCode::OK, &headers, full(""));
    }
    let body = match fault {
        Fault::StallManifestBody => {
            partial(content.manifest.slice(..content.manifest.len() / 2), true)
        }
        _ if is_chunked => chunked(content.manifest.clone()),
        _ => full(content.manifest.clone()),
    };
    respond(StatusCode::OK, &headers, body)
}

fn blob_answer(content: &Content, method: &str, path: &str, digest: &str) -> Response<Body> {
    let fault = &content.fault;
    match fault {
        Fault::RedirectLoop => {
            return respond(
                StatusCode::TEMPORARY_REDIRECT,
                &[("location", path.to_owned())],
                full(""),
            );
        }
        Fault::RedirectBlobsTo(url) => {
            return respond(
                StatusCode::TEMPORARY_REDIRECT,
                &[("location", url.clone())],
                full(""),
            );
        }
        _ => {}
    }
    let blob = if digest == sha256(&content.layer) {
        content.layer.clone()
    } else if digest == sha256(&content.config) {
        content.config.clone()
    } else {
        return respond(
            StatusCode::NOT_FOUND,
            &[],
            full(r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"no such blob"}]}"#),
        );
    };
    let is_layer = blob.len() == content.layer.len();
    let mut headers = vec![("docker-content-digest", digest.to_owned())];
    let half = blob.slice(..blob.len() / 2);
    let body = match fault {
        Fault::StallBlobBody if is_layer => {
            headers.push(("content-length", blob.len().to_string()));
            partial(half, true)
        }
        Fault::BreakBlobBody if is_layer => {
            headers.push(("content-length", blob.len().to_string()));
            partial(half, false)
        }
        _ => {
            headers.push(("content-length", blob.len().to_string()));
            full(if method == "HEAD" { Bytes::new() } else { blob })
        }
    };
    respond(StatusCode::OK, &headers, body)
}
