//! `privateer copy SRC DST [SRC DST]...`: what copy Jobs run (a batched Job names several
//! pairs). Wiring only: arguments, credentials, the ECR token, progress rendering and the Pod
//! termination message; the copy is the registry crate's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use privateer_ecr::{DockerConfig, EcrHost, EcrOptions, EcrProvider, TargetProvider};
use privateer_image::Reference;
use privateer_registry::{
    CopyError, CopyOptions, Credentials, Endpoint, Image, Platform, RetryPolicy, TlsOptions,
};

use crate::copy_bounds;
use crate::copy_progress::{self, CopyFailure};

/// Copy an image between registries, digest-exact (what privateer's copy Jobs run).
///
/// Each copied target, pinned by digest, is a line on stdout. Exit status: 0 copied or up to
/// date, 2 bad usage, 3 permanent failure (not found, denied, digest mismatch), 4 transient
/// failure (network, 5xx after retries), 5 throttled (the source asked, with `Retry-After`,
/// to wait longer than a copy waits); of several pairs, the worst (3, then 5, then 4).
#[derive(clap::Args)]
pub struct CopyArgs {
    /// The image to copy (`nginx:1.27`, `ghcr.io/org/app@sha256:…`).
    source: String,
    /// Where to copy it; without tag or digest it keeps the source's tag.
    destination: String,
    /// Further SOURCE DESTINATION pairs, copied in the same run with the same options (a few at
    /// a time); the termination message is then a JSON array, one result per pair in order.
    #[arg(value_name = "SOURCE DESTINATION")]
    more: Vec<String>,
    /// Source credentials as USER:PASSWORD.
    #[arg(long, value_name = "USER:PASS")]
    src_creds: Option<String>,
    /// Destination credentials as USER:PASSWORD.
    #[arg(long, value_name = "USER:PASS")]
    dest_creds: Option<String>,
    /// Source credentials from a docker config.json (or a dockerconfigjson Secret's file).
    #[arg(long, value_name = "FILE")]
    src_authfile: Option<PathBuf>,
    /// Destination credentials from a docker config.json.
    #[arg(long, value_name = "FILE")]
    dest_authfile: Option<PathBuf>,
    /// Reach the source registry here instead of at its name's host (a mirror of docker.io).
    #[arg(long, value_name = "URL")]
    src_endpoint: Option<String>,
    /// Reach the destination registry here (an ECR VPC endpoint, a tunnel).
    #[arg(long, value_name = "URL")]
    dest_endpoint: Option<String>,
    /// Speak plain HTTP to HOST[:PORT] (repeatable).
    #[arg(long, value_name = "HOST[:PORT]")]
    insecure_registry: Vec<String>,
    /// Trust the CAs in this PEM file besides the system roots (repeatable).
    #[arg(long, value_name = "FILE")]
    ca_file: Vec<PathBuf>,
    /// Copy only this platform of an index, as os/arch[/variant] (repeatable).
    #[arg(long, value_name = "OS/ARCH")]
    platform: Vec<String>,
    /// Blobs copied at the same time.
    #[arg(long, default_value_t = privateer_registry::DEFAULT_PARALLELISM)]
    parallelism: usize,
    /// Another repository of the destination registry to mount blobs from (repeatable).
    #[arg(long, value_name = "REPOSITORY")]
    mount_from: Vec<String>,
    /// Tries per request, the first included, for network errors, 429 and 5xx.
    #[arg(long, default_value_t = 5)]
    retries: u32,
    /// The first retry's delay in milliseconds; it doubles per retry, with jitter.
    #[arg(long, default_value_t = 500)]
    retry_delay_ms: u64,
    /// Leave out what is attached to the image (OCI 1.1 referrers, cosign's .sig/.att/.sbom).
    #[arg(long)]
    no_referrers: bool,
    /// Copy only when a cosign signature of the source digest verifies with this PEM public
    /// key (repeatable: any one is enough); otherwise exit 3 with nothing written.
    #[arg(long, value_name = "FILE")]
    verify_key: Vec<PathBuf>,
    /// A PEM public key given inline, as `--verify-key` (what copy Jobs get from
    /// `sources.verify`; repeatable).
    #[arg(long, value_name = "PEM", allow_hyphen_values = true)]
    verify_key_pem: Vec<String>,
    /// Progress as one JSON line per event on stderr (for Jobs and log pipelines).
    #[arg(long)]
    json: bool,
    /// Write the one-line JSON result here [default: /dev/termination-log inside a Pod].
    #[arg(long, value_name = "FILE")]
    termination_log: Option<PathBuf>,
    #[command(flatten)]
    bounds: copy_bounds::BoundsArgs,
}

