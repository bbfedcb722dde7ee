//! Errors of the target providers, classified so callers know whether to retry.

use aws_sdk_ecr::error::{ProvideErrorMetadata, SdkError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The configuration cannot work (bad host, missing region, unreadable CA file …).
    #[error("target configuration: {0}")]
    Config(String),
    /// IAM (or the registry) refused: fix the policy; retrying will not help.
    #[error(
        "access denied: {action} on {resource}: {message} (grant {action} to privateer's role)"
    )]
    AccessDenied {
        action: String,
        resource: String,
        message: String,
    },
    /// ECR refused a value of ours (a policy text, a KMS key …); retrying will not help.
    #[error("{action} on {resource} refused: {code}: {message}")]
    Rejected {
        action: String,
        resource: String,
        code: String,
        message: String,
    },
    /// Throttled, 5xx, timeouts or network, still failing after the SDK's retries.
    #[error("{action} on {resource} failed, will retry: {message}")]
    Unavailable {
        action: String,
        resource: String,
        message: String,
    },
    /// No AWS credentials could be found or used.
    #[error("AWS credentials: {0}")]
    Credentials(String),
}

/// The chain found no credentials, and no provider of it failed for a passing reason. An
/// instance metadata service that timed out (a busy node) may answer the next time: that is
/// worth a retry, not a mirror failed for good.
fn no_credentials_for_good(chain_message: &str) -> bool {
    const PASSING: [&str; 3] = ["timed out", "timeout", "could not communicate"];
    let message = chain_message.to_ascii_lowercase();
    message.contains("no credentials found in chain")
        && !PASSING.iter().any(|p| message.contains(p))
}

impl TargetError {
    /// Worth retrying later without a change to the configuration or IAM.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// Classify an SDK error of `action` on `resource`.
    pub(crate) fn from_sdk<E, R>(action: &str, resource: &str, error: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug,
    {
        let action = action.to_owned();
        let resource = resource.to_owned();
        match &error {
            SdkError::ServiceError(service) => {
                let err = service.err();
                let code = err.code().unwrap_or("Unknown").to_owned();
                let message = err.message().unwrap_or("no message").to_owned();
                classify_code(action, resource, code, message)
            }
            SdkError::ConstructionFailure(_) => {
                Self::Config(format!("{action} on {resource}: {}", chain(&error)))
            }
            _ => {
                let message = chain(&error);
                // The SDK reports an empty credential chain as a dispatch failure; only its
                // text tells it apart from a network error.
                if no_credentials_for_good(&message) {
                    Self::Credentials(message)
                } else {
                    Self::Unavailable {
                        action,
                        resource,
                        message,
                    }
                }
            }
        }
    }
}

fn classify_code(action: String, resource: String, code: String, message: String) -> TargetError {
    match code.as_str() {
        "AccessDeniedException"
        | "AccessDenied"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "ExpiredTokenException" => TargetError::AccessDenied {
            action,
            resource,
            message: format!("{code}: {message}"),
        },
        "ThrottlingException"
        | "ServerException"
        | "ServiceUnavailableException"
        | "InternalFailure"
        | "RequestTimeout"
        | "LimitExceededException" => TargetError::Unavailable {
            action,
            resource,
            message: format!("{code}: {message}"),
        },
        _ => TargetError::Rejected {
            action,
            resource,
            code,
            message,
        },
    }
}

/// The error and its sources on one line: the SDK's top-level messages alone say little.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let next = inner.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_chain_is_for_good_unless_a_provider_timed_out() {
        let disabled = "dispatch failure: other: the credential provider was not enabled: no \
            credentials found in chain. Attempted:\n  Environment: the credential provider was \
            not enabled: environment variable not set\n  Ec2InstanceMetadata: the credential \
            provider was not enabled: metadata service disabled";
        assert!(no_credentials_for_good(disabled));
        let busy_node = "dispatch failure: other: the credential provider was not enabled: no \
            credentials found in chain. Attempted:\n  Ec2InstanceMetadata: the credential \
            provider was not enabled: could not communicate with IMDS: dispatch failure: \
            timeout: client error (Connect): HTTP connect timeout occurred after 1s: timed out";
        assert!(!no_credentials_for_good(busy_node));
        assert!(!no_credentials_for_good(
            "dispatch failure: io error: connection reset"
        ));
    }
}
