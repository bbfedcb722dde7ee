//! privateer's controller: reconciles `ImageMirror`s into copies in the target registry, run
//! as Jobs in the operator namespace, with status and retries on the resource.
//!
//! Built on kube-runtime's `Controller`: ImageMirrors are the main resource, copy Jobs (owned
//! by their mirror) wake it when they finish. The reconciler (`reconcile.rs`) reads as a
//! pipeline; decisions that need no I/O live in `plan.rs` and `status.rs`.

mod batch;
mod copy_jobs;
mod decide;
mod events;
mod finalize;
mod gate;
mod job;
mod job_messages;
mod leader;
mod metrics;
mod plan;
mod pod_watch;
mod pods;
mod rate_limit;
mod reconcile;
mod retention;
mod stage;
mod status;
mod target_check;
mod usage;
mod verify;
mod written;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use privateer_api::config::{Config, TargetKind};
use privateer_api::{ImageMirror, names};
use privateer_ecr::{DockerConfig, Provider, TargetError};
use privateer_image::TargetNaming;
use privateer_index::{Changed, MirrorIndex};
use privateer_registry::{CopyOptions, Credentials, Limits, Redirects, Timeouts, TlsOptions};
use tokio_util::sync::CancellationToken;

pub use copy_jobs::{
    copies as copy_job_members, member_label as copy_member_label,
    member_value as copy_member_value,
};
pub use events::Events;
pub use gate::{GateAction, decide as decide_gate, release_patch};
pub use job::{BINARY, JobInputs, Member as JobMember, copy_job};
pub use plan::{InvalidSpec, Plan, backoff, job_name, plan};
pub use status::{Outcome, build as build_status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("target registry: {0}")]
    Target(#[from] TargetError),
    #[error("configuration: {0}")]
    Config(String),
    #[error(
        "the ImageMirror CRD is not installed: run `privateer crd | kubectl apply -f -` (or install the Helm chart) first"
    )]
    CrdMissing,
    #[error("leader election: {0}")]
    Lease(String),
    #[error("copy Job: {0}")]
    Batch(String),
    #[error("Secret {namespace}/{name}: {problem}")]
    Secret {
        namespace: String,
        name: String,
        problem: String,
    },
}

/// What every reconcile shares.
pub struct Context {
    pub client: kube::Client,
    pub config: Config,
    pub naming: TargetNaming,
    pub provider: Provider,
    /// The image copy Jobs run.
    pub copy_image: String,
    /// Events about mirrors and Pods, repeats counted as series.
    pub events: events::Events,
    pub metrics: Arc<metrics::Metrics>,
    /// The process's one ImageMirror index: the reconciler's objects and triggers, the gate
    /// releaser's lookups, the metrics' counts.
    pub index: Arc<MirrorIndex>,
    /// How the controller itself reaches registries (resolving sources, inline copies): TLS
    /// from `target.insecure`, `target.caFile` and `sources.endpoints[*].caFile`, read once.
    pub copy_options: CopyOptions,
    /// Copies the inline executor runs at once (`copy.concurrency`).
    pub copy_slots: tokio::sync::Semaphore,
    /// `controller.targetCheck.perMinute`, shared by every mirror.
    pub target_checks: target_check::Budget,
    /// `controller.targetCheck.beforeRelease`: recent looks, shared by the Pods released.
    pub release_looks: target_check::ReleaseLooks,
    /// Mirrors found gone from the target before a release, for the reconciler to copy.
    pub recopy: target_check::Recopy,
    /// `sources.rateLimits`, shared by every mirror pass.
    pub source_budgets: Arc<rate_limit::SourceBudgets>,
    /// Mirrors needing a copy Job at the same time share one (`copy.job.batchSize`).
    pub batcher: batch::Batcher,
    /// The copy Jobs as the reconciler's own Job watch last saw them (this term's), so a mirror
    /// woken by its Job reads it without asking the API server.
    pub jobs: std::sync::RwLock<Option<kube::runtime::reflector::Store<Job>>>,
    /// Finished batch Jobs' results, read once for all their mirrors.
    pub job_messages: job_messages::JobMessages,
    /// The status last written on each mirror, until the cache shows it.
    pub written: written::WrittenStatus,
}

