//! How many Pods use each mirror, counted from the controller's one Pod watch and written to
//! `status.usage` (the admission hot path never writes it). The count is kept as Pod → the
//! mirrors it uses, so a changed or deleted Pod is subtracted exactly; after a (re)list the
//! whole count is rebuilt and every mirror compared. Writes go out in batches, only where the
//! count on the object differs, under their own field manager so the reconciler's status
//! writes leave them alone.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use privateer_api::pod::original_images;
use privateer_api::{ImageMirror, MirrorUsage};
use privateer_image::{Reference, object_name};

use crate::gate::needed_mirrors;
use crate::status::apply_status_fields;
use crate::{Context, Error};

const FIELD_MANAGER: &str = "privateer-usage";

/// The mirrors `pod` uses: those its `privateer.dev/original-images` annotation names (once
/// rewritten) and `mirrored`, the public images it still names (`mirrored_images`, which
/// backfill needs too); none once it has finished.
pub fn used_mirrors(pod: &Pod, mirrored: &[Reference]) -> Vec<String> {
    let finished = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|phase| matches!(phase, "Succeeded" | "Failed"));
    if finished {
        return Vec::new();
    }
    let mut names = needed_mirrors(&original_images(pod).unwrap_or_default());
    names.extend(mirrored.iter().map(object_name));
    names.sort();
    names.dedup();
    names
}

/// Pod → mirrors and mirror → Pods, with the mirrors whose count changed since last taken.
#[derive(Default)]
pub struct UsageCount {
    by_pod: HashMap<String, Vec<String>>,
    counts: HashMap<String, u32>,
    /// A list under way: the Pods it has delivered so far.
    relisting: Option<HashMap<String, Vec<String>>>,
    /// Mirrors whose count changed and are not yet compared with their object.
    changed: BTreeSet<String>,
    /// A full list has been counted.
    synced: bool,
    /// Every mirror must be compared (after a list: Pods may have gone while nobody watched).
    compare_all: bool,
}

impl UsageCount {
    /// `pod` (namespace/name) now uses `mirrors`.
    pub fn apply(&mut self, pod: String, mirrors: Vec<String>) {
        if let Some(listing) = &mut self.relisting {
            listing.insert(pod, mirrors);
            return;
        }
        let before = match mirrors.is_empty() {
            true => self.by_pod.remove(&pod),
            false => self.by_pod.insert(pod, mirrors.clone()),
        };
        if before.as_ref() == Some(&mirrors) {
            return;
        }
        for name in before.unwrap_or_default() {
            self.add(&name, -1);
        }
        for name in mirrors {
            self.add(&name, 1);
        }
    }

    /// `pod` is gone.
    pub fn delete(&mut self, pod: &str) {
        if let Some(listing) = &mut self.relisting {
            listing.remove(pod);
            return;
        }
        for name in self.by_pod.remove(pod).unwrap_or_default() {
            self.add(&name, -1);
        }
    }

    /// A full list begins; the count is replaced when it ends.
    pub fn list_started(&mut self) {
        self.relisting = Some(HashMap::new());
    }

    /// The list is complete: the count is now what it delivered.
    pub fn list_done(&mut self) {
        let Some(listing) = self.relisting.take() else {
            return;
        };
        let mut counts: HashMap<String, u32> = HashMap::new();
        for name in listing.values().flatten() {
            *counts.entry(name.clone()).or_default() += 1;
        }
        self.by_pod = listing;
        self.counts = counts;
        self.synced = true;
        self.compare_all = true;
    }

    fn add(&mut self, name: &str, delta: i64) {
        let count = self.counts.entry(name.to_owned()).or_default();
        *count = u32::try_from(i64::from(*count) + delta).unwrap_or(0);
        if *count == 0 {
            self.counts.remove(name);
        }
        self.changed.insert(name.to_owned());
    }

    /// Pods using `name` now.
    pub fn count(&self, name: &str) -> u32 {
        self.counts.get(name).copied().unwrap_or(0)
    }

    /// A full list has been counted: the count can be trusted (for retention, for writes).
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Compare `name` with its object at the next flush (its object appeared or changed).
    pub fn recheck(&mut self, name: String) {
        if self.synced {
            self.changed.insert(name);
        }
    }

    /// Compare every mirror at the next flush.
    pub fn recheck_all(&mut self) {
        if self.synced {
            self.compare_all = true;
        }
    }

    /// What to compare now: `None` for every mirror, else these names; empty until synced.
    pub fn take_due(&mut self) -> Option<Vec<String>> {
        if !self.synced {
            return Some(Vec::new());
        }
        let changed = std::mem::take(&mut self.changed);
        if std::mem::take(&mut self.compare_all) {
            return None;
        }
        Some(changed.into_iter().collect())
    }
}

