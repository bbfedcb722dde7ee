//! Public keys from PEM (`-----BEGIN PUBLIC KEY-----`, SubjectPublicKeyInfo), as
//! `cosign generate-key-pair` and `openssl pkey -pubout` write them.

use aws_lc_rs::signature::{self, ParsedPublicKey, VerificationAlgorithm};

/// A key that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("public key {name}: {reason}")]
pub struct KeyError {
    pub name: String,
    pub reason: String,
}

/// One public key, parsed for every signature scheme cosign may have used with its type.
pub struct PublicKey {
    /// Where it came from (a file name, a Secret key), for messages.
    name: String,
    kind: &'static str,
    schemes: Vec<ParsedPublicKey>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({}, {})", self.name, self.kind)
    }
}

/// The algorithms each key type is tried with, in order. cosign hashes with SHA-256 unless
/// the curve calls for more; RSA keys sign PKCS#1 v1.5 by default, PSS when asked.
const KINDS: [(&str, &[&'static dyn VerificationAlgorithm]); 5] = [
    ("ECDSA P-256", &[&signature::ECDSA_P256_SHA256_ASN1]),
    (
        "ECDSA P-384",
        &[
            &signature::ECDSA_P384_SHA384_ASN1,
            &signature::ECDSA_P384_SHA256_ASN1,
        ],
    ),
    (
        "ECDSA P-521",
        &[
            &signature::ECDSA_P521_SHA512_ASN1,
            &signature::ECDSA_P521_SHA256_ASN1,
        ],
    ),
    (
        "RSA",
        &[
            &signature::RSA_PKCS1_2048_8192_SHA256,
            &signature::RSA_PSS_2048_8192_SHA256,
        ],
    ),
    ("Ed25519", &[&signature::ED25519]),
];

/// Longest PEM text taken: an RSA-8192 public key is under 1.5 KiB.
const PEM_MAX: usize = 64 << 10;

impl PublicKey {
    /// Parse one PEM public key; `name` says where it came from.
    pub fn parse_pem(name: &str, pem: &[u8]) -> Result<Self, KeyError> {
        let error = |reason: String| KeyError {
            name: name.to_owned(),
            reason,
        };
        let der = pem_body(pem).map_err(error)?;
        for (kind, algorithms) in KINDS {
            let schemes: Vec<ParsedPublicKey> = algorithms
                .iter()
                .filter_map(|algorithm| ParsedPublicKey::new(*algorithm, &der).ok())
                .collect();
            if !schemes.is_empty() {
                return Ok(Self {
                    name: name.to_owned(),
                    kind,
                    schemes,
                });
            }
        }
        Err(error(
            "not an ECDSA (P-256, P-384, P-521), RSA (2048 to 8192 bits) or Ed25519 public key"
                .into(),
        ))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ECDSA P-256`, `RSA`, `Ed25519`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Does `signature` sign `message` with this key, under any scheme of its type?
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        self.schemes
            .iter()
            .any(|key| key.verify_sig(message, signature).is_ok())
    }
}

/// The keys a verification accepts: any one of them is enough.
#[derive(Debug, Default)]
pub struct PublicKeys(Vec<PublicKey>);

impl PublicKeys {
    pub fn new(keys: Vec<PublicKey>) -> Self {
        Self(keys)
    }

    /// Parse `(name, PEM)` pairs; the first key that cannot be used is the error.
    pub fn parse_all<'a>(
        named: impl IntoIterator<Item = (String, &'a [u8])>,
    ) -> Result<Self, KeyError> {
        named
            .into_iter()
            .map(|(name, pem)| PublicKey::parse_pem(&name, pem))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &PublicKey> {
        self.0.iter()
    }

    /// The first key under which `signature` signs `message`.
    pub(crate) fn signer(&self, message: &[u8], signature: &[u8]) -> Option<&PublicKey> {
        self.0.iter().find(|key| key.verifies(message, signature))
    }

    /// What was tried, for a rejection: `2 keys (a.pub ECDSA P-256, b.pub RSA)`.
    pub(crate) fn described(&self) -> String {
        let names: Vec<String> = self
            .0
            .iter()
            .map(|key| format!("{} {}", key.name, key.kind))
            .collect();
        match names.len() {
            1 => format!("the key {}", names[0]),
            n => format!("{n} keys ({})", names.join(", ")),
        }
    }
}

/// The DER inside one `PUBLIC KEY` PEM block.
fn pem_body(pem: &[u8]) -> Result<Vec<u8>, String> {
    if pem.len() > PEM_MAX {
        return Err(format!(
            "{} bytes, more than a public key PEM ({PEM_MAX})",
            pem.len()
        ));
    }
    let text = std::str::from_utf8(pem).map_err(|_| "not PEM text (not UTF-8)".to_owned())?;
    let begin = "-----BEGIN PUBLIC KEY-----";
    let end = "-----END PUBLIC KEY-----";
    let start = text.find(begin).ok_or_else(|| {
        if text.contains("PRIVATE KEY") {
            "this is a private key; give the public one (cosign.pub)".to_owned()
        } else {
            format!("no {begin} block")
        }
    })?;
    let body = &text[start + begin.len()..];
    let stop = body
        .find(end)
        .ok_or_else(|| format!("{begin} without {end}"))?;
    let base64: String = body[..stop].split_whitespace().collect();
    crate::base64_decode(&base64, "the PEM body")
}
