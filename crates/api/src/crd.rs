//! The `ImageMirror` custom resource: one public image kept in the private registry.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Platforms are written as Docker writes them: `os/arch` or `os/arch/variant`.
pub const PLATFORM_PATTERN: &str = r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$";

/// What to mirror, and how. The object name is derived from the normalized source
/// (`privateer image name REF`), so the webhook and a pre-warming user meet on one object.
// The printer columns repeat `type_ = "string"`, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "privateer.dev",
    version = "v1alpha1",
    kind = "ImageMirror",
    plural = "imagemirrors",
    shortname = "imir",
    category = "privateer",
    status = "ImageMirrorStatus",
    doc = "ImageMirror keeps one container image copied into the private registry.",
    printcolumn(name = "Source", type_ = "string", json_path = ".spec.source"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Digest", type_ = "string", json_path = ".status.shortDigest"),
    printcolumn(name = "Attempts", type_ = "integer", json_path = ".status.attempts"),
    printcolumn(name = "Pods", type_ = "integer", json_path = ".status.usage.pods"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Target",
        type_ = "string",
        json_path = ".status.targetImage",
        priority = 1
    ),
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct ImageMirrorSpec {
    /// The image to mirror, as a Pod would name it (`nginx:1.27`, `quay.io/org/app@sha256:…`).
    /// Immutable: declare another ImageMirror for another image.
    #[x_kube(validation = Rule::new("self == oldSelf").message(
        "spec.source is immutable: create a new ImageMirror for another image"
    ))]
    #[schemars(length(min = 1, max = 512))]
    pub source: String,

    /// Where to copy it, overriding the naming rule (`<registry>/<prefix>/<host>/<path>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub target: Option<String>,

    /// Platforms to copy (`linux/amd64`, `linux/arm64/v8`); empty copies all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$")))]
    pub platforms: Vec<String>,

    /// How often a tag is resolved upstream again, and copied again if it moved
    /// (a Go duration such as `6h`). Unset: the configured default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,9}(\.[0-9]{1,9})?(ns|us|µs|ms|s|m|h)){1,6}$"))]
    pub refresh_interval: Option<crate::Duration>,

    /// A `kubernetes.io/dockerconfigjson` Secret in privateer's namespace with credentials
    /// for a private source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretReference>,

    /// What happens to the mirrored image when this ImageMirror is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// A Secret in privateer's own namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SecretReference {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// What deleting an ImageMirror does to the copy.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Leave the mirrored image in the registry (running Pods may still use it).
    #[default]
    Retain,
    /// Delete the mirrored image from the registry.
    Delete,
}

/// Where a mirror stands.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Seen, not yet worked on.
    Pending,
    /// A copy is running or about to.
    Mirroring,
    /// The target holds the source digest.
    Ready,
    /// The copy failed: permanently, or too often in a row (slow retries go on).
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Mirroring => "Mirroring",
            Self::Ready => "Ready",
            Self::Failed => "Failed",
        }
    }
}

/// What the controller observed; written by server-side apply on the status subresource.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageMirrorStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The manifest digest the source resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_digest: Option<String>,
    /// The digest as `kubectl get` shows it (`sha256:` and 12 hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_digest: Option<String>,
    /// The mirrored image, pinned by digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_image: Option<String>,
    /// Ready, RepositoryReady, UpToDate and, where `sources.verify` covers the source, Verified.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Copy attempts since the last success.
    #[serde(default)]
    pub attempts: u32,
    /// What went wrong last, when the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the next attempt is due, while failing or waiting for a source's rate limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry_time: Option<Time>,
    /// When the target was last seen to hold the source digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// When the target was last found to still hold the image between refreshes
    /// (`controller.targetCheck`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_target_check_time: Option<Time>,
    /// The copy Job of the current or last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Platforms present in the target (`linux/amd64` …); empty for a single-platform image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copied_platforms: Vec<String>,
    /// Bytes of every blob the mirrored image references.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// Artifacts that came along with the image (signatures, attestations, SBOMs, theirs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrers: Option<u32>,
    /// Their kinds: `signature`, `attestation`, `sbom`, `artifact`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub referrer_kinds: Vec<String>,
    /// Artifacts of the source index left behind because `spec.platforms` wrote a new index,
    /// which they do not name (each platform's own artifacts still came along).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrers_omitted: Option<u32>,
    /// The Pods that use this image, as the controller counts them from its Pod watch
    /// (absent: no Pod has used it since the controller started counting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<MirrorUsage>,
}

/// How many Pods use a mirror, written by the controller (never on the admission path).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MirrorUsage {
    /// Pods that name this image now (those not yet Succeeded or Failed), by the source name
    /// or, once rewritten, by their `privateer.dev/original-images` annotation.
    #[serde(default)]
    pub pods: u32,
    /// When the count last changed while a Pod used the image, or when the last one went:
    /// with `pods: 0`, the time since which no Pod has used it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_time: Option<Time>,
}

impl ImageMirrorSpec {
    /// A spec for `source` with every other field at its default (what the webhook creates).
    pub fn for_source(source: &str) -> Self {
        Self {
            source: source.to_owned(),
            target: None,
            platforms: Vec::new(),
            refresh_interval: None,
            credentials_secret_ref: None,
            deletion_policy: DeletionPolicy::default(),
        }
    }
}

impl ImageMirror {
    /// An ImageMirror privateer records itself for `source`, annotated with who recorded it
    /// (`webhook`, `backfill`; see `names::ANNOTATION_CREATED_BY`).
    pub fn recorded_by(name: &str, source: &str, creator: &str) -> Self {
        let mut mirror = Self::new(name, ImageMirrorSpec::for_source(source));
        mirror.metadata.annotations = Some(std::collections::BTreeMap::from([(
            crate::names::ANNOTATION_CREATED_BY.to_owned(),
            creator.to_owned(),
        )]));
        mirror
    }

    /// The phase, `Pending` when no status has been written yet.
    pub fn phase(&self) -> Phase {
        self.status
            .as_ref()
            .and_then(|s| s.phase)
            .unwrap_or(Phase::Pending)
    }

    /// Is the `Verified` condition `True` (a `sources.verify` rule's signatures checked out)?
    pub fn is_verified(&self) -> bool {
        self.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == crate::names::condition::VERIFIED && c.status == "True")
        })
    }
}

/// `sha256:0123456789ab` from a full digest; other strings pass through.
pub fn short_digest(digest: &str) -> String {
    match digest.split_once(':') {
        Some((algorithm, hex)) => format!("{algorithm}:{}", &hex[..hex.len().min(12)]),
        None => digest.to_owned(),
    }
}
