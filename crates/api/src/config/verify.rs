//! `sources.verify`: which images must carry a cosign signature, by which keys, before privateer
//! mirrors them into the registry the cluster trusts.

use privateer_image::Reference;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SourcesConfig;

/// Images this rule covers must be signed by one of its keys (any one) to be mirrored.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct VerifyRule {
    /// `host` or `host/path` prefixes of normalized references (`ghcr.io/org`,
    /// `docker.io/library/nginx`), matched on whole components like
    /// `policy.allowedRegistries.registries`.
    pub images: Vec<String>,
    /// PEM public keys (`cosign.pub`: ECDSA, RSA or Ed25519), inline.
    pub keys: Vec<String>,
    /// PEM public keys in Secrets of `namespace`.
    pub key_secrets: Vec<KeySecret>,
}

/// One key of a Secret.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct KeySecret {
    /// The Secret's name.
    pub name: String,
    /// The data key holding the PEM public key (`cosign.pub`).
    pub key: String,
}

impl SourcesConfig {
    /// The first `sources.verify` rule covering `reference`, with its index.
    pub fn verify_rule(&self, reference: &Reference) -> Option<(usize, &VerifyRule)> {
        self.verify.iter().enumerate().find(|(_, rule)| {
            rule.images
                .iter()
                .any(|entry| crate::policy::allows(entry, reference))
        })
    }
}
