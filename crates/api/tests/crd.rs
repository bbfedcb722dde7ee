//! The generated CRD: checked in, complete, and what the rest of privateer relies on.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;
use kube::CustomResourceExt;
use privateer_api::{ImageMirror, ImageMirrorSpec, Phase, crd_yaml};

const CHECKED_IN: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../crd/imagemirrors.privateer.dev.yaml"
));

#[test]
fn checked_in_crd_matches_the_rust_types() {
    let generated = crd_yaml().unwrap();
    assert!(
        generated == CHECKED_IN,
        "crd/imagemirrors.privateer.dev.yaml is stale: run `just generate` and commit the result"
    );
}

fn version_schema() -> JSONSchemaProps {
    let crd = ImageMirror::crd();
    crd.spec.versions[0]
        .schema
        .clone()
        .unwrap()
        .open_api_v3_schema
        .unwrap()
}

fn property<'a>(schema: &'a JSONSchemaProps, path: &[&str]) -> &'a JSONSchemaProps {
    path.iter().fold(schema, |s, key| {
        s.properties
            .as_ref()
            .and_then(|p| p.get(*key))
            .unwrap_or_else(|| panic!("no property {key}"))
    })
}

#[test]
fn names_scope_and_subresources() {
    let crd = ImageMirror::crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("imagemirrors.privateer.dev")
    );
    assert_eq!(crd.spec.group, "privateer.dev");
    assert_eq!(crd.spec.scope, "Cluster");
    assert_eq!(crd.spec.names.kind, "ImageMirror");
    assert_eq!(crd.spec.names.plural, "imagemirrors");
    assert_eq!(
        crd.spec.names.short_names.as_deref(),
        Some(&["imir".to_owned()][..])
    );
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(version.served && version.storage);
    assert!(
        version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some()
    );
}

#[test]
fn source_is_required_and_immutable_by_cel() {
    let schema = version_schema();
    let spec = property(&schema, &["spec"]);
    assert_eq!(spec.required.as_deref(), Some(&["source".to_owned()][..]));
    let rules = property(&schema, &["spec", "source"])
        .x_kubernetes_validations
        .clone()
        .unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].rule, "self == oldSelf");
    assert!(rules[0].message.as_deref().unwrap().contains("immutable"));
}

#[test]
fn printer_columns_show_source_phase_digest_attempts_pods_age_and_wide_target() {
    let crd = ImageMirror::crd();
    let columns = crd.spec.versions[0]
        .additional_printer_columns
        .clone()
        .unwrap();
    let seen: Vec<(String, String, i32)> = columns
        .iter()
        .map(|c| (c.name.clone(), c.json_path.clone(), c.priority.unwrap_or(0)))
        .collect();
    let want = [
        ("Source", ".spec.source", 0),
        ("Phase", ".status.phase", 0),
        ("Digest", ".status.shortDigest", 0),
        ("Attempts", ".status.attempts", 0),
        ("Pods", ".status.usage.pods", 0),
        ("Age", ".metadata.creationTimestamp", 0),
        ("Target", ".status.targetImage", 1),
    ];
    let want: Vec<(String, String, i32)> = want
        .iter()
        .map(|(n, p, pr)| ((*n).to_owned(), (*p).to_owned(), *pr))
        .collect();
    assert_eq!(seen, want);
}

#[test]
fn conditions_merge_by_type_under_server_side_apply() {
    let schema = version_schema();
    let conditions = property(&schema, &["status", "conditions"]);
    assert_eq!(conditions.x_kubernetes_list_type.as_deref(), Some("map"));
    assert_eq!(
        conditions.x_kubernetes_list_map_keys.as_deref(),
        Some(&["type".to_owned()][..])
    );
}

#[test]
fn a_hand_written_mirror_parses_with_defaults() {
    let yaml = r#"
apiVersion: privateer.dev/v1alpha1
kind: ImageMirror
metadata:
  name: docker.io-library-nginx-1.27-0123456789ab
spec:
  source: nginx:1.27
  platforms: [linux/amd64, linux/arm64/v8]
  refreshInterval: 6h
  credentialsSecretRef: {name: dockerhub}
"#;
    let mirror: ImageMirror = serde_yaml::from_str(yaml).unwrap();
    assert_eq!(mirror.spec.source, "nginx:1.27");
    assert_eq!(
        mirror.spec.deletion_policy,
        privateer_api::DeletionPolicy::Retain
    );
    assert_eq!(
        std::time::Duration::from(mirror.spec.refresh_interval.unwrap()).as_secs(),
        6 * 3600
    );
    assert_eq!(mirror.phase(), Phase::Pending);
    let minimal = ImageMirror::new(
        "x",
        ImageMirrorSpec {
            source: "nginx".into(),
            target: None,
            platforms: vec![],
            refresh_interval: None,
            credentials_secret_ref: None,
            deletion_policy: Default::default(),
        },
    );
    let json = serde_json::to_value(&minimal).unwrap();
    assert_eq!(
        json["spec"],
        serde_json::json!({"source": "nginx", "deletionPolicy": "Retain"})
    );
}

#[test]
fn short_digest_is_what_kubectl_shows() {
    let digest = format!("sha256:{}", "ab".repeat(32));
    assert_eq!(
        privateer_api::crd::short_digest(&digest),
        "sha256:abababababab"
    );
}
