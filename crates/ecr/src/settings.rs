//! The repository settings privateer wants, what a repository has, and how they differ.
//! Pure: the ECR calls live in `ecr`.

use std::collections::BTreeMap;
use std::fmt;

use privateer_api::config::{EcrConfig, EncryptionType, TagMutability};

/// The settings every repository privateer creates gets (`target.ecr` in the configuration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepositorySettings {
    pub scan_on_push: bool,
    pub tag_mutability: TagMutability,
    pub encryption: EncryptionType,
    /// KMS key id, ARN or alias; `None`: the AWS-managed key.
    pub kms_key: Option<String>,
    /// Policy JSON texts; `None`: not managed by privateer.
    pub repository_policy: Option<String>,
    pub lifecycle_policy: Option<String>,
    pub tags: BTreeMap<String, String>,
}

impl RepositorySettings {
    pub fn from_config(ecr: &EcrConfig) -> Self {
        let non_empty = |s: &str| (!s.trim().is_empty()).then(|| s.to_owned());
        Self {
            scan_on_push: ecr.scan_on_push,
            tag_mutability: ecr.tag_mutability,
            encryption: ecr.encryption.kind,
            kms_key: non_empty(&ecr.encryption.kms_key),
            repository_policy: non_empty(&ecr.repository_policy),
            lifecycle_policy: non_empty(&ecr.lifecycle_policy),
            tags: ecr.tags.clone(),
        }
    }
}

/// What an existing repository has, as ECR reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedSettings {
    /// The repository's ARN, as ECR reports it (tags are set through it).
    pub arn: String,
    pub scan_on_push: bool,
    /// ECR's spelling: MUTABLE, IMMUTABLE, or an `_WITH_EXCLUSION` variant.
    pub tag_mutability: String,
    pub encryption: String,
    /// The key ARN ECR reports for KMS encryption.
    pub kms_key: Option<String>,
    pub repository_policy: Option<String>,
    pub lifecycle_policy: Option<String>,
    pub tags: BTreeMap<String, String>,
}

/// One setting that differs from the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drift {
    pub setting: Setting,
    pub want: String,
    pub have: String,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Setting {
    ScanOnPush,
    TagMutability,
    /// ECR cannot change encryption after creation: this drift is only ever reported.
    Encryption,
    RepositoryPolicy,
    LifecyclePolicy,
    Tag(String),
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ScanOnPush => f.write_str("scanOnPush"),
            Self::TagMutability => f.write_str("tagMutability"),
            Self::Encryption => f.write_str("encryption"),
            Self::RepositoryPolicy => f.write_str("repositoryPolicy"),
            Self::LifecyclePolicy => f.write_str("lifecyclePolicy"),
            Self::Tag(key) => write!(f, "tags.{key}"),
        }
    }
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: want {}, have {}",
            self.setting, self.want, self.have
        )
    }
}

impl Drift {
    /// Whether ECR can apply this setting to an existing repository.
    pub fn correctable(&self) -> bool {
        self.setting != Setting::Encryption
    }
}

