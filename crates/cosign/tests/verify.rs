//! Signatures made here with aws-lc-rs in the shapes cosign writes, verified by the crate.

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use base64::Engine as _;
use privateer_cosign::{Candidate, PublicKey, PublicKeys, Verdict, verify};

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const OTHER: &str = "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn pem(der: &[u8]) -> Vec<u8> {
    let body = b64(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    )
    .into_bytes()
}

fn payload(digest: &str) -> Vec<u8> {
    format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"registry.test/app"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
    )
    .into_bytes()
}

struct P256(EcdsaKeyPair);

impl P256 {
    fn new() -> Self {
        Self(EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_ASN1_SIGNING).expect("generate"))
    }
    fn public(&self, name: &str) -> PublicKey {
        let der: PublicKeyX509Der = self.0.public_key().as_der().expect("der");
        PublicKey::parse_pem(name, &pem(der.as_ref())).expect("parses")
    }
    fn simple_signing(&self, digest: &str) -> Candidate {
        let payload = payload(digest);
        let sig = self.0.sign(&SystemRandom::new(), &payload).expect("sign");
        Candidate::SimpleSigning {
            origin: "sha256-test.sig layer 0".into(),
            payload,
            signature: b64(sig.as_ref()),
        }
    }
}

#[test]
fn a_simple_signing_signature_by_the_key_verifies() {
    let signer = P256::new();
    let keys = PublicKeys::new(vec![signer.public("cosign.pub")]);
    assert_eq!(keys.iter().next().map(PublicKey::kind), Some("ECDSA P-256"));
    let verdict = verify(&keys, DIGEST, &[signer.simple_signing(DIGEST)]);
    assert_eq!(
        verdict,
        Verdict::Verified {
            origin: "sha256-test.sig layer 0".into(),
            key: "cosign.pub".into()
        }
    );
}

#[test]
fn another_key_is_refused_and_the_reason_names_the_keys_tried() {
    let signer = P256::new();
    let keys = PublicKeys::new(vec![P256::new().public("other.pub")]);
    match verify(&keys, DIGEST, &[signer.simple_signing(DIGEST)]) {
        Verdict::Invalid(rejections) => {
            assert_eq!(rejections.len(), 1);
            assert!(
                rejections[0]
                    .reason
                    .contains("does not verify with the key other.pub"),
                "{rejections:?}"
            );
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn a_valid_signature_of_another_digest_is_refused() {
    let signer = P256::new();
    let keys = PublicKeys::new(vec![signer.public("cosign.pub")]);
    match verify(&keys, DIGEST, &[signer.simple_signing(OTHER)]) {
        Verdict::Invalid(rejections) => {
            assert!(rejections[0].reason.contains(OTHER), "{rejections:?}");
            assert!(rejections[0].reason.contains(DIGEST), "{rejections:?}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn nothing_to_check_is_missing_and_one_good_candidate_among_bad_ones_is_enough() {
    let signer = P256::new();
    let keys = PublicKeys::new(vec![P256::new().public("a.pub"), signer.public("b.pub")]);
    assert_eq!(verify(&keys, DIGEST, &[]), Verdict::Missing);
    let garbage = Candidate::SimpleSigning {
        origin: "garbage".into(),
        payload: b"{}".to_vec(),
        signature: "not base64!".into(),
    };
    let verdict = verify(&keys, DIGEST, &[garbage, signer.simple_signing(DIGEST)]);
    assert!(
        matches!(&verdict, Verdict::Verified { key, .. } if key == "b.pub"),
        "{verdict:?}"
    );
}

#[test]
fn rsa_and_ed25519_keys_verify_their_signatures() {
    let rsa = RsaKeyPair::generate(KeySize::Rsa2048).expect("generate");
    let der: PublicKeyX509Der = rsa.public_key().as_der().expect("der");
    let rsa_key = PublicKey::parse_pem("rsa.pub", &pem(der.as_ref())).expect("parses");
    assert_eq!(rsa_key.kind(), "RSA");
    let payload = payload(DIGEST);
    let mut sig = vec![0; rsa.public_modulus_len()];
    rsa.sign(
        &signature::RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        &payload,
        &mut sig,
    )
    .expect("sign");
    let keys = PublicKeys::new(vec![rsa_key]);
    let candidate = Candidate::SimpleSigning {
        origin: "rsa".into(),
        payload,
        signature: b64(&sig),
    };
    assert!(matches!(
        verify(&keys, DIGEST, &[candidate]),
        Verdict::Verified { .. }
    ));

    // A sigstore bundle: DSSE over an in-toto statement about the digest, Ed25519-signed.
    let ed = Ed25519KeyPair::generate().expect("generate");
    let der: PublicKeyX509Der = ed.public_key().as_der().expect("der");
    let ed_key = PublicKey::parse_pem("ed.pub", &pem(der.as_ref())).expect("parses");
    assert_eq!(ed_key.kind(), "Ed25519");
    let keys = PublicKeys::new(vec![ed_key]);
    let bundle = |subject: &str| {
        let hex = subject.trim_start_matches("sha256:");
        let statement = format!(
            r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"name":"registry.test/app","digest":{{"sha256":"{hex}"}}}}],"predicateType":"https://sigstore.dev/cosign/sign/v1","predicate":{{}}}}"#
        );
        let kind = "application/vnd.in-toto+json";
        let mut pae = format!("DSSEv1 {} {kind} {} ", kind.len(), statement.len()).into_bytes();
        pae.extend_from_slice(statement.as_bytes());
        let sig = ed.sign(&pae);
        let json = format!(
            r#"{{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{{}},"dsseEnvelope":{{"payload":"{}","payloadType":"{kind}","signatures":[{{"sig":"{}"}}]}}}}"#,
            b64(statement.as_bytes()),
            b64(sig.as_ref())
        );
        Candidate::Bundle {
            origin: "referrer".into(),
            json: json.into_bytes(),
        }
    };
    assert!(matches!(
        verify(&keys, DIGEST, &[bundle(DIGEST)]),
        Verdict::Verified { .. }
    ));
    match verify(&keys, DIGEST, &[bundle(OTHER)]) {
        Verdict::Invalid(rejections) => {
            assert!(rejections[0].reason.contains("is about"), "{rejections:?}")
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn keys_that_cannot_be_used_say_why() {
    let private = b"-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\n";
    let error = PublicKey::parse_pem("cosign.key", private).expect_err("refused");
    assert!(error.to_string().contains("private key"), "{error}");
    let error = PublicKey::parse_pem("x.pub", b"hello").expect_err("refused");
    assert!(error.to_string().contains("BEGIN PUBLIC KEY"), "{error}");
    let junk = pem(b"\x30\x03\x02\x01\x01");
    let error = PublicKey::parse_pem("junk.pub", &junk).expect_err("refused");
    assert!(error.to_string().contains("not an ECDSA"), "{error}");
}
