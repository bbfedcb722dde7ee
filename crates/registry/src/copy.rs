//! The copy itself: resolve, short-circuit when up to date, gather the manifests, move the
//! blobs in parallel, then write manifests children first and the named one last.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use futures::{StreamExt, TryStreamExt, stream};

use crate::attached::{self, verify_signed};
use crate::blob::{abandoned, copy_blob};
use crate::error::{CopyError, ErrorClass};
use crate::manifest::{Body, Descriptor, Manifest};
use crate::progress::{BlobOutcome, Event, Progress};
use crate::referrers::{self, Attached};
use crate::side::Side;
use crate::{CopyOptions, CopyReport, Image};

/// Copy `source` to `target`. The target's tag is its own, else the source's; a target with
/// neither (a digest-only source) is written under the anchor tag `privateer.sha256.<hex>` so
/// lifecycle rules for untagged images leave it alone. What is attached to the image
/// (`options.referrers`) follows it; with `options.verify` nothing is written unless a
/// signature of the source digest verifies. The whole copy ends within `timeouts.copy`.
pub async fn copy(
    source: &Image,
    target: &Image,
    options: &CopyOptions,
    progress: Arc<dyn Progress>,
) -> Result<CopyReport, CopyError> {
    let deadline = options.timeouts.copy;
    tokio::time::timeout(deadline, copy_within(source, target, options, progress))
        .await
        .unwrap_or_else(|_| {
            Err(CopyError::new(
                ErrorClass::Network,
                format!("copy {} to {}", source.reference, target.reference),
                format!(
                    "did not finish within {}s (timeouts.copy)",
                    deadline.as_secs()
                ),
            ))
        })
}

