//! Reference parsing and normalization, case by case, from Docker's documented behaviour
//! (distribution/reference's normalize and parse tests, Docker's CLI docs) and the edges of
//! the grammar. `D256`, `D384`, `D512` stand for valid digests, `H64` for 64 hex characters.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use privateer_image::{Reference, ReferenceError};

const H64: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

fn expand(s: &str) -> String {
    let h96 = "a".repeat(96);
    let h128 = "b".repeat(128);
    s.replace("D256", &format!("sha256:{H64}"))
        .replace("D384", &format!("sha384:{h96}"))
        .replace("D512", &format!("sha512:{h128}"))
        .replace("H64", H64)
}

/// (input, canonical form)
const VALID: &[(&str, &str)] = &[
    // Docker Hub short names and official images.
    ("nginx", "docker.io/library/nginx:latest"),
    ("debian", "docker.io/library/debian:latest"),
    ("ubuntu", "docker.io/library/ubuntu:latest"),
    ("nginx:1.25", "docker.io/library/nginx:1.25"),
    ("nginx:latest", "docker.io/library/nginx:latest"),
    ("nginx:1.25-alpine", "docker.io/library/nginx:1.25-alpine"),
    ("library/nginx", "docker.io/library/nginx:latest"),
    ("library/debian", "docker.io/library/debian:latest"),
    ("docker/docker", "docker.io/docker/docker:latest"),
    ("fooo/bar", "docker.io/fooo/bar:latest"),
    ("nonlibrary/ubuntu", "docker.io/nonlibrary/ubuntu:latest"),
    ("other/library", "docker.io/other/library:latest"),
    ("jess/t-rex", "docker.io/jess/t-rex:latest"),
    (
        "ubuntu-12.04-base",
        "docker.io/library/ubuntu-12.04-base:latest",
    ),
    ("test_com", "docker.io/library/test_com:latest"),
    ("bitnami/redis:7.2", "docker.io/bitnami/redis:7.2"),
    ("a/b/c/d", "docker.io/a/b/c/d:latest"),
    // docker.io and index.docker.io spelled out.
    ("docker.io/nginx", "docker.io/library/nginx:latest"),
    ("docker.io/library/nginx", "docker.io/library/nginx:latest"),
    (
        "docker.io/library/nginx:1.25",
        "docker.io/library/nginx:1.25",
    ),
    ("docker.io/docker/docker", "docker.io/docker/docker:latest"),
    ("docker.io/debian", "docker.io/library/debian:latest"),
    (
        "docker.io/ubuntu-12.04-base",
        "docker.io/library/ubuntu-12.04-base:latest",
    ),
    ("docker.io/jess/t-rex", "docker.io/jess/t-rex:latest"),
    ("index.docker.io/nginx", "docker.io/library/nginx:latest"),
    (
        "index.docker.io/library/debian",
        "docker.io/library/debian:latest",
    ),
    (
        "index.docker.io/docker/docker",
        "docker.io/docker/docker:latest",
    ),
    (
        "index.docker.io/ubuntu-12.04-base",
        "docker.io/library/ubuntu-12.04-base:latest",
    ),
    // registry-1.docker.io is a different string: Docker does not fold it.
    (
        "registry-1.docker.io/library/nginx",
        "registry-1.docker.io/library/nginx:latest",
    ),
    // Other public registries.
    (
        "quay.io/prometheus/node-exporter:v1.8.0",
        "quay.io/prometheus/node-exporter:v1.8.0",
    ),
    (
        "ghcr.io/fluxcd/source-controller:v1.3.0",
        "ghcr.io/fluxcd/source-controller:v1.3.0",
    ),
    (
        "gcr.io/distroless/static:nonroot",
        "gcr.io/distroless/static:nonroot",
    ),
    (
        "gcr.io/google-containers/pause:3.9",
        "gcr.io/google-containers/pause:3.9",
    ),
    ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10"),
    (
        "registry.k8s.io/ingress-nginx/controller:v1.10.1",
        "registry.k8s.io/ingress-nginx/controller:v1.10.1",
    ),
    (
        "public.ecr.aws/docker/library/alpine:3.20",
        "public.ecr.aws/docker/library/alpine:3.20",
    ),
    (
        "mcr.microsoft.com/dotnet/runtime:8.0",
        "mcr.microsoft.com/dotnet/runtime:8.0",
    ),
    ("example.com/privatebase", "example.com/privatebase:latest"),
    (
        "example.com/private/moonbase",
        "example.com/private/moonbase:latest",
    ),
    ("test.com/repo:tag", "test.com/repo:tag"),
    // A first component without '.' or ':' is a Docker Hub namespace, even if it looks like a host.
    ("test.com:tag", "docker.io/library/test.com:tag"),
    ("test.com:5000", "docker.io/library/test.com:5000"),
    ("192.168.0.1", "docker.io/library/192.168.0.1:latest"),
    ("192.168.0.1:80", "docker.io/library/192.168.0.1:80"),
    ("localhost", "docker.io/library/localhost:latest"),
    ("localhost:5000", "docker.io/library/localhost:5000"),
    ("myregistry/app", "docker.io/myregistry/app:latest"),
    // Hosts with ports, localhost, IP addresses.
    ("localhost/debian", "localhost/debian:latest"),
    (
        "localhost/library/debian",
        "localhost/library/debian:latest",
    ),
    (
        "localhost:5000/library/debian",
        "localhost:5000/library/debian:latest",
    ),
    (
        "localhost:8000/privatebase",
        "localhost:8000/privatebase:latest",
    ),
    (
        "localhost:8000/private/moonbase",
        "localhost:8000/private/moonbase:latest",
    ),
    (
        "127.0.0.1:5000/docker/docker",
        "127.0.0.1:5000/docker/docker:latest",
    ),
    (
        "127.0.0.1:5000/library/debian",
        "127.0.0.1:5000/library/debian:latest",
    ),
    ("127.0.0.1:5000/debian", "127.0.0.1:5000/debian:latest"),
    (
        "127.0.0.1:8000/private/moonbase",
        "127.0.0.1:8000/private/moonbase:latest",
    ),
    ("192.168.0.1:8/debian", "192.168.0.1:8/debian:latest"),
    (
        "192.168.0.2:25000/debian",
        "192.168.0.2:25000/debian:latest",
    ),
    (
        "example.com:8000/privatebase",
        "example.com:8000/privatebase:latest",
    ),
    (
        "example.com:8000/private/moonbase",
        "example.com:8000/private/moonbase:latest",
    ),
    ("test:5000/repo", "test:5000/repo:latest"),
    ("test:5000/repo:tag", "test:5000/repo:tag"),
    (
        "[fc00::1]:5000/docker/docker",
        "[fc00::1]:5000/docker/docker:latest",
    ),
    (
        "[fc00::1]:5000/library/debian",
        "[fc00::1]:5000/library/debian:latest",
    ),
    ("[fc00::1]:5000/debian", "[fc00::1]:5000/debian:latest"),
    ("[::1]/app", "[::1]/app:latest"),
    (
        "[2001:db8::1]:443/team/app:v2",
        "[2001:db8::1]:443/team/app:v2",
    ),
    // Hosts keep their case (domain components allow it); an uppercase first component is a host.
    ("Docker/docker", "Docker/docker:latest"),
    (
        "Registry.Example.com/app",
        "Registry.Example.com/app:latest",
    ),
    (
        "my-registry.example.com/a/b",
        "my-registry.example.com/a/b:latest",
    ),
    ("xn--80ak6aa92e.com/app", "xn--80ak6aa92e.com/app:latest"),
    ("a.b/c", "a.b/c:latest"),
    ("1.2.3.4/c", "1.2.3.4/c:latest"),
    // Path separators.
    ("a__b", "docker.io/library/a__b:latest"),
    ("a--b", "docker.io/library/a--b:latest"),
    ("a---b/c", "docker.io/a---b/c:latest"),
    ("a.b_c-d", "docker.io/library/a.b_c-d:latest"),
    ("example.com/a__b/c--d", "example.com/a__b/c--d:latest"),
    ("0", "docker.io/library/0:latest"),
    (
        "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
        "docker.io/library/thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev:latest",
    ),
    // Tags.
    (
        "lowercase:Uppercase",
        "docker.io/library/lowercase:Uppercase",
    ),
    ("nginx:_private", "docker.io/library/nginx:_private"),
    (
        "nginx:v1.2.3-rc.1_build.5",
        "docker.io/library/nginx:v1.2.3-rc.1_build.5",
    ),
    ("nginx:0", "docker.io/library/nginx:0"),
    ("nginx:A", "docker.io/library/nginx:A"),
    // Digests, alone and with a tag (the tag is kept; the runtime pulls by digest).
    ("repo@D256", "docker.io/library/repo@D256"),
    ("nginx@D256", "docker.io/library/nginx@D256"),
    ("nginx:1.25@D256", "docker.io/library/nginx:1.25@D256"),
    ("test:5000/repo@D256", "test:5000/repo@D256"),
    ("test:5000/repo:tag@D256", "test:5000/repo:tag@D256"),
    ("localhost:5000/a/b:c@D256", "localhost:5000/a/b:c@D256"),
    ("ghcr.io/org/app@D384", "ghcr.io/org/app@D384"),
    ("ghcr.io/org/app:v1@D512", "ghcr.io/org/app:v1@D512"),
    (
        "index.docker.io/library/nginx@D256",
        "docker.io/library/nginx@D256",
    ),
];

