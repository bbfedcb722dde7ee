//! Image references for privateer: parsing and normalization exactly as Docker and containerd
//! do it, the target repository a source is mirrored to, and the `ImageMirror` object name.
//! Pure functions only: no I/O, no Kubernetes.

mod digest;
mod error;
mod name;
mod reference;
mod target;

pub use digest::{ANCHOR_PREFIX, Algorithm, Digest};
pub use error::{ReferenceError, TargetError};
pub use name::{OBJECT_NAME_MAX_LEN, is_dns1123_subdomain, object_name};
pub use reference::{DEFAULT_TAG, DOCKER_HUB, NAME_MAX_LEN, Reference, validate_domain};
pub use target::{ECR_REPOSITORY_MAX_LEN, TargetNaming, is_ecr_repository_name};

/// Longest tag Docker accepts (`[\w][\w.-]{0,127}`); here because references parse tags and
/// digests make anchor tags.
pub const TAG_MAX_LEN: usize = 128;
