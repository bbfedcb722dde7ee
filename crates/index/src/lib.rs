//! The one ImageMirror index of a privateer process: a single watch feeds it, and every part
//! that needs mirrors reads it — the webhook's lookups, the reconciler (its objects and its
//! triggers), the gate releaser's "are these mirrors settled", the metrics' counts. A change
//! is announced only after the index holds it, so whoever is woken by a change reads that
//! change (two caches fed by two watches could disagree for a moment, and a Pod woken by one
//! and judged by the other stayed gated).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{Stream, StreamExt};
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use privateer_api::{ImageMirror, Phase};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// An ImageMirror as the index holds it: one that does not deserialize is kept as the error,
/// so one bad object never stops the watch.
pub type Entry = DeserializeGuard<ImageMirror>;

/// Announcements buffered per reader; one that falls further behind is told to look at all.
const CHANGES_BUFFER: usize = 1024;

#[derive(Clone, Debug)]
enum Change {
    /// This mirror was created or changed (the index holds the new version).
    Applied(String),
    /// The index was (re)filled from a full list: any mirror may have changed.
    Resynced,
}

/// The index; cheap to share (`Arc`).
pub struct MirrorIndex {
    store: Store<Entry>,
    synced: AtomicBool,
    changes: broadcast::Sender<Change>,
}

/// What feeds the index: the watch, or a test's `apply`/`delete`.
pub struct IndexWriter {
    writer: Writer<Entry>,
    index: Arc<MirrorIndex>,
}

impl MirrorIndex {
    /// An empty index and its writer.
    pub fn new() -> (Arc<Self>, IndexWriter) {
        let writer = Writer::default();
        let index = Arc::new(Self {
            store: writer.as_reader(),
            synced: AtomicBool::new(false),
            changes: broadcast::channel(CHANGES_BUFFER).0,
        });
        let writer = IndexWriter {
            writer,
            index: index.clone(),
        };
        (index, writer)
    }

    /// The index fed by a watch of every ImageMirror, until `stop`.
    pub fn start(client: kube::Client, stop: CancellationToken) -> Arc<Self> {
        let (index, mut writer) = Self::new();
        let api: Api<Entry> = Api::all(client);
        // managedFields (a JSON tree per field manager, several per mirror) is what no reader
        // uses and the largest part of an object held: dropped before it is stored.
        let mut events = watcher(api, watcher::Config::default().any_semantic())
            .default_backoff()
            .modify(|entry: &mut Entry| {
                if let Ok(mirror) = &mut entry.0 {
                    mirror.metadata.managed_fields = None;
                }
            })
            .boxed();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    event = events.next() => match event {
                        Some(Ok(event)) => writer.apply_event(&event),
                        Some(Err(e)) => tracing::warn!("ImageMirror watch: {e}"),
                        None => break,
                    },
                }
            }
        });
        index
    }

    /// Holds a full list (the first one has arrived).
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// The kube-runtime store behind the index (for a `Controller` driven by [`Self::changes`]).
    pub fn store(&self) -> Store<Entry> {
        self.store.clone()
    }

    /// `f` of the mirror named `name`, when it exists and deserializes: what the admission hot
    /// path reads, without copying the object.
    pub fn read<R>(&self, name: &str, f: impl FnOnce(&ImageMirror) -> R) -> Option<R> {
        let entry = self.store.get(&ObjectRef::new(name))?;
        entry.0.as_ref().ok().map(f)
    }

    /// A copy of the mirror named `name`, when it exists and deserializes.
    pub fn get(&self, name: &str) -> Option<ImageMirror> {
        self.read(name, Clone::clone)
    }

    /// Each of `names` with its mirror (`None`: missing or not deserializable).
    pub fn lookup<'a>(
        &self,
        names: impl IntoIterator<Item = &'a String>,
    ) -> BTreeMap<String, Option<ImageMirror>> {
        names
            .into_iter()
            .map(|name| (name.clone(), self.get(name)))
            .collect()
    }

    /// Every named mirror exists and is Ready or Failed.
    pub fn settled(&self, names: &[String]) -> bool {
        names.iter().all(|name| {
            self.read(name, |m| matches!(m.phase(), Phase::Ready | Phase::Failed))
                .unwrap_or(false)
        })
    }

    /// Every mirror the index holds.
    pub fn all(&self) -> Vec<Arc<Entry>> {
        self.store.state()
    }

    /// From now on, each change, announced after the index holds it: the name of a created or
    /// changed mirror, or `All` after a (re)list or when this reader fell behind. Deletions are
    /// not announced: readers find the mirror gone when they look; nor is a change of
    /// `status.usage` alone (the controller's Pod count: nobody is woken by it).
    pub fn changes(&self) -> impl Stream<Item = Changed> + Send + 'static {
        futures::stream::unfold(self.changes.subscribe(), |mut receiver| async move {
            let changed = match receiver.recv().await {
                Ok(Change::Applied(name)) => Changed::Mirror(name),
                Ok(Change::Resynced) | Err(broadcast::error::RecvError::Lagged(_)) => Changed::All,
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            Some((changed, receiver))
        })
    }
}

