//! `privateer report`: the images in use, by namespace and workload, their mirrors and what
//! the image policy would deny (the work lives in `privateer-report`).

use std::path::PathBuf;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use privateer_api::Config;
use privateer_image::Reference;

use crate::operator_cmd::copy_image;

#[derive(clap::Args)]
pub struct ReportArgs {
    /// The configuration file privateer runs with.
    #[arg(long, conflicts_with = "config_map")]
    config: Option<PathBuf>,
    /// Read the configuration from a ConfigMap (key `config.yaml`), as the chart installs it.
    #[arg(
        long,
        value_name = "NAMESPACE/NAME",
        default_value = "privateer/privateer"
    )]
    config_map: String,
    /// Only Pods in this namespace (default: every namespace).
    #[arg(short, long)]
    namespace: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
enum Output {
    Table,
    Json,
}

pub fn run(args: ReportArgs) -> anyhow::Result<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(report(args))
}

async fn report(args: ReportArgs) -> anyhow::Result<String> {
    // A malformed name is refused before anything connects.
    let Some(config_map) = args.config_map.split_once('/') else {
        bail!("--config-map {:?}: give NAMESPACE/NAME", args.config_map);
    };
    let from_file = args.config.as_deref().map(Config::load).transpose()?;
    let client = kube::Client::try_default()
        .await
        .context("connect to the Kubernetes API (kubeconfig or in-cluster service account)")?;
    let config = match from_file {
        Some(config) => config,
        None => config_from_map(&client, config_map).await?,
    };
    let own: Vec<String> = Reference::parse(&copy_image(&config))
        .map(|r| vec![r.name()])
        .unwrap_or_default();
    let inputs = privateer_report::cluster::read(&client, args.namespace.as_deref())
        .await
        .context("read Pods, ImageMirrors and Namespaces")?;
    let report = privateer_report::build(&config, &own, &inputs);
    Ok(match args.output {
        Output::Table => privateer_report::render_table(&report),
        Output::Json => serde_json::to_string_pretty(&report)? + "\n",
    })
}

async fn config_from_map(
    client: &kube::Client,
    (namespace, map): (&str, &str),
) -> anyhow::Result<Config> {
    let name = format!("{namespace}/{map}");
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let found = maps
        .get(map)
        .await
        .with_context(|| format!("read ConfigMap {name} (or give --config FILE)"))?;
    let Some(text) = found.data.as_ref().and_then(|d| d.get("config.yaml")) else {
        bail!("ConfigMap {name} has no key config.yaml");
    };
    Ok(Config::from_yaml(text, &format!("ConfigMap {name}"))?)
}
