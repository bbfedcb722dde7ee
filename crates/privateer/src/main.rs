//! The `privateer` binary: command-line parsing and wiring only; the work lives in the crates.

mod copy_bounds;
mod copy_cmd;
mod copy_progress;
mod image_cmd;
mod operator_cmd;
mod report_cmd;
mod target_cmd;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use privateer_api::names::exit;

/// privateer keeps a Kubernetes cluster's container images in a private registry.
#[derive(Parser)]
#[command(name = "privateer", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the ImageMirror CustomResourceDefinition as YAML.
    Crd,
    /// Work with image references.
    #[command(subcommand)]
    Image(image_cmd::ImageCommand),
    /// Work with the configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Check the target registry with privateer's credentials; create repositories.
    #[command(subcommand)]
    Target(target_cmd::TargetCommand),
    /// Copy an image between registries, digest-exact (what copy Jobs run).
    Copy(Box<copy_cmd::CopyArgs>),
    /// Reconcile ImageMirrors: copy Jobs, status, retries, gated Pods, backfill.
    Controller(operator_cmd::OperatorArgs),
    /// Serve the admission webhooks: /mutate, /validate, /image-policy.
    Webhook(operator_cmd::OperatorArgs),
    /// Webhook and controller in one process (small clusters, the demo).
    Run(operator_cmd::OperatorArgs),
    /// List the images Pods run, by namespace and workload: mirrored? Ready? denied by policy?
    Report(report_cmd::ReportArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file; print every problem, naming its key.
    Check {
        /// The configuration file (YAML).
        file: PathBuf,
    },
    /// Print the JSON schema of the configuration file.
    Schema,
    /// Print the configuration with every default filled in.
    Show {
        /// The configuration file; without it, the defaults alone.
        file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd => privateer_api::crd_yaml().map_err(anyhow::Error::from),
        Command::Image(command) => image_cmd::run(command),
        Command::Config(ConfigCommand::Check { file }) => privateer_api::Config::load(&file)
            .map(|_| format!("{}: ok\n", file.display()))
            .map_err(Into::into),
        Command::Config(ConfigCommand::Show { file }) => show_config(file),
        Command::Config(ConfigCommand::Schema) => {
            serde_json::to_string_pretty(&privateer_api::config::json_schema())
                .map(|text| text + "\n")
                .map_err(Into::into)
        }
        Command::Target(command) => target_cmd::run(command),
        Command::Copy(args) => copy_cmd::run(*args),
        Command::Controller(args) => operator_cmd::run(args, operator_cmd::Parts::Controller),
        Command::Webhook(args) => operator_cmd::run(args, operator_cmd::Parts::Webhook),
        Command::Run(args) => operator_cmd::run(args, operator_cmd::Parts::Both),
        Command::Report(args) => report_cmd::run(args),
    };
    match result {
        Ok(output) => {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`| head`) is not an error worth a message.
            let _ = stdout
                .write_all(output.as_bytes())
                .and_then(|()| stdout.flush());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("privateer: {error:#}");
            ExitCode::from(exit_status(&error))
        }
    }
}

/// The exit status of a failed command (`privateer_api::names::exit`).
fn exit_status(error: &anyhow::Error) -> u8 {
    if let Some(failure) = error.downcast_ref::<target_cmd::RegistryFailure>() {
        return if failure.0.is_transient() {
            exit::TRANSIENT
        } else {
            exit::PERMANENT
        };
    }
    match error.downcast_ref::<copy_progress::CopyFailure>() {
        Some(failure) => copy_progress::exit_status(&failure.0),
        None => exit::INVALID,
    }
}

fn show_config(file: Option<PathBuf>) -> anyhow::Result<String> {
    let config = match file {
        Some(file) => privateer_api::Config::load(&file)?,
        None => privateer_api::Config::default(),
    };
    Ok(serde_yaml::to_string(&config)?)
}
