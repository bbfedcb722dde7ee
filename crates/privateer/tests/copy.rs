//! `privateer copy` between real `docker-registry` instances on loopback (and moto for the ECR
//! token), run as the subprocess a copy Job runs: exit statuses, stdout, the termination
//! message and what lands in the target.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{BufRead, BufReader};

use std::process::{Command, Stdio};

use privateer_e2e::TestEnv;
use privateer_e2e::images::{Format, Image, Index, layer};
use privateer_e2e::moto::{ACCESS_KEY, ACCOUNT, REGION, SECRET_KEY};
use privateer_e2e::process::run_measured;
use privateer_e2e::registry::{Registry, oci_client};
use serde_json::Value;

#[path = "common/copying.rs"]
mod copying;
use copying::*;

/// Every manifest and blob of `index` is in `repository` of `registry`, byte for byte.
async fn assert_index_present(registry: &Registry, repository: &str, tag: &str, index: &Index) {
    let pusher = pusher(registry);
    let (bytes, digest) = pusher
        .pull_manifest(&registry.host, repository, tag)
        .await
        .unwrap();
    assert_eq!(digest, index.manifest.digest);
    assert_eq!(bytes, index.manifest.data);
    for image in &index.images {
        assert_image_present(registry, repository, &image.manifest.digest, image).await;
    }
}

