//! Checks that serde cannot express: required keys, formats, ranges, consistency.

use std::net::SocketAddr;

use crate::Duration;
use privateer_image::{TargetNaming, is_dns1123_subdomain, validate_domain};

use super::load::Problem;
use super::{Config, EncryptionType};
use crate::crd::PLATFORM_PATTERN;

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    fn check(&mut self, ok: bool, key: impl Into<String>, message: impl Into<String>) {
        if !ok {
            self.add(key, message);
        }
    }

    fn listen(&mut self, key: &str, value: &str) {
        if value.parse::<SocketAddr>().is_err() {
            self.add(
                key,
                format!("{value:?} is not an address:port such as 0.0.0.0:8443"),
            );
        }
    }

    fn positive(&mut self, key: &str, value: &Duration) {
        if value.is_negative() || std::time::Duration::from(*value).is_zero() {
            self.add(key, format!("must be a positive duration, got {value}"));
        }
    }

    fn json(&mut self, key: &str, value: &str) {
        if !value.is_empty()
            && let Err(e) = serde_json::from_str::<serde_json::Value>(value)
        {
            self.add(key, format!("is not valid JSON: {e}"));
        }
    }

    fn registry_pattern(&mut self, key: String, pattern: &str) {
        let host = pattern.strip_prefix("*.").unwrap_or(pattern);
        if pattern != "*" && validate_domain(host).is_err() {
            self.add(
                key,
                format!("{pattern:?} is not a registry host, `*.domain` or `*`"),
            );
        }
    }

    fn object_name(&mut self, key: String, name: &str) {
        if !is_dns1123_subdomain(name) {
            self.add(
                key,
                format!("{name:?} is not a valid Kubernetes object name"),
            );
        }
    }
}

/// A DNS-1123 label: what a namespace name must be.
fn is_dns1123_label(name: &str) -> bool {
    name.len() <= 63 && !name.contains('.') && is_dns1123_subdomain(name)
}

/// Matches [`PLATFORM_PATTERN`] without a regex engine.
pub(crate) fn is_platform(text: &str) -> bool {
    let parts: Vec<&str> = text.split('/').collect();
    let word = |s: &str, extra: bool| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || (extra && b == b'_'))
    };
    matches!(parts.len(), 2 | 3)
        && word(parts[0], false)
        && word(parts[1], true)
        && parts.get(2).is_none_or(|v| word(v, false))
}

