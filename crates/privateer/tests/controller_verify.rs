//! `sources.verify` through `privateer run` (controller and webhooks) and copy Jobs on the real
//! node: a signed image is verified, mirrored with its signature (which cosign then verifies
//! in the target) and marked `Verified`; an unsigned one is `Failed` with reason
//! `SignatureMissing`, no copy; with `policy.requireVerified` a Pod asking for the unsigned
//! image is denied and one asking for the signed image admitted.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, PostParams};
use privateer_api::{ImageMirror, ImageMirrorSpec, Phase};
use privateer_e2e::images::{Format, Image, Pusher, layer};
use privateer_e2e::registry::oci_client;
use privateer_image::{Reference, object_name};

mod common;
use common::*;
#[path = "common/peers.rs"]
mod peers;
use peers::*;

fn condition<'a>(mirror: &'a ImageMirror, kind: &str) -> Option<&'a str> {
    let status = mirror.status.as_ref()?;
    let found = status.conditions.iter().find(|c| c.type_ == kind)?;
    Some(if found.status == "True" {
        "True"
    } else {
        found.reason.as_str()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_sources_are_verified_and_mirrored_with_their_signature_unsigned_ones_fail() {
    if !peers_present("controller verify") {
        return;
    }
    let Some(env) = prepared("controller verify").await else {
        return;
    };
    let client = env.client();
    let dir = env.dir.clone();
    let source = env.source.as_ref().unwrap();
    let pusher = Pusher::new(oci_client(), source.auth());
    let mut digests = Vec::new();
    for (repository, seed) in [("library/signed", 1), ("library/unsigned", 2)] {
        let image = Image::new(Format::Oci, "linux/amd64", vec![layer(seed, 2048)]);
        digests.push(
            pusher
                .push_image(&source.host, repository, "1", &image)
                .await
                .unwrap(),
        );
    }
    key_pair(&dir, "cosign");
    cosign_sign(
        &dir,
        "cosign.key",
        &format!("{}/library/signed@{}", source.host, digests[0]),
    );

    // The key in a Secret of privateer's namespace, as a platform team would keep it.
    let pem = std::fs::read_to_string(dir.join("cosign.pub")).unwrap();
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "cosign-keys"},
        "stringData": {"cosign.pub": pem},
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), "privateer")
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let extra = "sources:
  verify:
    - images: [docker.io/library/signed, docker.io/library/unsigned]
      keySecrets: [{name: cosign-keys, key: cosign.pub}]
policy: {requireVerified: {enabled: true}}
";
    let controller = start_registered(&env, "run", extra).await;

    let mirrors: Api<ImageMirror> = Api::all(client.clone());
    let names: Vec<String> = ["signed:1", "unsigned:1"]
        .iter()
        .map(|image| object_name(&Reference::parse(image).unwrap()))
        .collect();
    for (name, image) in names.iter().zip(["signed:1", "unsigned:1"]) {
        mirrors
            .create(
                &PostParams::default(),
                &ImageMirror::new(name, ImageMirrorSpec::for_source(image)),
            )
            .await
            .unwrap();
    }

    let signed = wait_for_phase(&mirrors, &names[0], Phase::Ready, &controller).await;
    assert_eq!(
        condition(&signed, "Verified"),
        Some("True"),
        "{:?}",
        signed.status
    );
    let status = signed.status.as_ref().unwrap();
    assert_eq!(status.referrers, Some(1), "{status:?}");
    assert_eq!(status.referrer_kinds, ["signature"]);
    assert!(
        status.job_name.is_some(),
        "copied by a Job, with the keys: {status:?}"
    );

    // What an admission verifier checks against the rewritten image: the signature came along.
    let target = env.target.as_ref().unwrap();
    let (user, password) = target.credentials.clone().unwrap();
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    std::fs::create_dir_all(dir.join(".docker")).unwrap();
    std::fs::write(
        dir.join(".docker/config.json"),
        serde_json::json!({"auths": {target.host.clone(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let mirrored = format!(
        "{}/mirror/docker.io/library/signed@{}",
        target.host, digests[0]
    );
    succeeded(
        &cosign_verifies(&dir, "verify", &mirrored),
        "cosign verify on the mirrored image",
    );

    let unsigned = wait_for_phase(&mirrors, &names[1], Phase::Failed, &controller).await;
    assert_eq!(condition(&unsigned, "Ready"), Some("SignatureMissing"));
    assert_eq!(condition(&unsigned, "Verified"), Some("SignatureMissing"));
    let status = unsigned.status.as_ref().unwrap();
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("no cosign signature")),
        "{status:?}"
    );
    assert!(status.job_name.is_none(), "no copy Job: {status:?}");
    let jobs: Api<Job> = Api::namespaced(client.clone(), "privateer");
    let all = jobs.list(&Default::default()).await.unwrap();
    assert_eq!(all.items.len(), 1, "only the signed image was copied");
    let target_pusher = Pusher::new(oci_client(), target.auth());
    assert!(
        target_pusher
            .pull_manifest(&target.host, "mirror/docker.io/library/unsigned", "1")
            .await
            .is_err(),
        "nothing written for the unsigned image"
    );

    // policy.requireVerified: the verified image runs, the other is refused with the reason.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "apps");
    let pp = PostParams::default();
    let admitted = pods
        .create(&pp, &apps_pod("signed", "signed:1"))
        .await
        .unwrap();
    let image = admitted.spec.unwrap().containers[0].image.clone().unwrap();
    assert!(
        image.contains(&digests[0]),
        "rewritten to the mirror: {image}"
    );
    let denied = pods
        .create(&pp, &apps_pod("unsigned", "unsigned:1"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        denied.contains("requireVerified") && denied.contains("is not Verified"),
        "{denied}"
    );
}