async fn copy_within(
    source: &Image,
    target: &Image,
    options: &CopyOptions,
    progress: Arc<dyn Progress>,
) -> Result<CopyReport, CopyError> {
    let started = Instant::now();
    let parallelism = options.parallelism.max(1);
    let src = Side::new(source, options, progress.clone())?;
    let dst = Side::new(target, options, progress.clone())?;
    progress.event(Event::Start {
        source: source.reference.to_string(),
        target: target.reference.to_string(),
    });

    let pinned = source.reference.digest().map(ToString::to_string);
    let platforms = if pinned.is_some() && !options.platforms.is_empty() {
        progress.event(Event::Warning {
            message: "the source is pinned by digest: copying the whole index, --platform ignored"
                .into(),
        });
        &[][..]
    } else {
        &options.platforms[..]
    };
    let destination_tag = target
        .reference
        .tag()
        .or_else(|| {
            target
                .reference
                .digest()
                .is_none()
                .then(|| source.reference.tag())?
        })
        .map(str::to_owned);

    // Up to date? Two lookups when the digest to write is known without pulling anything.
    let source_digest = match &pinned {
        Some(digest) => Some(digest.clone()),
        None if platforms.is_empty() => {
            let tag = source.reference.effective_tag().unwrap_or("latest");
            Some(src.manifest_digest(tag).await?.ok_or_else(|| {
                CopyError::new(
                    ErrorClass::NotFound,
                    format!("resolve {}", source.reference),
                    "no such manifest in the source registry",
                )
            })?)
        }
        None => None,
    };
    // What travels with the image is found, and its signature checked, before any write.
    // Both at once: an up-to-date copy costs one round trip more than before, not two.
    let mut along = Along::default();
    if let Some(digest) = &source_digest {
        let (looked, current) = futures::join!(
            along.look_at(&src, digest, options),
            up_to_date(&dst, target, destination_tag.as_deref(), digest)
        );
        looked?;
        if let Some(mut report) = current? {
            along
                .write(&mut report, &src, &dst, options, progress)
                .await?;
            return Ok(finish(report, digest, started));
        }
    }

    let top = match &source_digest {
        Some(digest) => src.pull_manifest(digest).await?,
        None => {
            src.pull_manifest(source.reference.effective_tag().unwrap_or("latest"))
                .await?
        }
    };
    let source_digest = top.digest.clone();
    if !along.looked {
        along.look_at(&src, &source_digest, options).await?;
    }
    let top = select_platforms(top, platforms, progress.as_ref())?;
    // What the target will call it: the sha256 of the bytes, also for a sha512 source.
    let written_digest = top.canonical_digest();
    if written_digest != top.digest {
        // A sha512 source: its artifacts name a digest the target does not address it by.
        along.leave_behind(
            &source_digest,
            progress.as_ref(),
            "the target addresses it by sha256",
        );
    } else if written_digest != source_digest {
        along.leave_behind(
            &source_digest,
            progress.as_ref(),
            "the platform filter wrote a new index",
        );
    }
    if written_digest != source_digest
        && let Some(mut report) =
            up_to_date(&dst, target, destination_tag.as_deref(), &written_digest).await?
    {
        along
            .write(&mut report, &src, &dst, options, progress)
            .await?;
        return Ok(finish(report, &source_digest, started));
    }
    if let Some(wanted) = target.reference.digest()
        && wanted.to_string() != written_digest
        && wanted.to_string() != top.digest
    {
        return Err(CopyError::new(
            ErrorClass::DigestMismatch,
            format!("copy to {}", target.reference),
            format!(
                "the destination names {wanted}, the source is {}",
                top.digest
            ),
        ));
    }
    progress.event(Event::Manifest {
        digest: top.digest.clone(),
        media_type: top.media_type.clone(),
        platform: None,
    });

    let children = pull_children(&src, &top, parallelism, progress.as_ref()).await?;
    if options.referrers && !children.is_empty() {
        let digests = children.iter().map(|c| c.digest.clone()).collect();
        let found = referrers::discover(&src, digests, parallelism).await?;
        along.attached.extend(found);
    }
    let mut seen = HashSet::new();
    let blobs: Vec<Descriptor> = children
        .iter()
        .chain(std::iter::once(&top))
        .flat_map(Manifest::blobs)
        .filter(|d| seen.insert(d.digest.clone()))
        .cloned()
        .collect();

    // A repository that does not exist yet has no blobs: skip asking for each (one request
    // per blob saved, the registry's main cost when layers are small).
    let bytes_total = declared_total(&blobs, dst.limits().total_bytes, &top.digest)?;
    let fresh_repository = !dst.repository_exists().await?;
    let mut report = report(target, destination_tag.as_deref(), &written_digest);
    report.media_type = top.media_type.clone();
    report.platforms = top.platforms();
    report.bytes_total = bytes_total;
    // Owned items, not references: the futures must be Send for any caller's lifetimes.
    let (src, dst) = (&src, &dst);
    // The first failure stops the others: uploads in flight are abandoned and their sessions
    // cancelled (a dropped future could not clean up after itself), none new are started.
    let (abort, aborted) = tokio::sync::watch::channel(false);
    let first_error: Mutex<Option<CopyError>> = Mutex::new(None);
    let (abort, first_error) = (&abort, &first_error);
    let results: Vec<Result<(BlobOutcome, u64), CopyError>> = stream::iter(blobs.iter().cloned())
        .map(|blob| {
            let progress = progress.clone();
            let aborted = aborted.clone();
            async move {
                if *aborted.borrow() {
                    return Err(abandoned(&blob.digest));
                }
                let result = copy_blob(
                    src,
                    dst,
                    &blob,
                    fresh_repository,
                    options,
                    progress,
                    &aborted,
                )
                .await;
                if let Err(e) = &result {
                    let mut first = first_error.lock().unwrap_or_else(PoisonError::into_inner);
                    if first.is_none() {
                        *first = Some(e.clone());
                        abort.send_replace(true);
                    }
                }
                result
            }
        })
        .buffer_unordered(parallelism)
        .collect()
        .await;
    if let Some(error) = first_error
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
    {
        return Err(error);
    }
    let outcomes = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    for (outcome, size) in outcomes {
        count(&mut report, outcome, size);
    }

    // Children by digest before the index that names them.
    stream::iter(children.iter().cloned())
        .map(|child| async move { dst.push_manifest(&child, &child.digest).await })
        .buffer_unordered(parallelism)
        .try_collect::<Vec<bool>>()
        .await?;
    let written_as = destination_tag
        .clone()
        .unwrap_or_else(|| anchor_tag(&written_digest));
    dst.push_manifest(&top, &written_as).await?;
    report.manifests = children.len() + 1;
    progress.event(Event::Pushed {
        reference: format!("{}:{written_as}", dst.name()),
        digest: written_digest.clone(),
    });
    match dst.manifest_digest(&written_as).await? {
        Some(digest) if digest == written_digest => {}
        other => {
            return Err(CopyError::new(
                ErrorClass::Invalid,
                format!("verify {}:{written_as}", dst.name()),
                format!(
                    "the target answers {} after writing {written_digest}",
                    other.as_deref().unwrap_or("no manifest")
                ),
            ));
        }
    }
    along
        .write(&mut report, src, dst, options, progress)
        .await?;
    Ok(finish(report, &source_digest, started))
}

/// What travels with the image (signatures, attestations, SBOMs): found and verified before
/// the copy writes anything, written after the image.
#[derive(Default)]
struct Along {
    looked: bool,
    attached: Vec<Attached>,
    omitted: usize,
    verified_by: Option<String>,
}