async fn assert_image_present(registry: &Registry, repository: &str, at: &str, image: &Image) {
    let pusher = pusher(registry);
    let (bytes, _) = pusher
        .pull_manifest(&registry.host, repository, at)
        .await
        .unwrap();
    assert_eq!(bytes, image.manifest.data);
    for blob in std::iter::once(&image.config).chain(&image.layers) {
        let pulled = pusher
            .pull_blob(&registry.host, repository, &blob.digest)
            .await
            .unwrap();
        assert_eq!(pulled, blob.data, "blob {}", blob.digest);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_platform_indexes_copy_with_identical_digests_and_shared_layers_once() {
    let Some(scratch) = Scratch::new("index") else {
        return;
    };
    let source = scratch.registry("source", None);
    let target = scratch.registry("target", None);
    for (format, seed) in [(Format::Oci, 10), (Format::Docker, 20)] {
        let index = Index::multi_platform(
            format,
            &["linux/amd64", "linux/arm64/v8", "linux/s390x"],
            seed,
            64 * 1024,
        );
        let repository = format!("library/multi-{format:?}").to_lowercase();
        pusher(&source)
            .push_index(&source.host, &repository, "1.0", &index)
            .await
            .unwrap();
        let run = copy_between(
            &scratch,
            &source,
            &format!("{repository}:1.0"),
            &target,
            &format!("mirror/{repository}"),
            &[],
        );
        assert_eq!(run.code(), Some(0), "{}", run.stderr());
        let pinned = format!(
            "{}/mirror/{repository}:1.0@{}\n",
            target.host, index.manifest.digest
        );
        assert_eq!(run.stdout(), pinned);
        assert_index_present(&target, &format!("mirror/{repository}"), "1.0", &index).await;
        // Three platforms share one base layer: 3 configs + 3 own layers + 1 base = 7 blobs.
        assert_eq!(run.result["blobsCopied"], 7, "{}", run.result);
        assert_eq!(run.events("blobDone").len(), 7);
        assert_eq!(run.result["manifests"], 4);
        assert_eq!(run.result["result"], "success");
        assert_eq!(run.result["digest"], index.manifest.digest.as_str());
        assert_eq!(
            run.result["platforms"],
            serde_json::json!(["linux/amd64", "linux/arm64/v8", "linux/s390x"])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_filter_writes_an_index_of_the_chosen_platforms_and_recopy_is_a_no_op() {
    let Some(scratch) = Scratch::new("platform") else {
        return;
    };
    let source = scratch.registry("source", None);
    let target = scratch.registry("target", None);
    let index = Index::multi_platform(Format::Oci, &["linux/amd64", "linux/arm64"], 30, 4096);
    pusher(&source)
        .push_index(&source.host, "app", "v1", &index)
        .await
        .unwrap();
    let filtered = || {
        copy_between(
            &scratch,
            &source,
            "app:v1",
            &target,
            "app:v1-arm",
            &["--platform", "linux/arm64"],
        )
    };
    let run = filtered();
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    let written = run.result["digest"].as_str().unwrap().to_owned();
    assert_ne!(written, index.manifest.digest);
    assert_eq!(run.result["sourceDigest"], index.manifest.digest.as_str());
    assert_eq!(run.result["platforms"], serde_json::json!(["linux/arm64"]));
    let (bytes, digest) = pusher(&target)
        .pull_manifest(&target.host, "app", "v1-arm")
        .await
        .unwrap();
    assert_eq!(digest, written);
    let children: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(children["manifests"].as_array().unwrap().len(), 1);
    assert_image_present(
        &target,
        "app",
        &index.images[1].manifest.digest,
        &index.images[1],
    )
    .await;
    assert!(!has_manifest(&target, "app", &index.images[0].manifest.digest).await);

    // The same copy again: up to date, nothing moved.
    let again = filtered();
    assert_eq!(again.code(), Some(0), "{}", again.stderr());
    assert_eq!(again.result["upToDate"], true, "{}", again.result);
    assert_eq!(again.result["blobsCopied"], 0);
    assert_eq!(again.events("upToDate").len(), 1);

    // A digest-pinned source copies the whole index, whatever --platform says, and a
    // digest-only destination gets the anchor tag.
    let pinned = || {
        copy_between(
            &scratch,
            &source,
            &format!("app@{}", index.manifest.digest),
            &target,
            "pinned",
            &["--platform", "linux/arm64"],
        )
    };
    let run = pinned();
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert_eq!(run.events("warning").len(), 1, "{}", run.stderr());
    let anchor = privateer_image::Digest::parse(&index.manifest.digest)
        .expect("digest")
        .anchor_tag();
    assert_index_present(&target, "pinned", &anchor, &index).await;
    assert_eq!(
        run.stdout(),
        format!("{}/pinned@{}\n", target.host, index.manifest.digest)
    );
    let again = pinned();
    assert_eq!(again.result["upToDate"], true, "{}", again.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_registry_copies_mount_and_many_small_layers_copy_in_parallel() {
    let Some(scratch) = Scratch::new("mount") else {
        return;
    };
    let registry = scratch.registry("one", None);
    let layers: Vec<_> = (0..60).map(|i| layer(1000 + i, 16 * 1024)).collect();
    let image = Image::new(Format::Docker, "linux/amd64", layers);
    pusher(&registry)
        .push_image(&registry.host, "team/base", "1", &image)
        .await
        .unwrap();
    let run = copy_between(
        &scratch,
        &registry,
        "team/base:1",
        &registry,
        "mirror/base:1",
        &["--parallelism", "8"],
    );
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert_eq!(run.result["blobsMounted"], 61, "{}", run.result);
    assert_eq!(run.result["blobsCopied"], 0);
    assert_image_present(&registry, "mirror/base", "1", &image).await;

    // A second registry: all 61 streamed.
    let other = scratch.registry("other", None);
    let run = copy_between(
        &scratch,
        &registry,
        "team/base:1",
        &other,
        "team/base:1",
        &[],
    );
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert_eq!(run.result["blobsCopied"], 61);
    assert_image_present(&other, "team/base", "1", &image).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_on_either_side_and_a_wrong_password_is_a_clear_permanent_failure() {
    let Some(scratch) = Scratch::new("auth") else {
        return;
    };
    let source = scratch.registry("source", Some(("puller", "pull-secret")));
    let target = scratch.registry("target", Some(("pusher", "push-secret")));
    let image = Image::new(Format::Oci, "linux/amd64", vec![layer(40, 8192)]);
    pusher(&source)
        .push_image(&source.host, "private/app", "2", &image)
        .await
        .unwrap();
    let authfile = scratch.dir.join("config.json");
    let auth = base64_encode("pusher:push-secret");
    std::fs::write(
        &authfile,
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, target.host),
    )
    .unwrap();
    let with_password = |password: &str, pairs: &[String]| {
        let src_creds = format!("puller:{password}");
        let mut extra = vec![
            "--src-creds",
            &src_creds,
            "--dest-authfile",
            authfile.to_str().unwrap(),
        ];
        extra.extend(pairs.iter().map(String::as_str));
        copy_between(
            &scratch,
            &source,
            "private/app:2",
            &target,
            "private/app:2",
            &extra,
        )
    };
    // A batch: the pairs start at once.
    let mut more = Vec::new();
    for tag in 3..6 {
        let other = Image::new(Format::Oci, "linux/amd64", vec![layer(40 + tag, 8192)]);
        pusher(&source)
            .push_image(&source.host, "private/app", &tag.to_string(), &other)
            .await
            .unwrap();
        more.push(format!("{}/private/app:{tag}", source.host));
        more.push(format!("{}/private/app:{tag}", target.host));
    }
    let run = with_password("pull-secret", &more);
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert_image_present(&target, "private/app", "2", &image).await;
    // Each side logs in once: the copies started together wait for the first answer, and the
    // target's basic challenge is not asked again for the push.
    for (side, registry) in [("source", &source), ("target", &target)] {
        let requests = registry.requests_from("privateer/");
        let refused: Vec<_> = requests.iter().filter(|r| r.2 == 401).collect();
        assert_eq!(refused.len(), 1, "{side}: {requests:?}");
    }

    let run = with_password("wrong", &[]);
    assert_eq!(run.code(), Some(3), "{}", run.stderr());
    assert!(run.stderr().contains("401"), "{}", run.stderr());
    assert_eq!(run.result["errorClass"], "unauthorized", "{}", run.result);
    assert!(run.events("retry").is_empty(), "401 is not retried");
}

fn base64_encode(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_source_blob_fails_permanently_and_pushes_nothing() {
    let Some(scratch) = Scratch::new("corrupt") else {
        return;
    };
    let source = scratch.registry("source", None);
    let target = scratch.registry("target", None);
    let image = Image::new(Format::Oci, "linux/amd64", vec![layer(50, 256 * 1024)]);
    pusher(&source)
        .push_image(&source.host, "app", "3", &image)
        .await
        .unwrap();
    // The registry serves its files as they are: flip bytes of the stored layer.
    let hex = image.layers[0].digest.trim_start_matches("sha256:");
    let data = scratch
        .dir
        .join("source/data/docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();

    let run = copy_between(&scratch, &source, "app:3", &target, "app:3", &[]);
    assert_eq!(run.code(), Some(3), "{}", run.stderr());
    assert_eq!(run.result["errorClass"], "digestMismatch", "{}", run.result);
    assert!(run.stderr().contains("does not match"), "{}", run.stderr());
    assert!(!has_manifest(&target, "app", "3").await);
    let blob = pusher(&target)
        .pull_blob(&target.host, "app", &image.layers[0].digest)
        .await;
    assert!(blob.is_err(), "the corrupt layer must not be in the target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_stopped_mid_copy_is_transient_and_leaves_no_manifest() {
    let Some(scratch) = Scratch::new("stopped") else {
        return;
    };
    let mut source = scratch.registry("source", None);
    let target = scratch.registry("target", None);
    let size = 64 << 20;
    let big = pusher(&source)
        .push_generated_layer(&source.host, "big", 60, size)
        .await
        .unwrap();
    let image = Image::with_layer_digests(Format::Oci, "linux/amd64", &[(big, size)]);
    pusher(&source)
        .push_image(&source.host, "big", "1", &image)
        .await
        .unwrap();

    let log = scratch.dir.join("termination-log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_privateer"))
        .args(["copy", &format!("{}/big:1", source.host)])
        .arg(format!("{}/big:1", target.host))
        .args(insecure(&[&source, &target]))
        // One blob at a time, config first: the layer is still to come when the source dies.
        .args(["--json", "--parallelism", "1"])
        .args(["--retries", "3", "--retry-delay-ms", "50"])
        .arg("--termination-log")
        .arg(&log)
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let started = line.contains("\"blobStart\"");
        seen.push(line);
        if started {
            source.process.stop();
            break;
        }
    }
    seen.extend(lines.map_while(Result::ok));
    let status = child.wait().unwrap();
    let stderr = seen.join("\n");
    assert_eq!(status.code(), Some(4), "{stderr}");
    let result: Value = serde_json::from_str(&std::fs::read_to_string(&log).unwrap()).unwrap();
    assert_eq!(result["errorClass"], "network", "{result}");
    assert!(stderr.contains("\"retry\""), "{stderr}");
    assert!(!has_manifest(&target, "big", "1").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_over_512_mib_streams_with_flat_memory() {
    let Some(scratch) = Scratch::new("huge") else {
        return;
    };
    let source = scratch.registry("source", None);
    let target = scratch.registry("target", None);
    let size = 600 << 20;
    let big = pusher(&source)
        .push_generated_layer(&source.host, "huge", 70, size)
        .await
        .unwrap();
    let image = Image::with_layer_digests(Format::Docker, "linux/amd64", &[(big.clone(), size)]);
    pusher(&source)
        .push_image(&source.host, "huge", "1", &image)
        .await
        .unwrap();
    let measured = run_measured(
        Command::new(env!("CARGO_BIN_EXE_privateer"))
            .args(["copy", &format!("{}/huge:1", source.host)])
            .arg(format!("{}/huge:1", target.host))
            .args(insecure(&[&source, &target]))
            .arg("--json")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    let (status, peak_kib) = (measured.status, measured.peak_rss_kib);
    assert!(status.success());
    eprintln!("peak RSS copying a 600 MiB layer: {} MiB", peak_kib / 1024);
    assert!(
        peak_kib > 0,
        "no memory reading was taken: the check proved nothing"
    );
    assert!(
        peak_kib < 96 * 1024,
        "peak RSS {peak_kib} KiB for a 600 MiB layer: memory is not flat"
    );
    let pushed = oci_client()
        .blob_exists(&format!("{}/huge:1", target.host).parse().unwrap(), &big)
        .await
        .unwrap();
    assert!(pushed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ecr_destination_gets_its_token_from_get_authorization_token() {
    let Some(env) = TestEnv::builder()
        .registries()
        .moto()
        .start_or_skip("privateer copy to ECR")
        .await
        .unwrap()
    else {
        return;
    };
    let source = env.source.as_ref().unwrap();
    let target = env.target.as_ref().unwrap();
    let image = Image::new(Format::Oci, "linux/amd64", vec![layer(80, 4096)]);
    pusher(source)
        .push_image(&source.host, "library/nginx", "1.27", &image)
        .await
        .unwrap();
    let ecr = format!("{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com");
    let output = Command::new(env!("CARGO_BIN_EXE_privateer"))
        .args(["copy", &format!("{}/library/nginx:1.27", source.host)])
        .arg(format!("{ecr}/mirror/docker.io/library/nginx:1.27"))
        .args(["--dest-endpoint", &format!("http://{}", target.host)])
        .args(insecure(&[source]))
        .env_clear()
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_ENDPOINT_URL", &env.moto.as_ref().unwrap().endpoint)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", env.dir.join("no-aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", env.dir.join("no-aws-creds"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!(
            "{ecr}/mirror/docker.io/library/nginx:1.27@{}\n",
            image.manifest.digest
        )
    );
    // The data plane only admits user AWS with moto's token as password.
    assert_image_present(target, "mirror/docker.io/library/nginx", "1.27", &image).await;

    // Without AWS credentials the copy fails before touching the target, and says why.
    let output = Command::new(env!("CARGO_BIN_EXE_privateer"))
        .args(["copy", &format!("{}/library/nginx:1.27", source.host)])
        .arg(format!("{ecr}/mirror/other:1"))
        .args(insecure(&[source]))
        .env_clear()
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL", &env.moto.as_ref().unwrap().endpoint)
        .env("AWS_CONFIG_FILE", env.dir.join("no-aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", env.dir.join("no-aws-creds"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("credentials"), "{stderr}");
}

#[test]
fn bad_arguments_exit_2_with_the_reason() {
    let dir = std::env::temp_dir();
    let run = privateer_copy(&dir, &["docker.io/Library/nginx", "localhost:5000/x"]);
    assert_eq!(run.code(), Some(2), "{}", run.stderr());
    assert!(run.stderr().contains("source"), "{}", run.stderr());
    let run = privateer_copy(
        &dir,
        &["nginx:1", "localhost:5000/x", "--platform", "linux"],
    );
    assert_eq!(run.code(), Some(2));
    assert!(run.stderr().contains("os/arch"), "{}", run.stderr());
    assert_eq!(run.result["result"], "failure");
    assert_eq!(run.result["errorClass"], "invalid");
    let run = privateer_copy(
        &dir,
        &["nginx:1", "localhost:5000/x", "--src-creds", "nopass"],
    );
    assert_eq!(run.code(), Some(2));
    assert!(run.stderr().contains("USER:PASSWORD"), "{}", run.stderr());
}
