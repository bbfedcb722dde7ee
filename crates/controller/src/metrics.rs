//! The controller's metrics and readiness, served on the plain port by `privateer-health`.
//! Labels are low-cardinality: results, outcomes and phases, never image names.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::Store;
use privateer_api::Phase;
use privateer_index::MirrorIndex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::rate_limit::{OTHER_HOST, SourceBudgets};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HostLabel {
    pub host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: String,
}

pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ResultLabel, Counter>,
    pub copies: Family<ResultLabel, Counter>,
    pub copy_bytes: Histogram,
    pub copy_seconds: Histogram,
    /// Mirrors deleted by `controller.retention`.
    pub retired: Family<ResultLabel, Counter>,
    /// `controller.targetCheck` by result: present, missing, unanswered.
    pub target_checks: Family<ResultLabel, Counter>,
    /// 429s from source registries, by configured host (others: `other`).
    pub throttled: Family<HostLabel, Counter>,
    rate_limited: Family<HostLabel, Gauge>,
    budgets: Arc<SourceBudgets>,
    mirrors: Family<PhaseLabel, Gauge>,
    unused: Gauge,
    queue: Family<QueueLabel, Gauge>,
    gated: Gauge,
    gated_oldest: Gauge,
    /// The gate releaser's Pods (its label-selected watch), counted at each scrape.
    pub gated_pods: OnceLock<Store<Pod>>,
    /// The process's ImageMirror index, counted by phase at each scrape.
    index: Arc<MirrorIndex>,
    pub ready: AtomicBool,
    /// Holding the Lease: only the leader reports the mirror gauges (standbys would count the
    /// same mirrors again).
    pub leading: AtomicBool,
}