/// Every configured setting the repository does not have. Policies compare as JSON values
/// (ECR reformats the text); unmanaged policies and extra tags are not drift.
pub fn drift(want: &RepositorySettings, have: &ObservedSettings) -> Vec<Drift> {
    let mut out = Vec::new();
    let mut differ = |setting, want: String, have: String| {
        out.push(Drift {
            setting,
            want,
            have,
        })
    };
    if want.scan_on_push != have.scan_on_push {
        differ(
            Setting::ScanOnPush,
            want.scan_on_push.to_string(),
            have.scan_on_push.to_string(),
        );
    }
    if want.tag_mutability.as_str() != have.tag_mutability {
        differ(
            Setting::TagMutability,
            want.tag_mutability.to_string(),
            have.tag_mutability.clone(),
        );
    }
    let key_differs = match (&want.kms_key, &have.kms_key) {
        // Only a full key ARN can be compared with what ECR reports; ids and aliases cannot.
        (Some(want), Some(have)) if want.starts_with("arn:") && want.contains(":key/") => {
            want != have
        }
        _ => false,
    };
    if want.encryption.as_str() != have.encryption || key_differs {
        let describe = |kind: &str, key: &Option<String>| match key {
            Some(key) => format!("{kind} ({key})"),
            None => kind.to_owned(),
        };
        differ(
            Setting::Encryption,
            describe(want.encryption.as_str(), &want.kms_key),
            describe(&have.encryption, &have.kms_key),
        );
    }
    for (setting, want, have) in [
        (
            Setting::RepositoryPolicy,
            &want.repository_policy,
            &have.repository_policy,
        ),
        (
            Setting::LifecyclePolicy,
            &want.lifecycle_policy,
            &have.lifecycle_policy,
        ),
    ] {
        if let Some(want) = want
            && !same_json(want, have.as_deref())
        {
            let have = have.clone().unwrap_or_else(|| "none".into());
            differ(setting, compact(want), compact(&have));
        }
    }
    for (key, value) in &want.tags {
        match have.tags.get(key) {
            Some(actual) if actual == value => {}
            actual => differ(
                Setting::Tag(key.clone()),
                value.clone(),
                actual.cloned().unwrap_or_else(|| "absent".into()),
            ),
        }
    }
    out
}

fn same_json(want: &str, have: Option<&str>) -> bool {
    let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).ok();
    match (parse(want), have.and_then(parse)) {
        (Some(want), Some(have)) => want == have,
        _ => false,
    }
}

/// A policy on one line, for a condition message.
fn compact(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want() -> RepositorySettings {
        RepositorySettings::from_config(&EcrConfig {
            repository_policy: r#"{"Version": "2012-10-17", "Statement": []}"#.into(),
            tags: [("team".to_owned(), "platform".to_owned())].into(),
            ..EcrConfig::default()
        })
    }

    fn matching() -> ObservedSettings {
        ObservedSettings {
            arn: "arn:aws:ecr:eu-west-1:123456789012:repository/r".into(),
            scan_on_push: true,
            tag_mutability: "IMMUTABLE".into(),
            encryption: "AES256".into(),
            kms_key: None,
            repository_policy: Some(r#"{"Statement":[],"Version":"2012-10-17"}"#.into()),
            lifecycle_policy: Some("{}".into()),
            tags: [
                ("team".to_owned(), "platform".to_owned()),
                ("extra".to_owned(), "x".to_owned()),
            ]
            .into(),
        }
    }

    #[test]
    fn equal_settings_and_reformatted_policies_are_not_drift() {
        assert_eq!(drift(&want(), &matching()), vec![]);
    }

    #[test]
    fn every_difference_is_named() {
        let have = ObservedSettings {
            scan_on_push: false,
            tag_mutability: "MUTABLE".into(),
            encryption: "KMS".into(),
            repository_policy: None,
            tags: [("team".to_owned(), "other".to_owned())].into(),
            ..matching()
        };
        let found: Vec<String> = drift(&want(), &have)
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(
            found,
            [
                "scanOnPush: want true, have false",
                "tagMutability: want IMMUTABLE, have MUTABLE",
                "encryption: want AES256, have KMS",
                r#"repositoryPolicy: want {"Statement":[],"Version":"2012-10-17"}, have none"#,
                "tags.team: want platform, have other",
            ]
        );
    }

    #[test]
    fn kms_keys_compare_only_as_arns() {
        let mut want = want();
        want.encryption = EncryptionType::Kms;
        want.kms_key = Some("alias/mirror".into());
        let mut have = matching();
        have.encryption = "KMS".into();
        have.kms_key = Some("arn:aws:kms:eu-west-1:123456789012:key/abc".into());
        assert_eq!(drift(&want, &have), vec![]);
        want.kms_key = Some("arn:aws:kms:eu-west-1:123456789012:key/other".into());
        let found = drift(&want, &have);
        assert_eq!(found.len(), 1);
        assert!(!found[0].correctable());
    }
}
