//! Synthetic test images — OCI and Docker v2 schema 2 manifests, indexes and manifest lists,
//! several platforms, shared layers — pushed by the real registry protocol.

use bytes::Bytes;
use oci_client::Reference;
use oci_client::secrets::RegistryAuth;
pub use privateer_registry::Platform;
use serde_json::json;
use sha2::{Digest, Sha256};

/// Manifest flavour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Oci,
    Docker,
}

impl Format {
    pub fn manifest_type(self) -> &'static str {
        match self {
            Self::Oci => "application/vnd.oci.image.manifest.v1+json",
            Self::Docker => "application/vnd.docker.distribution.manifest.v2+json",
        }
    }
    pub fn index_type(self) -> &'static str {
        match self {
            Self::Oci => "application/vnd.oci.image.index.v1+json",
            Self::Docker => "application/vnd.docker.distribution.manifest.list.v2+json",
        }
    }
    fn config_type(self) -> &'static str {
        match self {
            Self::Oci => "application/vnd.oci.image.config.v1+json",
            Self::Docker => "application/vnd.docker.container.image.v1+json",
        }
    }
    fn layer_type(self) -> &'static str {
        match self {
            Self::Oci => "application/vnd.oci.image.layer.v1.tar+gzip",
            Self::Docker => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        }
    }
}

/// Content and its digest.
#[derive(Clone, Debug)]
pub struct Blob {
    pub digest: String,
    pub data: Bytes,
}

impl Blob {
    pub fn new(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        Self {
            digest: sha256(&data),
            data,
        }
    }
}

