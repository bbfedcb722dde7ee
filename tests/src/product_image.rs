//! privateer's container image built without a container engine (`just image`): the release
//! binary, the shared libraries it links (as `ldd` finds them), CA certificates and a passwd
//! entry for 65532, matching the Dockerfile's runtime stage — same binary path, user and
//! entrypoint (a test reads the Dockerfile). Written as an OCI image layout; pushed to a
//! registry by the registry protocol. The same binary gives the same digest.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::json;

use crate::images::{Blob, Format, Image};
use crate::rootfs::Files;

/// Where the Dockerfile's runtime stage puts the binary.
pub const BINARY_PATH: &str = "/usr/local/bin/privateer";
/// The Dockerfile's `USER`.
pub const USER: &str = "65532:65532";
/// The Dockerfile's `ENTRYPOINT` and `CMD`.
pub const ENTRYPOINT: [&str; 1] = [BINARY_PATH];
pub const CMD: [&str; 1] = ["--help"];
/// Debian's bundle of CA certificates (what distroless carries at the same path).
const CA_CERTIFICATES: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The shared libraries `binary` loads, with the dynamic loader (paths as `ldd` names them).
fn linked_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .context("run ldd")?;
    if !out.status.success() {
        bail!(
            "ldd {}: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut libraries = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libraries.push(PathBuf::from(path));
        }
    }
    if libraries.is_empty() {
        bail!(
            "ldd found no libraries for {}: is it a dynamic executable?",
            binary.display()
        );
    }
    Ok(libraries)
}

/// The image of `binary` (linux/amd64, OCI).
pub fn build(binary: &Path) -> anyhow::Result<Image> {
    let mut files = Files::new();
    files.copy_from(BINARY_PATH, binary)?;
    for library in linked_libraries(binary)? {
        // The file itself under the name the loader asks for (symlinks resolved).
        let real = std::fs::canonicalize(&library)?;
        files.copy_from(&library.display().to_string(), &real)?;
    }
    if Path::new(CA_CERTIFICATES).exists() {
        files.copy_from(CA_CERTIFICATES, Path::new(CA_CERTIFICATES))?;
    }
    files
        .file(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n".to_vec(),
        )
        .file("etc/group", 0o644, b"root:x:0:\nnonroot:x:65532:\n".to_vec())
        .dir("tmp")
        .dir("home/nonroot");
    let layer = files.layer()?;
    Image::runnable(
        Format::Oci,
        "linux/amd64",
        &[layer],
        json!({"User": USER, "Entrypoint": ENTRYPOINT, "Cmd": CMD,
               "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"]}),
    )
}

/// The sandbox image: the static `pause` program alone.
pub fn pause(program: &Path) -> anyhow::Result<Image> {
    let mut files = Files::new();
    files.copy_from("pause", program)?;
    Image::runnable(
        Format::Oci,
        "linux/amd64",
        &[files.layer()?],
        json!({"Entrypoint": ["/pause"], "User": "65535:65535"}),
    )
}

/// Writes `image` as an OCI image layout in `dir` (`oci-layout`, `index.json`, `blobs/`).
pub fn write_layout(dir: &Path, image: &Image, tag: &str) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    for blob in std::iter::once(&image.manifest)
        .chain(std::iter::once(&image.config))
        .chain(&image.layers)
    {
        std::fs::write(blobs.join(hex(&blob.digest)), &blob.data)?;
    }
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": image.format.manifest_type(), "digest": image.manifest.digest,
            "size": image.manifest.data.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec_pretty(&index)?)?;
    Ok(())
}

/// Reads the one image of a layout written by [`write_layout`]: (image, tag).
pub fn read_layout(dir: &Path) -> anyhow::Result<(Image, String)> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).with_context(|| {
            format!("no image layout at {} (run `just image`)", dir.display())
        })?)?;
    let entry = &index["manifests"][0];
    let tag = entry["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap_or("latest")
        .to_owned();
    let blob = |digest: &str| -> anyhow::Result<Blob> {
        let data = std::fs::read(dir.join("blobs/sha256").join(hex(digest)))
            .with_context(|| format!("blob {digest} missing from {}", dir.display()))?;
        Ok(Blob::new(data))
    };
    let manifest = blob(
        entry["digest"]
            .as_str()
            .context("index.json names no manifest")?,
    )?;
    let document: serde_json::Value = serde_json::from_slice(&manifest.data)?;
    let config = blob(
        document["config"]["digest"]
            .as_str()
            .context("manifest without config")?,
    )?;
    let layers = document["layers"]
        .as_array()
        .context("manifest without layers")?
        .iter()
        .map(|l| blob(l["digest"].as_str().unwrap_or_default()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((
        Image {
            format: Format::Oci,
            platform: crate::images::Platform::parse("linux/amd64").map_err(anyhow::Error::msg)?,
            manifest,
            config,
            layers,
        },
        tag,
    ))
}

fn hex(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

/// The layout `just image` writes and the test environment pushes.
pub fn layout_dir() -> PathBuf {
    crate::tools::workspace_dir().join("target/image")
}
