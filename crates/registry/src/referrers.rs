//! What travels with an image: its OCI 1.1 referrers (from the referrers API, else the
//! referrers tag schema's fallback tag `<alg>-<hex>`) and cosign's tags `<alg>-<hex>.sig`,
//! `.att`, `.sbom` — and theirs in turn (a signature on an SBOM), within `limits.referrers`
//! and `limits.referrerDepth`. Everything is found before anything is written.

use std::collections::{BTreeMap, HashSet};

use futures::{StreamExt, TryStreamExt, stream};
use privateer_image::Digest;
use serde_json::{Value, json};

use crate::error::{CopyError, ErrorClass};
use crate::manifest::{Body, DOCKER_MANIFEST, Manifest, OCI_INDEX, OCI_MANIFEST, sha256_digest};
use crate::progress::Event;
use crate::side::Side;

/// cosign's tag suffixes and the kind each holds.
const COSIGN_TAGS: [(&str, Kind); 3] = [
    ("sig", Kind::Signature),
    ("att", Kind::Attestation),
    ("sbom", Kind::Sbom),
];

/// What an artifact's manifest may be: an index of artifacts is not followed.
const IMAGE_MANIFESTS: [&str; 2] = [OCI_MANIFEST, DOCKER_MANIFEST];

/// What an attached artifact is, for the report (a low-cardinality name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Signature,
    Attestation,
    Sbom,
    Artifact,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Signature => "signature",
            Self::Attestation => "attestation",
            Self::Sbom => "sbom",
            Self::Artifact => "artifact",
        }
    }

    /// An OCI 1.1 referrer's kind, from its artifact type (and, for a sigstore bundle, the
    /// predicate cosign records in an annotation: only `cosign/sign` is a signature).
    fn of_referrer(manifest: &Manifest) -> Self {
        let t = manifest
            .artifact_type()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if t.starts_with("application/vnd.dev.sigstore.bundle") {
            let predicate = manifest
                .json()
                .get("annotations")
                .and_then(|a| a.get("dev.sigstore.bundle.predicateType"))
                .and_then(Value::as_str);
            match predicate {
                None | Some("https://sigstore.dev/cosign/sign/v1") => Self::Signature,
                Some(_) => Self::Attestation,
            }
        } else if t.contains("notary.signature") {
            Self::Signature
        } else if t.contains("in-toto") || t.contains("dsse") {
            Self::Attestation
        } else if t.contains("spdx") || t.contains("cyclonedx") || t.contains("sbom") {
            Self::Sbom
        } else {
            Self::Artifact
        }
    }
}

/// How an artifact is found, and so how it is written to the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Via {
    /// Under one of cosign's tags.
    CosignTag(String),
    /// As an OCI 1.1 referrer (its `subject` names the digest).
    Referrer,
}

/// One artifact attached to a digest of the copy.
#[derive(Clone, Debug)]
pub(crate) struct Attached {
    pub manifest: Manifest,
    /// The digest it is attached to.
    pub subject: String,
    pub via: Via,
    pub kind: Kind,
}

/// Everything attached to `subjects` on `src`, parents before what refers to them.
pub(crate) async fn discover(
    src: &Side,
    subjects: Vec<String>,
    parallelism: usize,
) -> Result<Vec<Attached>, CopyError> {
    let limits = src.limits().clone();
    let mut seen: HashSet<String> = subjects.iter().cloned().collect();
    let mut found: Vec<Attached> = Vec::new();
    let mut frontier = subjects;
    let mut depth = 0;
    while !frontier.is_empty() {
        let mut level: Vec<Attached> = stream::iter(frontier)
            .map(|subject| async move { lookup(src, subject).await })
            .buffered(parallelism.max(1))
            .try_collect::<Vec<Vec<Attached>>>()
            .await?
            .into_iter()
            .flatten()
            .collect();
        level.retain(|a| seen.insert(a.manifest.digest.clone()));
        if level.is_empty() {
            break;
        }
        depth += 1;
        if depth > limits.referrer_depth {
            return Err(beyond(
                &level[0],
                format!(
                    "it is nested {depth} artifacts deep, over the limit limits.referrerDepth = {}",
                    limits.referrer_depth
                ),
            ));
        }
        if found.len() + level.len() > limits.referrers {
            return Err(beyond(
                &level[0],
                format!(
                    "more than {} artifacts refer to the image, the limit limits.referrers",
                    limits.referrers
                ),
            ));
        }
        frontier = level.iter().map(|a| a.manifest.digest.clone()).collect();
        found.extend(level);
    }
    Ok(found)
}

