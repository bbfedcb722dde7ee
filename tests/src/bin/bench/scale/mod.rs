//! `privateer-bench scale`: privateer at size on the local environment (control plane, the
//! real node, registries, moto as ECR), release build.
//! - pre-warm: `--count` ImageMirrors declared at once, copied inline and through copy Jobs
//!   (`--runs` each, medians): time until all Ready, the controller's peak RSS, API requests
//!   per mirror (the API server's own counters), duplicate Jobs, where the CPU went;
//! - a burst: a Deployment of `--replicas` Pods of 3 new images: time until every Pod is
//!   released, the API server's webhook latency, mirrors created;
//! - memory at size: `--size-mirrors` ImageMirrors and `--size-pods` Pods: peak RSS of
//!   `privateer controller`, `privateer webhook` and `privateer run`.

use std::fmt::Write as _;
use std::time::Duration;

use privateer_e2e::TestEnv;

use crate::Args;

mod burst;
mod cluster;
mod prewarm;
mod size;

pub fn main(args: &Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let table = runtime.block_on(measure(args))?;
    print!("{table}");
    crate::write_out(args, &table)
}

/// Each part's figures as soon as they are in (a later part failing keeps them).
fn progress(args: &Args, out: &str, from: usize) {
    eprint!("{}", &out[from..]);
    let _ = crate::write_out(args, out);
}

async fn measure(args: &Args) -> anyhow::Result<String> {
    let env = TestEnv::full().start().await?;
    privateer_e2e::operator::prepare_cluster(&env).await?;
    let count = args.count;
    let mut out = String::new();
    let only = |phase: &str| args.only.as_deref().is_none_or(|o| o == phase);
    if only("inline") || only("jobs") {
        eprintln!("seeding {count} images ...");
        prewarm::seed(&env, 0, count).await?;
        let images = prewarm::images(0, count);
        // Each override is its own YAML document: the documents are merged in order.
        let concurrency = args
            .concurrency
            .map(|c| format!("copy: {{concurrency: {c}}}\n---\n"))
            .unwrap_or_default()
            + &args
                .batch_size
                .map(|b| format!("copy: {{job: {{batchSize: {b}}}}}\n---\n"))
                .unwrap_or_default();
        let _ = writeln!(
            out,
            "## Pre-warm {count} ImageMirrors declared at once ({} runs, medians)\n",
            args.runs
        );
        for (mode, executor, timeout) in [("inline", "inline", 300), ("jobs", "job", 900)] {
            if !only(mode) {
                continue;
            }
            let mut runs = Vec::new();
            for run in 0..args.runs {
                let label = format!("prewarm-{mode}-{run}");
                eprintln!("{label} ...");
                let extra = format!(
                    "{concurrency}copy: {{executor: {executor}}}\ntarget: {{prefix: bench-{mode}-{run}}}\n"
                );
                let figures = prewarm::run(
                    &env,
                    args,
                    &label,
                    &images,
                    &extra,
                    Duration::from_secs(timeout),
                )
                .await?;
                eprintln!(
                    "  {:.1} s, peak RSS {} MiB",
                    figures.seconds, figures.peak_rss_mib
                );
                runs.push(figures);
            }
            let from = out.len();
            report_prewarm(&mut out, mode, count, &mut runs);
            progress(args, &out, from);
        }
    }
    if only("burst") {
        eprintln!("burst of {} replicas ...", args.replicas);
        let b = burst::run(&env, args, args.replicas).await?;
        let from = out.len();
        let ms = |s: Option<f64>| s.map_or("-".to_owned(), |s| format!("≤ {:.0} ms", s * 1000.0));
        let _ = writeln!(
            out,
            "## A burst: a {}-replica Deployment of 3 new images (`privateer run`, Gate)\n",
            b.replicas
        );
        let _ = writeln!(
            out,
            "| every Pod released | last Pod created | webhook p50 (API server) | webhook p99 (API server) | mirrors created | peak RSS |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        let _ = writeln!(
            out,
            "| {:.1} s | {:.1} s | {} | {} | {} | {} MiB |\n",
            b.released_seconds,
            b.created_seconds,
            ms(b.webhook_p50_seconds),
            ms(b.webhook_p99_seconds),
            b.mirrors,
            b.peak_rss_mib
        );
        progress(args, &out, from);
    }
    if only("size") {
        eprintln!(
            "memory at size: {} mirrors, {} Pods ...",
            args.size_mirrors, args.size_pods
        );
        let s = size::run(&env, args, args.size_mirrors, args.size_pods).await?;
        let _ = writeln!(
            out,
            "## Memory at size: {} ImageMirrors, {} Pods (all done after {:.0} s, inline; {} Failed)\n",
            s.mirrors, s.pods, s.ready_seconds, s.failed
        );
        let _ = writeln!(out, "| process | peak RSS |");
        let _ = writeln!(out, "|---|---|");
        let _ = writeln!(
            out,
            "| privateer controller (through the copies) | {} MiB |",
            s.controller_mib
        );
        let _ = writeln!(
            out,
            "| privateer webhook (through the Pods' admission) | {} MiB |",
            s.webhook_mib
        );
        let _ = writeln!(
            out,
            "| privateer run (started on the full cluster) | {} MiB |\n",
            s.run_mib
        );
    }
    Ok(out)
}

