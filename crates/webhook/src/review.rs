//! The three endpoints: parse the request, ask the pure planners, do the I/O they ask for
//! (create mirrors, wait, ask ECR), answer. Garbage gets a clear answer, never a panic.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use privateer_api::config::RewritePolicy;
use privateer_api::names;
use privateer_ecr::{Answer, TargetProvider};
use serde::{Deserialize, Serialize};

use crate::Webhook;
use crate::metrics::{ReasonLabel, RuleLabel};
use crate::mutate::{PodRequest, Surroundings, into_patch, plan_pod, plan_pvc};
use crate::policy::{self, Denial, Subject};

/// The answer body and the outcome label it is counted under.
pub struct Answered {
    pub body: Vec<u8>,
    pub outcome: &'static str,
}

/// A request that is not an AdmissionReview at all: HTTP 400 with this message.
#[derive(Debug)]
pub struct BadRequest(pub String);

fn parse(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, Result<Answered, BadRequest>> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body)
        .map_err(|e| Err(BadRequest(format!("not an AdmissionReview: {e}"))))?;
    review.try_into().map_err(|_| {
        Ok(answer(
            AdmissionResponse::invalid("the AdmissionReview has no request"),
            "invalid",
        ))
    })
}

fn answer(response: AdmissionResponse, outcome: &'static str) -> Answered {
    let body = serde_json::to_vec(&response.into_review()).unwrap_or_default();
    Answered { body, outcome }
}

fn invalid(request: &AdmissionRequest<DynamicObject>, problem: String) -> Answered {
    let mut response = AdmissionResponse::invalid(problem);
    response.uid.clone_from(&request.uid);
    answer(response, "invalid")
}

fn object<K: serde::de::DeserializeOwned + kube::Resource>(
    object: Option<&DynamicObject>,
    what: &str,
) -> Result<K, String> {
    let object = object.ok_or_else(|| format!("the request carries no {what}"))?;
    object
        .clone()
        .try_parse()
        .map_err(|e| format!("the {what} does not parse: {e}"))
}

fn is_ephemeral_update(request: &AdmissionRequest<DynamicObject>) -> bool {
    request.operation == Operation::Update
        && request.sub_resource.as_deref() == Some("ephemeralcontainers")
}

impl Webhook {
    pub async fn mutate(&self, body: &[u8]) -> Result<Answered, BadRequest> {
        let request = match parse(body) {
            Ok(request) => request,
            Err(done) => return done,
        };
        let allowed = AdmissionResponse::from(&request);
        match request.kind.kind.as_str() {
            "Pod" => Ok(self.mutate_pod(&request, allowed).await),
            "PersistentVolumeClaim" if request.operation == Operation::Create => {
                let pvc: PersistentVolumeClaim = match object(request.object.as_ref(), "object") {
                    Ok(pvc) => pvc,
                    Err(problem) => return Ok(invalid(&request, problem)),
                };
                Ok(with_patch(allowed, plan_pvc(&pvc, &self.config)))
            }
            "PersistentVolumeClaim" => Ok(answer(allowed, "unchanged")),
            other => Ok(invalid(
                &request,
                format!("privateer's /mutate handles Pods and PersistentVolumeClaims, not {other}"),
            )),
        }
    }

    async fn mutate_pod(
        &self,
        request: &AdmissionRequest<DynamicObject>,
        allowed: AdmissionResponse,
    ) -> Answered {
        let ephemeral = is_ephemeral_update(request);
        if request.operation != Operation::Create && !ephemeral {
            return answer(allowed, "unchanged");
        }
        let mut pod: Pod = match object(request.object.as_ref(), "object") {
            Ok(pod) => pod,
            Err(problem) => return invalid(request, problem),
        };
        // A Pod created with generateName in a namespace has neither field set yet.
        if pod.metadata.namespace.is_none() {
            pod.metadata.namespace.clone_from(&request.namespace);
        }
        let old: Option<Pod> = if ephemeral {
            match object(request.old_object.as_ref(), "oldObject") {
                Ok(old) => Some(old),
                Err(problem) => return invalid(request, problem),
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
        let request = match parse(body) {
            Ok(request) => request,
            Err(done) => return done,
        };
        let allowed = AdmissionResponse::from(&request);
        if request.kind.kind != "Pod" {
            return Ok(invalid(
                &request,
                format!(
                    "privateer's /validate judges Pods, not {}",
                    request.kind.kind
                ),
            ));
        }
        let ephemeral = is_ephemeral_update(&request);
        if request.operation != Operation::Create && !ephemeral {
            return Ok(answer(allowed, "allowed"));
        }
        let pod: Pod = match object(request.object.as_ref(), "object") {
            Ok(pod) => pod,
            Err(problem) => return Ok(invalid(&request, problem)),
        };
        let namespace = request.namespace.clone().unwrap_or_default();
        if namespace == self.config.namespace
            || self.config.webhook.exclude_namespaces.contains(&namespace)
            || self.cluster.namespace_skipped(&namespace)
        {
            return Ok(answer(allowed, "allowed"));
        }
        let old: Option<Pod> = if ephemeral {
            object(request.old_object.as_ref(), "oldObject").ok()
        } else {
            None
        };
        let subjects = pod_subjects(&pod, old.as_ref());
        let denials = self.judge(&subjects).await;
        if denials.is_empty() {
            return Ok(answer(allowed, "allowed"));
        }
        Ok(answer(
            allowed.deny(policy::message("pod", &denials)),
            "denied",
        ))
    }

    /// Every rule over every subject; a Pod mixing ECR and public images is judged whole.
    pub async fn judge(&self, subjects: &[Subject]) -> Vec<Denial> {
        let mut denials = Vec::new();
        for subject in subjects {
            denials.extend(policy::judge_static(subject, &self.config));
            let Some((repository, digest)) = policy::ecr_repository(subject, &self.config) else {
                continue;
            };
            let (facts, findings) = match &self.provider {
                Some(provider) => {
                    let facts = Box::pin(provider.repository_facts(&repository)).await;
                    let findings = match digest {
                        Some(digest)
                            if self.config.policy.ecr_compliance.deny_critical_findings =>
                        {
                            Some(Box::pin(provider.findings(&repository, &digest)).await)
                        }
                        _ => None,
                    };
                    (facts, findings)
                }
                None => (Answer::NotApplicable, None),
            };
            denials.extend(policy::judge_ecr(
                subject,
                &self.config,
                &facts,
                findings.as_ref(),
            ));
        }
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
    match response.with_patch(into_patch(patch)) {
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
    let originals: BTreeMap<String, String> = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(names::ANNOTATION_ORIGINAL_IMAGES))
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default();
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    let subject = |name: &str, image: Option<&String>| {
        image.map(|image| Subject {
            container: name.to_owned(),
            image: image.clone(),
            original: originals.get(name).cloned(),
        })
    };
    let ephemeral = spec.ephemeral_containers.iter().flatten();
    match old {
        Some(old) => {
            let existing = crate::mutate::ephemeral_names(old);
            ephemeral
                .filter(|c| !existing.contains(&c.name.as_str()))
                .filter_map(|c| subject(&c.name, c.image.as_ref()))
                .collect()
        }
        None => spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .filter_map(|c| subject(&c.name, c.image.as_ref()))
            .chain(ephemeral.filter_map(|c| subject(&c.name, c.image.as_ref())))
            .collect(),
    }
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
