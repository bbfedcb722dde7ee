//! The copier and the resolve the controller runs in-process, against a registry that
//! misbehaves on purpose (`privateer_e2e::hostile`). Each fault ends in a classified error
//! that names the problem, within the configured bounds, and never in a panic, a hang or a
//! blob moved for a manifest that cannot be copied.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use privateer_e2e::hostile::{Fault, HostileRegistry};
use privateer_e2e::registry::Registry;
use privateer_registry::{
    CopyError, CopyOptions, CopyReport, Credentials, Endpoint, ErrorClass, Image, Redirects,
    RetryPolicy, Silent, Timeouts, TlsOptions,
};

/// Quick retries and short stalls: these tests are about what ends, not how fast.
fn options(insecure: &[&str]) -> CopyOptions {
    CopyOptions {
        retry: RetryPolicy {
            attempts: 2,
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(20),
        },
        timeouts: Timeouts {
            connect: Duration::from_secs(2),
            read: Duration::from_millis(400),
            resolve: Duration::from_secs(20),
            copy: Duration::from_secs(40),
        },
        tls: TlsOptions {
            insecure_hosts: insecure.iter().map(|h| (*h).to_owned()).collect(),
            ca_pems: Vec::new(),
        },
        ..CopyOptions::default()
    }
}

fn image(reference: &str, credentials: Credentials) -> Image {
    let reference = privateer_image::Reference::parse(reference).unwrap();
    Image {
        endpoint: Some(Endpoint::parse(&format!("http://{}", reference.domain())).unwrap()),
        reference,
        credentials,
    }
}

async fn copy_between(
    source: &HostileRegistry,
    target: &str,
    options: &CopyOptions,
) -> Result<CopyReport, CopyError> {
    let source = image(&source.reference(), Credentials::Anonymous);
    let target = image(target, Credentials::Anonymous);
    // A panic anywhere in the copy would fail this test: the controller runs the same code.
    tokio::time::timeout(
        Duration::from_secs(120),
        privateer_registry::copy(&source, &target, options, Arc::new(Silent)),
    )
    .await
    .expect("the copy ended on its own")
}

/// A copy from a registry with `fault` to a sink that must see no upload.
async fn copy_fails(fault: Fault) -> (CopyError, HostileRegistry) {
    let source = HostileRegistry::start(fault).unwrap();
    let sink = HostileRegistry::start(Fault::None).unwrap();
    let options = options(&[]);
    let error = copy_between(&source, &format!("{}/sink/copy:1", sink.host), &options)
        .await
        .expect_err("the copy fails");
    let uploads: Vec<_> = sink
        .seen()
        .into_iter()
        .filter(|s| s.method == "POST" || s.method == "PUT")
        .collect();
    assert!(
        uploads.is_empty(),
        "nothing is written for {error}: {uploads:?}"
    );
    (error, source)
}

async fn resolve(
    source: &HostileRegistry,
    options: &CopyOptions,
) -> Result<Option<String>, CopyError> {
    let image = image(&source.reference(), Credentials::Anonymous);
    tokio::time::timeout(
        Duration::from_secs(60),
        privateer_registry::resolve(&image, options),
    )
    .await
    .expect("the resolve ended on its own")
}

