//! `deletionPolicy: Delete`: the finalizer privateer holds (only for such mirrors) until the
//! mirrored image is deleted from the target.

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use privateer_api::{DeletionPolicy, ImageMirror, names};
use privateer_ecr::TargetProvider;
use privateer_image::Reference;

use crate::{Context, Error};

/// `deletionPolicy: Delete` holds the object with a finalizer (only then) until the mirrored
/// image is deleted; `Some` when this pass was about that and nothing else is to be done.
pub async fn finalize(ctx: &Context, mirror: &ImageMirror) -> Result<Option<Action>, Error> {
    let held = mirror.finalizers().iter().any(|f| f == names::FINALIZER);
    let wanted = mirror.spec.deletion_policy == DeletionPolicy::Delete;
    if mirror.metadata.deletion_timestamp.is_some() {
        if held {
            delete_mirrored_image(ctx, mirror).await?;
            set_finalizer(ctx, mirror, false).await?;
        }
        return Ok(Some(Action::await_change()));
    }
    if held != wanted {
        // The patch wakes the next pass.
        set_finalizer(ctx, mirror, wanted).await?;
        return Ok(Some(Action::await_change()));
    }
    Ok(None)
}

async fn set_finalizer(ctx: &Context, mirror: &ImageMirror, on: bool) -> Result<(), Error> {
    let mut finalizers: Vec<String> = mirror
        .finalizers()
        .iter()
        .filter(|f| *f != names::FINALIZER)
        .cloned()
        .collect();
    if on {
        finalizers.push(names::FINALIZER.to_owned());
    }
    // resourceVersion makes the merge patch conditional: no finalizer of others is lost.
    let patch = serde_json::json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": mirror.resource_version(),
    }});
    let api: Api<ImageMirror> = Api::all(ctx.client.clone());
    api.patch(
        &mirror.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// Delete the image the mirror copied. Transient failures keep the finalizer (retried); a
/// refusal is reported and the object let go, so deletion is never blocked for good.
async fn delete_mirrored_image(ctx: &Context, mirror: &ImageMirror) -> Result<(), Error> {
    let pinned = mirror
        .status
        .as_ref()
        .and_then(|s| s.target_image.as_deref())
        .and_then(|t| Reference::parse(t).ok());
    let Some(target) = pinned else {
        return Ok(());
    };
    let Some(digest) = target.digest().map(ToString::to_string) else {
        return Ok(());
    };
    let (reason, note, kind) = match ctx.provider.delete_image(target.path(), &digest).await {
        Ok(true) => (
            "ImageDeleted",
            format!("deleted {target}"),
            EventType::Normal,
        ),
        Ok(false) => (
            "ImageDeleted",
            format!("{target} was already gone"),
            EventType::Normal,
        ),
        Err(e) if e.is_transient() => return Err(e.into()),
        Err(e) => ("ImageRetained", e.to_string(), EventType::Warning),
    };
    crate::events::publish(
        ctx,
        &mirror.object_ref(&()),
        kind,
        reason,
        Some(note),
        "DeleteImage",
    )
    .await;
    Ok(())
}