impl Along {
    /// Find what is attached to the source's top digest and, when asked, verify its signature.
    async fn look_at(
        &mut self,
        src: &Side,
        digest: &str,
        options: &CopyOptions,
    ) -> Result<(), CopyError> {
        self.looked = true;
        if !options.referrers && options.verify.is_none() {
            return Ok(());
        }
        self.attached =
            referrers::discover(src, vec![digest.to_owned()], options.parallelism).await?;
        if let Some(keys) = &options.verify {
            self.verified_by = Some(verify_signed(src, &self.attached, digest, keys).await?);
        }
        if !options.referrers {
            self.attached.clear();
        }
        Ok(())
    }

    /// The artifacts of `digest` cannot follow: the target will not hold that digest.
    fn leave_behind(&mut self, digest: &str, progress: &dyn Progress, why: &str) {
        let before = self.attached.len();
        // Everything found so far hangs off the top digest, directly or through an artifact.
        self.attached.clear();
        self.omitted = before;
        if before > 0 {
            progress.event(Event::Warning {
                message: format!(
                    "{before} artifact(s) attached to {digest} not copied: {why}, which they do \
                     not refer to (those of each platform's image still are)"
                ),
            });
        }
    }

    /// Write what came along and say so in the report.
    async fn write(
        &self,
        report: &mut CopyReport,
        src: &Side,
        dst: &Side,
        options: &CopyOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<(), CopyError> {
        report.referrers = self.attached.len();
        report.referrer_kinds = referrers::kinds(&self.attached);
        report.referrers_omitted = self.omitted;
        report.verified_by = self.verified_by.clone();
        if !self.attached.is_empty() {
            report.referrers_copied =
                attached::write(src, dst, &self.attached, options, progress).await?;
        }
        Ok(())
    }
}

/// The manifest digest `image` names now (one HEAD, or the digest it is pinned to), or `None`
/// when there is no such manifest. Ends within `timeouts.resolve`.
pub async fn resolve(image: &Image, options: &CopyOptions) -> Result<Option<String>, CopyError> {
    if let Some(digest) = image.reference.digest() {
        return Ok(Some(digest.to_string()));
    }
    let tag = image.reference.effective_tag().unwrap_or("latest");
    head_within_deadline(image, tag, options).await
}

/// What the registry holds where `image` points, by one HEAD even when it is pinned by
/// digest: the digest, or `None` when there is no such manifest. Ends within
/// `timeouts.resolve`. The controller's proof that a copy Job did what it reported.
pub async fn head(image: &Image, options: &CopyOptions) -> Result<Option<String>, CopyError> {
    let at = match image.reference.digest() {
        Some(digest) if image.reference.tag().is_none() => digest.to_string(),
        _ => image
            .reference
            .effective_tag()
            .unwrap_or("latest")
            .to_owned(),
    };
    head_within_deadline(image, &at, options).await
}

/// One HEAD of `image`'s repository at `at`, within `timeouts.resolve`.
async fn head_within_deadline(
    image: &Image,
    at: &str,
    options: &CopyOptions,
) -> Result<Option<String>, CopyError> {
    let side = Side::new(image, options, Arc::new(crate::Silent))?;
    let action = format!("resolve {}", image.reference);
    within_resolve_deadline(&side, options, &action, side.manifest_digest(at)).await
}

/// `work` on `side`, given up after `timeouts.resolve` as a network failure naming the host.
pub(crate) async fn within_resolve_deadline<T>(
    side: &Side,
    options: &CopyOptions,
    action: &str,
    work: impl std::future::Future<Output = Result<T, CopyError>>,
) -> Result<T, CopyError> {
    let deadline = options.timeouts.resolve;
    tokio::time::timeout(deadline, work)
        .await
        .unwrap_or_else(|_| {
            Err(CopyError::new(
                ErrorClass::Network,
                action,
                format!(
                    "{} did not answer within {}s (timeouts.resolve)",
                    side.host(),
                    deadline.as_secs()
                ),
            ))
        })
}

/// The tag that keeps a digest-only copy from being "untagged" (within the tag length limit).
fn anchor_tag(digest: &str) -> String {
    privateer_image::Digest::parse(digest)
        .map(|d| d.anchor_tag())
        .unwrap_or_else(|_| digest.replace(':', "-"))
}

/// The sum of the blob sizes, in checked arithmetic, within `limits.totalBytes`: checked
/// before any blob moves.
pub(crate) fn declared_total<'a>(
    blobs: impl IntoIterator<Item = &'a Descriptor>,
    limit: u64,
    digest: &str,
) -> Result<u64, CopyError> {
    let refuse = |total: String| {
        CopyError::new(
            ErrorClass::Invalid,
            format!("read manifest {digest}"),
            format!("its blobs declare {total} bytes, over the limit limits.totalBytes = {limit}"),
        )
    };
    let mut total: u64 = 0;
    for blob in blobs {
        total = total
            .checked_add(blob.size)
            .ok_or_else(|| refuse("more than 2^64".into()))?;
    }
    if total > limit {
        return Err(refuse(total.to_string()));
    }
    Ok(total)
}

