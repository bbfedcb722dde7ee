//! `controller.retention`: mirrors no Pod has used for `unusedFor` are deleted, so recorded
//! mirrors do not pile up forever. Only mirrors privateer recorded itself (webhook,
//! backfill) unless a label says otherwise; the mirror's `deletionPolicy` (its finalizer)
//! decides what happens to the image. Decided from the Pod count the controller holds, which
//! is trusted only after a full list of Pods.

use std::time::{Duration, SystemTime};

use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use privateer_api::{ImageMirror, Phase, names};

use crate::{Context, Error};

/// Is `mirror`, used by `pods` Pods now, to be deleted at `now`?
pub fn due(mirror: &ImageMirror, pods: u32, unused_for: Duration, now: SystemTime) -> bool {
    if unused_for.is_zero() || pods > 0 || mirror.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let label = mirror
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(names::LABEL_RETENTION));
    let recorded = mirror
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(names::ANNOTATION_CREATED_BY))
        .is_some_and(|by| by == "webhook" || by == "backfill");
    let eligible = match label.map(String::as_str) {
        Some("true") => true,
        Some("false") => false,
        _ => recorded,
    };
    // A copy under way finishes first (its Job is owned by the mirror).
    if !eligible || mirror.phase() == Phase::Mirroring {
        return false;
    }
    let usage = mirror.status.as_ref().and_then(|s| s.usage.as_ref());
    // The object still says Pods use it: its last Pod went after the last usage write, and
    // the time on it is when the count last changed, not when the mirror went unused. The
    // write of 0 Pods (within the usage flush) carries that time.
    if usage.is_some_and(|u| u.pods > 0) {
        return false;
    }
    let since = usage
        .and_then(|u| u.last_used_time.as_ref())
        .or(mirror.metadata.creation_timestamp.as_ref());
    since.is_some_and(|t| {
        now.duration_since(SystemTime::from(t.0))
            .is_ok_and(|idle| idle >= unused_for)
    })
}

/// How often the retention pass looks: often enough for short settings, at most each minute.
pub fn pass_interval(unused_for: Duration) -> Duration {
    (unused_for / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Delete `mirror`, only as the controller saw it (a mirror changed meanwhile is kept).
pub async fn retire(ctx: &Context, mirror: &ImageMirror) -> Result<(), Error> {
    let unused_for = ctx.config.controller.retention.unused_for;
    let api: Api<ImageMirror> = Api::all(ctx.client.clone());
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: mirror.uid(),
            resource_version: mirror.resource_version(),
        }),
        ..DeleteParams::default()
    };
    match api.delete(&mirror.name_any(), &params).await {
        Ok(_) => {}
        // Gone already, or changed since the controller looked: the next pass decides again.
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    tracing::info!(mirror = %mirror.name_any(), %unused_for, "retired: unused");
    crate::metrics::Metrics::count(&ctx.metrics.retired, "deleted");
    let note = format!(
        "no Pod has used this image for {unused_for} (controller.retention.unusedFor): ImageMirror deleted, deletionPolicy {:?} decides the image",
        mirror.spec.deletion_policy
    );
    crate::events::publish(
        ctx,
        &mirror.object_ref(&()),
        EventType::Normal,
        "Retired",
        Some(note),
        "Retire",
    )
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use privateer_api::{ImageMirrorSpec, ImageMirrorStatus, MirrorUsage};

    const NOW: u64 = 1_800_000_000;
    const DAY: Duration = Duration::from_secs(86_400);

    fn time(ago: Duration) -> Time {
        let at = i64::try_from(NOW - ago.as_secs()).expect("a time");
        Time(Timestamp::from_second(at).expect("a time"))
    }

    fn mirror(
        creator: Option<&str>,
        label: Option<&str>,
        last_used: Option<Duration>,
    ) -> ImageMirror {
        let mut mirror = match creator {
            Some(by) => ImageMirror::recorded_by("m", "nginx:1.27", by),
            None => ImageMirror::new("m", ImageMirrorSpec::for_source("nginx:1.27")),
        };
        if let Some(value) = label {
            mirror.metadata.labels =
                Some([(names::LABEL_RETENTION.to_owned(), value.to_owned())].into());
        }
        mirror.metadata.creation_timestamp = Some(time(10 * DAY));
        mirror.status = Some(ImageMirrorStatus {
            phase: Some(Phase::Ready),
            usage: last_used.map(|ago| MirrorUsage {
                pods: 0,
                last_used_time: Some(time(ago)),
            }),
            ..ImageMirrorStatus::default()
        });
        mirror
    }

    #[test]
    fn recorded_mirrors_unused_long_enough_go_declared_ones_stay() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(NOW);
        let week = 7 * DAY;
        let cases = [
            (
                "recorded, used 8 days ago",
                mirror(Some("webhook"), None, Some(8 * DAY)),
                0,
                true,
            ),
            (
                "recorded, used yesterday",
                mirror(Some("webhook"), None, Some(DAY)),
                0,
                false,
            ),
            (
                "recorded, never used, created 10 days ago",
                mirror(Some("backfill"), None, None),
                0,
                true,
            ),
            (
                "recorded, in use",
                mirror(Some("webhook"), None, Some(8 * DAY)),
                1,
                false,
            ),
            (
                "recorded, labelled to stay",
                mirror(Some("webhook"), Some("false"), None),
                0,
                false,
            ),
            (
                "declared by hand",
                mirror(None, None, Some(8 * DAY)),
                0,
                false,
            ),
            (
                "declared, labelled for retention",
                mirror(None, Some("true"), Some(8 * DAY)),
                0,
                true,
            ),
        ];
        for (case, mirror, pods, expected) in cases {
            assert_eq!(due(&mirror, pods, week, now), expected, "{case}");
            assert!(
                !due(&mirror, pods, Duration::ZERO, now),
                "{case}: off by default"
            );
        }
        let mut just_unused = mirror(Some("webhook"), None, Some(8 * DAY));
        if let Some(usage) = just_unused.status.as_mut().and_then(|s| s.usage.as_mut()) {
            usage.pods = 2;
        }
        assert!(
            !due(&just_unused, 0, week, now),
            "its last Pod just went: the time on the object is when two began using it"
        );
        let mut copying = mirror(Some("webhook"), None, Some(8 * DAY));
        copying.status.as_mut().expect("status").phase = Some(Phase::Mirroring);
        assert!(
            !due(&copying, 0, week, now),
            "a copy under way finishes first"
        );
    }

    #[test]
    fn the_pass_runs_often_enough_for_short_settings() {
        assert_eq!(
            pass_interval(Duration::from_secs(8)),
            Duration::from_secs(2)
        );
        assert_eq!(pass_interval(7 * DAY), Duration::from_secs(60));
        assert_eq!(
            pass_interval(Duration::from_millis(100)),
            Duration::from_secs(1)
        );
    }
}
