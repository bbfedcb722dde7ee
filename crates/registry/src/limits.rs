//! Bounds on what a registry can make privateer do. A public registry, or whoever answers for
//! it, is not trusted: every body read from it is capped, every count it declares is checked
//! before a blob moves, and every wait on it ends.

use std::time::Duration;

/// Size and count limits, checked before anything is written to the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of one manifest or index (4 MiB: what Docker Hub, ECR and distribution accept).
    pub manifest_bytes: u64,
    /// Entries of one index.
    pub index_children: usize,
    /// Layers of one image manifest.
    pub layers: usize,
    /// Bytes of a token endpoint's answer.
    pub token_bytes: u64,
    /// The sum of every blob size the image declares.
    pub total_bytes: u64,
    /// Artifacts attached to one image (signatures, attestations, SBOMs, theirs in turn).
    pub referrers: usize,
    /// How deep artifacts may refer to artifacts (1: only to the image).
    pub referrer_depth: usize,
    /// Bytes of one signature payload or sigstore bundle read to verify it.
    pub signature_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            manifest_bytes: 4 << 20,
            index_children: 1_000,
            layers: 1_000,
            token_bytes: 64 << 10,
            total_bytes: 64 << 30,
            referrers: 64,
            referrer_depth: 3,
            signature_bytes: 1 << 20,
        }
    }
}

/// How long privateer waits on a registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// To open a connection (TCP and TLS).
    pub connect: Duration,
    /// Without a byte from the peer (waiting for headers, or in a body): longer is a stall.
    pub read: Duration,
    /// For one resolve (login and HEAD, retries included).
    pub resolve: Duration,
    /// For one whole copy, retries included.
    pub copy: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            read: Duration::from_secs(30),
            resolve: Duration::from_secs(60),
            // Under a copy Job's default activeDeadlineSeconds (1800).
            copy: Duration::from_secs(25 * 60),
        }
    }
}

/// Which redirects a registry may send privateer along (blob downloads go to CDNs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirects {
    /// Hops followed for one request.
    pub max_hops: usize,
    /// Follow redirects to loopback, private (RFC 1918, ULA) and link-local addresses given
    /// as literal IPs or `localhost`. On by default: registries' CDNs and in-cluster mirrors
    /// live there too; turn it off where a source must not reach internal services.
    pub allow_private: bool,
}

impl Default for Redirects {
    fn default() -> Self {
        Self {
            max_hops: 5,
            allow_private: true,
        }
    }
}
