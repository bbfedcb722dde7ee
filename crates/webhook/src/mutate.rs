//! The Pod patch planner: pure, from the Pod, the configuration and what the ImageMirror cache
//! knows, to the JSONPatch and the ImageMirrors to create. I/O (the cache, creating mirrors,
//! waiting under `Wait`) is the caller's.

use std::collections::BTreeMap;

use json_patch::{AddOperation, PatchOperation, ReplaceOperation, jsonptr::PointerBuf};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use privateer_api::config::{Config, PullSecretMode, RewritePolicy};
use privateer_api::pod::{Around, List, Slot, is_candidate, original_images, skip_reason, slots};
pub use privateer_api::pod::{Skip, ephemeral_names};
use privateer_api::{Phase, names};
use privateer_image::{Reference, TargetNaming, object_name};
use serde_json::{Value, json};

/// What the cache knows of one ImageMirror.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorView {
    pub phase: Phase,
    /// `status.targetImage`: the mirror pinned by digest, once Ready.
    pub target_image: Option<String>,
    /// `spec.target`: a user's override of the naming rule.
    pub spec_target: Option<String>,
}

impl MirrorView {
    fn ready_image(&self) -> Option<&str> {
        (self.phase == Phase::Ready)
            .then_some(self.target_image.as_deref())
            .flatten()
    }
}

/// The admission request, as far as the planner cares.
pub enum PodRequest<'a> {
    Create(&'a Pod),
    /// UPDATE of the `ephemeralcontainers` subresource: only the newly added ephemeral
    /// containers may change (existing ones are immutable, and metadata changes are dropped).
    EphemeralUpdate {
        pod: &'a Pod,
        old: &'a Pod,
    },
}

/// The facts around the Pod the planner cannot read from it.
pub struct Surroundings<'a> {
    pub config: &'a Config,
    /// `None` in policy-only installs (no target registry): nothing is rewritten.
    pub naming: Option<&'a TargetNaming>,
    /// Repositories (normalized names) of privateer's own images: never rewritten.
    pub own_images: &'a [String],
    /// The Pod's namespace carries `privateer.dev/skip=true`.
    pub namespace_skipped: bool,
}

impl Surroundings<'_> {
    /// The shared Pod rules' view of the same facts.
    pub fn rules(&self) -> Around<'_> {
        Around {
            config: self.config,
            own_images: self.own_images,
            namespace_skipped: self.namespace_skipped,
        }
    }
}

/// The outcome for one admission request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodPlan {
    pub skipped: Option<Skip>,
    pub patch: Vec<PatchOperation>,
    /// ImageMirrors the cache does not hold: name → normalized source.
    pub create: BTreeMap<String, Reference>,
    /// Mirrors not Ready that a rewrite under `Wait` would wait for.
    pub not_ready: Vec<String>,
    /// Container → new image.
    pub rewritten: BTreeMap<String, String>,
    pub gated: bool,
    /// Images parsed as invalid references: left alone, reported as warnings.
    pub warnings: Vec<String>,
}

/// Plan the mutation of a Pod under `policy` (the caller turns `Wait` into `WhenReady` after
/// waiting; passed here as `Wait`, it plans like `WhenReady`).
pub fn plan_pod(
    request: PodRequest<'_>,
    around: &Surroundings<'_>,
    mirrors: &dyn Fn(&str) -> Option<MirrorView>,
    policy: RewritePolicy,
) -> PodPlan {
    let (pod, creating) = match request {
        PodRequest::Create(pod) => (pod, true),
        PodRequest::EphemeralUpdate { pod, .. } => (pod, false),
    };
    let mut plan = PodPlan {
        skipped: skip_reason(pod, &around.rules()),
        ..PodPlan::default()
    };
    if plan.skipped.is_some() {
        return plan;
    }
    let slots = match request {
        PodRequest::Create(pod) => slots(pod, &[]),
        PodRequest::EphemeralUpdate { pod, old } => slots(pod, &ephemeral_names(old))
            .into_iter()
            .filter(|s| s.list == List::EphemeralContainers)
            .collect(),
    };
    let spec = pod.spec.as_ref();
    // Gates exist only at creation, and a Pod bound to a node cannot carry one.
    let can_gate = creating && spec.is_none_or(|s| s.node_name.is_none());
    let policy = match policy {
        RewritePolicy::Gate if !can_gate => RewritePolicy::WhenReady,
        RewritePolicy::Wait => RewritePolicy::WhenReady,
        other => other,
    };
    let config = around.config;
    for slot in &slots {
        let source = match Reference::parse(slot.image) {
            Ok(source) => source,
            Err(e) => {
                plan.warnings.push(format!(
                    "privateer left container {} alone: image {:?}: {e}",
                    slot.name, slot.image
                ));
                continue;
            }
        };
        if around.naming.is_none() || !is_candidate(&source, &around.rules()) {
            continue;
        }
        let name = object_name(&source);
        let view = mirrors(&name);
        if view.is_none() {
            plan.create.insert(name.clone(), source.clone());
        }
        let ready = view.as_ref().and_then(MirrorView::ready_image);
        if ready.is_none() {
            plan.not_ready.push(name.clone());
        }
        let new_image = match (policy, ready) {
            (RewritePolicy::Record, _) => None,
            (_, Some(ready)) => Some(ready.to_owned()),
            (RewritePolicy::WhenReady | RewritePolicy::Wait, None) => None,
            (RewritePolicy::Gate | RewritePolicy::Always, None) => {
                plan.gated |= policy == RewritePolicy::Gate;
                view.and_then(|v| v.spec_target).or_else(|| {
                    around
                        .naming
                        .and_then(|n| n.target(&source).ok())
                        .map(|t| t.to_string())
                })
            }
        };
        if let Some(image) = new_image.filter(|image| image != slot.image) {
            plan.patch.push(replace(
                &["spec", slot.list.field(), &slot.index.to_string(), "image"],
                json!(image),
            ));
            if let Some(pull_policy) = config.webhook.image_pull_policy {
                plan.patch.push(add(
                    &[
                        "spec",
                        slot.list.field(),
                        &slot.index.to_string(),
                        "imagePullPolicy",
                    ],
                    json!(pull_policy.as_str()),
                ));
            }
            plan.rewritten.insert(slot.name.to_owned(), image);
        }
    }
    plan.not_ready.sort();
    plan.not_ready.dedup();
    // Record audits: not even pull secrets are added.
    if !creating || policy == RewritePolicy::Record {
        return plan;
    }
    if !plan.rewritten.is_empty() {
        // A reinvocation after another webhook added containers keeps the earlier entries.
        let mut originals = original_images(pod).unwrap_or_default();
        for slot in &slots {
            if plan.rewritten.contains_key(slot.name) {
                originals.insert(slot.name.to_owned(), slot.image.to_owned());
            }
        }
        let text = serde_json::to_string(&originals).unwrap_or_default();
        set_map_entry(
            &mut plan.patch,
            pod.metadata.annotations.is_some(),
            "annotations",
            names::ANNOTATION_ORIGINAL_IMAGES,
            text,
        );
    }
    if plan.gated {
        gate(&mut plan.patch, pod);
    }
    pull_secrets(&mut plan.patch, pod, &slots, &plan.rewritten, around);
    plan
}

