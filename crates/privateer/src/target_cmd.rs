//! `privateer target`: ask the configured target registry what privateer will ask it, with
//! the credentials privateer will use. A pre-flight check for IAM and endpoints.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use privateer_api::Config;
use privateer_ecr::{Answer, DockerConfig, Provider, RepositoryFacts, TargetProvider};

#[derive(Subcommand)]
pub enum TargetCommand {
    /// Log in to the target and describe repositories (read-only).
    Check {
        #[command(flatten)]
        target: TargetArgs,
        /// Repositories to describe (tag immutability, scan on push).
        repositories: Vec<String>,
    },
    /// Create repositories with the configured settings, or report how existing ones drifted.
    Ensure {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(required = true)]
        repositories: Vec<String>,
    },
}

#[derive(clap::Args)]
pub struct TargetArgs {
    /// The configuration file (its `target` section).
    #[arg(long)]
    config: PathBuf,
    /// Generic targets: a docker config.json with push credentials (what
    /// `target.credentialsSecret` holds in the cluster).
    #[arg(long)]
    authfile: Option<PathBuf>,
}

/// A failure of the registry rather than of the input.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RegistryFailure(pub privateer_ecr::TargetError);

pub fn run(command: TargetCommand) -> anyhow::Result<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match command {
            TargetCommand::Check {
                target,
                repositories,
            } => check(connect(&target).await?, &repositories).await,
            TargetCommand::Ensure {
                target,
                repositories,
            } => ensure(connect(&target).await?, &repositories).await,
        }
    })
}

async fn connect(args: &TargetArgs) -> anyhow::Result<Provider> {
    let config = Config::load(&args.config)?;
    let credentials = match &args.authfile {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
            Some(DockerConfig::parse(&bytes).with_context(|| format!("{}", path.display()))?)
        }
        None => None,
    };
    Provider::from_config(&config, credentials)
        .await
        .map_err(|e| match e {
            // A target the configuration cannot describe is bad input, not a registry failure.
            privateer_ecr::TargetError::Config(_) => anyhow::Error::new(e),
            other => RegistryFailure(other).into(),
        })
}

async fn check(provider: Provider, repositories: &[String]) -> anyhow::Result<String> {
    let mut out = format!("registry: {}", provider.registry());
    if let Provider::Ecr(ecr) = &provider {
        let host = ecr.host();
        write!(
            out,
            " (ECR account {}, region {}, partition {}{})",
            host.account,
            host.region,
            host.partition,
            if host.fips { ", FIPS" } else { "" }
        )?;
    }
    let access = provider.access().await.map_err(RegistryFailure)?;
    let login = match &access.credentials {
        Some(c) => format!("as {}", c.username),
        None => "anonymous".into(),
    };
    writeln!(out, "\ndata plane: {} ({login})", access.endpoint)?;
    for repository in repositories {
        let line = match provider.repository_facts(repository).await {
            Answer::Known(RepositoryFacts::Missing) => "missing".to_owned(),
            Answer::Known(RepositoryFacts::Present {
                tag_mutability,
                scan_on_push,
                ..
            }) => format!("tagMutability {tag_mutability}, scanOnPush {scan_on_push}"),
            Answer::NotApplicable => "created on push (generic registry)".to_owned(),
            Answer::Unknown(why) => {
                return Err(anyhow::anyhow!("{repository}: could not ask: {why}"));
            }
        };
        writeln!(out, "{repository}: {line}")?;
    }
    Ok(out)
}

async fn ensure(provider: Provider, repositories: &[String]) -> anyhow::Result<String> {
    let mut out = String::new();
    for repository in repositories {
        let ensured = provider
            .ensure_repository(repository)
            .await
            .map_err(RegistryFailure)?;
        write!(out, "{repository}: {:?}", ensured.state)?;
        for drift in &ensured.corrected {
            write!(out, "; corrected {drift}")?;
        }
        for drift in &ensured.drift {
            write!(out, "; drifted {drift}")?;
        }
        out.push('\n');
    }
    Ok(out)
}
