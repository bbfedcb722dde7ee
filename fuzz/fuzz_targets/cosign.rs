//! Any bytes as what a registry serves for a signature (a simple-signing payload and its
//! annotation, a sigstore bundle) and as a key file: checking never panics, and nothing a
//! registry sends verifies without the key's signature.
#![no_main]

use libfuzzer_sys::fuzz_target;
use privateer_registry::cosign::{Candidate, PublicKey, PublicKeys, Verdict, verify};

// A P-256 public key made by `cosign generate-key-pair`; its private half was discarded.
const KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEGY3A0mbZObE6B9j61arfcrScmL0j
ofwQO1zl0A3kOyN3hECUHjkJx31GRim6rjmAw43z1/BPlKcg177KpoRK/g==
-----END PUBLIC KEY-----
";

fuzz_target!(|data: &[u8]| {
    let _ = PublicKey::parse_pem("fuzzed.pub", data);
    let Ok(key) = PublicKey::parse_pem("test.pub", KEY.as_bytes()) else {
        return;
    };
    let keys = PublicKeys::new(vec![key]);
    let (signature, payload) = data.split_at(data.len().min(96));
    let candidates = [
        Candidate::SimpleSigning {
            origin: "fuzzed .sig".into(),
            payload: payload.to_vec(),
            signature: String::from_utf8_lossy(signature).into_owned(),
        },
        Candidate::Bundle {
            origin: "fuzzed bundle".into(),
            json: data.to_vec(),
        },
    ];
    let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    assert!(!matches!(
        verify(&keys, digest, &candidates),
        Verdict::Verified { .. }
    ));
});
