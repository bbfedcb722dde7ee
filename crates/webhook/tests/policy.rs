//! Image policy rules: allow-list on whole components, `:latest`, digests, the target
//! registry, and ECR compliance from repository facts (including "privateer is creating it").
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use privateer_api::Config;
use privateer_api::config::{OnUnknown, TagMutability};
use privateer_ecr::{Answer, Findings, RepositoryFacts};
use privateer_image::Reference;
use privateer_webhook::policy::{
    Rule, Subject, allows, ecr_repository, judge_ecr, judge_static, message,
};

const TARGET: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn subject(image: &str) -> Subject {
    Subject {
        container: "app".into(),
        image: image.into(),
        original: None,
    }
}

fn rules(config: &Config, image: &str) -> Vec<Rule> {
    judge_static(&subject(image), config)
        .into_iter()
        .map(|d| d.rule)
        .collect()
}

#[test]
fn allow_list_matches_whole_host_and_path_components() {
    let allowed = |entry: &str, image: &str| allows(entry, &Reference::parse(image).unwrap());
    assert!(allowed("docker.io", "nginx:1.27"));
    assert!(allowed("docker.io/library", "nginx:1.27"));
    assert!(allowed("index.docker.io", "nginx:1.27"));
    assert!(!allowed("docker.io", "docker.io.evil.com/nginx:1.27"));
    assert!(!allowed("docker.io", "evil.com/docker.io/nginx:1.27"));
    assert!(allowed("gcr.io/good-project", "gcr.io/good-project/app:1"));
    assert!(allowed(
        "gcr.io/good-project",
        "gcr.io/good-project/team/app:1"
    ));
    assert!(!allowed(
        "gcr.io/good-project",
        "gcr.io/good-project-evil/app:1"
    ));
    assert!(!allowed("gcr.io/good-project", "gcr.io/good/app:1"));
    assert!(allowed("localhost:5000", "localhost:5000/app:1"));
    assert!(!allowed("localhost", "localhost:5000/app:1"));

    let mut config = Config::default();
    config.target.registry = TARGET.into();
    config.policy.allowed_registries.enabled = true;
    config.policy.allowed_registries.registries = vec!["gcr.io/good-project".into()];
    assert_eq!(
        rules(&config, "gcr.io/good-project-evil/app:1"),
        [Rule::AllowedRegistries]
    );
    assert!(
        rules(
            &config,
            &format!("{TARGET}/mirror/docker.io/library/nginx:1")
        )
        .is_empty()
    );
}

#[test]
fn latest_untagged_digest_and_target_rules() {
    let mut config = Config::default();
    config.target.registry = TARGET.into();
    config.policy.deny_latest.enabled = true;
    assert_eq!(rules(&config, "nginx"), [Rule::DenyLatest]);
    assert_eq!(rules(&config, "nginx:latest"), [Rule::DenyLatest]);
    assert!(rules(&config, "nginx:1.27").is_empty());
    assert!(
        rules(&config, &format!("nginx@{DIGEST}")).is_empty(),
        "a digest pins it"
    );

    config.policy.require_digest.enabled = true;
    config.policy.require_target_registry.enabled = true;
    assert_eq!(
        rules(&config, "nginx:1.27"),
        [Rule::RequireDigest, Rule::RequireTargetRegistry]
    );
    assert!(rules(&config, &format!("{TARGET}/app@{DIGEST}")).is_empty());
    assert_eq!(rules(&config, "Not A Reference"), [Rule::InvalidReference]);

    let denials = judge_static(&subject("nginx:latest"), &config);
    let text = message("pod", &denials);
    assert!(
        text.contains("container \"app\" image \"nginx:latest\""),
        "{text}"
    );
    assert!(text.contains("(policy denyLatest)"), "{text}");
}

#[test]
fn ecr_compliance_from_facts() {
    let mut config = Config::default();
    config.target.registry = TARGET.into();
    config.policy.ecr_compliance.enabled = true;
    let image = format!("{TARGET}/mirror/docker.io/library/nginx:1.27");
    let s = subject(&image);
    assert_eq!(
        ecr_repository(&s, &config),
        Some(("mirror/docker.io/library/nginx".into(), None))
    );
    assert_eq!(
        ecr_repository(&subject("nginx:1"), &config),
        None,
        "not an ECR image"
    );

    let present = |immutable: bool, scan: bool| {
        Answer::Known(RepositoryFacts::Present {
            tag_immutable: immutable,
            tag_mutability: if immutable { "IMMUTABLE" } else { "MUTABLE" }.into(),
            scan_on_push: scan,
        })
    };
    assert_eq!(judge_ecr(&s, &config, &present(true, true), None), None);
    let denial = judge_ecr(&s, &config, &present(false, false), None).unwrap();
    assert_eq!(denial.rule, Rule::EcrCompliance);
    assert!(
        denial.problem.contains("MUTABLE") && denial.problem.contains("scan on push"),
        "{}",
        denial.problem
    );

    let missing = Answer::Known(RepositoryFacts::Missing);
    assert!(judge_ecr(&s, &config, &missing, None).is_some());
    // privateer rewrote it and is creating the repository with its own settings.
    let mut mirrored = s.clone();
    mirrored.original = Some("nginx:1.27".into());
    assert_eq!(judge_ecr(&mirrored, &config, &missing, None), None);
    let mut mutable = config.clone();
    mutable.target.ecr.tag_mutability = TagMutability::Mutable;
    assert!(judge_ecr(&mirrored, &mutable, &missing, None).is_some());

    let unknown = Answer::Unknown("throttled".into());
    assert_eq!(
        judge_ecr(&s, &config, &unknown, None),
        None,
        "onUnknown: Allow"
    );
    config.policy.ecr_compliance.on_unknown = OnUnknown::Deny;
    assert!(
        judge_ecr(&s, &config, &unknown, None)
            .unwrap()
            .problem
            .contains("throttled")
    );

    config.policy.ecr_compliance.deny_critical_findings = true;
    let critical = Answer::Known(Findings::Scanned { critical: 2 });
    let denial = judge_ecr(&s, &config, &present(true, true), Some(&critical)).unwrap();
    assert!(denial.problem.contains("2 CRITICAL"), "{}", denial.problem);
    let clean = Answer::Known(Findings::Scanned { critical: 0 });
    assert_eq!(
        judge_ecr(&s, &config, &present(true, true), Some(&clean)),
        None
    );
}

#[test]
fn a_rewrite_to_the_target_never_launders_what_was_asked_for() {
    let mut config = Config::default();
    config.target.registry = TARGET.into();
    config.policy.allowed_registries.enabled = true;
    config.policy.allowed_registries.registries = vec!["docker.io".into()];
    config.policy.deny_latest.enabled = true;
    let rewritten = |original: &str, image: &str| Subject {
        container: "app".into(),
        image: image.into(),
        original: Some(original.into()),
    };
    let quay = rewritten(
        "quay.io/evil/miner:1",
        &format!("{TARGET}/mirror/quay.io/evil/miner:1"),
    );
    let denials = judge_static(&quay, &config);
    assert_eq!(
        denials.iter().map(|d| d.rule).collect::<Vec<_>>(),
        [Rule::AllowedRegistries]
    );
    let text = message("pod", &denials);
    assert!(
        text.contains("(asked as \"quay.io/evil/miner:1\")"),
        "{text}"
    );
    let nginx = rewritten(
        "nginx:1.27",
        &format!("{TARGET}/mirror/docker.io/library/nginx:1.27"),
    );
    assert!(judge_static(&nginx, &config).is_empty());
}
