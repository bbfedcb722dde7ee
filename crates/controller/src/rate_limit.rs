//! `sources.rateLimits`: the controller holds each source host's budget and starts no mirror
//! pass (a resolve, and the copy when one is needed, inline or as a Job) that would exceed it.
//!
//! Each host is a generic cell rate algorithm: passes are spaced `period / requests` apart once
//! a burst of `requests` is spent, so a pre-warm list drains at the budget's rate. A mirror told
//! to wait keeps its turn (a reservation under its name), so asking again before the turn comes
//! neither spends more budget nor loses its place. A `Retry-After` pause of the host (from a 429
//! or 503, recorded by the copier, or by [`throttled`] for a copy Job's answer) holds every
//! mirror of the host, configured or not; a configured host then resumes one at a time at the
//! steady rate, not with a fresh burst.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use privateer_api::config::RateLimit;
use privateer_api::{ImageMirror, Phase};
use privateer_registry::Image;

use crate::metrics::HostLabel;
use crate::status::{Outcome, write_status};
use crate::{Context, Error};

/// A reservation this far past its turn is dropped (its mirror was deleted, or went another
/// way); the mirror, should it come back, takes a new turn.
const STALE_AFTER: Duration = Duration::from_secs(600);
/// A pass granted this recently is the same pass when asked again: a trigger (the copy Job's
/// creation) may wake the mirror while the cache still holds it without the status the pass
/// wrote, and that must neither spend budget nor undo the pass with a `RateLimited` status.
const GRANT_HOLDS: Duration = Duration::from_secs(5);
/// The longest period taken as given: a year (keeps every instant far from overflow).
const LONGEST_PERIOD: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// The `host` label of hosts without a budget, so labels stay few.
pub const OTHER_HOST: &str = "other";

/// Whether a mirror pass may start now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turn {
    Go,
    /// Its turn comes after this long.
    Wait(Duration),
}

/// Every configured host's budget, by lowercased host.
pub struct SourceBudgets {
    hosts: BTreeMap<String, Mutex<Budget>>,
}

impl SourceBudgets {
    pub fn new(limits: &BTreeMap<String, RateLimit>) -> Self {
        let now = Instant::now();
        let hosts = limits
            .iter()
            .map(|(host, limit)| {
                (
                    host.to_ascii_lowercase(),
                    Mutex::new(Budget::new(limit, now)),
                )
            })
            .collect();
        Self { hosts }
    }

    /// The configured hosts, for metric labels.
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.hosts.keys().map(String::as_str)
    }

    /// The metric label of `domain`: itself when it has a budget, else [`OTHER_HOST`].
    pub fn label(&self, domain: &str) -> String {
        let domain = domain.to_ascii_lowercase();
        if self.hosts.contains_key(&domain) {
            domain
        } else {
            OTHER_HOST.to_owned()
        }
    }

    /// May `mirror` start a pass against the source registry named `domain`, reached at
    /// `endpoint_host` (where a pause is recorded)?
    pub fn take(&self, domain: &str, endpoint_host: &str, mirror: &str) -> Turn {
        let paused = privateer_registry::paused_for(endpoint_host);
        match self.hosts.get(&domain.to_ascii_lowercase()) {
            Some(budget) => budget.lock().unwrap_or_else(PoisonError::into_inner).take(
                mirror,
                Instant::now(),
                paused,
            ),
            None => paused.map_or(Turn::Go, Turn::Wait),
        }
    }

    /// Mirrors holding a turn still ahead, per configured host.
    pub fn waiting(&self) -> Vec<(&str, usize)> {
        let now = Instant::now();
        self.hosts
            .iter()
            .map(|(host, budget)| {
                let budget = budget.lock().unwrap_or_else(PoisonError::into_inner);
                let ahead = budget.reserved.values().filter(|at| **at > now).count();
                (host.as_str(), ahead)
            })
            .collect()
    }
}

