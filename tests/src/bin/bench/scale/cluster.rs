//! What the cluster and the machine say about a run: the API server's request counts and its
//! webhook latency histogram (its own `/metrics`), and CPU seconds per process.

use std::collections::BTreeMap;

use anyhow::Context;
use privateer_e2e::TestEnv;
use privateer_e2e::process::cpu_seconds;

/// `apiserver_request_total` summed by "resource[/subresource] VERB".
pub type Requests = BTreeMap<String, f64>;

pub async fn apiserver_metrics(env: &TestEnv) -> anyhow::Result<String> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    env.client()
        .request_text(request)
        .await
        .context("the API server's /metrics")
}

/// The value of label `name` in a Prometheus text line's label set.
fn label<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!("{name}=\""))? + name.len() + 2;
    let end = line[start..].find('"')? + start;
    Some(&line[start..end])
}

fn value(line: &str) -> Option<f64> {
    line.rsplit_once(' ')?.1.parse().ok()
}

pub fn requests(metrics: &str) -> Requests {
    let mut out = Requests::new();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let (Some(resource), Some(verb), Some(count)) =
            (label(line, "resource"), label(line, "verb"), value(line))
        else {
            continue;
        };
        let key = match label(line, "subresource").filter(|s| !s.is_empty()) {
            Some(sub) => format!("{resource}/{sub} {verb}"),
            None => format!("{resource} {verb}"),
        };
        *out.entry(key).or_default() += count;
    }
    out
}

/// `after - before`, dropping what did not change.
pub fn delta(before: &Requests, after: &Requests) -> Requests {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// Cumulative buckets (upper bound, count) of the API server's admission latency for webhook
/// `webhook` (CREATE, admit).
pub fn webhook_buckets(metrics: &str, webhook: &str) -> Vec<(f64, f64)> {
    metrics
        .lines()
        .filter(|l| l.starts_with("apiserver_admission_webhook_admission_duration_seconds_bucket{"))
        .filter(|l| label(l, "name") == Some(webhook) && label(l, "type") == Some("admit"))
        .filter(|l| label(l, "operation") == Some("CREATE"))
        .filter_map(|l| {
            let le = label(l, "le")?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, value(l)?))
        })
        // Keyed by the bits of a positive float, which sort as the numbers do (+Inf last);
        // rejected and admitted series share bounds and add up.
        .fold(
            BTreeMap::<u64, (f64, f64)>::new(),
            |mut acc, (bound, count)| {
                acc.entry(bound.to_bits()).or_insert((bound, 0.0)).1 += count;
                acc
            },
        )
        .into_values()
        .collect()
}

/// The upper bound of the bucket holding quantile `q` of what was observed between two
/// readings of the same histogram (`None`: nothing was).
pub fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let observed = |bound: f64| {
        let at = |buckets: &[(f64, f64)]| {
            buckets
                .iter()
                .find(|(b, _)| *b == bound)
                .map_or(0.0, |(_, c)| *c)
        };
        at(after) - at(before)
    };
    let total = observed(f64::INFINITY);
    if total <= 0.0 {
        return None;
    }
    after
        .iter()
        .find(|(bound, _)| observed(*bound) >= q * total)
        .map(|(bound, _)| *bound)
}

/// CPU seconds so far of every process the environment runs (and of `extra`), and of the
/// whole machine (busy, all cores), for deltas.
pub struct Cpu {
    pub by_process: BTreeMap<String, f64>,
    pub machine_busy: f64,
}

impl Cpu {
    pub fn read(env: &TestEnv, extra: &[(&str, u32)]) -> Self {
        let mut by_process = BTreeMap::new();
        let named = env.named_pids();
        let extra = extra.iter().map(|(n, p)| ((*n).to_owned(), *p));
        for (name, pid) in named.into_iter().chain(extra) {
            *by_process.entry(name).or_insert(0.0) += cpu_seconds(pid);
        }
        Self {
            by_process,
            machine_busy: machine_busy_seconds(),
        }
    }

    /// Seconds each used since `before`, largest first.
    pub fn since(&self, before: &Cpu) -> (Vec<(String, f64)>, f64) {
        let mut used: Vec<(String, f64)> = self
            .by_process
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v - before.by_process.get(k).copied().unwrap_or(0.0),
                )
            })
            .collect();
        used.sort_by(|a, b| b.1.total_cmp(&a.1));
        (used, self.machine_busy - before.machine_busy)
    }
}

/// Busy CPU seconds of all cores since boot (`/proc/stat`: all but idle and iowait).
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let fields: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle) as f64 / 100.0
}

/// privateer's requests so far to the source and target registries (from their access logs),
/// by registry, method, what was asked for and the status answered.
pub fn registry_requests(env: &TestEnv) -> Requests {
    let mut counted = Requests::new();
    for (side, registry) in [("source", &env.source), ("target", &env.target)] {
        let Some(registry) = registry else { continue };
        for (method, path, status) in registry.requests_from("privateer/") {
            let key = format!("{side} {method} {} {status}", what_was_asked(&path));
            *counted.entry(key).or_default() += 1.0;
        }
    }
    counted
}

/// `manifests`, `blobs`, `blob uploads`, `tags`, `referrers` or the path itself (`/v2/`).
fn what_was_asked(path: &str) -> &str {
    let path = path.split('?').next().unwrap_or(path);
    if path.contains("/blobs/uploads") {
        return "blob uploads";
    }
    ["manifests", "blobs", "tags", "referrers"]
        .into_iter()
        .find(|kind| path.contains(&format!("/{kind}/")))
        .unwrap_or(path)
}
