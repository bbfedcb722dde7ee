//! `ensure_repository` for ECR: create with every configured setting, or compare an existing
//! repository with the configuration and report (or, when asked, apply) the difference.

use aws_sdk_ecr::error::ProvideErrorMetadata;
use aws_sdk_ecr::types::{
    EncryptionConfiguration, EncryptionType, ImageScanningConfiguration, ImageTagMutability, Tag,
};
use privateer_api::config::EncryptionType as WantEncryption;

use super::{EcrProvider, is_code};
use crate::settings::{ObservedSettings, Setting, drift};
use crate::{Drift, EnsuredRepository, RepositoryState, TargetError};

pub(super) async fn ensure(
    ecr: &EcrProvider,
    repository: &str,
) -> Result<EnsuredRepository, TargetError> {
    let observed = match observe(ecr, repository).await? {
        Some(observed) => observed,
        None => match create(ecr, repository).await? {
            Created::Yes => {
                return Ok(EnsuredRepository {
                    state: RepositoryState::Created,
                    drift: Vec::new(),
                    corrected: Vec::new(),
                });
            }
            // Someone else created it between our look and our create: judge theirs.
            Created::Raced => {
                observe(ecr, repository)
                    .await?
                    .ok_or_else(|| TargetError::Unavailable {
                        action: "ecr:DescribeRepositories".into(),
                        resource: repository.into(),
                        message: "the repository exists but cannot be described yet".into(),
                    })?
            }
        },
    };
    let found = drift(&ecr.settings, &observed);
    if found.is_empty() || !ecr.enforce_settings {
        if !found.is_empty() {
            tracing::warn!(repository, drift = ?found, "repository settings drifted from the configuration");
        }
        return Ok(EnsuredRepository {
            state: RepositoryState::Existed,
            drift: found,
            corrected: Vec::new(),
        });
    }
    let (correctable, remaining): (Vec<Drift>, Vec<Drift>) =
        found.into_iter().partition(Drift::correctable);
    apply(ecr, repository, &observed, &correctable).await?;
    Ok(EnsuredRepository {
        state: RepositoryState::Existed,
        drift: remaining,
        corrected: correctable,
    })
}

fn err<E, R>(
    action: &str,
    repository: &str,
) -> impl FnOnce(aws_sdk_ecr::error::SdkError<E, R>) -> TargetError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let action = format!("ecr:{action}");
    let repository = repository.to_owned();
    move |e| TargetError::from_sdk(&action, &repository, e)
}

/// The repository's settings, or `None` when it does not exist. Policies and tags are read
/// only when the configuration manages them (fewer calls, fewer IAM permissions).
async fn observe(
    ecr: &EcrProvider,
    repository: &str,
) -> Result<Option<ObservedSettings>, TargetError> {
    let Some(repo) = ecr.describe_repository(repository).await? else {
        return Ok(None);
    };
    let mut observed = ObservedSettings {
        arn: repo.repository_arn().unwrap_or_default().to_owned(),
        scan_on_push: repo
            .image_scanning_configuration()
            .is_some_and(|c| c.scan_on_push()),
        tag_mutability: repo
            .image_tag_mutability()
            .map_or("MUTABLE", |m| m.as_str())
            .to_owned(),
        encryption: repo
            .encryption_configuration()
            .map_or("AES256", |c| c.encryption_type().as_str())
            .to_owned(),
        kms_key: repo
            .encryption_configuration()
            .and_then(|c| c.kms_key())
            .map(str::to_owned),
        ..ObservedSettings::default()
    };
    if ecr.settings.repository_policy.is_some() {
        let policy = ecr
            .client
            .get_repository_policy()
            .registry_id(ecr.account())
            .repository_name(repository)
            .send()
            .await;
        observed.repository_policy = match policy {
            Err(e) if is_code(&e, &["RepositoryPolicyNotFoundException"]) => None,
            other => other
                .map_err(err("GetRepositoryPolicy", repository))?
                .policy_text()
                .map(str::to_owned),
        };
    }
    if ecr.settings.lifecycle_policy.is_some() {
        let policy = ecr
            .client
            .get_lifecycle_policy()
            .registry_id(ecr.account())
            .repository_name(repository)
            .send()
            .await;
        observed.lifecycle_policy = match policy {
            Err(e) if is_code(&e, &["LifecyclePolicyNotFoundException"]) => None,
            other => other
                .map_err(err("GetLifecyclePolicy", repository))?
                .lifecycle_policy_text()
                .map(str::to_owned),
        };
    }
    if !ecr.settings.tags.is_empty() {
        let tags = ecr
            .client
            .list_tags_for_resource()
            .resource_arn(&observed.arn)
            .send()
            .await
            .map_err(err("ListTagsForResource", repository))?;
        observed.tags = tags
            .tags()
            .iter()
            .map(|t| (t.key().to_owned(), t.value().to_owned()))
            .collect();
    }
    Ok(Some(observed))
}

