//! The one-line JSON a copy leaves behind: `privateer copy` writes it to the Pod's termination
//! message, the controller reads it back (and builds the same from an inline copy). One type
//! for both sides, so the format cannot drift.

use serde::{Deserialize, Serialize};

use crate::{CopyError, CopyReport, ErrorClass};

/// Kubernetes keeps at most 4096 bytes of a termination message; the rest is room for fields.
const MESSAGE_MAX_CHARS: usize = 3000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyOutcome {
    /// `success` or `failure`.
    pub result: String,
    /// What the copy did, when it did it.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub report: Option<CopyReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<ErrorClass>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl CopyOutcome {
    pub fn success(report: CopyReport) -> Self {
        Self {
            result: "success".into(),
            report: Some(report),
            error_class: None,
            message: None,
        }
    }

    /// The target already held `digest`: nothing to copy.
    pub fn up_to_date(digest: &str) -> Self {
        Self::success(CopyReport {
            digest: digest.to_owned(),
            source_digest: digest.to_owned(),
            up_to_date: true,
            ..CopyReport::default()
        })
    }

    /// A failure of `class`; the message is cut to fit a termination message.
    pub fn failure(class: ErrorClass, message: &str) -> Self {
        Self {
            result: "failure".into(),
            report: None,
            error_class: Some(class),
            message: Some(message.chars().take(MESSAGE_MAX_CHARS).collect()),
        }
    }

    pub fn from_error(error: &CopyError) -> Self {
        Self::failure(error.class, &error.to_string())
    }

    /// The outcome in a termination message; `None` for anything else (an OOM kill's text).
    pub fn parse(message: &str) -> Option<Self> {
        serde_json::from_str(message.trim()).ok()
    }

    pub fn succeeded(&self) -> bool {
        self.result == "success"
    }

    /// Worth another attempt: the registry or the network failed, not the request.
    pub fn is_transient(&self) -> bool {
        self.error_class.is_some_and(ErrorClass::is_transient)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_and_read_as_the_same_type() {
        let failure =
            CopyOutcome::from_error(&CopyError::new(ErrorClass::Network, "pull", "reset"));
        let text = serde_json::to_string(&failure).expect("serializes");
        assert_eq!(
            text,
            r#"{"result":"failure","errorClass":"network","message":"pull: reset"}"#
        );
        let read = CopyOutcome::parse(&text).expect("parses");
        assert_eq!(read, failure);
        assert!(read.is_transient() && !read.succeeded());

        let success = CopyOutcome::up_to_date("sha256:1");
        let read = CopyOutcome::parse(&serde_json::to_string(&success).expect("serializes"))
            .expect("parses");
        assert_eq!(read, success);
        assert!(read.succeeded() && read.report.is_some_and(|r| r.up_to_date));

        let not_found =
            CopyOutcome::parse(r#"{"result":"failure","errorClass":"notFound"}"#).expect("parses");
        assert!(!not_found.is_transient() && not_found.report.is_none());
        assert!(CopyOutcome::parse("Error: OOMKilled").is_none());
        let long = CopyOutcome::failure(ErrorClass::Invalid, &"x".repeat(5000));
        assert_eq!(long.message.map(|m| m.len()), Some(MESSAGE_MAX_CHARS));
    }
}
