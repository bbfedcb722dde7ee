//! Parsing and normalization of image references, as Docker and containerd do it
//! (the grammar of `github.com/distribution/reference`, `ParseNormalizedNamed`).
//!
//! ```text
//! reference        := name [ ":" tag ] [ "@" digest ]
//! name             := [domain '/'] path-component ['/' path-component]*
//! domain           := host [':' port]        host := domain-name | '[' ipv6 ']'
//! domain-name      := domain-component ['.' domain-component]*
//! domain-component := [a-zA-Z0-9] | [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]
//! path-component   := [a-z0-9]+ (separator [a-z0-9]+)*      separator := [_.] | __ | [-]+
//! tag              := [\w][\w.-]{0,127}
//! digest           := algorithm ":" hex      (sha256: 64, sha384: 96, sha512: 128 lowercase hex)
//! ```

use std::fmt;

use crate::TAG_MAX_LEN;
use crate::digest::Digest;
use crate::error::ReferenceError;

/// Docker Hub's canonical domain.
pub const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's legacy domain, rewritten to [`DOCKER_HUB`].
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
/// The namespace Docker Hub gives single-component names.
const OFFICIAL_NAMESPACE: &str = "library";
/// Longest name (domain and path, after normalization) Docker accepts.
pub const NAME_MAX_LEN: usize = 255;
/// The tag implied when a reference names neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";

/// A normalized image reference: always has a domain, Docker Hub names carry `library/`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses any reference a Pod could name and normalizes it the way the container runtime
    /// will (`nginx` → `docker.io/library/nginx`, implied tag `latest`).
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if let Some(c) = input.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(ReferenceError::InvalidCharacter { character: c });
        }
        if is_bare_identifier(input) {
            return Err(ReferenceError::BareIdentifier);
        }

        let (name_and_tag, digest) = match input.split_once('@') {
            Some((rest, digest)) => (rest, Some(Digest::parse(digest)?)),
            None => (input, None),
        };
        if name_and_tag.is_empty() {
            return Err(ReferenceError::EmptyName);
        }
        // A tag follows the last ':' that comes after the last '/'; an earlier ':' is a port.
        let last_slash = name_and_tag.rfind('/');
        let (name, tag) = match name_and_tag.rfind(':') {
            Some(colon) if last_slash.is_none_or(|slash| colon > slash) => {
                let tag = &name_and_tag[colon + 1..];
                validate_tag(tag)?;
                (&name_and_tag[..colon], Some(tag.to_owned()))
            }
            _ => (name_and_tag, None),
        };
        if name.is_empty() {
            return Err(ReferenceError::EmptyName);
        }

        let (domain, path) = split_domain(name);
        validate_domain(domain)?;
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(ReferenceError::UppercasePath {
                path: path.to_owned(),
            });
        }
        let path = if domain == DOCKER_HUB_LEGACY || domain == DOCKER_HUB {
            normalize_hub_path(path)
        } else {
            path.to_owned()
        };
        let domain = if domain == DOCKER_HUB_LEGACY {
            DOCKER_HUB
        } else {
            domain
        };
        validate_path(&path)?;

        let len = domain.len() + 1 + path.len();
        if len > NAME_MAX_LEN {
            return Err(ReferenceError::NameTooLong { len });
        }
        Ok(Self {
            domain: domain.to_owned(),
            path,
            tag,
            digest,
        })
    }

    /// Builds a reference from parts that are already valid and normalized (used by target
    /// naming, whose output is valid by construction). Checked again all the same.
    pub fn from_parts(
        domain: &str,
        path: &str,
        tag: Option<&str>,
        digest: Option<&Digest>,
    ) -> Result<Self, ReferenceError> {
        validate_domain(domain)?;
        validate_path(path)?;
        if let Some(tag) = tag {
            validate_tag(tag)?;
        }
        let len = domain.len() + 1 + path.len();
        if len > NAME_MAX_LEN {
            return Err(ReferenceError::NameTooLong { len });
        }
        Ok(Self {
            domain: domain.to_owned(),
            path: path.to_owned(),
            tag: tag.map(str::to_owned),
            digest: digest.cloned(),
        })
    }

    /// The registry host, with its port if any (`docker.io`, `localhost:5000`, `[::1]:5000`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path inside the registry (`library/nginx`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Domain and path: what Docker calls the name (`docker.io/library/nginx`).
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The tag as written, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest as written, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The tag the runtime resolves: the written one, or `latest` when there is neither tag
    /// nor digest. A digest-only reference has no tag.
    pub fn effective_tag(&self) -> Option<&str> {
        match (&self.tag, &self.digest) {
            (Some(tag), _) => Some(tag),
            (None, None) => Some(DEFAULT_TAG),
            (None, Some(_)) => None,
        }
    }

    /// True when the reference named neither tag nor digest (`latest` is implied).
    pub fn is_untagged(&self) -> bool {
        self.tag.is_none() && self.digest.is_none()
    }

    /// The same image pinned to `digest`, keeping the tag.
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            digest: Some(digest),
            ..self.clone()
        }
    }
}

