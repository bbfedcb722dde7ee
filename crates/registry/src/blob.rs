//! One blob into the target: skipped when there, mounted from another repository, or
//! streamed from the source with its digest checked on the way.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use futures::{StreamExt, stream};

use crate::CopyOptions;
use crate::error::{CopyError, ErrorClass};
use crate::manifest::Descriptor;
use crate::progress::{BlobOutcome, Event, Progress};
use crate::side::{Side, with_fresh_logins};

/// Get one blob into the target: present already, mounted, or streamed.
pub(crate) async fn copy_blob(
    src: &Side,
    dst: &Side,
    blob: &Descriptor,
    fresh_repository: bool,
    options: &CopyOptions,
    progress: Arc<dyn Progress>,
    aborted: &tokio::sync::watch::Receiver<bool>,
) -> Result<(BlobOutcome, u64), CopyError> {
    let started = Instant::now();
    let done = |outcome| {
        progress.event(Event::BlobDone {
            digest: blob.digest.clone(),
            size: blob.size,
            outcome,
            seconds: started.elapsed().as_secs_f64(),
        });
        Ok((outcome, blob.size))
    };
    if !fresh_repository && dst.blob_exists(&blob.digest).await? {
        return done(BlobOutcome::Skipped);
    }
    let same_registry = src.host() == dst.host() && src.repository() != dst.repository();
    let mount_sources = same_registry
        .then(|| src.repository())
        .into_iter()
        .chain(options.mount_from.iter().map(String::as_str));
    for repository in mount_sources {
        if dst.mount(&blob.digest, repository).await? {
            return done(BlobOutcome::Mounted);
        }
    }
    progress.event(Event::BlobStart {
        digest: blob.digest.clone(),
        size: blob.size,
    });
    with_fresh_logins(&[src, dst], &options.retry, progress.as_ref(), || {
        stream_blob(src, dst, blob, progress.clone(), aborted)
    })
    .await?;
    done(BlobOutcome::Copied)
}

/// Stream one blob from source to target in one upload; the digest is checked on the way.
async fn stream_blob(
    src: &Side,
    dst: &Side,
    blob: &Descriptor,
    progress: Arc<dyn Progress>,
    aborted: &tokio::sync::watch::Receiver<bool>,
) -> Result<(), CopyError> {
    let body = hold_last_chunk(src.pull_blob_once(blob).await?);
    // The upload sees only "the body failed"; remember why the source stream broke.
    let broken: Arc<Mutex<Option<CopyError>>> = Arc::default();
    let witness = broken.clone();
    let digest = blob.digest.clone();
    let source = src.name().to_owned();
    let counted = body.inspect(move |chunk| match chunk {
        Ok(bytes) => progress.bytes(&digest, bytes.len() as u64),
        Err(e) => {
            let error = stream_error(&digest, &source, e);
            *witness.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
        }
    });
    let pushed = dst
        .push_blob_once(&blob.digest, blob.size, counted, aborted.clone())
        .await;
    let broken = broken.lock().unwrap_or_else(PoisonError::into_inner).take();
    match (broken, pushed) {
        (Some(source_error), _) => Err(source_error),
        (None, result) => result,
    }
}

/// Yield each chunk only once the next one (or the end) has been read. The source stream checks
/// the digest when it ends; holding the last chunk back until then means a mismatch aborts the
/// upload before the target has the whole body, instead of after.
fn hold_last_chunk(
    body: futures::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    stream::unfold(
        (body.fuse(), None::<bytes::Bytes>),
        |(mut body, mut held)| async move {
            loop {
                match body.next().await {
                    Some(Ok(chunk)) => {
                        if let Some(previous) = held.replace(chunk) {
                            return Some((Ok(previous), (body, held)));
                        }
                    }
                    Some(Err(e)) => return Some((Err(e), (body, None))),
                    None => return held.take().map(|last| (Ok(last), (body, None))),
                }
            }
        },
    )
}

/// A blob given up on because another one failed.
pub(crate) fn abandoned(digest: &str) -> CopyError {
    CopyError::new(
        ErrorClass::Network,
        format!("copy blob {digest}"),
        "abandoned: another blob of the copy failed",
    )
}

/// Why the source stream broke: the classified error it carried, or a network fault.
pub(crate) fn stream_error(digest: &str, source: &str, error: &std::io::Error) -> CopyError {
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<CopyError>())
    {
        Some(carried) => carried.clone(),
        None => CopyError::new(
            ErrorClass::Network,
            format!("pull blob {digest} from {source}"),
            error.to_string(),
        ),
    }
}
