//! The copy's second half for what travels with the image: checking its signature before
//! anything is written, and writing its artifacts after the image they refer to.

use std::collections::BTreeMap;
use std::sync::Arc;

use privateer_cosign::{Candidate, PublicKeys, Verdict};
use privateer_image::Digest;
use serde_json::Value;

use crate::CopyOptions;
use crate::blob::copy_blob;
use crate::copy::{declared_total, within_resolve_deadline};
use crate::error::{CopyError, ErrorClass};
use crate::manifest::{Body, Manifest};
use crate::progress::{Event, Progress};
use crate::referrers::{Attached, Kind, Via, add_to_fallback_index};
use crate::side::Side;

/// The annotation of a `.sig` layer holding the base64 signature of the layer (the payload).
const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
const BUNDLE_TYPE: &str = "application/vnd.dev.sigstore.bundle";

/// The key that verified a cosign signature of `subject` among `attached`; else a
/// `SignatureMissing` or `SignatureInvalid` error naming what was checked.
pub(crate) async fn verify_signed(
    src: &Side,
    attached: &[Attached],
    subject: &str,
    keys: &PublicKeys,
) -> Result<String, CopyError> {
    let action = format!("verify the signature of {}@{subject}", src.name());
    let mut candidates = Vec::new();
    for artifact in attached
        .iter()
        .filter(|a| a.subject == subject && a.kind == Kind::Signature)
    {
        let Body::Image { layers, .. } = &artifact.manifest.body else {
            continue;
        };
        let annotated = artifact
            .manifest
            .json()
            .get("layers")
            .and_then(Value::as_array);
        for (i, layer) in layers.iter().enumerate() {
            if candidates.len() >= src.limits().referrers {
                break;
            }
            let annotation = annotated
                .and_then(|all| all.get(i))
                .and_then(|l| l.get("annotations"))
                .and_then(|a| a.get(SIGNATURE_ANNOTATION))
                .and_then(Value::as_str);
            let origin = match &artifact.via {
                Via::CosignTag(tag) => format!("{tag} layer {i}"),
                Via::Referrer => format!("referrer {}", artifact.manifest.digest),
            };
            let bundle = artifact.via == Via::Referrer
                && artifact
                    .manifest
                    .artifact_type()
                    .is_some_and(|t| t.starts_with(BUNDLE_TYPE));
            if annotation.is_none() && !bundle {
                continue;
            }
            let bytes = src
                .pull_small_blob(layer, src.limits().signature_bytes, "limits.signatureBytes")
                .await?
                .to_vec();
            candidates.push(match annotation {
                Some(signature) if !bundle => Candidate::SimpleSigning {
                    origin,
                    payload: bytes,
                    signature: signature.to_owned(),
                },
                _ => Candidate::Bundle {
                    origin,
                    json: bytes,
                },
            });
        }
    }
    match privateer_cosign::verify(keys, subject, &candidates) {
        Verdict::Verified { origin, key } => {
            src.progress().event(Event::Verified {
                key: key.clone(),
                origin,
            });
            Ok(key)
        }
        Verdict::Missing => {
            let tag = Digest::parse(subject)
                .map(|d| d.cosign_tag("sig"))
                .unwrap_or_default();
            Err(CopyError::new(
                ErrorClass::SignatureMissing,
                action,
                format!(
                    "no cosign signature to check: nothing under {}:{tag} and no sigstore bundle \
                     among its referrers",
                    src.name()
                ),
            ))
        }
        Verdict::Invalid(rejections) => {
            let reasons: Vec<String> = rejections
                .iter()
                .map(|r| format!("{}: {}", r.origin, r.reason))
                .collect();
            Err(CopyError::new(
                ErrorClass::SignatureInvalid,
                action,
                format!(
                    "none of {} signature(s) verifies: {}",
                    rejections.len(),
                    reasons.join("; ")
                ),
            ))
        }
    }
}

/// Write `attached` to the target after the image, parents first; what the target holds
/// already is left as it is. Returns how many were written.
pub(crate) async fn write(
    src: &Side,
    dst: &Side,
    attached: &[Attached],
    options: &CopyOptions,
    progress: Arc<dyn Progress>,
) -> Result<usize, CopyError> {
    let (_abort, aborted) = tokio::sync::watch::channel(false);
    let mut copied = 0;
    // Referrers the target did not index itself (no referrers API), by subject.
    let mut unindexed: BTreeMap<&str, Vec<&Manifest>> = BTreeMap::new();
    for artifact in attached {
        let manifest = &artifact.manifest;
        let at = match &artifact.via {
            Via::CosignTag(tag) => tag.clone(),
            Via::Referrer => manifest.digest.clone(),
        };
        let present = dst.manifest_digest(&at).await?;
        if present.as_deref() == Some(manifest.digest.as_str()) {
            continue;
        }
        // Checked sums: sizes come from the source.
        declared_total(
            manifest.blobs(),
            options.limits.total_bytes,
            &manifest.digest,
        )?;
        for blob in manifest.blobs() {
            copy_blob(src, dst, blob, false, options, progress.clone(), &aborted).await?;
        }
        match dst.push_manifest(manifest, &at).await {
            Ok(indexed) => {
                copied += 1;
                progress.event(Event::Pushed {
                    reference: format!("{}:{at}", dst.name()).replace(":sha256:", "@sha256:"),
                    digest: manifest.digest.clone(),
                });
                if artifact.via == Via::Referrer && !indexed {
                    unindexed
                        .entry(&artifact.subject)
                        .or_default()
                        .push(manifest);
                }
            }
            // An immutable tag (ECR) that already holds other signatures keeps them.
            Err(e) if present.is_some() && !e.is_transient() => {
                progress.event(Event::Warning {
                    message: format!(
                        "{}:{at} already holds {} and was not replaced ({e}): the source's {} is not in the target",
                        dst.name(),
                        present.unwrap_or_default(),
                        artifact.kind.as_str()
                    ),
                });
            }
            Err(e) => return Err(e),
        }
    }
    for (subject, manifests) in unindexed {
        add_to_fallback_index(dst, subject, &manifests).await?;
    }
    Ok(copied)
}

/// Check, writing nothing, that `digest` of `image` (what the caller resolved it to) carries
/// a cosign signature by one of `keys`; the key's name. What the controller does before it
/// starts a copy. Ends within `timeouts.resolve`.
pub async fn verify(
    image: &crate::Image,
    digest: &str,
    options: &CopyOptions,
    keys: &PublicKeys,
) -> Result<String, CopyError> {
    let side = Side::new(image, options, Arc::new(crate::Silent))?;
    let action = format!("verify {}@{digest}", image.reference.name());
    within_resolve_deadline(&side, options, &action, async {
        let attached =
            crate::referrers::discover(&side, vec![digest.to_owned()], options.parallelism).await?;
        verify_signed(&side, &attached, digest, keys).await
    })
    .await
}
