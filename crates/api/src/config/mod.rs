//! privateer's configuration file: one YAML document, every key defaulted, unknown keys refused,
//! validated at load with errors that name the key. `examples/config.yaml` documents each key.

mod enums;
mod load;
mod rate_limit;
mod registries;
mod validate;
mod verify;

use std::collections::BTreeMap;

use crate::Duration;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use enums::{
    CopyExecutor, EncryptionType, OnUnknown, PullPolicy, PullSecretMode, RewritePolicy,
    TagMutability, TargetKind,
};
pub use load::{ConfigError, Problem};
pub use rate_limit::RateLimit;
pub use registries::{RedirectConfig, RegistriesConfig, RegistryLimits, RegistryTimeouts};
pub use verify::{KeySecret, VerifyRule};

fn secs(n: u64) -> Duration {
    std::time::Duration::from_secs(n).into()
}

/// The whole configuration.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    /// The namespace privateer runs in: copy Jobs, credentials Secrets, the leader Lease.
    pub namespace: String,
    pub target: TargetConfig,
    pub sources: SourcesConfig,
    pub registries: RegistriesConfig,
    pub webhook: WebhookConfig,
    pub policy: PolicyConfig,
    pub copy: CopyConfig,
    pub controller: ControllerConfig,
    pub metrics: MetricsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            namespace: "privateer".into(),
            target: TargetConfig::default(),
            sources: SourcesConfig::default(),
            registries: RegistriesConfig::default(),
            webhook: WebhookConfig::default(),
            policy: PolicyConfig::default(),
            copy: CopyConfig::default(),
            controller: ControllerConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

/// The registry images are mirrored into.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TargetConfig {
    /// `ecr` (Amazon ECR, repositories created with settings) or `generic` (any OCI registry).
    pub kind: TargetKind,
    /// Host (and port) of the target registry, e.g. `123456789012.dkr.ecr.eu-west-1.amazonaws.com`.
    pub registry: String,
    /// Path prefix under which mirrors live: `<registry>/<prefix>/<source host>/<path>`.
    pub prefix: String,
    /// Speak plain HTTP to the target (a test or in-cluster registry).
    pub insecure: bool,
    /// PEM bundle of a private CA for the target's TLS.
    pub ca_file: String,
    /// Generic targets: a `kubernetes.io/dockerconfigjson` Secret in `namespace` with push credentials.
    pub credentials_secret: String,
    pub ecr: EcrConfig,
}

impl Default for TargetConfig {
    fn default() -> Self {
        Self {
            kind: TargetKind::Ecr,
            registry: String::new(),
            prefix: "mirror".into(),
            insecure: false,
            ca_file: String::new(),
            credentials_secret: String::new(),
            ecr: EcrConfig::default(),
        }
    }
}

/// How ECR repositories are created, and how ECR is reached.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EcrConfig {
    /// AWS region; empty: read from the registry host.
    pub region: String,
    /// ECR API endpoint override (a VPC endpoint, or moto in tests); empty: the AWS default.
    pub endpoint_url: String,
    /// Registry (data plane) endpoint override, `host[:port]` or a URL; empty: ECR's `proxyEndpoint`.
    pub registry_endpoint: String,
    /// Role to assume for every ECR call; empty: the default credential chain as it is.
    pub assume_role_arn: String,
    /// Scan images on push.
    pub scan_on_push: bool,
    /// `IMMUTABLE` (recommended: a mirrored tag never changes) or `MUTABLE`.
    pub tag_mutability: TagMutability,
    pub encryption: EncryptionConfig,
    /// Repository policy JSON set on each created repository; empty: none.
    pub repository_policy: String,
    /// Lifecycle policy JSON set on each created repository; empty: none.
    pub lifecycle_policy: String,
    /// Resource tags on each created repository.
    pub tags: BTreeMap<String, String>,
    /// Apply the settings above to existing repositories that drifted, instead of only reporting.
    pub enforce_settings: bool,
}

