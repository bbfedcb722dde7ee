//! Any OCI registry (Harbor, GHCR, Artifactory, `registry:2`): repositories appear on push,
//! credentials come from a docker config, existence is a HEAD on the manifest, and compliance
//! questions do not apply.

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use privateer_api::config::TargetConfig;

use crate::auth::endpoint_url;

use crate::{
    Answer, DockerConfig, EnsuredRepository, Findings, ImageId, RegistryAccess, RepositoryFacts,
    RepositoryState, TargetError, TargetProvider,
};

pub struct GenericProvider {
    registry: String,
    access: RegistryAccess,
    client: oci_client::Client,
}

impl GenericProvider {
    /// `credentials`: the parsed `target.credentialsSecret`, if any.
    pub fn new(
        target: &TargetConfig,
        credentials: Option<DockerConfig>,
    ) -> Result<Self, TargetError> {
        let registry = target.registry.to_ascii_lowercase();
        if registry.is_empty() {
            return Err(TargetError::Config("target.registry is empty".into()));
        }
        let mut extra_root_certificates = Vec::new();
        if !target.ca_file.is_empty() {
            let data = std::fs::read(&target.ca_file).map_err(|e| {
                TargetError::Config(format!("target.caFile {:?}: {e}", target.ca_file))
            })?;
            extra_root_certificates.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
        let protocol = if target.insecure {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let client = oci_client::Client::new(ClientConfig {
            protocol,
            extra_root_certificates,
            ..ClientConfig::default()
        });
        let access = RegistryAccess {
            endpoint: endpoint_url(&registry, target.insecure),
            credentials: credentials
                .as_ref()
                .and_then(|c| c.credentials_for(&registry))
                .cloned(),
            generation: 0,
        };
        Ok(Self {
            registry,
            access,
            client,
        })
    }

    fn auth(&self) -> RegistryAuth {
        match &self.access.credentials {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        }
    }
}

impl TargetProvider for GenericProvider {
    fn registry(&self) -> &str {
        &self.registry
    }

    /// The distribution API's manifest DELETE is optional and often disabled; oci-client has
    /// no call for it. Refused with a clear reason; the controller then retains the image.
    async fn delete_image(&self, repository: &str, digest: &str) -> Result<bool, TargetError> {
        Err(TargetError::Rejected {
            action: "delete image".into(),
            resource: format!("{}/{repository}@{digest}", self.registry),
            code: "Unsupported".into(),
            message:
                "deleting images is supported for ECR targets only; the image was left in place"
                    .into(),
        })
    }

    async fn ensure_repository(&self, _: &str) -> Result<EnsuredRepository, TargetError> {
        Ok(EnsuredRepository {
            state: RepositoryState::CreatedOnPush,
            drift: Vec::new(),
            corrected: Vec::new(),
        })
    }

    async fn access(&self) -> Result<RegistryAccess, TargetError> {
        Ok(self.access.clone())
    }

    fn access_rejected(&self, _: &RegistryAccess) {
        // Static credentials: nothing to refresh; the caller reports the 401.
    }

    async fn manifest_digest(
        &self,
        repository: &str,
        image: &ImageId,
    ) -> Result<Option<String>, TargetError> {
        let reference = match image {
            ImageId::Tag(tag) => oci_client::Reference::with_tag(
                self.registry.clone(),
                repository.into(),
                tag.clone(),
            ),
            ImageId::Digest(digest) => oci_client::Reference::with_digest(
                self.registry.clone(),
                repository.into(),
                digest.clone(),
            ),
        };
        let resource = format!("{}/{repository}", self.registry);
        match self
            .client
            .fetch_manifest_digest(&reference, &self.auth())
            .await
        {
            Ok(digest) => Ok(Some(digest)),
            Err(error) => classify(error, &resource),
        }
    }

    async fn repository_facts(&self, _: &str) -> Answer<RepositoryFacts> {
        Answer::NotApplicable
    }

    async fn findings(&self, _: &str, _: &str) -> Answer<Findings> {
        Answer::NotApplicable
    }
}

fn classify(error: OciDistributionError, resource: &str) -> Result<Option<String>, TargetError> {
    const ACTION: &str = "HEAD manifest";
    let denied = |message: String| TargetError::AccessDenied {
        action: ACTION.into(),
        resource: resource.into(),
        message,
    };
    match &error {
        OciDistributionError::ImageManifestNotFoundError(_) => Ok(None),
        OciDistributionError::ServerError { code: 404, .. } => Ok(None),
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                Ok(None)
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Denied | OciErrorCode::Unauthorized))
            {
                Err(denied(error.to_string()))
            } else {
                Err(TargetError::Rejected {
                    action: ACTION.into(),
                    resource: resource.into(),
                    code: "RegistryError".into(),
                    message: error.to_string(),
                })
            }
        }
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::ServerError {
            code: 401 | 403, ..
        } => Err(denied(error.to_string())),
        _ => Err(TargetError::Unavailable {
            action: ACTION.into(),
            resource: resource.into(),
            message: crate::error::chain(&error),
        }),
    }
}
