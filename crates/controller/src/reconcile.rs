//! The ImageMirror reconciler: plan, `stage` (look at all?), observe the source digest and the
//! target facts, `decide` (pure), act — ensure the repository, copy (a Job or inline), status.
//! Each step is idempotent; the status on the object is the memory (attempts, next retry), so
//! a restarted controller picks up where the last one stopped.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kube::ResourceExt;
use kube::runtime::controller::Action;
use privateer_api::ImageMirror;
use privateer_api::config::CopyExecutor;
use privateer_ecr::{
    Answer, ImageId, RegistryAccess, RepositoryFacts, TargetError, TargetProvider,
};
use privateer_registry::{CopyOutcome, Credentials, Endpoint, ErrorClass, Image};

use crate::copy_jobs::{JobKeys, JobState, copy_job_state, run_copy_job, start_copy_job};
use crate::decide::{Observed, Resolved, Step, decide, moved_upstream};
use crate::metrics::Metrics;
use crate::plan::{Plan, backoff, plan};
use crate::rate_limit::{self, Turn};
use crate::stage::{Stage, stage};
use crate::status::{Mirrored, Outcome, apply_status, tag_moved, write_status};
use crate::target_check::{self, Found};
use crate::verify::{self, Refusal};
use crate::{Context, Error};

/// How soon a pass deferred for a cache behind its write looks again.
const CACHE_BEHIND_RETRY: Duration = Duration::from_secs(1);

#[tracing::instrument(skip_all, fields(mirror = %mirror.name_any()))]
pub async fn reconcile(mirror: Arc<ImageMirror>, ctx: Arc<Context>) -> Result<Action, Error> {
    if let Some(action) = crate::finalize::finalize(&ctx, &mirror).await? {
        return Ok(action);
    }
    // The cache has not caught up with this controller's last status write: acting on the
    // older object would repeat what that write moved past. The write's watch event wakes
    // the mirror again; the requeue is in case it was already taken.
    if ctx.written.behind(&mirror, std::time::Instant::now()) {
        tracing::debug!(mirror = %mirror.name_any(), "the cache is behind the last status write");
        return Ok(Action::requeue(CACHE_BEHIND_RETRY));
    }
    let plan = match plan(&mirror, &ctx.naming, &ctx.config.copy.platforms) {
        Ok(plan) => plan,
        Err(invalid) => {
            write_status(&ctx, &mirror, Outcome::Invalid(invalid.0)).await?;
            return Ok(Action::await_change());
        }
    };
    let refresh = ctx.refresh_interval(&mirror);
    let target_check = ctx.target_check_interval();
    let staged = stage(
        &mirror,
        ctx.config.copy.executor,
        refresh,
        target_check,
        SystemTime::now(),
    );
    // Found gone from the target before a gate release: copied again whatever the stage said.
    let recopy = ctx.recopy.take(&mirror.name_any());
    let staged = match staged {
        Stage::Wait(_) | Stage::AwaitChange | Stage::CheckTarget if recopy => Stage::Run,
        staged => staged,
    };
    match staged {
        Stage::Wait(wait) => Ok(Action::requeue(wait)),
        Stage::AwaitChange => Ok(Action::await_change()),
        Stage::WatchJob { digest } => {
            // No Job although the mirror awaits one: it went (its TTL, a person). The cache is
            // not behind this controller's own writes (checked above), so the Job's end was
            // not already read and acted on.
            let state = match copy_job_state(&ctx, &mirror, &digest).await? {
                Some(state) => state,
                None => start_copy_job(&ctx, &mirror, &plan, &digest, JobKeys::Unread).await?,
            };
            match state {
                JobState::Running(_) => Ok(Action::requeue(Duration::from_secs(60))),
                JobState::Done(result) => finish_copy(&ctx, &mirror, &plan, &digest, *result).await,
            }
        }
        Stage::CheckTarget => match target_check::check(&ctx, &mirror, &plan).await {
            // The status change wakes this mirror again; the stage then says when next.
            Found::Present => Ok(Action::requeue(target_check.unwrap_or_default())),
            Found::Later(wait) => Ok(Action::requeue(wait)),
            Found::Missing => pipeline(&ctx, &mirror, &plan).await,
        },
        Stage::Run => pipeline(&ctx, &mirror, &plan).await,
    }
}