impl Default for EcrConfig {
    fn default() -> Self {
        Self {
            region: String::new(),
            endpoint_url: String::new(),
            registry_endpoint: String::new(),
            assume_role_arn: String::new(),
            scan_on_push: true,
            tag_mutability: TagMutability::Immutable,
            encryption: EncryptionConfig::default(),
            repository_policy: String::new(),
            lifecycle_policy: String::new(),
            tags: BTreeMap::new(),
            enforce_settings: false,
        }
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EncryptionConfig {
    /// `AES256` or `KMS`.
    #[serde(rename = "type")]
    pub kind: EncryptionType,
    /// KMS key ARN or alias, with `type: KMS`; empty: the AWS-managed key.
    pub kms_key: String,
}

impl Default for EncryptionConfig {
    fn default() -> Self {
        Self {
            kind: EncryptionType::Aes256,
            kms_key: String::new(),
        }
    }
}

/// Which source registries are mirrored, and how they are reached.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SourcesConfig {
    /// Registries to mirror: `*` (all), a host (`docker.io`), or `*.example.com`. Empty: none
    /// (policy-only installs).
    pub mirror: Vec<String>,
    /// Registries never mirrored, same patterns; wins over `mirror`.
    pub ignore: Vec<String>,
    /// Credentials per source registry (Docker Hub rate limits, private sources).
    pub credentials: Vec<SourceCredentials>,
    /// Pull a registry from somewhere else: `docker.io: {url: "https://mirror.local"}`.
    pub endpoints: BTreeMap<String, EndpointOverride>,
    /// Images mirrored only when a cosign signature by one of the rule's keys verifies (the
    /// first rule covering an image applies).
    pub verify: Vec<VerifyRule>,
    /// A budget per source host, `REQUESTS/PERIOD` (`docker.io: 100/6h`), shared by every
    /// resolve and copy; mirrors waiting for it stay Pending (`RateLimited`).
    pub rate_limits: BTreeMap<String, RateLimit>,
}

impl SourcesConfig {
    /// Is `host` a registry privateer mirrors? `ignore` wins over `mirror`.
    pub fn mirrors_registry(&self, host: &str) -> bool {
        let matches = |pattern: &String| match pattern.as_str() {
            "*" => true,
            p => match p.strip_prefix("*.") {
                Some(suffix) => host
                    .strip_suffix(suffix)
                    .is_some_and(|rest| rest.ends_with('.')),
                None => p.eq_ignore_ascii_case(host),
            },
        };
        self.mirror.iter().any(matches) && !self.ignore.iter().any(matches)
    }
}

impl Config {
    /// Does privateer leave Pods in `namespace` alone? Its own namespace and
    /// `webhook.excludeNamespaces` (namespaces labelled `privateer.dev/skip=true` too, which the
    /// caller knows from the namespace).
    pub fn excludes_namespace(&self, namespace: &str) -> bool {
        namespace == self.namespace
            || self
                .webhook
                .exclude_namespaces
                .iter()
                .any(|n| n == namespace)
    }

