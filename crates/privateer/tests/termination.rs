//! The termination message of `privateer copy` (what the controller reads from a copy Pod)
//! stays within the kubelet's 4,096 bytes and parses, whatever the copy reports: here a
//! 300-child index under `--platform`, whose platform list alone is over the limit, and the
//! largest batch a copy Job runs.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::process::Command;

use privateer_e2e::images::{Format, Index, Pusher};
use privateer_e2e::registry::{Registry, oci_client};
use privateer_registry::{BATCH_MAX, CopyOutcome, TERMINATION_MESSAGE_MAX_BYTES};

/// A scratch directory for `test`, or `None` (skipped) without `docker-registry`.
fn scratch(test: &str) -> Option<std::path::PathBuf> {
    if !Path::new("/usr/bin/docker-registry").exists() {
        assert!(
            std::env::var_os("PRIVATEER_REQUIRE_TESTENV").is_none(),
            "docker-registry is missing: run `just setup`"
        );
        eprintln!("!!! SKIPPED termination message: docker-registry is missing (just setup)");
        return None;
    }
    let dir = std::env::temp_dir().join(format!(
        "privateer-termination-{test}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Some(dir)
}

/// Runs `privateer copy PAIRS… --platform linux/amd64` between the plain-HTTP `source` and
/// `target`; its termination message, checked to fit what the kubelet keeps.
fn copy_for_message(dir: &Path, source: &Registry, target: &Registry, pairs: &[String]) -> String {
    let log = dir.join("termination-log");
    let output = Command::new(env!("CARGO_BIN_EXE_privateer"))
        .arg("copy")
        .args(pairs)
        .args(["--platform", "linux/amd64", "--termination-log"])
        .arg(&log)
        .args(["--insecure-registry", &source.host])
        .args(["--insecure-registry", &target.host])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let message = std::fs::read_to_string(&log).unwrap();
    assert!(
        message.len() <= TERMINATION_MESSAGE_MAX_BYTES,
        "{} bytes: {message}",
        message.len()
    );
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_300_child_index_leaves_a_whole_parseable_termination_message() {
    let Some(dir) = scratch("wide") else {
        return;
    };
    let source = Registry::start("source", &dir, None).unwrap();
    let target = Registry::start("target", &dir, None).unwrap();
    let platforms: Vec<String> = (0..300).map(|i| format!("linux/amd64/v{i}")).collect();
    let platforms: Vec<&str> = platforms.iter().map(String::as_str).collect();
    let index = Index::multi_platform(Format::Oci, &platforms, 70, 64);
    Pusher::new(oci_client(), source.auth())
        .push_index(&source.host, "wide", "v1", &index)
        .await
        .unwrap();

    // Every child matches (no variant named): the new index keeps all 300.
    let pairs = [
        format!("{}/wide:v1", source.host),
        format!("{}/wide:v1-amd64", target.host),
    ];
    let message = copy_for_message(&dir, &source, &target, &pairs);
    let outcome = CopyOutcome::parse(&message).expect("the message parses");
    let report = outcome.report.expect("a report");
    assert_eq!(report.platforms.len() + report.platforms_omitted, 300);
    assert!(report.platforms_omitted > 0, "the full list would not fit");
    // The digest it reports is the one the target holds.
    let (_, held) = Pusher::new(oci_client(), target.auth())
        .pull_manifest(&target.host, "wide", "v1-amd64")
        .await
        .unwrap();
    assert_eq!(report.digest, held);
    drop((source, target));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_batch_leaves_every_copys_digests_and_later_copies_know_the_repository() {
    let Some(dir) = scratch("batch") else {
        return;
    };
    let source = Registry::start("source", &dir, None).unwrap();
    let target = Registry::start("target", &dir, None).unwrap();
    let pusher = Pusher::new(oci_client(), source.auth());
    let mut pairs = Vec::new();
    for i in 0..BATCH_MAX {
        // Two platforms filtered to one: each result carries two different digests, the most
        // a success needs of the shared message. Seeds 10 apart share no blob: the registry
        // races on one blob uploaded by two copies at once.
        let index = Index::multi_platform(
            Format::Oci,
            &["linux/amd64", "linux/arm64"],
            10 * i as u64,
            64,
        );
        pusher
            .push_index(&source.host, "batch", &format!("v{i}"), &index)
            .await
            .unwrap();
        pairs.push(format!("{}/batch:v{i}", source.host));
        pairs.push(format!("{}/mirror/batch:v{i}", target.host));
    }
    let message = copy_for_message(&dir, &source, &target, &pairs);
    let outcomes = CopyOutcome::parse_batch(&message).expect("the message parses");
    assert_eq!(outcomes.len(), BATCH_MAX);
    let reader = Pusher::new(oci_client(), target.auth());
    for (i, outcome) in outcomes.into_iter().enumerate() {
        assert!(outcome.succeeded(), "{i}: {outcome:?}");
        let report = outcome.report.expect("a report");
        let (_, source_digest) = pusher
            .pull_manifest(&source.host, "batch", &format!("v{i}"))
            .await
            .unwrap();
        let (_, held) = reader
            .pull_manifest(&target.host, "mirror/batch", &format!("v{i}"))
            .await
            .unwrap();
        assert_eq!(report.digest, held, "{i}");
        assert_eq!(report.source_digest, source_digest, "{i}");
        assert_ne!(report.digest, report.source_digest, "{i}: filtered");
    }
    // Only the copies started before the repository existed asked whether it does (the run
    // copies a few pairs at a time): later ones knew from the first write.
    let asked = target
        .requests_from("privateer/")
        .into_iter()
        .filter(|(_, path, _)| path.contains("/tags/list"))
        .count();
    assert!((1..=4).contains(&asked), "{asked} tag lists");
    drop((source, target));
    let _ = std::fs::remove_dir_all(&dir);
}
