//! Why a copy failed, classified the way a caller acts on it: retry later (transient) or wait
//! for someone to change something (permanent).

use oci_client::errors::{OciDistributionError, OciErrorCode};
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
}

impl CopyError {
    pub fn new(class: ErrorClass, action: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            class,
            action: action.into(),
            message: message.into(),
        }
    }

    pub fn is_transient(&self) -> bool {
        self.class.is_transient()
    }

    /// Classify an `oci-client` error met while doing `action`.
    pub fn from_oci(action: impl Into<String>, error: OciDistributionError) -> Self {
        let (class, message) = classify(&error);
        Self::new(class, action, message)
    }
}

fn classify(error: &OciDistributionError) -> (ErrorClass, String) {
    use OciDistributionError as E;
    let text = error.to_string();
    match error {
        E::UnauthorizedError { .. } => (
            ErrorClass::Unauthorized,
            format!("401 unauthorized: the registry refused the credentials ({text})"),
        ),
        E::AuthenticationFailure(_) => (
            ErrorClass::Unauthorized,
            format!("authentication failed: {text}"),
        ),
        E::ImageManifestNotFoundError(_) => (ErrorClass::NotFound, text),
        E::DigestError(_) => (ErrorClass::DigestMismatch, text),
        E::ServerError { code, message, .. } => {
            // oci-client reports upload refusals as a status and the raw body: read the body's
            // error code when it is an OCI envelope.
            let envelope = serde_json::from_str::<oci_client::errors::OciEnvelope>(message).ok();
            let class = envelope
                .and_then(|e| e.errors.first().map(|e| class_of_code(&e.code)))
                .filter(|class| *class != ErrorClass::Invalid)
                .unwrap_or_else(|| class_of_status(*code));
            (class, text)
        }
        E::RegistryError { envelope, .. } => {
            let class = envelope
                .errors
                .iter()
                .map(|e| class_of_code(&e.code))
                .next()
                .unwrap_or(ErrorClass::Invalid);
            (class, text)
        }
        E::RequestError(e) => (class_of_request(e), describe_request_error(e)),
        E::IoError(_) => (ErrorClass::Network, text),
        _ => (ErrorClass::Invalid, text),
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

fn class_of_code(code: &OciErrorCode) -> ErrorClass {
    use OciErrorCode as C;
    match code {
        C::Unauthorized => ErrorClass::Unauthorized,
        C::Denied => ErrorClass::Denied,
        C::BlobUnknown | C::ManifestUnknown | C::NameUnknown | C::NotFound => ErrorClass::NotFound,
        C::DigestInvalid => ErrorClass::DigestMismatch,
        C::Toomanyrequests => ErrorClass::Throttled,
        _ => ErrorClass::Invalid,
    }
}

fn class_of_request(error: &reqwest::Error) -> ErrorClass {
    match error.status() {
        Some(status) => class_of_status(status.as_u16()),
        // Connect, timeout, a body cut short: the network or a peer that went away.
        None if error.is_builder() => ErrorClass::Invalid,
        None => ErrorClass::Network,
    }
}

/// reqwest's own text stops at "error sending request"; the cause is what a reader needs.
fn describe_request_error(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
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

    #[test]
    fn registry_envelopes_are_classified() {
        let envelope: oci_client::errors::OciEnvelope = serde_json::from_str(
            r#"{"errors":[{"code":"DIGEST_INVALID","message":"provided digest did not match"}]}"#,
        )
        .expect("envelope");
        let error = CopyError::from_oci(
            "push blob",
            OciDistributionError::RegistryError {
                envelope,
                url: "http://127.0.0.1/v2/x/blobs/uploads/1".into(),
            },
        );
        assert_eq!(error.class, ErrorClass::DigestMismatch);
        assert!(!error.is_transient());
    }
}