    /// Is `image` one privateer mirrors? Not already in the target registry, from a mirrored
    /// registry, and not in `webhook.excludeImages` (a name, or a prefix on a `/` boundary).
    /// The webhook and the controller's backfill ask the same question here.
    pub fn mirrors_image(&self, image: &privateer_image::Reference) -> bool {
        let name = image.name();
        let excluded = |prefix: &String| {
            name == *prefix
                || name
                    .strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        };
        !self.target.registry.is_empty()
            && !image.domain().eq_ignore_ascii_case(&self.target.registry)
            && self.sources.mirrors_registry(image.domain())
            && !self.webhook.exclude_images.iter().any(excluded)
    }
}

impl Default for SourcesConfig {
    fn default() -> Self {
        Self {
            mirror: vec!["*".into()],
            ignore: Vec::new(),
            credentials: Vec::new(),
            endpoints: BTreeMap::new(),
            verify: Vec::new(),
            rate_limits: BTreeMap::new(),
        }
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SourceCredentials {
    /// The source registry host these credentials are for.
    pub registry: String,
    /// A `kubernetes.io/dockerconfigjson` Secret in `namespace`.
    pub secret_name: String,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EndpointOverride {
    /// `http://` or `https://` URL of the registry to pull from instead.
    pub url: String,
    /// PEM bundle of a private CA for this endpoint.
    pub ca_file: String,
}

/// The admission webhooks: server, rewriting and pod mutation.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// HTTPS listen address.
    pub listen: String,
    /// Serving certificate (PEM), re-read when it changes.
    pub tls_cert_file: String,
    /// Its private key (PEM).
    pub tls_key_file: String,
    /// Longest a request may take; keep it below the webhook configuration's timeoutSeconds.
    pub request_timeout: Duration,
    /// Largest admission request body accepted, in bytes.
    pub max_body_bytes: u64,
    /// `Gate`, `WhenReady`, `Always`, `Wait` or `Record` (README, "Rewrite policies").
    pub rewrite_policy: RewritePolicy,
    /// `Wait`: how long an admission request waits for a copy before falling back to WhenReady.
    pub wait_timeout: Duration,
    /// `Gate`: how long a pod may stay gated before its original images are restored.
    pub gate_timeout: Duration,
    /// Namespaces never mutated (besides those labelled `privateer.dev/skip=true`).
    pub exclude_namespaces: Vec<String>,
    /// Images never rewritten: a normalized name or a registry/path prefix of one.
    pub exclude_images: Vec<String>,
    pub image_pull_secrets: PullSecretsConfig,
    /// Force every rewritten container's imagePullPolicy; unset: leave it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// StorageClass set on PersistentVolumeClaims that name none; empty: leave them.
    pub default_storage_class: String,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8443".into(),
            tls_cert_file: "/etc/privateer/tls/tls.crt".into(),
            tls_key_file: "/etc/privateer/tls/tls.key".into(),
            request_timeout: secs(8),
            max_body_bytes: 4 * 1024 * 1024,
            rewrite_policy: RewritePolicy::Gate,
            wait_timeout: secs(6),
            gate_timeout: secs(600),
            exclude_namespaces: vec!["kube-system".into()],
            exclude_images: Vec::new(),
            image_pull_secrets: PullSecretsConfig::default(),
            image_pull_policy: None,
            default_storage_class: String::new(),
        }
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PullSecretsConfig {
    /// Secret names added to mutated pods' imagePullSecrets.
    pub names: Vec<String>,
    /// `Append` (keep the pod's, add the missing) or `Replace`.
    pub mode: PullSecretMode,
}

impl Default for PullSecretsConfig {
    fn default() -> Self {
        Self {
            names: Vec::new(),
            mode: PullSecretMode::Append,
        }
    }
}

/// Validating rules; each off unless enabled.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PolicyConfig {
    pub allowed_registries: AllowedRegistries,
    /// Deny `:latest` and untagged images.
    pub deny_latest: Toggle,
    /// Deny images not pinned by digest.
    pub require_digest: Toggle,
    /// Deny images not in `target.registry`.
    pub require_target_registry: Toggle,
    pub ecr_compliance: EcrCompliance,
    /// Deny Pods whose images a `sources.verify` rule covers until their ImageMirror is
    /// `Verified` (a signature by one of the rule's keys checked before the copy).
    pub require_verified: Toggle,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Toggle {
    /// Turn the rule on.
    pub enabled: bool,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AllowedRegistries {
    /// Deny images from registries not listed (the target registry is always allowed).
    pub enabled: bool,
    /// `host` or `host/path` prefixes, matched on whole host and path components.
    pub registries: Vec<String>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EcrCompliance {
    /// Judge images in the target ECR registry by their repository's settings.
    pub enabled: bool,
    /// The repository must have IMMUTABLE tags.
    pub require_tag_immutability: bool,
    /// The repository must scan on push (its own setting or a registry scanning rule).
    pub require_scan_on_push: bool,
    /// Deny images whose ECR scan found CRITICAL vulnerabilities.
    pub deny_critical_findings: bool,
    /// What to do when ECR could not be asked.
    pub on_unknown: OnUnknown,
    /// How long an answer from ECR is trusted.
    pub cache_ttl: Duration,
}

impl Default for EcrCompliance {
    fn default() -> Self {
        Self {
            enabled: false,
            require_tag_immutability: true,
            require_scan_on_push: true,
            deny_critical_findings: false,
            on_unknown: OnUnknown::Allow,
            cache_ttl: secs(300),
        }
    }
}

/// How images are copied.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CopyConfig {
    /// `job`: a Job per copy (IRSA of the copy service account); `inline`: in the controller.
    pub executor: CopyExecutor,
    /// Copies (inline) or copy Jobs running at once.
    pub concurrency: u32,
    /// Blobs transferred at once within one copy.
    pub parallelism: u32,
    /// Platforms copied when an ImageMirror names none; empty: all.
    pub platforms: Vec<String>,
    /// Copy what is attached to each image along with it: OCI 1.1 referrers and cosign's
    /// `.sig`, `.att` and `.sbom` tags (signatures, attestations, SBOMs), so admission
    /// verifiers find them next to the mirrored image.
    pub referrers: bool,
    pub job: JobConfig,
}

impl Default for CopyConfig {
    fn default() -> Self {
        Self {
            executor: CopyExecutor::Job,
            concurrency: 8,
            parallelism: 4,
            platforms: Vec::new(),
            referrers: true,
            job: JobConfig::default(),
        }
    }
}

/// The most copies one Job runs: their results share the Pod's 4096-byte termination message,
/// and a success needs up to 240 bytes of it (privateer-registry's `BATCH_MAX`).
pub const BATCH_SIZE_MAX: u32 = 16;

/// The copy Job's pod.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct JobConfig {
    /// The image that runs `privateer copy`; empty: privateer's own image.
    pub image: String,
    /// Service account of copy pods (give it the IRSA role that may push to ECR).
    pub service_account_name: String,
    /// Copies one Job runs (1 to 16), so a pre-warm list of many images starts a Pod per
    /// `batchSize` of them rather than per image. Mirrors due within a moment of each other
    /// with the same source host, credentials, `sources.verify` keys and platforms share a
    /// Job; 1: a Job per copy.
    pub batch_size: u32,
    /// Pod retries within one copy Job.
    pub backoff_limit: i32,
    /// Longest a copy Job may run.
    pub active_deadline_seconds: i64,
    /// Finished copy Jobs are deleted after this long.
    pub ttl_seconds_after_finished: i32,
    /// Resource requests and limits, as Kubernetes quantities.
    pub resources: Resources,
    /// Node selector of copy pods.
    pub node_selector: BTreeMap<String, String>,
    /// Priority class of copy pods; empty: none.
    pub priority_class_name: String,
}

impl Default for JobConfig {
    fn default() -> Self {
        Self {
            image: String::new(),
            service_account_name: "privateer-copy".into(),
            batch_size: 16,
            backoff_limit: 2,
            active_deadline_seconds: 1800,
            ttl_seconds_after_finished: 3600,
            resources: Resources::default(),
            node_selector: BTreeMap::new(),
            priority_class_name: String::new(),
        }
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Resources {
    /// e.g. `{cpu: 100m, memory: 64Mi}`.
    pub requests: BTreeMap<String, String>,
    /// e.g. `{memory: 256Mi}`.
    pub limits: BTreeMap<String, String>,
}

impl Default for Resources {
    fn default() -> Self {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        Self {
            requests: map(&[("cpu", "100m"), ("memory", "64Mi")]),
            limits: map(&[("memory", "256Mi")]),
        }
    }
}

/// The reconciler.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ControllerConfig {
    pub leader_election: LeaderElection,
    /// ImageMirrors reconciled at once (1 to 1024). The rest wait their turn in the queue, so
    /// a pre-warm list of thousands holds only this many passes' connections and buffers.
    pub concurrency: u32,
    /// How often tags are resolved upstream again when an ImageMirror does not say; 0: never.
    pub refresh_interval: Duration,
    pub retry: RetryConfig,
    /// Create ImageMirrors for pods admitted while the webhook was down.
    pub backfill: bool,
    pub retention: RetentionConfig,
    pub target_check: TargetCheckConfig,
}

/// Noticing a Ready mirror whose image is gone from the target (a lifecycle rule, a person, a
/// registry restore) between refreshes: one manifest HEAD on the target per mirror per
/// `interval`, at most `perMinute` in all; a missing image is copied again.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TargetCheckConfig {
    /// How long a Ready mirror goes unchecked; 0: only at refresh.
    pub interval: Duration,
    /// Target checks per minute across all mirrors (the rest wait for the next minute).
    pub per_minute: u32,
    /// Before a gated Pod is released, each of its mirrors not seen in the target for this long
    /// is looked for there (one HEAD per mirror, shared by every Pod released meanwhile, not
    /// counted in `perMinute`); one gone is copied again and the Pod waits for it. 0: never.
    pub before_release: Duration,
}

impl Default for TargetCheckConfig {
    fn default() -> Self {
        Self {
            interval: secs(3600),
            per_minute: 60,
            before_release: secs(300),
        }
    }
}

/// Deleting mirrors no Pod uses (off by default). Mirrors the webhook or backfill recorded
/// are deleted once unused for `unusedFor`; one declared by hand only when labelled
/// `privateer.dev/retention: "true"` (and `"false"` keeps a recorded one). Each mirror's
/// `deletionPolicy` decides whether its image goes too.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// How long no Pod may have used a mirror before it is deleted; 0: never.
    pub unused_for: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            unused_for: secs(0),
        }
    }
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            leader_election: LeaderElection::default(),
            concurrency: 32,
            refresh_interval: secs(6 * 3600),
            retry: RetryConfig::default(),
            backfill: true,
            retention: RetentionConfig::default(),
            target_check: TargetCheckConfig::default(),
        }
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LeaderElection {
    /// Only the holder of the Lease reconciles; standbys take over when it goes away.
    pub enabled: bool,
    /// The Lease in `namespace`.
    pub lease_name: String,
    /// How long a lease lasts without renewal: the longest a hand-over takes.
    pub lease_duration: Duration,
}

impl Default for LeaderElection {
    fn default() -> Self {
        Self {
            enabled: true,
            lease_name: "privateer-controller".into(),
            lease_duration: secs(15),
        }
    }
}

/// Backoff for transient failures: initial, doubling with jitter up to max; after maxAttempts
/// the phase is Failed and retries slow to slowRetryInterval.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Wait after the first transient failure.
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// Attempts before the phase is Failed.
    pub max_attempts: u32,
    /// Retry interval once Failed (a registry outage heals).
    pub slow_retry_interval: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial_backoff: secs(5),
            max_backoff: secs(300),
            max_attempts: 6,
            slow_retry_interval: secs(3600),
        }
    }
}

/// Health (`/healthz`, `/readyz`) and Prometheus `/metrics`, plain HTTP.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Plain-HTTP listen address of `/healthz`, `/readyz` and `/metrics`.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
        }
    }
}

/// The JSON schema of the configuration file (the Helm chart validates `config` with it).
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::generate::SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<Config>();
    schema.to_value()
}
