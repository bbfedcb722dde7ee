//! The webhook's view of the cluster: the process's ImageMirror index and a reflector cache of
//! namespace labels (no API call on the hot path), and the one write it makes: creating
//! missing ImageMirrors.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PartialObjectMeta, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use privateer_api::{ImageMirror, names};
use privateer_image::Reference;
use privateer_index::MirrorIndex;
use tokio_util::sync::CancellationToken;

use crate::mutate::MirrorView;

/// How long a name this process created is trusted to exist before the cache shows it:
/// concurrent admissions of one image create one object.
const RECENTLY_CREATED: Duration = Duration::from_secs(60);

pub struct Cluster {
    client: kube::Client,
    mirrors: Arc<MirrorIndex>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    recently_created: Mutex<HashMap<String, Instant>>,
    create_timeout: Duration,
    /// The namespace watch has delivered its first full list.
    namespaces_synced: Arc<AtomicBool>,
}

/// Why a mirror could not be created.
#[derive(Debug, thiserror::Error)]
#[error("creating ImageMirror {name}: {problem}")]
pub struct CreateError {
    pub name: String,
    pub problem: String,
}

impl Cluster {
    /// Start the namespace watch (it runs until `stop` is cancelled); mirrors come from `mirrors`.
    pub fn start(
        client: kube::Client,
        mirrors: Arc<MirrorIndex>,
        create_timeout: Duration,
        stop: CancellationToken,
    ) -> Self {
        let (namespaces, writer) = reflector::store();
        let stream = reflector(
            writer,
            watcher(
                Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
                watcher::Config::default().any_semantic(),
            ),
        );
        let namespaces_synced = spawn_watch("Namespace", stream, stop);
        Self {
            client,
            mirrors,
            namespaces,
            recently_created: Mutex::new(HashMap::new()),
            create_timeout,
            namespaces_synced,
        }
    }

    /// Ready once both caches hold a full list.
    pub fn synced(&self) -> bool {
        self.mirrors.synced() && self.namespaces_synced.load(Ordering::Relaxed)
    }

    pub fn mirror(&self, name: &str) -> Option<MirrorView> {
        self.mirrors.read(name, |m| MirrorView {
            phase: m.phase(),
            target_image: m.status.as_ref().and_then(|s| s.target_image.clone()),
            spec_target: m.spec.target.clone(),
        })
    }

    /// Whether the mirror's `Verified` condition is True; `None` when there is no such mirror.
    pub fn verified(&self, name: &str) -> Option<bool> {
        self.mirrors.read(name, ImageMirror::is_verified)
    }

    /// Does the namespace carry `privateer.dev/skip=true`?
    pub fn namespace_skipped(&self, namespace: &str) -> bool {
        self.namespaces
            .get(&ObjectRef::new(namespace))
            .and_then(|ns| {
                ns.metadata
                    .labels
                    .as_ref()
                    .map(|l| l.get(names::SKIP).cloned())
            })
            .flatten()
            .is_some_and(|v| v == "true")
    }

    /// Create the missing mirrors at once (AlreadyExists is success), each within the create
    /// timeout. Any failure is returned: the caller then admits the Pod unchanged.
    pub async fn create(
        &self,
        missing: &BTreeMap<String, Reference>,
    ) -> Result<usize, CreateError> {
        let api: Api<ImageMirror> = Api::all(self.client.clone());
        let creates = missing
            .iter()
            .filter(|(name, _)| !self.claim(name))
            .map(|(name, source)| {
                let api = api.clone();
                async move {
                    let mirror = ImageMirror::recorded_by(name, &source.to_string(), "webhook");
                    let params = PostParams::default();
                    let call = api.create(&params, &mirror);
                    let problem = match tokio::time::timeout(self.create_timeout, call).await {
                        Ok(Ok(_)) => {
                            tracing::info!(mirror = %name, source = %source, "created ImageMirror");
                            return Ok(true);
                        }
                        Ok(Err(kube::Error::Api(e))) if e.code == 409 => return Ok(false),
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => format!("no answer within {:?}", self.create_timeout),
                    };
                    self.release(name);
                    Err(CreateError {
                        name: name.clone(),
                        problem,
                    })
                }
            });
        let results = futures::future::join_all(creates).await;
        let mut created = 0;
        for result in results {
            created += usize::from(result?);
        }
        Ok(created)
    }

    /// True when this process created `name` recently (it exists); otherwise claims it.
    fn claim(&self, name: &str) -> bool {
        let mut recent = self
            .recently_created
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        recent.retain(|_, at| now.duration_since(*at) < RECENTLY_CREATED);
        if recent.contains_key(name) {
            return true;
        }
        recent.insert(name.to_owned(), now);
        false
    }

    fn release(&self, name: &str) {
        self.recently_created
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name);
    }

    /// `Wait`: until every named mirror is Ready or Failed, or `timeout` passes.
    pub async fn wait_settled(&self, names: &[String], timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let settled = self.mirrors.settled(names);
            if settled {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn spawn_watch<K, S>(kind: &'static str, stream: S, stop: CancellationToken) -> Arc<AtomicBool>
where
    K: Send + 'static,
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let mut stream = stream.default_backoff().boxed();
    let synced = Arc::new(AtomicBool::new(false));
    let flag = synced.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                event = stream.next() => match event {
                    Some(Ok(watcher::Event::InitDone)) => flag.store(true, Ordering::Relaxed),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => tracing::warn!("{kind} watch: {e}"),
                    None => break,
                },
            }
        }
    });
    synced
}
