//! A bounded answer cache with a TTL per entry: positive answers live `ttl` (±10 % jitter, so
//! entries filled together do not expire together), negative ones a shorter while, and
//! failures are never cached. Concurrent lookups of one key share one fetch.

use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;

#[derive(Clone)]
struct Timed<V> {
    value: V,
    ttl: Duration,
}

struct PerEntry;

impl<K, V> Expiry<K, Timed<V>> for PerEntry {
    fn expire_after_create(&self, _: &K, entry: &Timed<V>, _: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }
}

pub(crate) struct AnswerCache<K, V> {
    entries: Cache<K, Timed<V>>,
    ttl: Duration,
    negative_ttl: Duration,
}

impl<K, V> AnswerCache<K, V>
where
    K: Hash + Eq + Send + Sync + Clone + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub(crate) fn new(capacity: u64, ttl: Duration, negative_ttl: Duration) -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(capacity)
                .expire_after(PerEntry)
                .build(),
            ttl,
            negative_ttl,
        }
    }

    /// The cached answer for `key`, or `fetch`'s. `is_negative` picks the short TTL.
    pub(crate) async fn get_or_fetch<E, F>(
        &self,
        key: K,
        is_negative: impl Fn(&V) -> bool,
        fetch: F,
    ) -> Result<V, Arc<E>>
    where
        E: Send + Sync + 'static,
        F: Future<Output = Result<V, E>>,
    {
        let base = |value: &V| {
            if is_negative(value) {
                self.negative_ttl
            } else {
                self.ttl
            }
        };
        let seed = RandomState::new().hash_one(&key);
        let timed = self
            .entries
            .try_get_with(key, async {
                let value = fetch.await?;
                let ttl = jitter(base(&value), seed);
                Ok(Timed { value, ttl })
            })
            .await?;
        Ok(timed.value)
    }

    pub(crate) async fn invalidate(&self, key: &K) {
        self.entries.invalidate(key).await;
    }
}

/// `ttl` scaled into [0.9, 1.1) by `seed`.
fn jitter(ttl: Duration, seed: u64) -> Duration {
    let fraction = (seed % 1000) as f64 / 1000.0;
    ttl.mul_f64(0.9 + 0.2 * fraction)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn answers_are_cached_failures_are_not_and_negatives_expire_sooner() {
        let cache: AnswerCache<&str, bool> =
            AnswerCache::new(10, Duration::from_secs(60), Duration::from_millis(50));
        let calls = AtomicU32::new(0);
        // (key, what a fetch would answer, what the cache answers); `None`: a pause.
        type Step = (
            Option<&'static str>,
            Result<bool, &'static str>,
            Result<bool, ()>,
        );
        let steps: [Step; 7] = [
            (Some("a"), Ok(true), Ok(true)),
            (Some("a"), Ok(false), Ok(true)),
            (Some("b"), Err("down"), Err(())),
            (Some("b"), Ok(false), Ok(false)),
            (None, Ok(false), Ok(false)),
            (Some("b"), Ok(true), Ok(true)),
            (Some("a"), Ok(false), Ok(true)),
        ];
        for (key, fetched, expected) in steps {
            let Some(key) = key else {
                tokio::time::sleep(Duration::from_millis(120)).await;
                continue;
            };
            let calls = &calls;
            let fetch = async move {
                calls.fetch_add(1, Ordering::SeqCst);
                fetched
            };
            let got = cache.get_or_fetch(key, |present| !present, fetch).await;
            assert_eq!(got.map_err(|_| ()), expected, "{key}");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let ttl = Duration::from_secs(100);
        for seed in [0, 1, 499, 999, u64::MAX] {
            let got = jitter(ttl, seed);
            assert!(got >= Duration::from_secs(90) && got < Duration::from_secs(110));
        }
    }
}
