//! The pure part of reconciling: what to copy where, how long to back off, how copy Jobs are
//! named, and what a copy Pod's termination message says. No I/O here.

use std::time::Duration;

use privateer_api::ImageMirror;
use privateer_api::config::RetryConfig;
use privateer_image::{Reference, TargetNaming};
use privateer_registry::RetryPolicy;
use sha2::{Digest as _, Sha256};

/// What one ImageMirror asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The normalized source.
    pub source: Reference,
    /// Where it goes (spec override or the naming rule), with the source's tag.
    pub target: Reference,
    /// Platforms to copy; empty: all.
    pub platforms: Vec<String>,
}

/// Why an ImageMirror cannot be planned: waits for a spec change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSpec(pub String);

pub fn plan(
    mirror: &ImageMirror,
    naming: &TargetNaming,
    default_platforms: &[String],
) -> Result<Plan, InvalidSpec> {
    let source = Reference::parse(&mirror.spec.source)
        .map_err(|e| InvalidSpec(format!("spec.source {:?}: {e}", mirror.spec.source)))?;
    let target = match &mirror.spec.target {
        Some(text) => {
            let target = Reference::parse(text)
                .map_err(|e| InvalidSpec(format!("spec.target {text:?}: {e}")))?;
            if target.domain() != naming.registry() {
                return Err(InvalidSpec(format!(
                    "spec.target {text:?} is not in the target registry {}",
                    naming.registry()
                )));
            }
            target
        }
        None => naming
            .target(&source)
            .map_err(|e| InvalidSpec(format!("spec.source {:?}: {e}", mirror.spec.source)))?,
    };
    let platforms = if mirror.spec.platforms.is_empty() {
        default_platforms.to_vec()
    } else {
        mirror.spec.platforms.clone()
    };
    Ok(Plan {
        source,
        target,
        platforms,
    })
}

/// The wait after the `attempts`-th failure in a row: the copier's own schedule
/// (`initial · 2^(attempts-1)` capped at `max`, jittered between half and all of it); once
/// attempts reach `maxAttempts`, the slow interval.
pub fn backoff(attempts: u32, retry: &RetryConfig) -> Duration {
    if attempts >= retry.max_attempts {
        return retry.slow_retry_interval.into();
    }
    RetryPolicy {
        attempts: retry.max_attempts,
        initial_delay: retry.initial_backoff.into(),
        max_delay: retry.max_backoff.into(),
    }
    .delay(attempts)
}

/// The copy Job for `mirror` copying `digest`: the same name for the same copy, also across
/// controller restarts, so there is never a second Job for one copy. A DNS label (≤ 63).
pub fn job_name(mirror: &str, digest: &str) -> String {
    let hash = Sha256::digest(format!("{mirror}\n{digest}").as_bytes());
    let suffix: String = hash.iter().take(5).map(|b| format!("{b:02x}")).collect();
    let mut stem: String = mirror
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63 - "copy--".len() - suffix.len())
        .collect();
    while stem.ends_with('-') {
        stem.pop();
    }
    format!("copy-{stem}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use privateer_api::ImageMirrorSpec;

    fn mirror(source: &str) -> ImageMirror {
        ImageMirror::new("m", ImageMirrorSpec::for_source(source))
    }

    fn naming() -> TargetNaming {
        TargetNaming::new("123456789012.dkr.ecr.eu-west-1.amazonaws.com", "mirror").expect("naming")
    }

    #[test]
    fn plans_follow_the_naming_rule_and_refuse_bad_specs() {
        let plan = plan(&mirror("nginx:1.27"), &naming(), &[]).expect("valid");
        assert_eq!(
            plan.target.to_string(),
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/mirror/docker.io/library/nginx:1.27"
        );
        let bad = super::plan(&mirror("docker.io/Library/nginx"), &naming(), &[]);
        assert!(bad.expect_err("invalid").0.contains("spec.source"));
        let mut elsewhere = mirror("nginx:1.27");
        elsewhere.spec.target = Some("quay.io/x/y:1".into());
        assert!(
            super::plan(&elsewhere, &naming(), &[])
                .expect_err("outside the target")
                .0
                .contains("not in the target registry")
        );
    }

    #[test]
    fn backoff_doubles_to_the_cap_then_slows_down() {
        let retry = RetryConfig::default();
        for (attempts, full) in [(1, 5), (2, 10), (3, 20), (4, 40), (5, 80)] {
            let wait = backoff(attempts, &retry).as_secs_f64();
            let full = f64::from(full);
            assert!(wait >= full / 2.0 && wait <= full, "{attempts}: {wait}");
        }
        assert_eq!(backoff(6, &retry).as_secs(), 3600);
        assert_eq!(backoff(30, &retry).as_secs(), 3600);
    }

    #[test]
    fn job_names_are_stable_dns_labels() {
        let long = "docker.io-library-".repeat(8);
        let name = job_name(&long, "sha256:abc");
        assert!(name.len() <= 63, "{name}");
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        assert_eq!(name, job_name(&long, "sha256:abc"));
        assert_ne!(name, job_name(&long, "sha256:abd"));
    }
}
