//! A minimal HTTPS client for the webhook's tests and benchmark: trusts the given CA PEMs,
//! keeps one connection alive, and reports the server certificate it was handed.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// TLS settings trusting every CA in `ca_pems`.
pub fn client_config(ca_pems: &[&str]) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for pem in ca_pems {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(cert.context("CA PEM")?)?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // A resumed session reports the certificate of the first handshake: every connection
    // does a full one, so `server_cert` is what the server serves now.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// The DER of the first certificate in `pem` (to compare with [`Connection::server_cert`]).
pub fn certificate_der(pem: &str) -> anyhow::Result<Vec<u8>> {
    let cert = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .context("no certificate in the PEM")??;
    Ok(cert.to_vec())
}

/// One keep-alive HTTPS connection.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    /// DER of the certificate the server presented.
    pub server_cert: Vec<u8>,
}

impl Connection {
    pub async fn open(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> anyhow::Result<Self> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("127.0.0.1")?.to_owned();
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .context("TLS handshake")?;
        let server_cert = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Self {
            sender,
            server_cert,
        })
    }

    /// POST `body` as JSON to `path`: (status, response body).
    pub async fn post(&mut self, path: &str, body: Bytes) -> anyhow::Result<(u16, Bytes)> {
        let request = hyper::Request::post(path)
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .body(Full::new(body))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}
