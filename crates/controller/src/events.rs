//! Kubernetes Events, published one way for every part of the controller. An Event that cannot
//! be written is logged and otherwise ignored: it never fails a reconcile.
//!
//! Not kube-runtime's `Recorder`: it keeps every Event it wrote for 6 minutes, whole, and
//! scans all of them on each publish. At size (a release Event per Pod, a status Event per
//! mirror) that is tens of MiB and a quadratic cost. Here a repeat of the same Event within
//! the window becomes a series (count, last seen) on the first one, as the Recorder does, but
//! only a hash, the Event's name and a count are kept, swept once a minute and capped.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;

use crate::Context;

/// How long a repeat joins the first Event's series (the Recorder's and client-go's window).
const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);
/// How often expired series are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Series remembered at most; past it a repeat is written as a new Event.
const MAX_SERIES: usize = 16_384;

/// What the controller writes Events as, and the series of recent ones.
pub struct Events {
    client: kube::Client,
    controller: String,
    instance: String,
    series: Mutex<SeriesBook>,
}

/// What one Event that was written is remembered by.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Written {
    namespace: String,
    name: String,
    count: i32,
    last: Instant,
}

/// Recent Events by the hash of what makes two of them the same.
#[derive(Debug)]
struct SeriesBook {
    by_key: HashMap<u64, Written>,
    swept: Instant,
}

/// Write a new Event, or count a repeat on the one already written.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Create,
    Repeat {
        namespace: String,
        name: String,
        count: i32,
    },
}

impl SeriesBook {
    fn new(now: Instant) -> Self {
        Self {
            by_key: HashMap::new(),
            swept: now,
        }
    }

    fn step(&mut self, key: u64, now: Instant) -> Step {
        if now.duration_since(self.swept) >= SWEEP_EVERY {
            self.by_key
                .retain(|_, w| now.duration_since(w.last) < SERIES_WINDOW);
            self.swept = now;
        }
        match self.by_key.get(&key) {
            Some(w) if now.duration_since(w.last) < SERIES_WINDOW => Step::Repeat {
                namespace: w.namespace.clone(),
                name: w.name.clone(),
                count: w.count + 1,
            },
            _ => Step::Create,
        }
    }

    fn written(&mut self, key: u64, written: Written) {
        if self.by_key.len() < MAX_SERIES || self.by_key.contains_key(&key) {
            self.by_key.insert(key, written);
        }
    }
}

/// Two Events are one series when they say the same thing about the same object.
fn series_key(
    regarding: &ObjectReference,
    kind: EventType,
    reason: &str,
    note: Option<&str>,
    action: &str,
) -> u64 {
    let mut hasher = DefaultHasher::new();
    (
        &regarding.api_version,
        &regarding.kind,
        &regarding.namespace,
        &regarding.name,
        &regarding.uid,
    )
        .hash(&mut hasher);
    (matches!(kind, EventType::Warning), reason, note, action).hash(&mut hasher);
    hasher.finish()
}

