//! `copy.job.batchSize` on the real node: mirrors declared together share copy Jobs (a Pod
//! copies several images), no mirror gets two, and one copy failing in a batch fails that
//! mirror alone.

mod common;

use std::collections::BTreeMap;

use common::*;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams, PostParams};
use privateer_api::{ImageMirror, ImageMirrorSpec, Phase, names};
use privateer_e2e::images::{Format, Image, Pusher, layer};
use privateer_e2e::registry::oci_client;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_declared_together_share_copy_jobs_and_one_failure_spares_the_rest() {
    let Some(env) = prepared("copy batches").await else {
        return;
    };
    let source = env.source.as_ref().unwrap();
    let pusher = Pusher::new(oci_client(), source.auth());
    let mut images = Vec::new();
    for i in 0..6u64 {
        let image = Image::new(Format::Docker, "linux/amd64", vec![layer(700 + i, 2048)]);
        let repository = format!("library/batch-{i}");
        pusher
            .push_image(&source.host, &repository, "1", &image)
            .await
            .unwrap();
        images.push(format!("{}:1", repository.trim_start_matches("library/")));
    }
    // An image whose layer the registry has lost: it resolves, and its copy fails (404).
    let broken = Image::new(Format::Docker, "linux/amd64", vec![layer(799, 2048)]);
    pusher
        .push_image(&source.host, "library/broken", "1", &broken)
        .await
        .unwrap();
    let deleted = std::process::Command::new("curl")
        .args(["-sf", "-X", "DELETE"])
        .arg(format!(
            "http://{}/v2/library/broken/blobs/{}",
            source.host, broken.layers[0].digest
        ))
        .status()
        .unwrap();
    assert!(deleted.success(), "the source registry kept the layer");
    images.push("broken:1".to_owned());

    let (controller, _) = start_operator(
        &env,
        "controller",
        "controller",
        "copy: {job: {batchSize: 4, backoffLimit: 0}}\n",
    );
    let mirrors: Api<ImageMirror> = Api::all(env.client());
    let names: Vec<String> = images.iter().map(|i| mirror_name(i)).collect();
    futures::future::join_all(images.iter().zip(&names).map(|(image, name)| {
        let mirrors = mirrors.clone();
        async move {
            let mirror = ImageMirror::new(name, ImageMirrorSpec::for_source(image));
            mirrors.create(&PostParams::default(), &mirror).await
        }
    }))
    .await
    .into_iter()
    .collect::<Result<Vec<_>, _>>()
    .unwrap();

    for name in &names[..6] {
        wait_for_phase(&mirrors, name, Phase::Ready, &controller).await;
    }
    let failed = wait_for_phase(&mirrors, &names[6], Phase::Failed, &controller).await;
    let status = failed.status.unwrap();
    let message = status
        .conditions
        .iter()
        .find(|c| c.type_ == names::condition::READY)
        .map(|c| format!("{}: {}", c.reason, c.message))
        .unwrap_or_default();
    assert!(message.contains("CopyNotFound"), "{message}");

    // Every mirror is in exactly one Job, and fewer Jobs ran than mirrors.
    let jobs = Api::<Job>::namespaced(env.client(), "privateer")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let mut jobs_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for job in &jobs {
        for mirror in privateer_controller::copy_job_members(job) {
            jobs_of
                .entry(mirror)
                .or_default()
                .push(job.metadata.name.clone().unwrap());
        }
    }
    for name in &names {
        assert_eq!(
            jobs_of.get(name).map(Vec::len),
            Some(1),
            "{name}: {jobs_of:?}"
        );
    }
    assert!(jobs.len() < names.len(), "no batch: {jobs_of:?}");
    // The failed mirror left its Job; the Job stays for the mirrors it copied.
    let broken_job = &jobs_of[&names[6]][0];
    let job = jobs
        .iter()
        .find(|j| j.metadata.name.as_ref() == Some(broken_job))
        .unwrap();
    let labels = job.metadata.labels.clone().unwrap_or_default();
    assert!(!labels.contains_key(&privateer_controller::copy_member_label(&names[6])));
    let mates = jobs_of.iter().filter(|(_, j)| j[0] == *broken_job).count();
    if mates > 1 {
        assert!(
            labels
                .keys()
                .any(|k| k.starts_with(names::LABEL_COPY_MEMBER_PREFIX)),
            "{labels:?}"
        );
    }
}
