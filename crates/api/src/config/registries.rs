//! `registries`: how far privateer trusts a registry it talks to (sources, and the target).
//! A public registry, or whoever answers for it, can send anything: these bound what it can
//! make privateer read, count and wait for, in copies, resolves and copy Jobs alike.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::secs;
use crate::Duration;

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RegistriesConfig {
    pub limits: RegistryLimits,
    pub timeouts: RegistryTimeouts,
    pub redirects: RedirectConfig,
}

/// Checked before any blob moves; past one, the copy fails permanently naming the limit.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RegistryLimits {
    /// Bytes of one manifest or index (4 MiB: what Docker Hub, ECR and distribution accept).
    pub manifest_bytes: u64,
    /// Entries of one index.
    pub index_children: u32,
    /// Layers of one image manifest.
    pub layers: u32,
    /// Bytes of a token endpoint's answer.
    pub token_bytes: u64,
    /// The sum of the blob sizes an image declares.
    pub total_bytes: u64,
}

impl Default for RegistryLimits {
    fn default() -> Self {
        Self {
            manifest_bytes: 4 << 20,
            index_children: 1_000,
            layers: 1_000,
            token_bytes: 64 << 10,
            total_bytes: 64 << 30,
        }
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RegistryTimeouts {
    /// To open a connection (TCP and TLS).
    pub connect: Duration,
    /// Without a byte from the registry, waiting for an answer or inside a body: a stall.
    pub read: Duration,
    /// One resolve of a source tag (login and HEAD, retries included).
    pub resolve: Duration,
    /// One whole copy, retries included; shorter than `copy.job.activeDeadlineSeconds`, so a
    /// copy Job reports its own timeout instead of being killed.
    pub copy: Duration,
}

impl Default for RegistryTimeouts {
    fn default() -> Self {
        Self {
            connect: secs(10),
            read: secs(30),
            resolve: secs(60),
            copy: secs(25 * 60),
        }
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RedirectConfig {
    /// Redirects followed for one request (only to http and https).
    pub max_hops: u32,
    /// Follow redirects to loopback, private and link-local addresses given as literal IPs or
    /// `localhost`. On by default (CDNs and in-cluster mirrors live there too); turn it off
    /// where a source must not reach internal services such as the cloud metadata endpoint.
    pub allow_private: bool,
}

impl Default for RedirectConfig {
    fn default() -> Self {
        Self {
            max_hops: 5,
            allow_private: true,
        }
    }
}