/// The canonical form: `domain/path[:tag][@digest]`, with `:latest` when neither is given.
impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(tag) = self.effective_tag() {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Docker refuses a bare 64-hex string: it would be ambiguous with an image ID.
fn is_bare_identifier(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Docker's `splitDockerDomain`: the first component is a domain when it contains `.` or `:`,
/// is `localhost`, or has an uppercase letter (paths cannot); otherwise the domain is Docker Hub.
fn split_domain(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => (DOCKER_HUB, name),
    }
}

fn normalize_hub_path(path: &str) -> String {
    if path.contains('/') {
        path.to_owned()
    } else {
        format!("{OFFICIAL_NAMESPACE}/{path}")
    }
}

/// Checks a registry host (`host[:port]`, `[ipv6][:port]`) against the reference grammar.
pub fn validate_domain(domain: &str) -> Result<(), ReferenceError> {
    let invalid = |reason: &'static str| ReferenceError::InvalidDomain {
        domain: domain.to_owned(),
        reason,
    };
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or(invalid("unclosed '[' in IPv6 address"))?;
        if inside.is_empty() || !inside.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err(invalid("an IPv6 address holds only hex digits and ':'"));
        }
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or(invalid("unexpected text after ']'"))?,
            ),
        };
        (None, port)
    } else {
        match domain.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(domain), None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(invalid("the port must be digits"));
    }
    if let Some(host) = host {
        if host.is_empty() {
            return Err(invalid("empty host"));
        }
        for component in host.split('.') {
            if component.is_empty() {
                return Err(invalid("empty component between dots"));
            }
            if !component
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(invalid("a host holds only letters, digits, '-' and '.'"));
            }
            if component.starts_with('-') || component.ends_with('-') {
                return Err(invalid("a host component cannot start or end with '-'"));
            }
        }
    }
    Ok(())
}

pub(crate) fn validate_path(path: &str) -> Result<(), ReferenceError> {
    if path.is_empty() {
        return Err(ReferenceError::EmptyName);
    }
    for component in path.split('/') {
        validate_path_component(component).map_err(|reason| {
            ReferenceError::InvalidPathComponent {
                component: component.to_owned(),
                reason,
            }
        })?;
    }
    Ok(())
}

/// `[a-z0-9]+ ( ( [._] | __ | -+ ) [a-z0-9]+ )*`
fn validate_path_component(component: &str) -> Result<(), &'static str> {
    if component.is_empty() {
        return Err("empty path component (doubled or trailing '/')");
    }
    let bytes = component.as_bytes();
    let is_alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !is_alnum(bytes[0]) || !is_alnum(bytes[bytes.len() - 1]) {
        return Err("a path component must start and end with a lowercase letter or digit");
    }
    let mut i = 0;
    while i < bytes.len() {
        if is_alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !is_alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let valid = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !valid {
            return Err("path separators are '.', '_', '__' or dashes, between letters or digits");
        }
    }
    Ok(())
}

pub(crate) fn validate_tag(tag: &str) -> Result<(), ReferenceError> {
    let invalid = |reason: &'static str| ReferenceError::InvalidTag {
        tag: tag.to_owned(),
        reason,
    };
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    match chars.next() {
        None => return Err(invalid("empty tag after ':'")),
        Some(first) if !is_word(first) => {
            return Err(invalid("a tag must start with a letter, digit or '_'"));
        }
        Some(_) => {}
    }
    if !chars.all(|c| is_word(c) || c == '.' || c == '-') {
        return Err(invalid(
            "a tag holds only letters, digits, '_', '.' and '-'",
        ));
    }
    if tag.len() > TAG_MAX_LEN {
        return Err(invalid("a tag is at most 128 characters"));
    }
    Ok(())
}
