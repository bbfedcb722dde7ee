//! Where a source image is mirrored: `<registry>/<prefix>/<source host>/<source path>`.
//!
//! The repository part is always a valid ECR repository name, and distinct sources never share
//! a repository. The mapping, in order:
//!
//! 1. A source already in the target registry maps to itself (no mirror of a mirror).
//! 2. The source host becomes one path component:
//!    - a host that is already a valid ECR component stays as it is: `registry.k8s.io`;
//!    - a port is joined with `_`: `localhost:5000` → `localhost_5000` (hosts never contain
//!      `_`, so this cannot meet a real host name);
//!    - anything else (uppercase letters, `--`, IPv6 brackets) becomes `host_x` and the hex of
//!      the whole `host[:port]`: `[::1]:5000` → `host_x5b3a3a315d3a35303030`.
//! 3. The source path stays as it is when ECR accepts it, which is nearly always.
//! 4. When ECR would refuse it (Docker allows `__` and runs of `-`, ECR does not), or the whole
//!    name is too long, the name is made valid (`__` → `_`, `--` → `-`, cut to length) and gets
//!    the suffix `-h` + 16 hex of the SHA-256 of the source name. A path that already ends in
//!    such a suffix is treated the same way, so an untouched name never looks like a hashed one.
//!
//! Length: ECR allows 256 characters, and Docker refuses names over 255 including the
//! registry, so the repository gets `min(256, 254 - len(registry))`.
//! Tag and digest are kept.

use sha2::{Digest as _, Sha256};

use crate::error::TargetError;
use crate::reference::{NAME_MAX_LEN, Reference, validate_domain};

/// ECR's limit on a repository name.
pub const ECR_REPOSITORY_MAX_LEN: usize = 256;
const HASH_MARKER: &str = "-h";
const HASH_HEX_LEN: usize = 16;

/// The naming rule for one target registry and prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetNaming {
    registry: String,
    prefix: String,
}

impl TargetNaming {
    /// `registry` is a host with optional port; `prefix` may be empty or `a/b` style.
    pub fn new(registry: &str, prefix: &str) -> Result<Self, TargetError> {
        validate_domain(registry).map_err(|source| TargetError::InvalidRegistry {
            registry: registry.to_owned(),
            source,
        })?;
        let prefix = prefix.trim_matches('/');
        if !prefix.is_empty() && !is_ecr_repository_path(prefix) {
            return Err(TargetError::InvalidPrefix {
                prefix: prefix.to_owned(),
            });
        }
        let naming = Self {
            registry: registry.to_owned(),
            prefix: prefix.to_owned(),
        };
        // Room for at least a host component and a hashed path.
        if naming.prefix.len() + 2 * (HASH_MARKER.len() + HASH_HEX_LEN + 2) > naming.max_len() {
            return Err(TargetError::PrefixTooLong {
                prefix: naming.prefix,
                registry: naming.registry,
            });
        }
        Ok(naming)
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// True when `source` already lives in the target registry.
    pub fn is_in_target(&self, source: &Reference) -> bool {
        source.domain() == self.registry
    }

    /// The target reference for `source`, tag and digest kept.
    pub fn target(&self, source: &Reference) -> Result<Reference, TargetError> {
        if self.is_in_target(source) {
            return Ok(source.clone());
        }
        let repository = self.repository(source);
        // Valid by construction (the property tests hold it to that); checked all the same so
        // that a mistake here is an error for one image, not a crash of the webhook.
        Reference::from_parts(&self.registry, &repository, source.tag(), source.digest()).map_err(
            |reason| TargetError::Unrepresentable {
                source_ref: source.to_string(),
                reason,
            },
        )
    }

    /// The target repository name (without registry) for `source`.
    pub fn repository(&self, source: &Reference) -> String {
        if self.is_in_target(source) {
            return source.path().to_owned();
        }
        let host = host_segment(source.domain());
        let plain = self.join(&host, source.path());
        if is_ecr_repository_path(source.path())
            && !has_hash_suffix(source.path())
            && plain.len() <= self.max_len()
        {
            return plain;
        }
        let sanitized = self.join(&host, &sanitize_path(source.path()));
        let keep = self.max_len() - HASH_MARKER.len() - HASH_HEX_LEN;
        let mut cut = sanitized[..sanitized.len().min(keep)].to_owned();
        while cut.ends_with(['.', '_', '-', '/']) {
            cut.pop();
        }
        format!("{cut}{HASH_MARKER}{}", short_hash(&source.name()))
    }

    fn join(&self, host: &str, path: &str) -> String {
        if self.prefix.is_empty() {
            format!("{host}/{path}")
        } else {
            format!("{}/{host}/{path}", self.prefix)
        }
    }

    fn max_len(&self) -> usize {
        ECR_REPOSITORY_MAX_LEN.min(NAME_MAX_LEN.saturating_sub(1 + self.registry.len()))
    }
}

/// ECR's repository name rule:
/// `(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*`, 2 to 256 characters.
pub fn is_ecr_repository_name(name: &str) -> bool {
    (2..=ECR_REPOSITORY_MAX_LEN).contains(&name.len()) && is_ecr_repository_path(name)
}

fn is_ecr_repository_path(path: &str) -> bool {
    path.split('/').all(is_ecr_component)
}

/// `[a-z0-9]+(?:[._-][a-z0-9]+)*`
fn is_ecr_component(component: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = component.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    alnum(first)
        && alnum(last)
        && bytes
            .iter()
            .all(|&b| alnum(b) || matches!(b, b'.' | b'_' | b'-'))
        && !bytes.windows(2).any(|w| !alnum(w[0]) && !alnum(w[1]))
}

fn host_segment(domain: &str) -> String {
    let (host, port) = match domain.rsplit_once(':') {
        Some((host, port)) if !domain.starts_with('[') => (host, Some(port)),
        _ => (domain, None),
    };
    if is_ecr_component(host) {
        match port {
            None => host.to_owned(),
            Some(port) => format!("{host}_{port}"),
        }
    } else {
        format!("host_x{}", hex(domain.as_bytes()))
    }
}

/// Docker path → ECR path: `__` → `_`, runs of `-` → `-` (the only differences in grammar).
fn sanitize_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        let is_sep = matches!(c, '_' | '-');
        if is_sep && out.ends_with(c) {
            continue;
        }
        out.push(c);
    }
    out
}

fn has_hash_suffix(path: &str) -> bool {
    let Some(at) = path.len().checked_sub(HASH_MARKER.len() + HASH_HEX_LEN) else {
        return false;
    };
    path.is_char_boundary(at)
        && path[at..].starts_with(HASH_MARKER)
        && path[at + HASH_MARKER.len()..]
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

pub(crate) fn short_hash(input: &str) -> String {
    let digest = Sha256::digest(input.as_bytes());
    let mut out = hex(&digest);
    out.truncate(HASH_HEX_LEN);
    out
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