impl Config {
    /// Every problem found, each naming its key; empty when the configuration is usable.
    pub fn validate(&self) -> Vec<Problem> {
        let mut p = Problems::default();
        p.check(
            is_dns1123_label(&self.namespace),
            "namespace",
            format!("{:?} is not a valid namespace name", self.namespace),
        );

        // Target.
        let t = &self.target;
        let needs_registry = !self.sources.mirror.is_empty()
            || self.policy.require_target_registry.enabled
            || self.policy.ecr_compliance.enabled;
        if t.registry.is_empty() {
            p.check(
                !needs_registry,
                "target.registry",
                "required: the registry images are mirrored into, e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            );
        } else if let Err(e) = TargetNaming::new(&t.registry, &t.prefix) {
            let key = if validate_domain(&t.registry).is_err() {
                "target.registry"
            } else {
                "target.prefix"
            };
            p.add(key, e.to_string());
        }
        let kms = t.ecr.encryption.kind == EncryptionType::Kms;
        p.check(
            kms || t.ecr.encryption.kms_key.is_empty(),
            "target.ecr.encryption.kmsKey",
            "set, but encryption.type is AES256: set type: KMS or remove the key",
        );
        p.json("target.ecr.repositoryPolicy", &t.ecr.repository_policy);
        p.json("target.ecr.lifecyclePolicy", &t.ecr.lifecycle_policy);
        for (k, v) in &t.ecr.tags {
            p.check(
                (1..=128).contains(&k.len()),
                format!("target.ecr.tags.{k}"),
                "tag keys are 1 to 128 characters",
            );
            p.check(
                v.len() <= 256,
                format!("target.ecr.tags.{k}"),
                "tag values are at most 256 characters",
            );
        }
        if !t.ecr.assume_role_arn.is_empty() {
            p.check(
                t.ecr.assume_role_arn.starts_with("arn:")
                    && t.ecr.assume_role_arn.contains(":role/"),
                "target.ecr.assumeRoleArn",
                format!(
                    "{:?} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)",
                    t.ecr.assume_role_arn
                ),
            );
        }
        for (key, url) in [("target.ecr.endpointUrl", &t.ecr.endpoint_url)] {
            if !url.is_empty() {
                p.check(
                    is_http_url(url),
                    key,
                    format!("{url:?} is not an http:// or https:// URL"),
                );
            }
        }
        if !t.credentials_secret.is_empty() {
            p.object_name("target.credentialsSecret".into(), &t.credentials_secret);
        }

        // Sources.
        let s = &self.sources;
        for (i, pattern) in s.mirror.iter().enumerate() {
            p.registry_pattern(format!("sources.mirror[{i}]"), pattern);
        }
        for (i, pattern) in s.ignore.iter().enumerate() {
            p.registry_pattern(format!("sources.ignore[{i}]"), pattern);
        }
        for (i, c) in s.credentials.iter().enumerate() {
            if validate_domain(&c.registry).is_err() {
                p.add(
                    format!("sources.credentials[{i}].registry"),
                    format!("{:?} is not a registry host", c.registry),
                );
            }
            p.object_name(
                format!("sources.credentials[{i}].secretName"),
                &c.secret_name,
            );
        }
        for (i, rule) in s.verify.iter().enumerate() {
            let key = format!("sources.verify[{i}]");
            p.check(
                !rule.images.is_empty(),
                format!("{key}.images"),
                "name at least one host or host/path the rule covers",
            );
            for (j, entry) in rule.images.iter().enumerate() {
                let host = entry.split('/').next().unwrap_or_default();
                p.check(
                    validate_domain(host).is_ok(),
                    format!("{key}.images[{j}]"),
                    format!("{entry:?} is not host or host/path"),
                );
            }
            p.check(
                !rule.keys.is_empty() || !rule.key_secrets.is_empty(),
                format!("{key}.keys"),
                "name at least one key (keys or keySecrets)",
            );
            for (j, pem) in rule.keys.iter().enumerate() {
                let name = format!("{key}.keys[{j}]");
                if let Err(e) = privateer_cosign::PublicKey::parse_pem(&name, pem.as_bytes()) {
                    p.add(name, e.reason);
                }
            }
            for (j, secret) in rule.key_secrets.iter().enumerate() {
                p.object_name(format!("{key}.keySecrets[{j}].name"), &secret.name);
                p.check(
                    !secret.key.is_empty(),
                    format!("{key}.keySecrets[{j}].key"),
                    "name the Secret's data key holding the PEM public key",
                );
            }
        }
        for (registry, endpoint) in &s.endpoints {
            let key = format!("sources.endpoints.{registry}");
            if validate_domain(registry).is_err() {
                p.add(key.clone(), format!("{registry:?} is not a registry host"));
            }
            p.check(
                is_http_url(&endpoint.url),
                format!("{key}.url"),
                format!("{:?} is not an http:// or https:// URL", endpoint.url),
            );
        }

        for registry in s.rate_limits.keys() {
            if validate_domain(registry).is_err() {
                p.add(
                    format!("sources.rateLimits.{registry}"),
                    format!("{registry:?} is not a registry host"),
                );
            }
        }

        // Webhook.
        let w = &self.webhook;
        p.listen("webhook.listen", &w.listen);
        p.positive("webhook.requestTimeout", &w.request_timeout);
        p.positive("webhook.waitTimeout", &w.wait_timeout);
        p.positive("webhook.gateTimeout", &w.gate_timeout);
        p.check(
            w.wait_timeout < w.request_timeout,
            "webhook.waitTimeout",
            format!(
                "{} must be shorter than webhook.requestTimeout ({})",
                w.wait_timeout, w.request_timeout
            ),
        );
        p.check(
            std::time::Duration::from(w.request_timeout) <= std::time::Duration::from_secs(30),
            "webhook.requestTimeout",
            "must not exceed 30s, the longest timeoutSeconds Kubernetes allows a webhook",
        );
        p.check(
            (1024..=64 * 1024 * 1024).contains(&w.max_body_bytes),
            "webhook.maxBodyBytes",
            format!("{} is outside 1024 to 67108864", w.max_body_bytes),
        );
        for (i, ns) in w.exclude_namespaces.iter().enumerate() {
            p.check(
                is_dns1123_label(ns),
                format!("webhook.excludeNamespaces[{i}]"),
                format!("{ns:?} is not a namespace name"),
            );
        }
        for (i, image) in w.exclude_images.iter().enumerate() {
            let host = image.split('/').next().unwrap_or_default();
            p.check(
                !image.is_empty() && validate_domain(host).is_ok(),
                format!("webhook.excludeImages[{i}]"),
                format!("{image:?} is not a registry host or host/path prefix"),
            );
        }
        for (i, name) in w.image_pull_secrets.names.iter().enumerate() {
            p.object_name(format!("webhook.imagePullSecrets.names[{i}]"), name);
        }
        if !w.default_storage_class.is_empty() {
            p.object_name(
                "webhook.defaultStorageClass".into(),
                &w.default_storage_class,
            );
        }

        // Policy.
        let pol = &self.policy;
        p.check(
            !pol.allowed_registries.enabled || !pol.allowed_registries.registries.is_empty(),
            "policy.allowedRegistries.registries",
            "empty while the rule is enabled: every image would be denied",
        );
        for (i, entry) in pol.allowed_registries.registries.iter().enumerate() {
            let host = entry.split('/').next().unwrap_or_default();
            p.check(
                validate_domain(host).is_ok() && !entry.ends_with('/'),
                format!("policy.allowedRegistries.registries[{i}]"),
                format!("{entry:?} is not a registry host or host/path prefix"),
            );
        }
        if pol.ecr_compliance.enabled {
            p.positive(
                "policy.ecrCompliance.cacheTtl",
                &pol.ecr_compliance.cache_ttl,
            );
        }

        p.check(
            (1..=1024).contains(&self.controller.concurrency),
            "controller.concurrency",
            format!("{} is outside 1 to 1024", self.controller.concurrency),
        );

        // Copy.
        let c = &self.copy;
        p.check(
            (1..=256).contains(&c.concurrency),
            "copy.concurrency",
            format!("{} is outside 1 to 256", c.concurrency),
        );
        p.check(
            (1..=64).contains(&c.parallelism),
            "copy.parallelism",
            format!("{} is outside 1 to 64", c.parallelism),
        );
        for (i, platform) in c.platforms.iter().enumerate() {
            p.check(
                is_platform(platform),
                format!("copy.platforms[{i}]"),
                format!("{platform:?} does not match {PLATFORM_PATTERN}"),
            );
        }
        let j = &c.job;
        p.check(
            (1..=super::BATCH_SIZE_MAX).contains(&j.batch_size),
            "copy.job.batchSize",
            format!("{} is outside 1 to {}", j.batch_size, super::BATCH_SIZE_MAX),
        );
        p.check(
            j.backoff_limit >= 0,
            "copy.job.backoffLimit",
            "must not be negative",
        );
        p.check(
            j.active_deadline_seconds > 0,
            "copy.job.activeDeadlineSeconds",
            "must be positive",
        );
        let r = &self.registries;
        for (key, value) in [
            ("registries.timeouts.connect", &r.timeouts.connect),
            ("registries.timeouts.read", &r.timeouts.read),
            ("registries.timeouts.resolve", &r.timeouts.resolve),
            ("registries.timeouts.copy", &r.timeouts.copy),
        ] {
            p.positive(key, value);
        }
        let copy_seconds = std::time::Duration::from(r.timeouts.copy).as_secs();
        p.check(
            i64::try_from(copy_seconds).is_ok_and(|s| s < j.active_deadline_seconds),
            "registries.timeouts.copy",
            format!(
                "{} must be shorter than copy.job.activeDeadlineSeconds ({}s), so a copy Job reports its own timeout",
                r.timeouts.copy, j.active_deadline_seconds
            ),
        );
        for (key, value) in [
            ("registries.limits.manifestBytes", r.limits.manifest_bytes),
            (
                "registries.limits.indexChildren",
                u64::from(r.limits.index_children),
            ),
            ("registries.limits.layers", u64::from(r.limits.layers)),
            ("registries.limits.tokenBytes", r.limits.token_bytes),
            ("registries.limits.totalBytes", r.limits.total_bytes),
        ] {
            p.check(value > 0, key, "must be positive");
        }
        p.check(
            j.ttl_seconds_after_finished >= 0,
            "copy.job.ttlSecondsAfterFinished",
            "must not be negative",
        );
        p.object_name(
            "copy.job.serviceAccountName".into(),
            &j.service_account_name,
        );
        for (kind, map) in [
            ("requests", &j.resources.requests),
            ("limits", &j.resources.limits),
        ] {
            for (name, quantity) in map {
                p.check(
                    is_quantity(quantity),
                    format!("copy.job.resources.{kind}.{name}"),
                    format!("{quantity:?} is not a Kubernetes quantity such as 100m or 64Mi"),
                );
            }
        }

        // Controller.
        let ctl = &self.controller;
        p.object_name(
            "controller.leaderElection.leaseName".into(),
            &ctl.leader_election.lease_name,
        );
        p.positive(
            "controller.leaderElection.leaseDuration",
            &ctl.leader_election.lease_duration,
        );
        p.check(
            !ctl.refresh_interval.is_negative(),
            "controller.refreshInterval",
            "must not be negative",
        );
        p.check(
            !ctl.target_check.interval.is_negative(),
            "controller.targetCheck.interval",
            "must not be negative",
        );
        p.check(
            !ctl.target_check.before_release.is_negative(),
            "controller.targetCheck.beforeRelease",
            "must not be negative",
        );
        p.check(
            ctl.target_check.per_minute > 0,
            "controller.targetCheck.perMinute",
            "must be at least 1",
        );
        p.check(
            !ctl.retention.unused_for.is_negative(),
            "controller.retention.unusedFor",
            "must not be negative",
        );
        let r = &ctl.retry;
        p.positive("controller.retry.initialBackoff", &r.initial_backoff);
        p.positive("controller.retry.maxBackoff", &r.max_backoff);
        p.positive("controller.retry.slowRetryInterval", &r.slow_retry_interval);
        p.check(
            r.initial_backoff <= r.max_backoff,
            "controller.retry.initialBackoff",
            format!(
                "{} is longer than controller.retry.maxBackoff ({})",
                r.initial_backoff, r.max_backoff
            ),
        );
        p.check(
            r.max_attempts >= 1,
            "controller.retry.maxAttempts",
            "must be at least 1",
        );

        p.listen("metrics.listen", &self.metrics.listen);
        p.0
    }
}

fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    rest.and_then(|r| r.split('/').next())
        .is_some_and(|host| validate_domain(host).is_ok())
}

/// `<number>[suffix]` with the suffixes Kubernetes quantities use.
fn is_quantity(q: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "m", "k", "M", "G", "T", "P", "E", "",
    ];
    SUFFIXES.iter().any(|suffix| {
        q.strip_suffix(suffix).is_some_and(|n| {
            !n.is_empty()
                && n.parse::<f64>().is_ok_and(|v| v >= 0.0)
                && n.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        })
    })
}
