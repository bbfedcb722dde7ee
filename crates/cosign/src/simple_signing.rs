//! cosign's simple signing payload: `{"critical": {"image": {"docker-manifest-digest": …},
//! "type": "cosign container image signature", …}, "optional": …}`, signed as bytes.

use serde::Deserialize;

use crate::PublicKeys;

#[derive(Deserialize)]
struct Payload {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    image: Image,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    digest: String,
}

const SIGNATURE_TYPE: &str = "cosign container image signature";

/// The name of the key that signed `payload`, if the payload names `digest`; else why not.
pub(crate) fn check(
    keys: &PublicKeys,
    digest: &str,
    payload: &[u8],
    signature: &str,
) -> Result<String, String> {
    let signature = crate::base64_decode(signature, "the signature annotation")?;
    // The signature first: an unsigned payload's claims are not worth reporting.
    let key = keys
        .signer(payload, &signature)
        .ok_or_else(|| format!("the signature does not verify with {}", keys.described()))?;
    let parsed: Payload = serde_json::from_slice(payload)
        .map_err(|e| format!("the signed payload is not a cosign simple signing payload: {e}"))?;
    if !parsed.critical.kind.eq_ignore_ascii_case(SIGNATURE_TYPE) {
        return Err(format!(
            "the signed payload's type is {:?}, not {SIGNATURE_TYPE:?}",
            shorten(&parsed.critical.kind)
        ));
    }
    if parsed.critical.image.digest != digest {
        return Err(format!(
            "the signature is valid but signs {}, not {digest}",
            shorten(&parsed.critical.image.digest)
        ));
    }
    Ok(key.name().to_owned())
}

/// At most 80 characters of something a registry sent, for a message.
pub(crate) fn shorten(text: &str) -> String {
    text.chars().take(80).collect()
}
