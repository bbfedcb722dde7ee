//! `controller.targetCheck`: between refreshes a Ready mirror's image is looked for in the
//! target registry (one manifest HEAD by digest), at most `perMinute` checks across all mirrors. One
//! still there records `status.lastTargetCheckTime`; one gone (a lifecycle rule, a person, a
//! registry restore) is said in a `TargetMissing` Event and copied again through the
//! pipeline, which no longer finds it and so never claims Ready for what the target lacks.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use privateer_api::ImageMirror;
use privateer_ecr::TargetProvider;
use privateer_image::{Digest, Reference};
use privateer_registry::{ErrorClass, Image};
use serde_json::json;

use crate::Context;
use crate::metrics::Metrics;
use crate::plan::Plan;

/// Field manager of `lastTargetCheckTime` alone, so the reconciler's own status apply keeps
/// owning (and may drop) everything else.
const FIELD_MANAGER: &str = "privateer-target-check";

/// How long a check the target could not answer waits before it asks again.
const UNANSWERED: Duration = Duration::from_secs(60);

/// What a check found.
pub enum Found {
    /// The image is there.
    Present,
    /// The target lacks it: copy again.
    Missing,
    /// Over the budget, or the target could not answer: ask again after this long.
    Later(Duration),
}

/// A fixed one-minute window of `per_minute` checks.
pub struct Budget {
    per_minute: u32,
    window: Mutex<(Instant, u32)>,
}

impl Budget {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: per_minute.max(1),
            window: Mutex::new((Instant::now(), 0)),
        }
    }

    /// Take one check, or say how long until the next window.
    fn take(&self) -> Result<(), Duration> {
        let minute = Duration::from_secs(60);
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = window.0.elapsed();
        if elapsed >= minute {
            *window = (Instant::now(), 0);
        }
        if window.1 < self.per_minute {
            window.1 += 1;
            Ok(())
        } else {
            Err(minute.saturating_sub(elapsed).max(Duration::from_secs(1)))
        }
    }
}

/// Check that the target still holds the digest `mirror` was mirrored at: one manifest HEAD
/// by digest on the target registry, where the kubelet pulls from.
pub async fn check(ctx: &Context, mirror: &ImageMirror, plan: &Plan) -> Found {
    let recorded = mirror
        .status
        .as_ref()
        .and_then(|s| s.source_digest.as_deref());
    let Some(digest) = recorded.and_then(|d| Digest::parse(d).ok()) else {
        return Found::Missing;
    };
    if let Err(wait) = ctx.target_checks.take() {
        return Found::Later(wait);
    }
    let name = mirror.name_any();
    let pinned = Reference::from_parts(
        plan.target.domain(),
        plan.target.path(),
        None,
        Some(&digest),
    );
    let (target, access) = match (pinned, crate::reconcile::target_image(ctx, plan).await) {
        (Ok(pinned), Ok((target, access))) => (
            Image {
                reference: pinned,
                ..target
            },
            access,
        ),
        (Err(e), _) => return unanswered(ctx, &name, &e),
        (_, Err(e)) => return unanswered(ctx, &name, &e),
    };
    match privateer_registry::head(&target, &ctx.copy_options).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            let note = format!(
                "{} no longer holds {digest}: copying it again",
                plan.target.path()
            );
            tracing::warn!(mirror = %name, "{note}");
            let regarding = mirror.object_ref(&());
            crate::events::publish(
                ctx,
                &regarding,
                EventType::Warning,
                "TargetMissing",
                Some(note),
                "CheckTarget",
            )
            .await;
            // Its finished copy Job would answer for the new copy: the mirror leaves it.
            crate::copy_jobs::forget(ctx, &name, &digest.to_string()).await;
            Metrics::count(&ctx.metrics.target_checks, "missing");
            return Found::Missing;
        }
        Err(e) => {
            if e.class == ErrorClass::Unauthorized {
                ctx.provider.access_rejected(&access);
            }
            return unanswered(ctx, &name, &e);
        }
    }
    Metrics::count(&ctx.metrics.target_checks, "present");
    let now = json!({"lastTargetCheckTime": Time(Timestamp::now())});
    let written = crate::status::apply_status_fields(ctx, &name, FIELD_MANAGER, now).await;
    if let Err(e) = written {
        tracing::info!(mirror = %name, "target check time: {e}");
    }
    Found::Present
}

/// The target could not say: counted, logged, asked again later.
fn unanswered(ctx: &Context, mirror: &str, error: &dyn std::fmt::Display) -> Found {
    Metrics::count(&ctx.metrics.target_checks, "unanswered");
    tracing::info!(mirror, "target check: {error}");
    Found::Later(UNANSWERED)
}
