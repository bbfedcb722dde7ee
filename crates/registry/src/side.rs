//! One end of a copy: an image in a repository, the endpoint that serves it, and the
//! credentials for it, speaking the OCI distribution protocol over `http`. Every call retries
//! what is transient and logs in again once when a token expires mid-copy.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::{HeaderValue, Method, StatusCode, header};
use privateer_image::Digest;
use tokio::sync::Mutex;

use crate::error::{CopyError, ErrorClass};
use crate::manifest::{ACCEPTED, Descriptor, Manifest};
use crate::progress::Progress;
use crate::retry::{RetryPolicy, with_retries};
use crate::verify::{self, BlobCheck};
use crate::wire::{read_limited, request_error, status_error, without_query};
use crate::{CopyOptions, Credentials, Limits};

mod artifacts;
mod login;
mod remembered;

/// Repositories (`host/repository`) seen to exist: a copy into one need not ask again. One
/// deleted since costs a request per blob (each is asked for), never a wrong copy.
static EXISTING_REPOSITORIES: remembered::Remembered = remembered::Remembered::new(4096);

/// How long cancelling an upload session may take: it is a courtesy after a failure.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct Side {
    http: reqwest::Client,
    /// `https://host[:port]` or `http://…`.
    base: String,
    /// `host[:port]` requests go to.
    host: String,
    repository: String,
    /// How the user named the image, for messages.
    name: String,
    credentials: Credentials,
    /// The `Authorization` that works for each operation (`None`: anonymous does).
    authorization: Mutex<HashMap<Operation, Option<HeaderValue>>>,
    retry: RetryPolicy,
    limits: Limits,
    progress: Arc<dyn Progress>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Operation {
    Pull,
    Push,
}

/// Retry what is transient; on a 401 log every side in again, once: tokens expire during long
/// copies. The one place this policy lives, for single calls and for streamed blobs alike.
pub(crate) async fn with_fresh_logins<T, F, Fut>(
    sides: &[&Side],
    retry: &RetryPolicy,
    progress: &dyn Progress,
    mut call: F,
) -> Result<T, CopyError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CopyError>>,
{
    let mut logged_in_again = false;
    loop {
        match with_retries(retry, progress, &mut call).await {
            Err(e) if e.class == ErrorClass::Unauthorized && !logged_in_again => {
                logged_in_again = true;
                for side in sides {
                    side.authorization.lock().await.clear();
                }
            }
            other => return other,
        }
    }
}