/// Observe, decide, act: the whole way.
async fn pipeline(ctx: &Context, mirror: &ImageMirror, plan: &Plan) -> Result<Action, Error> {
    // The budget is asked before the credentials Secret is read: a waiting mirror costs no I/O.
    let source = source_endpoint(ctx, plan)?;
    let domain = plan.source.domain();
    if let Turn::Wait(wait) = ctx
        .source_budgets
        .take(domain, source.host(), &mirror.name_any())
    {
        return rate_limit::wait_for_turn(ctx, mirror, domain, wait).await;
    }
    let source = with_credentials(ctx, mirror, plan, source).await?;
    let observed = observe(ctx, mirror, plan, &source).await?;
    let step = decide(mirror, plan, &observed);
    act(ctx, mirror, plan, &source, step).await
}

/// What `decide` needs: the source digest now, and the target facts the decision turns on
/// (asked only when they matter, as each is an API call).
async fn observe(
    ctx: &Context,
    mirror: &ImageMirror,
    plan: &Plan,
    source: &Image,
) -> Result<Observed, Error> {
    let resolved = match privateer_registry::resolve(source, &ctx.copy_options).await {
        Ok(Some(digest)) => Resolved::Found(digest),
        Ok(None) => Resolved::Missing,
        Err(e) => {
            if e.class == ErrorClass::Throttled {
                rate_limit::throttled(ctx, source, None);
            }
            Resolved::Unreachable {
                transient: e.is_transient(),
                message: e.to_string(),
            }
        }
    };
    let mut observed = Observed {
        source: resolved,
        tag_immutable: None,
        target_digest: None,
    };
    let Resolved::Found(digest) = &observed.source else {
        return Ok(observed);
    };
    let repository = plan.target.path();
    if moved_upstream(mirror, digest) {
        observed.tag_immutable = match ctx.provider.repository_facts(repository).await {
            Answer::Known(RepositoryFacts::Present { tag_immutable, .. }) => Some(tag_immutable),
            _ => None,
        };
    }
    // An inline copy asks the target itself before writing anything: for a mirror never
    // copied (most likely absent from the target) that one look is enough. A refresh still
    // asks here, so an image up to date costs no copy slot and no look at its signatures.
    let inline_first_copy = ctx.config.copy.executor == CopyExecutor::Inline
        && mirror
            .status
            .as_ref()
            .is_none_or(|s| s.source_digest.is_none());
    if plan.platforms.is_empty() && observed.tag_immutable != Some(true) && !inline_first_copy {
        let at = match plan.target.effective_tag() {
            Some(tag) => ImageId::Tag(tag.to_owned()),
            None => ImageId::Digest(digest.clone()),
        };
        // A failed lookup is not fatal: the copy finds out itself, cheaply.
        observed.target_digest = ctx
            .provider
            .manifest_digest(repository, &at)
            .await
            .ok()
            .flatten();
    }
    Ok(observed)
}

/// Carries out one step; the status written and the requeue come from the same outcome.
async fn act(
    ctx: &Context,
    mirror: &ImageMirror,
    plan: &Plan,
    source: &Image,
    step: Step,
) -> Result<Action, Error> {
    match step {
        Step::SourceNotFound => {
            let outcome = Outcome::Permanent {
                reason: "SourceNotFound".into(),
                message: format!("{} does not exist in its registry", plan.source),
            };
            write_status(ctx, mirror, outcome).await?;
            Ok(Action::await_change())
        }
        Step::SourceUnavailable { transient, message } => {
            fail(ctx, mirror, transient, "SourceUnavailable", message).await
        }
        Step::KeepOldDigest { digest, message } => {
            let status = mirror.status.clone().unwrap_or_default();
            apply_status(ctx, mirror, tag_moved(mirror, &status, &digest, &message)).await?;
            Ok(requeue_for_refresh(ctx, mirror))
        }
        Step::UpToDate { digest } => {
            let verified = match verify::check(ctx, plan, source, &digest).await {
                Ok(verified) => verified,
                Err(refusal) => return refuse(ctx, mirror, refusal).await,
            };
            let mut mirrored = ready(plan, &digest, CopyOutcome::up_to_date(&digest));
            mirrored.verified_by = verified.map(|v| v.key);
            write_status(ctx, mirror, Outcome::Ready(mirrored)).await?;
            Ok(requeue_for_refresh(ctx, mirror))
        }
        Step::Copy { digest } => {
            // A source a `sources.verify` rule covers is checked before anything is written.
            let keys = match verify::check(ctx, plan, source, &digest).await {
                Ok(verified) => verified.map(|v| v.keys),
                Err(refusal) => return refuse(ctx, mirror, refusal).await,
            };
            copy(ctx, mirror, plan, source, &digest, keys).await
        }
    }
}

