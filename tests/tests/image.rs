//! privateer's image as `just image` builds it agrees with the Dockerfile's runtime stage
//! (binary path, user, entrypoint), carries what the binary links, and is reproducible: the
//! same binary gives the same digest.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::Read;
use std::path::Path;

use privateer_e2e::product_image::{self, BINARY_PATH, ENTRYPOINT, USER};

const DOCKERFILE: &str = include_str!("../../Dockerfile");

/// The argument of the last `INSTRUCTION` line of the Dockerfile's final stage.
fn runtime_stage(instruction: &str) -> String {
    let stage = DOCKERFILE.rsplit("\nFROM ").next().unwrap();
    stage
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{instruction} ")))
        .next_back()
        .unwrap_or_else(|| panic!("no {instruction} in the Dockerfile's runtime stage"))
        .trim()
        .to_owned()
}

#[test]
fn the_recipe_and_the_dockerfile_agree_on_path_user_and_entrypoint() {
    let copy = runtime_stage("COPY");
    assert_eq!(copy.split_whitespace().last(), Some(BINARY_PATH), "{copy}");
    assert_eq!(runtime_stage("USER"), USER);
    let entrypoint: Vec<String> = serde_json::from_str(&runtime_stage("ENTRYPOINT")).unwrap();
    assert_eq!(entrypoint, ENTRYPOINT);
}

/// Paths in a tar+gzip layer.
fn paths(layer: &[u8]) -> Vec<String> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(layer));
    tar.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect()
}

#[test]
fn the_image_carries_the_binary_its_libraries_and_user_and_is_reproducible() {
    // Any dynamically linked program stands in for the release binary here.
    let binary = Path::new("/bin/true");
    let image = product_image::build(binary).unwrap();
    let again = product_image::build(binary).unwrap();
    assert_eq!(image.manifest.digest, again.manifest.digest);
    assert_eq!(image.layers[0].digest, again.layers[0].digest);

    let config: serde_json::Value = serde_json::from_slice(&image.config.data).unwrap();
    assert_eq!(config["config"]["User"], USER);
    assert_eq!(config["config"]["Entrypoint"][0], BINARY_PATH);
    assert_eq!(config["architecture"], "amd64");
    let files = paths(&image.layers[0].data);
    for wanted in [
        BINARY_PATH.trim_start_matches('/'),
        "etc/passwd",
        "etc/ssl/certs/ca-certificates.crt",
        "lib64/ld-linux-x86-64.so.2",
    ] {
        assert!(
            files.iter().any(|f| f == wanted),
            "{wanted} missing: {files:?}"
        );
    }
    assert!(files.iter().any(|f| f.ends_with("libc.so.6")), "{files:?}");
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&image.layers[0].data[..]));
    let mut passwd = String::new();
    tar.entries()
        .unwrap()
        .map(Result::unwrap)
        .find(|e| e.path().unwrap().ends_with("etc/passwd"))
        .unwrap()
        .read_to_string(&mut passwd)
        .unwrap();
    assert!(passwd.contains(":65532:65532:"), "{passwd}");

    // Through an OCI layout and back, unchanged.
    let dir = std::env::temp_dir().join(format!("privateer-image-test-{}", std::process::id()));
    product_image::write_layout(&dir, &image, "test").unwrap();
    let (read, tag) = product_image::read_layout(&dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(tag, "test");
    assert_eq!(read.manifest.digest, image.manifest.digest);
}
