//! What privateer writes on the Pods it rewrites, read back the same way by the webhook
//! (reinvocation, policy) and the controller (gate releaser).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use crate::names::ANNOTATION_ORIGINAL_IMAGES;

/// Container → image as the Pod asked for it, from `privateer.dev/original-images`; empty when
/// privateer rewrote nothing. `Err` names the annotation when its JSON is broken.
pub fn original_images(pod: &Pod) -> Result<BTreeMap<String, String>, String> {
    let Some(text) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_ORIGINAL_IMAGES))
    else {
        return Ok(BTreeMap::new());
    };
    serde_json::from_str(text).map_err(|e| format!("annotation {ANNOTATION_ORIGINAL_IMAGES}: {e}"))
}
