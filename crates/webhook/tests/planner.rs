//! The Pod patch planner from JSON fixtures: every rewrite policy, init and ephemeral
//! containers, digests, ports, already-mirrored and excluded images, skips, pull secrets and
//! policy, and reinvocation over its own output changing nothing.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use privateer_api::config::{PullPolicy, PullSecretMode, RewritePolicy};
use privateer_api::{Config, Phase, names};
use privateer_image::{Reference, TargetNaming, object_name};
use privateer_webhook::mutate::{
    MirrorView, PodPlan, PodRequest, Skip, Surroundings, plan_pod, plan_pvc,
};
use serde_json::Value;

const TARGET: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
const OWN: &str = "ghcr.io/privateer-dev/privateer:0.1.0";

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn config() -> Config {
    let mut config = Config::default();
    config.target.registry = TARGET.into();
    config.sources.ignore = vec!["registry.corp.example".into()];
    config
}

struct Case {
    config: Config,
    naming: TargetNaming,
    mirrors: BTreeMap<String, MirrorView>,
    namespace_skipped: bool,
}

impl Case {
    fn new(config: Config) -> Self {
        Self {
            naming: TargetNaming::new(&config.target.registry, &config.target.prefix).unwrap(),
            config,
            mirrors: BTreeMap::new(),
            namespace_skipped: false,
        }
    }

    fn ready(mut self, source: &str, target: &str) -> Self {
        let name = object_name(&Reference::parse(source).unwrap());
        self.mirrors.insert(
            name,
            MirrorView {
                phase: Phase::Ready,
                target_image: Some(target.into()),
                spec_target: None,
            },
        );
        self
    }

    fn plan(&self, pod: &Pod, policy: RewritePolicy) -> PodPlan {
        let own = [Reference::parse(OWN).unwrap().name()];
        let around = Surroundings {
            config: &self.config,
            naming: Some(&self.naming),
            own_images: &own,
            namespace_skipped: self.namespace_skipped,
        };
        let lookup = |name: &str| self.mirrors.get(name).cloned();
        plan_pod(PodRequest::Create(pod), &around, &lookup, policy)
    }
}

fn pod(value: &Value) -> Pod {
    serde_json::from_value(value.clone()).unwrap()
}

/// The Pod after the plan's patch, as JSON.
fn patched(value: &Value, plan: &PodPlan) -> Value {
    let mut doc = value.clone();
    json_patch::patch(&mut doc, &plan.patch).unwrap();
    doc
}

fn images(doc: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for c in doc["spec"][list].as_array().into_iter().flatten() {
            out.insert(
                c["name"].as_str().unwrap().to_owned(),
                c["image"].as_str().unwrap().to_owned(),
            );
        }
    }
    out
}

