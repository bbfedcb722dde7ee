//! Sigstore bundles (v0.1 to v0.3) holding a DSSE envelope over an in-toto statement, as
//! `cosign sign --key … --new-bundle-format` attaches them as OCI 1.1 referrers. The DSSE
//! signature is over PAE(payloadType, payload); the statement's subject carries the digest.

use serde::Deserialize;

use crate::PublicKeys;
use crate::simple_signing::shorten;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bundle {
    dsse_envelope: Option<Envelope>,
    message_signature: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    payload: String,
    payload_type: String,
    signatures: Vec<Signature>,
}

#[derive(Deserialize)]
struct Signature {
    sig: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Statement {
    #[serde(default)]
    subject: Vec<Subject>,
    #[serde(default)]
    predicate_type: String,
}

#[derive(Deserialize)]
struct Subject {
    #[serde(default)]
    digest: std::collections::BTreeMap<String, String>,
}

const IN_TOTO: &str = "application/vnd.in-toto+json";
/// What cosign signs an image with in a bundle; any other predicate is an attestation, which
/// says something about the image rather than signing it.
const SIGNATURE_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

/// The name of the key that signed the bundle's statement about `digest`; else why not.
pub(crate) fn check(keys: &PublicKeys, digest: &str, json: &[u8]) -> Result<String, String> {
    let bundle: Bundle =
        serde_json::from_slice(json).map_err(|e| format!("not a sigstore bundle: {e}"))?;
    let envelope = match (bundle.dsse_envelope, bundle.message_signature) {
        (Some(envelope), _) => envelope,
        (None, Some(_)) => {
            return Err("a message-signature bundle signs a blob, not an image digest".into());
        }
        (None, None) => {
            return Err("the bundle has neither dsseEnvelope nor messageSignature".into());
        }
    };
    if envelope.payload_type != IN_TOTO {
        return Err(format!(
            "the DSSE payload type is {:?}, not {IN_TOTO}",
            shorten(&envelope.payload_type)
        ));
    }
    let payload = crate::base64_decode(&envelope.payload, "the DSSE payload")?;
    let signed = pae(&envelope.payload_type, &payload);
    let key = envelope
        .signatures
        .iter()
        .filter_map(|s| crate::base64_decode(&s.sig, "a DSSE signature").ok())
        .find_map(|sig| keys.signer(&signed, &sig))
        .ok_or_else(|| {
            format!(
                "the DSSE signature does not verify with {}",
                keys.described()
            )
        })?;
    let statement: Statement = serde_json::from_slice(&payload)
        .map_err(|e| format!("the signed payload is not an in-toto statement: {e}"))?;
    if statement.predicate_type != SIGNATURE_PREDICATE {
        return Err(format!(
            "the statement is an attestation ({:?}), not a cosign signature ({SIGNATURE_PREDICATE})",
            shorten(&statement.predicate_type)
        ));
    }
    let (algorithm, hex) = digest
        .split_once(':')
        .ok_or_else(|| format!("{digest} is not algorithm:hex"))?;
    if statement
        .subject
        .iter()
        .any(|s| s.digest.get(algorithm).map(String::as_str) == Some(hex))
    {
        return Ok(key.name().to_owned());
    }
    let named: Vec<String> = statement
        .subject
        .iter()
        .flat_map(|s| s.digest.iter().map(|(a, h)| shorten(&format!("{a}:{h}"))))
        .collect();
    Err(format!(
        "the statement is validly signed but is about {}, not {digest}",
        if named.is_empty() {
            "no subject".to_owned()
        } else {
            named.join(", ")
        }
    ))
}

/// DSSE's pre-authentication encoding: `DSSEv1 <len> <type> <len> <payload>`.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}