impl Events {
    /// `instance` is this replica (its Pod name), `controller` the reporting controller.
    pub fn new(client: kube::Client, controller: &str, instance: Option<String>) -> Self {
        Self {
            client,
            controller: controller.to_owned(),
            instance: instance.unwrap_or_else(|| controller.to_owned()),
            series: Mutex::new(SeriesBook::new(Instant::now())),
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, SeriesBook> {
        self.series.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Write an Event of `kind` about `regarding`, or count it on the same one written
    /// within the window.
    pub async fn write(
        &self,
        regarding: &ObjectReference,
        kind: EventType,
        reason: &str,
        note: Option<String>,
        action: &str,
    ) -> Result<(), kube::Error> {
        let key = series_key(regarding, kind, reason, note.as_deref(), action);
        let now = Instant::now();
        let step = self.book().step(key, now);
        let time = MicroTime(Timestamp::now());
        if let Step::Repeat {
            namespace,
            name,
            count,
        } = step
        {
            let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
            let series = serde_json::json!({
                "series": { "count": count, "lastObservedTime": time }
            });
            match events
                .patch(&name, &PatchParams::default(), &Patch::Merge(&series))
                .await
            {
                Ok(_) => {
                    let written = Written {
                        namespace,
                        name,
                        count,
                        last: now,
                    };
                    self.book().written(key, written);
                    return Ok(());
                }
                // Gone (its TTL, a person): start a new one.
                Err(kube::Error::Api(status)) if status.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let object = regarding.name.as_deref().unwrap_or(&self.controller);
        let name = format!("{object}.{:x}", time.0.as_nanosecond());
        let event = K8sEvent {
            action: Some(action.to_owned()),
            reason: Some(reason.to_owned()),
            event_time: Some(time),
            regarding: Some(regarding.clone()),
            note,
            metadata: ObjectMeta {
                namespace: Some(namespace.clone()),
                name: Some(name.clone()),
                ..Default::default()
            },
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(
                match kind {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_owned(),
            ),
            ..Default::default()
        };
        Api::<K8sEvent>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &event)
            .await?;
        let written = Written {
            namespace,
            name,
            count: 1,
            last: now,
        };
        self.book().written(key, written);
        Ok(())
    }
}

/// Publish an Event of `kind` about `regarding`.
pub async fn publish(
    ctx: &Context,
    regarding: &ObjectReference,
    kind: EventType,
    reason: &str,
    note: Option<String>,
    action: &str,
) {
    if let Err(e) = ctx
        .events
        .write(regarding, kind, reason, note, action)
        .await
    {
        let name = regarding.name.as_deref().unwrap_or_default();
        tracing::debug!("event {reason} for {name}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(count: i32, last: Instant) -> Written {
        Written {
            namespace: "apps".into(),
            name: "web.1".into(),
            count,
            last,
        }
    }

    #[test]
    fn a_repeat_within_the_window_counts_on_the_first_event() {
        let start = Instant::now();
        let mut book = SeriesBook::new(start);
        assert_eq!(book.step(7, start), Step::Create);
        book.written(7, written(1, start));
        let later = start + Duration::from_secs(10);
        assert_eq!(
            book.step(7, later),
            Step::Repeat {
                namespace: "apps".into(),
                name: "web.1".into(),
                count: 2
            }
        );
        assert_eq!(book.step(8, later), Step::Create);
    }

    #[test]
    fn past_the_window_an_event_is_new_and_expired_series_are_swept() {
        let start = Instant::now();
        let mut book = SeriesBook::new(start);
        book.written(7, written(3, start));
        let past = start + SERIES_WINDOW + Duration::from_secs(1);
        assert_eq!(book.step(7, past), Step::Create);
        assert!(book.by_key.is_empty(), "swept: {:?}", book.by_key);
    }

    #[test]
    fn the_book_is_capped() {
        let start = Instant::now();
        let mut book = SeriesBook::new(start);
        for key in 0..(MAX_SERIES as u64 + 10) {
            book.written(key, written(1, start));
        }
        assert_eq!(book.by_key.len(), MAX_SERIES);
        book.written(0, written(2, start));
        assert_eq!(
            book.by_key[&0].count, 2,
            "a series already kept is counted on"
        );
    }

    #[test]
    fn events_differing_in_reason_note_or_object_are_different_series() {
        let pod = |name: &str| ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some("apps".into()),
            name: Some(name.into()),
            ..Default::default()
        };
        let key = |r: &ObjectReference, reason: &str, note: &str| {
            series_key(r, EventType::Normal, reason, Some(note), "Release")
        };
        let base = key(&pod("a"), "Released", "x");
        assert_eq!(base, key(&pod("a"), "Released", "x"));
        assert_ne!(base, key(&pod("b"), "Released", "x"));
        assert_ne!(base, key(&pod("a"), "Held", "x"));
        assert_ne!(base, key(&pod("a"), "Released", "y"));
    }
}