fn beyond(attached: &Attached, message: String) -> CopyError {
    CopyError::new(
        ErrorClass::Invalid,
        format!(
            "find what refers to {} ({})",
            attached.subject, attached.manifest.digest
        ),
        message,
    )
}

/// What is attached to one digest: cosign's three tags and the referrers, looked up at once.
async fn lookup(src: &Side, subject: String) -> Result<Vec<Attached>, CopyError> {
    let Ok(digest) = Digest::parse(&subject) else {
        return Ok(Vec::new());
    };
    let tags = COSIGN_TAGS.map(|(suffix, kind)| {
        let tag = digest.cosign_tag(suffix);
        let subject = subject.clone();
        async move {
            let pulled = pull_if_present(src, &tag).await?;
            Ok::<_, CopyError>(match pulled {
                Some(manifest) if matches!(manifest.body, Body::Image { .. }) => Some(Attached {
                    manifest,
                    subject,
                    via: Via::CosignTag(tag),
                    kind,
                }),
                Some(other) => {
                    warn(
                        src,
                        format!(
                            "{}:{tag} is a {}, not an artifact: left out",
                            src.name(),
                            other.media_type
                        ),
                    );
                    None
                }
                None => None,
            })
        }
    });
    let (tagged, referred) = futures::join!(
        futures::future::try_join_all(tags),
        referrers(src, &subject, &digest)
    );
    Ok(tagged?.into_iter().flatten().chain(referred?).collect())
}

/// The manifest under `tag`, if there is one: a HEAD first, since registries with pull limits
/// (Docker Hub) count manifest GETs, not HEADs, and most of these tags do not exist.
async fn pull_if_present(side: &Side, tag: &str) -> Result<Option<Manifest>, CopyError> {
    match side.manifest_digest(tag).await? {
        None => Ok(None),
        Some(digest) => side.pull_manifest(&digest).await.map(Some),
    }
}

