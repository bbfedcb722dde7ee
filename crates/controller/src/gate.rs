//! The gate releaser's decision: a Pod held by the scheduling gate `privateer.dev/mirror` is
//! released once every ImageMirror it needs is Ready, and restored to its original images when
//! one fails or the Pod has waited longer than `gateTimeout`. No Pod stays gated forever
//! because of privateer.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::jiff::Timestamp;
use privateer_api::pod::original_images;
use privateer_api::{ImageMirror, Phase, names};
use privateer_image::{Reference, object_name};
use serde_json::json;

/// What to do with a gated Pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateAction {
    /// Look again after this long (mirrors still copying).
    Wait(Duration),
    /// Remove the gate, first setting these containers' images (container → image).
    Release(BTreeMap<String, String>),
    /// Put the original images back (container → image), remove the gate, say why.
    Restore {
        images: BTreeMap<String, String>,
        reason: String,
    },
}

/// Reduce a gated Pod to what the gate releaser reads, before it is stored: identity and
/// creation time, the original-images annotation, the scheduling gates, and each container's
/// and init container's name and image. Whatever else a Pod carries (environment, volumes,
/// probes, resources, other annotations, status, managedFields) stays with the API server;
/// 20,000 gated Pods held whole were most of the controller's memory.
pub fn keep_what_the_gate_reads(pod: &mut Pod) {
    let meta = &mut pod.metadata;
    meta.managed_fields = None;
    meta.owner_references = None;
    meta.finalizers = None;
    meta.labels = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.retain(|key, _| key == names::ANNOTATION_ORIGINAL_IMAGES);
    }
    pod.status = None;
    let Some(spec) = &mut pod.spec else {
        return;
    };
    let slim = |containers: &mut Vec<Container>| {
        containers
            .iter_mut()
            .map(|c| Container {
                name: std::mem::take(&mut c.name),
                image: c.image.take(),
                ..Container::default()
            })
            .collect::<Vec<_>>()
    };
    *spec = PodSpec {
        containers: slim(&mut spec.containers),
        init_containers: spec.init_containers.as_mut().map(slim),
        scheduling_gates: spec.scheduling_gates.take(),
        ..PodSpec::default()
    };
}

/// Does `pod` still carry privateer's scheduling gate?
pub fn is_gated(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .is_some_and(|gates| gates.iter().any(|g| g.name == names::SCHEDULING_GATE))
}

/// The ImageMirror names a gated Pod waits for.
pub fn needed_mirrors(originals: &BTreeMap<String, String>) -> Vec<String> {
    let mut names: Vec<String> = originals
        .values()
        .filter_map(|image| Reference::parse(image).ok())
        .map(|r| object_name(&r))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Decide for `pod` gated since its creation, given the mirrors it needs (`None`: missing).
pub fn decide(
    pod: &Pod,
    mirrors: &BTreeMap<String, Option<ImageMirror>>,
    now: Timestamp,
    gate_timeout: Duration,
) -> GateAction {
    let originals = match original_images(pod) {
        Ok(originals) => originals,
        // Nothing to restore to: releasing is the only way the Pod can run.
        Err(problem) => {
            return GateAction::Restore {
                images: BTreeMap::new(),
                reason: problem,
            };
        }
    };
    let waited: Duration = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(|t| now.duration_since(t.0).try_into().ok())
        .unwrap_or_default();
    let restore = |reason: String| GateAction::Restore {
        images: originals.clone(),
        reason,
    };
    let mut release = BTreeMap::new();
    let mut pending = false;
    for (container, original) in &originals {
        let Ok(reference) = Reference::parse(original) else {
            continue;
        };
        let name = object_name(&reference);
        match mirrors.get(&name).and_then(Option::as_ref) {
            Some(mirror) if mirror.phase() == Phase::Failed => {
                let why = mirror
                    .status
                    .as_ref()
                    .and_then(|s| s.last_error.clone())
                    .unwrap_or_else(|| "the copy failed".into());
                return restore(format!("ImageMirror {name} failed: {why}"));
            }
            Some(mirror) if mirror.phase() == Phase::Ready => {
                // Pinned to the digest the controller verified in the target, so the node
                // pulls exactly that (a tag moved in the target meanwhile changes nothing).
                if let Some(target) = mirror.status.as_ref().and_then(|s| s.target_image.clone())
                    && image_of(pod, container).is_some_and(|current| current != target)
                {
                    release.insert(container.clone(), target);
                }
            }
            _ => pending = true,
        }
    }
    if !pending {
        return GateAction::Release(release);
    }
    if waited >= gate_timeout {
        return restore(format!(
            "the images were not mirrored within gateTimeout ({}s)",
            gate_timeout.as_secs()
        ));
    }
    GateAction::Wait((gate_timeout - waited).min(Duration::from_secs(30)))
}

fn image_of<'a>(pod: &'a Pod, container: &str) -> Option<&'a str> {
    privateer_api::pod::slots(pod, &[])
        .into_iter()
        .find(|s| s.name == container && s.list != privateer_api::pod::List::EphemeralContainers)
        .map(|s| s.image)
}

