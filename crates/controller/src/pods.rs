//! The Pod side of the controller: the gate releaser (gated Pods, woken by their mirrors) and
//! backfill (ImageMirrors for Pods admitted while the webhook was down).

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PartialObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Resource, ResourceExt};
use privateer_api::{ImageMirror, names};
use privateer_image::{Reference, object_name};

use privateer_api::pod::{Around, mirrored_images, original_images};

use privateer_index::Changed;

use crate::gate::{GateAction, decide, needed_mirrors, release_patch};
use crate::{Context, Error};

/// Watch gated Pods (by label) and the ImageMirrors they wait for.
pub async fn run_gate_releaser(
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let controller = Controller::new(pods, watcher::Config::default().labels(names::LABEL_GATED));
    let store = controller.store();
    // Woken by the index after it holds the change: the lookup below reads that change. After
    // a relist, every gated Pod once (not once per mirror).
    let woken = ctx.index.changes().flat_map(move |changed| {
        let pods: Vec<ObjectRef<Pod>> = store
            .state()
            .into_iter()
            .filter(|pod| match &changed {
                Changed::Mirror(name) => {
                    needed_mirrors(&original_images(pod).unwrap_or_default()).contains(name)
                }
                Changed::All => true,
            })
            .map(|pod| ObjectRef::from_obj(&*pod))
            .collect();
        futures::stream::iter(pods)
    });
    controller
        .reconcile_on(woken)
        .graceful_shutdown_on(shutdown)
        .run(reconcile_gated_pod, retry_soon, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::warn!("gate releaser: {e}");
            }
        })
        .await;
}

fn retry_soon(pod: Arc<Pod>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(pod = %pod.name_any(), "gate releaser: {error}");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile_gated_pod(pod: Arc<Pod>, ctx: Arc<Context>) -> Result<Action, Error> {
    let gated = pod
        .spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .is_some_and(|gates| gates.iter().any(|g| g.name == names::SCHEDULING_GATE));
    if !gated {
        return Ok(Action::await_change());
    }
    // The process's ImageMirror index, once it holds a full list: no API call per gated Pod.
    if !ctx.index.synced() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let mirrors = ctx
        .index
        .lookup(&needed_mirrors(&original_images(&pod).unwrap_or_default()));
    let timeout: Duration = ctx.config.webhook.gate_timeout.into();
    let decision = decide(&pod, &mirrors, Timestamp::now(), timeout);
    tracing::debug!(pod = %pod.name_any(), ?decision, "gate releaser");
    let (images, kind, reason, note, action) = match decision {
        GateAction::Wait(wait) => return Ok(Action::requeue(wait)),
        GateAction::Release(images) => (
            images,
            EventType::Normal,
            "Released",
            "every image is mirrored; privateer removed its scheduling gate".to_owned(),
            "ReleaseGate",
        ),
        GateAction::Restore { images, reason } => (
            images,
            EventType::Warning,
            "ImagesRestored",
            format!("privateer put the original images back and removed its gate: {reason}"),
            "RestoreImages",
        ),
    };
    let namespace = pod.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    pods.patch(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Strategic(release_patch(&pod, &images)),
    )
    .await?;
    tracing::info!(pod = %format!("{namespace}/{}", pod.name_any()), %reason, "gate removed");
    crate::events::publish(&ctx, &pod.object_ref(&()), kind, reason, Some(note), action).await;
    Ok(Action::await_change())
}

/// Create the ImageMirrors of every Pod's public images that have none, so the next Pod uses
/// the mirror. Each image is asked about once per controller lifetime. Which images is the
/// webhook's rule (`privateer_api::pod::mirrored_images`), with the namespaces labelled
/// `privateer.dev/skip=true` known from a metadata watch, read fully before any Pod.
pub async fn run_backfill(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send) {
    let (skipped, writer) = reflector::store();
    let namespaces = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(ctx.client.clone()),
        watcher::Config::default().labels(&format!("{}=true", names::SKIP)),
    )
    .default_backoff();
    let namespaces = reflector(writer, namespaces).for_each(|event| async move {
        if let Err(e) = event {
            tracing::debug!("backfill namespace watch: {e}");
        }
    });
    let own_images: Vec<String> = Reference::parse(&ctx.copy_image)
        .map(|r| vec![r.name()])
        .unwrap_or_default();
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let mirrors: Api<ImageMirror> = Api::all(ctx.client.clone());
    let mut known = HashSet::new();
    let mut events = watcher(pods, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    let work = async {
        if skipped.wait_until_ready().await.is_err() {
            return;
        }
        while let Some(event) = events.next().await {
            let pod = match event {
                Ok(pod) => pod,
                Err(e) => {
                    tracing::debug!("backfill watch: {e}");
                    continue;
                }
            };
            let namespace = pod.namespace().unwrap_or_default();
            let around = Around {
                config: &ctx.config,
                own_images: &own_images,
                namespace_skipped: skipped.get(&ObjectRef::new(&namespace)).is_some(),
            };
            for source in mirrored_images(&pod, &around) {
                let name = object_name(&source);
                if known.contains(&name) {
                    continue;
                }
                let mirror = ImageMirror::recorded_by(&name, &source.to_string(), "backfill");
                match mirrors.create(&PostParams::default(), &mirror).await {
                    Ok(_) => {
                        tracing::info!(mirror = %name, "backfill: created for a pod admitted without it");
                        known.insert(name);
                    }
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        known.insert(name);
                    }
                    Err(e) => tracing::warn!(mirror = %name, "backfill: {e}"),
                }
            }
        }
    };
    tokio::select! {
        () = work => {}
        () = namespaces => {}
        () = shutdown => {}
    }
}
