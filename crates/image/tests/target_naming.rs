//! Target naming and object names: fixed cases, then properties over generated references.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::collections::HashMap;

use privateer_image::{
    Reference, TargetError, TargetNaming, is_dns1123_subdomain, is_ecr_repository_name, object_name,
};
use proptest::prelude::*;

const ECR: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
const H64: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn target(naming: &TargetNaming, source: &str) -> String {
    naming
        .target(&Reference::parse(source).unwrap())
        .unwrap()
        .to_string()
}

#[test]
fn default_layout_keeps_host_path_tag_and_digest() {
    let n = TargetNaming::new(ECR, "mirror").unwrap();
    let cases = [
        (
            "nginx:1.25",
            format!("{ECR}/mirror/docker.io/library/nginx:1.25"),
        ),
        (
            "docker.io/library/nginx:1.25",
            format!("{ECR}/mirror/docker.io/library/nginx:1.25"),
        ),
        (
            "nginx",
            format!("{ECR}/mirror/docker.io/library/nginx:latest"),
        ),
        (
            "quay.io/prometheus/node-exporter:v1.8.0",
            format!("{ECR}/mirror/quay.io/prometheus/node-exporter:v1.8.0"),
        ),
        (
            "registry.k8s.io/pause:3.10",
            format!("{ECR}/mirror/registry.k8s.io/pause:3.10"),
        ),
        (
            &format!("nginx@sha256:{H64}"),
            format!("{ECR}/mirror/docker.io/library/nginx@sha256:{H64}"),
        ),
        (
            &format!("nginx:1.25@sha256:{H64}"),
            format!("{ECR}/mirror/docker.io/library/nginx:1.25@sha256:{H64}"),
        ),
        (
            "localhost:5000/team/app:v1",
            format!("{ECR}/mirror/localhost_5000/team/app:v1"),
        ),
        (
            "[::1]:5000/app:v1",
            format!("{ECR}/mirror/host_x5b3a3a315d3a35303030/app:v1"),
        ),
        (
            "Registry.Corp/app",
            format!("{ECR}/mirror/host_x52656769737472792e436f7270/app:latest"),
        ),
    ];
    for (source, want) in cases {
        assert_eq!(target(&n, source), want, "source {source}");
    }
}

#[test]
fn prefix_is_optional_and_may_have_several_components() {
    let none = TargetNaming::new(ECR, "").unwrap();
    assert_eq!(
        target(&none, "nginx:1"),
        format!("{ECR}/docker.io/library/nginx:1")
    );
    let deep = TargetNaming::new(ECR, "/platform/mirror/").unwrap();
    assert_eq!(deep.prefix(), "platform/mirror");
    assert_eq!(
        target(&deep, "nginx:1"),
        format!("{ECR}/platform/mirror/docker.io/library/nginx:1")
    );
}

#[test]
fn images_already_in_the_target_map_to_themselves() {
    let n = TargetNaming::new(ECR, "mirror").unwrap();
    let own = format!("{ECR}/team/app:v3");
    assert_eq!(target(&n, &own), own);
    let mirrored = format!("{ECR}/mirror/docker.io/library/nginx:1.25");
    assert_eq!(target(&n, &mirrored), mirrored);
}

#[test]
fn paths_ecr_refuses_are_sanitized_and_hashed() {
    let n = TargetNaming::new(ECR, "mirror").unwrap();
    let a = target(&n, "example.com/a__b/c--d:1");
    let b = target(&n, "example.com/a_b/c-d:1");
    assert_eq!(b, format!("{ECR}/mirror/example.com/a_b/c-d:1"));
    assert!(
        a.starts_with(&format!("{ECR}/mirror/example.com/a_b/c-d-h")),
        "{a}"
    );
    assert_ne!(a, b);
    // A valid path that merely looks hashed is hashed too, so it cannot shadow a hashed one.
    let lookalike = target(&n, "example.com/a_b/c-d-h0123456789abcdef:1");
    assert!(!lookalike.contains("c-d-h0123456789abcdef:"), "{lookalike}");
}

