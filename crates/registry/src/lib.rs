//! privateer's copy engine: copies one image between registries, digest-exact, on `oci-client`.
//!
//! - Manifests are pushed as the exact bytes pulled, so every digest survives; an index is
//!   copied with all its children unless a platform filter writes a smaller index.
//! - Blobs stream from source to target (memory stays flat whatever their size), each verified
//!   against its digest on the way; blobs the target has are skipped, blobs another repository
//!   of the target registry has are mounted, blobs shared by several platforms go once.
//! - A manifest is pushed only after everything it names is in the target.
//! - Transient failures are retried with backoff and jitter; the error says which kind it was.
//! - Nothing a registry sends is trusted: bodies, counts and waits are bounded (`Limits`,
//!   `Timeouts`), redirects are policed (`Redirects`), and no remote input can panic.
//!
//! The distribution protocol is spoken here on `reqwest` (the HTTP stack already in the
//! tree) rather than through oci-client, which unwraps on remote data, reads bodies without
//! bounds and hides the response headers a copier needs.

mod attached;
pub mod auth;
mod blob;
mod copy;
mod error;
mod limits;
mod manifest;
mod outcome;
mod pause;
mod progress;
mod referrers;
mod retry;
mod side;
mod verify;
mod wire;

/// How a registry's error body is read into messages (public for the fuzz target).
pub use wire::envelope as error_envelope;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use attached::verify;
pub use copy::{copy, head, resolve};
pub use error::{CopyError, ErrorClass};
pub use limits::{Limits, Redirects, Timeouts};
pub use manifest::{Manifest, Platform, sha256_digest};
pub use outcome::{BATCH_MAX, CopyOutcome, TERMINATION_MESSAGE_MAX_BYTES};
pub use pause::{pause, paused_for};
pub use progress::{BlobOutcome, Event, Progress, Silent};
pub use retry::RetryPolicy;

pub use privateer_cosign as cosign;

/// One end of a copy.
#[derive(Clone, Debug)]
pub struct Image {
    /// The image as it is named (`docker.io/library/nginx:1.27`).
    pub reference: privateer_image::Reference,
    /// Where the registry is actually reached, when not at the name's host (a pull-through
    /// mirror of `docker.io`, an ECR VPC endpoint, a test registry).
    pub endpoint: Option<Endpoint>,
    pub credentials: Credentials,
}

impl Image {
    /// The `host[:port]` requests go to: the endpoint's, else the name's.
    pub fn host(&self) -> &str {
        match &self.endpoint {
            Some(endpoint) => &endpoint.host,
            None => self.reference.domain(),
        }
    }
}

/// A registry endpoint: `host[:port]`, over TLS unless `plain_http`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub plain_http: bool,
}

impl Endpoint {
    /// `https://host[:port]`, `http://host[:port]` or a bare `host[:port]` (TLS).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (plain_http, rest) = match text.split_once("://") {
            Some(("http", rest)) => (true, rest),
            Some(("https", rest)) => (false, rest),
            Some((scheme, _)) => {
                return Err(format!(
                    "endpoint {text:?}: scheme {scheme:?} is neither http nor https"
                ));
            }
            None => (false, text),
        };
        let host = rest.trim_end_matches('/');
        if host.is_empty() || host.contains('/') {
            return Err(format!(
                "endpoint {text:?}: expected host[:port], optionally with http:// or https://"
            ));
        }
        privateer_image::validate_domain(host).map_err(|e| format!("endpoint {text:?}: {e}"))?;
        Ok(Self {
            host: host.to_owned(),
            plain_http,
        })
    }
}

/// How to log in to a registry.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    #[default]
    Anonymous,
    /// A user and password (or token, for ECR: user `AWS`); used for basic auth or exchanged
    /// for a bearer token, whichever the registry asks for.
    Basic { username: String, password: String },
    /// A ready bearer token.
    Bearer(String),
}

impl Credentials {
    /// Basic credentials from a user and password found somewhere (a docker config, an ECR
    /// token), anonymous when nothing was found.
    pub fn from_login(found: Option<(&str, &str)>) -> Self {
        match found {
            Some((username, password)) => Self::Basic {
                username: username.to_owned(),
                password: password.to_owned(),
            },
            None => Self::Anonymous,
        }
    }
}

