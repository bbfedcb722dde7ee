//! The serving certificate, reloaded without a restart. A mounted Secret is updated by
//! swapping a symlink, so the files are polled (identity and modification time, following
//! links); each handshake takes the current certificate. A new pair that does not load (bad
//! PEM, key not matching the certificate) leaves the old one serving and says why.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::metrics::{Metrics, ReasonLabel};

/// How often the files are looked at.
pub const POLL: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct ReloadingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }
}

/// What identifies one version of the files: (device, inode, length, mtime) of each.
type Stamp = Vec<(u64, u64, u64, Option<SystemTime>)>;

fn stamp(paths: &[&Path]) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.dev(), m.ino(), m.len(), m.modified().ok()))
        })
        .collect()
}

fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in the file", cert.display()));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    CertifiedKey::from_der(chain, key_der, provider)
        .map_err(|e| format!("{} and {}: {e}", cert.display(), key.display()))
}

/// The rustls configuration (TLS 1.2 and 1.3, HTTP/1.1) whose certificate follows the files;
/// the polling stops with `stop`.
pub fn server_config(
    cert: &Path,
    key: &Path,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let first = load(cert, key, &provider).map_err(Error::Tls)?;
    let resolver = Arc::new(ReloadingCert {
        current: RwLock::new(Arc::new(first)),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let paths: [PathBuf; 2] = [cert.to_owned(), key.to_owned()];
    tokio::spawn(async move {
        let files = [paths[0].as_path(), paths[1].as_path()];
        let mut seen = stamp(&files);
        let mut ticker = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let now = stamp(&files);
            if now.is_none() || now == seen {
                continue;
            }
            seen = now;
            let result = match load(files[0], files[1], &provider) {
                Ok(loaded) => {
                    *resolver
                        .current
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(loaded);
                    tracing::info!(cert = %files[0].display(), "serving the renewed certificate");
                    "ok"
                }
                Err(problem) => {
                    tracing::warn!(
                        "new certificate not loaded, the previous one keeps serving: {problem}"
                    );
                    "error"
                }
            };
            metrics
                .tls_reloads
                .get_or_create(&ReasonLabel { reason: result })
                .inc();
        }
    });
    Ok(Arc::new(config))
}