/// The usage to write when the object says `current` and `pods` use it now; `None` when the
/// object is right (an unused mirror that never had Pods is left without `usage`).
pub fn next_usage(current: Option<&MirrorUsage>, pods: u32, now: Timestamp) -> Option<MirrorUsage> {
    let recorded = current.map_or(0, |u| u.pods);
    if recorded == pods && (current.is_some() || pods == 0) {
        return None;
    }
    Some(MirrorUsage {
        pods,
        last_used_time: Some(Time(now)),
    })
}

/// Write `usage` on the mirror's status (a mirror deleted meanwhile is not an error).
pub async fn write(ctx: &Context, mirror: &ImageMirror, usage: &MirrorUsage) -> Result<(), Error> {
    let fields = serde_json::json!({ "usage": usage });
    match apply_status_fields(ctx, &mirror.name_any(), FIELD_MANAGER, fields).await {
        Ok(()) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use privateer_api::Config;
    use privateer_api::pod::{Around, mirrored_images};

    fn used(pod: &Pod, around: &Around<'_>) -> Vec<String> {
        used_mirrors(pod, &mirrored_images(pod, around))
    }

    fn pod(images: &[&str], annotation: Option<&str>, phase: &str) -> Pod {
        let mut value = serde_json::json!({
            "metadata": {"name": "p", "namespace": "apps"},
            "spec": {"containers": images.iter().enumerate()
                .map(|(i, image)| serde_json::json!({"name": format!("c{i}"), "image": image}))
                .collect::<Vec<_>>()},
            "status": {"phase": phase},
        });
        if let Some(originals) = annotation {
            value["metadata"]["annotations"] =
                serde_json::json!({"privateer.dev/original-images": originals});
        }
        serde_json::from_value(value).expect("a Pod")
    }

    fn name(image: &str) -> String {
        object_name(&privateer_image::Reference::parse(image).expect("a reference"))
    }

    #[test]
    fn a_pod_uses_its_originals_and_its_public_images_until_it_finishes() {
        let mut config = Config::default();
        config.target.registry = "123456789012.dkr.ecr.eu-west-1.amazonaws.com".into();
        let around = Around {
            config: &config,
            own_images: &[],
            namespace_skipped: false,
        };
        let rewritten = pod(
            &[
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com/mirror/docker.io/library/nginx:1.27",
                "busybox:1.36",
            ],
            Some(r#"{"c0": "nginx:1.27"}"#),
            "Running",
        );
        let mut expected = vec![name("nginx:1.27"), name("busybox:1.36")];
        expected.sort();
        assert_eq!(used(&rewritten, &around), expected);
        let done = pod(&["busybox:1.36"], None, "Succeeded");
        assert!(used(&done, &around).is_empty());
        let skipped = Around {
            namespace_skipped: true,
            ..around
        };
        assert!(used(&pod(&["busybox:1.36"], None, "Running"), &skipped).is_empty());
    }

    #[test]
    fn counts_follow_pods_and_a_list_replaces_them() {
        let mut usage = UsageCount::default();
        assert_eq!(usage.take_due(), Some(vec![]), "nothing before a full list");
        usage.list_started();
        usage.apply("apps/a".into(), vec!["m1".into()]);
        usage.apply("apps/b".into(), vec!["m1".into(), "m2".into()]);
        usage.list_done();
        assert_eq!((usage.count("m1"), usage.count("m2")), (2, 1));
        assert_eq!(
            usage.take_due(),
            None,
            "after a list every mirror is compared"
        );

        usage.apply("apps/b".into(), vec!["m2".into()]);
        assert_eq!(usage.count("m1"), 1);
        usage.apply("apps/b".into(), vec!["m2".into()]);
        usage.delete("apps/a");
        usage.delete("apps/unknown");
        assert_eq!((usage.count("m1"), usage.count("m2")), (0, 1));
        assert_eq!(usage.take_due(), Some(vec!["m1".into(), "m2".into()]));
        assert_eq!(usage.take_due(), Some(vec![]));

        // A relist while Pods went away unseen: the count is what the new list says.
        usage.list_started();
        usage.apply("apps/c".into(), vec!["m3".into()]);
        assert_eq!(
            usage.count("m2"),
            1,
            "the old count holds until the list is done"
        );
        usage.list_done();
        assert_eq!((usage.count("m2"), usage.count("m3")), (0, 1));
        // A finished Pod uses nothing.
        usage.apply("apps/c".into(), vec![]);
        assert_eq!(usage.count("m3"), 0);
    }

    #[test]
    fn usage_is_written_only_when_the_count_on_the_object_is_wrong() {
        let now = Timestamp::from_second(1_800_000_000).expect("a time");
        let at = |pods| MirrorUsage {
            pods,
            last_used_time: Some(Time(now)),
        };
        assert_eq!(next_usage(None, 0, now), None, "never used: nothing to say");
        assert_eq!(next_usage(None, 2, now), Some(at(2)));
        assert_eq!(next_usage(Some(&at(2)), 2, now), None);
        assert_eq!(next_usage(Some(&at(2)), 0, now), Some(at(0)));
        assert_eq!(
            next_usage(Some(&at(0)), 0, now),
            None,
            "the time it went unused stays"
        );
    }
}
