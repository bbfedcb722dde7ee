//! The supply-chain peers the tests drive (built by `tests/peers/build.sh`): cosign signs,
//! attests and verifies with keys in a scratch directory, oras attaches and discovers SBOMs.
#![allow(dead_code)] // each test file uses its own part

use std::path::Path;
use std::process::{Command, Output};

use privateer_e2e::tools;
use serde_json::Value;

/// Are the peers built? Without them a test says so and skips (or fails under CI).
pub fn peers_present(test: &str) -> bool {
    for peer in ["cosign", "oras", "promtool", "referrers-registry"] {
        if !tools::peer(peer).exists() {
            assert!(
                std::env::var_os("PRIVATEER_REQUIRE_TESTENV").is_none(),
                "{peer} is missing: run `just setup` (tests/peers/build.sh)"
            );
            eprintln!("!!! SKIPPED {test}: {peer} is missing (just setup)");
            return false;
        }
    }
    true
}

/// Run a peer in the scratch directory (its keys and files live there), `HOME` there too so
/// nothing is written outside it.
pub fn peer(dir: &Path, program: &str, args: &[&str]) -> Output {
    Command::new(tools::peer(program))
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env("COSIGN_PASSWORD", "")
        .env("COSIGN_YES", "true")
        .output()
        .unwrap()
}

pub fn succeeded(output: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// `cosign generate-key-pair` as `<prefix>.key` / `<prefix>.pub`.
pub fn key_pair(dir: &Path, prefix: &str) {
    let output = peer(
        dir,
        "cosign",
        &["generate-key-pair", "--output-key-prefix", prefix],
    );
    succeeded(&output, "cosign generate-key-pair");
}

/// Flags for a plain-HTTP registry and no transparency log (nothing leaves this machine).
pub const COSIGN_OFFLINE: [&str; 3] = [
    "--allow-http-registry",
    "--allow-insecure-registry",
    "--tlog-upload=false",
];
pub const COSIGN_VERIFY_OFFLINE: [&str; 3] = [
    "--allow-http-registry",
    "--allow-insecure-registry",
    "--insecure-ignore-tlog",
];

pub fn cosign_sign(dir: &Path, key: &str, image: &str) {
    cosign_sign_with(dir, key, image, &[]);
}

/// `cosign sign` with more flags (`--new-bundle-format`: a sigstore bundle as an OCI 1.1
/// referrer instead of the `.sig` tag).
pub fn cosign_sign_with(dir: &Path, key: &str, image: &str, flags: &[&str]) {
    let mut args = vec!["sign", "--key", key];
    args.extend(flags);
    args.extend(COSIGN_OFFLINE);
    args.push(image);
    succeeded(&peer(dir, "cosign", &args), "cosign sign");
}

pub fn cosign_attest(dir: &Path, key: &str, image: &str) {
    std::fs::write(dir.join("predicate.json"), r#"{"built": "by a test"}"#).unwrap();
    let mut args = vec![
        "attest",
        "--key",
        key,
        "--type",
        "custom",
        "--predicate",
        "predicate.json",
    ];
    args.extend(COSIGN_OFFLINE);
    args.push(image);
    succeeded(&peer(dir, "cosign", &args), "cosign attest");
}

pub fn cosign_verifies(dir: &Path, command: &str, image: &str) -> Output {
    cosign_verifies_with(dir, command, image, &[])
}

pub fn cosign_verifies_with(dir: &Path, command: &str, image: &str, flags: &[&str]) -> Output {
    let mut args = vec![command, "--key", "cosign.pub"];
    args.extend(flags);
    if command == "verify-attestation" {
        args.extend(["--type", "custom"]);
    }
    args.extend(COSIGN_VERIFY_OFFLINE);
    args.push(image);
    peer(dir, "cosign", &args)
}

/// `oras attach` an SPDX SBOM to `image`; returns the SBOM manifest's digest.
pub fn oras_attach_sbom(dir: &Path, image: &str) -> String {
    std::fs::write(
        dir.join("sbom.spdx.json"),
        r#"{"spdxVersion": "SPDX-2.3", "name": "test"}"#,
    )
    .unwrap();
    let output = peer(
        dir,
        "oras",
        &[
            "attach",
            "--plain-http",
            "--artifact-type",
            "application/spdx+json",
            "--format",
            "json",
            image,
            "sbom.spdx.json:application/spdx+json",
        ],
    );
    let stdout = succeeded(&output, "oras attach");
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    answer["digest"].as_str().unwrap().to_owned()
}

/// What `oras discover` lists for `image`, as its JSON.
pub fn oras_discover(dir: &Path, image: &str) -> String {
    let output = peer(
        dir,
        "oras",
        &["discover", "--plain-http", "--format", "json", image],
    );
    succeeded(&output, "oras discover")
}
