//! `sources.verify` in the controller: the keys a mirror's source must be signed by (inline in
//! the configuration or in Secrets of privateer's namespace), and the check made before any
//! copy starts. The copy checks again (inline, or the copy Job with the same keys): the tag may
//! move in between, and what is written must be what was verified.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use privateer_api::config::VerifyRule;
use privateer_registry::cosign::{PublicKey, PublicKeys};
use privateer_registry::{ErrorClass, Image};

use crate::plan::Plan;
use crate::{Context, Error};

/// One rule's keys: parsed for inline checks, as PEM text for copy Jobs.
pub struct Keys {
    pub parsed: Arc<PublicKeys>,
    pub pems: Vec<String>,
}

/// What the check before a copy found.
pub enum Checked {
    /// No rule covers the source.
    NotCovered,
    /// A signature by `key` verifies; copy with `keys`.
    Verified { keys: Keys, key: String },
    /// No copy: `reason` is `SignatureMissing` or `SignatureInvalid` (or what else refused).
    Refused { reason: String, message: String },
    /// The keys or the source could not be read; try again later.
    Unavailable(String),
}

/// Verify `source` if a `sources.verify` rule covers the plan's source.
pub async fn check(ctx: &Context, plan: &Plan, source: &Image) -> Checked {
    let keys = match keys_for(ctx, plan).await {
        Ok(None) => return Checked::NotCovered,
        Ok(Some(keys)) => keys,
        Err(e) => return Checked::Unavailable(e.to_string()),
    };
    match privateer_registry::verify(source, &ctx.copy_options, &keys.parsed).await {
        Ok(verified) => Checked::Verified {
            keys,
            key: verified.key,
        },
        Err(e) if e.is_transient() || e.class == ErrorClass::Unauthorized => {
            Checked::Unavailable(e.to_string())
        }
        Err(e) => Checked::Refused {
            reason: refusal_reason(e.class),
            message: e.to_string(),
        },
    }
}

/// The reason a refused copy is recorded under: the signature classes by their own name.
pub fn refusal_reason(class: ErrorClass) -> String {
    match class {
        ErrorClass::SignatureMissing => "SignatureMissing".into(),
        ErrorClass::SignatureInvalid => "SignatureInvalid".into(),
        other => format!("Verify{}", crate::reconcile::capitalize(other.as_str())),
    }
}

/// The keys of the first rule covering the plan's source; `None` when no rule does.
pub async fn keys_for(ctx: &Context, plan: &Plan) -> Result<Option<Keys>, Error> {
    let Some((index, rule)) = ctx.config.sources.verify_rule(&plan.source) else {
        return Ok(None);
    };
    load(ctx, index, rule).await.map(Some)
}

async fn load(ctx: &Context, index: usize, rule: &VerifyRule) -> Result<Keys, Error> {
    let mut pems: Vec<(String, String)> = rule
        .keys
        .iter()
        .enumerate()
        .map(|(j, pem)| (format!("sources.verify[{index}].keys[{j}]"), pem.clone()))
        .collect();
    let namespace = &ctx.config.namespace;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    for wanted in &rule.key_secrets {
        let problem = |problem: String| Error::Secret {
            namespace: namespace.clone(),
            name: wanted.name.clone(),
            problem,
        };
        let secret = secrets
            .get(&wanted.name)
            .await
            .map_err(|e| problem(e.to_string()))?;
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&wanted.key))
            .ok_or_else(|| problem(format!("has no key {:?}", wanted.key)))?;
        let pem = String::from_utf8(bytes.0.clone())
            .map_err(|_| problem(format!("key {:?} is not PEM text", wanted.key)))?;
        pems.push((format!("{}/{}", wanted.name, wanted.key), pem));
    }
    let mut parsed = Vec::new();
    for (name, pem) in &pems {
        parsed.push(
            PublicKey::parse_pem(name, pem.as_bytes()).map_err(|e| Error::Config(e.to_string()))?,
        );
    }
    Ok(Keys {
        parsed: Arc::new(PublicKeys::new(parsed)),
        pems: pems.into_iter().map(|(_, pem)| pem).collect(),
    })
}
