//! The one-line JSON a copy leaves behind: `privateer copy` writes it to the Pod's termination
//! message, the controller reads it back (and builds the same from an inline copy). One type
//! for both sides, so the format cannot drift.

use serde::{Deserialize, Serialize};

use crate::{CopyError, CopyReport, ErrorClass};

/// Kubernetes keeps at most this many bytes of a termination message.
pub const TERMINATION_MESSAGE_MAX_BYTES: usize = 4096;
/// A failure's message, cut to leave room for the other fields.
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
    /// The registry's `Retry-After` of a throttled copy, so the controller pauses the host for
    /// its other mirrors too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
}

impl CopyOutcome {
    pub fn success(report: CopyReport) -> Self {
        Self {
            result: "success".into(),
            report: Some(report),
            error_class: None,
            message: None,
            retry_after_seconds: None,
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
            retry_after_seconds: None,
        }
    }

    pub fn from_error(error: &CopyError) -> Self {
        Self {
            retry_after_seconds: error.retry_after.map(|wait| wait.as_secs().max(1)),
            ..Self::failure(error.class, &error.to_string())
        }
    }

    /// The outcome as one JSON line of at most 4096 bytes, whatever it holds, so the kubelet
    /// keeps it whole and it always parses.
    pub fn to_message(&self) -> String {
        self.to_message_within(TERMINATION_MESSAGE_MAX_BYTES)
    }

    /// The outcome as one JSON line of at most `max` bytes. Too long, it sheds the platform
    /// list first (the count of those left out is kept), then the end of the message, then
    /// the target reference and media type (the controller knows both from its plan).
    pub fn to_message_within(&self, max: usize) -> String {
        let mut outcome = self.clone();
        loop {
            let text = serde_json::to_string(&outcome).unwrap_or_default();
            if text.len() <= max {
                return text;
            }
            if let Some(report) = outcome.report.as_mut().filter(|r| !r.platforms.is_empty()) {
                let keep = report.platforms.len() / 2;
                report.platforms_omitted += report.platforms.len() - keep;
                report.platforms.truncate(keep);
                continue;
            }
            if let Some(message) = outcome.message.as_mut().filter(|m| !m.is_empty()) {
                let keep = message.chars().count() / 2;
                *message = message.chars().take(keep).collect();
                continue;
            }
            if let Some(report) = outcome
                .report
                .as_mut()
                .filter(|r| !r.target.is_empty() || !r.media_type.is_empty())
            {
                report.target.clear();
                report.media_type.clear();
                continue;
            }
            // Only bounded fields are left over the limit: give the class and nothing else.
            return serde_json::to_string(&Self {
                result: outcome.result,
                report: None,
                error_class: outcome.error_class.or(Some(ErrorClass::Invalid)),
                message: Some("the copy result did not fit a termination message".into()),
                retry_after_seconds: outcome.retry_after_seconds,
            })
            .unwrap_or_default();
        }
    }

    /// The outcomes of a batched copy (one per source/destination pair, in order) as one
    /// JSON array of at most 4096 bytes: each gets an equal share.
    pub fn batch_message(outcomes: &[Self]) -> String {
        if let [one] = outcomes {
            return one.to_message();
        }
        let separators = 2 + outcomes.len().saturating_sub(1);
        let share =
            TERMINATION_MESSAGE_MAX_BYTES.saturating_sub(separators) / outcomes.len().max(1);
        let parts: Vec<String> = outcomes
            .iter()
            .map(|o| o.to_message_within(share))
            .collect();
        format!("[{}]", parts.join(","))
    }

    /// The outcomes in a termination message: an array from a batched copy, or one object (a
    /// batch of one); `None` for anything else.
    pub fn parse_batch(message: &str) -> Option<Vec<Self>> {
        let message = message.trim();
        if message.starts_with('[') {
            return serde_json::from_str(message).ok();
        }
        Self::parse(message).map(|one| vec![one])
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

    #[test]
    fn termination_messages_fit_4096_bytes_and_parse() {
        let report = CopyReport {
            digest: format!("sha256:{}", "a".repeat(64)),
            platforms: (0..300)
                .map(|i| format!("linux/arch-number-{i}/v{i}"))
                .collect(),
            ..CopyReport::default()
        };
        let text = CopyOutcome::success(report).to_message();
        assert!(
            text.len() <= TERMINATION_MESSAGE_MAX_BYTES,
            "{}",
            text.len()
        );
        let read = CopyOutcome::parse(&text)
            .expect("parses")
            .report
            .expect("report");
        assert_eq!(read.platforms.len() + read.platforms_omitted, 300);
        assert!(!read.platforms.is_empty());

        let failure = CopyOutcome::failure(ErrorClass::Server, &"é".repeat(3000)).to_message();
        assert!(
            failure.len() <= TERMINATION_MESSAGE_MAX_BYTES,
            "{}",
            failure.len()
        );
        assert!(CopyOutcome::parse(&failure).is_some_and(|o| o.is_transient()));
    }

    #[test]
    fn a_batch_of_eight_fits_one_termination_message_and_reads_back_in_order() {
        let success = |i: usize| {
            CopyOutcome::success(CopyReport {
                target: format!(
                    "123456789012.dkr.ecr.eu-west-1.amazonaws.com/mirror/docker.io/library/app-{i}@sha256:{}",
                    "b".repeat(64)
                ),
                digest: format!("sha256:{}", "b".repeat(64)),
                source_digest: format!("sha256:{}", "c".repeat(64)),
                media_type: "application/vnd.docker.distribution.manifest.v2+json".into(),
                platforms: vec!["linux/amd64".into(), "linux/arm64".into()],
                bytes_total: 1 << 30,
                ..CopyReport::default()
            })
        };
        let mut outcomes: Vec<CopyOutcome> = (0..7).map(success).collect();
        outcomes.push(CopyOutcome::failure(
            ErrorClass::NotFound,
            &"gone ".repeat(500),
        ));
        let text = CopyOutcome::batch_message(&outcomes);
        assert!(
            text.len() <= TERMINATION_MESSAGE_MAX_BYTES,
            "{}",
            text.len()
        );
        let read = CopyOutcome::parse_batch(&text).expect("parses");
        assert_eq!(read.len(), 8);
        for (i, outcome) in read.iter().take(7).enumerate() {
            let report = outcome.report.as_ref().expect("report");
            assert!(outcome.succeeded(), "{i}");
            // What the controller needs is kept whole.
            assert_eq!(
                report.digest,
                outcomes[i].report.as_ref().expect("report").digest
            );
            assert_eq!(report.source_digest.len(), 71);
            assert_eq!(report.bytes_total, 1 << 30);
            assert_eq!(report.platforms.len() + report.platforms_omitted, 2);
        }
        assert_eq!(read[7].error_class, Some(ErrorClass::NotFound));
        // One object reads as a batch of one.
        let one = CopyOutcome::parse_batch(&outcomes[0].to_message()).expect("parses");
        assert_eq!(one, vec![outcomes[0].clone()]);
        assert!(CopyOutcome::parse_batch("Error: OOMKilled").is_none());
    }
}
