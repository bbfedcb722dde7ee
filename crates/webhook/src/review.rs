//! The three endpoints: parse the request, ask the pure planners, do the I/O they ask for
//! (create mirrors, wait, ask ECR), answer. Garbage gets a clear answer, never a panic.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use privateer_api::config::RewritePolicy;
use privateer_api::pod::original_images;
use privateer_ecr::{Answer, Findings, RepositoryFacts, TargetProvider};
use serde::{Deserialize, Serialize};

use crate::Webhook;
use crate::metrics::{ReasonLabel, RuleLabel};
use crate::mutate::{PodRequest, Surroundings, plan_pod, plan_pvc};
use crate::policy::{self, Denial, Subject};

/// The answer body and the outcome label it is counted under.
pub struct Answered {
    pub body: Vec<u8>,
    pub outcome: &'static str,
}

/// A request that is not an AdmissionReview at all: HTTP 400 with this message.
#[derive(Debug)]
pub struct BadRequest(pub String);

/// Just the kind of an AdmissionReview's object: the body is then parsed once, straight into
/// that type (no generic JSON tree in between).
#[derive(Deserialize)]
struct Peek {
    #[serde(default)]
    request: Option<PeekRequest>,
}

#[derive(Deserialize)]
struct PeekRequest {
    uid: String,
    kind: kube::core::GroupVersionKind,
}

/// Parse `body` as an AdmissionReview of `K`; what cannot be parsed gets its answer.
fn parse<K>(body: &[u8], uid: &str) -> Result<AdmissionRequest<K>, Answered>
where
    K: kube::Resource + serde::de::DeserializeOwned,
{
    match serde_json::from_slice::<AdmissionReview<K>>(body) {
        Ok(review) => review
            .try_into()
            .map_err(|_| invalid(uid, "the AdmissionReview has no request".into())),
        Err(e) => Err(invalid(uid, format!("the object does not parse: {e}"))),
    }
}

/// The uid and kind of the request in `body`; a body that is no AdmissionReview is a 400.
fn peek(body: &[u8]) -> Result<Result<PeekRequest, Answered>, BadRequest> {
    let peek: Peek = serde_json::from_slice(body)
        .map_err(|e| BadRequest(format!("not an AdmissionReview: {e}")))?;
    Ok(peek
        .request
        .ok_or_else(|| invalid("", "the AdmissionReview has no request".into())))
}

/// An AdmissionReview answer with the patch in base64, as the API documents it. kube-core
/// serializes `patch` as a JSON array of numbers (kube-rs #1781), which the API server also
/// reads, at four times the size.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewAnswer<'a> {
    api_version: &'a str,
    kind: &'a str,
    response: ResponseAnswer<'a>,
}

#[derive(serde::Serialize)]
struct ResponseAnswer<'a> {
    #[serde(flatten)]
    response: &'a AdmissionResponse,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
}

fn answer(mut response: AdmissionResponse, outcome: &'static str) -> Answered {
    use base64::Engine as _;
    let patch = response
        .patch
        .take()
        .map(|p| base64::engine::general_purpose::STANDARD.encode(p));
    let review = ReviewAnswer {
        api_version: &response.types.api_version,
        kind: &response.types.kind,
        response: ResponseAnswer {
            response: &response,
            patch,
        },
    };
    let body = serde_json::to_vec(&review).unwrap_or_default();
    Answered { body, outcome }
}

fn invalid(uid: &str, problem: String) -> Answered {
    let mut response = AdmissionResponse::invalid(problem);
    uid.clone_into(&mut response.uid);
    answer(response, "invalid")
}

fn is_ephemeral_update<K: kube::Resource>(request: &AdmissionRequest<K>) -> bool {
    request.operation == Operation::Update
        && request.sub_resource.as_deref() == Some("ephemeralcontainers")
}

impl Webhook {
    pub async fn mutate(&self, body: &[u8]) -> Result<Answered, BadRequest> {
        let head = match peek(body)? {
            Ok(head) => head,
            Err(answered) => return Ok(answered),
        };
        Ok(match head.kind.kind.as_str() {
            "Pod" => match parse::<Pod>(body, &head.uid) {
                Ok(request) => self.mutate_pod(request).await,
                Err(answered) => answered,
            },
            "PersistentVolumeClaim" => match parse::<PersistentVolumeClaim>(body, &head.uid) {
                Ok(request) => {
                    let allowed = AdmissionResponse::from(&request);
                    match (&request.operation, &request.object) {
                        (Operation::Create, Some(pvc)) => {
                            with_patch(allowed, plan_pvc(pvc, &self.config))
                        }
                        _ => answer(allowed, "unchanged"),
                    }
                }
                Err(answered) => answered,
            },
            other => invalid(
                &head.uid,
                format!("privateer's /mutate handles Pods and PersistentVolumeClaims, not {other}"),
            ),
        })
    }

