//! `privateer copy`'s bounds on the registries it talks to: limits, timeouts, redirects. The
//! controller passes `registries.*` of the configuration to copy Jobs as these flags.

use std::time::Duration;

use privateer_registry::{CopyOptions, Limits, Redirects, Timeouts};

#[derive(clap::Args)]
pub struct BoundsArgs {
    /// Largest manifest or index accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().manifest_bytes)]
    max_manifest_bytes: u64,
    /// Most entries in an index.
    #[arg(long, value_name = "N", default_value_t = Limits::default().index_children)]
    max_index_children: usize,
    /// Most layers in an image manifest.
    #[arg(long, value_name = "N", default_value_t = Limits::default().layers)]
    max_layers: usize,
    /// Largest token endpoint answer, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().token_bytes)]
    max_token_bytes: u64,
    /// Largest sum of the blob sizes an image declares, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().total_bytes)]
    max_total_bytes: u64,
    /// Most artifacts attached to one image (signatures, attestations, SBOMs, theirs).
    #[arg(long, value_name = "N", default_value_t = Limits::default().referrers)]
    max_referrers: usize,
    /// Seconds to open a connection.
    #[arg(long, value_name = "SECONDS", default_value_t = Timeouts::default().connect.as_secs_f64())]
    connect_timeout: f64,
    /// Seconds without a byte from a registry before it counts as stalled.
    #[arg(long, value_name = "SECONDS", default_value_t = Timeouts::default().read.as_secs_f64())]
    read_timeout: f64,
    /// Seconds the whole copy may take, retries included.
    #[arg(long, value_name = "SECONDS", default_value_t = Timeouts::default().copy.as_secs_f64())]
    timeout: f64,
    /// Redirects followed per request.
    #[arg(long, value_name = "N", default_value_t = Redirects::default().max_hops)]
    max_redirects: usize,
    /// Refuse redirects to loopback, private and link-local addresses.
    #[arg(long)]
    no_private_redirects: bool,
}

impl BoundsArgs {
    pub fn apply(&self, options: &mut CopyOptions) -> anyhow::Result<()> {
        let seconds = |flag: &str, value: f64| {
            Duration::try_from_secs_f64(value)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    anyhow::anyhow!("{flag} {value}: expected a positive number of seconds")
                })
        };
        options.limits = Limits {
            manifest_bytes: self.max_manifest_bytes,
            index_children: self.max_index_children,
            layers: self.max_layers,
            token_bytes: self.max_token_bytes,
            total_bytes: self.max_total_bytes,
            referrers: self.max_referrers,
            ..Limits::default()
        };
        options.timeouts = Timeouts {
            connect: seconds("--connect-timeout", self.connect_timeout)?,
            read: seconds("--read-timeout", self.read_timeout)?,
            copy: seconds("--timeout", self.timeout)?,
            ..Timeouts::default()
        };
        options.redirects = Redirects {
            max_hops: self.max_redirects,
            allow_private: !self.no_private_redirects,
        };
        Ok(())
    }
}
