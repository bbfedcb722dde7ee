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

/// A blob's bytes checked against its descriptor as they stream by: never more than the size
/// it declares, exactly that size at the end, and the content its digest names.
pub(crate) struct BlobCheck {
    digest: Digest,
    declared: u64,
    seen: u64,
    hasher: Hasher,
}

impl BlobCheck {
    pub(crate) fn new(digest: Digest, declared: u64) -> Self {
        Self {
            hasher: Hasher::new(digest.algorithm()),
            digest,
            declared,
            seen: 0,
        }
    }

    /// The next chunk; `Err` says what is wrong with the blob.
    pub(crate) fn chunk(&mut self, chunk: &[u8]) -> Result<(), String> {
        self.seen = self.seen.saturating_add(chunk.len() as u64);
        if self.seen > self.declared {
            return Err(format!(
                "the source sent more than the {} bytes the manifest declares",
                self.declared
            ));
        }
        self.hasher.update(chunk);
        Ok(())
    }

    /// The stream ended: it must have been the whole blob.
    pub(crate) fn finish(self) -> Result<(), String> {
        if self.seen != self.declared {
            return Err(format!(
                "the source sent {} bytes, the manifest declares {}",
                self.seen, self.declared
            ));
        }
        let actual = self.hasher.finish();
        if actual != self.digest.to_string() {
            return Err(format!(
                "the source served content that does not match its digest (it is {actual})"
            ));
        }
        Ok(())
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
    fn blobs_are_checked_for_size_and_digest_as_they_stream() {
        let digest = Digest::parse(&digest_of(b"hello", Algorithm::Sha512)).expect("digest");
        let mut whole = BlobCheck::new(digest.clone(), 5);
        assert!(whole.chunk(b"hel").is_ok() && whole.chunk(b"lo").is_ok());
        assert!(whole.finish().is_ok());
        let mut long = BlobCheck::new(digest.clone(), 4);
        assert!(
            long.chunk(b"hello")
                .is_err_and(|e| e.contains("more than the 4"))
        );
        let mut short = BlobCheck::new(digest.clone(), 6);
        assert!(short.chunk(b"hello").is_ok());
        assert!(short.finish().is_err_and(|e| e.contains("5 bytes")));
        let mut other = BlobCheck::new(digest, 5);
        assert!(other.chunk(b"hellO").is_ok());
        assert!(other.finish().is_err_and(|e| e.contains("does not match")));
    }

    #[test]
    fn every_allowed_algorithm_verifies() {
        for algorithm in [Algorithm::Sha256, Algorithm::Sha384, Algorithm::Sha512] {
            let digest = Digest::parse(&digest_of(b"hello", algorithm)).expect("valid digest");
            assert!(matches(b"hello", &digest));
            assert!(!matches(b"hellO", &digest));
        }
    }
}