#[test]
fn gate_rewrites_every_public_image_records_originals_and_gates() {
    let case = Case::new(config());
    let source = fixture("pod-mixed.json");
    let plan = case.plan(&pod(&source), RewritePolicy::Gate);
    assert!(plan.gated);
    let created: Vec<String> = plan.create.values().map(ToString::to_string).collect();
    assert_eq!(
        created.len(),
        4,
        "busybox, nginx, node-exporter, localhost:5000: {created:?}"
    );
    let after = patched(&source, &plan);
    let images = images(&after);
    let m = format!("{TARGET}/mirror");
    assert_eq!(
        images["init"],
        format!("{m}/docker.io/library/busybox:1.36")
    );
    assert_eq!(images["app"], format!("{m}/docker.io/library/nginx:1.27"));
    assert_eq!(
        images["pinned"],
        format!(
            "{m}/quay.io/prometheus/node-exporter@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        )
    );
    assert_eq!(images["ported"], format!("{m}/localhost_5000/team/app:2.0"));
    // Already in the target, an ignored registry, privateer's own image: untouched.
    assert_eq!(images["mirrored"], source["spec"]["containers"][3]["image"]);
    assert_eq!(images["internal"], "registry.corp.example/base/tools:3");
    assert_eq!(images["own"], OWN);
    assert_eq!(
        after["spec"]["schedulingGates"],
        serde_json::json!([{"name": names::SCHEDULING_GATE}])
    );
    assert_eq!(after["metadata"]["labels"][names::LABEL_GATED], "true");
    assert_eq!(after["metadata"]["labels"]["app"], "web");
    let originals: BTreeMap<String, String> = serde_json::from_str(
        after["metadata"]["annotations"][names::ANNOTATION_ORIGINAL_IMAGES]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(originals.len(), 4);
    assert_eq!(originals["app"], "nginx:1.27");
    assert_eq!(originals["ported"], "localhost:5000/team/app:2.0");

    // Reinvocation (reinvocationPolicy: IfNeeded) over its own output changes nothing.
    let again = case.plan(&pod(&after), RewritePolicy::Gate);
    assert!(again.patch.is_empty(), "{:?}", again.patch);
    assert!(again.create.is_empty());
}

#[test]
fn when_ready_rewrites_only_ready_mirrors_to_their_digest() {
    let pinned = format!(
        "{TARGET}/mirror/docker.io/library/nginx@sha256:{}",
        "a".repeat(64)
    );
    let case = Case::new(config()).ready("nginx:1.27", &pinned);
    let source = fixture("pod-mixed.json");
    let plan = case.plan(&pod(&source), RewritePolicy::WhenReady);
    assert!(!plan.gated);
    assert_eq!(
        plan.create.len(),
        3,
        "nginx exists; the other three are recorded"
    );
    assert_eq!(plan.rewritten.len(), 1);
    let after = patched(&source, &plan);
    assert_eq!(images(&after)["app"], pinned);
    assert_eq!(images(&after)["init"], "busybox:1.36");
    assert!(after["spec"]["schedulingGates"].is_null());
    // Wait plans like WhenReady once the wait is over.
    assert_eq!(case.plan(&pod(&source), RewritePolicy::Wait), plan);
}

#[test]
fn record_records_every_image_and_changes_nothing_even_when_ready() {
    let mut config = config();
    config.webhook.image_pull_secrets.names = vec!["ecr-pull".into()];
    config.webhook.image_pull_policy = Some(PullPolicy::IfNotPresent);
    let pinned = format!(
        "{TARGET}/mirror/docker.io/library/nginx@sha256:{}",
        "a".repeat(64)
    );
    let case = Case::new(config).ready("nginx:1.27", &pinned);
    let source = fixture("pod-mixed.json");
    let plan = case.plan(&pod(&source), RewritePolicy::Record);
    assert!(plan.patch.is_empty(), "{:?}", plan.patch);
    assert!(plan.rewritten.is_empty());
    assert!(!plan.gated);
    assert_eq!(
        plan.create.len(),
        3,
        "nginx is recorded already; busybox, node-exporter and localhost:5000 are new"
    );
}

#[test]
fn gate_with_every_mirror_ready_needs_no_gate() {
    let case = Case::new(config()).ready(
        "nginx:1.27",
        &format!(
            "{TARGET}/mirror/docker.io/library/nginx@sha256:{}",
            "a".repeat(64)
        ),
    );
    let source: Value = serde_json::json!({
        "metadata": {"name": "one", "namespace": "apps"},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}
    });
    let plan = case.plan(&pod(&source), RewritePolicy::Gate);
    assert!(!plan.gated);
    assert_eq!(plan.rewritten.len(), 1);
    assert!(plan.create.is_empty());
}

#[test]
fn always_rewrites_without_gate_and_node_name_turns_gate_into_when_ready() {
    let case = Case::new(config());
    let source = fixture("pod-mixed.json");
    let always = case.plan(&pod(&source), RewritePolicy::Always);
    assert!(!always.gated);
    assert_eq!(always.rewritten.len(), 4);

    let mut bound = source.clone();
    bound["spec"]["nodeName"] = "node-1".into();
    let plan = case.plan(&pod(&bound), RewritePolicy::Gate);
    assert!(
        !plan.gated,
        "a Pod with nodeName cannot carry a scheduling gate"
    );
    assert!(plan.rewritten.is_empty());
    assert_eq!(plan.create.len(), 4, "mirrored for next time");
}

#[test]
fn skipped_pods_get_no_patch_at_all() {
    let source = fixture("pod-mixed.json");
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut value = source.clone();
        edit(&mut value);
        pod(&value)
    };
    let case = Case::new(config());
    let cases = [
        (
            with(&|v| v["metadata"]["namespace"] = "kube-system".into()),
            Skip::ExcludedNamespace,
        ),
        (
            with(&|v| v["metadata"]["namespace"] = "privateer".into()),
            Skip::ExcludedNamespace,
        ),
        (
            with(&|v| v["metadata"]["annotations"] = serde_json::json!({names::SKIP: "true"})),
            Skip::SkipAnnotation,
        ),
        (
            with(&|v| {
                v["metadata"]["labels"][names::LABEL_COMPONENT] = names::COMPONENT_VALUE.into()
            }),
            Skip::PrivateersOwnPod,
        ),
    ];
    for (pod, reason) in cases {
        let plan = case.plan(&pod, RewritePolicy::Gate);
        assert_eq!(plan.skipped, Some(reason));
        assert!(plan.patch.is_empty() && plan.create.is_empty());
    }
    let mut labelled = Case::new(config());
    labelled.namespace_skipped = true;
    let plan = labelled.plan(&pod(&source), RewritePolicy::Gate);
    assert_eq!(plan.skipped, Some(Skip::SkipLabelledNamespace));
}

