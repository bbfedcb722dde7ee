//! Manifests as the copier sees them: the exact bytes, their digest and media type, and the
//! descriptors they name. Parsed loosely (only what the copy needs) so unknown fields and
//! annotations survive untouched in the bytes that are pushed.

use bytes::Bytes;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::Limits;
use crate::error::{CopyError, ErrorClass};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// What the copier asks registries for.
pub const ACCEPTED: [&str; 4] = [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

/// Layers that live elsewhere (Windows base layers) and are not copied: these media types
/// exactly, not any type that merely mentions "foreign".
const NON_DISTRIBUTABLE: [&str; 4] = [
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
];

/// Longest `os`, `architecture` or `variant` taken as a platform; longer is no platform.
const PLATFORM_FIELD_MAX: usize = 64;

/// A content-addressed reference to a blob or manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    /// Foreign (non-distributable) layers live elsewhere and are not copied.
    pub foreign: bool,
}

/// A manifest entry of an index.
#[derive(Clone, Debug)]
pub struct Child {
    pub descriptor: Descriptor,
    pub platform: Option<Platform>,
    /// For attestation manifests: the child they describe.
    pub describes: Option<String>,
    raw: Value,
}

#[derive(Clone, Debug)]
pub enum Body {
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
    Index {
        children: Vec<Child>,
    },
}

/// A pulled manifest.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub bytes: Bytes,
    pub digest: String,
    pub media_type: String,
    pub body: Body,
    json: Value,
}

