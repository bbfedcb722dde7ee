//! `privateer controller`, `privateer webhook` and `privateer run` (both in one process): the
//! operator's long-running parts against the cluster of the current kubeconfig (in a Pod: its
//! service account), with `/healthz`, `/readyz` and `/metrics` on `metrics.listen`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use privateer_api::Config;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub struct OperatorArgs {
    /// The configuration file (YAML).
    #[arg(long)]
    config: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Parts {
    Controller,
    Webhook,
    Both,
}

/// The image copy Jobs run when `copy.job.image` is empty: `PRIVATEER_IMAGE` (the chart sets
/// it to the operator's own image), else the release image of this version.
pub(crate) fn copy_image(config: &Config) -> String {
    if !config.copy.job.image.is_empty() {
        return config.copy.job.image.clone();
    }
    std::env::var("PRIVATEER_IMAGE").unwrap_or_else(|_| {
        format!(
            "ghcr.io/privateer-dev/privateer:{}",
            env!("CARGO_PKG_VERSION")
        )
    })
}

pub fn run(args: OperatorArgs, parts: Parts) -> anyhow::Result<String> {
    let config = Config::load(&args.config)?;
    // Structured logs on stderr; RUST_LOG filters (default: info).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(Box::pin(serve(config, parts)))?;
    Ok(String::new())
}

async fn serve(config: Config, parts: Parts) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connect to the Kubernetes API (kubeconfig or in-cluster service account)")?;
    let stop = CancellationToken::new();
    let image = copy_image(&config);
    let mut probes = Vec::new();
    // One ImageMirror watch for the whole process: the webhook and the controller read it.
    let index = privateer_index::MirrorIndex::start(client.clone(), stop.clone());
    let webhook = if parts != Parts::Controller {
        let own = [image.clone()];
        let webhook = privateer_webhook::Webhook::new(
            client.clone(),
            config.clone(),
            &own,
            index.clone(),
            stop.clone(),
        );
        let webhook = Arc::new(Box::pin(webhook).await?);
        probes.push(webhook.probe());
        Some(webhook)
    } else {
        None
    };
    let controller = if parts != Parts::Webhook {
        let ctx = privateer_controller::Context::new(client, config.clone(), image, index);
        let ctx = Box::pin(ctx).await?;
        probes.push(ctx.probe());
        Some(ctx)
    } else {
        None
    };
    let listen = &config.metrics.listen;
    let address = privateer_health::serve(listen, probes, stop.clone())
        .await
        .with_context(|| format!("metrics.listen {listen}"))?;
    tracing::info!(%address, "serving /metrics, /healthz, /readyz");
    let serving = match webhook {
        Some(webhook) => {
            let serving = privateer_webhook::serve(webhook, stop.clone()).await?;
            tracing::info!(address = %serving.address, "serving /mutate, /validate, /image-policy over HTTPS");
            Some(serving.done)
        }
        None => None,
    };
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown_signal().await;
            tracing::info!("stopping: draining requests, releasing the lease");
            stop.cancel();
        }
    });
    let controller_done = async {
        match controller {
            Some(ctx) => {
                let result = privateer_controller::run(ctx, stop.clone().cancelled_owned()).await;
                // The controller failing (the CRD missing) stops the webhook too.
                if result.is_err() {
                    stop.cancel();
                }
                result
            }
            None => Ok(()),
        }
    };
    let webhook_done = async {
        if let Some(done) = serving {
            let _ = done.await;
        }
    };
    let (controller_result, ()) = tokio::join!(controller_done, webhook_done);
    controller_result?;
    Ok(())
}

/// SIGTERM (a Pod being stopped) or Ctrl-C.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