    #[tracing::instrument(name = "mutate", skip_all, fields(
        uid = %request.uid,
        namespace = request.namespace.as_deref().unwrap_or_default(),
    ))]
    async fn mutate_pod(&self, mut request: AdmissionRequest<Pod>) -> Answered {
        let allowed = AdmissionResponse::from(&request);
        let ephemeral = is_ephemeral_update(&request);
        if request.operation != Operation::Create && !ephemeral {
            return answer(allowed, "unchanged");
        }
        let Some(mut pod) = request.object.take() else {
            return invalid(&request.uid, "the request carries no object".into());
        };
        // A Pod created with generateName in a namespace has neither field set yet.
        if pod.metadata.namespace.is_none() {
            pod.metadata.namespace.clone_from(&request.namespace);
        }
        let old = if ephemeral {
            match request.old_object.take() {
                Some(old) => Some(old),
                None => return invalid(&request.uid, "the request carries no oldObject".into()),
            }
        } else {
            None
        };
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let around = Surroundings {
            config: &self.config,
            naming: self.naming.as_ref(),
            own_images: &self.own_images,
            namespace_skipped: self.cluster.namespace_skipped(&namespace),
        };
        let pod_request = || match &old {
            Some(old) => PodRequest::EphemeralUpdate { pod: &pod, old },
            None => PodRequest::Create(&pod),
        };
        let lookup = |name: &str| self.cluster.mirror(name);
        let policy = self.config.webhook.rewrite_policy;
        let mut plan = plan_pod(pod_request(), &around, &lookup, policy);
        if plan.skipped.is_some() {
            return answer(allowed, "skipped");
        }
        if !request.dry_run && !plan.create.is_empty() {
            match self.cluster.create(&plan.create).await {
                Ok(created) => {
                    self.metrics.mirrors_created.inc_by(created as u64);
                }
                Err(e) => {
                    // privateer being unwell never blocks a Pod: the backfill records it later.
                    tracing::warn!("admitting the pod unchanged: {e}");
                    self.metrics
                        .admitted_unchanged
                        .get_or_create(&ReasonLabel {
                            reason: "mirrorNotRecorded",
                        })
                        .inc();
                    let mut response = allowed;
                    response.warnings =
                        Some(vec![format!("privateer admitted this pod unchanged: {e}")]);
                    return answer(response, "unchanged");
                }
            }
        }
        if policy == RewritePolicy::Wait && !plan.not_ready.is_empty() && !request.dry_run {
            let timeout = self.config.webhook.wait_timeout.into();
            self.cluster.wait_settled(&plan.not_ready, timeout).await;
            plan = plan_pod(pod_request(), &around, &lookup, RewritePolicy::WhenReady);
        }
        self.metrics
            .images_rewritten
            .inc_by(plan.rewritten.len() as u64);
        if plan.gated {
            self.metrics.pods_gated.inc();
        }
        let mut response = allowed;
        if !plan.warnings.is_empty() {
            response.warnings = Some(plan.warnings);
        }
        with_patch(response, plan.patch)
    }

    pub async fn validate(&self, body: &[u8]) -> Result<Answered, BadRequest> {
        let head = match peek(body)? {
            Ok(head) => head,
            Err(answered) => return Ok(answered),
        };
        if head.kind.kind != "Pod" {
            let problem = format!("privateer's /validate judges Pods, not {}", head.kind.kind);
            return Ok(invalid(&head.uid, problem));
        }
        Ok(match parse::<Pod>(body, &head.uid) {
            Ok(request) => self.validate_pod(request).await,
            Err(answered) => answered,
        })
    }

    #[tracing::instrument(name = "validate", skip_all, fields(
        uid = %request.uid,
        namespace = request.namespace.as_deref().unwrap_or_default(),
    ))]
    async fn validate_pod(&self, request: AdmissionRequest<Pod>) -> Answered {
        let allowed = AdmissionResponse::from(&request);
        let ephemeral = is_ephemeral_update(&request);
        if request.operation != Operation::Create && !ephemeral {
            return answer(allowed, "allowed");
        }
        let Some(pod) = &request.object else {
            return invalid(&request.uid, "the request carries no object".into());
        };
        let namespace = request.namespace.clone().unwrap_or_default();
        if self.config.excludes_namespace(&namespace) || self.cluster.namespace_skipped(&namespace)
        {
            return answer(allowed, "allowed");
        }
        let old = request.old_object.as_ref().filter(|_| ephemeral);
        let subjects = pod_subjects(pod, old);
        let denials = self.judge(&subjects).await;
        if denials.is_empty() {
            return answer(allowed, "allowed");
        }
        answer(allowed.deny(policy::message("pod", &denials)), "denied")
    }

    /// Every rule over every subject; a Pod mixing ECR and public images is judged whole. ECR
    /// is asked about every image at once, so the answer never waits for lookups in a row.
    pub async fn judge(&self, subjects: &[Subject]) -> Vec<Denial> {
        let lookups = subjects.iter().map(|subject| async move {
            let mut denials = policy::judge_static(subject, &self.config);
            denials.extend(policy::judge_verified(subject, &self.config, &|name| {
                self.cluster.verified(name)
            }));
            if let Some((repository, digest)) = policy::ecr_repository(subject, &self.config) {
                let (facts, findings) = self.ecr_answers(&repository, digest.as_deref()).await;
                denials.extend(policy::judge_ecr(
                    subject,
                    &self.config,
                    &facts,
                    findings.as_ref(),
                ));
            }
            denials
        });
        let denials: Vec<Denial> = futures::future::join_all(lookups)
            .await
            .into_iter()
            .flatten()
            .collect();
        for denial in &denials {
            self.metrics
                .denials
                .get_or_create(&RuleLabel {
                    rule: denial.rule.as_str(),
                })
                .inc();
        }
        denials
    }

    /// The repository's facts and, when critical findings are denied and the image is pinned,
    /// its scan findings (both cached by the provider).
    async fn ecr_answers(
        &self,
        repository: &str,
        digest: Option<&str>,
    ) -> (Answer<RepositoryFacts>, Option<Answer<Findings>>) {
        let Some(provider) = &self.provider else {
            return (Answer::NotApplicable, None);
        };
        let facts = Box::pin(provider.repository_facts(repository)).await;
        let findings = match digest {
            Some(digest) if self.config.policy.ecr_compliance.deny_critical_findings => {
                Some(Box::pin(provider.findings(repository, digest)).await)
            }
            _ => None,
        };
        (facts, findings)
    }

    /// `imagepolicy.k8s.io/v1alpha1` ImageReview, for the ImagePolicyWebhook admission plugin.
    pub async fn image_policy(&self, body: &[u8]) -> Result<Answered, BadRequest> {
        let review: ImageReview = serde_json::from_slice(body)
            .map_err(|e| BadRequest(format!("not an ImageReview: {e}")))?;
        if review.kind != "ImageReview" {
            return Err(BadRequest(format!(
                "expected kind ImageReview, got {:?}",
                review.kind
            )));
        }
        let subjects: Vec<Subject> = review
            .spec
            .containers
            .iter()
            .enumerate()
            .map(|(i, c)| Subject {
                container: format!("containers[{i}]"),
                image: c.image.clone(),
                original: None,
            })
            .collect();
        let denials = self.judge(&subjects).await;
        let status = ImageReviewStatus {
            allowed: denials.is_empty(),
            reason: (!denials.is_empty()).then(|| policy::message("images", &denials)),
            audit_annotations: BTreeMap::new(),
        };
        let outcome = if status.allowed { "allowed" } else { "denied" };
        let body = serde_json::to_vec(&ImageReviewAnswer {
            api_version: review.api_version,
            kind: review.kind,
            status,
        })
        .unwrap_or_default();
        Ok(Answered { body, outcome })
    }
}

