//! How `privateer copy` shows its progress: bars on a terminal, JSON lines for Jobs and log
//! pipelines, short plain lines otherwise; and the result a Pod leaves in its termination
//! message for the controller.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use privateer_registry::{
    BlobOutcome, CopyError, CopyOutcome, CopyReport, ErrorClass, Event, Progress,
};

/// A copy that failed at a registry, not in its arguments.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CopyFailure(pub CopyError);

/// The exit status of a copy that failed with `error` (`privateer_api::names::exit`).
pub fn exit_status(error: &CopyError) -> u8 {
    use privateer_api::names::exit;
    if error.class == privateer_registry::ErrorClass::Throttled {
        exit::THROTTLED
    } else if error.is_transient() {
        exit::TRANSIENT
    } else {
        exit::PERMANENT
    }
}

pub fn renderer(json: bool) -> Arc<dyn Progress> {
    if json {
        Arc::new(JsonLines)
    } else if std::io::stderr().is_terminal() {
        Arc::new(Bars::default())
    } else {
        Arc::new(Plain)
    }
}

/// One JSON object per event on stderr.
struct JsonLines;

impl Progress for JsonLines {
    fn event(&self, event: Event) {
        if let Ok(line) = serde_json::to_string(&event) {
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        }
    }
}

/// A line per finished blob, retry and warning: readable in `kubectl logs`.
struct Plain;

impl Progress for Plain {
    fn event(&self, event: Event) {
        let line = match event {
            Event::Start { source, target } => format!("copying {source} to {target}"),
            Event::UpToDate { digest } => format!("up to date: the target holds {digest}"),
            Event::BlobDone {
                digest,
                size,
                outcome,
                seconds,
            } => format!(
                "{:<7} {digest} ({}) in {seconds:.2}s",
                outcome_word(outcome),
                human_bytes(size)
            ),
            Event::Pushed { reference, digest } => format!("pushed {reference} ({digest})"),
            Event::Retry {
                action,
                attempt,
                delay_ms,
                error,
            } => format!("retry {attempt} of {action} in {delay_ms} ms: {error}"),
            Event::Warning { message } => format!("warning: {message}"),
            Event::Verified { key, origin } => {
                format!("verified: signed with {key} ({origin})")
            }
            Event::Manifest { .. } | Event::BlobStart { .. } => return,
        };
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}

/// A progress bar per blob in flight.
#[derive(Default)]
struct Bars {
    bars: MultiProgress,
    blobs: Mutex<HashMap<String, ProgressBar>>,
}

impl Progress for Bars {
    fn event(&self, event: Event) {
        match event {
            Event::BlobStart { digest, size } => {
                let bar = self.bars.add(ProgressBar::new(size));
                if let Ok(style) = ProgressStyle::with_template(
                    "{msg:19} {bar:30} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12}",
                ) {
                    bar.set_style(style);
                }
                bar.set_message(short(&digest).to_owned());
                self.blobs
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(digest, bar);
            }
            Event::BlobDone {
                digest, outcome, ..
            } => {
                let bar = self
                    .blobs
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&digest);
                match bar {
                    Some(bar) => bar.finish_with_message(format!(
                        "{} {}",
                        short(&digest),
                        outcome_word(outcome)
                    )),
                    None => {
                        let _ = self.bars.println(format!(
                            "{} {}",
                            short(&digest),
                            outcome_word(outcome)
                        ));
                    }
                }
            }
            other => {
                self.bars.suspend(|| Plain.event(other));
            }
        }
    }

    fn bytes(&self, digest: &str, n: u64) {
        if let Some(bar) = self
            .blobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(digest)
        {
            bar.inc(n);
        }
    }
}

fn outcome_word(outcome: BlobOutcome) -> &'static str {
    match outcome {
        BlobOutcome::Copied => "copied",
        BlobOutcome::Skipped => "exists",
        BlobOutcome::Mounted => "mounted",
    }
}

/// `sha256:0123456789ab`.
fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

fn human_bytes(size: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = size as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The one-line JSON result the controller reads from the Pod status (`CopyOutcome`). An
/// error that is not the registry's (bad arguments) is `invalid`: retrying cannot fix it.
pub fn write_termination_log(path: &Path, results: &[anyhow::Result<CopyReport>]) {
    let outcomes: Vec<CopyOutcome> = results.iter().map(outcome).collect();
    let value = CopyOutcome::batch_message(&outcomes);
    if let Err(e) = std::fs::write(path, format!("{value}\n")) {
        eprintln!(
            "privateer: could not write the termination message {}: {e}",
            path.display()
        );
    }
}

/// What the controller reads back of one copy.
pub fn outcome(result: &anyhow::Result<CopyReport>) -> CopyOutcome {
    match result {
        Ok(report) => CopyOutcome::success(report.clone()),
        Err(error) => match error.downcast_ref::<CopyFailure>() {
            Some(CopyFailure(e)) => CopyOutcome::from_error(e),
            None => CopyOutcome::failure(ErrorClass::Invalid, &format!("{error:#}")),
        },
    }
}