/// A source that failed `sources.verify`: Failed without a copy (the gate releaser then
/// restores the Pods' original images), or retried when the check could not be made.
async fn refuse(ctx: &Context, mirror: &ImageMirror, refusal: Refusal) -> Result<Action, Error> {
    match refusal {
        Refusal::Refused { reason, message } => {
            write_status(ctx, mirror, Outcome::Permanent { reason, message }).await?;
            Ok(Action::await_change())
        }
        Refusal::Unavailable(message) => {
            fail(ctx, mirror, true, "VerifyUnavailable", message).await
        }
    }
}

/// Ensure the repository, then copy inline or through the copy Job.
async fn copy(
    ctx: &Context,
    mirror: &ImageMirror,
    plan: &Plan,
    source: &Image,
    digest: &str,
    keys: Option<verify::Keys>,
) -> Result<Action, Error> {
    let ensured = match ctx.provider.ensure_repository(plan.target.path()).await {
        Ok(ensured) => ensured,
        Err(e) => return fail(ctx, mirror, e.is_transient(), "RepositoryFailed", e).await,
    };
    if ctx.config.copy.executor == CopyExecutor::Inline {
        return copy_inline(ctx, mirror, plan, source, digest, keys).await;
    }
    match run_copy_job(ctx, mirror, plan, digest, JobKeys::Read(keys.as_ref())).await? {
        JobState::Running(job) => {
            let outcome = Outcome::Mirroring {
                job,
                digest: digest.to_owned(),
                drift: ensured.drift.iter().map(ToString::to_string).collect(),
            };
            write_status(ctx, mirror, outcome).await?;
            Ok(Action::requeue(Duration::from_secs(60)))
        }
        JobState::Done(result) => finish_copy(ctx, mirror, plan, digest, *result).await,
    }
}

/// A copy Job ended: Ready with what it wrote, or a failure classified by its result.
async fn finish_copy(
    ctx: &Context,
    mirror: &ImageMirror,
    plan: &Plan,
    digest: &str,
    result: CopyOutcome,
) -> Result<Action, Error> {
    if result.succeeded() {
        let ready = ready(plan, digest, result);
        // A Pod's word is not proof: the digest recorded is the one the target answers to a
        // HEAD where the Job wrote.
        let written = ready.written_digest().to_owned();
        let (target, access) = match target_image(ctx, plan).await {
            Ok(found) => found,
            Err(e) => return fail(ctx, mirror, e.is_transient(), "TargetUnavailable", e).await,
        };
        let target = match (plan.target.tag(), privateer_image::Digest::parse(&written)) {
            (None, Ok(digest)) => Image {
                reference: plan.target.with_digest(digest),
                ..target
            },
            _ => target,
        };
        return match privateer_registry::head(&target, &ctx.copy_options).await {
            Ok(Some(present)) if present == written => {
                write_status(ctx, mirror, Outcome::Ready(ready)).await?;
                Ok(requeue_for_refresh(ctx, mirror))
            }
            Ok(other) => {
                let message = format!(
                    "the copy Job reported {written}, but the target holds {}",
                    other.as_deref().unwrap_or("no such manifest")
                );
                fail(ctx, mirror, true, "CopyUnverified", message).await
            }
            Err(e) => {
                if e.class == ErrorClass::Unauthorized {
                    ctx.provider.access_rejected(&access);
                }
                fail(ctx, mirror, true, "CopyUnverified", e).await
            }
        };
    }
    if result.error_class == Some(ErrorClass::Throttled)
        && let Ok(source) = source_endpoint(ctx, plan)
    {
        rate_limit::throttled(ctx, &source, result.retry_after_seconds);
    }
    let message = result
        .message
        .clone()
        .unwrap_or_else(|| "copy failed".into());
    let reason = match result.error_class.and_then(verify::signature_reason) {
        Some(signature) => signature.to_owned(),
        None => format!(
            "Copy{}",
            capitalize(result.error_class.map_or("failed", |c| c.as_str()))
        ),
    };
    fail(ctx, mirror, result.is_transient(), &reason, message).await
}