/// Does the target hold `digest` where this copy would write it?
async fn up_to_date(
    dst: &Side,
    target: &Image,
    tag: Option<&str>,
    digest: &str,
) -> Result<Option<CopyReport>, CopyError> {
    let at = tag.map_or_else(|| anchor_tag(digest), str::to_owned);
    if dst.manifest_digest(&at).await?.as_deref() != Some(digest) {
        return Ok(None);
    }
    dst.progress().event(Event::UpToDate {
        digest: digest.to_owned(),
    });
    let mut report = report(target, tag, digest);
    report.up_to_date = true;
    Ok(Some(report))
}

/// Apply the platform filter to an index; a single image is copied as it is.
fn select_platforms(
    top: Manifest,
    platforms: &[crate::Platform],
    progress: &dyn Progress,
) -> Result<Manifest, CopyError> {
    if platforms.is_empty() {
        return Ok(top);
    }
    match &top.body {
        Body::Image { .. } => {
            progress.event(Event::Warning {
                message: "the source is a single image, not an index: copied as it is".into(),
            });
            Ok(top)
        }
        Body::Index { .. } => top.filtered_index(platforms).ok_or_else(|| {
            let offered = top.platforms();
            let wanted: Vec<String> = platforms.iter().map(ToString::to_string).collect();
            CopyError::new(
                ErrorClass::NotFound,
                format!("select platforms {}", wanted.join(", ")),
                format!(
                    "none of them is in the index, which has {}",
                    offered.join(", ")
                ),
            )
        }),
    }
}

/// The child manifests of an index, by digest (each verified against it).
async fn pull_children(
    src: &Side,
    top: &Manifest,
    parallelism: usize,
    progress: &dyn Progress,
) -> Result<Vec<Manifest>, CopyError> {
    let Body::Index { children } = &top.body else {
        return Ok(Vec::new());
    };
    // Registries store a manifest pushed by digest under its sha256: an index naming children
    // by another algorithm cannot be copied digest-exact. Refused before anything is written.
    if let Some(child) = children
        .iter()
        .find(|c| !c.descriptor.digest.starts_with("sha256:"))
    {
        return Err(CopyError::new(
            ErrorClass::Invalid,
            format!("copy index {}", top.digest),
            format!(
                "child {} is named by a digest other than sha256, which registries cannot store it under",
                child.descriptor.digest
            ),
        ));
    }
    let pulled: Vec<Manifest> = stream::iter(children.iter().cloned())
        .map(|child| async move {
            let manifest = src.pull_manifest(&child.descriptor.digest).await?;
            progress.event(Event::Manifest {
                digest: manifest.digest.clone(),
                media_type: manifest.media_type.clone(),
                platform: child.platform.as_ref().map(ToString::to_string),
            });
            Ok::<_, CopyError>(manifest)
        })
        .buffered(parallelism)
        .try_collect()
        .await?;
    if let Some(nested) = pulled.iter().find(|m| matches!(m.body, Body::Index { .. })) {
        // Depth is fixed at two (an index and its images): no nesting to bound further.
        return Err(CopyError::new(
            ErrorClass::Invalid,
            format!("copy index {}", top.digest),
            format!(
                "child {} is itself an index; nested indexes are not supported",
                nested.digest
            ),
        ));
    }
    Ok(pulled)
}

/// A report naming the target pinned by `digest`, before anything is counted.
fn report(target: &Image, tag: Option<&str>, digest: &str) -> CopyReport {
    let name = target.reference.name();
    CopyReport {
        target: match tag {
            Some(tag) => format!("{name}:{tag}@{digest}"),
            None => format!("{name}@{digest}"),
        },
        digest: digest.to_owned(),
        source_digest: String::new(),
        media_type: String::new(),
        platforms: Vec::new(),
        platforms_omitted: 0,
        up_to_date: false,
        bytes_copied: 0,
        bytes_total: 0,
        blobs_copied: 0,
        blobs_skipped: 0,
        blobs_mounted: 0,
        manifests: 0,
        referrers: 0,
        referrers_copied: 0,
        referrer_kinds: Vec::new(),
        referrers_omitted: 0,
        verified_by: None,
        seconds: 0.0,
    }
}

fn count(report: &mut CopyReport, outcome: BlobOutcome, size: u64) {
    match outcome {
        BlobOutcome::Copied => {
            report.blobs_copied += 1;
            report.bytes_copied += size;
        }
        BlobOutcome::Skipped => report.blobs_skipped += 1,
        BlobOutcome::Mounted => report.blobs_mounted += 1,
    }
}

fn finish(mut report: CopyReport, source_digest: &str, started: Instant) -> CopyReport {
    report.source_digest = source_digest.to_owned();
    report.seconds = started.elapsed().as_secs_f64();
    report
}