/// (input, a phrase the error message must contain)
const INVALID: &[(&str, &str)] = &[
    ("", "empty image reference"),
    (":justtag", "empty repository name"),
    ("@D256", "empty repository name"),
    (":tag@D256", "empty repository name"),
    ("H64", "image ID"),
    // Uppercase paths.
    ("Uppercase:tag", "must be lowercase"),
    ("NGINX", "must be lowercase"),
    ("docker/Docker", "must be lowercase"),
    ("docker.io/docker/Docker", "must be lowercase"),
    ("test:5000/Uppercase/lowercase:tag", "must be lowercase"),
    ("example.com/Team/app", "must be lowercase"),
    // Bad hosts.
    ("https://github.com/docker/docker", "invalid registry host"),
    ("-docker.io/docker/docker", "invalid registry host"),
    ("docker-.io/x", "invalid registry host"),
    ("a..com/x", "invalid registry host"),
    ("a_b.com/x", "invalid registry host"),
    (".com/x", "invalid registry host"),
    ("fc00::1:5000/debian", "invalid registry host"),
    ("[fe80::1%eth0]:5000/debian", "invalid registry host"),
    (
        "[2001:db8:3:4::192.0.2.33]:5000/debian",
        "invalid registry host",
    ),
    ("[fc00::1/debian", "invalid registry host"),
    ("[]:5000/x", "invalid registry host"),
    ("[::1]x/y", "invalid registry host"),
    ("localhost:abc/x", "invalid registry host"),
    ("localhost:/x", "invalid registry host"),
    ("localhost:50:00/x", "invalid registry host"),
    // Bad paths.
    ("-docker", "invalid repository path component"),
    ("-docker/docker", "invalid repository path component"),
    ("docker-", "invalid repository path component"),
    ("docker///docker", "invalid repository path component"),
    (
        "docker.io/docker///docker",
        "invalid repository path component",
    ),
    ("a/", "invalid repository path component"),
    ("/a", "invalid repository path component"),
    ("example.com/", "empty repository name"),
    ("a___b", "invalid repository path component"),
    ("a-.b", "invalid repository path component"),
    ("a..b", "invalid repository path component"),
    ("a._b", "invalid repository path component"),
    ("a_-b", "invalid repository path component"),
    ("a+b", "invalid repository path component"),
    ("a$b", "invalid repository path component"),
    ("[fc00::1]", "invalid tag"),
    ("[fc00::1]:5000", "invalid repository path component"),
    ("émoji", "invalid repository path component"),
    // Bad tags.
    ("nginx:", "invalid tag"),
    ("nginx:.bad", "invalid tag"),
    ("nginx:-bad", "invalid tag"),
    ("nginx:bad+tag", "invalid tag"),
    ("nginx:a/b", "invalid"),
    ("localhost:5000/nginx:", "invalid tag"),
    ("nginx::1", "invalid repository path component"),
    // Bad digests.
    ("nginx@", "invalid digest"),
    ("nginx@sha256", "invalid digest"),
    ("nginx@sha256:", "invalid digest"),
    ("nginx@:H64", "missing algorithm"),
    ("validname@invaliddigest:H64", "unsupported algorithm"),
    (
        "nginx@md5:d41d8cd98f00b204e9800998ecf8427e",
        "unsupported algorithm",
    ),
    ("nginx@sha256:abc", "64 hex characters"),
    ("nginx@sha256:H64f", "64 hex characters"),
    (
        "nginx@sha256:FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
        "lowercase hexadecimal",
    ),
    (
        "nginx@sha256:zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
        "lowercase hexadecimal",
    ),
    ("nginx@sha384:H64", "96 hex characters"),
    ("nginx@sha512:H64", "128 hex characters"),
    ("nginx@D256@D256", "invalid digest"),
    ("nginx@D256:tag", "invalid digest"),
    // Stray characters.
    ("nginx latest", "invalid character"),
    (" nginx", "invalid character"),
    ("nginx\n", "invalid character"),
    ("nginx\t:1", "invalid character"),
];