#[tokio::test]
async fn retry_after_is_waited_out_and_a_long_one_pauses_the_host_for_every_copy() {
    // One 429 asking for a second, longer than the copy's own first retry delay: waited out.
    let (dir, _cleanup) = scratch("retry-after");
    let Some(target) = target(&dir, "retry-after") else {
        return;
    };
    let source = HostileRegistry::start(Fault::TooManyRequests {
        first: 1,
        retry_after: "1".into(),
    })
    .unwrap();
    let mut options = options(&[]);
    options.retry.attempts = 3;
    options.retry.max_delay = Duration::from_secs(2);
    let started = std::time::Instant::now();
    copy_between(&source, &format!("{}/mirror/copy:1", target.host), &options)
        .await
        .expect("copied after the wait");
    assert!(started.elapsed() >= Duration::from_millis(900));

    // An hour: no retry that would hold the copy; throttled, saying how long.
    let sink = HostileRegistry::start(Fault::None).unwrap();
    let source = HostileRegistry::start(Fault::TooManyRequests {
        first: 1,
        retry_after: "3600".into(),
    })
    .unwrap();
    let error = copy_between(&source, &format!("{}/sink/copy:2", sink.host), &options)
        .await
        .expect_err("throttled");
    assert_eq!(error.class, ErrorClass::Throttled, "{error}");
    assert!(
        error.retry_after >= Some(Duration::from_secs(3500)),
        "{error:?}"
    );
    assert_eq!(source.seen().len(), 1, "asked once");
    // The next copy from that host does not ask at all while the pause lasts.
    let again = copy_between(&source, &format!("{}/sink/copy:3", sink.host), &options)
        .await
        .expect_err("still paused");
    assert_eq!(again.class, ErrorClass::Throttled);
    assert!(again.message.contains("Retry-After"), "{again}");
    assert_eq!(
        source.seen().len(),
        1,
        "the paused host was not asked again"
    );
}

#[tokio::test]
async fn a_token_with_crlf_is_refused_not_panicked_on() {
    let (error, _) = copy_fails(Fault::TokenWithCrLf).await;
    assert_eq!(error.class, ErrorClass::Invalid, "{error}");
    assert!(error.message.contains("0x0d"), "{error}");
    let source = HostileRegistry::start(Fault::TokenWithCrLf).unwrap();
    let error = resolve(&source, &options(&[])).await.expect_err("refused");
    assert!(error.to_string().contains("token"), "{error}");
}

#[tokio::test]
async fn a_huge_token_is_refused_at_the_limit() {
    let (error, _) = copy_fails(Fault::HugeToken(8 << 20)).await;
    assert!(error.message.contains("limits.tokenBytes"), "{error}");
    assert!(!error.is_transient());
}

#[tokio::test]
async fn stalled_peers_are_transient_failures_that_name_the_host() {
    let (dir, _cleanup) = scratch("stall");
    let Some(sink) = target(&dir, "stall") else {
        return;
    };
    for fault in [
        Fault::NeverAnswer,
        Fault::StallToken,
        Fault::StallManifestBody,
        Fault::StallBlobBody,
    ] {
        let source = HostileRegistry::start(fault.clone()).unwrap();
        let to = format!("{}/sink/copy:1", sink.host);
        let error = copy_between(&source, &to, &options(&[]))
            .await
            .expect_err("stalls end");
        assert_eq!(error.class, ErrorClass::Network, "{fault:?}: {error}");
        assert!(
            error.message.contains("stalled") && error.message.contains("127.0.0.1"),
            "{fault:?}: {error}"
        );
    }
}

#[tokio::test]
async fn the_whole_copy_and_resolve_have_deadlines() {
    let source = HostileRegistry::start(Fault::NeverAnswer).unwrap();
    let mut slow = options(&[]);
    slow.timeouts.read = Duration::from_secs(600);
    slow.timeouts.copy = Duration::from_millis(800);
    slow.timeouts.resolve = Duration::from_millis(800);
    let error = copy_between(&source, &format!("{}/x/y:1", source.host), &slow)
        .await
        .expect_err("deadline");
    assert!(
        error.message.contains("timeouts.copy") && error.is_transient(),
        "{error}"
    );
    let error = resolve(&source, &slow).await.expect_err("deadline");
    assert!(
        error.message.contains("timeouts.resolve") && error.message.contains(&source.host),
        "{error}"
    );
}

#[tokio::test]
async fn oversized_manifests_are_refused_before_they_are_read() {
    for chunked in [false, true] {
        let (error, _) = copy_fails(Fault::HugeManifest {
            bytes: 50 << 20,
            chunked,
        })
        .await;
        assert!(
            error.message.contains("limits.manifestBytes = 4194304"),
            "{error}"
        );
        assert!(!error.is_transient());
    }
    // A HEAD without Docker-Content-Digest makes resolve pull the manifest: bounded too.
    let source = HostileRegistry::start(Fault::HeadWithoutDigestHugeManifest(20 << 20)).unwrap();
    let error = resolve(&source, &options(&[])).await.expect_err("refused");
    assert!(error.message.contains("limits.manifestBytes"), "{error}");
}

