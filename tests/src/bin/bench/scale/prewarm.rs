//! Pre-warm: `count` ImageMirrors declared at once, each a small distinct image (a tag of
//! `bench/scale` in the source registry); the time until every one is Ready, the controller's
//! peak RSS, the API requests the run caused and where the CPU went.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use privateer_api::{ImageMirror, ImageMirrorSpec, Phase, names};
use privateer_e2e::TestEnv;
use privateer_e2e::images::{Format, Image, Pusher, layer};
use privateer_e2e::process::rss_kib;
use privateer_e2e::registry::oci_client;

use super::cluster::{self, Cpu, Requests};
use crate::Args;

pub const REPOSITORY: &str = "bench/scale";
/// Bytes of each image's one layer.
const LAYER_BYTES: usize = 2048;
/// Creates the benchmark sends at once (a platform team's `kubectl apply` of a list).
const CREATING: usize = 16;

/// `docker.io/bench/scale:<i>` for i in `from..from + count`.
pub fn images(from: usize, count: usize) -> Vec<String> {
    (from..from + count)
        .map(|i| format!("docker.io/{REPOSITORY}:{i}"))
        .collect()
}

/// Pushes `count` distinct one-layer images as tags `from..` of `REPOSITORY`.
pub async fn seed(env: &TestEnv, from: usize, count: usize) -> anyhow::Result<()> {
    let source = env.source.as_ref().context("no source registry")?;
    let pusher = Pusher::new(oci_client(), source.auth());
    futures::stream::iter(from..from + count)
        .map(|i| {
            let (pusher, host) = (&pusher, &source.host);
            async move {
                let image = Image::new(
                    Format::Docker,
                    "linux/amd64",
                    vec![layer(1_000_000 + i as u64, LAYER_BYTES)],
                );
                pusher
                    .push_image(host, REPOSITORY, &i.to_string(), &image)
                    .await
            }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

pub fn mirror_name(image: &str) -> anyhow::Result<String> {
    Ok(privateer_image::object_name(
        &privateer_image::Reference::parse(image)?,
    ))
}

/// One pre-warm run's figures.
pub struct Run {
    pub seconds: f64,
    pub creating_seconds: f64,
    pub peak_rss_mib: u64,
    /// API requests during the run, less the benchmark's own (its creates and its watch).
    pub requests: Requests,
    /// privateer's requests to the source and target registries during the run.
    pub registry_requests: Requests,
    pub cpu: Vec<(String, f64)>,
    pub machine_cpu: f64,
    /// Jobs per mirror above one (0 inline).
    pub duplicate_jobs: usize,
    pub jobs: usize,
    /// Median seconds from a copy Job's creation to its completion.
    pub job_seconds: Option<f64>,
}

/// Declares a mirror of each of `images` at once and waits until all are Ready (`timeout`).
pub async fn run(
    env: &TestEnv,
    args: &Args,
    label: &str,
    images: &[String],
    extra_config: &str,
    timeout: Duration,
) -> anyhow::Result<Run> {
    let (mut controller, metrics) =
        privateer_e2e::operator::start(env, &args.privateer, label, "controller", extra_config)?;
    privateer_e2e::operator::wait_ready(&metrics, &controller).await?;
    let mirrors: Api<ImageMirror> = Api::all(env.client());
    let names: Vec<String> = images
        .iter()
        .map(|i| mirror_name(i))
        .collect::<anyhow::Result<_>>()?;
    let requests_before = cluster::requests(&cluster::apiserver_metrics(env).await?);
    let registry_before = cluster::registry_requests(env);
    let cpu_before = Cpu::read(env, &[("privateer controller", controller.pid())]);

    let started = Instant::now();
    let watching = tokio::spawn(all_ready(mirrors.clone(), names.clone()));
    futures::stream::iter(images.iter().zip(&names))
        .map(|(image, name)| {
            let mirrors = &mirrors;
            async move {
                let mirror = ImageMirror::new(name, ImageMirrorSpec::for_source(image));
                mirrors.create(&PostParams::default(), &mirror).await
            }
        })
        .buffer_unordered(CREATING)
        .try_collect::<Vec<_>>()
        .await?;
    let creating_seconds = started.elapsed().as_secs_f64();
    let outcome = tokio::time::timeout(timeout, watching).await;
    let seconds = started.elapsed().as_secs_f64();
    let peak_rss_mib = rss_kib(controller.pid()).1 / 1024;
    let cpu = Cpu::read(env, &[("privateer controller", controller.pid())]);
    let mut requests = cluster::delta(
        &requests_before,
        &cluster::requests(&cluster::apiserver_metrics(env).await?),
    );
    // The benchmark's own: its creates and its one list + watch.
    for (key, own) in [
        ("imagemirrors POST", images.len() as f64),
        ("imagemirrors LIST", 1.0),
        ("imagemirrors WATCH", 1.0),
    ] {
        if let Some(count) = requests.get_mut(key) {
            *count = (*count - own).max(0.0);
        }
    }
    requests.retain(|_, v| *v > 0.0);
    let registry_requests = cluster::delta(&registry_before, &cluster::registry_requests(env));
    match outcome {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => bail!("{label}: {e}\n{}", controller.log_tail(20)),
        Ok(Err(e)) => bail!("{label}: the watch task: {e}"),
        Err(_) => {
            let ready = mirrors
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .filter(|m| m.phase() == Phase::Ready)
                .count();
            bail!(
                "{label}: {ready} of {} Ready after {timeout:?}\n{}",
                names.len(),
                controller.log_tail(20)
            )
        }
    }
    let (jobs, duplicate_jobs, job_seconds) = copy_jobs(env).await?;
    let (cpu, machine_cpu) = cpu.since(&cpu_before);
    clean_up(env, &mirrors).await?;
    controller.stop();
    Ok(Run {
        seconds,
        creating_seconds,
        peak_rss_mib,
        requests,
        registry_requests,
        cpu,
        machine_cpu,
        duplicate_jobs,
        jobs,
        job_seconds,
    })
}

/// Until every mirror in `names` is Ready (an error as soon as one is Failed).
async fn all_ready(mirrors: Api<ImageMirror>, names: Vec<String>) -> anyhow::Result<()> {
    let mut phases: HashMap<String, Phase> = HashMap::new();
    let wanted: std::collections::HashSet<String> = names.into_iter().collect();
    let mut ready = 0;
    let mut events = std::pin::pin!(watcher(mirrors, watcher::Config::default()));
    while let Some(event) = events.try_next().await? {
        let mirror = match event {
            watcher::Event::Apply(m) | watcher::Event::InitApply(m) => m,
            _ => continue,
        };
        let Some(name) = mirror.metadata.name.clone().filter(|n| wanted.contains(n)) else {
            continue;
        };
        let phase = mirror.phase();
        if phase == Phase::Failed {
            bail!("{name} Failed: {:?}", mirror.status);
        }
        let before = phases.insert(name, phase);
        match (before == Some(Phase::Ready), phase == Phase::Ready) {
            (false, true) => ready += 1,
            (true, false) => ready -= 1,
            _ => {}
        }
        if ready == wanted.len() {
            return Ok(());
        }
    }
    bail!("the ImageMirror watch ended")
}

/// (copy Jobs, Jobs beyond one per mirror, median creation → completion seconds). A Job
/// names the mirrors it copies for in an annotation (several when batched).
async fn copy_jobs(env: &TestEnv) -> anyhow::Result<(usize, usize, Option<f64>)> {
    let jobs: Api<Job> = Api::namespaced(env.client(), "privateer");
    let selector = format!("{}={}", names::LABEL_COMPONENT, names::COMPONENT_VALUE);
    let listed = jobs
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    let mut per_mirror: BTreeMap<String, usize> = BTreeMap::new();
    let mut seconds = Vec::new();
    for job in &listed {
        let copies: Vec<String> = job
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(names::ANNOTATION_COPIES))
            .and_then(|a| serde_json::from_str(a).ok())
            .unwrap_or_default();
        for mirror in copies {
            *per_mirror.entry(mirror).or_default() += 1;
        }
        let created = job.metadata.creation_timestamp.as_ref();
        let completed = job.status.as_ref().and_then(|s| s.completion_time.as_ref());
        if let (Some(created), Some(completed)) = (created, completed) {
            let took = completed.0.duration_since(created.0);
            seconds.push(took.as_secs_f64());
        }
    }
    let duplicates = per_mirror.values().map(|n| n.saturating_sub(1)).sum();
    Ok((listed.len(), duplicates, crate::median_of(&mut seconds)))
}

/// Deletes every mirror (the controller, still running, lets them go) and every copy Job.
async fn clean_up(env: &TestEnv, mirrors: &Api<ImageMirror>) -> anyhow::Result<()> {
    mirrors
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    let jobs: Api<Job> = Api::namespaced(env.client(), "privateer");
    jobs.delete_collection(&DeleteParams::background(), &ListParams::default())
        .await?;
    for _ in 0..600 {
        let left = mirrors
            .list(&ListParams::default().limit(1))
            .await?
            .items
            .len()
            + jobs
                .list(&ListParams::default().limit(1))
                .await?
                .items
                .len();
        if left == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("mirrors or copy Jobs were still there 5 minutes after they were deleted")
}
