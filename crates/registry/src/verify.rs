//! Content checked against its digest, in any algorithm the image spec allows (sha256, sha384,
//! sha512), whole or as it streams by.

use privateer_image::{Algorithm, Digest};
use sha2::Digest as _;

/// A running hash in the algorithm of the digest it will be compared with.
pub(crate) enum Hasher {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub(crate) fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Self::Sha256(sha2::Sha256::new()),
            Algorithm::Sha384 => Self::Sha384(sha2::Sha384::new()),
            Algorithm::Sha512 => Self::Sha512(sha2::Sha512::new()),
        }
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(bytes),
            Self::Sha384(h) => h.update(bytes),
            Self::Sha512(h) => h.update(bytes),
        }
    }

    /// `algorithm:hex` of what was hashed.
    pub(crate) fn finish(self) -> String {
        match self {
            Self::Sha256(h) => format!("sha256:{:x}", h.finalize()),
            Self::Sha384(h) => format!("sha384:{:x}", h.finalize()),
            Self::Sha512(h) => format!("sha512:{:x}", h.finalize()),
        }
    }
}

/// The digest of `bytes` in `algorithm`.
pub(crate) fn digest_of(bytes: &[u8], algorithm: Algorithm) -> String {
    let mut hasher = Hasher::new(algorithm);
    hasher.update(bytes);
    hasher.finish()
}

/// Whether `bytes` are the content `digest` names.
pub(crate) fn matches(bytes: &[u8], digest: &Digest) -> bool {
    digest_of(bytes, digest.algorithm()) == digest.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_allowed_algorithm_verifies() {
        for algorithm in [Algorithm::Sha256, Algorithm::Sha384, Algorithm::Sha512] {
            let digest = Digest::parse(&digest_of(b"hello", algorithm)).expect("valid digest");
            assert!(matches(b"hello", &digest));
            assert!(!matches(b"hellO", &digest));
        }
    }
}
