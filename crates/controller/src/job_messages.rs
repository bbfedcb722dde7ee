//! A finished copy Job's termination messages, read from the API server once for all the
//! mirrors it copied for: a batch of 8 otherwise lists the Job's Pods 8 times.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use crate::Error;

/// A Job's messages are dropped this long after they were read, should a member never come.
const KEPT_FOR: Duration = Duration::from_secs(600);

/// The messages of finished Jobs some of whose mirrors have not read them yet, by Job UID (a
/// name can come back: a Job left and made again).
#[derive(Default)]
pub struct JobMessages {
    by_uid: Mutex<HashMap<String, Kept>>,
}

struct Kept {
    /// Newest first.
    messages: Arc<Vec<String>>,
    readers_left: usize,
    read_at: Instant,
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
        let uid = job.uid().unwrap_or_default();
        if let Some(messages) = self.take(&uid, Instant::now()) {
            return Ok(messages);
        }
        let messages = Arc::new(list(client, namespace, &job.name_any()).await?);
        self.keep(uid, Arc::clone(&messages), members, Instant::now());
        Ok(messages)
    }

    fn take(&self, uid: &str, now: Instant) -> Option<Arc<Vec<String>>> {
        let mut kept = self.by_uid.lock().unwrap_or_else(PoisonError::into_inner);
        kept.retain(|_, k| now.duration_since(k.read_at) < KEPT_FOR);
        let entry = kept.get_mut(uid)?;
        let messages = Arc::clone(&entry.messages);
        entry.readers_left = entry.readers_left.saturating_sub(1);
        if entry.readers_left == 0 {
            kept.remove(uid);
        }
        Some(messages)
    }

    fn keep(&self, uid: String, messages: Arc<Vec<String>>, members: usize, now: Instant) {
        // The first reader has read; a Job of one mirror is not kept at all.
        let readers_left = members.saturating_sub(1);
        if uid.is_empty() || readers_left == 0 {
            return;
        }
        let kept = Kept {
            messages,
            readers_left,
            read_at: now,
        };
        self.by_uid
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(uid, kept);
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
    fn each_member_reads_once_then_the_messages_go() {
        let kept = JobMessages::default();
        let now = Instant::now();
        let messages = Arc::new(vec!["newest".to_owned()]);
        kept.keep("uid-1".into(), messages, 3, now);
        assert!(kept.take("uid-1", now).is_some(), "second member");
        assert_eq!(
            kept.take("uid-1", now).as_deref(),
            Some(&vec!["newest".to_owned()]),
            "third member"
        );
        assert!(kept.take("uid-1", now).is_none(), "all have read");
    }

    #[test]
    fn a_job_of_one_mirror_is_not_kept_and_unread_messages_expire() {
        let kept = JobMessages::default();
        let now = Instant::now();
        kept.keep("solo".into(), Arc::new(vec![]), 1, now);
        assert!(kept.take("solo", now).is_none());
        kept.keep("batch".into(), Arc::new(vec![]), 8, now);
        assert!(kept.take("batch", now + KEPT_FOR).is_none());
        assert!(kept.by_uid.lock().unwrap().is_empty());
    }
}