#[test]
fn excluded_images_are_left_on_path_boundaries() {
    let mut config = config();
    config.webhook.exclude_images = vec!["docker.io/library/nginx".into(), "quay.io/prom".into()];
    let case = Case::new(config);
    let plan = case.plan(&pod(&fixture("pod-mixed.json")), RewritePolicy::Always);
    assert!(!plan.rewritten.contains_key("app"), "nginx is excluded");
    assert!(
        plan.rewritten.contains_key("pinned"),
        "quay.io/prom is not a prefix of quay.io/prometheus on a path boundary"
    );
}

#[test]
fn ephemeral_update_rewrites_only_the_new_container_and_nothing_else() {
    let case = Case::new(config());
    let old = fixture("pod-ephemeral-old.json");
    let new = fixture("pod-ephemeral-new.json");
    let own = [Reference::parse(OWN).unwrap().name()];
    let around = Surroundings {
        config: &case.config,
        naming: Some(&case.naming),
        own_images: &own,
        namespace_skipped: false,
    };
    let lookup = |_: &str| None;
    let (old_pod, new_pod) = (pod(&old), pod(&new));
    let request = PodRequest::EphemeralUpdate {
        pod: &new_pod,
        old: &old_pod,
    };
    let plan = plan_pod(request, &around, &lookup, RewritePolicy::Always);
    assert_eq!(plan.rewritten.keys().collect::<Vec<_>>(), ["debug"]);
    assert!(!plan.gated);
    let after = patched(&new, &plan);
    assert_eq!(
        images(&after)["debug"],
        format!("{TARGET}/mirror/docker.io/library/busybox:1.36")
    );
    assert_eq!(
        images(&after)["debug-old"],
        "busybox:1.35",
        "existing ones are immutable"
    );
    assert_eq!(
        after["metadata"], new["metadata"],
        "metadata changes would be dropped"
    );
}

