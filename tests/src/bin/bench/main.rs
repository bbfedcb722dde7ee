//! `privateer-bench webhook`: see `webhook.rs`; `privateer-bench scale`: see `scale/mod.rs`.
//!
//! `privateer-bench copy`: `privateer copy` against `skopeo copy --all` and a raw parallel
//! stream of the same blobs (curl GET piped into curl PUT), between two `docker-registry`
//! instances on loopback. Each run copies into a fresh target registry; tools alternate within
//! a run so drift in the machine's speed hits them alike. Prints medians as a Markdown table.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use privateer_e2e::images::{Format, Image, Index, Pusher, layer};
use privateer_e2e::process::{Measured, run_measured};
use privateer_e2e::registry::{Registry, oci_client};
use privateer_e2e::tools;

mod scale;
mod webhook;

#[derive(PartialEq, Eq)]
enum What {
    Copy,
    Webhook,
    Scale,
}

struct Args {
    what: What,
    runs: usize,
    privateer: PathBuf,
    out: Option<PathBuf>,
    /// scale: ImageMirrors pre-warmed at once.
    count: usize,
    /// scale: replicas of the burst's Deployment.
    replicas: usize,
    /// scale: `copy.concurrency` instead of the default.
    concurrency: Option<u32>,
    /// scale: `copy.job.batchSize` instead of the default.
    batch_size: Option<u32>,
    /// scale: only this part (inline, jobs, burst, size).
    only: Option<String>,
    /// scale: ImageMirrors and Pods of the memory-at-size part.
    size_mirrors: usize,
    size_pods: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = std::env::args().skip(1);
    let what = match args.next().as_deref() {
        Some("copy") => What::Copy,
        Some("webhook") => What::Webhook,
        Some("scale") => What::Scale,
        _ => bail!(
            "usage: privateer-bench copy|webhook|scale [--runs N] [--privateer PATH] [--out FILE] \
             [--count N] [--replicas N] [--concurrency N] [--batch-size N] [--only inline|jobs|burst|size] \\
             [--size-mirrors N] [--size-pods N]"
        ),
    };
    let mut parsed = Args {
        runs: if what == What::Scale { 3 } else { 5 },
        what,
        privateer: tools::privateer_binary(),
        out: None,
        count: 1000,
        replicas: 500,
        concurrency: None,
        batch_size: None,
        only: None,
        size_mirrors: 10_000,
        size_pods: 20_000,
    };
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--runs" => parsed.runs = value.parse().context("--runs")?,
            "--privateer" => parsed.privateer = value.into(),
            "--out" => parsed.out = Some(value.into()),
            "--count" => parsed.count = value.parse().context("--count")?,
            "--replicas" => parsed.replicas = value.parse().context("--replicas")?,
            "--concurrency" => parsed.concurrency = Some(value.parse().context("--concurrency")?),
            "--batch-size" => parsed.batch_size = Some(value.parse().context("--batch-size")?),
            "--only" => parsed.only = Some(value),
            "--size-mirrors" => parsed.size_mirrors = value.parse().context("--size-mirrors")?,
            "--size-pods" => parsed.size_pods = value.parse().context("--size-pods")?,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(parsed)
}

/// A seeded image: its repository and every blob (digest, size) a raw copy must move.
struct Subject {
    title: &'static str,
    repository: &'static str,
    blobs: Vec<(String, u64)>,
}

