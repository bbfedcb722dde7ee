//! `privateer report`: the images a cluster's Pods run, by namespace and workload; whether
//! privateer mirrors each, how far its ImageMirror is, and what the validating policy would
//! deny once Pods are rewritten. What a team reads in `rewritePolicy: Record` before it
//! switches to `Gate`. `build` is pure (the same Pod rules and policy functions the webhooks
//! use); `cluster` lists what it needs; `table` prints it.

pub mod cluster;
mod table;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;
use privateer_api::pod::{self, Around, Skip};
use privateer_api::{Config, ImageMirror, Phase};
use privateer_image::{Reference, TargetNaming, object_name};
use privateer_webhook::policy::{self, Subject};
use serde::Serialize;

pub use table::render_table;

/// Where one image of a workload stands.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// Mirrored: the target holds it.
    Ready,
    /// Recorded; the copy has not started or is waiting for a retry.
    Pending,
    /// Recorded; a copy is running.
    Mirroring,
    /// Recorded; the copy failed (`note` says why).
    Failed,
    /// Privateer would mirror it, but no ImageMirror exists yet (admitted before privateer,
    /// or in a namespace the webhook did not see; backfill records these).
    NotRecorded,
    /// Privateer leaves it alone (`note` says why).
    NotMirrored,
    /// Already in the target registry.
    Private,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::Pending => "Pending",
            Self::Mirroring => "Mirroring",
            Self::Failed => "Failed",
            Self::NotRecorded => "NotRecorded",
            Self::NotMirrored => "NotMirrored",
            Self::Private => "Private",
        }
    }
}

/// Which image the Pods run now.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunsFrom {
    /// The image as the Pod names it (no rewrite: Record mode, not mirrored, or not yet).
    Source,
    /// The private copy privateer rewrote the Pod to.
    Mirror,
}

/// A rule the validating webhook would deny by, once the Pod runs as privateer would rewrite it.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub rule: &'static str,
    pub problem: String,
}

/// One container image of one workload.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub namespace: String,
    /// `Deployment/web`, `StatefulSet/db`, `Job/x`, `Pod/y` (the controlling owner; a
    /// ReplicaSet with a `pod-template-hash` is shown as its Deployment).
    pub workload: String,
    pub container: String,
    /// The image the workload asks for (before any rewrite).
    pub image: String,
    /// Running Pods of the workload with this container.
    pub pods: u32,
    pub state: State,
    pub runs_from: RunsFrom,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_mirror: Option<String>,
    /// The private copy, pinned by digest, once there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_image: Option<String>,
    /// Why it is not mirrored, or the copy's last error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub would_deny: Vec<Denial>,
}

/// The whole report.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Sorted by namespace, workload, container.
    pub rows: Vec<Row>,
    /// Distinct public images per state.
    pub images_by_state: BTreeMap<&'static str, usize>,
    /// Workloads (`namespace/workload`) with at least one image the policy would deny.
    pub workloads_denied: Vec<String>,
    /// Rules the report does not judge (they need a registry: `ecrCompliance`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_judged: Vec<&'static str>,
}

/// What `build` reads from the cluster.
#[derive(Default)]
pub struct Inputs {
    pub pods: Vec<Pod>,
    pub mirrors: Vec<ImageMirror>,
    /// Namespaces labelled `privateer.dev/skip=true`.
    pub skipped_namespaces: BTreeSet<String>,
}

/// The report over `inputs`, judged by `config`. `own_images`: normalized names of
/// privateer's own images (never mirrored).
pub fn build(config: &Config, own_images: &[String], inputs: &Inputs) -> Report {
    let mirrors: BTreeMap<&str, &ImageMirror> = inputs
        .mirrors
        .iter()
        .filter_map(|m| Some((m.metadata.name.as_deref()?, m)))
        .collect();
    let naming = TargetNaming::new(&config.target.registry, &config.target.prefix).ok();
    let mut rows: BTreeMap<(String, String, String, String), Row> = BTreeMap::new();
    for pod_ in inputs.pods.iter().filter(|p| is_running(p)) {
        let namespace = pod_.metadata.namespace.clone().unwrap_or_default();
        let around = Around {
            config,
            own_images,
            namespace_skipped: inputs.skipped_namespaces.contains(&namespace),
        };
        // A broken annotation: judge the images as the Pod names them.
        let originals = pod::original_images(pod_).unwrap_or_default();
        let workload = workload(pod_);
        let look = Look {
            config,
            around: &around,
            skip: pod::skip_reason(pod_, &around),
            mirrors: &mirrors,
            naming: naming.as_ref(),
        };
        for slot in pod::slots(pod_, &[]) {
            let asked = originals.get(slot.name).map_or(slot.image, String::as_str);
            let key = (
                namespace.clone(),
                workload.clone(),
                slot.name.to_owned(),
                asked.to_owned(),
            );
            if let Some(row) = rows.get_mut(&key) {
                row.pods += 1;
                continue;
            }
            let mut row = look.row(asked, slot.image);
            row.namespace = namespace.clone();
            row.workload = workload.clone();
            row.container = slot.name.to_owned();
            rows.insert(key, row);
        }
    }
    let rows: Vec<Row> = rows.into_values().collect();
    let mut images: BTreeMap<&str, State> = BTreeMap::new();
    for row in &rows {
        images.entry(&row.image).or_insert(row.state);
    }
    let mut images_by_state = BTreeMap::new();
    for state in images.values() {
        *images_by_state.entry(state.as_str()).or_insert(0) += 1;
    }
    let workloads_denied: BTreeSet<String> = rows
        .iter()
        .filter(|r| !r.would_deny.is_empty())
        .map(|r| format!("{}/{}", r.namespace, r.workload))
        .collect();
    let not_judged = if config.policy.ecr_compliance.enabled {
        vec![policy::Rule::EcrCompliance.as_str()]
    } else {
        Vec::new()
    };
    Report {
        rows,
        images_by_state,
        workloads_denied: workloads_denied.into_iter().collect(),
        not_judged,
    }
}