#[test]
fn valid_references_normalize_as_docker_does() {
    let mut failures = Vec::new();
    for (input, want) in VALID {
        let (input, want) = (expand(input), expand(want));
        match Reference::parse(&input) {
            Ok(r) if r.to_string() == want => {}
            Ok(r) => failures.push(format!("{input:?}: got {r}, want {want}")),
            Err(e) => failures.push(format!("{input:?}: unexpected error {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn invalid_references_name_the_problem() {
    let mut failures = Vec::new();
    for (input, phrase) in INVALID {
        let input = expand(input);
        match Reference::parse(&input) {
            Ok(r) => failures.push(format!("{input:?}: accepted as {r}")),
            Err(e) if e.to_string().contains(phrase) => {}
            Err(e) => failures.push(format!("{input:?}: error {e:?} lacks {phrase:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn table_is_large() {
    assert!(VALID.len() + INVALID.len() + LENGTH_CASES > 150);
}

const LENGTH_CASES: usize = 6;

#[test]
fn name_length_limit_is_255_after_normalization() {
    // 255 characters including the domain is the limit.
    let at_limit = format!("example.com/{}", "a".repeat(255 - "example.com/".len()));
    assert!(Reference::parse(&at_limit).is_ok());
    let over = format!("example.com/{}", "a".repeat(256 - "example.com/".len()));
    assert_eq!(
        Reference::parse(&over),
        Err(ReferenceError::NameTooLong { len: 256 })
    );
    // docker.io/library/ counts: a short name that fits alone can be too long once normalized.
    let hub = "a".repeat(255 - "docker.io/".len());
    assert!(matches!(
        Reference::parse(&hub),
        Err(ReferenceError::NameTooLong { .. })
    ));
    let two_level = format!("{}a:tag", "a/".repeat(128));
    assert!(matches!(
        Reference::parse(&two_level),
        Err(ReferenceError::NameTooLong { .. })
    ));
    // Tags: 128 characters at most.
    let tag128 = format!("nginx:{}", "t".repeat(128));
    assert!(Reference::parse(&tag128).is_ok());
    let tag129 = format!("nginx:{}", "t".repeat(129));
    assert!(
        Reference::parse(&tag129)
            .unwrap_err()
            .to_string()
            .contains("at most 128")
    );
}

#[test]
fn accessors_expose_the_parts() {
    let r = Reference::parse(&expand("localhost:5000/team/app:v1@D256")).unwrap();
    assert_eq!(r.domain(), "localhost:5000");
    assert_eq!(r.path(), "team/app");
    assert_eq!(r.name(), "localhost:5000/team/app");
    assert_eq!(r.tag(), Some("v1"));
    assert_eq!(r.digest().unwrap().hex(), H64);
    assert!(!r.is_untagged());

    let untagged = Reference::parse("nginx").unwrap();
    assert!(untagged.is_untagged());
    assert_eq!(untagged.tag(), None);
    assert_eq!(untagged.effective_tag(), Some("latest"));

    let pinned = Reference::parse(&expand("nginx@D256")).unwrap();
    assert_eq!(pinned.effective_tag(), None);
    assert_eq!(
        pinned.digest().unwrap().anchor_tag(),
        format!("privateer.sha256.{H64}")
    );
}

#[test]
fn anchor_tags_never_collide_with_referrers_or_cosign_tags() {
    for digest in [format!("sha256:{H64}"), format!("sha512:{}", H64.repeat(2))] {
        let digest = privateer_image::Digest::parse(&digest).unwrap();
        let anchor = digest.anchor_tag();
        let fallback = digest.referrers_tag();
        assert_ne!(anchor, fallback);
        assert!(anchor.len() <= 128, "{anchor}");
        // OCI's referrers tag schema is `<alg>-<ref>`; cosign's tags add a suffix to it.
        assert!(!anchor.starts_with(&format!("{}-", digest.algorithm().as_str())));
        for suffix in ["sig", "att", "sbom"] {
            let cosign = digest.cosign_tag(suffix);
            assert!(cosign.starts_with(&fallback), "{cosign}");
            assert_ne!(anchor, cosign);
        }
        assert!(anchor.starts_with(privateer_image::ANCHOR_PREFIX));
        // A valid tag: [A-Za-z0-9_][A-Za-z0-9._-]{0,127}.
        assert!(
            anchor
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        );
    }
    assert_eq!(
        privateer_image::Digest::parse(&format!("sha256:{H64}"))
            .unwrap()
            .referrers_tag(),
        format!("sha256-{H64}")
    );
}
