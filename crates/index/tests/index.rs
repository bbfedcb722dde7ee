//! The index answers from what was applied to it, and announces a change only once it holds it.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use futures::StreamExt;
use privateer_api::{ImageMirror, ImageMirrorSpec, ImageMirrorStatus, Phase};
use privateer_index::MirrorIndex;

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
    let counts = index.phase_counts();
    assert_eq!(
        (counts.get(&Phase::Ready), counts.get(&Phase::Failed)),
        (Some(&1), Some(&1))
    );
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
    let name = changes.next().await.unwrap();
    assert_eq!(name, "a");
    // Whoever is woken reads the change it was woken for.
    assert_eq!(index.get(&name).unwrap().phase(), Phase::Ready);
    // Deletions are not announced; a relist announces every name.
    writer.delete(mirror("a", None));
    writer.list(vec![mirror("x", None), mirror("y", None)]);
    let mut relisted = vec![changes.next().await.unwrap(), changes.next().await.unwrap()];
    relisted.sort();
    assert_eq!(relisted, ["x", "y"]);
}

#[tokio::test]
async fn a_reader_that_falls_behind_is_given_every_name() {
    let (index, mut writer) = MirrorIndex::new();
    writer.list(vec![]);
    let mut changes = Box::pin(index.changes());
    for i in 0..3000 {
        writer.apply(mirror(&format!("m{i}"), None));
    }
    let first: Vec<String> = changes.by_ref().take(3000).collect().await;
    // The oldest announcements were dropped: instead, the whole index (3000 names), which
    // includes the ones lost.
    for i in [0, 1, 2999] {
        assert!(first.contains(&format!("m{i}")), "m{i} missing");
    }
}
