//! The `privateer` command line as a user and a script meet it: stdout, stderr, exit codes.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::process::{Command, Output};

const ECR: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn privateer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_privateer"))
        .args(args)
        .output()
        .expect("run privateer")
}

fn ok(args: &[&str]) -> String {
    let out = privateer(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty(), "{args:?} wrote to stderr");
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Refused input: exit 2, nothing on stdout, one line on stderr that contains `phrase`.
fn refused(args: &[&str], phrase: &str) {
    let out = privateer(args);
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    assert!(
        out.stdout.is_empty(),
        "{args:?} printed {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8(out.stderr).expect("utf-8 stderr");
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    assert!(err.contains(phrase), "{args:?}: {err:?} lacks {phrase:?}");
}

#[test]
fn normalize_prints_the_canonical_reference() {
    assert_eq!(
        ok(&["image", "normalize", "nginx"]),
        "docker.io/library/nginx:latest\n"
    );
    assert_eq!(
        ok(&["image", "normalize", "index.docker.io/nginx:1.25"]),
        "docker.io/library/nginx:1.25\n"
    );
    assert_eq!(
        ok(&["image", "normalize", &format!("nginx@{DIGEST}")]),
        format!("docker.io/library/nginx@{DIGEST}\n")
    );
    assert_eq!(
        ok(&["image", "normalize", "--", "quay.io/a/b:c"]),
        "quay.io/a/b:c\n"
    );
}

#[test]
fn options_end_at_double_dash() {
    // A reference starting with '-' is read as one after `--`, and refused as a reference.
    refused(
        &["image", "normalize", "--", "-nginx"],
        "invalid image reference \"-nginx\"",
    );
}

#[test]
fn invalid_references_exit_2_with_one_line() {
    refused(&["image", "normalize", "NGINX"], "must be lowercase");
    refused(&["image", "normalize", "nginx:"], "invalid tag");
    refused(
        &["image", "normalize", "nginx@sha256:abc"],
        "64 hex characters",
    );
    refused(&["image", "normalize", ""], "empty image reference");
    refused(
        &["image", "name", "a//b"],
        "invalid repository path component",
    );
    refused(
        &["image", "target", "Bad", "--registry", ECR],
        "must be lowercase",
    );
}

#[test]
fn target_follows_the_naming_rule() {
    assert_eq!(
        ok(&["image", "target", "nginx:1.25", "--registry", ECR]),
        format!("{ECR}/mirror/docker.io/library/nginx:1.25\n")
    );
    assert_eq!(
        ok(&[
            "image",
            "target",
            "--registry",
            ECR,
            "--prefix",
            "team/cache",
            "registry.k8s.io/pause:3.10"
        ]),
        format!("{ECR}/team/cache/registry.k8s.io/pause:3.10\n")
    );
    assert_eq!(
        ok(&[
            "image",
            "target",
            "localhost:5000/a:1",
            "--registry",
            ECR,
            "--prefix",
            ""
        ]),
        format!("{ECR}/localhost_5000/a:1\n")
    );
    refused(
        &["image", "target", "nginx", "--registry", "bad host"],
        "invalid target registry",
    );
    refused(
        &[
            "image",
            "target",
            "nginx",
            "--registry",
            ECR,
            "--prefix",
            "UP",
        ],
        "invalid prefix",
    );
}

#[test]
fn target_from_a_configuration_file() {
    let dir = std::env::temp_dir().join(format!("privateer-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!("target:\n  registry: {ECR}\n  prefix: p\n"),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    assert_eq!(
        ok(&["image", "target", "--config", config, "nginx"]),
        format!("{ECR}/p/docker.io/library/nginx:latest\n")
    );
    assert_eq!(ok(&["config", "check", config]), format!("{config}: ok\n"));

    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "webhook:\n  rewritePolicy: Sometimes\n").unwrap();
    let out = privateer(&["config", "check", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("webhook.rewritePolicy: unknown value \"Sometimes\", expected one of Gate, WhenReady, Always, Wait, Record"), "{err}");
    refused(
        &[
            "image",
            "target",
            "--config",
            "/nonexistent/config.yaml",
            "nginx",
        ],
        "cannot read configuration file",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn name_is_the_imagemirror_object_name() {
    let name = ok(&["image", "name", "nginx:1.25"]);
    assert!(name.starts_with("docker.io-library-nginx-1.25-"), "{name}");
    assert_eq!(ok(&["image", "name", "docker.io/library/nginx:1.25"]), name);
}

#[test]
fn crd_prints_the_checked_in_definition() {
    let checked_in = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../crd/imagemirrors.privateer.dev.yaml"
    ));
    assert_eq!(ok(&["crd"]), checked_in);
}

#[test]
fn usage_errors_exit_2() {
    let out = privateer(&["image", "target", "nginx"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let out = privateer(&["image", "frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn report_refuses_a_malformed_config_map_name_and_a_missing_file() {
    refused(
        &["report", "--config-map", "privateer"],
        "--config-map \"privateer\": give NAMESPACE/NAME",
    );
    refused(
        &["report", "--config", "/nonexistent/config.yaml"],
        "/nonexistent/config.yaml",
    );
    let out = privateer(&["report", "-o", "yaml"]);
    assert_eq!(out.status.code(), Some(2), "only table and json");
}

/// Generated files (the chart's CRD and values schema, docs/configuration.md) match the Rust
/// types (`just generate` rewrites them).
#[test]
fn chart_crd_and_values_schema_are_generated() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let chart_crd = std::fs::read_to_string(format!(
        "{root}/charts/privateer/crds/imagemirrors.privateer.dev.yaml"
    ))
    .unwrap();
    assert_eq!(
        chart_crd,
        ok(&["crd"]),
        "charts/privateer/crds drifted: run `just generate`"
    );

    let dir = std::env::temp_dir().join(format!("privateer-schema-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config_schema = dir.join("config.schema.json");
    std::fs::write(&config_schema, ok(&["config", "schema"])).unwrap();
    let generated = dir.join("values.schema.json");
    let reference = dir.join("configuration.md");
    let status = Command::new("python3")
        .arg(format!("{root}/tests/chart_schema.py"))
        .arg(format!("{root}/charts/privateer/values.schema.base.json"))
        .arg(&config_schema)
        .arg(&generated)
        .arg(&reference)
        .status()
        .unwrap();
    assert!(status.success());
    let checked_in =
        std::fs::read_to_string(format!("{root}/charts/privateer/values.schema.json")).unwrap();
    assert_eq!(
        checked_in,
        std::fs::read_to_string(&generated).unwrap(),
        "charts/privateer/values.schema.json drifted: run `just generate`"
    );
    assert_eq!(
        std::fs::read_to_string(format!("{root}/docs/configuration.md")).unwrap(),
        std::fs::read_to_string(&reference).unwrap(),
        "docs/configuration.md drifted: run `just generate`"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// examples/prewarm.yaml names each ImageMirror as the webhook would, so Pods find them.
#[test]
fn prewarm_example_uses_the_webhooks_names() {
    let text = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/prewarm.yaml"
    ));
    let mut seen = 0;
    for document in text.split("\n---\n").skip(1) {
        let mirror: serde_yaml::Value = serde_yaml::from_str(document).unwrap();
        let name = mirror["metadata"]["name"].as_str().unwrap();
        let source = mirror["spec"]["source"].as_str().unwrap();
        assert_eq!(ok(&["image", "name", source]).trim(), name, "{source}");
        seen += 1;
    }
    assert!(seen >= 3);
}
