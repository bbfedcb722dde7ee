//! The requests that find what is attached to an image: the OCI 1.1 referrers API and small
//! blobs read whole (signature payloads, bundles).

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http::{Method, StatusCode, header};

use super::{Operation, Side};
use crate::blob::stream_error;
use crate::error::{CopyError, ErrorClass};
use crate::manifest::{Descriptor, OCI_INDEX};
use crate::wire::{read_limited, status_error};

impl Side {
    /// The referrers index the registry's referrers API answers for `digest`, or `None` when
    /// the registry has no such API (404, 400, 405, 501: the referrers tag schema applies).
    /// Read within `limits.manifestBytes`.
    pub(crate) async fn referrers(&self, digest: &str) -> Result<Option<Bytes>, CopyError> {
        let action = format!("list referrers of {}", self.at(digest));
        self.call(|| async {
            let response = self
                .send(Operation::Pull, &action, |c| {
                    c.request(Method::GET, self.url(&format!("referrers/{digest}")))
                        .header(header::ACCEPT, OCI_INDEX)
                })
                .await?;
            match response.status() {
                status if status.is_success() => {
                    let declared = response
                        .headers()
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let body = read_limited(
                        response,
                        self.limits.manifest_bytes,
                        &action,
                        "limits.manifestBytes",
                    )
                    .await?;
                    // A registry that routes the path elsewhere (an HTML page, a catch-all)
                    // has no referrers API either.
                    Ok((declared.starts_with(OCI_INDEX)
                        || declared.starts_with("application/json"))
                    .then_some(body))
                }
                StatusCode::NOT_FOUND
                | StatusCode::BAD_REQUEST
                | StatusCode::METHOD_NOT_ALLOWED
                | StatusCode::NOT_IMPLEMENTED => Ok(None),
                _ => Err(status_error(response, &self.host, &action).await),
            }
        })
        .await
    }

    /// A small blob read whole, within `limit` bytes: the blob stream copies use, so size
    /// and digest are checked the same way (and the declared size first).
    pub(crate) async fn pull_small_blob(
        &self,
        descriptor: &Descriptor,
        limit: u64,
        limit_name: &str,
    ) -> Result<Bytes, CopyError> {
        if descriptor.size > limit {
            return Err(CopyError::new(
                ErrorClass::Invalid,
                format!("pull blob {} from {}", descriptor.digest, self.name),
                format!(
                    "it declares {} bytes, over the limit {limit_name} = {limit}",
                    descriptor.size
                ),
            ));
        }
        self.call(|| async {
            let mut stream = self.pull_blob_once(descriptor).await?;
            let mut body = BytesMut::new();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| stream_error(&descriptor.digest, &self.name, &e))?;
                body.extend_from_slice(&chunk);
            }
            Ok(body.freeze())
        })
        .await
    }
}
