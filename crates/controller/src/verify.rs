//! `sources.verify` in the controller: the keys a mirror's source must be signed by (inline in
//! the configuration or in Secrets of privateer's namespace), and the check made before any
//! copy starts. The copy checks again (inline, or the copy Job with the same keys): the tag may
//! move in between, and what is written must be what was verified.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use privateer_api::config::VerifyRule;
use privateer_api::names::reason;
use privateer_registry::cosign::PublicKeys;
use privateer_registry::{ErrorClass, Image};

use crate::plan::Plan;
use crate::{Context, Error};

/// One rule's keys: parsed for inline checks, as PEM text for copy Jobs.
pub struct Keys {
    pub parsed: Arc<PublicKeys>,
    pub pems: Vec<String>,
}

/// A verified source: the rule's keys (for the copy, which checks again) and the key that
/// signed it.
pub struct Verified {
    pub keys: Keys,
    pub key: String,
}

/// Why there is no copy.
pub enum Refusal {
    /// No valid signature: `reason` is `SignatureMissing` or `SignatureInvalid` (or what else
    /// refused); waits for a change.
    Refused { reason: String, message: String },
    /// The keys or the source could not be read; try again later.
    Unavailable(String),
}

/// Verify `digest` (what this pass resolved the source to) if a `sources.verify` rule covers
/// the plan's source; `None` when no rule does.
pub async fn check(
    ctx: &Context,
    plan: &Plan,
    source: &Image,
    digest: &str,
) -> Result<Option<Verified>, Refusal> {
    let keys = match keys_for(ctx, plan).await {
        Ok(None) => return Ok(None),
        Ok(Some(keys)) => keys,
        Err(e) => return Err(Refusal::Unavailable(e.to_string())),
    };
    match privateer_registry::verify(source, digest, &ctx.copy_options, &keys.parsed).await {
        Ok(key) => Ok(Some(Verified { keys, key })),
        Err(e) if e.is_transient() || e.class == ErrorClass::Unauthorized => {
            Err(Refusal::Unavailable(e.to_string()))
        }
        Err(e) => Err(Refusal::Refused {
            reason: signature_reason(e.class).map_or_else(
                || format!("Verify{}", crate::reconcile::capitalize(e.class.as_str())),
                str::to_owned,
            ),
            message: e.to_string(),
        }),
    }
}

/// A failed signature check is recorded under its own reason, wherever it was found (the
/// controller's check, an inline copy, a copy Job); `None` for every other class.
pub fn signature_reason(class: ErrorClass) -> Option<&'static str> {
    match class {
        ErrorClass::SignatureMissing => Some(reason::SIGNATURE_MISSING),
        ErrorClass::SignatureInvalid => Some(reason::SIGNATURE_INVALID),
        _ => None,
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
    let parsed = PublicKeys::parse_all(pems.iter().map(|(n, p)| (n.clone(), p.as_bytes())))
        .map_err(|e| Error::Config(e.to_string()))?;
    Ok(Keys {
        parsed: Arc::new(parsed),
        pems: pems.into_iter().map(|(_, pem)| pem).collect(),
    })
}