pub fn sha256(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    format!(
        "sha256:{}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

/// Incompressible bytes determined by a seed (xorshift64), produced in chunks so that layers of
/// any size can be hashed and pushed with bounded memory.
pub struct LayerBytes {
    state: u64,
    remaining: u64,
}

impl LayerBytes {
    pub fn new(seed: u64, size: u64) -> Self {
        Self {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            remaining: size,
        }
    }

    /// The next chunk of at most `max` bytes (a multiple of 8 except the last), or None.
    pub fn next_chunk(&mut self, max: usize) -> Option<Bytes> {
        if self.remaining == 0 {
            return None;
        }
        let len = (max as u64).min(self.remaining) as usize;
        let mut chunk = Vec::with_capacity(len + 8);
        while chunk.len() < len {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            chunk.extend_from_slice(&self.state.to_le_bytes());
        }
        chunk.truncate(len);
        self.remaining -= len as u64;
        Some(chunk.into())
    }
}

/// Chunk size used when streaming generated layers.
const CHUNK: usize = 1 << 20;

/// `size` incompressible bytes determined by `seed`, in memory: a small layer.
pub fn layer(seed: u64, size: usize) -> Blob {
    let mut bytes = LayerBytes::new(seed, size as u64);
    let mut data = Vec::with_capacity(size);
    while let Some(chunk) = bytes.next_chunk(CHUNK) {
        data.extend_from_slice(&chunk);
    }
    Blob::new(data)
}

/// The digest of the layer `LayerBytes::new(seed, size)` makes, computed in one streaming pass.
pub fn generated_layer_digest(seed: u64, size: u64) -> String {
    let mut hasher = Sha256::new();
    let mut bytes = LayerBytes::new(seed, size);
    while let Some(chunk) = bytes.next_chunk(CHUNK) {
        hasher.update(&chunk);
    }
    format!(
        "sha256:{}",
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

/// The `platform` object of an index entry (and the os/architecture of a config).
fn platform_json(platform: &Platform) -> serde_json::Value {
    let mut v = json!({"os": platform.os, "architecture": platform.architecture});
    if let Some(variant) = &platform.variant {
        v["variant"] = json!(variant);
    }
    v
}

/// One platform's image: manifest bytes exactly as pushed, its config and layers.
#[derive(Clone, Debug)]
pub struct Image {
    pub format: Format,
    pub platform: Platform,
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Blob>,
}

impl Image {
    pub fn new(format: Format, platform: &str, layers: Vec<Blob>) -> Self {
        let described: Vec<(String, u64)> = layers
            .iter()
            .map(|l| (l.digest.clone(), l.data.len() as u64))
            .collect();
        Self {
            layers,
            ..Self::with_layer_digests(format, platform, &described)
        }
    }

    /// An image whose layers are described only by digest and size (streamed big layers);
    /// `layers` stays empty, so push the layers first: [`Pusher::push_image`] then pushes the
    /// config and the manifest.
    pub fn with_layer_digests(format: Format, platform: &str, layers: &[(String, u64)]) -> Self {
        let platform = Platform::parse(platform).expect("a test names a valid os/arch platform");
        let mut config = platform_json(&platform);
        config["rootfs"] = json!({"type": "layers", "diff_ids": layers.iter().map(|(d, _)| d).collect::<Vec<_>>()});
        config["config"] = json!({"Cmd": ["/bin/true"]});
        let config = Blob::new(serde_json::to_vec(&config).unwrap_or_default());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": format.manifest_type(),
            "config": {"mediaType": format.config_type(), "digest": config.digest, "size": config.data.len()},
            "layers": layers.iter().map(|(d, size)| json!({"mediaType": format.layer_type(), "digest": d, "size": size})).collect::<Vec<_>>(),
        });
        let manifest = Blob::new(serde_json::to_vec_pretty(&manifest).unwrap_or_default());
        Self {
            format,
            platform,
            manifest,
            config,
            layers: Vec::new(),
        }
    }
}

impl Image {
    /// An image that runs: real tar+gzip `layers` (their diff_ids in the config) and the
    /// runtime `config` (`Entrypoint`, `Cmd`, `User`, `Env`, `WorkingDir`).
    pub fn runnable(
        format: Format,
        platform: &str,
        layers: &[crate::rootfs::Layer],
        config: serde_json::Value,
    ) -> anyhow::Result<Self> {
        let platform = Platform::parse(platform).map_err(anyhow::Error::msg)?;
        let mut document = platform_json(&platform);
        document["rootfs"] = json!({"type": "layers", "diff_ids": layers.iter().map(|l| &l.diff_id).collect::<Vec<_>>()});
        document["config"] = config;
        let config = Blob::new(serde_json::to_vec(&document)?);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": format.manifest_type(),
            "config": {"mediaType": format.config_type(), "digest": config.digest, "size": config.data.len()},
            "layers": layers.iter().map(|l| json!({"mediaType": format.layer_type(), "digest": l.blob.digest, "size": l.blob.data.len()})).collect::<Vec<_>>(),
        });
        Ok(Self {
            format,
            platform,
            manifest: Blob::new(serde_json::to_vec_pretty(&manifest)?),
            config,
            layers: layers.iter().map(|l| l.blob.clone()).collect(),
        })
    }

    /// A runnable busybox image named `name`: `sh`, `sleep`, `httpd` and an `/www/index.html`
    /// that names it; `cmd` is its default command.
    pub fn busybox(
        format: Format,
        platform: &str,
        name: &str,
        cmd: &[&str],
    ) -> anyhow::Result<Self> {
        Self::busybox_with(format, platform, name, cmd, Vec::new())
    }

    /// The same with `extra` layers on top.
    pub fn busybox_with(
        format: Format,
        platform: &str,
        name: &str,
        cmd: &[&str],
        extra: Vec<crate::rootfs::Layer>,
    ) -> anyhow::Result<Self> {
        let mut layers = vec![crate::rootfs::busybox()?, crate::rootfs::identity(name)?];
        layers.extend(extra);
        Self::runnable(
            format,
            platform,
            &layers,
            json!({"Cmd": cmd, "Env": ["PATH=/bin"], "WorkingDir": "/"}),
        )
    }
}

impl Pusher {
    /// Pushes a runnable linux/amd64 busybox image named `repository:tag` inside, default
    /// command `cmd`, to `registry`; returns its digest.
    pub async fn push_runnable(
        &self,
        registry: &str,
        repository: &str,
        tag: &str,
        cmd: &[&str],
    ) -> anyhow::Result<String> {
        let name = format!("{repository}:{tag}");
        let image = Image::busybox(Format::Oci, "linux/amd64", &name, cmd)?;
        self.push_image(registry, repository, tag, &image).await
    }

