//! Status as the reconciler's one output: built whole from the outcome of a pass, written with
//! server-side apply on the status subresource, an Event on every phase transition.

use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use privateer_api::crd::short_digest;
use privateer_api::names::{condition, reason};
use privateer_api::{ImageMirror, ImageMirrorStatus, Phase};
use serde_json::json;

use crate::{Context, Error};

/// What one reconcile pass found.
pub enum Outcome {
    /// The spec cannot work; waits for a change.
    Invalid(String),
    /// Not found, denied, digest mismatch: waits for a change.
    Permanent {
        reason: String,
        message: String,
    },
    /// Retried after `retry_in`; `failed` once attempts reached the limit (slow retries go on).
    Transient {
        reason: String,
        message: String,
        attempts: u32,
        retry_in: Duration,
        failed: bool,
    },
    /// Waiting `retry_in` for the source host's budget (`sources.rateLimits`) or pause.
    RateLimited {
        message: String,
        retry_in: Duration,
    },
    /// A copy Job runs.
    Mirroring {
        job: String,
        digest: String,
        drift: Vec<String>,
    },
    Ready(Mirrored),
}

const FIELD_MANAGER: &str = "privateer-controller";

/// What a successful copy established.
#[derive(Default)]
pub struct Mirrored {
    pub target_image: String,
    pub source_digest: String,
    pub platforms: Vec<String>,
    pub size_bytes: Option<i64>,
    /// The `sources.verify` key whose signature of the source digest verified.
    pub verified_by: Option<String>,
    /// What came along: artifacts found, their kinds, those left behind by a platform filter.
    pub referrers: usize,
    pub referrer_kinds: Vec<String>,
    pub referrers_omitted: usize,
}

impl Mirrored {
    /// The digest the target image is pinned by.
    pub fn written_digest(&self) -> &str {
        self.target_image
            .rsplit_once('@')
            .map_or(self.target_image.as_str(), |(_, digest)| digest)
    }
}

pub async fn write_status(
    ctx: &Context,
    mirror: &ImageMirror,
    outcome: Outcome,
) -> Result<(), Error> {
    let previous = mirror.status.clone().unwrap_or_default();
    apply_status(ctx, mirror, build(mirror, &previous, outcome)).await
}

/// Write `status` (server-side apply, forced: privateer owns it) and record phase changes.
pub async fn apply_status(
    ctx: &Context,
    mirror: &ImageMirror,
    status: ImageMirrorStatus,
) -> Result<(), Error> {
    apply_status_fields(ctx, &mirror.name_any(), FIELD_MANAGER, json!(status)).await?;
    ctx.written
        .wrote(mirror, &status, std::time::Instant::now());
    let (before, after) = (mirror.phase(), status.phase.unwrap_or(Phase::Pending));
    if before != after || mirror.status.is_none() {
        let kind = if after == Phase::Failed {
            EventType::Warning
        } else {
            EventType::Normal
        };
        let note = status
            .last_error
            .clone()
            .or_else(|| status.target_image.clone());
        let regarding = mirror.object_ref(&());
        crate::events::publish(ctx, &regarding, kind, after.as_str(), note, "Reconcile").await;
    }
    Ok(())
}

