//! Kubernetes Events, published one way for every part of the controller. An Event that cannot
//! be written is logged and otherwise ignored: it never fails a reconcile.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};

use crate::Context;

/// Publish an Event of `kind` about `regarding`.
pub async fn publish(
    ctx: &Context,
    regarding: &ObjectReference,
    kind: EventType,
    reason: &str,
    note: Option<String>,
    action: &str,
) {
    let event = Event {
        type_: kind,
        reason: reason.to_owned(),
        note,
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, regarding).await {
        let name = regarding.name.as_deref().unwrap_or_default();
        tracing::debug!("event {reason} for {name}: {e}");
    }
}
