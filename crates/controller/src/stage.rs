//! Where a reconcile starts, decided from the ImageMirror alone (its spec generation and
//! status) with no I/O: wait out a backoff or a refresh interval, wait for a spec change,
//! only watch the copy Job already under way, or run the whole pipeline. Table-tested.

use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use privateer_api::config::CopyExecutor;
use privateer_api::{ImageMirror, Phase};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Nothing to do for this long (a backoff, or until the next refresh).
    Wait(Duration),
    /// Nothing to do until the spec changes (a permanent failure, or Ready with no refresh).
    AwaitChange,
    /// The copy Job for this digest is under way: only its end is news. The source, the
    /// target and the repository were checked when it was created.
    WatchJob { digest: String },
    /// Ready, and due for `controller.targetCheck`: is the image still in the target?
    CheckTarget,
    /// Resolve, check the target, ensure the repository, copy.
    Run,
}

/// The stage of `mirror` at `now`; `refresh` is how often a Ready mirror is re-resolved
/// (`None`: never, as for a digest-pinned source), `target_check` how often its image is
/// looked for in the target in between (`None`: never).
pub fn stage(
    mirror: &ImageMirror,
    executor: CopyExecutor,
    refresh: Option<Duration>,
    target_check: Option<Duration>,
    now: SystemTime,
) -> Stage {
    let status = mirror.status.clone().unwrap_or_default();
    // A spec changed since the status was written: everything is news.
    if status.observed_generation != mirror.metadata.generation {
        return Stage::Run;
    }
    if let Some(wait) = until(status.next_retry_time.as_ref(), now) {
        return Stage::Wait(wait);
    }
    match mirror.phase() {
        Phase::Failed if status.next_retry_time.is_none() => Stage::AwaitChange,
        Phase::Ready => {
            let since = |at: Option<&Time>| {
                at.and_then(|t| now.duration_since(SystemTime::from(t.0)).ok())
                    .unwrap_or_default()
            };
            let synced = since(status.last_sync_time.as_ref());
            // A refresh also sees the target: the check counts from the later of the two.
            let checked = synced.min(since(
                status
                    .last_target_check_time
                    .as_ref()
                    .or(status.last_sync_time.as_ref()),
            ));
            let refresh_in = refresh.map(|every| every.saturating_sub(synced));
            let check_in = target_check.map(|every| every.saturating_sub(checked));
            match (refresh_in, check_in) {
                (Some(left), _) if left.is_zero() => Stage::Run,
                (_, Some(left)) if left.is_zero() => Stage::CheckTarget,
                (None, None) => Stage::AwaitChange,
                (a, b) => Stage::Wait(a.into_iter().chain(b).min().unwrap_or_default()),
            }
        }
        // A retry after a failure (nextRetryTime set) goes the whole way again.
        Phase::Mirroring
            if status.next_retry_time.is_none()
                && executor == CopyExecutor::Job
                && status.job_name.is_some() =>
        {
            match status.source_digest {
                Some(digest) => Stage::WatchJob { digest },
                None => Stage::Run,
            }
        }
        _ => Stage::Run,
    }
}