/// Not this mirror's turn yet: a mirror not yet Ready says so (Pending, reason `RateLimited`,
/// `nextRetryTime` when it starts); a Ready one waiting to refresh just waits.
pub async fn wait_for_turn(
    ctx: &Context,
    mirror: &ImageMirror,
    domain: &str,
    wait: Duration,
) -> Result<Action, Error> {
    let observed = mirror.status.as_ref().and_then(|s| s.observed_generation);
    if mirror.phase() == Phase::Ready && observed == mirror.metadata.generation {
        return Ok(Action::requeue(wait));
    }
    let message = format!(
        "{domain} is rate-limited (sources.rateLimits, or its Retry-After): this mirror starts in {}s",
        wait.as_secs().max(1)
    );
    let outcome = Outcome::RateLimited {
        message,
        retry_in: wait,
    };
    write_status(ctx, mirror, outcome).await?;
    Ok(Action::requeue(wait))
}

/// A source answered 429: counted under its host's label. A copy Job's `Retry-After` also
/// pauses the source's endpoint for the whole controller, as the copier does for its own
/// requests (the Job runs elsewhere and cannot).
pub fn throttled(ctx: &Context, source: &Image, job_retry_after_seconds: Option<u64>) {
    let host = ctx.source_budgets.label(source.reference.domain());
    ctx.metrics
        .throttled
        .get_or_create(&HostLabel { host })
        .inc();
    if let Some(seconds) = job_retry_after_seconds {
        privateer_registry::pause(source.host(), Duration::from_secs(seconds));
    }
}

/// One host's budget.
struct Budget {
    /// Between two passes once the burst is spent.
    interval: Duration,
    /// How far ahead of the steady rate passes may run: the burst less one.
    burst: Duration,
    /// The theoretical arrival time of the next pass.
    next: Instant,
    /// Turns given to mirrors told to wait, by mirror name.
    reserved: HashMap<String, Instant>,
    /// When each mirror was last let go (kept for [`GRANT_HOLDS`]).
    granted: HashMap<String, Instant>,
}

impl Budget {
    fn new(limit: &RateLimit, now: Instant) -> Self {
        let requests = limit.requests.max(1);
        let interval = limit.period().min(LONGEST_PERIOD) / requests;
        Self {
            interval,
            burst: interval.saturating_mul(requests - 1),
            next: now,
            reserved: HashMap::new(),
            granted: HashMap::new(),
        }
    }

    fn take(&mut self, mirror: &str, now: Instant, paused: Option<Duration>) -> Turn {
        self.granted
            .retain(|_, at| now.duration_since(*at) < GRANT_HOLDS);
        if self.granted.contains_key(mirror) {
            return Turn::Go;
        }
        let turn = self.next_turn(mirror, now, paused);
        if turn == Turn::Go {
            self.granted.insert(mirror.to_owned(), now);
        }
        turn
    }

