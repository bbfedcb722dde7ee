//! Image layers as real, reproducible tar+gzip archives: the same files give the same bytes
//! (sorted entries, mtime 0, owner 0:0, fixed compression), so the same binary always gives
//! the same layer digest. Used for the runnable test images (a static busybox), the sandbox
//! ("pause") image and privateer's own image.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::Context;

use crate::images::{Blob, sha256};

/// What a path in the layer is.
#[derive(Clone, Debug)]
pub enum Entry {
    Dir,
    File { mode: u32, data: Vec<u8> },
    Symlink(String),
}

/// A layer's files, keyed by path without a leading `/` (`bin/sh`).
#[derive(Clone, Debug, Default)]
pub struct Files(BTreeMap<String, Entry>);

/// A built layer: the compressed blob and the digest of the tar inside (the config's diff_id).
#[derive(Clone, Debug)]
pub struct Layer {
    pub blob: Blob,
    pub diff_id: String,
}

impl Files {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a file (and its parent directories).
    pub fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) -> &mut Self {
        self.parents(path);
        self.0.insert(clean(path), Entry::File { mode, data });
        self
    }

    /// Adds a file copied from this machine, with its mode.
    pub fn copy_from(&mut self, path: &str, from: &Path) -> anyhow::Result<&mut Self> {
        use std::os::unix::fs::PermissionsExt;
        let data = std::fs::read(from).with_context(|| format!("read {}", from.display()))?;
        let mode = std::fs::metadata(from)?.permissions().mode() & 0o7777;
        Ok(self.file(path, mode, data))
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.parents(path);
        self.0
            .insert(clean(path), Entry::Symlink(target.to_owned()));
        self
    }

    pub fn dir(&mut self, path: &str) -> &mut Self {
        self.parents(path);
        self.0.insert(clean(path), Entry::Dir);
        self
    }

    fn parents(&mut self, path: &str) {
        let path = clean(path);
        let mut prefix = String::new();
        for part in path
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |(_, p)| p)
        {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            self.0.entry(prefix.clone()).or_insert(Entry::Dir);
        }
    }

    /// The tar, then gzip at a fixed level: deterministic for the same files.
    pub fn layer(&self) -> anyhow::Result<Layer> {
        let mut tar = tar::Builder::new(Vec::new());
        tar.mode(tar::HeaderMode::Deterministic);
        for (path, entry) in &self.0 {
            let mut header = tar::Header::new_ustar();
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            match entry {
                Entry::Dir => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(0o755);
                    header.set_size(0);
                    tar.append_data(&mut header, format!("{path}/"), std::io::empty())?;
                }
                Entry::File { mode, data } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_size(data.len() as u64);
                    tar.append_data(&mut header, path, data.as_slice())?;
                }
                Entry::Symlink(target) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    tar.append_link(&mut header, path, target)?;
                }
            }
        }
        let tar = tar.into_inner()?;
        let diff_id = sha256(&tar);
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        gzip.write_all(&tar)?;
        Ok(Layer {
            blob: Blob::new(gzip.finish()?),
            diff_id,
        })
    }
}

fn clean(path: &str) -> String {
    path.trim_start_matches('/')
        .trim_end_matches('/')
        .to_owned()
}

/// Debian's static busybox (package busybox-static).
pub const BUSYBOX: &str = "/bin/busybox";

/// The applets the tests and the demo use, as symlinks in `/bin`.
const APPLETS: &[&str] = &[
    "sh", "sleep", "httpd", "wget", "nc", "cat", "echo", "ls", "true", "false", "env", "hostname",
];

/// A layer with a static busybox and its applets: `sh`, `sleep` and `httpd` run from it.
pub fn busybox() -> anyhow::Result<Layer> {
    let mut files = Files::new();
    files.copy_from("bin/busybox", Path::new(BUSYBOX))?;
    for applet in APPLETS {
        files.symlink(&format!("bin/{applet}"), "busybox");
    }
    files
        .file(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n".to_vec(),
        )
        .file(
            "etc/group",
            0o644,
            b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
        )
        .dir("tmp");
    files.layer()
}

/// A small layer that makes an image distinct: `/etc/image` names it, `/www/index.html` is
/// what `httpd -h /www` serves.
pub fn identity(name: &str) -> anyhow::Result<Layer> {
    let mut files = Files::new();
    files
        .file("etc/image", 0o644, format!("{name}\n").into_bytes())
        .file(
            "www/index.html",
            0o644,
            format!("served by {name}\n").into_bytes(),
        );
    files.layer()
}