impl Side {
    pub(crate) fn new(
        image: &crate::Image,
        options: &CopyOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<Self, CopyError> {
        let host = image.host().to_owned();
        let plain_http = image.endpoint.as_ref().is_some_and(|e| e.plain_http);
        let plain_http = plain_http || options.tls.insecure_hosts.contains(&host);
        let scheme = if plain_http { "http" } else { "https" };
        Ok(Self {
            http: crate::wire::client(&options.tls, &options.timeouts, &options.redirects)?,
            base: format!("{scheme}://{host}"),
            host,
            repository: image.reference.path().to_owned(),
            name: image.reference.name(),
            credentials: image.credentials.clone(),
            authorization: Mutex::new(HashMap::new()),
            retry: options.retry.clone(),
            limits: options.limits.clone(),
            progress,
        })
    }

    pub(crate) fn progress(&self) -> &dyn Progress {
        self.progress.as_ref()
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// `name:tag` or `name@digest`, for messages.
    fn at(&self, tag_or_digest: &str) -> String {
        let separator = if tag_or_digest.contains(':') {
            '@'
        } else {
            ':'
        };
        format!("{}{separator}{tag_or_digest}", self.name)
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.base, self.repository)
    }

    /// Log in, run `call`, retry what is transient, log in again once on a 401.
    async fn call<T, F, Fut>(&self, call: F) -> Result<T, CopyError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CopyError>>,
    {
        with_fresh_logins(&[self], &self.retry, self.progress.as_ref(), call).await
    }

    fn manifest_request(
        &self,
        client: &reqwest::Client,
        method: Method,
        reference: &str,
    ) -> reqwest::RequestBuilder {
        client
            .request(method, self.url(&format!("manifests/{reference}")))
            .header(header::ACCEPT, ACCEPTED.join(", "))
    }

    /// The digest `tag_or_digest` names here, or `None` when there is no such manifest. The
    /// registry's `Docker-Content-Digest` is validated before use; without one the manifest is
    /// pulled (within `limits.manifestBytes`) and hashed.
    pub(crate) async fn manifest_digest(
        &self,
        tag_or_digest: &str,
    ) -> Result<Option<String>, CopyError> {
        let action = format!("resolve {}", self.at(tag_or_digest));
        let found = self
            .call(|| async {
                let response = self
                    .send(Operation::Pull, &action, |c| {
                        self.manifest_request(c, Method::HEAD, tag_or_digest)
                    })
                    .await?;
                match response.status() {
                    StatusCode::NOT_FOUND => Ok(None),
                    status if status.is_success() => Ok(Some(answered_digest(&response, &action)?)),
                    _ => Err(status_error(response, &self.host, &action).await),
                }
            })
            .await?;
        match found {
            None => Ok(None),
            Some(Some(digest)) => Ok(Some(digest.to_string())),
            Some(None) if tag_or_digest.contains(':') => Ok(Some(tag_or_digest.to_owned())),
            Some(None) => Ok(Some(self.pull_manifest(tag_or_digest).await?.digest)),
        }
    }

    /// Pull a manifest within `limits.manifestBytes`, check it against the digest it was asked
    /// by (or the one the registry answered), and parse it within the count limits.
    pub(crate) async fn pull_manifest(&self, tag_or_digest: &str) -> Result<Manifest, CopyError> {
        let action = format!("pull manifest {}", self.at(tag_or_digest));
        let (bytes, answered) = self
            .call(|| async {
                let response = self
                    .send(Operation::Pull, &action, |c| {
                        self.manifest_request(c, Method::GET, tag_or_digest)
                    })
                    .await?;
                if !response.status().is_success() {
                    return Err(status_error(response, &self.host, &action).await);
                }
                let answered = answered_digest(&response, &action)?;
                let bytes = read_limited(
                    response,
                    self.limits.manifest_bytes,
                    &action,
                    "limits.manifestBytes",
                )
                .await?;
                Ok((bytes, answered))
            })
            .await?;
        let expected = match Digest::parse(tag_or_digest) {
            Ok(asked) => Some(asked),
            Err(_) => answered,
        };
        let digest = match expected {
            Some(expected) if !verify::matches(&bytes, &expected) => {
                return Err(CopyError::new(
                    ErrorClass::DigestMismatch,
                    action,
                    format!("the manifest served does not match {expected}"),
                ));
            }
            Some(expected) => expected.to_string(),
            None => verify::digest_of(&bytes, privateer_image::Algorithm::Sha256),
        };
        Manifest::parse(bytes, digest, &self.limits)
    }

    /// Write `manifest`'s exact bytes under `tag_or_digest`. True when the registry answered
    /// `OCI-Subject`: it indexed the manifest's subject itself (the referrers API).
    pub(crate) async fn push_manifest(
        &self,
        manifest: &Manifest,
        tag_or_digest: &str,
    ) -> Result<bool, CopyError> {
        let action = format!("push manifest {}", self.at(tag_or_digest));
        self.call(|| async {
            let response = self
                .send(Operation::Push, &action, |c| {
                    c.put(self.url(&format!("manifests/{tag_or_digest}")))
                        .header(header::CONTENT_TYPE, manifest.media_type.as_str())
                        .body(manifest.bytes.clone())
                })
                .await?;
            if !response.status().is_success() {
                return Err(status_error(response, &self.host, &action).await);
            }
            EXISTING_REPOSITORIES.insert(&self.repository_key());
            Ok(response.headers().contains_key("oci-subject"))
        })
        .await
    }

    /// Whether the repository exists at all. A repository that does not exist holds no blobs,
    /// so a copy into it need not ask for each one. Unknown answers count as "exists".
    pub(crate) async fn repository_exists(&self) -> Result<bool, CopyError> {
        if EXISTING_REPOSITORIES.contains(&self.repository_key()) {
            return Ok(true);
        }
        let action = format!("list tags of {}", self.name);
        self.call(|| async {
            let response = self
                .send(Operation::Pull, &action, |c| {
                    c.get(self.url("tags/list?n=1"))
                })
                .await?;
            match response.status() {
                status if status.is_success() => {
                    EXISTING_REPOSITORIES.insert(&self.repository_key());
                    Ok(true)
                }
                StatusCode::NOT_FOUND => Ok(false),
                _ => match status_error(response, &self.host, &action).await {
                    e if e.is_transient() || e.class == ErrorClass::Unauthorized => Err(e),
                    _ => Ok(true),
                },
            }
        })
        .await
    }

    fn repository_key(&self) -> String {
        format!("{}/{}", self.host, self.repository)
    }

    pub(crate) async fn blob_exists(&self, digest: &str) -> Result<bool, CopyError> {
        let action = format!("check blob {digest} in {}", self.name);
        self.call(|| async {
            let response = self
                .send(Operation::Pull, &action, |c| {
                    c.head(self.url(&format!("blobs/{digest}")))
                })
                .await?;
            match response.status() {
                status if status.is_success() => Ok(true),
                StatusCode::NOT_FOUND => Ok(false),
                _ => Err(status_error(response, &self.host, &action).await),
            }
        })
        .await
    }

    /// Ask the registry to link `digest` from `from_repository`; false when it would not.
    pub(crate) async fn mount(
        &self,
        digest: &str,
        from_repository: &str,
    ) -> Result<bool, CopyError> {
        let action = format!("mount {digest} from {from_repository} into {}", self.name);
        self.call(|| async {
            let response = self
                .send(Operation::Push, &action, |c| {
                    c.post(self.url("blobs/uploads/"))
                        .query(&[("mount", digest), ("from", from_repository)])
                })
                .await?;
            match response.status() {
                StatusCode::CREATED => Ok(true),
                // An upload session instead of a mount: close it, the blob is copied instead.
                StatusCode::ACCEPTED => {
                    if let Ok(location) = self.upload_location(&response, &action) {
                        self.cancel_upload(location).await;
                    }
                    Ok(false)
                }
                _ => match status_error(response, &self.host, &action).await {
                    e if e.is_transient() || e.class == ErrorClass::Unauthorized => Err(e),
                    _ => Ok(false),
                },
            }
        })
        .await
    }

    /// Open a stream of blob `descriptor` that fails as soon as the content strays from the
    /// descriptor: more bytes than its size, fewer at the end, another digest. Not retried
    /// here: the caller retries the whole blob, stream and upload together.
    pub(crate) async fn pull_blob_once(
        &self,
        descriptor: &Descriptor,
    ) -> Result<futures::stream::BoxStream<'static, std::io::Result<Bytes>>, CopyError> {
        let action = format!("pull blob {} from {}", descriptor.digest, self.name);
        let digest = Digest::parse(&descriptor.digest)
            .map_err(|e| CopyError::new(ErrorClass::Invalid, &action, e.to_string()))?;
        let response = self
            .send(Operation::Pull, &action, |c| {
                c.get(self.url(&format!("blobs/{digest}")))
            })
            .await?;
        if !response.status().is_success() {
            return Err(status_error(response, &self.host, &action).await);
        }
        let declared = descriptor.size;
        if let Some(length) = response.content_length()
            && length != declared
        {
            return Err(CopyError::new(
                ErrorClass::DigestMismatch,
                action,
                format!("the source serves {length} bytes, the manifest declares {declared}"),
            ));
        }
        let host = self.host.clone();
        let state = (
            response.bytes_stream().boxed(),
            Some(BlobCheck::new(digest, declared)),
        );
        // The check travels with the stream; `None` once it ended, well or not.
        let stream = futures::stream::unfold(state, move |(mut body, check)| {
            let (action, host) = (action.clone(), host.clone());
            async move {
                let mut check = check?;
                let fault = |message: String| {
                    let error = CopyError::new(ErrorClass::DigestMismatch, &action, message);
                    std::io::Error::other(error)
                };
                let failed = match body.next().await {
                    Some(Ok(chunk)) => match check.chunk(&chunk) {
                        Ok(()) => return Some((Ok(chunk), (body, Some(check)))),
                        Err(problem) => fault(problem),
                    },
                    Some(Err(e)) => std::io::Error::other(request_error(&action, &e, &host)),
                    None => match check.finish() {
                        Ok(()) => return None,
                        Err(problem) => fault(problem),
                    },
                };
                Some((Err(failed), (body, None)))
            }
        });
        Ok(stream.boxed())
    }