    /// The same with one more layer: `/payload`, `bytes` of incompressible data (a copy that
    /// takes a while behind a slow source); returns its digest.
    pub async fn push_runnable_with_payload(
        &self,
        registry: &str,
        repository: &str,
        tag: &str,
        cmd: &[&str],
        bytes: usize,
    ) -> anyhow::Result<String> {
        let name = format!("{repository}:{tag}");
        let payload = crate::rootfs::Files::new()
            .file("/payload", 0o644, layer(bytes as u64, bytes).data.to_vec())
            .layer()?;
        let image = Image::busybox_with(Format::Oci, "linux/amd64", &name, cmd, vec![payload])?;
        self.push_image(registry, repository, tag, &image).await
    }
}

/// A multi-platform index (OCI) or manifest list (Docker).
#[derive(Clone, Debug)]
pub struct Index {
    pub format: Format,
    pub manifest: Blob,
    pub images: Vec<Image>,
}

impl Index {
    pub fn new(format: Format, images: Vec<Image>) -> Self {
        let manifests: Vec<_> = images
            .iter()
            .map(|i| {
                json!({"mediaType": format.manifest_type(), "digest": i.manifest.digest,
                "size": i.manifest.data.len(), "platform": platform_json(&i.platform)})
            })
            .collect();
        let index =
            json!({"schemaVersion": 2, "mediaType": format.index_type(), "manifests": manifests});
        Self {
            format,
            manifest: Blob::new(serde_json::to_vec_pretty(&index).unwrap_or_default()),
            images,
        }
    }

    /// A runnable busybox image per platform, each named `<name> (<platform>)` inside, with
    /// default command `cmd` (only the amd64 child runs on this node).
    pub fn busybox(
        format: Format,
        name: &str,
        platforms: &[&str],
        cmd: &[&str],
    ) -> anyhow::Result<Self> {
        let images = platforms
            .iter()
            .map(|p| Image::busybox(format, p, &format!("{name} ({p})"), cmd))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self::new(format, images))
    }

    /// The usual test subject: `platforms` images sharing a base layer, each with one of its own.
    pub fn multi_platform(
        format: Format,
        platforms: &[&str],
        seed: u64,
        layer_size: usize,
    ) -> Self {
        let base = layer(seed, layer_size);
        let images = platforms
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Image::new(
                    format,
                    p,
                    vec![base.clone(), layer(seed + 1 + i as u64, layer_size)],
                )
            })
            .collect();
        Self::new(format, images)
    }
}

/// Pushes through the OCI distribution API.
pub struct Pusher {
    client: oci_client::Client,
    auth: RegistryAuth,
}

impl Pusher {
    pub fn new(client: oci_client::Client, auth: RegistryAuth) -> Self {
        Self { client, auth }
    }

    async fn login(
        &self,
        reference: &Reference,
        operation: oci_client::RegistryOperation,
    ) -> anyhow::Result<()> {
        self.client
            .store_auth_if_needed(reference.resolve_registry(), &self.auth)
            .await;
        self.client.auth(reference, &self.auth, operation).await?;
        Ok(())
    }

    fn reference(registry: &str, repository: &str, tag: &str) -> anyhow::Result<Reference> {
        Ok(format!("{registry}/{repository}:{tag}").parse()?)
    }

    /// Pushes blobs then the manifest under `tag`; returns the manifest digest.
    pub async fn push_image(
        &self,
        registry: &str,
        repository: &str,
        tag: &str,
        image: &Image,
    ) -> anyhow::Result<String> {
        let reference = Self::reference(registry, repository, tag)?;
        self.login(&reference, oci_client::RegistryOperation::Push)
            .await?;
        for blob in std::iter::once(&image.config).chain(&image.layers) {
            if !self.client.blob_exists(&reference, &blob.digest).await? {
                self.client
                    .push_blob(&reference, blob.data.clone(), &blob.digest)
                    .await?;
            }
        }
        self.push_manifest(&reference, &image.manifest, image.format.manifest_type())
            .await?;
        Ok(image.manifest.digest.clone())
    }