async fn seed(source: &Registry) -> anyhow::Result<Vec<Subject>> {
    let pusher = Pusher::new(oci_client(), source.auth());
    let host = &source.host;

    let mut big = Vec::new();
    for seed in 0..8 {
        let size = 128 << 20;
        let digest = pusher
            .push_generated_layer(host, "bench/big", 100 + seed, size)
            .await?;
        big.push((digest, size));
    }
    let image = Image::with_layer_digests(Format::Docker, "linux/amd64", &big);
    pusher.push_image(host, "bench/big", "1", &image).await?;
    big.push((image.config.digest.clone(), image.config.data.len() as u64));

    let layers: Vec<_> = (0..60).map(|i| layer(200 + i, 1 << 20)).collect();
    let small = Image::new(Format::Docker, "linux/amd64", layers);
    pusher.push_image(host, "bench/small", "1", &small).await?;

    let index = Index::multi_platform(
        Format::Oci,
        &["linux/amd64", "linux/arm64", "linux/s390x"],
        300,
        32 << 20,
    );
    pusher.push_index(host, "bench/multi", "1", &index).await?;

    let blobs_of = |images: &[&Image]| {
        let mut blobs: Vec<(String, u64)> = Vec::new();
        for image in images {
            for blob in std::iter::once(&image.config).chain(&image.layers) {
                if !blobs.iter().any(|(d, _)| *d == blob.digest) {
                    blobs.push((blob.digest.clone(), blob.data.len() as u64));
                }
            }
        }
        blobs
    };
    Ok(vec![
        Subject {
            title: "1 GiB in 8 layers",
            repository: "bench/big",
            blobs: big,
        },
        Subject {
            title: "60 layers of 1 MiB",
            repository: "bench/small",
            blobs: blobs_of(&[&small]),
        },
        Subject {
            title: "3-platform index (shared 32 MiB base + 32 MiB each)",
            repository: "bench/multi",
            blobs: blobs_of(&index.images.iter().collect::<Vec<_>>()),
        },
    ])
}

