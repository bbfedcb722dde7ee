//! `privateer image …`: the reference rules as the operator applies them, for humans and scripts.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use privateer_api::Config;
use privateer_image::{Reference, TargetNaming, object_name};

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Print the canonical form of a reference (`nginx` → `docker.io/library/nginx:latest`).
    Normalize {
        /// The image reference, as a Pod would name it.
        reference: String,
    },
    /// Print where a reference is mirrored to.
    Target {
        /// The image reference, as a Pod would name it.
        reference: String,
        #[command(flatten)]
        naming: NamingArgs,
    },
    /// Print the ImageMirror object name for a reference.
    Name {
        /// The image reference, as a Pod would name it.
        reference: String,
    },
}

#[derive(Args)]
pub struct NamingArgs {
    /// Target registry host, e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com.
    #[arg(long, required_unless_present = "config", conflicts_with = "config")]
    registry: Option<String>,
    /// Path prefix under the registry (with --registry); default as in the configuration.
    #[arg(long, requires = "registry")]
    prefix: Option<String>,
    /// Take registry and prefix from this configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
}

pub fn run(command: ImageCommand) -> anyhow::Result<String> {
    let line = match command {
        ImageCommand::Normalize { reference } => parse(&reference)?.to_string(),
        ImageCommand::Name { reference } => object_name(&parse(&reference)?),
        ImageCommand::Target { reference, naming } => {
            let source = parse(&reference)?;
            naming.resolve()?.target(&source)?.to_string()
        }
    };
    Ok(line + "\n")
}

fn parse(reference: &str) -> anyhow::Result<Reference> {
    Reference::parse(reference).with_context(|| format!("invalid image reference {reference:?}"))
}

impl NamingArgs {
    fn resolve(self) -> anyhow::Result<TargetNaming> {
        let (registry, prefix) = match (self.registry, self.config) {
            (Some(registry), _) => {
                let prefix = self
                    .prefix
                    .unwrap_or_else(|| Config::default().target.prefix);
                (registry, prefix)
            }
            (None, Some(path)) => {
                let config = Config::load(&path)?;
                if config.target.registry.is_empty() {
                    bail!("{}: target.registry is not set", path.display());
                }
                (config.target.registry, config.target.prefix)
            }
            (None, None) => bail!("give --registry or --config"),
        };
        Ok(TargetNaming::new(&registry, &prefix)?)
    }
}