/// Executor `inline`: the controller copies itself, at most `copy.concurrency` at a time,
/// with the target provider's credentials (ECR: a GetAuthorizationToken token).
async fn copy_inline(
    ctx: &Context,
    mirror: &ImageMirror,
    plan: &Plan,
    source: &Image,
    digest: &str,
    keys: Option<verify::Keys>,
) -> Result<Action, Error> {
    let _slot = ctx.copy_slots.acquire().await;
    let (target, access) = match target_image(ctx, plan).await {
        Ok(found) => found,
        Err(e) => return fail(ctx, mirror, e.is_transient(), "TargetUnavailable", e).await,
    };
    let mut options = ctx.copy_options.clone();
    options.platforms = plan
        .platforms
        .iter()
        .filter_map(|p| privateer_registry::Platform::parse(p).ok())
        .collect();
    options.verify = keys.map(|k| k.parsed);
    // The copy moves the digest decided on, not what the tag names a moment later, and does
    // not ask the source for it again. Not with a platform filter: a pinned index is copied
    // whole.
    let pinned = match privateer_image::Digest::parse(digest) {
        Ok(digest) if plan.platforms.is_empty() => Some(Image {
            reference: source.reference.with_digest(digest),
            ..source.clone()
        }),
        _ => None,
    };
    let copied = privateer_registry::copy(
        pinned.as_ref().unwrap_or(source),
        &target,
        &options,
        Arc::new(privateer_registry::Silent),
    )
    .await;
    match copied {
        Ok(report) => {
            Metrics::count(&ctx.metrics.copies, "success");
            ctx.metrics.copy_bytes.observe(report.bytes_total as f64);
            ctx.metrics.copy_seconds.observe(report.seconds);
            let result = CopyOutcome::success(report);
            write_status(ctx, mirror, Outcome::Ready(ready(plan, digest, result))).await?;
            Ok(requeue_for_refresh(ctx, mirror))
        }
        Err(e) => {
            if e.class == ErrorClass::Unauthorized {
                // A token refused: the next attempt fetches a new one.
                ctx.provider.access_rejected(&access);
            }
            Metrics::count(&ctx.metrics.copies, "failure");
            if e.class == ErrorClass::Throttled {
                rate_limit::throttled(ctx, source, None);
            }
            let transient = e.is_transient() || e.class == ErrorClass::Unauthorized;
            let reason = verify::signature_reason(e.class).unwrap_or("CopyFailed");
            fail(ctx, mirror, transient, reason, e).await
        }
    }
}

/// The plan's target as the copier reaches it, with the target provider's credentials (ECR:
/// a GetAuthorizationToken token).
pub(crate) async fn target_image(
    ctx: &Context,
    plan: &Plan,
) -> Result<(Image, RegistryAccess), TargetError> {
    let access = ctx.provider.access().await?;
    let endpoint = Endpoint::parse(&access.endpoint)
        .map_err(|e| TargetError::Config(format!("target endpoint: {e}")))?;
    let target = Image {
        reference: plan.target.clone(),
        endpoint: Some(endpoint),
        credentials: Credentials::from_login(
            access
                .credentials
                .as_ref()
                .map(|c| (c.username.as_str(), c.password.as_str())),
        ),
    };
    Ok((target, access))
}