    /// Pushes every child (by digest), then the index under `tag`; returns the index digest.
    pub async fn push_index(
        &self,
        registry: &str,
        repository: &str,
        tag: &str,
        index: &Index,
    ) -> anyhow::Result<String> {
        for image in &index.images {
            self.push_image(
                registry,
                repository,
                &image.manifest.digest.replace(':', "-"),
                image,
            )
            .await?;
        }
        let reference = Self::reference(registry, repository, tag)?;
        self.push_manifest(&reference, &index.manifest, index.format.index_type())
            .await?;
        Ok(index.manifest.digest.clone())
    }

    async fn push_manifest(
        &self,
        reference: &Reference,
        manifest: &Blob,
        media_type: &str,
    ) -> anyhow::Result<()> {
        self.client
            .push_manifest_raw(reference, manifest.data.clone(), media_type.parse()?)
            .await?;
        Ok(())
    }

    /// Streams a generated layer of any size into `repository` (memory stays at one chunk);
    /// returns its digest. Use the digest in a manifest built with [`Image::with_layer_digests`].
    pub async fn push_generated_layer(
        &self,
        registry: &str,
        repository: &str,
        seed: u64,
        size: u64,
    ) -> anyhow::Result<String> {
        let digest = generated_layer_digest(seed, size);
        let reference = Self::reference(registry, repository, "layer")?;
        self.login(&reference, oci_client::RegistryOperation::Push)
            .await?;
        if self.client.blob_exists(&reference, &digest).await? {
            return Ok(digest);
        }
        let mut bytes = LayerBytes::new(seed, size);
        let stream =
            futures::stream::iter(std::iter::from_fn(move || bytes.next_chunk(CHUNK).map(Ok)));
        self.client
            .push_blob_stream(&reference, stream, &digest, Some(size))
            .await?;
        Ok(digest)
    }

    /// Pushes `manifest` (of `media_type`) under `tag`: one request, for many tags of one image.
    pub async fn push_manifest_as(
        &self,
        registry: &str,
        repository: &str,
        tag: &str,
        manifest: &Blob,
        media_type: &str,
    ) -> anyhow::Result<()> {
        let reference = Self::reference(registry, repository, tag)?;
        self.login(&reference, oci_client::RegistryOperation::Push)
            .await?;
        self.push_manifest(&reference, manifest, media_type).await
    }

    /// Pushes the manifest found at `from` again under tag `to` (a forged tag, for tests).
    pub async fn retag(
        &self,
        registry: &str,
        repository: &str,
        from: &str,
        to: &str,
    ) -> anyhow::Result<()> {
        let (bytes, _) = self.pull_manifest(registry, repository, from).await?;
        let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)?["mediaType"]
            .as_str()
            .unwrap_or(Format::Oci.manifest_type())
            .to_owned();
        let reference = Self::reference(registry, repository, to)?;
        self.login(&reference, oci_client::RegistryOperation::Push)
            .await?;
        self.client
            .push_manifest_raw(&reference, bytes, media_type.parse()?)
            .await?;
        Ok(())
    }

    /// Pulls a manifest's raw bytes by digest or tag; returns (bytes, digest).
    pub async fn pull_manifest(
        &self,
        registry: &str,
        repository: &str,
        reference: &str,
    ) -> anyhow::Result<(Bytes, String)> {
        let separator = if reference.contains(':') { "@" } else { ":" };
        let reference: Reference =
            format!("{registry}/{repository}{separator}{reference}").parse()?;
        let accepted = [
            Format::Oci.manifest_type(),
            Format::Oci.index_type(),
            Format::Docker.manifest_type(),
            Format::Docker.index_type(),
        ];
        Ok(self
            .client
            .pull_manifest_raw(&reference, &self.auth, &accepted)
            .await?)
    }

    /// Pulls a blob into memory (tests use small ones).
    pub async fn pull_blob(
        &self,
        registry: &str,
        repository: &str,
        digest: &str,
    ) -> anyhow::Result<Vec<u8>> {
        let reference: Reference = format!("{registry}/{repository}@{digest}").parse()?;
        self.login(&reference, oci_client::RegistryOperation::Pull)
            .await?;
        let mut out = Vec::new();
        self.client.pull_blob(&reference, digest, &mut out).await?;
        Ok(out)
    }
}