    /// Upload `size` bytes of `stream` as blob `digest` in one streamed request; a failed
    /// upload's session is cancelled. Not retried here: a consumed stream cannot be replayed,
    /// so the caller retries the whole blob.
    pub(crate) async fn push_blob_once(
        &self,
        digest: &str,
        size: u64,
        stream: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
        mut aborted: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), CopyError> {
        let action = format!("push blob {digest} to {}", self.name);
        let response = self
            .send(Operation::Push, &action, |c| {
                c.post(self.url("blobs/uploads/"))
            })
            .await?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(status_error(response, &self.host, &action).await);
        }
        let location = self.upload_location(&response, &action)?;
        let mut put = location.clone();
        put.query_pairs_mut().append_pair("digest", digest);
        let request = self
            .http
            .put(put)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, size)
            .body(reqwest::Body::wrap_stream(stream));
        let request = self.with_push_authorization(request, &location).await;
        let sent = tokio::select! {
            sent = request.send() => Some(sent),
            _ = aborted.wait_for(|aborted| *aborted) => None,
        };
        let result = match sent {
            Some(Ok(response)) if response.status().is_success() => return Ok(()),
            Some(Ok(response)) => Err(status_error(response, &self.host, &action).await),
            Some(Err(e)) => Err(request_error(&action, &e, &self.host)),
            None => Err(crate::blob::abandoned(digest)),
        };
        self.cancel_upload(location).await;
        result
    }

    /// The upload session URL a POST answered, resolved against the registry.
    fn upload_location(
        &self,
        response: &reqwest::Response,
        action: &str,
    ) -> Result<reqwest::Url, CopyError> {
        let invalid = |message: &str| CopyError::new(ErrorClass::Invalid, action, message);
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| invalid("the registry opened an upload without a Location"))?;
        let url = response
            .url()
            .join(location)
            .map_err(|_| invalid("the upload Location is not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("the upload Location is neither http nor https"));
        }
        Ok(url)
    }

    /// `request` to an upload URL, with the push authorization when the URL is on the
    /// registry's own host (an upload URL elsewhere gets no credentials).
    async fn with_push_authorization(
        &self,
        request: reqwest::RequestBuilder,
        location: &reqwest::Url,
    ) -> reqwest::RequestBuilder {
        let authorization = self
            .authorization
            .lock()
            .await
            .get(&Operation::Push)
            .cloned()
            .flatten();
        match authorization.filter(|_| crate::wire::host_port(location) == self.host) {
            Some(value) => request.header(header::AUTHORIZATION, value),
            None => request,
        }
    }

    /// Close an upload session that will not be finished, so the target keeps no half blob.
    async fn cancel_upload(&self, location: reqwest::Url) {
        let request = self.http.delete(location.clone()).timeout(CANCEL_TIMEOUT);
        let request = self.with_push_authorization(request, &location).await;
        match request.send().await {
            Ok(response)
                if response.status().is_success() || response.status() == StatusCode::NOT_FOUND => {
            }
            Ok(response) => {
                tracing::debug!(status = %response.status(), url = without_query(&location), "upload not cancelled")
            }
            Err(e) => {
                tracing::debug!(error = %e, url = without_query(&location), "upload not cancelled")
            }
        }
    }

    pub(crate) fn repository(&self) -> &str {
        &self.repository
    }

    pub(crate) fn host(&self) -> &str {
        &self.host
    }
}

/// The registry's `Docker-Content-Digest`, validated: a value that is not a digest (no `:`,
/// `../`, another algorithm) is refused rather than used in a URL.
fn answered_digest(
    response: &reqwest::Response,
    action: &str,
) -> Result<Option<Digest>, CopyError> {
    let Some(value) = response.headers().get("docker-content-digest") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default();
    Digest::parse(text).map(Some).map_err(|e| {
        let shown: String = text.chars().take(80).collect();
        CopyError::new(
            ErrorClass::Invalid,
            action,
            format!("the registry answered Docker-Content-Digest {shown:?}: {e}"),
        )
    })
}
