//! A mirror's copy Job: found by the mirror's own label (a Job may copy for several mirrors,
//! `copy.job.batchSize`), joined through the batcher when there is none, and read back — the
//! mirror's result is its place in the Pod's termination message.

use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PropagationPolicy};
use privateer_api::{ImageMirror, names};
use privateer_registry::{CopyOutcome, ErrorClass};
use sha2::{Digest as _, Sha256};

use crate::batch::Request;
use crate::metrics::Metrics;
use crate::plan::Plan;
use crate::verify;
use crate::{Context, Error};

/// The label a copy Job carries for mirror `name`: `copy.privateer.dev/<16 hex digits>` (a
/// hash, so any mirror name fits the 63 characters of a label name).
pub fn member_label(name: &str) -> String {
    let hash = Sha256::digest(name.as_bytes());
    let hex: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{}{hex}", names::LABEL_COPY_MEMBER_PREFIX)
}

/// The label's value: the digest's first 40 hex digits (a label value holds 63 characters).
pub fn member_value(digest: &str) -> String {
    let hex = digest.rsplit(':').next().unwrap_or(digest);
    hex.chars().take(40).collect()
}

pub enum JobState {
    Running(String),
    Done(Box<CopyOutcome>),
}

/// The `sources.verify` keys a copy Job is created with: read in this pass already (`None`: no
/// rule covers the source), or to be read should a Job have to be created.
pub enum JobKeys<'a> {
    Read(Option<&'a verify::Keys>),
    Unread,
}

/// Join a copy Job for this digest if the mirror has none; report the mirror's result once its
/// Job ends. After a failure the mirror leaves the Job (its label is removed, or the Job is
/// deleted when it copied only for this mirror), so the next attempt starts a new one.
pub async fn run_copy_job(
    ctx: &Context,
    mirror: &ImageMirror,
    plan: &Plan,
    digest: &str,
    keys: JobKeys<'_>,
) -> Result<JobState, Error> {
    if let Some(state) = copy_job_state(ctx, mirror, digest).await? {
        return Ok(state);
    }
    start_copy_job(ctx, mirror, plan, digest, keys).await
}

/// Join a copy Job for this digest: the caller has found that the mirror has none.
pub async fn start_copy_job(
    ctx: &Context,
    mirror: &ImageMirror,
    plan: &Plan,
    digest: &str,
    keys: JobKeys<'_>,
) -> Result<JobState, Error> {
    let read;
    let keys = match keys {
        JobKeys::Read(keys) => keys,
        JobKeys::Unread => {
            read = verify::keys_for(ctx, plan).await?;
            read.as_ref()
        }
    };
    let request = Request {
        mirror: mirror.clone(),
        plan: plan.clone(),
        digest: digest.to_owned(),
        source_secret: crate::reconcile::source_secret(ctx, mirror, plan),
        verify_keys: keys.map(|k| k.pems.clone()).unwrap_or_default(),
    };
    let job = ctx.batcher.join(ctx, request).await?;
    Ok(JobState::Running(job))
}

/// Where the mirror's copy Job for `digest` stands; `None` when there is no such Job. A
/// failed Job's result is read once: the mirror leaves it.
pub async fn copy_job_state(
    ctx: &Context,
    mirror: &ImageMirror,
    digest: &str,
) -> Result<Option<JobState>, Error> {
    let name = mirror.name_any();
    let Some(job) = find(ctx, &name, digest).await? else {
        return Ok(None);
    };
    let job_name = job.name_any();
    let Some(complete) = finished(&job) else {
        return Ok(Some(JobState::Running(job_name)));
    };
    let place = copies(&job).iter().position(|m| *m == name).unwrap_or(0);
    let result = termination_result(ctx, &job, place)
        .await?
        .unwrap_or_else(|| outcome_without_message(complete, &job));
    let metrics = &ctx.metrics;
    if result.succeeded() {
        Metrics::count(&metrics.copies, "success");
        if let Some(report) = &result.report {
            metrics.copy_bytes.observe(report.bytes_total as f64);
            metrics.copy_seconds.observe(report.seconds);
        }
    } else {
        Metrics::count(
            &metrics.copies,
            result.error_class.map_or("failure", |c| c.as_str()),
        );
        leave(ctx, &job, &name).await;
    }
    Ok(Some(JobState::Done(Box::new(result))))
}

