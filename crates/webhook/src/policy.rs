//! Image policy, shared by `/validate` (Pods) and `/image-policy` (ImageReview): pure rules
//! over normalized references, plus the ECR compliance rule judged from facts the caller
//! fetched. Every denial names its container, image and rule.

use std::fmt;

use privateer_api::config::{Config, OnUnknown, TagMutability};
use privateer_ecr::{Answer, Findings, RepositoryFacts};
use privateer_image::Reference;

pub use privateer_api::policy::{Rule, allows, source_denials};

/// One image to judge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    pub container: String,
    pub image: String,
    /// The image the Pod asked for, when privateer rewrote it (the Pod's `original-images`).
    /// The allow-list and `:latest` judge what was asked for, so a rewrite to the target never
    /// launders an image; a missing repository is one the controller is about to create.
    pub original: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub rule: Rule,
    pub container: String,
    pub image: String,
    pub original: Option<String>,
    pub problem: String,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "container {:?} image {:?}", self.container, self.image)?;
        if let Some(original) = &self.original {
            write!(f, " (asked as {original:?})")?;
        }
        write!(f, ": {} (policy {})", self.problem, self.rule.as_str())
    }
}

/// Is any rule on? (With none, the validating webhook has nothing to say.)
pub fn any_enabled(config: &Config) -> bool {
    let p = &config.policy;
    p.allowed_registries.enabled
        || p.deny_latest.enabled
        || p.require_digest.enabled
        || p.require_target_registry.enabled
        || p.ecr_compliance.enabled
        || p.require_verified.enabled
}

/// The rules that need no registry: allow-list, `:latest`, digest pinning, target registry.
pub fn judge_static(subject: &Subject, config: &Config) -> Vec<Denial> {
    let deny = |rule: Rule, problem: String| Denial {
        rule,
        container: subject.container.clone(),
        image: subject.image.clone(),
        original: subject.original.clone(),
        problem,
    };
    let reference = match Reference::parse(&subject.image) {
        Ok(reference) => reference,
        Err(e) => return vec![deny(Rule::InvalidReference, e.to_string())],
    };
    let asked = subject
        .original
        .as_deref()
        .and_then(|o| Reference::parse(o).ok())
        .unwrap_or_else(|| reference.clone());
    let policy = &config.policy;
    let target = config.target.registry.to_ascii_lowercase();
    let mut denials: Vec<Denial> = source_denials(&asked, config)
        .into_iter()
        .map(|(rule, problem)| deny(rule, problem))
        .collect();
    if policy.require_digest.enabled && reference.digest().is_none() {
        denials.push(deny(
            Rule::RequireDigest,
            "not pinned by digest; use name@sha256:<digest>".into(),
        ));
    }
    if policy.require_target_registry.enabled && reference.domain() != target {
        denials.push(deny(
            Rule::RequireTargetRegistry,
            format!("only images from {target} may run"),
        ));
    }
    denials
}

/// `policy.requireVerified`: an image a `sources.verify` rule covers runs only once its
/// ImageMirror is `Verified` (judged on what the Pod asked for, before any rewrite).
/// `verified(name)`: the mirror's Verified condition, `None` when there is no such mirror.
pub fn judge_verified(
    subject: &Subject,
    config: &Config,
    verified: &dyn Fn(&str) -> Option<bool>,
) -> Option<Denial> {
    if !config.policy.require_verified.enabled {
        return None;
    }
    let asked = subject.original.as_deref().unwrap_or(&subject.image);
    let asked = Reference::parse(asked).ok()?;
    let (index, _) = config.sources.verify_rule(&asked)?;
    let name = privateer_image::object_name(&asked);
    let problem = match verified(&name) {
        Some(true) => return None,
        Some(false) => {
            format!("sources.verify[{index}] covers it and its ImageMirror {name} is not Verified")
        }
        None => format!(
            "sources.verify[{index}] covers it and there is no ImageMirror {name} to verify it yet"
        ),
    };
    Some(Denial {
        rule: Rule::RequireVerified,
        container: subject.container.clone(),
        image: subject.image.clone(),
        original: subject.original.clone(),
        problem,
    })
}

/// The repository in the target registry the ECR rule asks about; `None`: not an image in
/// the target registry (the rule then does not apply: `requireTargetRegistry` covers those).
pub fn ecr_repository(subject: &Subject, config: &Config) -> Option<(String, Option<String>)> {
    let reference = Reference::parse(&subject.image).ok()?;
    (config.policy.ecr_compliance.enabled
        && !config.target.registry.is_empty()
        && reference.domain() == config.target.registry.to_ascii_lowercase())
    .then(|| {
        (
            reference.path().to_owned(),
            reference.digest().map(ToString::to_string),
        )
    })
}

/// The ECR compliance rule, from the repository facts and (for digest-pinned images when
/// critical findings are denied) the scan findings.
pub fn judge_ecr(
    subject: &Subject,
    config: &Config,
    facts: &Answer<RepositoryFacts>,
    findings: Option<&Answer<Findings>>,
) -> Option<Denial> {
    let rules = &config.policy.ecr_compliance;
    let deny = |problem: String| {
        Some(Denial {
            rule: Rule::EcrCompliance,
            container: subject.container.clone(),
            image: subject.image.clone(),
            original: subject.original.clone(),
            problem,
        })
    };
    let unknown = |why: &str| match rules.on_unknown {
        OnUnknown::Allow => None,
        OnUnknown::Deny => deny(format!(
            "ECR could not be asked ({why}) and policy.ecrCompliance.onUnknown is Deny"
        )),
    };
    let mut problems = Vec::new();
    match facts {
        Answer::Unknown(why) => return unknown(why),
        Answer::NotApplicable => return None,
        Answer::Known(RepositoryFacts::Missing) if subject.original.is_some() => {
            // The controller creates it with the configured settings: judge those.
            let ecr = &config.target.ecr;
            if rules.require_tag_immutability && ecr.tag_mutability != TagMutability::Immutable {
                problems.push(
                    "privateer creates its repositories with mutable tags (target.ecr.tagMutability)"
                        .to_owned(),
                );
            }
            if rules.require_scan_on_push && !ecr.scan_on_push {
                problems.push(
                    "privateer creates its repositories without scan on push (target.ecr.scanOnPush)"
                        .to_owned(),
                );
            }
        }
        Answer::Known(RepositoryFacts::Missing) => {
            return deny("the ECR repository does not exist".into());
        }
        Answer::Known(RepositoryFacts::Present {
            tag_immutable,
            tag_mutability,
            scan_on_push,
        }) => {
            if rules.require_tag_immutability && !tag_immutable {
                problems.push(format!(
                    "the ECR repository's tags are {tag_mutability}, not IMMUTABLE"
                ));
            }
            if rules.require_scan_on_push && !scan_on_push {
                problems.push("the ECR repository does not scan on push".to_owned());
            }
        }
    }
    match findings {
        Some(Answer::Known(Findings::Scanned { critical })) if *critical > 0 => {
            problems.push(format!(
                "the ECR scan found {critical} CRITICAL vulnerabilities"
            ));
        }
        Some(Answer::Unknown(why)) if problems.is_empty() => return unknown(why),
        _ => {}
    }
    if problems.is_empty() {
        None
    } else {
        deny(problems.join("; "))
    }
}

/// One message for the API server naming every denial (`what`: "pod", "images").
pub fn message(what: &str, denials: &[Denial]) -> String {
    let parts: Vec<String> = denials.iter().map(ToString::to_string).collect();
    format!("privateer denied this {what}: {}", parts.join("; "))
}
