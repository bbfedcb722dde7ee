//! `sources.rateLimits` through `privateer run` and copy Jobs on the real node: a pre-warm list
//! against a host with a budget drains at the budget's rate; the mirrors waiting for it are
//! Pending with reason `RateLimited` and the time they start, and are counted per host.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use privateer_api::names::{condition, reason};
use privateer_api::{ImageMirror, ImageMirrorSpec, Phase};

mod common;
use common::installed::eventually;
use common::*;

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
    let (_, text) = http_get(&metrics, "/metrics");
    assert!(
        text.lines()
            .any(|l| l == "privateer_rate_limited_mirrors{host=\"docker.io\"} 2"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == "privateer_source_throttled_total{host=\"docker.io\"} 0"),
        "{text}"
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
    let (_, text) = http_get(&metrics, "/metrics");
    assert!(
        text.lines()
            .any(|l| l == "privateer_rate_limited_mirrors{host=\"docker.io\"} 0"),
        "{text}"
    );
}
