//! Retries of transient failures: exponential backoff with full jitter, so many copy Jobs
//! hitting one registry do not retry in lockstep.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::CopyError;
use crate::progress::{Event, Progress};

/// How often and how patiently to retry.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub attempts: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait before try `attempt + 1` (attempt counts from 1): a random point between half
    /// and all of `initial · 2^(attempt-1)`, capped at `max_delay`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponential = self
            .initial_delay
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(self.max_delay);
        let half = exponential / 2;
        half + half.mul_f64(jitter_fraction(attempt))
    }
}

/// A number in [0, 1) that differs between processes and attempts; not cryptographic.
fn jitter_fraction(attempt: u32) -> f64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut x = u64::from(nanos) ^ (u64::from(std::process::id()) << 32) ^ u64::from(attempt);
    // xorshift64*: spreads the bits of a weak seed.
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
}

/// Run `operation` until it succeeds, fails permanently, or runs out of attempts.
pub async fn with_retries<T, F, Fut>(
    policy: &RetryPolicy,
    progress: &dyn Progress,
    mut operation: F,
) -> Result<T, CopyError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CopyError>>,
{
    let mut attempt = 1;
    loop {
        match operation().await {
            Ok(value) => return Ok(value),
            Err(error) if error.is_transient() && attempt < policy.attempts => {
                // A registry that says how long to wait is believed, up to the longest delay;
                // past that, waiting here would only hold the copy: the caller backs off.
                let delay = match error.retry_after {
                    Some(asked) if asked > policy.max_delay => return Err(error),
                    Some(asked) => asked.max(policy.delay(attempt)),
                    None => policy.delay(attempt),
                };
                tracing::debug!(%error, attempt, ?delay, "retrying");
                progress.event(Event::Retry {
                    action: error.action.clone(),
                    attempt,
                    delay_ms: delay.as_millis() as u64,
                    error: error.message.clone(),
                });
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorClass;
    use crate::progress::Silent;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn delays_grow_exponentially_within_jitter_and_cap() {
        let policy = RetryPolicy {
            attempts: 10,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        for attempt in 1..=8 {
            let full = Duration::from_millis(100 * 2u64.pow(attempt - 1)).min(policy.max_delay);
            let delay = policy.delay(attempt);
            assert!(delay >= full / 2 && delay <= full, "{attempt}: {delay:?}");
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_attempts_run_out() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = with_retries(&fast(), &Silent, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(CopyError::new(ErrorClass::Server, "pull", "503"))
        })
        .await;
        assert_eq!(result.expect_err("fails").class, ErrorClass::Server);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn retry_after_sets_the_delay_and_a_longer_one_than_the_cap_ends_the_retries() {
        let calls = AtomicU32::new(0);
        let policy = RetryPolicy {
            attempts: 3,
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(200),
        };
        let started = std::time::Instant::now();
        let result: Result<(), _> = with_retries(&policy, &Silent, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(CopyError::new(ErrorClass::Throttled, "pull", "429")
                .with_retry_after(Duration::from_millis(60)))
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(
            started.elapsed() >= Duration::from_millis(120),
            "two waits of 60 ms"
        );

        let calls = AtomicU32::new(0);
        let result: Result<(), _> = with_retries(&policy, &Silent, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(CopyError::new(ErrorClass::Throttled, "pull", "429")
                .with_retry_after(Duration::from_secs(3600)))
        })
        .await;
        assert_eq!(result.expect_err("fails").class, ErrorClass::Throttled);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "no retry to wait an hour for"
        );
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = with_retries(&fast(), &Silent, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(CopyError::new(ErrorClass::Denied, "push", "403"))
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
