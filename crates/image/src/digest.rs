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
    /// rules: `sha256-<hex>`. A sha512 one (135 characters) is cut to the 128-character limit.
    pub fn anchor_tag(&self) -> String {
        let mut tag = format!("{}-{}", self.algorithm.as_str(), self.hex);
        tag.truncate(crate::TAG_MAX_LEN);
        tag
    }
}

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
