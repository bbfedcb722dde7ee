//! Signatures, attestations and SBOMs travel with the image, and `--verify-key` refuses what the
//! key did not sign. Real peers: cosign signs and attests in the source and verifies the copy in
//! the target; oras attaches an SBOM with a subject and discovers it; the registries are
//! Debian's distribution 2.8 (no referrers API: the fallback tag) and go-containerregistry's
//! registry with the referrers API on (tests/peers).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use privateer_e2e::images::{Format, Image, layer};
use privateer_e2e::registry::Registry;
use privateer_image::Digest;
use serde_json::Value;

#[path = "common/copying.rs"]
mod copying;
use copying::*;
#[path = "common/peers.rs"]
mod peers;
use peers::*;

/// A scratch directory, when the registries and the peers are there.
fn peers_or_skip(name: &str) -> Option<Scratch> {
    let scratch = Scratch::new(name)?;
    peers_present(name).then_some(scratch)
}

async fn push_small_image(registry: &Registry, repository: &str, tag: &str, seed: u64) -> String {
    let image = Image::new(Format::Oci, "linux/amd64", vec![layer(seed, 2048)]);
    pusher(registry)
        .push_image(&registry.host, repository, tag, &image)
        .await
        .unwrap()
}

fn verify_key(scratch: &Scratch, name: &str) -> String {
    scratch.dir.join(name).display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_and_attestations_travel_with_the_image_and_verify_on_the_target() {
    let Some(scratch) = peers_or_skip("signed") else {
        return;
    };
    let source = scratch.registry("source", None);
    let target = scratch.registry("target", None);
    key_pair(&scratch.dir, "cosign");
    let digest = push_small_image(&source, "app", "v1", 1).await;
    let signed = format!("{}/app@{digest}", source.host);
    cosign_sign(&scratch.dir, "cosign.key", &signed);
    cosign_attest(&scratch.dir, "cosign.key", &signed);

    let key = verify_key(&scratch, "cosign.pub");
    let copy = || {
        copy_between(
            &scratch,
            &source,
            "app:v1",
            &target,
            "mirror/app",
            &["--verify-key", &key],
        )
    };
    let run = copy();
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert_eq!(run.result["verifiedBy"], "cosign.pub", "{}", run.result);
    assert_eq!(run.events("verified").len(), 1);
    assert_eq!(run.result["referrers"], 2, "{}", run.result);
    assert_eq!(run.result["referrersCopied"], 2);
    assert_eq!(
        run.result["referrerKinds"],
        serde_json::json!(["signature", "attestation"])
    );

    // What an admission verifier does against the rewritten image.
    let mirrored = format!("{}/mirror/app@{digest}", target.host);
    let verified = cosign_verifies(&scratch.dir, "verify", &mirrored);
    succeeded(&verified, "cosign verify on the target");
    let attested = cosign_verifies(&scratch.dir, "verify-attestation", &mirrored);
    succeeded(&attested, "cosign verify-attestation on the target");

    // Up to date: nothing written again, the signature still checked.
    let again = copy();
    assert_eq!(again.code(), Some(0), "{}", again.stderr());
    assert_eq!(again.result["upToDate"], true, "{}", again.result);
    assert_eq!(again.result["referrers"], 2);
    assert!(
        again.result.get("referrersCopied").is_none(),
        "{}",
        again.result
    );

    // Turned off: the image alone.
    let bare = copy_between(
        &scratch,
        &source,
        "app:v1",
        &target,
        "bare/app",
        &["--no-referrers"],
    );
    assert_eq!(bare.code(), Some(0), "{}", bare.stderr());
    assert!(bare.result.get("referrers").is_none(), "{}", bare.result);
    let sig_tag = Digest::parse(&digest).unwrap().cosign_tag("sig");
    assert!(!has_manifest(&target, "bare/app", &sig_tag).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_copies_only_what_the_key_signed_and_writes_nothing_otherwise() {
    let Some(scratch) = peers_or_skip("verify") else {
        return;
    };
    let source = scratch.registry("source", None);
    let target = scratch.registry("target", None);
    key_pair(&scratch.dir, "cosign");
    key_pair(&scratch.dir, "other");
    let signed = push_small_image(&source, "signed", "v1", 10).await;
    cosign_sign(
        &scratch.dir,
        "cosign.key",
        &format!("{}/signed@{signed}", source.host),
    );
    push_small_image(&source, "unsigned", "v1", 11).await;
    let other = push_small_image(&source, "other", "v1", 12).await;
    cosign_sign(
        &scratch.dir,
        "other.key",
        &format!("{}/other@{other}", source.host),
    );
    // A valid signature by the key, of another image, placed where this image's would be.
    let forged = push_small_image(&source, "signed", "forged", 13).await;
    let tag_of = |digest: &str| Digest::parse(digest).unwrap().cosign_tag("sig");
    pusher(&source)
        .retag(&source.host, "signed", &tag_of(&signed), &tag_of(&forged))
        .await
        .unwrap();

    let key = verify_key(&scratch, "cosign.pub");
    let copy = |src: &str, dst: &str| {
        copy_between(
            &scratch,
            &source,
            src,
            &target,
            dst,
            &["--verify-key", &key],
        )
    };
    let run = copy("signed:v1", "signed:v1");
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert_eq!(run.result["verifiedBy"], "cosign.pub");

    for (src, class, says) in [
        ("unsigned:v1", "signatureMissing", "no cosign signature"),
        (
            "other:v1",
            "signatureInvalid",
            "does not verify with the key cosign.pub",
        ),
        ("signed:forged", "signatureInvalid", signed.as_str()),
    ] {
        let run = copy(src, &format!("refused/{src}"));
        assert_eq!(run.code(), Some(3), "{src}: {}", run.stderr());
        assert_eq!(run.result["errorClass"], class, "{src}: {}", run.result);
        let message = run.result["message"].as_str().unwrap();
        assert!(message.contains(says), "{src}: {message}");
        let (repository, tag) = src.split_once(':').unwrap();
        assert!(!has_manifest(&target, &format!("refused/{repository}"), tag).await);
    }
    // Nothing at all was written for the refused ones: not even a repository.
    let catalog: Value = curl_json(&format!("http://{}/v2/_catalog", target.host)).await;
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["signed"]),
        "{catalog}"
    );
}

/// A registry API answer, read with Debian's curl.
async fn curl_json(url: &str) -> Value {
    let body = tokio::process::Command::new("curl")
        .args(["-sf", url])
        .output()
        .await
        .unwrap();
    serde_json::from_slice(&body.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sbom_with_a_subject_travels_through_the_referrers_api_and_the_fallback_tag() {
    let Some(scratch) = peers_or_skip("sbom") else {
        return;
    };
    let with_api = Registry::start_with_referrers_api("with-api", &scratch.dir).unwrap();
    let fallback = scratch.registry("fallback", None);
    // Both ways: read from the API and written as a fallback index, and the other way round.
    for (from, to) in [(&with_api, &fallback), (&fallback, &with_api)] {
        let repository = format!("app-from-{}", from.host.replace([':', '.'], "-"));
        let digest = push_small_image(from, &repository, "v1", 20).await;
        let sbom = oras_attach_sbom(
            &scratch.dir,
            &format!("{}/{repository}@{digest}", from.host),
        );
        let run = copy_between(
            &scratch,
            from,
            &format!("{repository}:v1"),
            to,
            &repository,
            &[],
        );
        assert_eq!(run.code(), Some(0), "{}", run.stderr());
        assert_eq!(run.result["referrers"], 1, "{}", run.result);
        assert_eq!(run.result["referrerKinds"], serde_json::json!(["sbom"]));
        let listed = oras_discover(&scratch.dir, &format!("{}/{repository}@{digest}", to.host));
        assert!(
            listed.contains(&sbom),
            "{sbom} not in {listed}\n{}",
            run.stderr()
        );
        // The fallback index, where the target has no API: the SBOM listed with its artifact
        // type, nothing else. (go-containerregistry's referrers API reports the config's media
        // type as the artifact type, so only the fallback index is checked for it.)
        if std::ptr::eq(to, &fallback) {
            assert!(listed.contains("application/spdx+json"), "{listed}");
            let tag = Digest::parse(&digest).unwrap().referrers_tag();
            let (bytes, _) = pusher(to)
                .pull_manifest(&to.host, &repository, &tag)
                .await
                .unwrap();
            let index: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(index["manifests"][0]["digest"], sbom.as_str(), "{index}");
            assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigstore_bundle_referrer_verifies_and_travels_to_a_registry_without_the_api() {
    let Some(scratch) = peers_or_skip("bundle") else {
        return;
    };
    let source = Registry::start_with_referrers_api("with-api", &scratch.dir).unwrap();
    let target = scratch.registry("target", None);
    key_pair(&scratch.dir, "cosign");
    let digest = push_small_image(&source, "app", "v1", 40).await;
    let signed = format!("{}/app@{digest}", source.host);
    cosign_sign_with(
        &scratch.dir,
        "cosign.key",
        &signed,
        &["--new-bundle-format"],
    );

    let key = verify_key(&scratch, "cosign.pub");
    let run = copy_between(
        &scratch,
        &source,
        "app:v1",
        &target,
        "app",
        &["--verify-key", &key],
    );
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert_eq!(run.result["verifiedBy"], "cosign.pub", "{}", run.result);
    assert_eq!(
        run.result["referrerKinds"],
        serde_json::json!(["signature"])
    );
    let origin = run.events("verified")[0]["origin"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(origin.starts_with("referrer sha256:"), "{origin}");
    let mirrored = format!("{}/app@{digest}", target.host);
    // Bundles are verified against a trusted root; an empty one is enough for a key.
    std::fs::write(
        scratch.dir.join("trusted_root.json"),
        r#"{"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1"}"#,
    )
    .unwrap();
    let bundle = ["--new-bundle-format", "--trusted-root", "trusted_root.json"];
    succeeded(
        &cosign_verifies_with(&scratch.dir, "verify", &mirrored, &bundle),
        "cosign verify --new-bundle-format on the target",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anchor_tag_is_not_the_referrers_fallback_tag_of_its_digest() {
    let Some(scratch) = peers_or_skip("anchor") else {
        return;
    };
    let source = scratch.registry("source", None);
    let target = scratch.registry("target", None);
    key_pair(&scratch.dir, "cosign");
    let digest = push_small_image(&source, "app", "v1", 30).await;
    let run = copy_between(
        &scratch,
        &source,
        &format!("app@{digest}"),
        &target,
        "pinned",
        &[],
    );
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    let parsed = Digest::parse(&digest).unwrap();
    let anchor = parsed.anchor_tag();
    assert_eq!(anchor, format!("privateer.{}", digest.replace(':', ".")));
    let (_, anchored) = pusher(&target)
        .pull_manifest(&target.host, "pinned", &anchor)
        .await
        .unwrap();
    assert_eq!(anchored, digest);
    assert!(!has_manifest(&target, "pinned", &parsed.referrers_tag()).await);

    // Clients attach to the mirrored digest as to any image; the anchor is not disturbed.
    let mirrored = format!("{}/pinned@{digest}", target.host);
    let sbom = oras_attach_sbom(&scratch.dir, &mirrored);
    cosign_sign(&scratch.dir, "cosign.key", &mirrored);
    succeeded(
        &cosign_verifies(&scratch.dir, "verify", &mirrored),
        "cosign verify",
    );
    let (_, anchored) = pusher(&target)
        .pull_manifest(&target.host, "pinned", &anchor)
        .await
        .unwrap();
    assert_eq!(anchored, digest);
    let (bytes, _) = pusher(&target)
        .pull_manifest(&target.host, "pinned", &parsed.referrers_tag())
        .await
        .unwrap();
    let index: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(index["manifests"][0]["digest"], sbom.as_str(), "{index}");
}