#[tokio::test]
async fn counts_over_the_limits_move_no_blob() {
    // 100,000 layers do not fit the 4 MiB a manifest may have; 10,000 do, and are too many.
    let (error, _) = copy_fails(Fault::ManyLayers(100_000)).await;
    assert!(error.message.contains("limits.manifestBytes"), "{error}");
    let (error, source) = copy_fails(Fault::ManyLayers(10_000)).await;
    assert!(
        error.message.contains("10000 layers") && error.message.contains("limits.layers = 1000"),
        "{error}"
    );
    assert!(
        source.seen().iter().all(|s| !s.path.contains("/blobs/")),
        "no blob was pulled"
    );
    let (error, _) = copy_fails(Fault::ManyChildren(5_000)).await;
    assert!(error.message.contains("limits.indexChildren"), "{error}");
    let (error, _) = copy_fails(Fault::OverflowingSizes).await;
    assert!(error.message.contains("limits.totalBytes"), "{error}");
}

#[tokio::test]
async fn faults_that_cannot_heal_are_permanent_and_not_retried() {
    for fault in [Fault::BlobShorterThanDeclared, Fault::RedirectLoop] {
        let source = HostileRegistry::start(fault.clone()).unwrap();
        let sink = HostileRegistry::start(Fault::None).unwrap();
        let error = copy_between(&source, &format!("{}/sink/x:1", sink.host), &options(&[]))
            .await
            .expect_err("fails");
        assert!(!error.is_transient(), "{fault:?}: {error}");
        let layer_gets = source
            .seen()
            .iter()
            .filter(|s| s.method == "GET" && s.path.contains("/blobs/"))
            .count();
        assert!(layer_gets <= 2, "{fault:?}: pulled {layer_gets} times");
    }
}

#[tokio::test]
async fn redirects_do_not_carry_credentials_or_echo_other_hosts() {
    let other =
        HostileRegistry::start(Fault::ErrorBody("internal admin page: secret=42".into())).unwrap();
    let source = HostileRegistry::start(Fault::RedirectBlobsTo(format!(
        "http://{}/elsewhere",
        other.host
    )))
    .unwrap();
    let sink = HostileRegistry::start(Fault::None).unwrap();
    let from = image(
        &source.reference(),
        Credentials::Basic {
            username: "user".into(),
            password: "hunter2".into(),
        },
    );
    let to = image(&format!("{}/sink/x:1", sink.host), Credentials::Anonymous);
    let error = privateer_registry::copy(&from, &to, &options(&[]), Arc::new(Silent))
        .await
        .expect_err("the other host fails");
    assert!(!error.to_string().contains("secret"), "{error}");
    assert!(error.to_string().contains("a redirect"), "{error}");
    assert!(
        source.seen().iter().any(|s| s.authorization.is_some()),
        "the source got the credentials"
    );
    assert!(!other.seen().is_empty() && other.seen().iter().all(|s| s.authorization.is_none()));

    let mut strict = options(&[]);
    strict.redirects = Redirects {
        allow_private: false,
        ..Redirects::default()
    };
    let error = privateer_registry::copy(&from, &to, &strict, Arc::new(Silent))
        .await
        .expect_err("private redirect refused");
    assert!(
        error.to_string().contains("allowPrivate") && !error.is_transient(),
        "{error}"
    );
}