enum Created {
    Yes,
    Raced,
}

fn tags(ecr: &EcrProvider) -> Result<Vec<Tag>, TargetError> {
    ecr.settings
        .tags
        .iter()
        .map(|(k, v)| {
            Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| TargetError::Config(format!("target.ecr.tags.{k}: {e}")))
        })
        .collect()
}

/// Create the repository with every setting. A repository whose policies cannot be set is
/// deleted again (it is empty), so a failed create never leaves a half-configured one behind.
async fn create(ecr: &EcrProvider, repository: &str) -> Result<Created, TargetError> {
    let settings = &ecr.settings;
    let encryption = EncryptionConfiguration::builder()
        .encryption_type(match settings.encryption {
            WantEncryption::Aes256 => EncryptionType::Aes256,
            WantEncryption::Kms => EncryptionType::Kms,
        })
        .set_kms_key(settings.kms_key.clone())
        .build()
        .map_err(|e| TargetError::Config(format!("target.ecr.encryption: {e}")))?;
    let created = ecr
        .client
        .create_repository()
        .registry_id(ecr.account())
        .repository_name(repository)
        .image_tag_mutability(ImageTagMutability::from(settings.tag_mutability.as_str()))
        .image_scanning_configuration(
            ImageScanningConfiguration::builder()
                .scan_on_push(settings.scan_on_push)
                .build(),
        )
        .encryption_configuration(encryption)
        .set_tags(Some(tags(ecr)?))
        .send()
        .await;
    match created {
        Err(e) if is_code(&e, &["RepositoryAlreadyExistsException"]) => return Ok(Created::Raced),
        other => {
            other.map_err(err("CreateRepository", repository))?;
        }
    }
    tracing::info!(repository, "created ECR repository");
    if let Err(error) = set_policies(ecr, repository, true, true).await {
        let deleted = ecr
            .client
            .delete_repository()
            .registry_id(ecr.account())
            .repository_name(repository)
            .send()
            .await;
        if let Err(e) = deleted {
            tracing::warn!(repository, error = %crate::error::chain(&e), "could not delete the half-created repository");
        }
        return Err(error);
    }
    Ok(Created::Yes)
}

async fn set_policies(
    ecr: &EcrProvider,
    repository: &str,
    repository_policy: bool,
    lifecycle_policy: bool,
) -> Result<(), TargetError> {
    if let (true, Some(text)) = (repository_policy, &ecr.settings.repository_policy) {
        ecr.client
            .set_repository_policy()
            .registry_id(ecr.account())
            .repository_name(repository)
            .policy_text(text)
            .send()
            .await
            .map_err(err("SetRepositoryPolicy", repository))?;
    }
    if let (true, Some(text)) = (lifecycle_policy, &ecr.settings.lifecycle_policy) {
        ecr.client
            .put_lifecycle_policy()
            .registry_id(ecr.account())
            .repository_name(repository)
            .lifecycle_policy_text(text)
            .send()
            .await
            .map_err(err("PutLifecyclePolicy", repository))?;
    }
    Ok(())
}

/// Apply the correctable drift (`target.ecr.enforceSettings: true`).
async fn apply(
    ecr: &EcrProvider,
    repository: &str,
    observed: &ObservedSettings,
    drift: &[Drift],
) -> Result<(), TargetError> {
    let has = |setting: &Setting| drift.iter().any(|d| &d.setting == setting);
    if has(&Setting::ScanOnPush) {
        ecr.client
            .put_image_scanning_configuration()
            .registry_id(ecr.account())
            .repository_name(repository)
            .image_scanning_configuration(
                ImageScanningConfiguration::builder()
                    .scan_on_push(ecr.settings.scan_on_push)
                    .build(),
            )
            .send()
            .await
            .map_err(err("PutImageScanningConfiguration", repository))?;
    }
    if has(&Setting::TagMutability) {
        ecr.client
            .put_image_tag_mutability()
            .registry_id(ecr.account())
            .repository_name(repository)
            .image_tag_mutability(ImageTagMutability::from(
                ecr.settings.tag_mutability.as_str(),
            ))
            .send()
            .await
            .map_err(err("PutImageTagMutability", repository))?;
    }
    set_policies(
        ecr,
        repository,
        has(&Setting::RepositoryPolicy),
        has(&Setting::LifecyclePolicy),
    )
    .await?;
    if drift.iter().any(|d| matches!(d.setting, Setting::Tag(_))) {
        ecr.client
            .tag_resource()
            .resource_arn(&observed.arn)
            .set_tags(Some(tags(ecr)?))
            .send()
            .await
            .map_err(err("TagResource", repository))?;
    }
    tracing::info!(
        repository,
        corrected = drift.len(),
        "applied configured settings to a drifted repository"
    );
    Ok(())
}
