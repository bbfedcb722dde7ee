//! The one-line JSON a copy leaves behind: `privateer copy` writes it to the Pod's termination
//! message, the controller reads it back (and builds the same from an inline copy). One type
//! for both sides, so the format cannot drift.

use serde::{Deserialize, Serialize};

use crate::{CopyError, CopyReport, ErrorClass};

/// Kubernetes keeps at most this many bytes of a termination message.
pub const TERMINATION_MESSAGE_MAX_BYTES: usize = 4096;
/// A failure's message, cut to leave room for the other fields.
const MESSAGE_MAX_CHARS: usize = 3000;
/// The most a success takes once shed to its digests (two sha256 digests and the result).
pub const SUCCESS_MIN_BYTES: usize = 240;
/// The most outcomes one termination message carries with every success whole enough to
/// read back (`copy.job.batchSize` is bounded by it).
pub const BATCH_MAX: usize = (TERMINATION_MESSAGE_MAX_BYTES - 1) / (SUCCESS_MIN_BYTES + 1);
/// Report fields the controller does not read back from a termination message.
const UNREAD: &[&str] = &[
    "target",
    "mediaType",
    "bytesCopied",
    "blobsCopied",
    "blobsSkipped",
    "blobsMounted",
    "manifests",
];

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

    /// The outcome as one JSON line of at most `max` bytes. Too long, it sheds first what the
    /// controller does not read back (the target reference and media type, which it knows from
    /// its plan; the blob and byte counts of the copy itself; a source digest equal to the
    /// written one), then halves the platform list (the count of those left out is kept), then
    /// the message. A success always stays a success with its digests: that takes at most
    /// `SUCCESS_MIN_BYTES`.
    pub fn to_message_within(&self, max: usize) -> String {
        let mut outcome = self.clone();
        let mut shed_unread = false;
        loop {
            let text = outcome.to_json(shed_unread);
            if text.len() <= max {
                return text;
            }
            if outcome.report.is_some() && !shed_unread {
                shed_unread = true;
                continue;
            }
            if let Some(report) = outcome.report.as_mut().filter(|r| !r.platforms.is_empty()) {
                let keep = report.platforms.len() / 2;
                report.platforms_omitted = report
                    .platforms_omitted
                    .saturating_add(report.platforms.len() - keep);
                report.platforms.truncate(keep);
                continue;
            }
            if let Some(message) = outcome.message.as_mut().filter(|m| !m.is_empty()) {
                let keep = message.chars().count() / 2;
                *message = message.chars().take(keep).collect();
                continue;
            }
            // Only bounded fields are left over the limit.
            let last = match outcome.report {
                Some(report) => Self::success(CopyReport {
                    digest: report.digest,
                    source_digest: report.source_digest,
                    platforms_omitted: report.platforms_omitted,
                    ..CopyReport::default()
                }),
                None => Self {
                    result: outcome.result,
                    report: None,
                    error_class: outcome.error_class.or(Some(ErrorClass::Invalid)),
                    message: Some("the copy result did not fit a termination message".into()),
                    retry_after_seconds: outcome.retry_after_seconds,
                },
            };
            return last.to_json(true);
        }
    }

    /// One JSON line; `shed_unread` leaves out the report's fields the controller does not read
    /// back, and defaults (`parse` restores them).
    fn to_json(&self, shed_unread: bool) -> String {
        let Ok(mut value) = serde_json::to_value(self) else {
            return String::new();
        };
        if shed_unread && let Some(fields) = value.as_object_mut() {
            let same_digest = fields.get("sourceDigest") == fields.get("digest");
            for unread in UNREAD {
                fields.remove(*unread);
            }
            if same_digest {
                fields.remove("sourceDigest");
            }
            fields.retain(|_, v| {
                !(v == &serde_json::Value::Bool(false)
                    || v.as_f64() == Some(0.0)
                    || v.as_array().is_some_and(Vec::is_empty))
            });
        }
        value.to_string()
    }

    /// The outcomes of a batched copy (one per source/destination pair, in order) as one
    /// JSON array of at most 4096 bytes: each gets an equal share, at least
    /// `SUCCESS_MIN_BYTES` for up to `BATCH_MAX` of them.
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
            let outcomes: Vec<Self> = serde_json::from_str(message).ok()?;
            return Some(outcomes.into_iter().map(Self::restored).collect());
        }
        Self::parse(message).map(|one| vec![one])
    }

    /// The outcome in a termination message; `None` for anything else (an OOM kill's text).
    pub fn parse(message: &str) -> Option<Self> {
        serde_json::from_str(message.trim())
            .ok()
            .map(Self::restored)
    }

    /// A source digest left out because it equalled the written one is that one.
    fn restored(mut self) -> Self {
        if let Some(report) = self.report.as_mut().filter(|r| r.source_digest.is_empty()) {
            report.source_digest.clone_from(&report.digest);
        }
        self
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

    fn success(i: usize, source: char) -> CopyOutcome {
        CopyOutcome::success(CopyReport {
            target: format!(
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com/mirror/docker.io/library/app-{i}@sha256:{}",
                "b".repeat(64)
            ),
            digest: format!("sha256:{}", "b".repeat(64)),
            source_digest: format!("sha256:{}", source.to_string().repeat(64)),
            media_type: "application/vnd.docker.distribution.manifest.v2+json".into(),
            platforms: vec!["linux/amd64".into(), "linux/arm64".into()],
            bytes_copied: 1 << 29,
            bytes_total: 1 << 30,
            blobs_copied: 7,
            manifests: 3,
            referrers: 2,
            referrer_kinds: vec!["signature".into(), "sbom".into()],
            verified_by: Some("cosign-release-key".into()),
            seconds: 12.5,
            ..CopyReport::default()
        })
    }

    #[test]
    fn a_full_batch_fits_one_termination_message_and_reads_back_in_order() {
        // The largest batch `copy.job.batchSize` allows, every success with a filtered index
        // (two digests) and all it can carry, and a failure with a long message.
        let mut outcomes: Vec<CopyOutcome> = (0..BATCH_MAX - 1).map(|i| success(i, 'c')).collect();
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
        assert_eq!(read.len(), BATCH_MAX);
        for (i, outcome) in read.iter().take(BATCH_MAX - 1).enumerate() {
            let report = outcome.report.as_ref().expect("report");
            assert!(outcome.succeeded(), "{i}");
            // What the controller needs is kept whole.
            assert_eq!(
                report.digest,
                outcomes[i].report.as_ref().expect("report").digest
            );
            assert_eq!(report.source_digest, format!("sha256:{}", "c".repeat(64)));
            assert_eq!(report.platforms.len() + report.platforms_omitted, 2);
        }
        assert_eq!(read[BATCH_MAX - 1].error_class, Some(ErrorClass::NotFound));
        assert!(read[BATCH_MAX - 1].report.is_none());
        // One object reads as a batch of one.
        let one = CopyOutcome::parse_batch(&outcomes[0].to_message()).expect("parses");
        assert_eq!(one, vec![outcomes[0].clone()]);
        assert!(CopyOutcome::parse_batch("Error: OOMKilled").is_none());
    }

    #[test]
    fn a_success_sheds_what_the_controller_does_not_read_first_and_stays_a_success() {
        let whole = success(1, 'b');
        // Unread fields and the source digest equal to the written one go first.
        let shed = whole.to_message_within(400);
        assert!(shed.len() <= 400, "{shed}");
        for unread in [
            "target",
            "mediaType",
            "bytesCopied",
            "sourceDigest",
            "manifests",
        ] {
            assert!(!shed.contains(unread), "{unread} in {shed}");
        }
        let read = CopyOutcome::parse(&shed).expect("parses");
        let report = read.report.expect("report");
        assert_eq!(report.source_digest, report.digest);
        assert_eq!(report.bytes_total, 1 << 30);
        assert_eq!(report.verified_by.as_deref(), Some("cosign-release-key"));
        assert_eq!(report.platforms.len(), 2);

        // At the smallest share, a success is still a success with both digests.
        let least = success(1, 'c').to_message_within(SUCCESS_MIN_BYTES);
        assert!(least.len() <= SUCCESS_MIN_BYTES, "{}", least.len());
        let read = CopyOutcome::parse(&least).expect("parses");
        assert!(read.succeeded());
        let report = read.report.expect("report");
        assert_eq!(report.source_digest, format!("sha256:{}", "c".repeat(64)));
        assert_eq!(report.platforms_omitted, 2);
        // The bound holds for the largest count of platforms left out.
        let most = CopyOutcome::success(CopyReport {
            platforms_omitted: usize::MAX,
            ..success(1, 'c').report.expect("report")
        });
        assert!(most.to_message_within(SUCCESS_MIN_BYTES).len() <= SUCCESS_MIN_BYTES);
    }
}