#[test]
fn pull_secrets_and_pull_policy_are_applied_once() {
    let mut config = config();
    config.webhook.image_pull_secrets.names = vec!["ecr-pull".into(), "team".into()];
    config.webhook.image_pull_policy = Some(PullPolicy::IfNotPresent);
    let mut source = fixture("pod-mixed.json");
    source["spec"]["imagePullSecrets"] = serde_json::json!([{"name": "team"}]);
    let case = Case::new(config.clone());
    let plan = case.plan(&pod(&source), RewritePolicy::Gate);
    let after = patched(&source, &plan);
    assert_eq!(
        after["spec"]["imagePullSecrets"],
        serde_json::json!([{"name": "team"}, {"name": "ecr-pull"}])
    );
    assert_eq!(
        after["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    assert!(
        after["spec"]["containers"][3]["imagePullPolicy"].is_null(),
        "not rewritten"
    );
    assert!(
        case.plan(&pod(&after), RewritePolicy::Gate)
            .patch
            .is_empty()
    );

    config.webhook.image_pull_secrets.mode = PullSecretMode::Replace;
    let case = Case::new(config);
    let after = patched(&source, &case.plan(&pod(&source), RewritePolicy::Gate));
    assert_eq!(
        after["spec"]["imagePullSecrets"],
        serde_json::json!([{"name": "ecr-pull"}, {"name": "team"}])
    );
    assert!(
        case.plan(&pod(&after), RewritePolicy::Gate)
            .patch
            .is_empty()
    );
}

#[test]
fn policy_only_installs_rewrite_nothing() {
    let mut config = Config::default();
    config.sources.mirror.clear();
    let own: [String; 0] = [];
    let around = Surroundings {
        config: &config,
        naming: None,
        own_images: &own,
        namespace_skipped: false,
    };
    let source = pod(&fixture("pod-mixed.json"));
    let plan = plan_pod(
        PodRequest::Create(&source),
        &around,
        &|_: &str| None,
        RewritePolicy::Gate,
    );
    assert!(plan.patch.is_empty() && plan.create.is_empty());
}

#[test]
fn pvc_without_class_gets_the_default_and_explicit_empty_is_kept() {
    let mut config = config();
    let review = fixture("review-pvc.json");
    let pvc: PersistentVolumeClaim =
        serde_json::from_value(review["request"]["object"].clone()).unwrap();
    assert!(plan_pvc(&pvc, &config).is_empty(), "no default configured");
    config.webhook.default_storage_class = "gp3".into();
    let mut doc = review["request"]["object"].clone();
    json_patch::patch(&mut doc, &plan_pvc(&pvc, &config)).unwrap();
    assert_eq!(doc["spec"]["storageClassName"], "gp3");
    let mut explicit = pvc.clone();
    explicit.spec.as_mut().unwrap().storage_class_name = Some(String::new());
    assert!(plan_pvc(&explicit, &config).is_empty());
}

#[test]
fn images_the_policy_refuses_are_not_mirrored() {
    let mut config = config();
    config.policy.deny_latest.enabled = true;
    let case = Case::new(config);
    let source: Value = serde_json::json!({
        "metadata": {"name": "one", "namespace": "apps"},
        "spec": {"containers": [{"name": "a", "image": "busybox:latest"}, {"name": "b", "image": "busybox"},
            {"name": "c", "image": "busybox:1.36"}]}
    });
    let plan = case.plan(&pod(&source), RewritePolicy::Gate);
    assert_eq!(plan.rewritten.keys().collect::<Vec<_>>(), ["c"]);
    assert_eq!(plan.create.len(), 1);
}

/// Backfill asks `privateer_api::pod::mirrored_images`; the webhook plans with the same rules.
/// On every fixture Pod, under every configuration the tests use, in a namespace skipped or
/// not, they name the same ImageMirrors.
#[test]
fn backfill_and_the_webhook_agree_on_every_fixture_pod() {
    let mut deny = config();
    deny.policy.allowed_registries.enabled = true;
    deny.policy.allowed_registries.registries = vec!["docker.io".into()];
    deny.policy.deny_latest.enabled = true;
    let pods = [
        pod(&fixture("pod-mixed.json")),
        pod(&fixture("pod-ephemeral-new.json")),
        pod(&fixture("review-pod.json")["request"]["object"]),
        pod(&fixture("review-pod-5.json")["request"]["object"]),
    ];
    let own = [Reference::parse(OWN).unwrap().name()];
    for config in [config(), deny] {
        for namespace_skipped in [false, true] {
            let mut case = Case::new(config.clone());
            case.namespace_skipped = namespace_skipped;
            for pod in &pods {
                let planned: Vec<String> = case
                    .plan(pod, RewritePolicy::Gate)
                    .create
                    .into_keys()
                    .collect();
                let around = privateer_api::pod::Around {
                    config: &config,
                    own_images: &own,
                    namespace_skipped,
                };
                let mut backfilled: Vec<String> = privateer_api::pod::mirrored_images(pod, &around)
                    .iter()
                    .map(object_name)
                    .collect();
                backfilled.sort();
                assert_eq!(planned, backfilled, "{:?}", pod.metadata.name);
            }
        }
    }
}