/// The strategic merge patch carrying out `images` and removing privateer's gate and label.
pub fn release_patch(pod: &Pod, images: &BTreeMap<String, String>) -> serde_json::Value {
    let spec = pod.spec.clone().unwrap_or_default();
    let list = |containers: &[k8s_openapi::api::core::v1::Container]| {
        containers
            .iter()
            .filter_map(|c| {
                images
                    .get(&c.name)
                    .map(|image| json!({"name": c.name, "image": image}))
            })
            .collect::<Vec<_>>()
    };
    let mut patch = json!({
        "metadata": {"labels": {names::LABEL_GATED: null}},
        "spec": {"schedulingGates": [{"name": names::SCHEDULING_GATE, "$patch": "delete"}]},
    });
    let containers = list(&spec.containers);
    if !containers.is_empty() {
        patch["spec"]["containers"] = json!(containers);
    }
    let init = list(spec.init_containers.as_deref().unwrap_or_default());
    if !init.is_empty() {
        patch["spec"]["initContainers"] = json!(init);
    }
    patch
}

#[cfg(test)]
mod tests {
    use super::*;
    use privateer_api::{ImageMirrorSpec, ImageMirrorStatus};

    fn pod(age_secs: i64) -> Pod {
        let created = Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(age_secs);
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "apps", "creationTimestamp": created.to_string(),
                "labels": {names::LABEL_GATED: "true"},
                "annotations": {names::ANNOTATION_ORIGINAL_IMAGES: r#"{"app":"nginx:1.27","init":"busybox:1.36"}"#}},
            "spec": {"schedulingGates": [{"name": names::SCHEDULING_GATE}],
                "initContainers": [{"name": "init", "image": "r.example/mirror/docker.io/library/busybox:1.36"}],
                "containers": [{"name": "app", "image": "r.example/mirror/docker.io/library/nginx:1.27"}]}
        }))
        .expect("pod fixture")
    }

    fn mirror(source: &str, phase: Phase, target: &str) -> Option<ImageMirror> {
        let mut m = ImageMirror::new("x", ImageMirrorSpec::for_source(source));
        m.status = Some(ImageMirrorStatus {
            phase: Some(phase),
            target_image: Some(target.into()),
            last_error: Some("not found".into()),
            ..Default::default()
        });
        Some(m)
    }

    fn mirrors(
        nginx: Option<ImageMirror>,
        busybox: Option<ImageMirror>,
    ) -> BTreeMap<String, Option<ImageMirror>> {
        let name = |s: &str| object_name(&Reference::parse(s).expect("reference"));
        BTreeMap::from([(name("nginx:1.27"), nginx), (name("busybox:1.36"), busybox)])
    }

    const NGINX: &str = "r.example/mirror/docker.io/library/nginx:1.27@sha256:0000000000000000000000000000000000000000000000000000000000000000";
    const BUSYBOX: &str = "r.example/mirror/docker.io/library/busybox:1.36@sha256:1111111111111111111111111111111111111111111111111111111111111111";

    #[test]
    fn waits_while_copying_and_releases_when_all_are_ready() {
        let pod = pod(10);
        let timeout = Duration::from_secs(600);
        let copying = mirrors(
            mirror("nginx:1.27", Phase::Ready, NGINX),
            mirror("busybox:1.36", Phase::Mirroring, ""),
        );
        assert!(matches!(
            decide(&pod, &copying, Timestamp::now(), timeout),
            GateAction::Wait(_)
        ));
        let ready = mirrors(
            mirror("nginx:1.27", Phase::Ready, NGINX),
            mirror("busybox:1.36", Phase::Ready, BUSYBOX),
        );
        // The Pod names the mirrors by tag: released pinned to the digests the mirrors hold.
        let GateAction::Release(pinned) = decide(&pod, &ready, Timestamp::now(), timeout) else {
            panic!("release")
        };
        assert_eq!(pinned.get("app").map(String::as_str), Some(NGINX));
        assert!(
            pinned.values().all(|image| image.contains("@sha256:")),
            "{pinned:?}"
        );
        // A mirror with a spec.target override elsewhere: the Pod is pointed there first.
        let moved = mirrors(
            mirror(
                "nginx:1.27",
                Phase::Ready,
                "r.example/custom/nginx:1.27@sha256:0",
            ),
            mirror("busybox:1.36", Phase::Ready, BUSYBOX),
        );
        let GateAction::Release(images) = decide(&pod, &moved, Timestamp::now(), timeout) else {
            panic!("release")
        };
        assert_eq!(
            images.get("app").map(String::as_str),
            Some("r.example/custom/nginx:1.27@sha256:0")
        );
        let patch = release_patch(&pod, &images);
        assert_eq!(
            patch["spec"]["containers"][0]["image"],
            "r.example/custom/nginx:1.27@sha256:0"
        );
        assert_eq!(patch["spec"]["schedulingGates"][0]["$patch"], "delete");
        assert!(patch["metadata"]["labels"][names::LABEL_GATED].is_null());
    }

    #[test]
    fn restores_originals_on_failure_or_timeout() {
        let failed = mirrors(
            mirror("nginx:1.27", Phase::Failed, ""),
            mirror("busybox:1.36", Phase::Ready, BUSYBOX),
        );
        let GateAction::Restore { images, reason } =
            decide(&pod(5), &failed, Timestamp::now(), Duration::from_secs(600))
        else {
            panic!("restore")
        };
        assert_eq!(images.get("app").map(String::as_str), Some("nginx:1.27"));
        assert_eq!(images.get("init").map(String::as_str), Some("busybox:1.36"));
        assert!(reason.contains("not found"), "{reason}");

        let missing = mirrors(None, mirror("busybox:1.36", Phase::Ready, BUSYBOX));
        let late = decide(
            &pod(700),
            &missing,
            Timestamp::now(),
            Duration::from_secs(600),
        );
        assert!(
            matches!(late, GateAction::Restore { ref reason, .. } if reason.contains("gateTimeout"))
        );
        let early = decide(
            &pod(10),
            &missing,
            Timestamp::now(),
            Duration::from_secs(600),
        );
        assert_eq!(early, GateAction::Wait(Duration::from_secs(30)));
    }
    #[test]
    fn a_trimmed_pod_decides_and_patches_as_the_whole_one() {
        // The Pod as the API server serves it: defaulted spec, status, other annotations.
        let mut whole: serde_json::Value = serde_json::to_value(pod(10)).expect("pod");
        whole["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
            json!("x".repeat(4096));
        whole["metadata"]["ownerReferences"] =
            json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "u"}]);
        whole["metadata"]["managedFields"] =
            json!([{"manager": "kube-controller-manager", "operation": "Update"}]);
        whole["spec"]["containers"][0]["env"] = json!([{"name": "A", "value": "b"}]);
        whole["spec"]["containers"][0]["volumeMounts"] =
            json!([{"name": "kube-api-access", "mountPath": "/var/run/secrets"}]);
        whole["spec"]["volumes"] = json!([{"name": "kube-api-access", "emptyDir": {}}]);
        whole["spec"]["tolerations"] = json!([{"key": "node.kubernetes.io/not-ready"}]);
        whole["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
        let whole: Pod = serde_json::from_value(whole).expect("whole pod");
        let mut trimmed = whole.clone();
        keep_what_the_gate_reads(&mut trimmed);

        let size = |p: &Pod| serde_json::to_vec(p).expect("json").len();
        assert!(size(&trimmed) * 4 < size(&whole), "{trimmed:?}");
        assert!(is_gated(&trimmed));
        assert_eq!(
            trimmed.metadata.creation_timestamp,
            whole.metadata.creation_timestamp
        );
        assert_eq!(original_images(&trimmed), original_images(&whole));
        let timeout = Duration::from_secs(600);
        let now = Timestamp::now();
        for (nginx, busybox) in [
            (Phase::Ready, Phase::Ready),
            (Phase::Ready, Phase::Mirroring),
            (Phase::Failed, Phase::Ready),
        ] {
            let state = mirrors(
                mirror("nginx:1.27", nginx, NGINX),
                mirror("busybox:1.36", busybox, BUSYBOX),
            );
            let decided = decide(&whole, &state, now, timeout);
            assert_eq!(decide(&trimmed, &state, now, timeout), decided);
            if let GateAction::Release(images) | GateAction::Restore { images, .. } = &decided {
                assert_eq!(
                    release_patch(&trimmed, images),
                    release_patch(&whole, images)
                );
            }
        }
    }
}
