//! The Pod rules, in one place: which images of a Pod privateer mirrors, and when it leaves a
//! whole Pod alone. The mutating webhook, backfill and the gate releaser all ask here, so they
//! cannot drift apart. Also what privateer writes on the Pods it rewrites, read back the same
//! way by the webhook (reinvocation, policy) and the controller (gate releaser). Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use privateer_image::Reference;

use crate::Config;
use crate::names::{self, ANNOTATION_ORIGINAL_IMAGES};

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

/// Which container list of the Pod spec a container is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum List {
    Containers,
    InitContainers,
    EphemeralContainers,
}

impl List {
    /// The field name in the Pod spec.
    pub fn field(self) -> &'static str {
        match self {
            Self::Containers => "containers",
            Self::InitContainers => "initContainers",
            Self::EphemeralContainers => "ephemeralContainers",
        }
    }
}

/// One container of a Pod and the image it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot<'a> {
    pub list: List,
    /// The position in its list.
    pub index: usize,
    pub name: &'a str,
    pub image: &'a str,
}

/// Every container of `pod` that names an image: init containers, containers, then the
/// ephemeral containers not in `existing_ephemeral` (those already there cannot change).
pub fn slots<'a>(pod: &'a Pod, existing_ephemeral: &[&str]) -> Vec<Slot<'a>> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    let mut slots = Vec::new();
    let lists = [
        (List::InitContainers, spec.init_containers.as_deref()),
        (List::Containers, Some(spec.containers.as_slice())),
    ];
    for (list, containers) in lists {
        for (index, c) in containers.unwrap_or_default().iter().enumerate() {
            if let Some(image) = c.image.as_deref() {
                slots.push(Slot {
                    list,
                    index,
                    name: &c.name,
                    image,
                });
            }
        }
    }
    for (index, c) in spec.ephemeral_containers.iter().flatten().enumerate() {
        if let Some(image) = c.image.as_deref()
            && !existing_ephemeral.contains(&c.name.as_str())
        {
            slots.push(Slot {
                list: List::EphemeralContainers,
                index,
                name: &c.name,
                image,
            });
        }
    }
    slots
}

/// Names of the ephemeral containers a Pod already has (they can no longer change).
pub fn ephemeral_names(pod: &Pod) -> Vec<&str> {
    pod.spec
        .iter()
        .flat_map(|s| s.ephemeral_containers.iter().flatten())
        .map(|c| c.name.as_str())
        .collect()
}

/// Why a whole Pod is left alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    ExcludedNamespace,
    SkipLabelledNamespace,
    SkipAnnotation,
    PrivateersOwnPod,
}

/// What the rules need to know besides the Pod and the configuration.
#[derive(Clone, Copy, Debug)]
pub struct Around<'a> {
    pub config: &'a Config,
    /// Normalized names (no tag) of privateer's own images: never mirrored.
    pub own_images: &'a [String],
    /// The Pod's namespace carries `privateer.dev/skip=true`.
    pub namespace_skipped: bool,
}

/// Why privateer leaves `pod` alone, if it does.
pub fn skip_reason(pod: &Pod, around: &Around<'_>) -> Option<Skip> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    if around.config.excludes_namespace(namespace) {
        return Some(Skip::ExcludedNamespace);
    }
    if around.namespace_skipped {
        return Some(Skip::SkipLabelledNamespace);
    }
    let has = |map: &Option<BTreeMap<String, String>>, key: &str, value: &str| {
        map.as_ref()
            .and_then(|m| m.get(key))
            .is_some_and(|v| v == value)
    };
    if has(&pod.metadata.annotations, names::SKIP, "true") {
        return Some(Skip::SkipAnnotation);
    }
    if has(
        &pod.metadata.labels,
        names::LABEL_COMPONENT,
        names::COMPONENT_VALUE,
    ) {
        return Some(Skip::PrivateersOwnPod);
    }
    None
}

/// Is `source` an image privateer mirrors? From a mirrored registry, not in the target, not
/// excluded, not privateer's own, and not one the validating webhook will refuse.
pub fn is_candidate(source: &Reference, around: &Around<'_>) -> bool {
    around.config.mirrors_image(source)
        && !around.own_images.contains(&source.name())
        && crate::policy::source_denials(source, around.config).is_empty()
}

/// The images of `pod` privateer mirrors, once each, in container order: what the webhook
/// records at admission and what backfill records for Pods admitted without it. An image
/// already rewritten to the target is not mirrored again.
pub fn mirrored_images(pod: &Pod, around: &Around<'_>) -> Vec<Reference> {
    if skip_reason(pod, around).is_some() {
        return Vec::new();
    }
    let mut images: Vec<Reference> = Vec::new();
    for slot in slots(pod, &[]) {
        let Ok(source) = Reference::parse(slot.image) else {
            continue;
        };
        if is_candidate(&source, around) && !images.contains(&source) {
            images.push(source);
        }
    }
    images
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(namespace: &str, images: &[&str]) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": namespace},
            "spec": {"containers": images.iter().enumerate()
                .map(|(i, image)| serde_json::json!({"name": format!("c{i}"), "image": image}))
                .collect::<Vec<_>>()}
        }))
        .expect("a Pod")
    }

    fn config() -> Config {
        let mut config = Config::default();
        config.target.registry = "123456789012.dkr.ecr.eu-west-1.amazonaws.com".into();
        config.policy.allowed_registries.enabled = true;
        config.policy.allowed_registries.registries =
            vec!["docker.io".into(), "quay.io/good".into()];
        config
    }

    fn names(images: Vec<Reference>) -> Vec<String> {
        images.into_iter().map(|r| r.to_string()).collect()
    }

    #[test]
    fn denied_own_and_skipped_images_are_not_mirrored() {
        let config = config();
        let own = vec!["ghcr.io/privateer-dev/privateer".to_owned()];
        let around = Around {
            config: &config,
            own_images: &own,
            namespace_skipped: false,
        };
        let images = [
            "nginx:1.27",
            "quay.io/evil/miner:1",
            "ghcr.io/privateer-dev/privateer:0.1.0",
            "nginx:1.27",
        ];
        assert_eq!(
            names(mirrored_images(&pod("apps", &images), &around)),
            ["docker.io/library/nginx:1.27"]
        );
        let skipped = Around {
            namespace_skipped: true,
            ..around
        };
        assert!(mirrored_images(&pod("apps", &images), &skipped).is_empty());
        assert!(mirrored_images(&pod("privateer", &images), &around).is_empty());
    }
}
