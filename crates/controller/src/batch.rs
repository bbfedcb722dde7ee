//! Batching copies into Jobs (`copy.job.batchSize`): every Pod costs the cluster far more than
//! a small copy (scheduling, a sandbox, API writes by the Job controller and the kubelet), so
//! mirrors that need a Job at about the same time (`WINDOW`, `LONGEST`) share one. Only
//! mirrors whose copies take the same options share a Job: the same source host, source
//! credentials Secret, `sources.verify` keys and platforms.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, PostParams};
use privateer_api::ImageMirror;
use sha2::{Digest as _, Sha256};
use tokio::sync::{Notify, watch};

use crate::job::{JobInputs, Member, copy_job};
use crate::plan::Plan;
use crate::{Context, Error};

/// A batch closes when no mirror joined it for this long: a lone mirror waits no more, while
/// a pre-warm list arriving at the pace of the reconciler's passes fills batches whole.
/// Short next to a Pod's start.
const WINDOW: Duration = Duration::from_millis(300);
/// The longest a batch stays open however steadily mirrors join.
const LONGEST: Duration = Duration::from_secs(2);

/// A mirror asking for a copy Job.
pub struct Request {
    pub mirror: ImageMirror,
    pub plan: Plan,
    pub digest: String,
    pub source_secret: Option<String>,
    pub verify_keys: Vec<String>,
}

/// What members of one Job must share.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    source_host: String,
    source_secret: Option<String>,
    verify_keys: Vec<String>,
    platforms: Vec<String>,
}

impl Key {
    fn of(request: &Request) -> Self {
        Self {
            source_host: request.plan.source.domain().to_owned(),
            source_secret: request.source_secret.clone(),
            verify_keys: request.verify_keys.clone(),
            platforms: request.plan.platforms.clone(),
        }
    }
}

/// A batch being filled: its requests, a wake-up for its first member when it is full, and
/// where the Job's name (or why there is none) is announced.
struct Open {
    requests: Mutex<Vec<Request>>,
    full: Notify,
    created: watch::Sender<Option<Result<String, String>>>,
}

#[derive(Default)]
pub struct Batcher {
    open: Mutex<HashMap<Key, Arc<Open>>>,
}

impl Batcher {
    /// The name of the Job that copies for `request`: a batch it joined or one it started.
    pub async fn join(&self, ctx: &Context, request: Request) -> Result<String, Error> {
        let size = usize::try_from(ctx.config.copy.job.batch_size)
            .unwrap_or(1)
            .max(1);
        let key = Key::of(&request);
        let (batch, first) = {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            match open.get(&key).cloned() {
                Some(batch) => {
                    let full = {
                        let mut requests = batch.requests.lock().unwrap_or_else(|p| p.into_inner());
                        // A mirror asking twice in one window copies once: two copies of one
                        // image to one tag at once race in the target (DIGEST_INVALID).
                        let name = request.mirror.metadata.name.as_deref();
                        if !requests
                            .iter()
                            .any(|r| r.mirror.metadata.name.as_deref() == name)
                        {
                            requests.push(request);
                        }
                        requests.len() >= size
                    };
                    if full {
                        open.remove(&key);
                        batch.full.notify_one();
                    }
                    (batch, false)
                }
                None => {
                    let batch = Arc::new(Open {
                        requests: Mutex::new(vec![request]),
                        full: Notify::new(),
                        created: watch::channel(None).0,
                    });
                    if size > 1 {
                        open.insert(key.clone(), batch.clone());
                    }
                    (batch, true)
                }
            }
        };
        let mut announced = batch.created.subscribe();
        if first {
            if size > 1 {
                let closes = tokio::time::Instant::now() + LONGEST;
                let mut members = 1;
                loop {
                    tokio::select! {
                        () = tokio::time::sleep_until(closes.min(tokio::time::Instant::now() + WINDOW)) => {}
                        () = batch.full.notified() => break,
                    }
                    let joined = batch
                        .requests
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .len();
                    if joined == members || tokio::time::Instant::now() >= closes {
                        break;
                    }
                    members = joined;
                }
                let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
                if open.get(&key).is_some_and(|b| Arc::ptr_eq(b, &batch)) {
                    open.remove(&key);
                }
            }
            let requests =
                std::mem::take(&mut *batch.requests.lock().unwrap_or_else(|p| p.into_inner()));
            let created = create(ctx, &requests).await.map_err(|e| e.to_string());
            batch.created.send_replace(Some(created));
        }
        let announced = announced
            .wait_for(Option::is_some)
            .await
            .map_err(|_| Error::Config("the copy batch ended without a Job".into()))?
            .clone();
        match announced {
            Some(Ok(name)) => Ok(name),
            Some(Err(e)) => Err(Error::Batch(e)),
            None => Err(Error::Batch("no Job".into())),
        }
    }
}

/// Creates the Job of `requests`.
async fn create(ctx: &Context, requests: &[Request]) -> Result<String, Error> {
    let Some(first) = requests.first() else {
        return Err(Error::Batch("an empty batch".into()));
    };
    let name = batch_name(requests);
    let members: Vec<Member> = requests
        .iter()
        .map(|r| Member {
            mirror: &r.mirror,
            plan: &r.plan,
            digest: &r.digest,
        })
        .collect();
    let inputs = JobInputs {
        name: &name,
        namespace: &ctx.config.namespace,
        image: &ctx.copy_image,
        source_secret: first.source_secret.as_deref(),
        verify_keys: &first.verify_keys,
    };
    let job = copy_job(&members, &ctx.config, &inputs);
    let jobs: Api<k8s_openapi::api::batch::v1::Job> =
        Api::namespaced(ctx.client.clone(), &ctx.config.namespace);
    match jobs.create(&PostParams::default(), &job).await {
        Ok(_) => {
            let mirrors: Vec<String> = requests.iter().map(|r| r.mirror.name_any()).collect();
            tracing::info!(job = %name, mirrors = %mirrors.join(","), "copy Job created");
            Ok(name)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(name),
        Err(e) => Err(e.into()),
    }
}

/// A DNS label: a copy for one mirror is named from it and the digest, as ever; a batch
/// `copy-<first mirror>-and-<n>-<hash>`, the hash over every member, digest and the time. The
/// time matters: members that left a failed batch may form the same batch again, and the old
/// Job (kept `ttlSecondsAfterFinished`) must not answer for it. A mirror finds its Job by its
/// label, never by the name.
fn batch_name(requests: &[Request]) -> String {
    match requests {
        [one] => crate::plan::job_name(&one.mirror.name_any(), &one.digest),
        [first, ..] => {
            let mut hasher = Sha256::new();
            for r in requests {
                hasher.update(r.mirror.name_any().as_bytes());
                hasher.update(b"\n");
                hasher.update(r.digest.as_bytes());
                hasher.update(b"\n");
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            hasher.update(now.as_nanos().to_le_bytes());
            let hash: String = hasher
                .finalize()
                .iter()
                .take(5)
                .map(|b| format!("{b:02x}"))
                .collect();
            let stem = format!("{}-and-{}", first.mirror.name_any(), requests.len() - 1);
            crate::plan::job_name(&stem, &hash)
        }
        [] => "copy-empty".into(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_configured_batch_limit_is_what_a_termination_message_carries() {
        assert_eq!(
            usize::try_from(privateer_api::config::BATCH_SIZE_MAX).ok(),
            Some(privateer_registry::BATCH_MAX)
        );
    }
}