impl Context {
    pub async fn new(
        client: kube::Client,
        config: Config,
        copy_image: String,
        index: Arc<MirrorIndex>,
    ) -> Result<Self, Error> {
        let naming = TargetNaming::new(&config.target.registry, &config.target.prefix)
            .map_err(|e| Error::Config(format!("target: {e}")))?;
        let generic_credentials = match (
            &config.target.kind,
            config.target.credentials_secret.as_str(),
        ) {
            (TargetKind::Generic, secret) if !secret.is_empty() => {
                Some(read_docker_config(&client, &config.namespace, secret).await?)
            }
            _ => None,
        };
        let provider = Box::pin(Provider::from_config(&config, generic_credentials)).await?;
        let config_concurrency = config.copy.concurrency;
        let copy_options = copy_options(&config)?;
        let events = events::Events::new(
            client.clone(),
            "privateer-controller",
            std::env::var("POD_NAME").ok(),
        );
        let target_checks = target_check::Budget::new(config.controller.target_check.per_minute);
        let source_budgets = Arc::new(rate_limit::SourceBudgets::new(&config.sources.rate_limits));
        Ok(Self {
            client,
            config,
            naming,
            provider,
            copy_image,
            events,
            metrics: Arc::new(metrics::Metrics::new(index.clone(), source_budgets.clone())),
            index,
            copy_options,
            copy_slots: tokio::sync::Semaphore::new(
                usize::try_from(config_concurrency).unwrap_or(1).max(1),
            ),
            target_checks,
            release_looks: target_check::ReleaseLooks::default(),
            recopy: target_check::Recopy::default(),
            source_budgets,
            batcher: batch::Batcher::default(),
            jobs: std::sync::RwLock::new(None),
            job_messages: job_messages::JobMessages::default(),
            written: written::WrittenStatus::default(),
        })
    }

    /// Readiness and metrics for the plain port (`privateer-health`).
    pub fn probe(&self) -> Arc<dyn privateer_health::Probe> {
        self.metrics.clone()
    }

    /// Credentials for `host` from a dockerconfigjson Secret in privateer's namespace.
    async fn secret_credentials(&self, secret: &str, host: &str) -> Result<Credentials, Error> {
        let config = read_docker_config(&self.client, &self.config.namespace, secret).await?;
        let found = config.credentials_for(host);
        Ok(Credentials::from_login(
            found.map(|c| (c.username.as_str(), c.password.as_str())),
        ))
    }
}

fn copy_options(config: &Config) -> Result<CopyOptions, Error> {
    let mut ca_files = vec![("target.caFile".to_owned(), &config.target.ca_file)];
    for (host, endpoint) in &config.sources.endpoints {
        ca_files.push((
            format!("sources.endpoints.{host}.caFile"),
            &endpoint.ca_file,
        ));
    }
    let mut ca_pems = Vec::new();
    for (key, path) in ca_files.into_iter().filter(|(_, path)| !path.is_empty()) {
        let pem = std::fs::read(path).map_err(|e| Error::Config(format!("{key} {path}: {e}")))?;
        ca_pems.push(pem);
    }
    let r = &config.registries;
    Ok(CopyOptions {
        parallelism: usize::try_from(config.copy.parallelism).unwrap_or(1).max(1),
        referrers: config.copy.referrers,
        limits: Limits {
            manifest_bytes: r.limits.manifest_bytes,
            index_children: r.limits.index_children as usize,
            layers: r.limits.layers as usize,
            token_bytes: r.limits.token_bytes,
            total_bytes: r.limits.total_bytes,
            ..Limits::default()
        },
        timeouts: Timeouts {
            connect: r.timeouts.connect.into(),
            read: r.timeouts.read.into(),
            resolve: r.timeouts.resolve.into(),
            copy: r.timeouts.copy.into(),
        },
        redirects: Redirects {
            max_hops: r.redirects.max_hops as usize,
            allow_private: r.redirects.allow_private,
        },
        tls: TlsOptions {
            insecure_hosts: config
                .target
                .insecure
                .then(|| config.target.registry.clone())
                .into_iter()
                .collect(),
            ca_pems,
        },
        ..CopyOptions::default()
    })
}

