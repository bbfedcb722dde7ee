//! The controller's one watch of every Pod, and what it feeds: the usage count written to
//! `status.usage` (`usage.rs`), retention of unused mirrors (`retention.rs`) and backfill
//! (ImageMirrors for Pods admitted while the webhook was down). Pods are not kept: each event
//! leaves only the names of the mirrors the Pod uses, so memory grows with Pods × images, not
//! with Pod objects. Which images count is the webhook's rule (`privateer_api::pod`), with the
//! namespaces labelled `privateer.dev/skip=true` known from a metadata watch, read fully before
//! any Pod.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, PartialObjectMeta, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use privateer_api::pod::{Around, mirrored_images};
use privateer_api::{ImageMirror, names};
use privateer_image::{Reference, object_name};
use privateer_index::Changed;

use crate::usage::{UsageCount, next_usage, used_mirrors};
use crate::{Context, retention, usage};

/// How often changed counts are written: a Deployment scaling by hundreds costs one write per
/// mirror per interval, not one per Pod.
const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// Usage writes in flight at once.
const WRITES_AT_ONCE: usize = 8;

/// Count, retire and backfill until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send) {
    let (skipped, writer) = reflector::store();
    let namespaces = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(ctx.client.clone()),
        watcher::Config::default().labels(&format!("{}=true", names::SKIP)),
    )
    .default_backoff();
    let namespaces = reflector(writer, namespaces).for_each(|event| async move {
        if let Err(e) = event {
            tracing::debug!("namespace watch: {e}");
        }
    });
    let mut watch = PodWatch {
        own_images: Reference::parse(&ctx.copy_image)
            .map(|r| vec![r.name()])
            .unwrap_or_default(),
        backfill: ctx.config.controller.backfill.then(Backfill::default),
        usage: UsageCount::default(),
        skipped,
        ctx: ctx.clone(),
    };
    let work = async {
        if watch.skipped.wait_until_ready().await.is_err() {
            return;
        }
        let pods: Api<Pod> = Api::all(ctx.client.clone());
        let mut events = watcher(pods, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut changes = ctx.index.changes().boxed();
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let unused_for: Duration = ctx.config.controller.retention.unused_for.into();
        let mut retire = tokio::time::interval(retention::pass_interval(unused_for));
        retire.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(event)) => watch.handle(event).await,
                    Some(Err(e)) => tracing::debug!("pod watch: {e}"),
                    None => return,
                },
                changed = changes.next() => match changed {
                    // A mirror appeared or changed: its count on the object may be wrong.
                    Some(Changed::Mirror(name)) => watch.usage.recheck(name),
                    Some(Changed::All) => watch.usage.recheck_all(),
                    None => return,
                },
                _ = flush.tick() => watch.flush().await,
                _ = retire.tick(), if !unused_for.is_zero() => watch.retire(unused_for).await,
            }
        }
    };
    tokio::select! {
        () = work => {}
        () = namespaces => {}
        () = shutdown => {}
    }
}

struct PodWatch {
    ctx: Arc<Context>,
    own_images: Vec<String>,
    skipped: Store<PartialObjectMeta<Namespace>>,
    usage: UsageCount,
    backfill: Option<Backfill>,
}

impl PodWatch {
    async fn handle(&mut self, event: watcher::Event<Pod>) {
        match event {
            watcher::Event::Init => self.usage.list_started(),
            watcher::Event::InitDone => self.usage.list_done(),
            watcher::Event::Delete(pod) => self.usage.delete(&key(&pod)),
            watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                let namespace = pod.namespace().unwrap_or_default();
                let around = Around {
                    config: &self.ctx.config,
                    own_images: &self.own_images,
                    namespace_skipped: self.skipped.get(&ObjectRef::new(&namespace)).is_some(),
                };
                let mirrored = mirrored_images(&pod, &around);
                self.usage.apply(key(&pod), used_mirrors(&pod, &mirrored));
                if let Some(backfill) = &mut self.backfill {
                    backfill.record(&self.ctx, mirrored).await;
                }
            }
        }
    }

    /// Write the counts that differ from their objects.
    async fn flush(&mut self) {
        let now = Timestamp::now();
        let names: Vec<String> = match self.usage.take_due() {
            Some(names) => names,
            None => self
                .ctx
                .index
                .all()
                .iter()
                .filter_map(|entry| entry.0.as_ref().ok().map(ResourceExt::name_any))
                .collect(),
        };
        let writes: Vec<_> = names
            .into_iter()
            .filter_map(|name| {
                let pods = self.usage.count(&name);
                self.ctx.index.read(&name, |mirror| {
                    let current = mirror.status.as_ref().and_then(|s| s.usage.as_ref());
                    next_usage(current, pods, now).map(|next| (mirror.clone(), next))
                })?
            })
            .collect();
        let ctx = &self.ctx;
        let failed: Vec<String> = futures::stream::iter(writes)
            .map(|(mirror, next)| async move {
                match usage::write(ctx, &mirror, &next).await {
                    Ok(()) => None,
                    Err(e) => {
                        tracing::warn!(mirror = %mirror.name_any(), "usage: {e}");
                        Some(mirror.name_any())
                    }
                }
            })
            .buffer_unordered(WRITES_AT_ONCE)
            .filter_map(|failed| async move { failed })
            .collect()
            .await;
        for name in failed {
            self.usage.recheck(name);
        }
    }

    /// Delete the mirrors no Pod has used for `unused_for`, once the count can be trusted.
    async fn retire(&mut self, unused_for: Duration) {
        if !self.usage.synced() || !self.ctx.index.synced() {
            return;
        }
        let now = SystemTime::now();
        let due: Vec<ImageMirror> = self
            .ctx
            .index
            .all()
            .iter()
            .filter_map(|entry| entry.0.as_ref().ok())
            .filter(|m| retention::due(m, self.usage.count(&m.name_any()), unused_for, now))
            .cloned()
            .collect();
        for mirror in due {
            match retention::retire(&self.ctx, &mirror).await {
                // A Pod admitted later without the webhook gets it recorded again.
                Ok(()) => {
                    if let Some(backfill) = &mut self.backfill {
                        backfill.known.remove(&mirror.name_any());
                    }
                }
                Err(e) => tracing::warn!(mirror = %mirror.name_any(), "retention: {e}"),
            }
        }
    }
}

fn key(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

/// Backfill: each image is asked about once per controller lifetime.
#[derive(Default)]
struct Backfill {
    known: HashSet<String>,
}

impl Backfill {
    /// Create the ImageMirrors of `sources` that have none, so the next Pod uses the mirror.
    async fn record(&mut self, ctx: &Context, sources: Vec<Reference>) {
        let mirrors: Api<ImageMirror> = Api::all(ctx.client.clone());
        for source in sources {
            let name = object_name(&source);
            if self.known.contains(&name) || ctx.index.read(&name, |_| ()).is_some() {
                continue;
            }
            let mirror = ImageMirror::recorded_by(&name, &source.to_string(), "backfill");
            match mirrors.create(&PostParams::default(), &mirror).await {
                Ok(_) => {
                    tracing::info!(mirror = %name, "backfill: created for a pod admitted without it");
                    self.known.insert(name);
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    self.known.insert(name);
                }
                Err(e) => tracing::warn!(mirror = %name, "backfill: {e}"),
            }
        }
    }
}
