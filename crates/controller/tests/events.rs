//! The controller's Events on a real API server: a repeat is a series on the first Event (a
//! merge patch of `series`, which the API server validates), a different note is a new Event,
//! and a series whose Event was deleted starts again.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use privateer_controller::Events;
use privateer_e2e::TestEnv;

async fn about(events: &Api<Event>, name: &str) -> Vec<Event> {
    let mut found: Vec<Event> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect();
    found.sort_by_key(|e| e.event_time.clone().map(|t| t.0));
    found
}

fn series_count(event: &Event) -> Option<i32> {
    event.series.as_ref().map(|s| s.count)
}

#[tokio::test]
async fn repeats_are_a_series_on_the_api_server() {
    let Some(env) = TestEnv::builder()
        .control_plane()
        .start_or_skip("events as series")
        .await
        .unwrap()
    else {
        return;
    };
    let client = env.client();
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut object = ConfigMap::default();
    object.metadata.name = Some("regarded".into());
    let object = maps.create(&PostParams::default(), &object).await.unwrap();
    let regarding: ObjectReference = object.object_ref(&());
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let publisher = Events::new(client.clone(), "privateer", Some("privateer-0".into()));
    let failed = |note: &str| {
        let (publisher, regarding, note) = (&publisher, &regarding, note.to_owned());
        async move {
            publisher
                .write(
                    regarding,
                    EventType::Warning,
                    "Failed",
                    Some(note),
                    "Reconcile",
                )
                .await
        }
    };

    failed("the source said 404").await.unwrap();
    let first = about(&events, "regarded").await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(series_count(&first[0]), None, "a first Event has no series");
    assert_eq!(first[0].reporting_controller.as_deref(), Some("privateer"));
    assert_eq!(first[0].regarding.as_ref().unwrap().uid, object.uid());

    failed("the source said 404").await.unwrap();
    failed("the source said 404").await.unwrap();
    let repeated = about(&events, "regarded").await;
    assert_eq!(
        repeated.len(),
        1,
        "repeats are not new Events: {repeated:?}"
    );
    assert_eq!(repeated[0].name_any(), first[0].name_any());
    assert_eq!(series_count(&repeated[0]), Some(3));
    let series = repeated[0].series.as_ref().unwrap();
    assert!(
        series.last_observed_time.0 >= repeated[0].event_time.as_ref().unwrap().0,
        "{series:?}"
    );

    failed("the source said 500").await.unwrap();
    let two = about(&events, "regarded").await;
    assert_eq!(two.len(), 2, "another note is another Event: {two:?}");

    // Its Event deleted (its TTL, a person): the repeat starts a new one.
    events
        .delete(&first[0].name_any(), &DeleteParams::default())
        .await
        .unwrap();
    failed("the source said 404").await.unwrap();
    let again = about(&events, "regarded").await;
    assert_eq!(again.len(), 2, "{again:?}");
    assert!(again.iter().all(|e| e.name_any() != first[0].name_any()));
    assert!(again.iter().all(|e| series_count(e).is_none()), "{again:?}");
}