async fn read_docker_config(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<DockerConfig, Error> {
    let problem = |problem: String| Error::Secret {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        problem,
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = secrets
        .get(name)
        .await
        .map_err(|e| problem(e.to_string()))?;
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(".dockerconfigjson"))
        .ok_or_else(|| problem("has no .dockerconfigjson key".into()))?;
    DockerConfig::parse(&bytes.0).map_err(|e| problem(e.to_string()))
}

/// Reconcile until `shutdown` resolves (serve [`Context::probe`] on the plain port alongside); with leader election on, only while holding the Lease
/// (a standby takes over within the lease duration when the leader goes away).
pub async fn run(
    ctx: Context,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let mirrors: Api<ImageMirror> = Api::all(ctx.client.clone());
    if let Err(kube::Error::Api(e)) = mirrors.list(&Default::default()).await
        && e.code == 404
    {
        return Err(Error::CrdMissing);
    }
    let ctx = Arc::new(ctx);
    let stopping = CancellationToken::new();
    ctx.metrics
        .ready
        .store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::spawn({
        let stopping = stopping.clone();
        async move {
            shutdown.await;
            stopping.cancel();
        }
    });
    let election = &ctx.config.controller.leader_election;
    if !election.enabled {
        run_controllers(ctx.clone(), stopping).await;
        return Ok(());
    }
    leader::while_leading(&ctx, stopping, |term| run_controllers(ctx.clone(), term)).await
}

/// The three loops (mirrors, gated Pods, all Pods), until `stop` is cancelled. The reconciler
/// is driven by the index: every mirror it holds at the start of the term, then each change.
async fn run_controllers(ctx: Arc<Context>, stop: CancellationToken) {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.config.namespace);
    let owned = watcher::Config::default().labels(&format!(
        "{}={}",
        names::LABEL_COMPONENT,
        names::COMPONENT_VALUE
    ));
    let index = ctx.index.clone();
    // Subscribed before the snapshot, so nothing falls between them.
    let changes = futures::stream::select(index.changes(), ctx.recopy.woken().map(Changed::Mirror));
    let triggers = futures::stream::iter(index.all())
        .chain(changes.flat_map(move |changed| {
            let entries = match changed {
                Changed::Mirror(name) => index
                    .store()
                    .get(&ObjectRef::new(&name))
                    .into_iter()
                    .collect(),
                Changed::All => index.all(),
            };
            futures::stream::iter(entries)
        }))
        .map(|entry| Ok((*entry).clone()));
    let controller = Controller::for_stream(triggers, ctx.index.store()).with_config(
        kube::runtime::controller::Config::default().concurrency(
            u16::try_from(ctx.config.controller.concurrency.max(1)).unwrap_or(u16::MAX),
        ),
    );
    // The Job watch feeds a cache before it wakes a Job's mirrors, so what a woken mirror
    // reads there is at least what woke it.
    let (job_store, job_writer) = kube::runtime::reflector::store();
    let job_events = kube::runtime::reflector(job_writer, watcher(jobs, owned).default_backoff())
        .touched_objects();
    *ctx.jobs.write().unwrap_or_else(|p| p.into_inner()) = Some(job_store);
    let metrics = ctx.metrics.clone();
    let mirrors_done = controller
        .owns_stream(job_events)
        .graceful_shutdown_on(stop.clone().cancelled_owned())
        .run(reconcile_guarded, error_policy, ctx.clone())
        .for_each(move |result| {
            let metrics = metrics.clone();
            async move {
                match result {
                    Ok((object, _)) => {
                        metrics::Metrics::count(&metrics.reconciles, "ok");
                        tracing::debug!(mirror = %object.name, "reconciled");
                    }
                    Err(e) => {
                        metrics::Metrics::count(&metrics.reconciles, "error");
                        tracing::warn!("reconcile: {e}");
                    }
                }
            }
        });
    let gates_done = pods::run_gate_releaser(ctx.clone(), stop.clone().cancelled_owned());
    // Usage, retention and backfill: one watch of every Pod.
    let pods_done = pod_watch::run(ctx.clone(), stop.clone().cancelled_owned());
    ctx.metrics
        .leading
        .store(true, std::sync::atomic::Ordering::Relaxed);
    futures::join!(mirrors_done, gates_done, pods_done);
    ctx.metrics
        .leading
        .store(false, std::sync::atomic::Ordering::Relaxed);
}

/// A mirror that does not deserialize (an out-of-range duration, a field from another
/// version) gets a Warning Event and waits for a fix; the others carry on.
async fn reconcile_guarded(
    object: Arc<DeserializeGuard<ImageMirror>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    match &object.0 {
        Ok(mirror) => reconcile::reconcile(Arc::new(mirror.clone()), ctx).await,
        Err(invalid) => {
            let name = invalid.metadata.name.clone().unwrap_or_default();
            tracing::warn!(mirror = %name, "not reconciled, the object does not parse: {}", invalid.error);
            let reference = k8s_openapi::api::core::v1::ObjectReference {
                api_version: Some(format!("{}/v1alpha1", names::API_GROUP)),
                kind: Some("ImageMirror".into()),
                name: Some(name),
                uid: invalid.metadata.uid.clone(),
                ..Default::default()
            };
            let note = format!("privateer cannot read this ImageMirror: {}", invalid.error);
            events::publish(
                &ctx,
                &reference,
                kube::runtime::events::EventType::Warning,
                "InvalidObject",
                Some(note),
                "Reconcile",
            )
            .await;
            Ok(Action::await_change())
        }
    }
}

/// Errors that escaped the pipeline (the API server, a Secret): try again soon. Failures of
/// the copy itself are recorded in status with their own backoff.
fn error_policy(
    mirror: Arc<DeserializeGuard<ImageMirror>>,
    error: &Error,
    _ctx: Arc<Context>,
) -> Action {
    let name = match &mirror.0 {
        Ok(m) => m.metadata.name.clone(),
        Err(invalid) => invalid.metadata.name.clone(),
    };
    tracing::warn!(mirror = %name.unwrap_or_default(), "{error}");
    Action::requeue(Duration::from_secs(15))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `registries.*` defaults in the configuration and the copier's own (what `privateer copy`
    /// uses without flags) are written in two layers; they must say the same.
    #[test]
    fn configuration_defaults_are_the_copiers_defaults() {
        let from_config = copy_options(&Config::default()).expect("default options");
        let copier = CopyOptions::default();
        assert_eq!(from_config.limits, copier.limits);
        assert_eq!(from_config.timeouts, copier.timeouts);
        assert_eq!(from_config.redirects, copier.redirects);
    }
}
