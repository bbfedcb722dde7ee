use thiserror::Error;

/// Why a string is not an image reference Docker would accept.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReferenceError {
    #[error("empty image reference")]
    Empty,
    #[error("empty repository name")]
    EmptyName,
    #[error("invalid character {character:?} in image reference")]
    InvalidCharacter { character: char },
    #[error("a bare 64-character hex string is an image ID, not a repository name")]
    BareIdentifier,
    #[error("invalid registry host \"{domain}\": {reason}")]
    InvalidDomain {
        domain: String,
        reason: &'static str,
    },
    #[error("repository path \"{path}\" must be lowercase")]
    UppercasePath { path: String },
    #[error("invalid repository path component \"{component}\": {reason}")]
    InvalidPathComponent {
        component: String,
        reason: &'static str,
    },
    #[error("invalid tag \"{tag}\": {reason}")]
    InvalidTag { tag: String, reason: &'static str },
    #[error("invalid digest \"{digest}\": {reason}")]
    InvalidDigest { digest: String, reason: String },
    #[error("repository name is {len} characters, the limit is 255")]
    NameTooLong { len: usize },
}

/// Why a target could not be named.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TargetError {
    #[error("invalid target registry \"{registry}\": {source}")]
    InvalidRegistry {
        registry: String,
        source: ReferenceError,
    },
    #[error(
        "invalid prefix \"{prefix}\": components of lowercase letters and digits, \
         separated by single '.', '_' or '-', joined by '/'"
    )]
    InvalidPrefix { prefix: String },
    #[error("no valid target name for \"{source_ref}\": {reason}")]
    Unrepresentable {
        source_ref: String,
        reason: ReferenceError,
    },
    #[error("prefix \"{prefix}\" leaves no room for a repository name under \"{registry}\"")]
    PrefixTooLong { prefix: String, registry: String },
}