impl Metrics {
    pub fn new(index: Arc<MirrorIndex>, budgets: Arc<SourceBudgets>) -> Self {
        let mut registry = Registry::with_prefix("privateer");
        let reconciles = Family::<ResultLabel, Counter>::default();
        registry.register(
            "reconciles",
            "ImageMirror reconciles by result",
            reconciles.clone(),
        );
        let copies = Family::<ResultLabel, Counter>::default();
        registry.register("copies", "Finished copy Jobs by outcome", copies.clone());
        start_at_zero(&reconciles, &["ok", "error"]);
        start_at_zero(&copies, &["success", "failure"]);
        // 1 MiB .. 64 GiB.
        let copy_bytes = Histogram::new(exponential_buckets(1_048_576.0, 4.0, 9));
        registry.register(
            "copy_bytes",
            "Bytes of the images copied",
            copy_bytes.clone(),
        );
        // 0.5 s .. ~2 h.
        let copy_seconds = Histogram::new(exponential_buckets(0.5, 3.0, 9));
        registry.register(
            "copy_seconds",
            "Wall time of successful copies",
            copy_seconds.clone(),
        );
        let retired = Family::<ResultLabel, Counter>::default();
        registry.register(
            "mirrors_retired",
            "ImageMirrors deleted by controller.retention, unused for controller.retention.unusedFor",
            retired.clone(),
        );
        let target_checks = Family::<ResultLabel, Counter>::default();
        registry.register(
            "target_checks",
            "Ready mirrors looked for in the target between refreshes, by result (present, missing, unanswered)",
            target_checks.clone(),
        );
        start_at_zero(&target_checks, &["present", "missing"]);
        let throttled = Family::<HostLabel, Counter>::default();
        registry.register(
            "source_throttled",
            "Resolves and copies a source registry refused with 429, by sources.rateLimits host (other: the rest)",
            throttled.clone(),
        );
        let rate_limited = Family::<HostLabel, Gauge>::default();
        registry.register(
            "rate_limited_mirrors",
            "ImageMirrors waiting for their source host's sources.rateLimits budget",
            rate_limited.clone(),
        );
        for host in budgets.hosts().chain([OTHER_HOST]) {
            let _ = throttled.get_or_create(&HostLabel { host: host.into() });
        }
        for host in budgets.hosts() {
            let _ = rate_limited.get_or_create(&HostLabel { host: host.into() });
        }
        let mirrors = Family::<PhaseLabel, Gauge>::default();
        registry.register("mirrors", "ImageMirrors by phase", mirrors.clone());
        let unused = Gauge::default();
        registry.register(
            "mirrors_unused",
            "ImageMirrors no Pod uses now (status.usage.pods is 0 or unset)",
            unused.clone(),
        );
        // kube-runtime keeps its work queue private: the queue is read from the objects.
        let queue = Family::<QueueLabel, Gauge>::default();
        registry.register(
            "reconcile_queue_depth",
            "ImageMirrors waiting for the reconciler: due (spec not yet observed) or scheduled (a retry at status.nextRetryTime)",
            queue.clone(),
        );
        let gated = Gauge::default();
        registry.register(
            "gated_pods",
            "Pods held by the privateer.dev/mirror scheduling gate now",
            gated.clone(),
        );
        let gated_oldest = Gauge::default();
        registry.register(
            "gated_pod_oldest_seconds",
            "Age of the oldest Pod held by the scheduling gate (0: none)",
            gated_oldest.clone(),
        );
        Self {
            registry,
            reconciles,
            copies,
            copy_bytes,
            copy_seconds,
            retired,
            target_checks,
            throttled,
            rate_limited,
            budgets,
            mirrors,
            unused,
            queue,
            gated,
            gated_oldest,
            gated_pods: OnceLock::new(),
            index,
            ready: AtomicBool::new(false),
            leading: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    pub fn count(family: &Family<ResultLabel, Counter>, result: &str) {
        family
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    /// The exposition text, with the phase gauges refreshed from the cache.
    pub fn render(&self) -> String {
        if self.leading.load(Ordering::Relaxed) && self.index.synced() {
            // One pass over the index for the phase gauges and the queue depth.
            let phases = [
                Phase::Pending,
                Phase::Mirroring,
                Phase::Ready,
                Phase::Failed,
            ];
            let mut counts = [0usize; 4];
            let (mut due, mut scheduled, mut unused) = (0, 0, 0);
            for mirror in self.index.all() {
                let Ok(mirror) = &mirror.0 else { continue };
                if let Some(i) = phases.iter().position(|p| *p == mirror.phase()) {
                    counts[i] += 1;
                }
                let status = mirror.status.as_ref();
                if status
                    .and_then(|s| s.usage.as_ref())
                    .is_none_or(|u| u.pods == 0)
                {
                    unused += 1;
                }
                if status.and_then(|s| s.observed_generation) != mirror.metadata.generation {
                    due += 1;
                } else if status.is_some_and(|s| s.next_retry_time.is_some()) {
                    scheduled += 1;
                }
            }
            for (phase, count) in phases.iter().zip(counts) {
                self.mirrors
                    .get_or_create(&PhaseLabel {
                        phase: phase.as_str().to_owned(),
                    })
                    .set(i64::try_from(count).unwrap_or(i64::MAX));
            }
            for (state, count) in [("due", due), ("scheduled", scheduled)] {
                self.queue.get_or_create(&QueueLabel { state }).set(count);
            }
            self.unused.set(unused);
            self.count_gated();
            for (host, waiting) in self.budgets.waiting() {
                self.rate_limited
                    .get_or_create(&HostLabel { host: host.into() })
                    .set(i64::try_from(waiting).unwrap_or(i64::MAX));
            }
        }
        let mut text = String::new();
        if prometheus_client::encoding::text::encode_registry(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

/// Export `results` at 0 from the start, so `increase()` in an alert sees the first ones.
fn start_at_zero(family: &Family<ResultLabel, Counter>, results: &[&str]) {
    for result in results {
        let _ = family.get_or_create(&ResultLabel {
            result: (*result).to_owned(),
        });
    }
}

impl Metrics {
    /// Gated Pods and the oldest one's age, from the gate releaser's watch.
    fn count_gated(&self) {
        let Some(store) = self.gated_pods.get() else {
            return;
        };
        let now = Timestamp::now();
        let (mut count, mut oldest) = (0i64, 0i64);
        for pod in store.state() {
            if !crate::gate::is_gated(&pod) {
                continue;
            }
            count += 1;
            if let Some(created) = &pod.metadata.creation_timestamp {
                oldest = oldest.max(now.as_second() - created.0.as_second());
            }
        }
        self.gated.set(count);
        self.gated_oldest.set(oldest);
    }
}

impl privateer_health::Probe for Metrics {
    fn ready(&self) -> Result<(), String> {
        if self.ready.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err("controller: connecting to the API server".into())
        }
    }

    fn metrics(&self) -> String {
        self.render()
    }
}