/// The newest Job carrying the mirror's label for `digest`. A running one comes from the Job
/// watch's cache; a finished one (its result is read once, and a mirror that left it must not
/// find it again) or none there (a Job just created may not have arrived) from the API server.
async fn find(ctx: &Context, mirror: &str, digest: &str) -> Result<Option<Job>, Error> {
    let (label, value) = (member_label(mirror), member_value(digest));
    let cache = ctx.jobs.read().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(cache) = cache {
        let cached = cache
            .state()
            .into_iter()
            .filter(|j| j.labels().get(&label) == Some(&value))
            .max_by_key(|j| j.metadata.creation_timestamp.as_ref().map(|t| t.0));
        if let Some(job) = cached.filter(|j| finished(j).is_none()) {
            return Ok(Some((*job).clone()));
        }
    }
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.config.namespace);
    let selector = format!("{label}={value}");
    let mut found = jobs
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    found.sort_by_key(|j| j.metadata.creation_timestamp.as_ref().map(|t| t.0));
    Ok(found.pop())
}

/// `Some(true)` complete, `Some(false)` failed, `None` still running.
fn finished(job: &Job) -> Option<bool> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    let holds = |kind: &str| {
        conditions
            .iter()
            .any(|c| c.type_ == kind && c.status == "True")
    };
    if holds("Complete") {
        Some(true)
    } else if holds("Failed") {
        Some(false)
    } else {
        None
    }
}

/// The mirror names of a Job's copies, in order (empty without the annotation).
pub fn copies(job: &Job) -> Vec<String> {
    job.annotations()
        .get(names::ANNOTATION_COPIES)
        .and_then(|a| serde_json::from_str(a).ok())
        .unwrap_or_default()
}

/// Take mirror `name` out of `job`: the whole Job when it copied only for this mirror.
async fn leave(ctx: &Context, job: &Job, name: &str) {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.config.namespace);
    let job_name = job.name_any();
    let result = if copies(job).len() <= 1 {
        let delete = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        jobs.delete(&job_name, &delete).await.map(|_| ())
    } else {
        let patch = serde_json::json!({"metadata": {"labels": {member_label(name): null}}});
        jobs.patch(&job_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
    };
    match result {
        Ok(()) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => tracing::info!(mirror = name, job = %job_name, "leave the copy Job: {e}"),
    }
}

/// The finished Job of a copy the target no longer holds would answer for the new one: leave
/// it, so the pipeline starts a fresh copy.
pub async fn forget(ctx: &Context, mirror: &str, digest: &str) {
    match find(ctx, mirror, digest).await {
        Ok(Some(job)) => leave(ctx, &job, mirror).await,
        Ok(None) => {}
        Err(e) => tracing::info!(mirror, "find the old copy Job: {e}"),
    }
}

/// The mirror's result: its `place` in the newest termination message that has one.
async fn termination_result(
    ctx: &Context,
    job: &Job,
    place: usize,
) -> Result<Option<CopyOutcome>, Error> {
    let messages = ctx
        .job_messages
        .read(&ctx.client, &ctx.config.namespace, job, copies(job).len())
        .await?;
    Ok(messages
        .iter()
        .find_map(|message| CopyOutcome::parse_batch(message)?.into_iter().nth(place)))
}

/// A Job that ended without a readable result (OOM-killed, deadline exceeded): a failure is
/// transient; a Job complete without a message is taken at its word.
fn outcome_without_message(complete: bool, job: &Job) -> CopyOutcome {
    if complete {
        return CopyOutcome {
            result: "success".into(),
            report: None,
            error_class: None,
            message: Some("copy Job complete without a result".into()),
            retry_after_seconds: None,
        };
    }
    let reason = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Failed"))
        .and_then(|c| c.message.clone())
        .unwrap_or_else(|| "the copy pod left no result".into());
    CopyOutcome::failure(ErrorClass::Network, &format!("copy Job: {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_labels_are_valid_label_names_and_values() {
        let long = "docker.io-library-".repeat(12);
        let label = member_label(&long);
        let (prefix, name) = label.split_once('/').expect("prefixed");
        assert_eq!(format!("{prefix}/"), names::LABEL_COPY_MEMBER_PREFIX);
        assert_eq!(name.len(), 16);
        assert_ne!(label, member_label("docker.io-library-nginx-1"));
        let digest = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(member_value(&digest), "ab".repeat(20));
    }
}
