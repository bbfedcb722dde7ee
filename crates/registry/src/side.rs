//! One end of a copy: an image in a repository, the endpoint that serves it, and the
//! credentials for it, on top of one `oci-client` client. Every call retries what is transient
//! and logs in again once when a token expires mid-copy.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};
use tokio::sync::Mutex;

use crate::error::{CopyError, ErrorClass};
use crate::manifest::{ACCEPTED, Descriptor, Manifest};
use crate::progress::Progress;
use crate::retry::{RetryPolicy, with_retries};
use crate::{Credentials, Endpoint, TlsOptions};

pub(crate) struct Side {
    client: oci_client::Client,
    auth: RegistryAuth,
    /// `host[:port]` requests go to.
    host: String,
    repository: String,
    /// How the user named the image, for messages.
    name: String,
    logged_in: Mutex<HashSet<Operation>>,
    retry: RetryPolicy,
    progress: Arc<dyn Progress>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Operation {
    Pull,
    Push,
}

impl Operation {
    fn oci(self) -> RegistryOperation {
        match self {
            Self::Pull => RegistryOperation::Pull,
            Self::Push => RegistryOperation::Push,
        }
    }
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
                    side.log_in_again().await?;
                }
            }
            other => return other,
        }
    }
}

impl Side {
    pub(crate) fn new(
        image: &crate::Image,
        tls: &TlsOptions,
        monolithic_push: bool,
        retry: RetryPolicy,
        progress: Arc<dyn Progress>,
    ) -> Self {
        let (host, plain_http) = match &image.endpoint {
            Some(Endpoint { host, plain_http }) => (host.clone(), *plain_http),
            None => (image.reference.domain().to_owned(), false),
        };
        let mut insecure = tls.insecure_hosts.clone();
        if plain_http {
            insecure.push(host.clone());
        }
        let config = oci_client::client::ClientConfig {
            protocol: oci_client::client::ClientProtocol::HttpsExcept(insecure),
            extra_root_certificates: tls
                .ca_pems
                .iter()
                .map(|pem| oci_client::client::Certificate {
                    encoding: oci_client::client::CertificateEncoding::Pem,
                    data: pem.clone(),
                })
                .collect(),
            use_monolithic_push: monolithic_push,
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            ..Default::default()
        };
        let auth = match &image.credentials {
            Credentials::Anonymous => RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Credentials::Bearer(token) => RegistryAuth::Bearer(token.clone()),
        };
        Self {
            client: oci_client::Client::new(config),
            auth,
            host,
            repository: image.reference.path().to_owned(),
            name: image.reference.name(),
            logged_in: Mutex::new(HashSet::new()),
            retry,
            progress,
        }
    }

