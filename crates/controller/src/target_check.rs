//! `controller.targetCheck`: between refreshes a Ready mirror's image is looked for in the
//! target registry (one manifest HEAD by digest), at most `perMinute` checks across all mirrors. One
//! still there records `status.lastTargetCheckTime`; one gone (a lifecycle rule, a person, a
//! registry restore) is said in a `TargetMissing` Event and copied again through the
//! pipeline, which no longer finds it and so never claims Ready for what the target lacks.
//!
//! Before a gated Pod is released (`beforeRelease`), each mirror it needs that was not seen in
//! the target lately is looked for the same way, once for every Pod released meanwhile; one
//! gone is handed to the reconciler to copy again ([`Recopy`]) and the Pod waits for it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::Stream;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use privateer_api::ImageMirror;
use privateer_api::Phase;
use privateer_ecr::TargetProvider;
use privateer_image::{Digest, Reference};
use privateer_registry::{ErrorClass, Image};
use serde_json::json;
use tokio::sync::{OnceCell, broadcast};

use crate::Context;
use crate::metrics::Metrics;
use crate::plan::Plan;

/// Field manager of `lastTargetCheckTime` alone, so the reconciler's own status apply keeps
/// owning (and may drop) everything else.
const FIELD_MANAGER: &str = "privateer-target-check";

/// How long a check the target could not answer waits before it asks again.
const UNANSWERED: Duration = Duration::from_secs(60);

/// What a check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// The periodic check, within the `perMinute` budget: does the target still hold the digest
/// `mirror` was mirrored at?
pub async fn check(ctx: &Context, mirror: &ImageMirror, plan: &Plan) -> Found {
    let Some(digest) = recorded_digest(mirror) else {
        return Found::Missing;
    };
    if let Err(wait) = ctx.target_checks.take() {
        return Found::Later(wait);
    }
    look(ctx, mirror, plan, &digest).await
}

fn recorded_digest(mirror: &ImageMirror) -> Option<Digest> {
    let recorded = mirror.status.as_ref()?.source_digest.as_deref()?;
    Digest::parse(recorded).ok()
}

