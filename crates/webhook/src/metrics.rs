//! The webhook's metrics, low-cardinality (endpoints, outcomes, rules; never image names).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::mirrors::Cluster;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabel {
    pub endpoint: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabel {
    pub rule: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabel, Counter>,
    pub latency: Family<EndpointLabel, Histogram>,
    pub images_rewritten: Counter,
    pub pods_gated: Counter,
    pub mirrors_created: Counter,
    pub denials: Family<RuleLabel, Counter>,
    /// Pods admitted without their mirrors because the API server could not be written.
    pub admitted_unchanged: Family<ReasonLabel, Counter>,
    pub tls_reloads: Family<ReasonLabel, Counter>,
    pub cluster: std::sync::OnceLock<Arc<Cluster>>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("privateer_webhook");
        let requests = Family::<RequestLabel, Counter>::default();
        registry.register(
            "requests",
            "Admission requests by endpoint and outcome",
            requests.clone(),
        );
        // 0.1 ms .. ~3 s.
        let latency = Family::<EndpointLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.5, 12))
        });
        registry.register(
            "request_seconds",
            "Time from a whole request body to the answer",
            latency.clone(),
        );
        let images_rewritten = Counter::default();
        registry.register(
            "images_rewritten",
            "Container images rewritten to the target registry",
            images_rewritten.clone(),
        );
        let pods_gated = Counter::default();
        registry.register(
            "pods_gated",
            "Pods held with the privateer.dev/mirror scheduling gate",
            pods_gated.clone(),
        );
        let mirrors_created = Counter::default();
        registry.register(
            "mirrors_created",
            "ImageMirrors created on admission",
            mirrors_created.clone(),
        );
        let denials = Family::<RuleLabel, Counter>::default();
        registry.register("denials", "Policy denials by rule", denials.clone());
        let admitted_unchanged = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "admitted_unchanged",
            "Pods admitted without rewriting because privateer could not record their mirrors",
            admitted_unchanged.clone(),
        );
        // Exported at 0 from the start, so `increase()` in an alert sees the first one.
        let _ = admitted_unchanged.get_or_create(&ReasonLabel {
            reason: "mirrorNotRecorded",
        });
        let tls_reloads = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "tls_reloads",
            "Serving certificate reloads by result",
            tls_reloads.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            images_rewritten,
            pods_gated,
            mirrors_created,
            denials,
            admitted_unchanged,
            tls_reloads,
            cluster: std::sync::OnceLock::new(),
        }
    }

    pub fn request(&self, endpoint: &'static str, outcome: &'static str, seconds: Option<f64>) {
        self.requests
            .get_or_create(&RequestLabel { endpoint, outcome })
            .inc();
        if let Some(seconds) = seconds {
            self.latency
                .get_or_create(&EndpointLabel { endpoint })
                .observe(seconds);
        }
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode_registry(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl privateer_health::Probe for Metrics {
    fn ready(&self) -> Result<(), String> {
        match self.cluster.get() {
            Some(cluster) if cluster.synced() => Ok(()),
            _ => Err("webhook: the ImageMirror and Namespace caches have not synced".into()),
        }
    }

    fn metrics(&self) -> String {
        self.render()
    }
}
