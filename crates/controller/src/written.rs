//! What this controller last wrote on each mirror's status, until its cache shows it. A pass
//! reads the mirror from the watch cache; just after a status write, the cache may still
//! hold the object from before it (the write's watch event is on its way). Acting on that
//! object repeats work the write already moved past: a finished copy Job started again, a
//! budget turn taken twice. resourceVersions may only be compared for equality, so the
//! comparison is of the status fields this controller owns: nobody else writes them.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use kube::ResourceExt;
use privateer_api::{ImageMirror, ImageMirrorStatus};

/// How long a pass waits for the cache to show a write. A status changed by hand (or a field
/// the API server rewrites) would otherwise hold the mirror forever; after this, the cache is
/// taken as it is.
pub const CATCH_UP: Duration = Duration::from_secs(15);
/// Past this many writes not yet seen, old ones are dropped (deleted mirrors).
const SWEEP_ABOVE: usize = 4096;

/// The status written last, by mirror UID.
#[derive(Default)]
pub struct WrittenStatus {
    by_uid: Mutex<HashMap<String, (u64, Instant)>>,
}

/// The status fields the controller's own field manager writes, hashed as the API server
/// stores them (times to the second). `usage` and `lastTargetCheckTime` are other managers'.
fn fingerprint(status: Option<&ImageMirrorStatus>) -> u64 {
    let mut own = status.cloned().unwrap_or_default();
    own.usage = None;
    own.last_target_check_time = None;
    let mut hasher = DefaultHasher::new();
    serde_json::to_vec(&own)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

impl WrittenStatus {
    fn book(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Instant)>> {
        self.by_uid.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `status` was written on `mirror` at `now`.
    pub fn wrote(&self, mirror: &ImageMirror, status: &ImageMirrorStatus, now: Instant) {
        let Some(uid) = mirror.uid() else { return };
        let mut book = self.book();
        if book.len() >= SWEEP_ABOVE {
            book.retain(|_, (_, at)| now.duration_since(*at) < CATCH_UP);
        }
        book.insert(uid, (fingerprint(Some(status)), now));
    }

    /// Is `mirror` (from the cache) older than the last status written on it? `false` once it
    /// shows that status, or `CATCH_UP` after the write.
    pub fn behind(&self, mirror: &ImageMirror, now: Instant) -> bool {
        let Some(uid) = mirror.uid() else {
            return false;
        };
        let mut book = self.book();
        let Some((written, at)) = book.get(&uid).copied() else {
            return false;
        };
        let seen = fingerprint(mirror.status.as_ref()) == written;
        if seen {
            book.remove(&uid);
            return false;
        }
        if now.duration_since(at) >= CATCH_UP {
            book.remove(&uid);
            tracing::info!(
                mirror = %mirror.name_any(),
                "the status written {}s ago is not what the watch shows (changed by hand?): acting on what it shows",
                CATCH_UP.as_secs()
            );
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use privateer_api::{ImageMirrorSpec, MirrorUsage, Phase};

    fn mirror(status: Option<ImageMirrorStatus>) -> ImageMirror {
        let mut mirror = ImageMirror::new("m", ImageMirrorSpec::for_source("nginx:1.27"));
        mirror.metadata.uid = Some("uid-1".into());
        mirror.status = status;
        mirror
    }

    fn status(phase: Phase, job: &str) -> ImageMirrorStatus {
        ImageMirrorStatus {
            phase: Some(phase),
            job_name: Some(job.into()),
            // Sub-second precision, which the API server does not keep.
            next_retry_time: Some(Time(
                Timestamp::from_millisecond(1_800_000_000_123).expect("a time"),
            )),
            ..ImageMirrorStatus::default()
        }
    }

    /// The object as a watch delivers it after the write: through JSON, with other managers'
    /// fields beside the controller's.
    fn as_stored(mut status: ImageMirrorStatus) -> ImageMirror {
        status.usage = Some(MirrorUsage {
            pods: 3,
            last_used_time: None,
        });
        let json = serde_json::to_value(&status).expect("json");
        mirror(Some(serde_json::from_value(json).expect("a status")))
    }

    #[test]
    fn a_cached_object_from_before_the_write_is_behind_until_it_shows_it() {
        let book = WrittenStatus::default();
        let start = Instant::now();
        let before = mirror(Some(status(Phase::Mirroring, "copy-1")));
        assert!(!book.behind(&before, start), "nothing written yet");

        let written = status(Phase::Failed, "copy-1");
        book.wrote(&before, &written, start);
        let soon = start + Duration::from_secs(1);
        assert!(
            book.behind(&before, soon),
            "the cache still has the old status"
        );
        assert!(book.behind(&mirror(None), soon));
        assert!(
            !book.behind(&as_stored(written), soon),
            "the object shows the write (times to the second, usage beside it)"
        );
        assert!(!book.behind(&before, soon), "seen once: forgotten");
    }

    #[test]
    fn a_write_never_seen_stops_holding_after_the_catch_up_time() {
        let book = WrittenStatus::default();
        let start = Instant::now();
        let edited = mirror(Some(status(Phase::Ready, "by-hand")));
        book.wrote(&edited, &status(Phase::Failed, "copy-1"), start);
        assert!(book.behind(&edited, start + CATCH_UP - Duration::from_secs(1)));
        assert!(!book.behind(&edited, start + CATCH_UP));
        assert!(!book.behind(&edited, start + CATCH_UP + Duration::from_secs(1)));
    }

    #[test]
    fn another_object_of_the_same_name_is_not_held() {
        let book = WrittenStatus::default();
        let start = Instant::now();
        book.wrote(&mirror(None), &status(Phase::Failed, "copy-1"), start);
        let mut recreated = mirror(None);
        recreated.metadata.uid = Some("uid-2".into());
        assert!(!book.behind(&recreated, start));
    }
}
