//! `privateer controller --config FILE`: run the ImageMirror reconciler against the cluster
//! of the current kubeconfig (in a Pod: its service account).

use std::path::PathBuf;

use anyhow::Context as _;
use privateer_api::Config;

#[derive(clap::Args)]
pub struct ControllerArgs {
    /// The configuration file (YAML).
    #[arg(long)]
    config: PathBuf,
}

/// The image copy Jobs run when `copy.job.image` is empty: `PRIVATEER_IMAGE` (the chart sets
/// it to the operator's own image), else the release image of this version.
fn copy_image(config: &Config) -> String {
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

pub fn run(args: ControllerArgs) -> anyhow::Result<String> {
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
    runtime.block_on(async {
        let client = kube::Client::try_default()
            .await
            .context("connect to the Kubernetes API (kubeconfig or in-cluster service account)")?;
        let image = copy_image(&config);
        let ctx = Box::pin(privateer_controller::Context::new(client, config, image)).await?;
        privateer_controller::run(ctx, shutdown_signal()).await?;
        Ok(String::new())
    })
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
