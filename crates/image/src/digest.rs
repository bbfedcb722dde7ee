//! Content digests (`algorithm:hex`), limited to the algorithms registries and runtimes verify.

use std::fmt;

use crate::error::ReferenceError;

/// A digest algorithm the container runtime can verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha384,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
        }
    }

    /// Length of the lowercase hex encoding.
    pub fn hex_len(self) -> usize {
        match self {
            Self::Sha256 => 64,
            Self::Sha384 => 96,
            Self::Sha512 => 128,
        }
    }
}

/// A validated digest: a known algorithm and lowercase hex of the right length.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let invalid = |reason: String| ReferenceError::InvalidDigest {
            digest: input.to_owned(),
            reason,
        };
        let (algorithm, hex) = input
            .split_once(':')
            .ok_or_else(|| invalid("expected algorithm:hex".to_owned()))?;
        let algorithm = match algorithm {
            "sha256" => Algorithm::Sha256,
            "sha384" => Algorithm::Sha384,
            "sha512" => Algorithm::Sha512,
            "" => return Err(invalid("missing algorithm before ':'".to_owned())),
            other => {
                return Err(invalid(format!(
                    "unsupported algorithm \"{other}\" (sha256, sha384 or sha512)"
                )));
            }
        };
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid(
                "the hex part must be lowercase hexadecimal".to_owned(),
            ));
        }
        if hex.len() != algorithm.hex_len() {
            return Err(invalid(format!(
                "{} takes {} hex characters, got {}",
                algorithm.as_str(),
                algorithm.hex_len(),
                hex.len()
            )));
        }
        Ok(Self {
            algorithm,
            hex: hex.to_owned(),
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The anchor tag that keeps a digest-pinned copy alive under untagged-image lifecycle
    /// rules: `privateer.sha256.<hex>`. Dots where OCI's referrers tag schema (`<alg>-<ref>`)
    /// and cosign (`<alg>-<hex>.sig|.att|.sbom`) put a dash, so no client that attaches
    /// signatures or SBOMs ever reads or moves it. Cut to the 128-character tag limit (a sha512
    /// anchor would be 145).
    pub fn anchor_tag(&self) -> String {
        let mut tag = format!("{ANCHOR_PREFIX}{}.{}", self.algorithm.as_str(), self.hex);
        tag.truncate(crate::TAG_MAX_LEN);
        tag
    }

    /// The OCI 1.1 referrers tag schema's fallback tag for this digest, `<alg>-<ref>`, the ref
    /// cut to 64 characters: where a registry without the referrers API keeps the index of
    /// artifacts that refer to it.
    pub fn referrers_tag(&self) -> String {
        let hex: String = self.hex.chars().take(64).collect();
        format!("{}-{hex}", self.algorithm.as_str())
    }

    /// cosign's tag for an artifact of this digest: `sha256-<hex>.sig`, `.att`, `.sbom`.
    pub fn cosign_tag(&self, suffix: &str) -> String {
        let mut tag = format!("{}-{}.{suffix}", self.algorithm.as_str(), self.hex);
        tag.truncate(crate::TAG_MAX_LEN);
        tag
    }
}

/// How every anchor tag begins (`privateer.sha256.<hex>`).
pub const ANCHOR_PREFIX: &str = "privateer.";

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl std::str::FromStr for Digest {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}
