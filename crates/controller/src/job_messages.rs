//! A finished copy Job's termination messages, read from the API server once for all the
//! mirrors it copied for: a batch of 8 otherwise lists the Job's Pods 8 times.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use tokio::sync::OnceCell;

use crate::Error;

/// A Job's messages are dropped this long after they were read, should a member never come.
const KEPT_FOR: Duration = Duration::from_secs(600);

/// The messages of finished Jobs some of whose mirrors have not read them yet, by Job UID (a
/// name can come back: a Job left and made again).
#[derive(Default)]
pub struct JobMessages {
    by_uid: Mutex<HashMap<String, Kept>>,
}

/// The members of a batch are woken together by their Job's end: the first lists the Pods,
/// the others wait for its answer instead of listing too.
type Shared = Arc<OnceCell<Arc<Vec<String>>>>;

struct Kept {
    /// Newest first, once read.
    messages: Shared,
    readers_left: usize,
    since: Instant,
}

impl JobMessages {
    /// The termination messages of finished `job`'s Pods, newest first; `members` mirrors
    /// will ask, each once.
    pub async fn read(
        &self,
        client: &kube::Client,
        namespace: &str,
        job: &Job,
        members: usize,
    ) -> Result<Arc<Vec<String>>, Error> {
        let name = job.name_any();
        let listed = || async { Ok::<_, Error>(Arc::new(list(client, namespace, &name).await?)) };
        match self.share(job.uid().unwrap_or_default(), members, Instant::now()) {
            Some(shared) => Ok(Arc::clone(shared.get_or_try_init(listed).await?)),
            None => listed().await,
        }
    }

    /// The cell this reader shares with the Job's other members; `None` when it is the only
    /// one.
    fn share(&self, uid: String, members: usize, now: Instant) -> Option<Shared> {
        if uid.is_empty() || members <= 1 {
            return None;
        }
        let mut kept = self.by_uid.lock().unwrap_or_else(PoisonError::into_inner);
        kept.retain(|_, k| now.duration_since(k.since) < KEPT_FOR);
        let entry = kept.entry(uid.clone()).or_insert_with(|| Kept {
            messages: Shared::default(),
            readers_left: members,
            since: now,
        });
        entry.readers_left = entry.readers_left.saturating_sub(1);
        let shared = Arc::clone(&entry.messages);
        if entry.readers_left == 0 {
            kept.remove(&uid);
        }
        Some(shared)
    }
}

/// The Job's Pods' termination messages, newest first.
async fn list(client: &kube::Client, namespace: &str, job: &str) -> Result<Vec<String>, Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
        .await?;
    let mut messages: Vec<(Option<_>, String)> = list
        .items
        .iter()
        .flat_map(|pod| {
            pod.status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
        })
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref())
        .map(|t| (t.finished_at.clone(), t.message.clone().unwrap_or_default()))
        .collect();
    messages.sort_by(|a, b| b.0.as_ref().map(|t| t.0).cmp(&a.0.as_ref().map(|t| t.0)));
    Ok(messages.into_iter().map(|(_, message)| message).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_members_of_a_batch_share_one_read_then_it_goes() {
        let kept = JobMessages::default();
        let now = Instant::now();
        let first = kept.share("uid-1".into(), 3, now).unwrap();
        first.set(Arc::new(vec!["newest".to_owned()])).unwrap();
        let second = kept.share("uid-1".into(), 3, now).unwrap();
        assert_eq!(
            second.get().map(|m| m.as_slice()),
            Some(&["newest".to_owned()][..])
        );
        let third = kept.share("uid-1".into(), 3, now).unwrap();
        assert!(Arc::ptr_eq(&first, &third));
        assert!(kept.by_uid.lock().unwrap().is_empty(), "all have read");
    }

    #[test]
    fn a_job_of_one_mirror_is_not_kept_and_unread_messages_expire() {
        let kept = JobMessages::default();
        let now = Instant::now();
        assert!(kept.share("solo".into(), 1, now).is_none());
        let early = kept.share("batch".into(), 8, now).unwrap();
        let late = kept.share("batch".into(), 8, now + KEPT_FOR).unwrap();
        assert!(!Arc::ptr_eq(&early, &late), "expired, a new read");
    }
}