fn privateer_copy(bin: &PathBuf, source: &str, target: &str) -> Command {
    let mut command = Command::new(bin);
    command
        .args(["copy", &format!("{source}:1"), &format!("{target}:1")])
        .args(["--insecure-registry", host_of(source)])
        .args(["--insecure-registry", host_of(target)])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

fn skopeo_copy(source: &str, target: &str) -> Command {
    let mut command = Command::new("skopeo");
    command
        .args(["--insecure-policy", "copy", "--all", "--quiet"])
        .args(["--src-tls-verify=false", "--dest-tls-verify=false"])
        .arg(format!("docker://{source}:1"))
        .arg(format!("docker://{target}:1"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// Every blob at once: open an upload, then `curl GET | curl PUT` — no checks, no manifests.
fn raw_copy(subject: &Subject, source: &str, target: &str) -> Command {
    let mut script = String::from("set -e\n");
    for (digest, _) in &subject.blobs {
        let _ = writeln!(
            script,
            "( loc=$(curl -sSf -X POST -o /dev/null -w '%header{{location}}' http://{target_host}/v2/{repo}/blobs/uploads/); \
             curl -sSf http://{source}/blobs/{digest} | curl -sSf -T - -X PUT -H 'Content-Type: application/octet-stream' \"$loc&digest={digest}\" -o /dev/null ) &",
            target_host = host_of(target),
            repo = subject.repository,
            source = v2(source),
        );
    }
    script.push_str("wait\n");
    let mut command = Command::new("bash");
    command.arg("-c").arg(script);
    command
}

fn host_of(reference: &str) -> &str {
    reference.split('/').next().unwrap_or(reference)
}

/// `host/repo` → `host/v2/repo`.
fn v2(reference: &str) -> String {
    let (host, repository) = reference.split_once('/').unwrap_or((reference, ""));
    format!("{host}/v2/{repository}")
}

fn measure(command: &mut Command, what: &str) -> anyhow::Result<Measured> {
    let measured = run_measured(command)?;
    if !measured.status.success() {
        bail!("{what} failed: {}", measured.status);
    }
    Ok(measured)
}

#[derive(Default)]
struct Samples {
    privateer: Vec<Duration>,
    privateer_again: Vec<Duration>,
    skopeo: Vec<Duration>,
    skopeo_again: Vec<Duration>,
    raw: Vec<Duration>,
    privateer_rss: u64,
    skopeo_rss: u64,
}

fn median(samples: &[Duration]) -> f64 {
    let mut seconds: Vec<f64> = samples.iter().map(Duration::as_secs_f64).collect();
    median_of(&mut seconds).unwrap_or(f64::NAN)
}

/// The median of `values` (sorted in place); `None` when empty.
fn median_of(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => None,
        n if n % 2 == 1 => Some(values[n / 2]),
        n => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

fn run_subject(
    args: &Args,
    dir: &std::path::Path,
    source: &Registry,
    subject: &Subject,
    serial: &mut usize,
) -> anyhow::Result<Samples> {
    let mut samples = Samples::default();
    let from = format!("{}/{}", source.host, subject.repository);
    let mut fresh_target = || -> anyhow::Result<(Registry, PathBuf)> {
        *serial += 1;
        let name = format!("target-{serial}");
        Ok((Registry::start(&name, dir, None)?, dir.join(name)))
    };
    for run in 0..args.runs {
        eprintln!("  run {}/{}", run + 1, args.runs);
        let (target, storage) = fresh_target()?;
        let to = format!("{}/{}", target.host, subject.repository);
        let first = measure(
            &mut privateer_copy(&args.privateer, &from, &to),
            "privateer",
        )?;
        samples.privateer.push(first.wall);
        samples.privateer_rss = samples.privateer_rss.max(first.peak_rss_kib);
        let again = measure(
            &mut privateer_copy(&args.privateer, &from, &to),
            "privateer",
        )?;
        samples.privateer_again.push(again.wall);
        drop(target);
        std::fs::remove_dir_all(storage)?;

        let (target, storage) = fresh_target()?;
        let to = format!("{}/{}", target.host, subject.repository);
        let first = measure(&mut skopeo_copy(&from, &to), "skopeo")?;
        samples.skopeo.push(first.wall);
        samples.skopeo_rss = samples.skopeo_rss.max(first.peak_rss_kib);
        samples
            .skopeo_again
            .push(measure(&mut skopeo_copy(&from, &to), "skopeo")?.wall);
        drop(target);
        std::fs::remove_dir_all(storage)?;

        let (target, storage) = fresh_target()?;
        let to = format!("{}/{}", target.host, subject.repository);
        samples
            .raw
            .push(measure(&mut raw_copy(subject, &from, &to), "raw stream")?.wall);
        drop(target);
        std::fs::remove_dir_all(storage)?;
    }
    Ok(samples)
}

fn report(subjects: &[Subject], all: &[Samples], runs: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Medians of {runs} runs, seconds (fresh target registry per run; peak RSS is the highest of the runs).\n"
    );
    let _ = writeln!(
        out,
        "| image | privateer | skopeo --all | raw parallel stream | privateer / skopeo | privateer / raw | re-copy privateer | re-copy skopeo | peak RSS privateer | peak RSS skopeo |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for (subject, samples) in subjects.iter().zip(all) {
        let (p, s, r) = (
            median(&samples.privateer),
            median(&samples.skopeo),
            median(&samples.raw),
        );
        let _ = writeln!(
            out,
            "| {} | {p:.3} | {s:.3} | {r:.3} | {:.2}× | {:.2}× | {:.3} | {:.3} | {} MiB | {} MiB |",
            subject.title,
            p / s,
            p / r,
            median(&samples.privateer_again),
            median(&samples.skopeo_again),
            samples.privateer_rss / 1024,
            samples.skopeo_rss / 1024,
        );
    }
    out
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    match args.what {
        What::Webhook => return webhook::main(&args),
        What::Scale => return scale::main(&args),
        What::Copy => {}
    }
    tools::require(&[tools::docker_registry()])?;
    for program in ["skopeo", "curl"] {
        if Command::new(program).arg("--version").output().is_err() {
            bail!("{program} is missing: run `just setup`");
        }
    }
    let dir = std::env::temp_dir().join(format!("privateer-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| -> anyhow::Result<String> {
        let source = Registry::start("source", &dir, None)?;
        eprintln!("seeding {} ...", source.host);
        let runtime = tokio::runtime::Runtime::new()?;
        let subjects = runtime.block_on(seed(&source))?;
        let mut serial = 0;
        let mut all = Vec::new();
        for subject in &subjects {
            eprintln!("{}", subject.title);
            all.push(run_subject(&args, &dir, &source, subject, &mut serial)?);
        }
        Ok(report(&subjects, &all, args.runs))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    let table = result?;
    print!("{table}");
    write_out(&args, &table)
}

/// `table` into `--out`, when given.
fn write_out(args: &Args, table: &str) -> anyhow::Result<()> {
    if let Some(out) = &args.out {
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(out, table)?;
    }
    Ok(())
}