fn with_patch(response: AdmissionResponse, patch: Vec<json_patch::PatchOperation>) -> Answered {
    if patch.is_empty() {
        return answer(response, "unchanged");
    }
    let uid = response.uid.clone();
    match response.with_patch(json_patch::Patch(patch)) {
        Ok(response) => answer(response, "patched"),
        Err(e) => {
            let mut response = AdmissionResponse::invalid(format!("patch: {e}"));
            response.uid = uid;
            answer(response, "error")
        }
    }
}

/// The images a Pod runs, with whether privateer rewrote them. For an ephemeral-containers
/// update, only the containers being added.
pub fn pod_subjects(pod: &Pod, old: Option<&Pod>) -> Vec<Subject> {
    let originals = original_images(pod).unwrap_or_default();
    let existing = old.map(privateer_api::pod::ephemeral_names);
    privateer_api::pod::slots(pod, existing.as_deref().unwrap_or_default())
        .into_iter()
        .filter(|slot| {
            existing.is_none() || slot.list == privateer_api::pod::List::EphemeralContainers
        })
        .map(|slot| Subject {
            container: slot.name.to_owned(),
            image: slot.image.to_owned(),
            original: originals.get(slot.name).cloned(),
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImageReview {
    api_version: String,
    kind: String,
    spec: ImageReviewSpec,
}

#[derive(Deserialize)]
struct ImageReviewSpec {
    #[serde(default)]
    containers: Vec<ImageReviewContainer>,
}

#[derive(Deserialize)]
struct ImageReviewContainer {
    image: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageReviewAnswer {
    api_version: String,
    kind: String,
    status: ImageReviewStatus,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageReviewStatus {
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    audit_annotations: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_travel_as_base64_as_the_api_documents() {
        let patch = vec![json_patch::PatchOperation::Remove(
            json_patch::RemoveOperation {
                path: json_patch::jsonptr::PointerBuf::from_tokens(["metadata", "labels"]),
            },
        )];
        let mut response = AdmissionResponse::invalid("");
        response.allowed = true;
        let answered = with_patch(response, patch);
        assert_eq!(answered.outcome, "patched");
        let review: serde_json::Value = serde_json::from_slice(&answered.body).expect("JSON");
        assert_eq!(review["kind"], "AdmissionReview");
        assert_eq!(review["response"]["patchType"], "JSONPatch");
        let encoded = review["response"]["patch"]
            .as_str()
            .expect("a base64 string");
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .expect("base64");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&decoded).expect("a JSON patch"),
            serde_json::json!([{"op": "remove", "path": "/metadata/labels"}])
        );
    }
}
