//! Verifies cosign signatures of an image digest with public keys, before privateer mirrors the
//! image. Pure: the caller fetches the candidates (a `.sig` tag's layers, OCI 1.1 referrers
//! holding sigstore bundles) and this crate says whether one of them is a valid signature of the
//! digest by one of the keys, and if not, why each was rejected.
//!
//! Two signature forms, both as `cosign sign --key` writes them:
//! - **Simple signing** (the legacy `sha256-<hex>.sig` tag): the signature, base64 in a layer
//!   annotation, is over the layer's payload, a JSON document whose
//!   `critical.image.docker-manifest-digest` must be the digest.
//! - **Sigstore bundle** (v0.3, an OCI 1.1 referrer): a DSSE envelope over an in-toto statement
//!   whose subject carries the digest.
//!
//! Keyless signatures (a Fulcio certificate, a Rekor inclusion proof) are not verified here.

mod bundle;
mod keys;
mod simple_signing;

pub use keys::{KeyError, PublicKey, PublicKeys};

/// Something that may be a signature of the image.
#[derive(Clone, Debug)]
pub enum Candidate {
    /// A `.sig` layer: the payload bytes and the base64 signature from the
    /// `dev.cosignproject.cosign/signature` annotation.
    SimpleSigning {
        /// Where it was found, for messages (`sha256-….sig layer 0`).
        origin: String,
        payload: Vec<u8>,
        signature: String,
    },
    /// A sigstore bundle (JSON) from an OCI 1.1 referrer.
    Bundle { origin: String, json: Vec<u8> },
}

impl Candidate {
    pub fn origin(&self) -> &str {
        match self {
            Self::SimpleSigning { origin, .. } | Self::Bundle { origin, .. } => origin,
        }
    }
}

/// Why one candidate was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub origin: String,
    pub reason: String,
}

/// The outcome of checking every candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A candidate is a valid signature of the digest by `key`.
    Verified { origin: String, key: String },
    /// There was nothing to check.
    Missing,
    /// There were candidates; none is a valid signature of the digest by any key.
    Invalid(Vec<Rejection>),
}

/// Check `candidates` for a signature of `digest` (`sha256:<hex>`) by one of `keys`.
pub fn verify(keys: &PublicKeys, digest: &str, candidates: &[Candidate]) -> Verdict {
    if candidates.is_empty() {
        return Verdict::Missing;
    }
    let mut rejections = Vec::new();
    for candidate in candidates {
        let checked = match candidate {
            Candidate::SimpleSigning {
                payload, signature, ..
            } => simple_signing::check(keys, digest, payload, signature),
            Candidate::Bundle { json, .. } => bundle::check(keys, digest, json),
        };
        match checked {
            Ok(key) => {
                return Verdict::Verified {
                    origin: candidate.origin().to_owned(),
                    key,
                };
            }
            Err(reason) => rejections.push(Rejection {
                origin: candidate.origin().to_owned(),
                reason,
            }),
        }
    }
    Verdict::Invalid(rejections)
}

/// Decode standard base64 (what cosign writes), naming what it was on failure.
fn base64_decode(text: &str, what: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| format!("{what} is not base64: {e}"))
}