fn gate(patch: &mut Vec<PatchOperation>, pod: &Pod) {
    let gates = pod.spec.as_ref().and_then(|s| s.scheduling_gates.as_ref());
    let gate = json!({"name": names::SCHEDULING_GATE});
    match gates {
        Some(gates) if gates.iter().any(|g| g.name == names::SCHEDULING_GATE) => {}
        Some(_) => patch.push(add(&["spec", "schedulingGates", "-"], gate)),
        None => patch.push(add(&["spec", "schedulingGates"], json!([gate]))),
    }
    let labelled = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(names::LABEL_GATED))
        .is_some_and(|v| v == "true");
    if !labelled {
        set_map_entry(
            patch,
            pod.metadata.labels.is_some(),
            "labels",
            names::LABEL_GATED,
            "true".into(),
        );
    }
}

/// Pull secrets go to Pods that pull from the target registry (rewritten now or before).
fn pull_secrets(
    patch: &mut Vec<PatchOperation>,
    pod: &Pod,
    slots: &[Slot<'_>],
    rewritten: &BTreeMap<String, String>,
    around: &Surroundings<'_>,
) {
    let wanted = &around.config.webhook.image_pull_secrets;
    if wanted.names.is_empty() {
        return;
    }
    let uses_target = !rewritten.is_empty()
        || slots.iter().any(|s| {
            Reference::parse(s.image)
                .is_ok_and(|r| around.naming.is_some_and(|n| n.is_in_target(&r)))
        });
    if !uses_target {
        return;
    }
    let current: Vec<String> = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.as_ref())
        .map(|secrets| secrets.iter().map(|s| s.name.clone()).collect())
        .unwrap_or_default();
    let desired: Vec<String> = match wanted.mode {
        PullSecretMode::Replace => wanted.names.clone(),
        PullSecretMode::Append => {
            let mut all = current.clone();
            for name in &wanted.names {
                if !all.contains(name) {
                    all.push(name.clone());
                }
            }
            all
        }
    };
    if desired != current {
        let list: Vec<Value> = desired.iter().map(|n| json!({"name": n})).collect();
        patch.push(add(&["spec", "imagePullSecrets"], json!(list)));
    }
}

/// Set `metadata.<map>.<key>`, creating the map when the object has none.
fn set_map_entry(
    patch: &mut Vec<PatchOperation>,
    map_exists: bool,
    map: &str,
    key: &str,
    value: String,
) {
    if map_exists {
        patch.push(add(&["metadata", map, key], json!(value)));
    } else {
        patch.push(add(&["metadata", map], json!({ key: value })));
    }
}

/// A PersistentVolumeClaim created without a storage class gets `defaultStorageClass`
/// (an explicit `""` means "no class" and is kept).
pub fn plan_pvc(pvc: &PersistentVolumeClaim, config: &Config) -> Vec<PatchOperation> {
    let class = &config.webhook.default_storage_class;
    let named = pvc
        .spec
        .as_ref()
        .is_some_and(|s| s.storage_class_name.is_some());
    if class.is_empty() || named {
        return Vec::new();
    }
    if pvc.spec.is_none() {
        return vec![add(&["spec"], json!({"storageClassName": class}))];
    }
    vec![add(&["spec", "storageClassName"], json!(class))]
}

fn pointer(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: pointer(tokens),
        value,
    })
}

fn replace(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Replace(ReplaceOperation {
        path: pointer(tokens),
        value,
    })
}