#[tokio::test]
async fn digest_headers_are_validated_before_use() {
    for bad in ["latest", "sha256:../../../v2/other/manifests/x", "md5:abc"] {
        let source = HostileRegistry::start(Fault::DigestHeader(bad.into())).unwrap();
        let error = resolve(&source, &options(&[])).await.expect_err("refused");
        assert!(
            error.message.contains("Docker-Content-Digest"),
            "{bad}: {error}"
        );
        let (error, source) = copy_fails(Fault::DigestHeader(bad.into())).await;
        assert_eq!(error.class, ErrorClass::Invalid, "{error}");
        assert!(
            source
                .seen()
                .iter()
                .all(|s| s.path.starts_with("/v2/hostile/image/manifests/1.0")),
            "{bad}"
        );
    }
}

/// A scratch directory for a real target registry.
fn scratch(name: &str) -> (PathBuf, Cleanup) {
    let dir = std::env::temp_dir().join(format!("privateer-hostile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    (dir.clone(), Cleanup(dir))
}

struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A real `docker-registry` as the target, or `None` (a loud skip) where it is missing.
fn target(dir: &Path, name: &str) -> Option<Registry> {
    if !Path::new("/usr/bin/docker-registry").exists() {
        assert!(
            std::env::var_os("PRIVATEER_REQUIRE_TESTENV").is_none(),
            "docker-registry is missing: run `just setup`"
        );
        eprintln!("!!! SKIPPED {name}: docker-registry is missing (just setup)");
        return None;
    }
    Some(Registry::start(name, dir, None).unwrap())
}

#[tokio::test]
async fn a_sha512_source_converges_on_the_target() {
    let (dir, _cleanup) = scratch("sha512");
    let Some(target) = target(&dir, "sha512") else {
        return;
    };
    let source = HostileRegistry::start(Fault::Sha512Digest).unwrap();
    assert!(source.digest.starts_with("sha512:"));
    let resolved = resolve(&source, &options(&[])).await.unwrap();
    assert_eq!(resolved.as_deref(), Some(source.digest.as_str()));
    let to = format!("{}/mirror/sha512:1.0", target.host);
    let first = copy_between(&source, &to, &options(&[])).await.unwrap();
    assert_eq!(first.source_digest, source.digest);
    assert!(first.digest.starts_with("sha256:") && !first.up_to_date);
    let again = copy_between(&source, &to, &options(&[])).await.unwrap();
    assert!(again.up_to_date, "{again:?}");
    assert_eq!(again.digest, first.digest);
}

#[tokio::test]
async fn a_failed_copy_leaves_no_upload_session_behind() {
    let (dir, _cleanup) = scratch("uploads");
    let Some(target) = target(&dir, "uploads") else {
        return;
    };
    let source = HostileRegistry::start(Fault::BreakBlobBody).unwrap();
    let error = copy_between(
        &source,
        &format!("{}/mirror/broken:1.0", target.host),
        &options(&[]),
    )
    .await
    .expect_err("the source breaks mid-blob");
    assert_eq!(error.class, ErrorClass::Network, "{error}");
    // An open session in distribution's storage is `_uploads/<id>/` with `startedat` and
    // `data`. Its own handler of the aborted PUT may still write a hash-state file after the
    // DELETE: that is no session (nothing to resume, nothing stored).
    let uploads = dir.join("uploads/data/docker/registry/v2/repositories/mirror/broken/_uploads");
    let open: Vec<_> = std::fs::read_dir(&uploads)
        .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|session| session.join("startedat").exists() || session.join("data").exists())
        .collect();
    assert!(
        open.is_empty(),
        "upload sessions left open in the target: {open:?}"
    );
}

#[tokio::test]
async fn a_layer_type_mentioning_foreign_is_still_copied() {
    let (dir, _cleanup) = scratch("foreign");
    let Some(target) = target(&dir, "foreign") else {
        return;
    };
    let source = HostileRegistry::start(Fault::ForeignLookalikeLayer).unwrap();
    let report = copy_between(
        &source,
        &format!("{}/mirror/foreign:1.0", target.host),
        &options(&[]),
    )
    .await
    .unwrap();
    assert_eq!(report.blobs_copied, 2, "config and layer: {report:?}");
    assert!(
        report.bytes_copied > source.layer.len() as u64,
        "{report:?}"
    );
}
