//! The configuration file: defaults, the documented example, and errors that name the key.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use privateer_api::Config;
use privateer_api::config::{ConfigError, RewritePolicy};

const EXAMPLE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/config.yaml"
));
const REGISTRY: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";

fn problems(yaml: &str) -> Vec<String> {
    match Config::from_yaml(yaml, "test.yaml") {
        Ok(_) => vec![],
        Err(ConfigError::Invalid { problems, .. }) => {
            problems.iter().map(ToString::to_string).collect()
        }
        Err(ConfigError::Parse { problem, .. }) => vec![problem.to_string()],
        Err(e) => panic!("unexpected {e}"),
    }
}

#[test]
fn example_documents_every_default() {
    let example = Config::from_yaml(EXAMPLE, "examples/config.yaml").unwrap();
    let mut defaults = Config::default();
    defaults.target.registry = REGISTRY.into();
    assert_eq!(
        example, defaults,
        "examples/config.yaml must show the defaults (and the sample registry)"
    );
    // Every key of the full configuration appears in the example.
    let full = serde_yaml::to_value(&defaults).unwrap();
    let mut missing = Vec::new();
    collect_keys(&full, "", &mut missing);
    let missing: Vec<_> = missing
        .into_iter()
        .filter(|key| {
            let leaf = key.rsplit('.').next().unwrap();
            !EXAMPLE.lines().any(|l| {
                l.trim_start()
                    .trim_start_matches("# ")
                    .starts_with(&format!("{leaf}:"))
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "keys missing from examples/config.yaml: {missing:?}"
    );
}

fn collect_keys(value: &serde_yaml::Value, prefix: &str, out: &mut Vec<String>) {
    if let serde_yaml::Value::Mapping(map) = value {
        for (k, v) in map {
            let key = format!("{prefix}{}", k.as_str().unwrap());
            out.push(key.clone());
            collect_keys(v, &format!("{key}."), out);
        }
    }
}

#[test]
fn empty_file_means_defaults_but_a_registry_is_needed_to_mirror() {
    assert_eq!(
        problems(""),
        vec![
            "target.registry: required: the registry images are mirrored into, e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com"
        ]
    );
    assert_eq!(problems("# only a comment\n").len(), 1);
    // Policy-only: nothing mirrored, no registry needed.
    assert!(problems("sources: {mirror: []}\npolicy: {denyLatest: {enabled: true}}").is_empty());
}

#[test]
fn minimal_config_loads() {
    let config = Config::from_yaml(&format!("target:\n  registry: {REGISTRY}\n"), "t").unwrap();
    assert_eq!(config.webhook.rewrite_policy, RewritePolicy::Gate);
    assert_eq!(config.target.prefix, "mirror");
}

#[test]
fn unknown_enum_value_names_key_value_and_choices() {
    let yaml = format!("target: {{registry: {REGISTRY}}}\nwebhook:\n  rewritePolicy: Sometimes\n");
    let got = problems(&yaml);
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with(
            "webhook.rewritePolicy: unknown value \"Sometimes\", expected one of Gate, WhenReady, Always, Wait, Record"
        ),
        "{got:?}"
    );
    assert!(got[0].contains("line 3"), "{got:?}");
}

#[test]
fn unknown_keys_are_refused_with_their_path() {
    let got = problems(&format!("target: {{registry: {REGISTRY}, regsitry: x}}"));
    assert!(
        got[0].starts_with("target.regsitry: unknown field `regsitry`"),
        "{got:?}"
    );
    let got = problems("copy:\n  job:\n    backofLimit: 3\n");
    assert!(
        got[0].starts_with("copy.job.backofLimit: unknown field"),
        "{got:?}"
    );
}

#[test]
fn wrong_types_and_durations_name_the_key() {
    let got = problems(&format!(
        "target: {{registry: {REGISTRY}}}\ncopy: {{concurrency: many}}"
    ));
    assert!(
        got[0].starts_with("copy.concurrency: invalid type"),
        "{got:?}"
    );
    let got = problems(&format!(
        "target: {{registry: {REGISTRY}}}\nwebhook: {{gateTimeout: 10 minutes}}"
    ));
    assert!(got[0].starts_with("webhook.gateTimeout:"), "{got:?}");
    let got = problems("- a list\n- not a mapping\n");
    assert!(
        got[0].starts_with("(document): invalid type: sequence"),
        "{got:?}"
    );
    let got = problems("target: [unclosed");
    assert!(got[0].starts_with("(document):"), "{got:?}");
}

#[test]
fn validation_reports_every_problem_by_key() {
    let yaml = r#"
namespace: Privateer
target:
  registry: "bad host"
  ecr:
    encryption: {type: AES256, kmsKey: alias/x}
    repositoryPolicy: "{not json"
    assumeRoleArn: admin
sources:
  mirror: ["docker.io", "bad_host"]
  credentials: [{registry: docker.io, secretName: Bad_Name}]
  endpoints:
    docker.io: {url: "ftp://x"}
webhook:
  listen: "8443"
  waitTimeout: 20s
  excludeNamespaces: [kube-system, "Bad NS"]
policy:
  allowedRegistries: {enabled: true}
copy:
  concurrency: 0
  parallelism: 65
  platforms: [linux, linux/amd64]
  job:
    resources: {limits: {memory: lots}}
controller:
  retry: {initialBackoff: 10m, maxBackoff: 1m, maxAttempts: 0}
metrics: {listen: nowhere}
"#;
    let got = problems(yaml);
    let keys: Vec<&str> = got.iter().map(|p| p.split(": ").next().unwrap()).collect();
    for key in [
        "namespace",
        "target.registry",
        "target.ecr.encryption.kmsKey",
        "target.ecr.repositoryPolicy",
        "target.ecr.assumeRoleArn",
        "sources.mirror[1]",
        "sources.credentials[0].secretName",
        "sources.endpoints.docker.io.url",
        "webhook.listen",
        "webhook.waitTimeout",
        "webhook.excludeNamespaces[1]",
        "policy.allowedRegistries.registries",
        "copy.concurrency",
        "copy.parallelism",
        "copy.platforms[0]",
        "copy.job.resources.limits.memory",
        "controller.retry.initialBackoff",
        "controller.retry.maxAttempts",
        "metrics.listen",
    ] {
        assert!(
            keys.contains(&key),
            "no problem reported for {key}; got:\n{}",
            got.join("\n")
        );
    }
    assert_eq!(
        keys.len(),
        19,
        "unexpected extra problems:\n{}",
        got.join("\n")
    );
}

#[test]
fn bad_prefix_is_reported_on_the_prefix() {
    let got = problems(&format!("target: {{registry: {REGISTRY}, prefix: Mirror}}"));
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with("target.prefix: invalid prefix \"Mirror\""),
        "{got:?}"
    );
}

#[test]
fn show_round_trips() {
    let mut config = Config::default();
    config.target.registry = REGISTRY.into();
    let yaml = serde_yaml::to_string(&config).unwrap();
    assert_eq!(Config::from_yaml(&yaml, "round-trip").unwrap(), config);
}

#[test]
fn mirrored_registries_follow_mirror_and_ignore_patterns() {
    let sources = privateer_api::config::SourcesConfig {
        mirror: vec!["docker.io".into(), "*.example.com".into()],
        ignore: vec!["private.example.com".into()],
        ..Default::default()
    };
    assert!(sources.mirrors_registry("docker.io"));
    assert!(sources.mirrors_registry("registry.example.com"));
    assert!(!sources.mirrors_registry("example.com"));
    assert!(!sources.mirrors_registry("evilexample.com"));
    assert!(!sources.mirrors_registry("private.example.com"));
    assert!(!sources.mirrors_registry("quay.io"));
    assert!(privateer_api::config::SourcesConfig::default().mirrors_registry("quay.io"));
}