/// A 404 is "nothing there", not an error.
fn optional(pulled: Result<Manifest, CopyError>) -> Result<Option<Manifest>, CopyError> {
    match pulled {
        Ok(manifest) => Ok(Some(manifest)),
        Err(e) if e.class == ErrorClass::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The OCI 1.1 referrers of `subject`: from the referrers API, else the fallback tag.
async fn referrers(src: &Side, subject: &str, digest: &Digest) -> Result<Vec<Attached>, CopyError> {
    let limits = src.limits();
    let index = match src.referrers(subject).await? {
        Some(bytes) => {
            let digest = sha256_digest(&bytes);
            Manifest::parse(bytes, digest, limits).map_err(|e| {
                CopyError::new(e.class, format!("list referrers of {subject}"), e.message)
            })?
        }
        None => {
            let tag = digest.referrers_tag();
            let Some(index) = pull_if_present(src, &tag).await? else {
                return Ok(Vec::new());
            };
            if index.digest == subject {
                // An anchor an older privateer wrote there: the image itself, no referrers.
                return Ok(Vec::new());
            }
            if !matches!(index.body, Body::Index { .. }) {
                warn(
                    src,
                    format!(
                        "{}:{tag} is a {}, not a referrers index: no referrers read from it",
                        src.name(),
                        index.media_type
                    ),
                );
                return Ok(Vec::new());
            }
            index
        }
    };
    // Checked before pulling any: a hostile index may list a thousand.
    if index.entries().len() > limits.referrers {
        return Err(CopyError::new(
            ErrorClass::Invalid,
            format!("list referrers of {subject}"),
            format!(
                "{} artifacts refer to it, over the limit limits.referrers = {}",
                index.entries().len(),
                limits.referrers
            ),
        ));
    }
    let mut found = Vec::new();
    for entry in index.entries() {
        if !IMAGE_MANIFESTS.contains(&entry.media_type.as_str()) {
            warn(
                src,
                format!(
                    "referrer {} of {subject} is a {}, which cannot be copied: left out",
                    entry.digest, entry.media_type
                ),
            );
            continue;
        }
        let manifest = src.pull_manifest(&entry.digest).await?;
        // A fallback index is only a list someone wrote: the artifact itself must say.
        if manifest.subject() != Some(subject) {
            warn(
                src,
                format!(
                    "{} is listed as a referrer of {subject} but names another subject: left out",
                    manifest.digest
                ),
            );
            continue;
        }
        let kind = Kind::of_referrer(&manifest);
        found.push(Attached {
            manifest,
            subject: subject.to_owned(),
            via: Via::Referrer,
            kind,
        });
    }
    Ok(found)
}

fn warn(side: &Side, message: String) {
    side.progress().event(Event::Warning { message });
}

/// Where the target lacks the referrers API: add `added` to the fallback index of `subject`,
/// keeping every entry already there. A tag that holds something else is left alone.
pub(crate) async fn add_to_fallback_index(
    dst: &Side,
    subject: &str,
    added: &[&Manifest],
) -> Result<(), CopyError> {
    let tag = Digest::parse(subject)
        .map_err(|e| CopyError::new(ErrorClass::Invalid, "index referrers", e.to_string()))?
        .referrers_tag();
    let mut entries: Vec<Value> = match optional(dst.pull_manifest(&tag).await)? {
        None => Vec::new(),
        Some(existing) if existing.media_type == OCI_INDEX => existing
            .json()
            .get("manifests")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        Some(existing) => {
            warn(
                dst,
                format!(
                    "{}:{tag} holds a {}, not a referrers index: left alone, so clients without \
                     the referrers API will not find {} artifact(s) of {subject}",
                    dst.name(),
                    existing.media_type,
                    added.len()
                ),
            );
            return Ok(());
        }
    };
    let before = entries.len();
    for manifest in added {
        if entries
            .iter()
            .any(|e| e.get("digest").and_then(Value::as_str) == Some(manifest.digest.as_str()))
        {
            continue;
        }
        entries.push(descriptor_of(manifest));
    }
    if entries.len() == before {
        return Ok(());
    }
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
    let bytes = bytes::Bytes::from(serde_json::to_vec(&index).unwrap_or_default());
    let digest = sha256_digest(&bytes);
    let manifest = Manifest::parse(bytes, digest, dst.limits())?;
    dst.push_manifest(&manifest, &tag).await?;
    Ok(())
}

/// A referrers index entry for `manifest`, as the referrers API would list it.
fn descriptor_of(manifest: &Manifest) -> Value {
    let mut entry = BTreeMap::new();
    entry.insert("mediaType", json!(manifest.media_type));
    entry.insert("digest", json!(manifest.digest));
    entry.insert("size", json!(manifest.bytes.len()));
    if let Some(t) = manifest.artifact_type() {
        entry.insert("artifactType", json!(t));
    }
    if let Some(a) = manifest.json().get("annotations").filter(|a| a.is_object()) {
        entry.insert("annotations", a.clone());
    }
    json!(entry)
}

/// The report's kinds: sorted, each once.
pub(crate) fn kinds(attached: &[Attached]) -> Vec<String> {
    let mut kinds: Vec<Kind> = attached.iter().map(|a| a.kind).collect();
    kinds.sort();
    kinds.dedup();
    kinds.into_iter().map(|k| k.as_str().to_owned()).collect()
}