    fn next_turn(&mut self, mirror: &str, now: Instant, paused: Option<Duration>) -> Turn {
        if let Some(left) = paused {
            // Resume after the pause one at a time: the budget was too generous for the host.
            let resume = now.checked_add(left + self.burst).unwrap_or(now);
            self.next = self.next.max(resume);
        }
        if let Some(at) = self.reserved.get(mirror).copied() {
            if at > now {
                return Turn::Wait(at - now);
            }
            self.reserved.remove(mirror);
            if paused.is_none() {
                return Turn::Go;
            }
            // A turn given before the pause was known: take a new one after it.
        }
        let next = self.next.max(now);
        let at = next
            .checked_sub(self.burst)
            .map_or(now, |start| start.max(now));
        self.next = next.checked_add(self.interval).unwrap_or(next);
        self.reserved
            .retain(|_, turn| now.duration_since(*turn) < STALE_AFTER);
        if at <= now {
            return Turn::Go;
        }
        self.reserved.insert(mirror.to_owned(), at);
        Turn::Wait(at - now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(text: &str, now: Instant) -> Budget {
        Budget::new(&text.parse().expect("a rate limit"), now)
    }

    #[test]
    fn a_burst_then_one_per_interval_and_a_waiting_mirror_keeps_its_turn() {
        let now = Instant::now();
        let mut b = budget("3/30s", now);
        for mirror in ["a", "b", "c"] {
            assert_eq!(b.take(mirror, now, None), Turn::Go, "{mirror}");
        }
        assert_eq!(b.take("d", now, None), Turn::Wait(Duration::from_secs(10)));
        assert_eq!(b.take("e", now, None), Turn::Wait(Duration::from_secs(20)));
        // Asking again costs nothing and keeps the place.
        let later = now + Duration::from_secs(4);
        assert_eq!(b.take("d", later, None), Turn::Wait(Duration::from_secs(6)));
        assert_eq!(
            b.take("f", later, None),
            Turn::Wait(Duration::from_secs(26))
        );
        let due = now + Duration::from_secs(10);
        assert_eq!(b.take("d", due, None), Turn::Go);
        assert!(!b.reserved.contains_key("d"));
        // The same pass woken again at once (a stale cache) goes, and spends nothing.
        assert_eq!(b.take("d", due + Duration::from_secs(1), None), Turn::Go);
        assert_eq!(b.take("h", due, None), Turn::Wait(Duration::from_secs(30)));
        // A turn nobody came back for goes after a while.
        let much_later = now + Duration::from_secs(3600);
        assert_eq!(b.take("g", much_later, None), Turn::Go);
        assert!(b.reserved.is_empty(), "{:?}", b.reserved);
    }

    #[test]
    fn a_pause_holds_every_mirror_and_resumes_single_file() {
        let now = Instant::now();
        let mut b = budget("10/10s", now);
        assert_eq!(b.take("early", now, None), Turn::Go);
        assert_eq!(b.take("reserved", now, None), Turn::Go);
        let pause = Some(Duration::from_secs(60));
        assert_eq!(b.take("a", now, pause), Turn::Wait(Duration::from_secs(60)));
        assert_eq!(b.take("b", now, pause), Turn::Wait(Duration::from_secs(61)));
        assert_eq!(b.take("c", now, pause), Turn::Wait(Duration::from_secs(62)));
        let after = now + Duration::from_secs(60);
        assert_eq!(b.take("a", after, None), Turn::Go);
        assert_eq!(b.take("b", after, None), Turn::Wait(Duration::from_secs(1)));
    }

    #[test]
    fn a_turn_given_before_a_pause_moves_after_it() {
        let now = Instant::now();
        let mut b = budget("1/10s", now);
        assert_eq!(b.take("a", now, None), Turn::Go);
        assert_eq!(b.take("b", now, None), Turn::Wait(Duration::from_secs(10)));
        let due = now + Duration::from_secs(10);
        let pause = Some(Duration::from_secs(30));
        assert_eq!(b.take("b", due, pause), Turn::Wait(Duration::from_secs(30)));
    }

    #[test]
    fn hosts_without_a_budget_only_wait_out_pauses_and_share_one_label() {
        let limits = BTreeMap::from([("Docker.io".to_owned(), "1/1h".parse().expect("limit"))]);
        let budgets = SourceBudgets::new(&limits);
        assert_eq!(budgets.label("docker.io"), "docker.io");
        assert_eq!(budgets.label("quay.io"), OTHER_HOST);
        assert_eq!(budgets.take("docker.io", "budget.test:1", "a"), Turn::Go);
        assert!(matches!(
            budgets.take("docker.io", "budget.test:1", "b"),
            Turn::Wait(_)
        ));
        assert_eq!(budgets.waiting(), vec![("docker.io", 1)]);
        for mirror in ["a", "b", "c"] {
            assert_eq!(budgets.take("quay.io", "budget.test:2", mirror), Turn::Go);
        }
        privateer_registry::pause("budget.test:3", Duration::from_secs(60));
        assert!(matches!(
            budgets.take("quay.io", "budget.test:3", "a"),
            Turn::Wait(wait) if wait > Duration::from_secs(50)
        ));
    }
}