/// How long until `at`, if it is still ahead of `now`.
fn until(at: Option<&Time>, now: SystemTime) -> Option<Duration> {
    SystemTime::from(at?.0)
        .duration_since(now)
        .ok()
        .filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;
    use privateer_api::{ImageMirrorSpec, ImageMirrorStatus};

    const NOW: Duration = Duration::from_secs(1_800_000_000);

    fn time(offset_secs: i64) -> Time {
        let at = NOW.as_secs() as i64 + offset_secs;
        Time(k8s_openapi::jiff::Timestamp::from_second(at).expect("a timestamp"))
    }

    fn mirror(generation: i64, status: ImageMirrorStatus) -> ImageMirror {
        let mut mirror = ImageMirror::new("m", ImageMirrorSpec::for_source("nginx:1.27"));
        mirror.metadata.generation = Some(generation);
        mirror.status = Some(status);
        mirror
    }

    fn observed(phase: Phase) -> ImageMirrorStatus {
        ImageMirrorStatus {
            observed_generation: Some(1),
            phase: Some(phase),
            ..ImageMirrorStatus::default()
        }
    }

    #[test]
    fn every_stage_the_guards_encode() {
        let now = SystemTime::UNIX_EPOCH + NOW;
        let hour = Some(Duration::from_secs(3600));
        let job = ImageMirrorStatus {
            job_name: Some("copy-m-1".into()),
            source_digest: Some("sha256:1".into()),
            ..observed(Phase::Mirroring)
        };
        let cases: Vec<(&str, ImageMirror, CopyExecutor, Option<Duration>, Stage)> = vec![
            (
                "a new object",
                mirror(1, ImageMirrorStatus::default()),
                CopyExecutor::Job,
                hour,
                Stage::Run,
            ),
            (
                "a changed spec",
                mirror(2, observed(Phase::Failed)),
                CopyExecutor::Job,
                hour,
                Stage::Run,
            ),
            (
                "a backoff under way",
                mirror(
                    1,
                    ImageMirrorStatus {
                        next_retry_time: Some(time(30)),
                        ..observed(Phase::Pending)
                    },
                ),
                CopyExecutor::Job,
                hour,
                Stage::Wait(Duration::from_secs(30)),
            ),
            (
                "a backoff over",
                mirror(
                    1,
                    ImageMirrorStatus {
                        next_retry_time: Some(time(-1)),
                        ..observed(Phase::Failed)
                    },
                ),
                CopyExecutor::Job,
                hour,
                Stage::Run,
            ),
            (
                "failed for good",
                mirror(1, observed(Phase::Failed)),
                CopyExecutor::Job,
                hour,
                Stage::AwaitChange,
            ),
            (
                "ready, never refreshed",
                mirror(1, observed(Phase::Ready)),
                CopyExecutor::Job,
                None,
                Stage::AwaitChange,
            ),
            (
                "ready, refresh not due",
                mirror(
                    1,
                    ImageMirrorStatus {
                        last_sync_time: Some(time(-600)),
                        ..observed(Phase::Ready)
                    },
                ),
                CopyExecutor::Job,
                hour,
                Stage::Wait(Duration::from_secs(3000)),
            ),
            (
                "ready, refresh due",
                mirror(
                    1,
                    ImageMirrorStatus {
                        last_sync_time: Some(time(-7200)),
                        ..observed(Phase::Ready)
                    },
                ),
                CopyExecutor::Job,
                hour,
                Stage::Run,
            ),
            (
                "a Job under way",
                mirror(1, job.clone()),
                CopyExecutor::Job,
                hour,
                Stage::WatchJob {
                    digest: "sha256:1".into(),
                },
            ),
            (
                "mirroring inline",
                mirror(1, job.clone()),
                CopyExecutor::Inline,
                hour,
                Stage::Run,
            ),
            (
                "a Job retried after a failure",
                mirror(
                    1,
                    ImageMirrorStatus {
                        next_retry_time: Some(time(-1)),
                        ..job
                    },
                ),
                CopyExecutor::Job,
                hour,
                Stage::Run,
            ),
            (
                "mirroring, no Job yet",
                mirror(1, observed(Phase::Mirroring)),
                CopyExecutor::Job,
                hour,
                Stage::Run,
            ),
        ];
        for (case, mirror, executor, refresh, expected) in cases {
            assert_eq!(
                stage(&mirror, executor, refresh, None, now),
                expected,
                "{case}"
            );
        }
    }

    #[test]
    fn a_ready_mirror_is_checked_in_the_target_between_refreshes() {
        let now = SystemTime::UNIX_EPOCH + NOW;
        let (hour, day) = (Duration::from_secs(3600), Duration::from_secs(86400));
        let ready = |synced: i64, checked: Option<i64>| {
            mirror(
                1,
                ImageMirrorStatus {
                    last_sync_time: Some(time(synced)),
                    last_target_check_time: checked.map(time),
                    ..observed(Phase::Ready)
                },
            )
        };
        let at = |m: &ImageMirror, refresh: Option<Duration>| {
            stage(m, CopyExecutor::Job, refresh, Some(hour), now)
        };
        // Synced 10 minutes ago: the check waits 50 minutes, before the refresh.
        assert_eq!(
            at(&ready(-600, None), Some(day)),
            Stage::Wait(Duration::from_secs(3000))
        );
        // Synced 2 hours ago, never checked: due. A pinned source (no refresh) too.
        assert_eq!(at(&ready(-7200, None), Some(day)), Stage::CheckTarget);
        assert_eq!(at(&ready(-7200, None), None), Stage::CheckTarget);
        // Checked 20 minutes ago: the next in 40.
        assert_eq!(
            at(&ready(-7200, Some(-1200)), None),
            Stage::Wait(Duration::from_secs(2400))
        );
        // The refresh is due: it sees the target itself.
        assert_eq!(at(&ready(-90000, Some(-60)), Some(day)), Stage::Run);
    }
}