impl fmt::Debug for Credentials {
    // Credentials reach logs through `{:?}`: never print the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Anonymous => f.write_str("Anonymous"),
            Self::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Self::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

/// TLS settings shared by both ends.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// `host[:port]`s spoken to over plain HTTP.
    pub insecure_hosts: Vec<String>,
    /// PEM certificates of private CAs, trusted besides the system roots.
    pub ca_pems: Vec<Vec<u8>>,
}

/// How to copy.
#[derive(Clone, Debug)]
pub struct CopyOptions {
    /// Blobs copied at the same time.
    pub parallelism: usize,
    /// Copy only these platforms of an index (ignored for a digest-pinned source).
    pub platforms: Vec<Platform>,
    pub retry: RetryPolicy,
    pub tls: TlsOptions,
    /// Other repositories of the target registry to mount blobs from.
    pub mount_from: Vec<String>,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub redirects: Redirects,
    /// Copy what is attached to the image: OCI 1.1 referrers and cosign's tags.
    pub referrers: bool,
    /// Copy only when a cosign signature of the source digest verifies with one of these.
    pub verify: Option<std::sync::Arc<privateer_cosign::PublicKeys>>,
}

/// The default number of blobs in flight: enough to fill a link, few enough for small hosts.
pub const DEFAULT_PARALLELISM: usize = 6;

impl Default for CopyOptions {
    fn default() -> Self {
        Self {
            parallelism: DEFAULT_PARALLELISM,
            platforms: Vec::new(),
            retry: RetryPolicy::default(),
            tls: TlsOptions::default(),
            mount_from: Vec::new(),
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            redirects: Redirects::default(),
            referrers: true,
            verify: None,
        }
    }
}

/// What a copy did. Only `digest` is required when read back: a termination message leaves
/// out what the controller does not need.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyReport {
    /// The target reference pinned by digest.
    #[serde(default)]
    pub target: String,
    /// The digest written to the target (the source's, or the filtered index's).
    pub digest: String,
    /// The source manifest digest.
    #[serde(default)]
    pub source_digest: String,
    #[serde(default)]
    pub media_type: String,
    /// Platforms of the copied index children (`linux/amd64`, …); empty for a single image.
    #[serde(default)]
    pub platforms: Vec<String>,
    /// Platforms left out of `platforms` to fit a termination message.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub platforms_omitted: usize,
    /// The target already held the digest: nothing was copied.
    #[serde(default)]
    pub up_to_date: bool,
    /// Bytes streamed from source to target.
    #[serde(default)]
    pub bytes_copied: u64,
    /// Size of every blob the image names, copied or not.
    #[serde(default)]
    pub bytes_total: u64,
    #[serde(default)]
    pub blobs_copied: usize,
    #[serde(default)]
    pub blobs_skipped: usize,
    #[serde(default)]
    pub blobs_mounted: usize,
    /// Manifests written (children and the top one).
    #[serde(default)]
    pub manifests: usize,
    /// Artifacts found attached to what was copied (signatures, attestations, SBOMs, …).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub referrers: usize,
    /// Of those, written to the target by this copy (the others were there already).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub referrers_copied: usize,
    /// What kinds came along: `signature`, `attestation`, `sbom`, `artifact`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub referrer_kinds: Vec<String>,
    /// Artifacts of the source index left behind because a platform filter wrote a new
    /// index: they name the original digest, which the target does not hold.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub referrers_omitted: usize,
    /// The key whose signature was verified before copying (`--verify-key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_by: Option<String>,
    #[serde(default)]
    pub seconds: f64,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_with_or_without_scheme() {
        let plain = Endpoint::parse("http://127.0.0.1:5000/").expect("valid");
        assert_eq!(plain.host, "127.0.0.1:5000");
        assert!(plain.plain_http);
        let tls = Endpoint::parse("mirror.example.com").expect("valid");
        assert!(!tls.plain_http);
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(Endpoint::parse("https://x/path").is_err());
        assert!(Endpoint::parse("").is_err());
    }

    #[test]
    fn credentials_never_print_their_secret() {
        let basic = Credentials::Basic {
            username: "AWS".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{basic:?}").contains("hunter2"));
        assert!(!format!("{:?}", Credentials::Bearer("tok".into())).contains("tok"));
    }
}
