//! Why a copy failed, classified the way a caller acts on it: retry later (transient) or wait
//! for someone to change something (permanent).

use serde::{Deserialize, Serialize};

/// What kind of failure, for exit codes, the termination message and the controller's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ErrorClass {
    /// The image, repository or blob does not exist.
    NotFound,
    /// The registry refused the credentials (401).
    Unauthorized,
    /// The credentials are valid but may not do this (403).
    Denied,
    /// Content does not match its digest.
    DigestMismatch,
    /// The registry answered something privateer cannot copy (bad manifest, unsupported type).
    Invalid,
    /// Too many requests (429).
    Throttled,
    /// The registry failed (5xx).
    Server,
    /// The registry could not be reached, or the connection broke.
    Network,
    /// Verification was asked for and the image has no signature to check.
    SignatureMissing,
    /// Verification was asked for and no signature verifies with the keys for this digest.
    SignatureInvalid,
}

impl ErrorClass {
    /// The camelCase name the termination message and metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "notFound",
            Self::Unauthorized => "unauthorized",
            Self::Denied => "denied",
            Self::DigestMismatch => "digestMismatch",
            Self::Invalid => "invalid",
            Self::Throttled => "throttled",
            Self::Server => "server",
            Self::Network => "network",
            Self::SignatureMissing => "signatureMissing",
            Self::SignatureInvalid => "signatureInvalid",
        }
    }

    /// Worth retrying: the same request may succeed later.
    pub fn is_transient(self) -> bool {
        matches!(self, Self::Throttled | Self::Server | Self::Network)
    }
}

/// A failed copy step: the class, what privateer was doing, and the registry's words.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{action}: {message}")]
pub struct CopyError {
    pub class: ErrorClass,
    /// What was being done (`pull manifest docker.io/library/nginx:1.27`).
    pub action: String,
    pub message: String,
    /// How long the registry asked to be left alone (`Retry-After` on a 429 or 503).
    pub retry_after: Option<std::time::Duration>,
}

impl CopyError {
    pub fn new(class: ErrorClass, action: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            class,
            action: action.into(),
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same error, with the wait the registry asked for.
    pub fn with_retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    pub fn is_transient(&self) -> bool {
        self.class.is_transient()
    }
}

/// HTTP status → class: 429 and 5xx are worth a retry, the rest are not.
pub fn class_of_status(code: u16) -> ErrorClass {
    match code {
        401 => ErrorClass::Unauthorized,
        403 => ErrorClass::Denied,
        404 => ErrorClass::NotFound,
        429 => ErrorClass::Throttled,
        500..=599 => ErrorClass::Server,
        _ => ErrorClass::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_for_retries() {
        assert!(class_of_status(503).is_transient());
        assert!(class_of_status(429).is_transient());
        assert_eq!(class_of_status(404), ErrorClass::NotFound);
        assert!(!class_of_status(401).is_transient());
        assert!(!class_of_status(403).is_transient());
        assert!(!class_of_status(400).is_transient());
    }
}
