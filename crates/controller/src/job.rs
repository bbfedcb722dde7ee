//! The copy Job: one `privateer copy` run in a hardened pod, copying for one ImageMirror or a
//! batch of them (`copy.job.batchSize`), owned by each so that deleting the last one
//! garbage-collects it. Credentials arrive as Secret volumes (never in
//! arguments or environment values); ECR tokens come from the pod's own identity (IRSA).

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, KeyToPath, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Resource;
use kube::api::ObjectMeta;
use privateer_api::config::{Config, TargetKind};
use privateer_api::{ImageMirror, names};

use crate::plan::Plan;

/// Where the privateer binary lives in its image.
pub const BINARY: &str = "/usr/local/bin/privateer";
/// The copy Job's one container.
const CONTAINER: &str = "copy";
const SOURCE_AUTH_DIR: &str = "/var/run/privateer/source-auth";
const TARGET_AUTH_DIR: &str = "/var/run/privateer/target-auth";

/// Which failed copy Pods the Job tries again (`backoffLimit`): only a transient failure. A
/// permanent one fails again the same way, and a throttled source must not be asked again
/// before its `Retry-After` (the controller pauses the host for every mirror, then retries);
/// both end the Job at once, with every copy's result in the termination message. A Pod
/// evicted or preempted does not count against the limit.
fn pod_failure_policy() -> PodFailurePolicy {
    use privateer_api::names::exit;
    let final_codes = [exit::INVALID, exit::PERMANENT, exit::THROTTLED];
    PodFailurePolicy {
        rules: vec![
            PodFailurePolicyRule {
                action: "FailJob".into(),
                on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                    container_name: Some(CONTAINER.into()),
                    operator: "In".into(),
                    values: final_codes.iter().map(|c| i32::from(*c)).collect(),
                }),
                on_pod_conditions: None,
            },
            PodFailurePolicyRule {
                action: "Ignore".into(),
                on_exit_codes: None,
                on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                    type_: "DisruptionTarget".into(),
                    status: "True".into(),
                }]),
            },
        ],
    }
}

/// What the Job needs besides the plan.
pub struct JobInputs<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    /// The image running `privateer copy` (config, else the controller's own image).
    pub image: &'a str,
    /// A dockerconfigjson Secret (in `namespace`) with source credentials.
    pub source_secret: Option<&'a str>,
    /// PEM public keys of the `sources.verify` rule covering the source: the Job copies only
    /// what one of them signed (public keys, so arguments are fine).
    pub verify_keys: &'a [String],
}

/// One mirror's copy in a Job.
pub struct Member<'a> {
    pub mirror: &'a ImageMirror,
    pub plan: &'a Plan,
    /// The source digest being copied.
    pub digest: &'a str,
}