#[test]
fn long_names_are_cut_with_a_hash_and_fit_docker_and_ecr_limits() {
    let n = TargetNaming::new(ECR, "mirror").unwrap();
    let long_a = format!("example.com/{}/a", "x".repeat(200));
    let long_b = format!("example.com/{}/b", "x".repeat(200));
    let ta = n.target(&Reference::parse(&long_a).unwrap()).unwrap();
    let tb = n.target(&Reference::parse(&long_b).unwrap()).unwrap();
    assert_ne!(ta, tb);
    assert!(ta.name().len() <= 255, "{}", ta.name().len());
    assert!(is_ecr_repository_name(ta.path()));
}

#[test]
fn bad_registry_or_prefix_is_refused() {
    assert!(matches!(
        TargetNaming::new("bad host", "m"),
        Err(TargetError::InvalidRegistry { .. })
    ));
    assert!(matches!(
        TargetNaming::new(ECR, "Mirror"),
        Err(TargetError::InvalidPrefix { .. })
    ));
    assert!(matches!(
        TargetNaming::new(ECR, "a//b"),
        Err(TargetError::InvalidPrefix { .. })
    ));
    assert!(matches!(
        TargetNaming::new(ECR, "a__b"),
        Err(TargetError::InvalidPrefix { .. })
    ));
    let huge = "p".repeat(250);
    assert!(matches!(
        TargetNaming::new(ECR, &huge),
        Err(TargetError::PrefixTooLong { .. })
    ));
}

#[test]
fn object_names_are_readable_and_deterministic() {
    let name = object_name(&Reference::parse("nginx:1.25").unwrap());
    assert!(name.starts_with("docker.io-library-nginx-1.25-"), "{name}");
    assert_eq!(name.len(), "docker.io-library-nginx-1.25-".len() + 12);
    // The webhook and a person pre-warming write the image differently, and meet.
    for spelling in [
        "docker.io/library/nginx:1.25",
        "index.docker.io/nginx:1.25",
        "library/nginx:1.25",
    ] {
        assert_eq!(object_name(&Reference::parse(spelling).unwrap()), name);
    }
    let pinned = object_name(&Reference::parse(&format!("ghcr.io/org/app@sha256:{H64}")).unwrap());
    assert!(
        pinned.starts_with("ghcr.io-org-app-sha256-0123456789ab-"),
        "{pinned}"
    );
    let port = object_name(&Reference::parse("localhost:5000/a_b/c:V1_x").unwrap());
    assert!(port.starts_with("localhost-5000-a-b-c-v1-x-"), "{port}");
    // Case-only differences in tags stay distinct through the hash.
    let upper = object_name(&Reference::parse("nginx:ABC").unwrap());
    let lower = object_name(&Reference::parse("nginx:abc").unwrap());
    assert_ne!(upper, lower);
    assert!(is_dns1123_subdomain(&upper));
}

// --- properties -----------------------------------------------------------------------------

fn alnum() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,6}"
}

fn path_component() -> impl Strategy<Value = String> {
    (
        alnum(),
        prop::collection::vec(
            (
                prop::sample::select(vec![".", "_", "__", "-", "--", "---"]),
                alnum(),
            ),
            0..3,
        ),
    )
        .prop_map(|(head, rest)| {
            rest.into_iter()
                .fold(head, |acc, (sep, part)| acc + sep + &part)
        })
}

