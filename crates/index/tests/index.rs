//! The index answers from what was applied to it, and announces a change only once it holds it.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use futures::StreamExt;
use privateer_api::{ImageMirror, ImageMirrorSpec, ImageMirrorStatus, MirrorUsage, Phase};
use privateer_index::{Changed, MirrorIndex};

fn mirror(name: &str, phase: Option<Phase>) -> ImageMirror {
    let mut mirror = ImageMirror::new(name, ImageMirrorSpec::for_source("nginx:1.27"));
    mirror.status = phase.map(|phase| ImageMirrorStatus {
        phase: Some(phase),
        ..ImageMirrorStatus::default()
    });
    mirror
}

#[test]
fn answers_from_what_was_applied() {
    let (index, mut writer) = MirrorIndex::new();
    assert!(!index.synced());
    writer.list(vec![mirror("a", Some(Phase::Ready)), mirror("b", None)]);
    assert!(index.synced());
    assert_eq!(index.get("a").unwrap().phase(), Phase::Ready);
    assert!(index.get("c").is_none());
    assert!(index.settled(&["a".into()]));
    assert!(!index.settled(&["a".into(), "b".into()]), "b is Pending");
    assert!(
        !index.settled(&["c".into()]),
        "a missing mirror is not settled"
    );
    writer.apply(mirror("b", Some(Phase::Failed)));
    assert!(index.settled(&["a".into(), "b".into()]));
    assert_eq!(index.read("b", ImageMirror::phase), Some(Phase::Failed));
    let looked = index.lookup(&["a".to_owned(), "c".to_owned()]);
    assert!(looked["a"].is_some() && looked["c"].is_none());
    writer.delete(mirror("a", Some(Phase::Ready)));
    assert!(index.get("a").is_none());
    // A relist holds exactly what it lists.
    writer.list(vec![mirror("z", None)]);
    assert_eq!(index.all().len(), 1);
    assert!(index.get("b").is_none() && index.get("z").is_some());
}

#[tokio::test]
async fn a_change_is_announced_once_the_index_holds_it() {
    let (index, mut writer) = MirrorIndex::new();
    writer.list(vec![mirror("a", None)]);
    let mut changes = Box::pin(index.changes());
    writer.apply(mirror("a", Some(Phase::Ready)));
    assert_eq!(changes.next().await, Some(Changed::Mirror("a".into())));
    // Whoever is woken reads the change it was woken for.
    assert_eq!(index.read("a", ImageMirror::phase), Some(Phase::Ready));
    // Deletions are not announced; a relist says to look at everything, once.
    writer.delete(mirror("a", None));
    writer.list(vec![mirror("x", None), mirror("y", None)]);
    assert_eq!(changes.next().await, Some(Changed::All));
    assert_eq!(index.all().len(), 2);
}

#[tokio::test]
async fn a_change_of_the_pod_count_alone_is_held_not_announced() {
    let (index, mut writer) = MirrorIndex::new();
    writer.list(vec![mirror("a", Some(Phase::Ready))]);
    let mut changes = Box::pin(index.changes());
    let mut counted = mirror("a", Some(Phase::Ready));
    counted.status.as_mut().unwrap().usage = Some(MirrorUsage {
        pods: 3,
        last_used_time: None,
    });
    counted.metadata.resource_version = Some("2".into());
    writer.apply(counted.clone());
    assert_eq!(
        index.read("a", |m| m.status.as_ref().unwrap().usage.clone()),
        Some(counted.status.as_ref().unwrap().usage.clone()),
        "held"
    );
    // The next announcement is the phase change, not the count.
    counted.status.as_mut().unwrap().phase = Some(Phase::Failed);
    writer.apply(counted);
    assert_eq!(changes.next().await, Some(Changed::Mirror("a".into())));
    assert_eq!(index.read("a", ImageMirror::phase), Some(Phase::Failed));
}

#[tokio::test]
async fn a_reader_that_falls_behind_is_told_to_look_at_everything() {
    let (index, mut writer) = MirrorIndex::new();
    writer.list(vec![]);
    let mut changes = Box::pin(index.changes());
    for i in 0..3000 {
        writer.apply(mirror(&format!("m{i}"), None));
    }
    // The oldest announcements were dropped: instead of them, `All`, then the newest ones.
    assert_eq!(changes.next().await, Some(Changed::All));
    let rest: Vec<Changed> = changes.take(1024).collect().await;
    assert_eq!(rest.last(), Some(&Changed::Mirror("m2999".into())));
}
