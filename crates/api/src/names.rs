//! Names the parts of privateer share with each other and with users: one place, one spelling.

/// The API group of privateer's resources.
pub const API_GROUP: &str = "privateer.dev";
/// The CRD object name.
pub const CRD_NAME: &str = "imagemirrors.privateer.dev";

/// Pod annotation: container name → image it asked for, before privateer rewrote it (JSON).
pub const ANNOTATION_ORIGINAL_IMAGES: &str = "privateer.dev/original-images";
/// Pod annotation or namespace label `"true"`: privateer leaves the pod alone.
pub const SKIP: &str = "privateer.dev/skip";
/// The scheduling gate that holds a Pod until its mirrors are Ready.
pub const SCHEDULING_GATE: &str = "privateer.dev/mirror";
/// Pod label set with the gate, so the gate releaser watches only gated Pods.
pub const LABEL_GATED: &str = "privateer.dev/gated";
/// Label key prefix on copy Jobs, one label per ImageMirror a Job copies for: the key ends in
/// a hash of the mirror's name, the value is the digest's first 40 hex digits (a batched Job
/// copies for several mirrors; `privateer_controller::copy_member_label` spells it).
pub const LABEL_COPY_MEMBER_PREFIX: &str = "copy.privateer.dev/";
/// Annotation on copy Jobs: the ImageMirror names, in the order of the copy's pairs (JSON).
pub const ANNOTATION_COPIES: &str = "privateer.dev/copies";
/// Annotation on an ImageMirror: who declared it (`webhook`, `backfill`, or absent for users).
pub const ANNOTATION_CREATED_BY: &str = "privateer.dev/created-by";
/// Label on an ImageMirror: `"true"` lets `controller.retention` delete it when unused (a
/// mirror declared by hand is otherwise kept), `"false"` keeps one privateer recorded.
pub const LABEL_RETENTION: &str = "privateer.dev/retention";
/// Label on privateer's own Pods, so its webhook never rewrites itself.
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/part-of";
/// The value of [`LABEL_COMPONENT`] on privateer's objects.
pub const COMPONENT_VALUE: &str = "privateer";

/// Field manager for server-side apply.
pub const FIELD_MANAGER: &str = "privateer";
/// Finalizer set only on ImageMirrors with `deletionPolicy: Delete`.
pub const FINALIZER: &str = "privateer.dev/delete-mirrored-image";

/// Condition types on an ImageMirror.
pub mod condition {
    /// The target holds the source digest.
    pub const READY: &str = "Ready";
    /// The target repository exists with the configured settings.
    pub const REPOSITORY_READY: &str = "RepositoryReady";
    /// The target matches what the source tag points to now.
    pub const UP_TO_DATE: &str = "UpToDate";
    /// A `sources.verify` rule covers the source and a signature by one of its keys verified
    /// (True) or did not (False); absent when no rule covers it.
    pub const VERIFIED: &str = "Verified";
}

/// Condition reasons that users and tests match on.
pub mod reason {
    pub const INVALID_SOURCE: &str = "InvalidSource";
    pub const TAG_IMMUTABLE: &str = "TagImmutable";
    pub const SETTINGS_DRIFTED: &str = "SettingsDrifted";
    /// `sources.verify`: no signature to check.
    pub const SIGNATURE_MISSING: &str = "SignatureMissing";
    /// `sources.verify`: no signature verifies with the rule's keys for this digest.
    pub const SIGNATURE_INVALID: &str = "SignatureInvalid";
    /// `sources.verify`: a signature by one of the keys verified.
    pub const SIGNED: &str = "Signed";
    /// `sources.rateLimits`: waiting for the source host's budget (or its `Retry-After`).
    pub const RATE_LIMITED: &str = "RateLimited";
}

/// Exit statuses of `privateer copy` and `privateer target`, which the copy Job's
/// `podFailurePolicy` reads: only a transient failure is worth another Pod of the same Job.
pub mod exit {
    /// Input privateer refuses (bad reference, bad configuration, bad usage).
    pub const INVALID: u8 = 2;
    /// Not found, denied, digest mismatch, a signature that does not verify.
    pub const PERMANENT: u8 = 3;
    /// Network trouble, 5xx after retries: another try may succeed.
    pub const TRANSIENT: u8 = 4;
    /// The source asked to wait (429 or 503 with `Retry-After`) longer than a copy waits:
    /// the controller pauses that host for every mirror instead.
    pub const THROTTLED: u8 = 5;
}