/// Succeeded and Failed Pods no longer use their images.
fn is_running(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed"))
}

/// The Pod's controlling owner as `Kind/name`; a ReplicaSet a Deployment made (its name is
/// the Deployment's plus `-<pod-template-hash>`) as that Deployment.
pub fn workload(pod: &Pod) -> String {
    let meta = &pod.metadata;
    let Some(owner) = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
    else {
        return format!("Pod/{}", meta.name.as_deref().unwrap_or_default());
    };
    let hash = meta
        .labels
        .as_ref()
        .and_then(|l| l.get("pod-template-hash"));
    if owner.kind == "ReplicaSet"
        && let Some(hash) = hash
        && let Some(deployment) = owner.name.strip_suffix(&format!("-{hash}"))
    {
        return format!("Deployment/{deployment}");
    }
    format!("{}/{}", owner.kind, owner.name)
}

/// What one row is judged from.
struct Look<'a> {
    config: &'a Config,
    around: &'a Around<'a>,
    skip: Option<Skip>,
    mirrors: &'a BTreeMap<&'a str, &'a ImageMirror>,
    naming: Option<&'a TargetNaming>,
}

impl Look<'_> {
    /// The row for a container that asks for `asked` and runs `running` now (namespace,
    /// workload and container are filled in by the caller).
    fn row(&self, asked: &str, running: &str) -> Row {
        let runs_from = if asked == running {
            RunsFrom::Source
        } else {
            RunsFrom::Mirror
        };
        let mut row = Row {
            namespace: String::new(),
            workload: String::new(),
            container: String::new(),
            image: asked.to_owned(),
            pods: 1,
            state: State::NotMirrored,
            runs_from,
            image_mirror: None,
            target_image: None,
            note: None,
            would_deny: Vec::new(),
        };
        // What the Pod would run once privateer rewrites it (under Gate: the pinned copy).
        let mut projected = Subject {
            container: String::new(),
            image: running.to_owned(),
            original: (runs_from == RunsFrom::Mirror).then(|| asked.to_owned()),
        };
        match Reference::parse(asked) {
            Err(e) => row.note = Some(format!("invalid image reference: {e}")),
            Ok(source) => {
                self.classify(&source, &mut row);
                // A mirrored image: classify named its ImageMirror.
                if row.image_mirror.is_some() {
                    // As the webhook rewrites under Gate: the pinned copy once Ready, else
                    // the mirror's spec.target or the planned target.
                    let declared = row
                        .image_mirror
                        .as_deref()
                        .and_then(|name| self.mirrors.get(name))
                        .and_then(|m| m.spec.target.clone());
                    let planned = || {
                        let naming = self.naming?;
                        naming.target(&source).ok().map(|t| t.to_string())
                    };
                    let pinned = row
                        .target_image
                        .clone()
                        .filter(|_| row.state == State::Ready);
                    if let Some(target) = pinned.or(declared).or_else(planned) {
                        projected.image = target;
                        projected.original = Some(asked.to_owned());
                    }
                }
            }
        }
        let verified = |name: &str| self.mirrors.get(name).map(|m| m.is_verified());
        let mut denials = policy::judge_static(&projected, self.config);
        denials.extend(policy::judge_verified(&projected, self.config, &verified));
        row.would_deny = denials
            .into_iter()
            .map(|d| Denial {
                rule: d.rule.as_str(),
                problem: d.problem,
            })
            .collect();
        row
    }

    /// State, mirror and note for a parsed source, by the same rules as the webhook.
    fn classify(&self, source: &Reference, row: &mut Row) {
        let config = self.config;
        let target = &config.target.registry;
        if !target.is_empty() && source.domain().eq_ignore_ascii_case(target) {
            row.state = State::Private;
            return;
        }
        let not_mirrored = |why: String| (State::NotMirrored, Some(why));
        let (state, note) = if let Some(skip) = self.skip {
            not_mirrored(skip_note(skip).into())
        } else if target.is_empty() {
            not_mirrored("target.registry is not set".into())
        } else if !config.mirrors_image(source) {
            not_mirrored("its registry or name is not mirrored (sources, excludeImages)".into())
        } else if self.around.own_images.contains(&source.name()) {
            not_mirrored("privateer's own image".into())
        } else if !pod::is_candidate(source, self.around) {
            not_mirrored("the image policy denies it, so it is never mirrored".into())
        } else {
            let name = object_name(source);
            let found = self.mirrors.get(name.as_str());
            row.image_mirror = Some(name);
            match found {
                None => (State::NotRecorded, None),
                Some(mirror) => {
                    let status = mirror.status.as_ref();
                    row.target_image = status.and_then(|s| s.target_image.clone());
                    let state = match mirror.phase() {
                        Phase::Ready => State::Ready,
                        Phase::Pending => State::Pending,
                        Phase::Mirroring => State::Mirroring,
                        Phase::Failed => State::Failed,
                    };
                    (state, status.and_then(|s| s.last_error.clone()))
                }
            }
        };
        row.state = state;
        row.note = note;
    }
}

fn skip_note(skip: Skip) -> &'static str {
    match skip {
        Skip::ExcludedNamespace => "namespace excluded (namespace, webhook.excludeNamespaces)",
        Skip::SkipLabelledNamespace => "namespace labelled privateer.dev/skip=true",
        Skip::SkipAnnotation => "Pod annotated privateer.dev/skip=true",
        Skip::PrivateersOwnPod => "privateer's own Pod",
    }
}
