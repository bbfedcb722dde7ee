//! Lookups for the validating webhook and the controller: repository facts, scan findings and
//! image existence.

use std::sync::Arc;

use aws_sdk_ecr::types::{ImageIdentifier, ScanFrequency, ScanType, ScanningRepositoryFilterType};

use super::{EcrProvider, is_code};
use crate::{Findings, ImageId, RepositoryFacts, TargetError};

/// The registry-level scanning configuration, as far as scan on push is concerned.
#[derive(Clone, Debug, Default)]
pub(super) struct ScanningRules {
    /// Enhanced scanning ignores the repositories' own scanOnPush.
    enhanced: bool,
    /// Wildcard filters of rules that scan on push (or continuously, which includes push).
    on_push_filters: Vec<String>,
}

impl ScanningRules {
    fn scans_on_push(&self, repository: &str, repository_setting: bool) -> bool {
        let by_rule = self
            .on_push_filters
            .iter()
            .any(|filter| wildcard_match(filter, repository));
        by_rule || (!self.enhanced && repository_setting)
    }
}

/// ECR's repository filter: `*` matches any run of characters, everything else itself.
pub(crate) fn wildcard_match(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

pub(super) async fn repository_facts(
    ecr: &EcrProvider,
    repository: &str,
) -> Result<RepositoryFacts, TargetError> {
    let Some(repo) = ecr.describe_repository(repository).await? else {
        return Ok(RepositoryFacts::Missing);
    };
    let tag_mutability = repo
        .image_tag_mutability()
        .map_or("MUTABLE", |m| m.as_str())
        .to_owned();
    let repository_setting = repo
        .image_scanning_configuration()
        .is_some_and(|c| c.scan_on_push());
    let rules = ecr
        .scanning
        .get_or_fetch((), |_| false, Box::pin(scanning_rules(ecr)))
        .await
        .map_err(Arc::unwrap_or_clone)?;
    Ok(RepositoryFacts::Present {
        tag_immutable: tag_mutability == "IMMUTABLE",
        tag_mutability,
        scan_on_push: rules.scans_on_push(repository, repository_setting),
    })
}

async fn scanning_rules(ecr: &EcrProvider) -> Result<ScanningRules, TargetError> {
    let output = ecr
        .client
        .get_registry_scanning_configuration()
        .send()
        .await
        .map_err(|e| TargetError::from_sdk("ecr:GetRegistryScanningConfiguration", "*", e))?;
    let Some(config) = output.scanning_configuration() else {
        return Ok(ScanningRules::default());
    };
    let on_push_filters = config
        .rules()
        .iter()
        .filter(|rule| {
            matches!(
                rule.scan_frequency(),
                ScanFrequency::ScanOnPush | ScanFrequency::ContinuousScan
            )
        })
        .flat_map(|rule| rule.repository_filters())
        .filter(|f| *f.filter_type() == ScanningRepositoryFilterType::Wildcard)
        .map(|f| f.filter().to_owned())
        .collect();
    Ok(ScanningRules {
        enhanced: config.scan_type() == Some(&ScanType::Enhanced),
        on_push_filters,
    })
}

pub(super) async fn findings(
    ecr: &EcrProvider,
    repository: &str,
    digest: &str,
) -> Result<Findings, TargetError> {
    let output = ecr
        .client
        .describe_image_scan_findings()
        .registry_id(ecr.account())
        .repository_name(repository)
        .image_id(ImageIdentifier::builder().image_digest(digest).build())
        .send()
        .await;
    let output = match output {
        Err(e) if is_code(&e, &["ScanNotFoundException"]) => return Ok(Findings::NotScanned),
        Err(e)
            if is_code(
                &e,
                &["ImageNotFoundException", "RepositoryNotFoundException"],
            ) =>
        {
            return Ok(Findings::NoImage);
        }
        other => other
            .map_err(|e| TargetError::from_sdk("ecr:DescribeImageScanFindings", repository, e))?,
    };
    let status = output
        .image_scan_status()
        .and_then(|s| s.status())
        .map(|s| s.as_str().to_owned())
        .unwrap_or_default();
    Ok(match status.as_str() {
        "COMPLETE" | "ACTIVE" => {
            let critical = output
                .image_scan_findings()
                .and_then(|f| f.finding_severity_counts())
                .and_then(|counts| {
                    counts
                        .iter()
                        .find(|(severity, _)| severity.as_str() == "CRITICAL")
                        .map(|(_, n)| *n)
                })
                .unwrap_or(0);
            Findings::Scanned {
                critical: u32::try_from(critical).unwrap_or(0),
            }
        }
        "IN_PROGRESS" | "PENDING" => Findings::Pending,
        _ => Findings::NotScanned,
    })
}

pub(super) async fn describe_image(
    ecr: &EcrProvider,
    repository: &str,
    image: &ImageId,
) -> Result<Option<String>, TargetError> {
    let id = match image {
        ImageId::Tag(tag) => ImageIdentifier::builder().image_tag(tag).build(),
        ImageId::Digest(digest) => ImageIdentifier::builder().image_digest(digest).build(),
    };
    let output = ecr
        .client
        .describe_images()
        .registry_id(ecr.account())
        .repository_name(repository)
        .image_ids(id)
        .send()
        .await;
    match output {
        Err(e)
            if is_code(
                &e,
                &["ImageNotFoundException", "RepositoryNotFoundException"],
            ) =>
        {
            Ok(None)
        }
        other => Ok(other
            .map_err(|e| TargetError::from_sdk("ecr:DescribeImages", repository, e))?
            .image_details()
            .first()
            .and_then(|d| d.image_digest())
            .map(str::to_owned)),
    }
}

/// `BatchDeleteImage` by digest: every tag naming the image goes with it.
pub(super) async fn delete_image(
    ecr: &EcrProvider,
    repository: &str,
    digest: &str,
) -> Result<bool, TargetError> {
    const ACTION: &str = "ecr:BatchDeleteImage";
    let output = ecr
        .client
        .batch_delete_image()
        .registry_id(ecr.account())
        .repository_name(repository)
        .image_ids(ImageIdentifier::builder().image_digest(digest).build())
        .send()
        .await;
    let output = match output {
        Err(e) if is_code(&e, &["RepositoryNotFoundException"]) => return Ok(false),
        other => other.map_err(|e| TargetError::from_sdk(ACTION, repository, e))?,
    };
    if !output.image_ids().is_empty() {
        return Ok(true);
    }
    match output.failures().first() {
        None => Ok(false),
        Some(f)
            if f.failure_code()
                .is_some_and(|c| c.as_str() == "ImageNotFound") =>
        {
            Ok(false)
        }
        Some(f) => Err(TargetError::Rejected {
            action: ACTION.into(),
            resource: format!("{repository}@{digest}"),
            code: f
                .failure_code()
                .map(|c| c.as_str().to_owned())
                .unwrap_or_default(),
            message: f.failure_reason().unwrap_or_default().to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_ecr_filters() {
        assert!(wildcard_match("*", "mirror/docker.io/library/nginx"));
        assert!(wildcard_match("mirror/*", "mirror/docker.io/library/nginx"));
        assert!(wildcard_match("*nginx", "mirror/docker.io/library/nginx"));
        assert!(wildcard_match(
            "mirror/*/library/*",
            "mirror/docker.io/library/nginx"
        ));
        assert!(wildcard_match("exact", "exact"));
        assert!(!wildcard_match("exact", "exactly"));
        assert!(!wildcard_match("mirror/*", "other/nginx"));
        assert!(!wildcard_match("a*b*c", "a-c-b"));
    }

    #[test]
    fn enhanced_scanning_ignores_the_repository_setting() {
        let basic = ScanningRules::default();
        assert!(basic.scans_on_push("r", true));
        assert!(!basic.scans_on_push("r", false));
        let enhanced = ScanningRules {
            enhanced: true,
            on_push_filters: vec!["mirror/*".into()],
        };
        assert!(!enhanced.scans_on_push("other", true));
        assert!(enhanced.scans_on_push("mirror/x", false));
    }
}