fn report_prewarm(out: &mut String, mode: &str, count: usize, runs: &mut [prewarm::Run]) {
    let mut seconds: Vec<f64> = runs.iter().map(|r| r.seconds).collect();
    let median = crate::median_of(&mut seconds).unwrap_or(f64::NAN);
    let mut rss: Vec<f64> = runs.iter().map(|r| r.peak_rss_mib as f64).collect();
    let rss = crate::median_of(&mut rss).unwrap_or(f64::NAN);
    // The run whose time is the median explains where the time went.
    runs.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    let middle = &runs[runs.len() / 2];
    let per_mirror = middle.requests.values().sum::<f64>() / count as f64;
    let all: Vec<String> = runs.iter().map(|r| format!("{:.1}", r.seconds)).collect();
    let _ = write!(
        out,
        "**{mode}**: all Ready in **{median:.1} s** (runs: {} s; the creates alone {:.1} s), \
         controller peak RSS **{rss:.0} MiB**, {:.1} API requests per mirror",
        all.join(", "),
        middle.creating_seconds,
        per_mirror
    );
    if mode == "jobs" {
        let _ = write!(
            out,
            ", {} copy Jobs, **{} duplicate**, a Job's creation to completion {} s (median)",
            middle.jobs,
            middle.duplicate_jobs,
            middle
                .job_seconds
                .map_or("-".to_owned(), |s| format!("{s:.0}"))
        );
    }
    let _ = writeln!(out, "\n\n| API requests (median run) | per mirror |");
    let _ = writeln!(out, "|---|---|");
    let mut requests: Vec<_> = middle.requests.iter().collect();
    requests.sort_by(|a, b| b.1.total_cmp(a.1));
    for (what, n) in requests.iter().take(12) {
        let _ = writeln!(out, "| {what} | {:.2} |", *n / count as f64);
    }
    let registry_total = middle.registry_requests.values().sum::<f64>() / count as f64;
    let _ = writeln!(
        out,
        "\n| privateer's registry requests (median run; {registry_total:.1} in all) | per mirror |"
    );
    let _ = writeln!(out, "|---|---|");
    let mut asked: Vec<_> = middle.registry_requests.iter().collect();
    asked.sort_by(|a, b| b.1.total_cmp(a.1));
    for (what, n) in asked {
        let _ = writeln!(out, "| {what} | {:.2} |", *n / count as f64);
    }
    let _ = writeln!(
        out,
        "\n| CPU (median run, {:.1} s of {:.1} s × 2 cores busy) | seconds |",
        middle.machine_cpu, middle.seconds
    );
    let _ = writeln!(out, "|---|---|");
    for (process, used) in middle.cpu.iter().filter(|(_, s)| *s >= 0.05).take(10) {
        let _ = writeln!(out, "| {process} | {used:.1} |");
    }
    let _ = writeln!(out);
}
