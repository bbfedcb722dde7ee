//! Memory at size: `mirrors` ImageMirrors (tags of one small image, so seeding is one manifest
//! PUT each) and `pods` Pods using them, created while the mirrors are still being copied (so
//! the gate holds many). The Pods also carry a scheduling gate of the benchmark's own, so none
//! is ever scheduled: nothing runs, yet every watch sees them all. `privateer controller` and
//! `privateer webhook` run as separate processes through it; afterwards `privateer run`
//! starts on the full cluster (its first lists are its peak).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, PostParams};
use privateer_api::{ImageMirror, ImageMirrorSpec, Phase};
use privateer_e2e::TestEnv;
use privateer_e2e::images::{Format, Image, Pusher, layer};
use privateer_e2e::operator;
use privateer_e2e::process::rss_kib;
use privateer_e2e::registry::oci_client;
use serde_json::json;

use crate::Args;

const REPOSITORY: &str = "bench/size";
const NAMESPACE: &str = "size";
/// The benchmark's own gate: the Pods stay unscheduled whatever privateer does.
const HOLD: &str = "bench.privateer.dev/hold";
/// Creates in flight at once.
const CREATING: usize = 32;

pub struct Size {
    pub mirrors: usize,
    pub pods: usize,
    pub controller_mib: u64,
    pub webhook_mib: u64,
    pub run_mib: u64,
    /// Until every mirror was Ready or Failed.
    pub ready_seconds: f64,
    pub failed: usize,
}

pub async fn run(env: &TestEnv, args: &Args, mirrors: usize, pods: usize) -> anyhow::Result<Size> {
    let source = env.source.as_ref().context("no source registry")?;
    let pusher = Pusher::new(oci_client(), source.auth());
    let image = Image::new(Format::Docker, "linux/amd64", vec![layer(3_000_000, 2048)]);
    pusher
        .push_image(&source.host, REPOSITORY, "0", &image)
        .await?;
    eprintln!("  tagging {mirrors} ...");
    let media_type = image.format.manifest_type();
    futures::stream::iter(1..mirrors)
        .map(|i| {
            let (pusher, image) = (&pusher, &image);
            async move {
                // docker-registry answers an occasional 500 under many concurrent tag writes.
                let mut tries = 0;
                loop {
                    let tag = i.to_string();
                    match pusher
                        .push_manifest_as(
                            &source.host,
                            REPOSITORY,
                            &tag,
                            &image.manifest,
                            media_type,
                        )
                        .await
                    {
                        Ok(()) => return anyhow::Ok(()),
                        Err(_) if tries < 3 => tries += 1,
                        Err(e) => return Err(e.context(format!("tag {i}"))),
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<_>>()
        .await?;
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?;
    Api::<Namespace>::all(env.client())
        .create(&PostParams::default(), &namespace)
        .await?;
    // Gated Pods wait as long as the copies of thousands take.
    let config =
        "copy: {executor: inline}\ntarget: {prefix: bench-size}\nwebhook: {gateTimeout: 30m}\n";
    let (mut controller, metrics) = operator::start(
        env,
        &args.privateer,
        "size-controller",
        "controller",
        config,
    )?;
    operator::wait_ready(&metrics, &controller).await?;
    let (mut webhook, _) =
        operator::start_registered(env, &args.privateer, "size-webhook", "webhook", config).await?;

    let started = Instant::now();
    let api: Api<ImageMirror> = Api::all(env.client());
    eprintln!("  creating {mirrors} ImageMirrors ...");
    futures::stream::iter(0..mirrors)
        .map(|i| {
            let api = &api;
            async move {
                let image = format!("docker.io/{REPOSITORY}:{i}");
                let name = super::prewarm::mirror_name(&image)?;
                let mirror = ImageMirror::new(&name, ImageMirrorSpec::for_source(&image));
                api.create(&PostParams::default(), &mirror).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CREATING)
        .try_collect::<Vec<_>>()
        .await?;
    eprintln!("  creating {pods} Pods ...");
    let pod_api: Api<Pod> = Api::namespaced(env.client(), NAMESPACE);
    futures::stream::iter(0..pods)
        .map(|i| {
            let pod_api = &pod_api;
            async move {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("p{i}")},
                    "spec": {
                        "containers": [{"name": "app", "image": format!("docker.io/{REPOSITORY}:{}", i % mirrors)}],
                        "schedulingGates": [{"name": HOLD}],
                    },
                }))?;
                pod_api.create(&PostParams::default(), &pod).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CREATING)
        .try_collect::<Vec<_>>()
        .await?;
    eprintln!("  waiting for every mirror ...");
    let (ready_seconds, failed) = loop {
        let listed = api.list(&ListParams::default()).await?.items;
        let ours: Vec<_> = listed
            .iter()
            .filter(|m| m.spec.source.contains(REPOSITORY))
            .collect();
        let ready = ours.iter().filter(|m| m.phase() == Phase::Ready).count();
        // docker-registry, the ECR stand-in, now and then refuses one of many identical
        // manifests pushed at once under different tags (DIGEST_INVALID, permanent): counted.
        let failed = ours.iter().filter(|m| m.phase() == Phase::Failed).count();
        if ready + failed >= mirrors {
            break (started.elapsed().as_secs_f64(), failed);
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!(
                "{ready} of {mirrors} Ready after 30 minutes\n{}",
                controller.log_tail(20)
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    // The gate releaser's work on the released Pods, then a steady moment.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let controller_mib = rss_kib(controller.pid()).1 / 1024;
    let webhook_mib = rss_kib(webhook.pid()).1 / 1024;
    controller.stop();
    webhook.stop();
    // One process holding both on the full cluster: its peak is the first lists. Its webhook
    // serves TLS but is not registered (the one above was).
    let (_, _, tls) = operator::serving_tls(env, "size-run")?;
    let tls = format!("{tls}\n---\n{config}");
    let (mut run, metrics) = operator::start(env, &args.privateer, "size-run", "run", &tls)?;
    operator::wait_ready(&metrics, &run).await?;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let run_mib = rss_kib(run.pid()).1 / 1024;
    run.stop();
    Ok(Size {
        mirrors,
        pods,
        controller_mib,
        webhook_mib,
        run_mib,
        ready_seconds,
        failed,
    })
}
