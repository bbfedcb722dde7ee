//! The gate releaser: gated Pods (a label-selected watch), woken by their mirrors.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Resource, ResourceExt};
use privateer_api::names;
use privateer_api::pod::original_images;
use privateer_index::Changed;

use crate::gate::{
    GateAction, decide, is_gated, keep_what_the_gate_reads, needed_mirrors, release_patch,
};
use crate::{Context, Error};

/// Watch gated Pods (by label) and the ImageMirrors they wait for.
pub async fn run_gate_releaser(
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    // Only what the decision and the release patch read is kept of each gated Pod.
    let (store, writer) = reflector::store();
    let gated = reflector(
        writer,
        watcher(pods, watcher::Config::default().labels(names::LABEL_GATED))
            .default_backoff()
            .modify(keep_what_the_gate_reads),
    )
    .applied_objects();
    let controller = Controller::for_stream(gated, store.clone());
    let _ = ctx.metrics.gated_pods.set(store.clone());
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
    if !is_gated(&pod) {
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
        GateAction::Release(images) => {
            // Never released to an image the target lost since its mirror was Ready.
            let ready = mirrors.values().flatten();
            if let Some(wait) = crate::target_check::hold_release(&ctx, ready).await {
                return Ok(Action::requeue(wait));
            }
            (
                images,
                EventType::Normal,
                "Released",
                "every image is mirrored; privateer removed its scheduling gate".to_owned(),
                "ReleaseGate",
            )
        }
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
