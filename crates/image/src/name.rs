//! The `ImageMirror` object name for a normalized reference.
//!
//! Deterministic, so that the webhook and a person pre-warming the same image land on the same
//! object; readable (`docker.io-library-nginx-1.25-<hash>`); always a valid DNS-1123 subdomain
//! (lowercase letters, digits, `-` and `.`, labels start and end alphanumeric, ≤ 253).
//! The readable part is lossy (case, `_`, `:` and `/` fold to `-`), so the name ends with
//! 12 hex of the SHA-256 of the canonical reference, which keeps distinct references apart.

use crate::reference::Reference;
use crate::target::short_hash;

/// Kubernetes' limit on a DNS-1123 subdomain.
pub const OBJECT_NAME_MAX_LEN: usize = 253;
const NAME_HASH_LEN: usize = 12;
/// How much of a digest's hex the readable part shows.
const DIGEST_SHOWN: usize = 12;

/// The `ImageMirror` name for `reference` (which is normalized by construction).
pub fn object_name(reference: &Reference) -> String {
    let mut readable = reference.name();
    if let Some(tag) = reference.effective_tag() {
        readable.push('-');
        readable.push_str(tag);
    }
    if let Some(digest) = reference.digest() {
        readable.push('-');
        readable.push_str(digest.algorithm().as_str());
        readable.push('-');
        readable.push_str(&digest.hex()[..DIGEST_SHOWN]);
    }
    let mut name = dns_tokens(&readable);
    name.truncate(OBJECT_NAME_MAX_LEN - 1 - NAME_HASH_LEN);
    while name.ends_with(['-', '.']) {
        name.pop();
    }
    let mut hash = short_hash(&reference.to_string());
    hash.truncate(NAME_HASH_LEN);
    format!("{name}-{hash}")
}

/// Runs of `[a-z0-9]` joined by `.` where the input had a single `.`, and by `-` otherwise.
fn dns_tokens(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    let mut separator = String::new();
    for c in input.chars().map(|c| c.to_ascii_lowercase()) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            if !out.is_empty() && !separator.is_empty() {
                out.push(if separator == "." { '.' } else { '-' });
            }
            separator.clear();
            out.push(c);
        } else {
            separator.push(c);
        }
    }
    out
}

/// True when `name` is a valid DNS-1123 subdomain (what Kubernetes wants for object names).
pub fn is_dns1123_subdomain(name: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !name.is_empty()
        && name.len() <= OBJECT_NAME_MAX_LEN
        && name.split('.').all(|label| {
            let bytes = label.as_bytes();
            matches!((bytes.first(), bytes.last()), (Some(&f), Some(&l)) if alnum(f) && alnum(l))
                && bytes.iter().all(|&b| alnum(b) || b == b'-')
        })
}