/// `os/arch[/variant]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Self {
                os: (*os).into(),
                architecture: (*arch).into(),
                variant: None,
            }),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => {
                Ok(Self {
                    os: (*os).into(),
                    architecture: (*arch).into(),
                    variant: Some((*variant).into()),
                })
            }
            _ => Err(format!(
                "platform {text:?}: expected os/arch or os/arch/variant (linux/arm64/v8)"
            )),
        }
    }

    /// Does an index entry's platform satisfy this filter? A filter without variant takes any.
    pub fn matches(&self, candidate: &Platform) -> bool {
        self.os == candidate.os
            && self.architecture == candidate.architecture
            && (self.variant.is_none() || self.variant == candidate.variant)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn over_limit(what: &str, counted: &str, value: usize, name: &str, limit: usize) -> CopyError {
    invalid(
        what,
        format!("it names {value} {counted}, over the limit {name} = {limit}"),
    )
}

fn invalid(what: &str, problem: impl std::fmt::Display) -> CopyError {
    CopyError::new(
        ErrorClass::Invalid,
        format!("read manifest {what}"),
        problem.to_string(),
    )
}

impl Manifest {
    /// Parse `bytes` pulled under `digest` (already verified by the client), within the
    /// count limits.
    pub fn parse(bytes: Bytes, digest: String, limits: &Limits) -> Result<Self, CopyError> {
        let json: Value = serde_json::from_slice(&bytes).map_err(|e| invalid(&digest, e))?;
        if json.get("schemaVersion").and_then(Value::as_i64) != Some(2) {
            return Err(invalid(
                &digest,
                "only schemaVersion 2 manifests (OCI, Docker v2 schema 2) can be copied",
            ));
        }
        let declared = json.get("mediaType").and_then(Value::as_str);
        let is_index = json.get("manifests").is_some();
        let media_type = match declared {
            Some(t) if ACCEPTED.contains(&t) => t.to_owned(),
            Some(t) => {
                let shown: String = t.chars().take(80).collect();
                return Err(invalid(
                    &digest,
                    format!("media type {shown:?} is not an OCI or Docker v2 manifest or index"),
                ));
            }
            // OCI allows leaving mediaType out; the shape tells which it is.
            None if is_index => OCI_INDEX.to_owned(),
            None => OCI_MANIFEST.to_owned(),
        };
        if is_index != matches!(media_type.as_str(), OCI_INDEX | DOCKER_LIST) {
            return Err(invalid(
                &digest,
                format!("declared {media_type} but shaped as the other kind"),
            ));
        }
        let body = if is_index {
            let entries = json
                .get("manifests")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid(&digest, "manifests is not a list"))?;
            if entries.len() > limits.index_children {
                return Err(over_limit(
                    &digest,
                    "manifests",
                    entries.len(),
                    "limits.indexChildren",
                    limits.index_children,
                ));
            }
            let children = entries
                .iter()
                .map(|entry| child(entry).map_err(|e| invalid(&digest, e)))
                .collect::<Result<_, _>>()?;
            Body::Index { children }
        } else {
            let config = json
                .get("config")
                .ok_or_else(|| invalid(&digest, "no config"))
                .and_then(|c| descriptor(c).map_err(|e| invalid(&digest, e)))?;
            let layers = match json.get("layers") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(layers)) if layers.len() > limits.layers => {
                    return Err(over_limit(
                        &digest,
                        "layers",
                        layers.len(),
                        "limits.layers",
                        limits.layers,
                    ));
                }
                Some(Value::Array(layers)) => layers
                    .iter()
                    .map(|l| descriptor(l).map_err(|e| invalid(&digest, e)))
                    .collect::<Result<_, _>>()?,
                Some(_) => return Err(invalid(&digest, "layers is not a list")),
            };
            Body::Image { config, layers }
        };
        Ok(Self {
            bytes,
            digest,
            media_type,
            body,
            json,
        })
    }

    /// The digest a registry addresses these bytes by when they are pushed under a tag: the
    /// sha256 one, whatever algorithm the source named them with.
    pub fn canonical_digest(&self) -> String {
        if self.digest.starts_with("sha256:") {
            self.digest.clone()
        } else {
            sha256_digest(&self.bytes)
        }
    }

    /// The blobs this manifest names that the target must hold (config first, then layers).
    pub fn blobs(&self) -> Vec<&Descriptor> {
        match &self.body {
            Body::Image { config, layers } => std::iter::once(config)
                .chain(layers)
                .filter(|d| !d.foreign)
                .collect(),
            Body::Index { .. } => Vec::new(),
        }
    }

    /// The manifest's JSON, for fields the copy itself does not need (subject, annotations).
    pub(crate) fn json(&self) -> &Value {
        &self.json
    }

    /// What an index lists (a referrers index lists artifacts); empty for an image.
    pub(crate) fn entries(&self) -> Vec<&Descriptor> {
        match &self.body {
            Body::Index { children } => children.iter().map(|c| &c.descriptor).collect(),
            Body::Image { .. } => Vec::new(),
        }
    }

    /// The digest this manifest says it refers to (OCI 1.1 `subject`).
    pub(crate) fn subject(&self) -> Option<&str> {
        self.json.get("subject")?.get("digest")?.as_str()
    }

    /// OCI 1.1's `artifactType`, else the config's media type (how an artifact says what it is).
    pub(crate) fn artifact_type(&self) -> Option<&str> {
        self.json
            .get("artifactType")
            .and_then(Value::as_str)
            .or_else(|| self.json.get("config")?.get("mediaType")?.as_str())
    }

    /// The platforms of an index's children (`linux/arm64/v8`); empty for a single image.
    pub fn platforms(&self) -> Vec<String> {
        match &self.body {
            Body::Index { children } => children
                .iter()
                .filter_map(|c| c.platform.as_ref().map(ToString::to_string))
                .collect(),
            Body::Image { .. } => Vec::new(),
        }
    }

    /// An index holding only the children for `platforms` (and the attestations describing
    /// them), with every kept entry exactly as it was. `None` when nothing matches.
    pub fn filtered_index(&self, platforms: &[Platform]) -> Option<Manifest> {
        let Body::Index { children } = &self.body else {
            return None;
        };
        let kept: Vec<&Child> = children
            .iter()
            .filter(|c| {
                c.platform
                    .as_ref()
                    .is_some_and(|p| platforms.iter().any(|f| f.matches(p)))
            })
            .collect();
        if kept.is_empty() {
            return None;
        }
        let kept_digests: Vec<&str> = kept.iter().map(|c| c.descriptor.digest.as_str()).collect();
        let attestations = children.iter().filter(|c| {
            c.describes
                .as_deref()
                .is_some_and(|d| kept_digests.contains(&d))
        });
        let entries: Vec<&Child> = kept.iter().copied().chain(attestations).collect();
        let mut json = self.json.clone();
        json["manifests"] = Value::Array(entries.iter().map(|c| c.raw.clone()).collect());
        let bytes = Bytes::from(serde_json::to_vec_pretty(&json).ok()?);
        let digest = sha256_digest(&bytes);
        Some(Manifest {
            body: Body::Index {
                children: entries.into_iter().cloned().collect(),
            },
            media_type: self.media_type.clone(),
            bytes,
            digest,
            json,
        })
    }
}

fn descriptor(value: &Value) -> Result<Descriptor, String> {
    let digest = value
        .get("digest")
        .and_then(Value::as_str)
        .ok_or("a descriptor has no digest")?;
    privateer_image::Digest::parse(digest).map_err(|e| format!("descriptor digest: {e}"))?;
    let size = value
        .get("size")
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("descriptor {digest} has no size"))?;
    let media_type = value
        .get("mediaType")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let foreign = NON_DISTRIBUTABLE.contains(&media_type.as_str());
    Ok(Descriptor {
        digest: digest.to_owned(),
        size,
        media_type,
        foreign,
    })
}