/// Pairs of a batch copied at once; each copy moves `--parallelism` blobs at a time.
const PAIRS_AT_ONCE: usize = 4;

pub fn run(args: CopyArgs) -> anyhow::Result<String> {
    if args.more.len() % 2 == 1 {
        anyhow::bail!(
            "{:?} has no destination: give SOURCE DESTINATION pairs",
            args.more[args.more.len() - 1]
        );
    }
    let termination_log = args
        .termination_log
        .clone()
        .or_else(default_termination_log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let results = runtime.block_on(copy_all(&args));
    if let Some(path) = termination_log {
        copy_progress::write_termination_log(&path, &results);
    }
    let several = results.len() > 1;
    let mut targets = String::new();
    let mut worst: Option<anyhow::Error> = None;
    for result in results {
        match result {
            Ok(report) => {
                targets.push_str(&report.target);
                targets.push('\n');
            }
            Err(error) => {
                if several {
                    eprintln!("privateer: {error:#}");
                }
                if worst
                    .as_ref()
                    .is_none_or(|w| severity(&error) > severity(w))
                {
                    worst = Some(error);
                }
            }
        }
    }
    match worst {
        Some(error) => Err(error),
        None => Ok(targets),
    }
}

/// Of several pairs' failures, the one whose exit status the run takes: a permanent failure
/// (the Job must not try again), then a throttled one (the controller pauses the host), then
/// a transient one (another Pod of the Job may succeed).
fn severity(error: &anyhow::Error) -> u8 {
    use privateer_api::names::exit;
    match error.downcast_ref::<CopyFailure>() {
        Some(failure) => match copy_progress::exit_status(&failure.0) {
            exit::TRANSIENT => 1,
            exit::THROTTLED => 2,
            _ => 3,
        },
        None => 3,
    }
}

/// Every pair's result, in order; a mistake in the shared options fails each of them.
async fn copy_all(args: &CopyArgs) -> Vec<anyhow::Result<privateer_registry::CopyReport>> {
    let pairs: Vec<(&str, &str)> = std::iter::once((&args.source, &args.destination))
        .map(|(s, d)| (s.as_str(), d.as_str()))
        .chain(args.more.chunks(2).map(|p| (p[0].as_str(), p[1].as_str())))
        .collect();
    let options = match options(args) {
        Ok(options) => options,
        Err(e) => {
            let text = format!("{e:#}");
            return pairs
                .iter()
                .map(|_| Err(anyhow::anyhow!("{text}")))
                .collect();
        }
    };
    let progress = copy_progress::renderer(args.json);
    let ecr_logins = tokio::sync::Mutex::new(Vec::<(String, Image)>::new());
    futures::stream::iter(pairs)
        .map(|(source, destination)| {
            copy(args, &options, &progress, &ecr_logins, source, destination)
        })
        .buffered(PAIRS_AT_ONCE)
        .collect()
        .await
}

/// The kubelet mounts the termination message file in every container.
fn default_termination_log() -> Option<PathBuf> {
    let path = PathBuf::from("/dev/termination-log");
    (std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() && path.exists()).then_some(path)
}

fn options(args: &CopyArgs) -> anyhow::Result<CopyOptions> {
    let platforms = args
        .platform
        .iter()
        .map(|p| Platform::parse(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let mut ca_pems = Vec::new();
    for file in &args.ca_file {
        let pem = std::fs::read(file).with_context(|| format!("--ca-file {}", file.display()))?;
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
            anyhow::bail!("--ca-file {}: no PEM certificate in it", file.display());
        }
        ca_pems.extend(split_pem_bundle(&pem));
    }
    let mut options = CopyOptions {
        parallelism: args.parallelism.max(1),
        platforms,
        retry: RetryPolicy {
            attempts: args.retries.max(1),
            initial_delay: Duration::from_millis(args.retry_delay_ms),
            ..RetryPolicy::default()
        },
        tls: TlsOptions {
            insecure_hosts: args.insecure_registry.clone(),
            ca_pems,
        },
        mount_from: args.mount_from.clone(),
        referrers: !args.no_referrers,
        verify: verify_keys(&args.verify_key, &args.verify_key_pem)?,
        ..CopyOptions::default()
    };
    args.bounds.apply(&mut options)?;
    Ok(options)
}

/// One pair. ECR destinations log in once per registry: the token serves the whole batch.
async fn copy(
    args: &CopyArgs,
    options: &CopyOptions,
    progress: &std::sync::Arc<dyn privateer_registry::Progress>,
    ecr_logins: &tokio::sync::Mutex<Vec<(String, Image)>>,
    source: &str,
    destination: &str,
) -> anyhow::Result<privateer_registry::CopyReport> {
    let source_reference =
        Reference::parse(source).with_context(|| format!("source {source:?}"))?;
    let destination_reference =
        Reference::parse(destination).with_context(|| format!("destination {destination:?}"))?;
    let source = Image {
        endpoint: endpoint(args.src_endpoint.as_deref(), "--src-endpoint")?,
        credentials: credentials(
            args.src_creds.as_deref(),
            args.src_authfile.as_deref(),
            source_reference.domain(),
            "--src",
        )?,
        reference: source_reference,
    };
    let mut destination = Image {
        endpoint: endpoint(args.dest_endpoint.as_deref(), "--dest-endpoint")?,
        credentials: credentials(
            args.dest_creds.as_deref(),
            args.dest_authfile.as_deref(),
            destination_reference.domain(),
            "--dest",
        )?,
        reference: destination_reference,
    };
    if destination.credentials == Credentials::Anonymous
        && EcrHost::parse(destination.reference.domain()).is_ok()
    {
        // Held while logging in, so the pairs of a batch share one token request.
        let mut logins = ecr_logins.lock().await;
        let registry = destination.reference.domain().to_owned();
        match logins.iter().find(|(r, _)| *r == registry) {
            Some((_, logged_in)) => {
                destination.credentials = logged_in.credentials.clone();
                destination.endpoint = logged_in.endpoint.clone();
            }
            None => {
                ecr_login(&mut destination, &options.tls).await?;
                logins.push((registry, destination.clone()));
            }
        }
    }
    privateer_registry::copy(&source, &destination, options, progress.clone())
        .await
        .map_err(|e| CopyFailure(e).into())
}

/// ECR's data plane takes a token from `GetAuthorizationToken` (AWS default credential chain:
/// IRSA in a Job; `AWS_ENDPOINT_URL` overrides honoured).
async fn ecr_login(destination: &mut Image, tls: &TlsOptions) -> anyhow::Result<()> {
    let mut target = privateer_api::config::TargetConfig {
        registry: destination.reference.domain().to_owned(),
        ..Default::default()
    };
    if let Some(endpoint) = &destination.endpoint {
        let scheme = if endpoint.plain_http { "http" } else { "https" };
        target.ecr.registry_endpoint = format!("{scheme}://{}", endpoint.host);
    }
    target.insecure = tls
        .insecure_hosts
        .iter()
        .any(|h| h == destination.reference.domain());
    let provider = Box::pin(EcrProvider::connect(&target, EcrOptions::default()))
        .await
        .map_err(|e| CopyFailure(target_error(e)))?;
    let access = Box::pin(provider.access())
        .await
        .map_err(|e| CopyFailure(target_error(e)))?;
    if let Some(found) = &access.credentials {
        destination.credentials = Credentials::from_login(Some((&found.username, &found.password)));
    }
    destination.endpoint = Some(Endpoint::parse(&access.endpoint).map_err(anyhow::Error::msg)?);
    Ok(())
}

fn target_error(error: privateer_ecr::TargetError) -> CopyError {
    let class = if error.is_transient() {
        privateer_registry::ErrorClass::Network
    } else {
        privateer_registry::ErrorClass::Denied
    };
    CopyError::new(class, "get an ECR authorization token", error.to_string())
}

/// The `--verify-key` files and `--verify-key-pem` texts as keys; `None` when none was given.
fn verify_keys(
    files: &[PathBuf],
    pems: &[String],
) -> anyhow::Result<Option<std::sync::Arc<privateer_registry::cosign::PublicKeys>>> {
    use privateer_registry::cosign::PublicKeys;
    if files.is_empty() && pems.is_empty() {
        return Ok(None);
    }
    let mut named: Vec<(String, Vec<u8>)> = pems
        .iter()
        .enumerate()
        .map(|(i, pem)| {
            (
                format!("--verify-key-pem #{}", i + 1),
                pem.clone().into_bytes(),
            )
        })
        .collect();
    for file in files {
        let pem =
            std::fs::read(file).with_context(|| format!("--verify-key {}", file.display()))?;
        let name = file.file_name().map_or_else(
            || file.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        named.push((name, pem));
    }
    let keys = PublicKeys::parse_all(named.iter().map(|(n, p)| (n.clone(), p.as_slice())))?;
    Ok(Some(std::sync::Arc::new(keys)))
}

fn endpoint(text: Option<&str>, flag: &str) -> anyhow::Result<Option<Endpoint>> {
    text.map(|t| Endpoint::parse(t).map_err(|e| anyhow::anyhow!("{flag}: {e}")))
        .transpose()
}

/// `--*-creds` wins over `--*-authfile`; neither: anonymous.
fn credentials(
    creds: Option<&str>,
    authfile: Option<&Path>,
    host: &str,
    flag: &str,
) -> anyhow::Result<Credentials> {
    if let Some(creds) = creds {
        let (username, password) = creds
            .split_once(':')
            .filter(|(user, _)| !user.is_empty())
            .ok_or_else(|| anyhow::anyhow!("{flag}-creds: expected USER:PASSWORD"))?;
        return Ok(Credentials::from_login(Some((username, password))));
    }
    let Some(file) = authfile else {
        return Ok(Credentials::Anonymous);
    };
    let bytes =
        std::fs::read(file).with_context(|| format!("{flag}-authfile {}", file.display()))?;
    let config = DockerConfig::parse(&bytes)
        .with_context(|| format!("{flag}-authfile {}", file.display()))?;
    let found = config.credentials_for(host);
    Ok(Credentials::from_login(
        found.map(|c| (c.username.as_str(), c.password.as_str())),
    ))
}

/// One PEM certificate per entry: a CA bundle file often holds several.
fn split_pem_bundle(pem: &[u8]) -> Vec<Vec<u8>> {
    const END: &str = "-----END CERTIFICATE-----";
    String::from_utf8_lossy(pem)
        .split_inclusive(END)
        .filter(|block| block.contains(END))
        .map(|block| block.trim_start().as_bytes().to_vec())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_need_a_user() {
        assert!(credentials(Some(":pw"), None, "h", "--src").is_err());
        assert!(credentials(Some("nopassword"), None, "h", "--src").is_err());
        assert_eq!(
            credentials(Some("u:p:q"), None, "h", "--src").expect("valid"),
            Credentials::Basic {
                username: "u".into(),
                password: "p:q".into()
            }
        );
    }

    #[test]
    fn pem_bundles_split_per_certificate() {
        let one = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let bundle = format!("{one}{one}");
        assert_eq!(split_pem_bundle(bundle.as_bytes()).len(), 2);
    }
}
