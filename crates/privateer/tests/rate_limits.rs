//! `sources.rateLimits` through `privateer run` and copy Jobs on the real node: a pre-warm list
//! against a host with a budget drains at the budget's rate; the mirrors waiting for it are
//! Pending with reason `RateLimited` and the time they start, and are counted per host. A copy
//! Job whose source answers 429 with a long `Retry-After` ends at once, and the controller
//! pauses that host for every mirror until then.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use privateer_api::names::{condition, reason};
use privateer_api::{ImageMirror, ImageMirrorSpec, Phase};
use privateer_e2e::hostile::{Fault, HostileRegistry};
use privateer_e2e::node::NODE_IP;

mod common;
use common::installed::eventually;
use common::*;

/// The metrics at `metrics` have exactly the line `line`.
fn assert_metric_line(metrics: &str, line: &str) {
    let (_, text) = http_get(metrics, "/metrics");
    assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
}

/// One mirror pass against docker.io every `INTERVAL` seconds, no burst.
const INTERVAL: i64 = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prewarm_list_drains_at_the_source_budget_and_waiting_mirrors_say_when() {
    let Some(env) = prepared("source rate limits").await else {
        return;
    };
    let images = ["paced:1", "paced:2", "paced:3"];
    for image in images {
        let (repository, tag) = image.split_once(':').unwrap();
        env.push_runnable(&format!("library/{repository}"), tag, &["true"])
            .await
            .unwrap();
    }
    let (_privateer, metrics) = start_registered_with_metrics(
        &env,
        "rate-limits",
        &format!("sources: {{rateLimits: {{docker.io: 1/{INTERVAL}s}}}}"),
    )
    .await;
    let mirrors: Api<ImageMirror> = Api::all(env.client());
    let declared = Timestamp::now();
    for image in images {
        let spec = ImageMirrorSpec::for_source(image);
        mirrors
            .create(
                &PostParams::default(),
                &ImageMirror::new(&mirror_name(image), spec),
            )
            .await
            .unwrap();
    }

    // At once: one mirror goes, the two others wait their turn and say when it comes.
    let starts = eventually(
        20,
        "two mirrors waiting for docker.io's budget",
        async || {
            let (mut starts, mut seen) = (Vec::new(), Vec::new());
            for image in images {
                let mirror = mirrors
                    .get(&mirror_name(image))
                    .await
                    .map_err(|e| e.to_string())?;
                let status = mirror.status.clone().unwrap_or_default();
                let ready = status
                    .conditions
                    .iter()
                    .find(|c| c.type_ == condition::READY);
                seen.push(format!(
                    "{image} {:?} {:?}",
                    mirror.phase(),
                    ready.map(|c| &c.reason)
                ));
                if ready.is_some_and(|c| c.reason == reason::RATE_LIMITED) {
                    assert_eq!(mirror.phase(), Phase::Pending, "{status:?}");
                    assert!(ready.unwrap().message.contains("docker.io"), "{ready:?}");
                    starts.push(status.next_retry_time.expect("when it starts").0);
                }
            }
            if starts.len() == 2 {
                Ok(starts)
            } else {
                Err(format!("{} waiting: {seen:?}", starts.len()))
            }
        },
    )
    .await;
    let mut offsets: Vec<i64> = starts
        .iter()
        .map(|at| at.as_second() - declared.as_second())
        .collect();
    offsets.sort();
    // Spaced by the budget (a second either way for the timestamps' resolution).
    assert!(
        (INTERVAL - 2..=INTERVAL + 3).contains(&offsets[0]),
        "{offsets:?}"
    );
    assert!(
        (2 * INTERVAL - 2..=2 * INTERVAL + 3).contains(&offsets[1]),
        "{offsets:?}"
    );
    assert_metric_line(
        &metrics,
        "privateer_rate_limited_mirrors{host=\"docker.io\"} 2",
    );
    assert_metric_line(
        &metrics,
        "privateer_source_throttled_total{host=\"docker.io\"} 0",
    );

    // All Ready in the end, the last no sooner than its turn.
    let synced = eventually(3 * INTERVAL as u64 + 60, "all three Ready", async || {
        let mut synced = Vec::new();
        for image in images {
            let mirror = mirrors
                .get(&mirror_name(image))
                .await
                .map_err(|e| e.to_string())?;
            if mirror.phase() != Phase::Ready {
                return Err(format!("{image}: {:?}", mirror.status));
            }
            let status = mirror.status.unwrap();
            assert_eq!(status.next_retry_time, None, "{image}");
            synced.push(status.last_sync_time.unwrap().0.as_second());
        }
        Ok(synced)
    })
    .await;
    let last = synced.iter().max().unwrap() - declared.as_second();
    assert!(
        last >= 2 * INTERVAL - 1,
        "the last copied {last}s after declaring"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_metric_line(
        &metrics,
        "privateer_rate_limited_mirrors{host=\"docker.io\"} 0",
    );
}

/// Longer than a copy waits for a `Retry-After` (30 s), so the copy Job gives up at once.
const RETRY_AFTER: u64 = 40;

/// The mirror's `Ready` condition reason and `nextRetryTime`.
async fn waiting(mirrors: &Api<ImageMirror>, name: &str) -> Result<Timestamp, String> {
    let mirror = mirrors.get(name).await.map_err(|e| e.to_string())?;
    let status = mirror.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == condition::READY);
    match (ready, &status.next_retry_time) {
        (Some(c), Some(at)) if c.reason == reason::RATE_LIMITED => {
            assert_eq!(mirror.phase(), Phase::Pending, "{status:?}");
            Ok(at.0)
        }
        _ => Err(format!("{:?} {ready:?}", mirror.phase())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_jobs_429_pauses_the_host_for_every_mirror_until_its_retry_after() {
    let Some(env) = prepared("Retry-After through a copy Job").await else {
        return;
    };
    // docker.io answers its first blob GET with 429 and a Retry-After; resolves pass. No
    // budget of its own: the mirrors wait exactly for the Retry-After.
    let source = HostileRegistry::start_at(
        NODE_IP,
        Fault::TooManyRequestsOnBlobs {
            first: 1,
            retry_after: RETRY_AFTER.to_string(),
        },
    )
    .unwrap();
    let config = format!(
        "sources:\n  endpoints:\n    docker.io: {{url: \"http://{}\"}}\n",
        source.host
    );
    let (_privateer, metrics) = start_registered_with_metrics(&env, "retry-after", &config).await;
    let mirrors: Api<ImageMirror> = Api::all(env.client());
    let declare = async |image: &str| {
        let mirror = ImageMirror::new(&mirror_name(image), ImageMirrorSpec::for_source(image));
        mirrors
            .create(&PostParams::default(), &mirror)
            .await
            .unwrap();
    };
    let copy_pods = CopyPods::watch(&env);
    let tagged = "hostile/image:1.0";
    declare(tagged).await;
    // The Job's one Pod is throttled; the controller reads its Retry-After and the mirror waits.
    let resumes = eventually(
        90,
        "the mirror waits for docker.io's Retry-After",
        async || waiting(&mirrors, &mirror_name(tagged)).await,
    )
    .await;
    let asked = source.seen().len();
    let left = resumes.as_second() - Timestamp::now().as_second();
    assert!(
        left >= RETRY_AFTER as i64 - 25,
        "the wait is the host's Retry-After: {left}s left"
    );

    // Declared during the pause: it waits too, without asking the host.
    let pinned = format!("hostile/image@{}", source.digest);
    declare(&pinned).await;
    let also = eventually(20, "the second mirror waits too", async || {
        waiting(&mirrors, &mirror_name(&pinned)).await
    })
    .await;
    assert!(
        also.as_second() >= resumes.as_second() - 1,
        "{also} {resumes}"
    );
    assert_metric_line(
        &metrics,
        "privateer_source_throttled_total{host=\"other\"} 1",
    );
    // Well inside the pause, nobody asks: no second Pod of the Job (its Pod backoff is 10 s),
    // no resolve of either mirror.
    let quiet_until = (Timestamp::now().as_second() + 12).min(resumes.as_second() - 5);
    while Timestamp::now().as_second() < quiet_until {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The Job's Pod exited THROTTLED and its podFailurePolicy ended the Job: no other Pod.
    let pods = copy_pods.seen();
    assert_eq!(
        pods.values()
            .map(|exit| exit.as_ref().map(|(code, _)| *code))
            .collect::<Vec<_>>(),
        [Some(i32::from(privateer_api::names::exit::THROTTLED))],
        "copy Pods: {pods:?}"
    );
    let during = source.seen();
    assert_eq!(
        during.len(),
        asked,
        "asked during the pause: {:?}\ncopy Pods: {pods:?}",
        &during[asked..]
    );

    // Then both copy, and the host was throttled once.
    eventually(RETRY_AFTER + 90, "both Ready after the pause", async || {
        for image in [tagged, pinned.as_str()] {
            let mirror = mirrors
                .get(&mirror_name(image))
                .await
                .map_err(|e| e.to_string())?;
            if mirror.phase() != Phase::Ready {
                return Err(format!("{image}: {:?}", mirror.status));
            }
        }
        Ok(())
    })
    .await;
    let blob_gets = source
        .seen()
        .iter()
        .filter(|s| s.method == "GET" && s.path.contains("/blobs/"))
        .count();
    assert!(
        blob_gets >= 2,
        "the throttled GET and the copy's: {blob_gets}"
    );
}

/// Every copy Pod seen, by name, with its container's exit code and message once terminated.
type PodExits = BTreeMap<String, Option<(i32, String)>>;

struct CopyPods {
    seen: std::sync::Arc<std::sync::Mutex<PodExits>>,
    task: tokio::task::JoinHandle<()>,
}

impl CopyPods {
    fn watch(env: &privateer_e2e::TestEnv) -> Self {
        use futures::StreamExt;
        use k8s_openapi::api::core::v1::Pod;
        use kube::runtime::{WatchStreamExt, watcher};
        let seen: std::sync::Arc<std::sync::Mutex<PodExits>> = std::sync::Arc::default();
        let pods: Api<Pod> = Api::all(env.client());
        let selector = format!(
            "{}={}",
            privateer_api::names::LABEL_COMPONENT,
            privateer_api::names::COMPONENT_VALUE
        );
        let record = std::sync::Arc::clone(&seen);
        let task = tokio::spawn(async move {
            let config = watcher::Config::default().labels(&selector);
            let mut events = watcher(pods, config).applied_objects().boxed();
            while let Some(Ok(pod)) = events.next().await {
                let name = pod.metadata.name.clone().unwrap_or_default();
                let exit = pod
                    .status
                    .and_then(|s| s.container_statuses)
                    .into_iter()
                    .flatten()
                    .find_map(|c| c.state?.terminated)
                    .map(|t| (t.exit_code, t.message.unwrap_or_default()));
                let mut seen = record.lock().unwrap();
                let entry = seen.entry(name).or_insert(None);
                if exit.is_some() {
                    *entry = exit;
                }
            }
        });
        Self { seen, task }
    }

    fn seen(&self) -> PodExits {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for CopyPods {
    fn drop(&mut self) {
        self.task.abort();
    }
}
