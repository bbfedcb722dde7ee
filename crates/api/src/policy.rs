//! The policy rules about what a Pod asks for, judged on the normalized reference alone: the
//! registry allow-list and `:latest`. The validating webhook denies by them; the mutating
//! webhook and backfill never mirror what they would deny.

use privateer_image::Reference;

use crate::Config;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    InvalidReference,
    AllowedRegistries,
    DenyLatest,
    RequireDigest,
    RequireTargetRegistry,
    EcrCompliance,
    RequireVerified,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidReference => "invalidReference",
            Self::AllowedRegistries => "allowedRegistries",
            Self::DenyLatest => "denyLatest",
            Self::RequireDigest => "requireDigest",
            Self::RequireTargetRegistry => "requireTargetRegistry",
            Self::EcrCompliance => "ecrCompliance",
            Self::RequireVerified => "requireVerified",
        }
    }
}

/// The rules about what a Pod asks for: the allow-list and `:latest`. The mutating webhook
/// uses them too, so it never mirrors an image the validating webhook will refuse.
pub fn source_denials(reference: &Reference, config: &Config) -> Vec<(Rule, String)> {
    let policy = &config.policy;
    let target = config.target.registry.to_ascii_lowercase();
    // The target registry is where privateer puts what it mirrors: always allowed.
    let in_target = !target.is_empty() && reference.domain() == target;
    let mut denials = Vec::new();
    if policy.allowed_registries.enabled
        && !in_target
        && !policy
            .allowed_registries
            .registries
            .iter()
            .any(|entry| allows(entry, reference))
    {
        denials.push((
            Rule::AllowedRegistries,
            format!(
                "{} is not in the allowed registries ({})",
                reference.name(),
                policy.allowed_registries.registries.join(", ")
            ),
        ));
    }
    if policy.deny_latest.enabled && reference.digest().is_none() {
        match reference.tag() {
            None => denials.push((
                Rule::DenyLatest,
                "untagged images run whatever :latest is; name a version tag or a digest".into(),
            )),
            Some("latest") => denials.push((
                Rule::DenyLatest,
                ":latest moves under running workloads; name a version tag or a digest".into(),
            )),
            Some(_) => {}
        }
    }
    denials
}

/// `entry` (`host` or `host/path`) allows `reference` on whole host and path components:
/// `docker.io` never passes `docker.io.evil.com`, `gcr.io/good` never passes `gcr.io/good-evil`.
pub fn allows(entry: &str, reference: &Reference) -> bool {
    let entry = entry.to_ascii_lowercase();
    let (host, path) = entry.split_once('/').unwrap_or((entry.as_str(), ""));
    let host = match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io",
        other => other,
    };
    if reference.domain() != host {
        return false;
    }
    path.is_empty()
        || reference.path() == path
        || reference
            .path()
            .strip_prefix(path)
            .is_some_and(|rest| rest.starts_with('/'))
}