fn ready(plan: &Plan, source_digest: &str, result: CopyOutcome) -> Mirrored {
    let report = result.report.unwrap_or_default();
    let or_resolved = |digest: String| {
        if digest.is_empty() {
            source_digest.to_owned()
        } else {
            digest
        }
    };
    let written = or_resolved(report.digest);
    let name = plan.target.name();
    Mirrored {
        target_image: match plan.target.tag() {
            Some(tag) => format!("{name}:{tag}@{written}"),
            None => format!("{name}@{written}"),
        },
        source_digest: or_resolved(report.source_digest),
        platforms: report.platforms,
        // An up-to-date target copied nothing and measured nothing.
        size_bytes: (report.bytes_total > 0)
            .then(|| i64::try_from(report.bytes_total).ok())
            .flatten(),
        verified_by: report.verified_by,
        referrers: report.referrers,
        referrer_kinds: report.referrer_kinds,
        referrers_omitted: report.referrers_omitted,
    }
}

pub(crate) fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// Record a failure: transient ones back off (the attempt count lives in status), permanent
/// ones wait for a spec change.
async fn fail(
    ctx: &Context,
    mirror: &ImageMirror,
    transient: bool,
    reason: &str,
    error: impl ToString,
) -> Result<Action, Error> {
    let message = error.to_string();
    if !transient {
        let outcome = Outcome::Permanent {
            reason: reason.to_owned(),
            message,
        };
        write_status(ctx, mirror, outcome).await?;
        return Ok(Action::await_change());
    }
    let attempts = mirror.status.as_ref().map_or(0, |s| s.attempts) + 1;
    let wait = backoff(attempts, &ctx.config.controller.retry);
    let outcome = Outcome::Transient {
        reason: reason.to_owned(),
        message,
        attempts,
        retry_in: wait,
        failed: attempts >= ctx.config.controller.retry.max_attempts,
    };
    write_status(ctx, mirror, outcome).await?;
    Ok(Action::requeue(wait))
}

fn requeue_for_refresh(ctx: &Context, mirror: &ImageMirror) -> Action {
    match ctx.refresh_interval(mirror) {
        Some(every) => Action::requeue(every),
        None => Action::await_change(),
    }
}

/// The source as the copier reaches it: endpoint override, credentials from the mirror's
/// Secret or the configured per-registry Secret.
fn source_endpoint(ctx: &Context, plan: &Plan) -> Result<Image, Error> {
    let endpoint = match ctx.config.sources.endpoints.get(plan.source.domain()) {
        Some(o) => Some(Endpoint::parse(&o.url).map_err(Error::Config)?),
        None => None,
    };
    Ok(Image {
        reference: plan.source.clone(),
        endpoint,
        credentials: Credentials::Anonymous,
    })
}

async fn with_credentials(
    ctx: &Context,
    mirror: &ImageMirror,
    plan: &Plan,
    source: Image,
) -> Result<Image, Error> {
    let credentials = match source_secret(ctx, mirror, plan) {
        Some(secret) => {
            ctx.secret_credentials(&secret, plan.source.domain())
                .await?
        }
        None => Credentials::Anonymous,
    };
    Ok(Image {
        credentials,
        ..source
    })
}

pub(crate) fn source_secret(ctx: &Context, mirror: &ImageMirror, plan: &Plan) -> Option<String> {
    mirror
        .spec
        .credentials_secret_ref
        .as_ref()
        .map(|r| r.name.clone())
        .or_else(|| {
            ctx.config
                .sources
                .credentials
                .iter()
                .find(|c| c.registry == plan.source.domain())
                .map(|c| c.secret_name.clone())
        })
}

impl Context {
    fn refresh_interval(&self, mirror: &ImageMirror) -> Option<Duration> {
        let every: Duration = mirror
            .spec
            .refresh_interval
            .map(Into::into)
            .unwrap_or_else(|| self.config.controller.refresh_interval.into());
        // A digest-pinned source never moves.
        let pinned = mirror.spec.source.contains('@');
        (!every.is_zero() && !pinned).then_some(every)
    }

    /// `controller.targetCheck.interval`; `None` when 0 (only at refresh).
    fn target_check_interval(&self) -> Option<Duration> {
        let every: Duration = self.config.controller.target_check.interval.into();
        (!every.is_zero()).then_some(every)
    }
}