/// One manifest HEAD by digest on the target registry, where the kubelet pulls from; a
/// missing image is said in an Event, a present one recorded in `lastTargetCheckTime`.
async fn look(ctx: &Context, mirror: &ImageMirror, plan: &Plan, digest: &Digest) -> Found {
    let name = mirror.name_any();
    let pinned =
        Reference::from_parts(plan.target.domain(), plan.target.path(), None, Some(digest));
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

/// Mirrors found gone from the target outside their own reconcile (before a gate release):
/// the reconciler runs their whole pipeline on its next pass, woken through [`Recopy::woken`].
pub struct Recopy {
    due: Mutex<HashSet<String>>,
    wake: broadcast::Sender<String>,
}

impl Default for Recopy {
    fn default() -> Self {
        Self {
            due: Mutex::default(),
            wake: broadcast::channel(256).0,
        }
    }
}

impl Recopy {
    fn mark(&self, name: &str) {
        let fresh = self
            .due
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned());
        if fresh {
            // No reconciler listening (not the leader's term yet): it looks at every mirror
            // when its term starts, and finds this one due.
            let _ = self.wake.send(name.to_owned());
        }
    }

    /// Is `name` due for a copy? Taken once.
    pub fn take(&self, name: &str) -> bool {
        self.due
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
    }

    /// From now on, the name of each mirror marked due.
    pub fn woken(&self) -> impl Stream<Item = String> + Send + 'static {
        futures::stream::unfold(self.wake.subscribe(), |mut receiver| async move {
            loop {
                match receiver.recv().await {
                    Ok(name) => return Some((name, receiver)),
                    // The mirrors dropped here are still marked: their next pass copies.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }
}

/// A look at the target, shared by every Pod released while it is recent.
type SharedLook = Arc<OnceCell<Found>>;

/// The looks before release of the last `beforeRelease`, by mirror and digest: a Deployment
/// of hundreds released at once costs one HEAD per mirror.
#[derive(Default)]
pub struct ReleaseLooks(Mutex<HashMap<(String, String), (Instant, SharedLook)>>);

impl ReleaseLooks {
    fn entry(&self, key: (String, String), fresh_for: Duration) -> SharedLook {
        let mut looks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        looks.retain(|_, (at, _)| at.elapsed() < fresh_for);
        looks
            .entry(key)
            .or_insert_with(|| (Instant::now(), SharedLook::default()))
            .1
            .clone()
    }
}

/// Before a gated Pod is released: `None` when every Ready mirror of `mirrors` is in the target
/// (or was seen there within `beforeRelease`, or the target could not say), otherwise how long
/// to wait while the missing ones are copied again.
pub async fn hold_release<'a>(
    ctx: &Context,
    mirrors: impl IntoIterator<Item = &'a ImageMirror>,
) -> Option<Duration> {
    let fresh_for: Duration = ctx.config.controller.target_check.before_release.into();
    if fresh_for.is_zero() {
        return None;
    }
    let looks = mirrors
        .into_iter()
        .filter(|m| m.phase() == Phase::Ready && !seen_within(m, fresh_for, SystemTime::now()))
        .map(|mirror| before_release(ctx, mirror, fresh_for));
    let found = futures::future::join_all(looks).await;
    // The mirror's status changes as it is copied again, which wakes the Pod sooner.
    found
        .contains(&Found::Missing)
        .then_some(Duration::from_secs(15))
}

/// Was the mirror's image seen in the target (copied, refreshed or checked) within `window`?
fn seen_within(mirror: &ImageMirror, window: Duration, now: SystemTime) -> bool {
    let Some(status) = &mirror.status else {
        return false;
    };
    [&status.last_sync_time, &status.last_target_check_time]
        .into_iter()
        .flatten()
        .filter_map(|t| now.duration_since(SystemTime::from(t.0)).ok())
        .any(|ago| ago < window)
}

async fn before_release(ctx: &Context, mirror: &ImageMirror, fresh_for: Duration) -> Found {
    let name = mirror.name_any();
    let Some(digest) = recorded_digest(mirror) else {
        return Found::Present;
    };
    let Ok(plan) = crate::plan::plan(mirror, &ctx.naming, &ctx.config.copy.platforms) else {
        // An invalid spec is the reconciler's to report; it is not Ready for long.
        return Found::Present;
    };
    let shared = ctx
        .release_looks
        .entry((name.clone(), digest.to_string()), fresh_for);
    *shared
        .get_or_init(|| async {
            let found = look(ctx, mirror, &plan, &digest).await;
            if found == Found::Missing {
                ctx.recopy.mark(&name);
            }
            found
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use privateer_api::{ImageMirrorSpec, ImageMirrorStatus};

    fn ago(now: SystemTime, secs: u64) -> Option<Time> {
        let at = now - Duration::from_secs(secs);
        Some(Time(Timestamp::try_from(at).expect("a timestamp")))
    }

    #[test]
    fn seen_within_counts_the_later_of_sync_and_check() {
        let now = SystemTime::now();
        let window = Duration::from_secs(300);
        let mirror = |synced: Option<Time>, checked: Option<Time>| {
            let mut m = ImageMirror::new("m", ImageMirrorSpec::for_source("nginx:1.27"));
            m.status = Some(ImageMirrorStatus {
                last_sync_time: synced,
                last_target_check_time: checked,
                ..ImageMirrorStatus::default()
            });
            m
        };
        assert!(!seen_within(&mirror(None, None), window, now));
        assert!(seen_within(&mirror(ago(now, 10), None), window, now));
        assert!(!seen_within(&mirror(ago(now, 3600), None), window, now));
        assert!(seen_within(
            &mirror(ago(now, 3600), ago(now, 60)),
            window,
            now
        ));
        assert!(!seen_within(
            &mirror(ago(now, 3600), ago(now, 900)),
            window,
            now
        ));
    }

    #[test]
    fn a_recopy_is_taken_once_and_wakes_the_reconciler_once() {
        use futures::StreamExt;
        let recopy = Recopy::default();
        let mut woken = Box::pin(recopy.woken());
        recopy.mark("a");
        recopy.mark("a");
        assert!(recopy.take("a"));
        assert!(!recopy.take("a"));
        let first = futures::executor::block_on(woken.next());
        assert_eq!(first.as_deref(), Some("a"));
        recopy.mark("b");
        let second = futures::executor::block_on(woken.next());
        assert_eq!(
            second.as_deref(),
            Some("b"),
            "the second mark of a was not sent"
        );
    }
}