    pub(crate) fn progress(&self) -> &dyn Progress {
        self.progress.as_ref()
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    fn by_tag(&self, tag: &str) -> Reference {
        Reference::with_tag(self.host.clone(), self.repository.clone(), tag.to_owned())
    }

    fn by_digest(&self, digest: &str) -> Reference {
        Reference::with_digest(
            self.host.clone(),
            self.repository.clone(),
            digest.to_owned(),
        )
    }

    fn reference(&self, tag_or_digest: &str) -> Reference {
        if tag_or_digest.contains(':') {
            self.by_digest(tag_or_digest)
        } else {
            self.by_tag(tag_or_digest)
        }
    }

    async fn log_in(&self, operation: Operation, again: bool) -> Result<(), CopyError> {
        let mut logged_in = self.logged_in.lock().await;
        if logged_in.contains(&operation) && !again {
            return Ok(());
        }
        let reference = self.by_tag("latest");
        self.client
            .store_auth_if_needed(reference.resolve_registry(), &self.auth)
            .await;
        self.client
            .auth(&reference, &self.auth, operation.oci())
            .await
            .map_err(|e| CopyError::from_oci(format!("log in to {}", self.host), e))?;
        logged_in.insert(operation);
        Ok(())
    }

    /// Log in, run `call`, retry what is transient, log in again once on a 401.
    async fn call<T, F, Fut>(&self, operation: Operation, mut call: F) -> Result<T, CopyError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CopyError>>,
    {
        with_fresh_logins(&[self], &self.retry, self.progress.as_ref(), || {
            let attempt = call();
            async move {
                self.log_in(operation, false).await?;
                attempt.await
            }
        })
        .await
    }

    /// The digest `tag_or_digest` names here, or `None` when there is no such manifest.
    pub(crate) async fn manifest_digest(
        &self,
        tag_or_digest: &str,
    ) -> Result<Option<String>, CopyError> {
        let action = format!("resolve {}:{tag_or_digest}", self.name);
        let reference = self.reference(tag_or_digest);
        self.call(Operation::Pull, || async {
            match self
                .client
                .fetch_manifest_digest(&reference, &self.auth)
                .await
            {
                Ok(digest) => Ok(Some(digest)),
                Err(e) => match CopyError::from_oci(&action, e) {
                    e if e.class == ErrorClass::NotFound => Ok(None),
                    e => Err(e),
                },
            }
        })
        .await
    }

    /// Pull a manifest (by digest: verified against it) and parse it.
    pub(crate) async fn pull_manifest(&self, tag_or_digest: &str) -> Result<Manifest, CopyError> {
        let action = format!("pull manifest {}:{tag_or_digest}", self.name);
        let reference = self.reference(tag_or_digest);
        let (bytes, digest) = self
            .call(Operation::Pull, || async {
                self.client
                    .pull_manifest_raw(&reference, &self.auth, &ACCEPTED)
                    .await
                    .map_err(|e| CopyError::from_oci(&action, e))
            })
            .await?;
        Manifest::parse(bytes, digest)
    }

    /// Write `manifest`'s exact bytes under `tag_or_digest`.
    pub(crate) async fn push_manifest(
        &self,
        manifest: &Manifest,
        tag_or_digest: &str,
    ) -> Result<(), CopyError> {
        let action = format!("push manifest {}:{tag_or_digest}", self.name);
        let reference = self.reference(tag_or_digest);
        let content_type: reqwest::header::HeaderValue = manifest
            .media_type
            .parse()
            .map_err(|_| CopyError::new(ErrorClass::Invalid, &action, "bad media type"))?;
        self.call(Operation::Push, || async {
            self.client
                .push_manifest_raw(&reference, manifest.bytes.clone(), content_type.clone())
                .await
                .map(drop)
                .map_err(|e| CopyError::from_oci(&action, e))
        })
        .await
    }

    /// Whether the repository exists at all. A repository that does not exist holds no blobs,
    /// so a copy into it need not ask for each one. Unknown answers count as "exists".
    pub(crate) async fn repository_exists(&self) -> Result<bool, CopyError> {
        let action = format!("list tags of {}", self.name);
        let reference = self.by_tag("latest");
        self.call(Operation::Pull, || async {
            match self
                .client
                .list_tags(&reference, &self.auth, Some(1), None)
                .await
            {
                Ok(_) => Ok(true),
                Err(e) => match CopyError::from_oci(&action, e) {
                    e if e.class == ErrorClass::NotFound => Ok(false),
                    e if e.is_transient() || e.class == ErrorClass::Unauthorized => Err(e),
                    _ => Ok(true),
                },
            }
        })
        .await
    }

    pub(crate) async fn blob_exists(&self, digest: &str) -> Result<bool, CopyError> {
        let action = format!("check blob {digest} in {}", self.name);
        let reference = self.by_tag("latest");
        self.call(Operation::Pull, || async {
            self.client
                .blob_exists(&reference, digest)
                .await
                .map_err(|e| CopyError::from_oci(&action, e))
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
        let reference = self.by_tag("latest");
        let from = Reference::with_tag(
            self.host.clone(),
            from_repository.to_owned(),
            "latest".into(),
        );
        self.call(Operation::Push, || async {
            match self.client.mount_blob(&reference, &from, digest).await {
                Ok(()) => Ok(true),
                // 202 (an upload session instead of a mount) or a refusal: copy it instead.
                Err(
                    OciDistributionError::SpecViolationError(_)
                    | OciDistributionError::RegistryError { .. },
                ) => Ok(false),
                Err(e) => match CopyError::from_oci(&action, e) {
                    e if e.is_transient() || e.class == ErrorClass::Unauthorized => Err(e),
                    _ => Ok(false),
                },
            }
        })
        .await
    }

    /// Open a verifying stream of blob `descriptor`. Not retried here: the caller retries the
    /// whole blob, stream and upload together.
    pub(crate) async fn pull_blob_once(
        &self,
        descriptor: &Descriptor,
    ) -> Result<futures::stream::BoxStream<'static, std::io::Result<Bytes>>, CopyError> {
        self.log_in(Operation::Pull, false).await?;
        let reference = self.by_tag("latest");
        let layer = oci_client::manifest::OciDescriptor {
            digest: descriptor.digest.clone(),
            size: i64::try_from(descriptor.size).unwrap_or(i64::MAX),
            media_type: descriptor.media_type.clone(),
            ..Default::default()
        };
        self.client
            .pull_blob_stream(&reference, &layer)
            .await
            .map(|sized| sized.stream)
            .map_err(|e| {
                CopyError::from_oci(
                    format!("pull blob {} from {}", descriptor.digest, self.name),
                    e,
                )
            })
    }

    /// Upload `size` bytes of `stream` as blob `digest` in one streamed request. Not retried
    /// here: a consumed stream cannot be replayed, so the caller retries the whole blob.
    pub(crate) async fn push_blob_once(
        &self,
        digest: &str,
        size: u64,
        stream: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    ) -> Result<(), CopyError> {
        self.log_in(Operation::Push, false).await?;
        let reference = self.by_tag("latest");
        let stream = stream.map(|chunk| chunk.map_err(OciDistributionError::IoError));
        self.client
            .push_blob_stream(&reference, stream, digest, Some(size))
            .await
            .map(drop)
            .map_err(|e| CopyError::from_oci(format!("push blob {digest} to {}", self.name), e))
    }

    async fn log_in_again(&self) -> Result<(), CopyError> {
        let operations: Vec<Operation> = self.logged_in.lock().await.iter().copied().collect();
        for operation in operations {
            self.log_in(operation, true).await?;
        }
        Ok(())
    }

    pub(crate) fn repository(&self) -> &str {
        &self.repository
    }

    pub(crate) fn host(&self) -> &str {
        &self.host
    }
}