/// What a reader of [`MirrorIndex::changes`] is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Changed {
    /// This mirror was created or changed.
    Mirror(String),
    /// Any mirror may have changed: look at all of them once.
    All,
}

/// The Pod count the controller writes (`status.usage`) is the only difference: no reader acts
/// on it (the reconciler, the gate releaser and the usage writer itself would each be woken
/// for nothing on every count change), and the index holds it for those who read it.
fn only_usage_changed(before: &Entry, after: &Entry) -> bool {
    let (Ok(before), Ok(after)) = (&before.0, &after.0) else {
        return false;
    };
    let without_usage = |mirror: &ImageMirror| {
        let mut mirror = mirror.clone();
        mirror.metadata.resource_version = None;
        mirror.metadata.managed_fields = None;
        if let Some(status) = &mut mirror.status {
            status.usage = None;
        }
        mirror
    };
    before.status.as_ref().map(|s| &s.usage) != after.status.as_ref().map(|s| &s.usage)
        && without_usage(before) == without_usage(after)
}

fn name_of(entry: &Entry) -> Option<String> {
    use kube::Resource;
    entry.meta().name.clone()
}

impl IndexWriter {
    /// Applies one watch event, then announces it (unless only `status.usage` changed).
    pub fn apply_event(&mut self, event: &watcher::Event<Entry>) {
        let usage_only = match event {
            watcher::Event::Apply(entry) => self
                .index
                .store
                .get(&ObjectRef::from_obj(entry))
                .is_some_and(|before| only_usage_changed(&before, entry)),
            _ => false,
        };
        self.writer.apply_watcher_event(event);
        let change = match event {
            watcher::Event::Apply(_) if usage_only => None,
            watcher::Event::Apply(entry) => name_of(entry).map(Change::Applied),
            watcher::Event::InitDone => {
                self.index.synced.store(true, Ordering::Release);
                Some(Change::Resynced)
            }
            watcher::Event::Delete(_) | watcher::Event::Init | watcher::Event::InitApply(_) => None,
        };
        if let Some(change) = change {
            // No reader yet is fine: each reader starts from the index as it is.
            let _ = self.index.changes.send(change);
        }
    }

    /// A created or changed mirror (for tests and callers without a watch).
    pub fn apply(&mut self, mirror: ImageMirror) {
        self.apply_event(&watcher::Event::Apply(DeserializeGuard(Ok(mirror))));
    }

    /// A deleted mirror.
    pub fn delete(&mut self, mirror: ImageMirror) {
        self.apply_event(&watcher::Event::Delete(DeserializeGuard(Ok(mirror))));
    }

    /// A full list, as a watch delivers one when it (re)starts: the index holds exactly
    /// `mirrors` and is synced.
    pub fn list(&mut self, mirrors: Vec<ImageMirror>) {
        self.apply_event(&watcher::Event::Init);
        for mirror in mirrors {
            self.apply_event(&watcher::Event::InitApply(DeserializeGuard(Ok(mirror))));
        }
        self.apply_event(&watcher::Event::InitDone);
    }
}
