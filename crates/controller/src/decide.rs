//! What a reconcile that runs the pipeline does, once it has observed the source and the
//! target: a pure decision from the mirror, its plan and the observations. `stage` decides
//! whether to look at all; this decides what to do with what was seen; `reconcile` observes
//! and acts. Table-tested.

use privateer_api::{ImageMirror, Phase};

use crate::plan::Plan;

/// The source as resolved now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    Found(String),
    /// The registry answers that it does not exist.
    Missing,
    /// The registry could not answer.
    Unreachable {
        transient: bool,
        message: String,
    },
}

/// What the pipeline saw: each target fact only when the decision needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub source: Resolved,
    /// Does the target repository have immutable tags? Asked when the tag moved upstream.
    pub tag_immutable: Option<bool>,
    /// The digest the target holds at the mirror's tag (or digest). Asked without a platform
    /// filter, unless the mirror keeps its old digest anyway.
    pub target_digest: Option<String>,
}

/// One step to act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The source does not exist: a permanent failure until the spec changes.
    SourceNotFound,
    /// The source's registry could not answer.
    SourceUnavailable { transient: bool, message: String },
    /// The tag moved upstream, but the target's tags are immutable: keep the old digest.
    KeepOldDigest { digest: String, message: String },
    /// The target already holds the source digest.
    UpToDate { digest: String },
    /// Ensure the repository and copy `digest`.
    Copy { digest: String },
}

/// Was this mirror Ready (under its current spec) with another digest than the source has now?
pub fn moved_upstream(mirror: &ImageMirror, digest: &str) -> bool {
    let Some(status) = &mirror.status else {
        return false;
    };
    status.observed_generation == mirror.metadata.generation
        && mirror.phase() == Phase::Ready
        && status
            .source_digest
            .as_deref()
            .is_some_and(|old| old != digest)
}

pub fn decide(mirror: &ImageMirror, plan: &Plan, observed: &Observed) -> Step {
    let digest = match &observed.source {
        Resolved::Found(digest) => digest.clone(),
        Resolved::Missing => return Step::SourceNotFound,
        Resolved::Unreachable { transient, message } => {
            return Step::SourceUnavailable {
                transient: *transient,
                message: message.clone(),
            };
        }
    };
    if observed.tag_immutable == Some(true) && moved_upstream(mirror, &digest) {
        let message = format!(
            "the target repository {} has immutable tags, so the mirror keeps the old digest; declare an ImageMirror for a new tag or pin the source by digest",
            plan.target.path()
        );
        return Step::KeepOldDigest { digest, message };
    }
    if plan.platforms.is_empty() && observed.target_digest.as_deref() == Some(digest.as_str()) {
        return Step::UpToDate { digest };
    }
    Step::Copy { digest }
}

#[cfg(test)]
mod tests {
    use super::*;
    use privateer_api::{ImageMirrorSpec, ImageMirrorStatus};
    use privateer_image::TargetNaming;

    fn mirror(status: Option<(Phase, &str)>) -> ImageMirror {
        let mut mirror = ImageMirror::new("m", ImageMirrorSpec::for_source("nginx:1.27"));
        mirror.metadata.generation = Some(1);
        mirror.status = status.map(|(phase, digest)| ImageMirrorStatus {
            observed_generation: Some(1),
            phase: Some(phase),
            source_digest: Some(digest.into()),
            ..ImageMirrorStatus::default()
        });
        mirror
    }

    fn plan_for(mirror: &ImageMirror, platforms: &[&str]) -> Plan {
        let naming = TargetNaming::new("123456789012.dkr.ecr.eu-west-1.amazonaws.com", "mirror")
            .expect("naming");
        let platforms: Vec<String> = platforms.iter().map(|p| (*p).to_owned()).collect();
        crate::plan::plan(mirror, &naming, &platforms).expect("a plan")
    }

    fn seen(source: Resolved, immutable: Option<bool>, target: Option<&str>) -> Observed {
        Observed {
            source,
            tag_immutable: immutable,
            target_digest: target.map(str::to_owned),
        }
    }

    /// (what, the mirror's status, platforms, what was seen, the step)
    type Case<'a> = (
        &'a str,
        Option<(Phase, &'a str)>,
        &'a [&'a str],
        Observed,
        Step,
    );

    #[test]
    fn every_step_the_pipeline_takes() {
        let found = |d: &str| Resolved::Found(d.into());
        let copy = |d: &str| Step::Copy { digest: d.into() };
        let ready = Some((Phase::Ready, "sha256:old"));
        let cases: Vec<Case> = vec![
            (
                "the source is gone",
                None,
                &[],
                seen(Resolved::Missing, None, None),
                Step::SourceNotFound,
            ),
            (
                "the source's registry is down",
                None,
                &[],
                seen(
                    Resolved::Unreachable {
                        transient: true,
                        message: "503".into(),
                    },
                    None,
                    None,
                ),
                Step::SourceUnavailable {
                    transient: true,
                    message: "503".into(),
                },
            ),
            (
                "a new mirror, nothing in the target",
                None,
                &[],
                seen(found("sha256:new"), None, None),
                copy("sha256:new"),
            ),
            (
                "the target already holds it",
                None,
                &[],
                seen(found("sha256:new"), None, Some("sha256:new")),
                Step::UpToDate {
                    digest: "sha256:new".into(),
                },
            ),
            (
                "the target holds another digest at the tag",
                None,
                &[],
                seen(found("sha256:new"), None, Some("sha256:other")),
                copy("sha256:new"),
            ),
            (
                "a platform filter writes a new index: always copied",
                None,
                &["linux/amd64"],
                seen(found("sha256:new"), None, Some("sha256:new")),
                copy("sha256:new"),
            ),
            (
                "a refresh, the tag moved, immutable target tags",
                ready,
                &[],
                seen(found("sha256:new"), Some(true), None),
                Step::KeepOldDigest {
                    digest: "sha256:new".into(),
                    message: "the target repository mirror/docker.io/library/nginx has immutable tags, so the mirror keeps the old digest; declare an ImageMirror for a new tag or pin the source by digest".into(),
                },
            ),
            (
                "a refresh, the tag moved, mutable target tags",
                ready,
                &[],
                seen(found("sha256:new"), Some(false), None),
                copy("sha256:new"),
            ),
            (
                "a refresh, the tag did not move",
                Some((Phase::Ready, "sha256:new")),
                &[],
                seen(found("sha256:new"), None, Some("sha256:new")),
                Step::UpToDate {
                    digest: "sha256:new".into(),
                },
            ),
            (
                "immutable tags do not hold back a mirror that was never Ready",
                Some((Phase::Failed, "sha256:old")),
                &[],
                seen(found("sha256:new"), Some(true), None),
                copy("sha256:new"),
            ),
        ];
        for (what, status, platforms, observed, expected) in cases {
            let mirror = mirror(status);
            let plan = plan_for(&mirror, platforms);
            assert_eq!(decide(&mirror, &plan, &observed), expected, "{what}");
        }
    }
}
