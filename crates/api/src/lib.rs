//! privateer's shared vocabulary: the `ImageMirror` custom resource, the well-known names
//! (labels, annotations, gate, field manager) and the configuration file.

pub mod config;
pub mod crd;
mod duration;
pub mod names;
pub mod pod;
pub mod policy;

pub use config::Config;
pub use crd::{
    DeletionPolicy, ImageMirror, ImageMirrorSpec, ImageMirrorStatus, MirrorUsage, Phase,
    SecretReference,
};
pub use duration::Duration;

use kube::CustomResourceExt;

/// The CustomResourceDefinition of `ImageMirror` as YAML: what `privateer crd` prints and
/// `crd/imagemirrors.privateer.dev.yaml` holds.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&ImageMirror::crd())
}