/// The Job copying for `members` (at least one). What they share (source host, credentials,
/// verify keys, platforms) is taken from the first: the batcher groups only members that
/// share it.
pub fn copy_job(members: &[Member], config: &Config, inputs: &JobInputs) -> Job {
    let job = &config.copy.job;
    let target = &config.target;
    let Some(first) = members.first() else {
        return Job::default();
    };
    let plan = first.plan;
    let mut args = vec!["copy".to_owned()];
    for member in members {
        // The digest the reconciler resolved and records in status, not what the tag names
        // when the Pod starts; no second resolve. Not with a platform filter: a pinned index
        // is copied whole.
        let source = match privateer_image::Digest::parse(member.digest) {
            Ok(digest) if member.plan.platforms.is_empty() => {
                member.plan.source.with_digest(digest)
            }
            _ => member.plan.source.clone(),
        };
        args.extend([source.to_string(), member.plan.target.to_string()]);
    }
    args.extend([
        "--json".to_owned(),
        "--parallelism".to_owned(),
        config.copy.parallelism.to_string(),
    ]);
    let bounds = &config.registries;
    let seconds =
        |d: privateer_api::Duration| std::time::Duration::from(d).as_secs_f64().to_string();
    for (flag, value) in [
        (
            "--max-manifest-bytes",
            bounds.limits.manifest_bytes.to_string(),
        ),
        (
            "--max-index-children",
            bounds.limits.index_children.to_string(),
        ),
        ("--max-layers", bounds.limits.layers.to_string()),
        ("--max-token-bytes", bounds.limits.token_bytes.to_string()),
        ("--max-total-bytes", bounds.limits.total_bytes.to_string()),
        ("--connect-timeout", seconds(bounds.timeouts.connect)),
        ("--read-timeout", seconds(bounds.timeouts.read)),
        ("--timeout", seconds(bounds.timeouts.copy)),
        ("--max-redirects", bounds.redirects.max_hops.to_string()),
    ] {
        args.extend([flag.to_owned(), value]);
    }
    if !bounds.redirects.allow_private {
        args.push("--no-private-redirects".to_owned());
    }
    if !config.copy.referrers {
        args.push("--no-referrers".to_owned());
    }
    // `=`: the value starts with dashes (`-----BEGIN PUBLIC KEY-----`).
    for pem in inputs.verify_keys {
        args.push(format!("--verify-key-pem={pem}"));
    }
    for platform in &plan.platforms {
        args.extend(["--platform".to_owned(), platform.clone()]);
    }
    if let Some(endpoint) = config.sources.endpoints.get(plan.source.domain()) {
        args.extend(["--src-endpoint".to_owned(), endpoint.url.clone()]);
    }
    // `target.ecr` describes ECR only: a generic target is reached at its own name.
    let ecr = target.kind == TargetKind::Ecr;
    if ecr && !target.ecr.registry_endpoint.is_empty() {
        args.extend([
            "--dest-endpoint".to_owned(),
            target.ecr.registry_endpoint.clone(),
        ]);
    }
    if target.insecure {
        args.extend(["--insecure-registry".to_owned(), target.registry.clone()]);
    }
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    let mut secret_volume = |volume: &str, secret: &str, dir: &str, flag: &str| {
        volumes.push(Volume {
            name: volume.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.to_owned()),
                items: Some(vec![KeyToPath {
                    key: ".dockerconfigjson".into(),
                    path: "config.json".into(),
                    ..KeyToPath::default()
                }]),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: volume.to_owned(),
            mount_path: dir.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        args.extend([flag.to_owned(), format!("{dir}/config.json")]);
    };
    if let Some(secret) = inputs.source_secret {
        secret_volume("source-auth", secret, SOURCE_AUTH_DIR, "--src-authfile");
    }
    if !target.credentials_secret.is_empty() {
        secret_volume(
            "target-auth",
            &target.credentials_secret,
            TARGET_AUTH_DIR,
            "--dest-authfile",
        );
    }
    // Not secrets: where the ECR API is (a VPC endpoint, moto in tests) and its region.
    let mut env = Vec::new();
    if ecr && !target.ecr.endpoint_url.is_empty() {
        env.push(env_var("AWS_ENDPOINT_URL_ECR", &target.ecr.endpoint_url));
    }
    if ecr && !target.ecr.region.is_empty() {
        env.push(env_var("AWS_REGION", &target.ecr.region));
    }
    let quantities = |map: &BTreeMap<String, String>| {
        map.iter()
            .map(|(k, v)| (k.clone(), Quantity(v.clone())))
            .collect::<BTreeMap<_, _>>()
    };
    let labels = BTreeMap::from([(
        names::LABEL_COMPONENT.to_owned(),
        names::COMPONENT_VALUE.to_owned(),
    )]);
    let mut job_labels = labels.clone();
    let mut copies = Vec::new();
    for member in members {
        let name = member.mirror.metadata.name.clone().unwrap_or_default();
        job_labels.insert(
            crate::copy_jobs::member_label(&name),
            crate::copy_jobs::member_value(member.digest),
        );
        copies.push(name);
    }
    // One owner is the controller; in a batch each is an owner, and the Job lives while any
    // of them does.
    let owners: Vec<_> = match members {
        [one] => one.mirror.controller_owner_ref(&()).into_iter().collect(),
        several => several
            .iter()
            .filter_map(|m| m.mirror.owner_ref(&()))
            .collect(),
    };
    let container = Container {
        name: CONTAINER.into(),
        image: Some(inputs.image.to_owned()),
        command: Some(vec![BINARY.to_owned()]),
        args: Some(args),
        env: (!env.is_empty()).then_some(env),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(&job.resources.requests)),
            limits: Some(quantities(&job.resources.limits)),
            ..ResourceRequirements::default()
        }),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(inputs.name.to_owned()),
            namespace: Some(inputs.namespace.to_owned()),
            labels: Some(job_labels),
            annotations: Some(BTreeMap::from([(
                names::ANNOTATION_COPIES.to_owned(),
                serde_json::to_string(&copies).unwrap_or_default(),
            )])),
            owner_references: Some(owners),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(job.backoff_limit),
            pod_failure_policy: Some(pod_failure_policy()),
            active_deadline_seconds: Some(job.active_deadline_seconds),
            ttl_seconds_after_finished: Some(job.ttl_seconds_after_finished),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    restart_policy: Some("Never".into()),
                    service_account_name: (!job.service_account_name.is_empty())
                        .then(|| job.service_account_name.clone()),
                    node_selector: (!job.node_selector.is_empty())
                        .then(|| job.node_selector.clone()),
                    priority_class_name: (!job.priority_class_name.is_empty())
                        .then(|| job.priority_class_name.clone()),
                    volumes: (!volumes.is_empty()).then_some(volumes),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