fn domain() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        prop::sample::select(vec![
            "docker.io",
            "index.docker.io",
            "quay.io",
            "ghcr.io",
            "gcr.io",
            "registry.k8s.io",
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "[::1]:5000",
            "[fc00::1]",
            "Registry.Corp",
            "xn--p1ai.example",
            "a-b.example.com:443",
            ECR,
        ])
        .prop_map(|d| Some(d.to_owned())),
        (
            "[a-z][a-z0-9-]{0,8}[a-z0-9]",
            "(com|io|net)",
            prop::option::of(1u16..65535)
        )
            .prop_map(|(h, tld, port)| Some(match port {
                Some(p) => format!("{h}.{tld}:{p}"),
                None => format!("{h}.{tld}"),
            })),
    ]
}

prop_compose! {
    fn reference()(
        domain in domain(),
        path in prop::collection::vec(path_component(), 1..5),
        tag in prop::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
        digest in prop::option::of("[0-9a-f]{64}"),
    ) -> String {
        let mut s = domain.map(|d| d + "/").unwrap_or_default() + &path.join("/");
        if let Some(t) = tag { s = s + ":" + &t; }
        if let Some(d) = digest { s = s + "@sha256:" + &d; }
        s
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn normalize_is_idempotent(input in reference()) {
        if let Ok(once) = Reference::parse(&input) {
            let twice = Reference::parse(&once.to_string()).unwrap();
            prop_assert_eq!(once.to_string(), twice.to_string());
            prop_assert_eq!(once.name(), twice.name());
            prop_assert_eq!(once.effective_tag(), twice.effective_tag());
            prop_assert_eq!(once.digest(), twice.digest());
        }
    }

    #[test]
    fn targets_are_valid_ecr_names(input in reference(), prefix in prop::sample::select(vec!["", "mirror", "a/b-c/d.e"])) {
        let naming = TargetNaming::new(ECR, prefix).unwrap();
        if let Ok(source) = Reference::parse(&input) {
            let target = naming.target(&source).unwrap();
            if naming.is_in_target(&source) {
                prop_assert_eq!(target, source);
                return Ok(());
            }
            prop_assert_eq!(target.domain(), ECR);
            prop_assert!(is_ecr_repository_name(target.path()), "{} -> {}", source, target);
            prop_assert!(target.name().len() <= 255);
            prop_assert_eq!(target.tag(), source.tag());
            prop_assert_eq!(target.digest(), source.digest());
            prop_assert!(is_dns1123_subdomain(&object_name(&source)));
        }
    }

    #[test]
    fn distinct_sources_get_distinct_targets(inputs in prop::collection::vec(reference(), 2..40)) {
        let naming = TargetNaming::new(ECR, "mirror").unwrap();
        let mut repos: HashMap<String, String> = HashMap::new();
        let mut names: HashMap<String, String> = HashMap::new();
        for input in inputs {
            let Ok(source) = Reference::parse(&input) else { continue };
            let repo = naming.repository(&source);
            if let Some(other) = repos.insert(repo.clone(), source.name()) {
                prop_assert_eq!(&other, &source.name(), "two sources share repository {}", repo);
            }
            let name = object_name(&source);
            if let Some(other) = names.insert(name.clone(), source.to_string()) {
                prop_assert_eq!(&other, &source.to_string(), "two references share object name {}", name);
            }
        }
    }

    #[test]
    fn parser_never_panics(input in "\\PC{0,80}") {
        let _ = Reference::parse(&input);
    }
}

#[test]
fn adversarial_pairs_stay_apart() {
    let naming = TargetNaming::new(ECR, "mirror").unwrap();
    let pairs = [
        ("localhost:5000/app", "localhost_5000/app"),
        ("a__b/c", "a_b/c"),
        ("a--b/c", "a-b/c"),
        ("example.com/a/b", "example.com/a-b"),
        ("host.io:80/x", "host.io_80/x"),
        ("[::1]/x", "host_x5b3a3a315d/x"),
    ];
    for (a, b) in pairs {
        let (Ok(ra), Ok(rb)) = (Reference::parse(a), Reference::parse(b)) else {
            continue;
        };
        assert_ne!(naming.repository(&ra), naming.repository(&rb), "{a} vs {b}");
    }
}