/// Server-side apply of `fields` on the status subresource of the mirror `name`, as
/// `field_manager`, forced (privateer owns what it writes); fields other managers own stay.
pub async fn apply_status_fields(
    ctx: &Context,
    name: &str,
    field_manager: &str,
    fields: serde_json::Value,
) -> Result<(), kube::Error> {
    let api: Api<ImageMirror> = Api::all(ctx.client.clone());
    let patch = json!({
        "apiVersion": "privateer.dev/v1alpha1",
        "kind": "ImageMirror",
        "status": fields,
    });
    api.patch_status(
        name,
        &PatchParams::apply(field_manager).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// The status after `outcome`. Pure, so every transition is testable.
pub fn build(
    mirror: &ImageMirror,
    previous: &ImageMirrorStatus,
    outcome: Outcome,
) -> ImageMirrorStatus {
    let generation = mirror.metadata.generation;
    let now = Time(Timestamp::now());
    let mut status = ImageMirrorStatus {
        observed_generation: generation,
        attempts: previous.attempts,
        source_digest: previous.source_digest.clone(),
        short_digest: previous.short_digest.clone(),
        target_image: previous.target_image.clone(),
        last_sync_time: previous.last_sync_time.clone(),
        copied_platforms: previous.copied_platforms.clone(),
        size_bytes: previous.size_bytes,
        job_name: previous.job_name.clone(),
        ..ImageMirrorStatus::default()
    };
    let mut conditions = Vec::new();
    // Verified: set by a verified copy or a refused one, kept through other steps.
    let mut verified = previous
        .conditions
        .iter()
        .find(|c| c.type_ == condition::VERIFIED)
        .cloned();
    let failure = matches!(
        outcome,
        Outcome::Invalid(_) | Outcome::Permanent { .. } | Outcome::Transient { .. }
    );
    let (phase, ready, why, message) = match outcome {
        Outcome::Invalid(message) => (
            Phase::Failed,
            false,
            reason::INVALID_SOURCE.to_owned(),
            message,
        ),
        Outcome::Permanent { reason, message } => {
            if matches!(
                reason.as_str(),
                reason::SIGNATURE_MISSING | reason::SIGNATURE_INVALID
            ) {
                verified = Some(condition_of(
                    condition::VERIFIED,
                    false,
                    &reason,
                    &message,
                    generation,
                    previous,
                    &now,
                ));
            }
            (Phase::Failed, false, reason, message)
        }
        Outcome::Transient {
            reason,
            message,
            attempts,
            retry_in,
            failed,
        } => {
            status.attempts = attempts;
            let at = SystemTime::now() + retry_in;
            status.next_retry_time = Timestamp::try_from(at).ok().map(Time);
            let phase = if failed {
                Phase::Failed
            } else {
                Phase::Mirroring
            };
            (phase, false, reason, message)
        }
        Outcome::RateLimited { message, retry_in } => {
            let at = SystemTime::now() + retry_in;
            status.next_retry_time = Timestamp::try_from(at).ok().map(Time);
            (Phase::Pending, false, reason::RATE_LIMITED.into(), message)
        }
        Outcome::Mirroring { job, digest, drift } => {
            status.job_name = Some(job.clone());
            status.source_digest = Some(digest.clone());
            status.short_digest = Some(short_digest(&digest));
            conditions.push(condition_of(
                condition::REPOSITORY_READY,
                true,
                if drift.is_empty() {
                    "Ensured"
                } else {
                    reason::SETTINGS_DRIFTED
                },
                &if drift.is_empty() {
                    "the repository exists with the configured settings".to_owned()
                } else {
                    format!(
                        "settings differ from the configuration: {}",
                        drift.join("; ")
                    )
                },
                generation,
                previous,
                &now,
            ));
            (
                Phase::Mirroring,
                false,
                "Copying".into(),
                format!("copy Job {job} runs"),
            )
        }
        Outcome::Ready(ready) => {
            status.attempts = 0;
            status.short_digest = Some(short_digest(&ready.source_digest));
            status.source_digest = Some(ready.source_digest);
            status.target_image = Some(ready.target_image.clone());
            status.copied_platforms = ready.platforms;
            if ready.size_bytes.is_some() {
                status.size_bytes = ready.size_bytes;
            }
            status.last_sync_time = Some(now.clone());
            status.referrers = u32::try_from(ready.referrers).ok().filter(|n| *n > 0);
            status.referrer_kinds = ready.referrer_kinds;
            status.referrers_omitted = u32::try_from(ready.referrers_omitted)
                .ok()
                .filter(|n| *n > 0);
            verified = ready.verified_by.as_ref().map(|key| {
                condition_of(
                    condition::VERIFIED,
                    true,
                    reason::SIGNED,
                    &format!(
                        "a cosign signature of {} verifies with {key}",
                        status.source_digest.as_deref().unwrap_or_default()
                    ),
                    generation,
                    previous,
                    &now,
                )
            });
            conditions.push(condition_of(
                condition::UP_TO_DATE,
                true,
                "Mirrored",
                "the target holds what the source names",
                generation,
                previous,
                &now,
            ));
            (
                Phase::Ready,
                true,
                "Mirrored".into(),
                format!("the target holds {}", ready.target_image),
            )
        }
    };
    if failure {
        status.last_error = Some(message.clone());
    }
    conditions.push(condition_of(
        condition::READY,
        ready,
        &why,
        &message,
        generation,
        previous,
        &now,
    ));
    conditions.extend(verified);
    status.phase = Some(phase);
    status.conditions = conditions;
    status
}

/// Refresh found the source tag moved, but the target's tags are immutable: the mirror stays
/// Ready on the old digest and says so (UpToDate=False, reason TagImmutable).
pub fn tag_moved(
    mirror: &ImageMirror,
    previous: &ImageMirrorStatus,
    upstream_digest: &str,
    message: &str,
) -> ImageMirrorStatus {
    let generation = mirror.metadata.generation;
    let now = Time(Timestamp::now());
    let mut status = previous.clone();
    status.observed_generation = generation;
    status.phase = Some(Phase::Ready);
    status.last_error = None;
    status
        .conditions
        .retain(|c| c.type_ != condition::UP_TO_DATE);
    status.conditions.push(condition_of(
        condition::UP_TO_DATE,
        false,
        reason::TAG_IMMUTABLE,
        &format!("the source now points to {upstream_digest}: {message}"),
        generation,
        previous,
        &now,
    ));
    status
}

fn condition_of(
    kind: &str,
    value: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    previous: &ImageMirrorStatus,
    now: &Time,
) -> Condition {
    let status = if value { "True" } else { "False" };
    // The transition time moves only when the status does.
    let since = previous
        .conditions
        .iter()
        .find(|c| c.type_ == kind && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: kind.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.chars().take(1024).collect(),
        observed_generation: generation,
        last_transition_time: since,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use privateer_api::ImageMirrorSpec;

    fn mirror(status: Option<ImageMirrorStatus>) -> ImageMirror {
        let mut mirror = ImageMirror::new("nginx", ImageMirrorSpec::for_source("nginx:1.27"));
        mirror.metadata.generation = Some(3);
        mirror.status = status;
        mirror
    }

    fn ready_condition(status: &ImageMirrorStatus) -> &Condition {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == condition::READY)
            .expect("a Ready condition")
    }

    #[test]
    fn a_copy_runs_then_succeeds() {
        let m = mirror(None);
        let running = build(
            &m,
            &ImageMirrorStatus::default(),
            Outcome::Mirroring {
                job: "copy-nginx-1".into(),
                digest: "sha256:0123456789abcdef".into(),
                drift: vec!["scanOnPush: false, configured true".into()],
            },
        );
        assert_eq!(running.phase, Some(Phase::Mirroring));
        assert_eq!(running.short_digest.as_deref(), Some("sha256:0123456789ab"));
        assert!(
            running
                .conditions
                .iter()
                .any(|c| c.reason == reason::SETTINGS_DRIFTED)
        );
        assert_eq!(running.last_error, None);

        let m = mirror(Some(running.clone()));
        let ready = build(
            &m,
            &running,
            Outcome::Ready(Mirrored {
                target_image: "r/mirror/nginx:1.27@sha256:01".into(),
                source_digest: "sha256:01".into(),
                platforms: vec!["linux/amd64".into()],
                size_bytes: Some(10),
                ..Mirrored::default()
            }),
        );
        assert_eq!(ready.phase, Some(Phase::Ready));
        assert!(
            ready
                .conditions
                .iter()
                .any(|c| c.type_ == condition::UP_TO_DATE && c.status == "True")
        );
        assert_eq!(ready.attempts, 0);
        assert_eq!(ready.job_name.as_deref(), Some("copy-nginx-1"));
        assert!(ready.last_sync_time.is_some());
        let condition = ready_condition(&ready);
        assert_eq!(
            (condition.status.as_str(), condition.observed_generation),
            ("True", Some(3))
        );
    }

    #[test]
    fn transient_failures_back_off_then_fail_and_keep_transition_times() {
        let m = mirror(None);
        let transient = |attempts, failed| Outcome::Transient {
            reason: "SourceUnavailable".into(),
            message: "connection refused".into(),
            attempts,
            retry_in: Duration::from_secs(10),
            failed,
        };
        let first = build(&m, &ImageMirrorStatus::default(), transient(1, false));
        assert_eq!(first.phase, Some(Phase::Mirroring));
        assert_eq!(first.attempts, 1);
        assert!(first.next_retry_time.is_some());
        assert_eq!(first.last_error.as_deref(), Some("connection refused"));
        let then = build(&mirror(Some(first.clone())), &first, transient(3, true));
        assert_eq!(then.phase, Some(Phase::Failed));
        assert_eq!(
            ready_condition(&then).last_transition_time,
            ready_condition(&first).last_transition_time,
            "Ready stayed False: its transition time stays"
        );
    }

    #[test]
    fn a_moved_tag_in_an_immutable_repository_stays_ready_and_says_so() {
        let m = mirror(None);
        let ready = build(
            &m,
            &ImageMirrorStatus::default(),
            Outcome::Ready(Mirrored {
                target_image: "r/mirror/nginx:1.27@sha256:01".into(),
                source_digest: "sha256:01".into(),
                platforms: Vec::new(),
                size_bytes: None,
                ..Mirrored::default()
            }),
        );
        let moved = tag_moved(
            &mirror(Some(ready.clone())),
            &ready,
            "sha256:02",
            "declare a new ImageMirror",
        );
        assert_eq!(moved.phase, Some(Phase::Ready));
        assert_eq!(moved.target_image, ready.target_image);
        assert_eq!(moved.source_digest.as_deref(), Some("sha256:01"));
        let up_to_date = moved
            .conditions
            .iter()
            .find(|c| c.type_ == condition::UP_TO_DATE)
            .expect("UpToDate");
        assert_eq!(
            (up_to_date.status.as_str(), up_to_date.reason.as_str()),
            ("False", reason::TAG_IMMUTABLE)
        );
        assert!(up_to_date.message.contains("sha256:02"));
        assert_eq!(ready_condition(&moved).status, "True");
    }

    #[test]
    fn a_mirror_waiting_for_its_budget_is_pending_with_its_start_time() {
        let waiting = build(
            &mirror(None),
            &ImageMirrorStatus::default(),
            Outcome::RateLimited {
                message: "docker.io is rate-limited".into(),
                retry_in: Duration::from_secs(600),
            },
        );
        assert_eq!(waiting.phase, Some(Phase::Pending));
        assert_eq!(ready_condition(&waiting).reason, reason::RATE_LIMITED);
        assert_eq!(ready_condition(&waiting).status, "False");
        assert_eq!(waiting.last_error, None);
        let at = SystemTime::from(waiting.next_retry_time.expect("a start time").0);
        let left = at.duration_since(SystemTime::now()).expect("ahead");
        assert!(left > Duration::from_secs(590), "{left:?}");
    }

    #[test]
    fn permanent_and_invalid_fail_without_retry_time() {
        let m = mirror(None);
        let invalid = build(
            &m,
            &ImageMirrorStatus::default(),
            Outcome::Invalid("spec.source: bad".into()),
        );
        assert_eq!(invalid.phase, Some(Phase::Failed));
        assert_eq!(ready_condition(&invalid).reason, reason::INVALID_SOURCE);
        assert_eq!(invalid.next_retry_time, None);
        let missing = build(
            &m,
            &ImageMirrorStatus::default(),
            Outcome::Permanent {
                reason: "SourceNotFound".into(),
                message: "gone".into(),
            },
        );
        assert_eq!(missing.phase, Some(Phase::Failed));
        assert_eq!(missing.attempts, 0);
    }

    #[test]
    fn verified_is_set_by_a_verified_copy_kept_while_copying_and_false_when_refused() {
        let verified = |status: &ImageMirrorStatus| {
            status
                .conditions
                .iter()
                .find(|c| c.type_ == condition::VERIFIED)
                .map(|c| (c.status.clone(), c.reason.clone()))
        };
        let m = mirror(None);
        let ready = build(
            &m,
            &ImageMirrorStatus::default(),
            Outcome::Ready(Mirrored {
                target_image: "r/mirror/app:1@sha256:01".into(),
                source_digest: "sha256:01".into(),
                verified_by: Some("cosign-keys/cosign.pub".into()),
                referrers: 2,
                referrer_kinds: vec!["signature".into(), "sbom".into()],
                ..Mirrored::default()
            }),
        );
        assert_eq!(
            verified(&ready),
            Some(("True".into(), reason::SIGNED.into()))
        );
        assert_eq!(ready.referrers, Some(2));
        assert_eq!(ready.referrer_kinds, ["signature", "sbom"]);
        let copying = build(
            &mirror(Some(ready.clone())),
            &ready,
            Outcome::Mirroring {
                job: "copy-app-2".into(),
                digest: "sha256:02".into(),
                drift: Vec::new(),
            },
        );
        assert_eq!(
            verified(&copying),
            verified(&ready),
            "kept while a Job runs"
        );
        let refused = build(
            &mirror(Some(copying.clone())),
            &copying,
            Outcome::Permanent {
                reason: reason::SIGNATURE_INVALID.into(),
                message: "none of 1 signature(s) verifies".into(),
            },
        );
        assert_eq!(refused.phase, Some(Phase::Failed));
        assert_eq!(
            verified(&refused),
            Some(("False".into(), reason::SIGNATURE_INVALID.into()))
        );
        let unverified = build(
            &mirror(None),
            &ImageMirrorStatus::default(),
            Outcome::Ready(Mirrored::default()),
        );
        assert_eq!(verified(&unverified), None, "no rule, no condition");
    }
}
