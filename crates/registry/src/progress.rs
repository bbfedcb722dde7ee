//! What the copier tells its caller while it works. The binary renders these as progress bars
//! on a terminal or as one JSON line each (`--json`); the controller logs them.

use serde::Serialize;

/// How a blob reached the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum BlobOutcome {
    /// Streamed from the source.
    Copied,
    /// The target already had it.
    Skipped,
    /// Mounted from another repository of the target registry.
    Mounted,
}

/// One step of a copy.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum Event {
    #[serde(rename_all = "camelCase")]
    Start { source: String, target: String },
    /// The target already holds the source digest under the destination tag.
    #[serde(rename_all = "camelCase")]
    UpToDate { digest: String },
    /// A manifest to copy (the top one and, for an index, each child kept).
    #[serde(rename_all = "camelCase")]
    Manifest {
        digest: String,
        media_type: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        platform: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    BlobStart { digest: String, size: u64 },
    #[serde(rename_all = "camelCase")]
    BlobDone {
        digest: String,
        size: u64,
        outcome: BlobOutcome,
        seconds: f64,
    },
    /// A manifest written to the target.
    #[serde(rename_all = "camelCase")]
    Pushed { reference: String, digest: String },
    /// A transient failure, retried after `delay_ms`.
    #[serde(rename_all = "camelCase")]
    Retry {
        action: String,
        attempt: u32,
        delay_ms: u64,
        error: String,
    },
    /// A signature of the source digest verified with `key` (found at `origin`).
    #[serde(rename_all = "camelCase")]
    Verified { key: String, origin: String },
    #[serde(rename_all = "camelCase")]
    Warning { message: String },
}

/// Receives a copy's events. Implementations must be cheap: `bytes` runs once per chunk.
pub trait Progress: Send + Sync {
    fn event(&self, event: Event);

    /// `n` more bytes of blob `digest` went through.
    fn bytes(&self, _digest: &str, _n: u64) {}
}

/// Progress nobody watches.
pub struct Silent;

impl Progress for Silent {
    fn event(&self, _event: Event) {}
}
