//! Certificates for the local control plane (and later the webhook): one CA, serving
//! certificates for 127.0.0.1 and localhost, and the service-account signing key.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// A CA that signs serving certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
}

/// PEM files written for one serving certificate.
pub struct ServingCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Writes `<dir>/<name>.crt` and `.key`, valid for 127.0.0.1, ::1, localhost and `extra`.
    pub fn serving_cert(
        &self,
        dir: &Path,
        name: &str,
        extra: &[&str],
    ) -> anyhow::Result<ServingCert> {
        let mut sans = vec![
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
            "localhost".to_owned(),
        ];
        sans.extend(extra.iter().map(|s| (*s).to_owned()));
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name.push(DnType::CommonName, name);
        self.sign_into(dir, name, &params)
    }

    /// Signs `params` with a new key; writes `<dir>/<name>.crt` and `.key`.
    fn sign_into(
        &self,
        dir: &Path,
        name: &str,
        params: &CertificateParams,
    ) -> anyhow::Result<ServingCert> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let out = ServingCert {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&out.cert, cert.pem()).context("write certificate")?;
        std::fs::write(&out.key, key.serialize_pem()).context("write key")?;
        Ok(out)
    }

    pub fn write_cert(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, &self.cert_pem).with_context(|| format!("write {}", path.display()))
    }
}

/// An ECDSA P-256 key pair for signing service-account tokens: (private, public) PEM paths.
pub fn service_account_key(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let key = KeyPair::generate()?;
    let private = dir.join("sa.key");
    let public = dir.join("sa.pub");
    std::fs::write(&private, key.serialize_pem())?;
    std::fs::write(&public, key.public_key_pem())?;
    Ok((private, public))
}

impl Ca {
    /// A client certificate (`CN=user`, `O=group`) at `<dir>/<name>.crt` and `.key`.
    pub fn client_cert(
        &self,
        dir: &Path,
        name: &str,
        user: &str,
        group: &str,
    ) -> anyhow::Result<ServingCert> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, user);
        params
            .distinguished_name
            .push(DnType::OrganizationName, group);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        self.sign_into(dir, name, &params)
    }
}