fn child(value: &Value) -> Result<Child, String> {
    let descriptor = descriptor(value)?;
    let field = |p: &Value, name: &str| {
        p.get(name)
            .and_then(Value::as_str)
            .filter(|f| {
                !f.is_empty()
                    && f.len() <= PLATFORM_FIELD_MAX
                    && f.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
            })
            .map(str::to_owned)
    };
    let platform = value.get("platform").and_then(|p| {
        Some(Platform {
            os: field(p, "os")?,
            architecture: field(p, "architecture")?,
            variant: field(p, "variant"),
        })
    });
    let describes = value
        .pointer("/annotations/vnd.docker.reference.digest")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(Child {
        descriptor,
        platform: platform.filter(|p| p.os != "unknown"),
        describes,
        raw: value.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> Manifest {
        let text = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": format!("sha256:{}", "a".repeat(64)), "size": 10,
                 "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": OCI_MANIFEST, "digest": format!("sha256:{}", "b".repeat(64)), "size": 11,
                 "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"mediaType": OCI_MANIFEST, "digest": format!("sha256:{}", "c".repeat(64)), "size": 12,
                 "platform": {"os": "unknown", "architecture": "unknown"},
                 "annotations": {"vnd.docker.reference.digest": format!("sha256:{}", "b".repeat(64)),
                                 "vnd.docker.reference.type": "attestation-manifest"}}
            ]
        })
        .to_string();
        let bytes = Bytes::from(text);
        let digest = sha256_digest(&bytes);
        Manifest::parse(bytes, digest, &Limits::default()).expect("index parses")
    }

    #[test]
    fn platform_filter_keeps_matching_children_and_their_attestations() {
        let filtered = index()
            .filtered_index(&[Platform::parse("linux/arm64").expect("platform")])
            .expect("a match");
        let Body::Index { children } = &filtered.body else {
            panic!("an index")
        };
        let digests: Vec<char> = children
            .iter()
            .map(|c| c.descriptor.digest.chars().last().unwrap_or(' '))
            .collect();
        assert_eq!(digests, ['b', 'c']);
        assert_eq!(filtered.digest, sha256_digest(&filtered.bytes));
        assert_ne!(filtered.digest, index().digest);
        assert!(
            index()
                .filtered_index(&[Platform::parse("windows/amd64").expect("platform")])
                .is_none()
        );
    }

    #[test]
    fn variants_filter_only_when_given() {
        let arm = Platform::parse("linux/arm64/v8").expect("platform");
        let any_arm = Platform::parse("linux/arm64").expect("platform");
        let v7 = Platform::parse("linux/arm64/v7").expect("platform");
        assert!(any_arm.matches(&arm));
        assert!(arm.matches(&arm));
        assert!(!v7.matches(&arm));
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux//v7").is_err());
    }

    #[test]
    fn bad_manifests_are_refused_with_the_reason() {
        let parse = |text: &str| {
            let bytes = Bytes::from(text.to_owned());
            Manifest::parse(bytes.clone(), sha256_digest(&bytes), &Limits::default())
        };
        assert!(
            parse(r#"{"schemaVersion":1}"#)
                .expect_err("v1")
                .message
                .contains("schemaVersion 2")
        );
        assert!(
            parse(r#"{"schemaVersion":2,"config":{"digest":"sha256:zz","size":1}}"#)
                .expect_err("bad digest")
                .message
                .contains("digest")
        );
        assert!(parse("not json").is_err());
    }

    fn image_with_layers(media_type: &str, count: usize) -> String {
        let layer = serde_json::json!({"mediaType": media_type, "digest": format!("sha256:{}", "d".repeat(64)), "size": 1});
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", "e".repeat(64)), "size": 2},
            "layers": vec![layer; count],
        })
        .to_string()
    }

    #[test]
    fn counts_over_the_limits_are_refused_naming_the_limit() {
        let limits = Limits {
            layers: 3,
            index_children: 2,
            ..Limits::default()
        };
        let parse = |text: String| {
            let bytes = Bytes::from(text);
            Manifest::parse(bytes.clone(), sha256_digest(&bytes), &limits)
        };
        assert!(parse(image_with_layers(OCI_MANIFEST, 3)).is_ok());
        let error = parse(image_with_layers(OCI_MANIFEST, 4)).expect_err("4 layers");
        assert!(error.message.contains("limits.layers = 3"), "{error}");
        assert!(!error.is_transient());
        let error = parse(String::from_utf8(index().bytes.to_vec()).expect("utf-8"))
            .expect_err("3 children");
        assert!(
            error.message.contains("limits.indexChildren = 2"),
            "{error}"
        );
    }

    #[test]
    fn only_the_non_distributable_media_types_are_foreign() {
        let parse = |media_type: &str| {
            let bytes = Bytes::from(image_with_layers(media_type, 1));
            Manifest::parse(bytes.clone(), sha256_digest(&bytes), &Limits::default())
                .expect("parses")
        };
        assert_eq!(
            parse("application/vnd.oci.image.layer.v1.tar+gzip")
                .blobs()
                .len(),
            2
        );
        assert_eq!(parse("application/x-not-foreign-at-all").blobs().len(), 2);
        assert_eq!(
            parse("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip")
                .blobs()
                .len(),
            1
        );
        assert_eq!(
            parse("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip")
                .blobs()
                .len(),
            1
        );
    }
}