fn env_var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use privateer_api::ImageMirrorSpec;
    use privateer_image::Reference;

    const DIGEST: &str = "sha256:7b1b2a9d0c8f6e5d4c3b2a19080706050403020100f0e0d0c0b0a09080706050";

    #[test]
    fn verify_keys_referrers_and_the_failure_policy_reach_the_job() {
        let mirror = ImageMirror::new("app", ImageMirrorSpec::for_source("ghcr.io/org/app:1"));
        let plan = Plan {
            source: Reference::parse("ghcr.io/org/app:1").expect("reference"),
            target: Reference::parse("r.example/mirror/ghcr.io/org/app:1").expect("reference"),
            platforms: Vec::new(),
        };
        let mut config = Config::default();
        config.copy.referrers = false;
        let pem = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".to_owned();
        let inputs = JobInputs {
            name: "copy-app",
            namespace: "privateer",
            image: "privateer:test",
            source_secret: None,
            verify_keys: std::slice::from_ref(&pem),
        };
        let member = Member {
            mirror: &mirror,
            plan: &plan,
            digest: DIGEST,
        };
        let job = copy_job(&[member], &config, &inputs);
        // Only a transient failure (exit 4) gets another Pod of the Job.
        let policy = job
            .spec
            .as_ref()
            .and_then(|s| s.pod_failure_policy.clone())
            .expect("a podFailurePolicy");
        let ends_the_job = policy.rules[0].on_exit_codes.clone().expect("exit codes");
        assert_eq!(policy.rules[0].action, "FailJob");
        assert_eq!(ends_the_job.container_name.as_deref(), Some("copy"));
        assert_eq!(ends_the_job.values, vec![2, 3, 5]);
        let args = job
            .spec
            .and_then(|s| s.template.spec)
            .and_then(|s| s.containers.into_iter().next())
            .and_then(|c| c.args)
            .expect("args");
        assert!(args.contains(&"--no-referrers".to_owned()), "{args:?}");
        assert_eq!(
            args[1..3],
            [
                format!("ghcr.io/org/app:1@{DIGEST}"),
                "r.example/mirror/ghcr.io/org/app:1".to_owned()
            ],
            "the source pinned to the digest resolved"
        );
        // One argument with `=`: a separate value starting with dashes reads as a flag.
        assert!(
            args.contains(&format!("--verify-key-pem={pem}")),
            "{args:?}"
        );
    }
}
