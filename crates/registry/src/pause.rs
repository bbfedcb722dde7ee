//! `Retry-After`: a registry that answers 429 or 503 with it is left alone for that long by
//! every copy of this process (the controller's inline copies share one), not only by the one
//! that was told. Longer than a retry would wait, the copy fails at once as throttled, saying
//! when the registry will take requests again, and the caller's backoff takes over.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use http::HeaderMap;

use crate::error::{CopyError, ErrorClass};

/// The longest `Retry-After` taken as given: a day. Longer is treated as a day.
const LONGEST: Duration = Duration::from_secs(24 * 60 * 60);

/// When each registry host takes requests again.
static PAUSED: LazyLock<Mutex<HashMap<String, Instant>>> = LazyLock::new(Mutex::default);

/// The wait a 429 or 503 answer asks for: delta-seconds or an HTTP date, within a day.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(SystemTime::now())
            .unwrap_or_default(),
    };
    Some(wait.min(LONGEST))
}

/// Leave `host` alone for `wait` (a later pause already recorded stands): also called by the
/// controller for a copy Job's 429, so its other mirrors of the host wait too.
pub fn pause(host: &str, wait: Duration) {
    let until = Instant::now() + wait;
    let mut paused = PAUSED.lock().unwrap_or_else(PoisonError::into_inner);
    let entry = paused.entry(host.to_owned()).or_insert(until);
    if *entry < until {
        *entry = until;
    }
    // Expired pauses go: the map holds the hosts paused now, not every host ever seen.
    let now = Instant::now();
    paused.retain(|_, until| *until > now);
}

/// How long `host` is still paused, if it is.
pub fn paused_for(host: &str) -> Option<Duration> {
    let until = *PAUSED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(host)?;
    Some(until.saturating_duration_since(Instant::now())).filter(|left| !left.is_zero())
}

/// Wait out a pause of `host` no longer than `patience`; a longer one is a throttled error.
pub(crate) async fn wait(host: &str, patience: Duration, action: &str) -> Result<(), CopyError> {
    let Some(left) = paused_for(host) else {
        return Ok(());
    };
    if left > patience {
        return Err(CopyError::new(
            ErrorClass::Throttled,
            action,
            format!(
                "{host} asked to be left alone for {}s more (Retry-After)",
                left.as_secs().max(1)
            ),
        )
        .with_retry_after(left));
    }
    tokio::time::sleep(left).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates_within_a_day() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::RETRY_AFTER, "120".parse().expect("value"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(120)));
        headers.insert(
            http::header::RETRY_AFTER,
            "99999999".parse().expect("value"),
        );
        assert_eq!(retry_after(&headers), Some(LONGEST));
        let soon = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(90));
        headers.insert(http::header::RETRY_AFTER, soon.parse().expect("value"));
        let wait = retry_after(&headers).expect("a date");
        assert!(
            wait > Duration::from_secs(80) && wait <= Duration::from_secs(90),
            "{wait:?}"
        );
        headers.insert(http::header::RETRY_AFTER, "soon".parse().expect("value"));
        assert_eq!(retry_after(&headers), None);
    }

    #[tokio::test]
    async fn a_pause_holds_every_caller_of_the_host_and_a_long_one_fails_fast() {
        pause("paused.test:1", Duration::from_millis(50));
        let started = Instant::now();
        wait("paused.test:1", Duration::from_secs(1), "pull")
            .await
            .expect("waited");
        assert!(started.elapsed() >= Duration::from_millis(40));
        wait("other.test:1", Duration::ZERO, "pull")
            .await
            .expect("another host is not paused");
        pause("paused.test:2", Duration::from_secs(600));
        let error = wait("paused.test:2", Duration::from_secs(30), "pull")
            .await
            .expect_err("too long to wait");
        assert_eq!(error.class, ErrorClass::Throttled);
        assert!(
            error
                .retry_after
                .is_some_and(|d| d > Duration::from_secs(590))
        );
        assert!(error.message.contains("Retry-After"), "{}", error.message);
    }
}
