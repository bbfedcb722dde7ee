//! Target providers: what privateer needs from the registry it mirrors into, behind one trait,
//! so the controller, the copier and the validating webhook do not care which registry it is.
//!
//! - [`EcrProvider`]: Amazon ECR through `aws-sdk-ecr` (repositories with settings, drift,
//!   data-plane tokens, compliance lookups, image existence).
//! - [`GenericProvider`]: any OCI registry (Harbor, GHCR, Artifactory, `registry:2`), which
//!   creates repositories on push and has no compliance notion.

mod auth;
mod cache;
mod ecr;
mod error;
mod generic;
mod host;
mod settings;

use std::future::Future;

pub use auth::{Credentials, DockerConfig, DockerConfigError, RegistryAccess};
pub use ecr::{EcrOptions, EcrProvider};
pub use error::TargetError;
pub use generic::GenericProvider;
pub use host::{EcrHost, HostError, Partition};
pub use settings::{Drift, RepositorySettings};

use privateer_api::config::{Config, TargetKind};

/// An answer from a registry that may not be able to give one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer<T> {
    Known(T),
    /// The registry could not be asked (network, throttling, permissions); the policy decides.
    Unknown(String),
    /// The question does not apply to this kind of registry.
    NotApplicable,
}

/// What a repository looks like to the validating webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepositoryFacts {
    Missing,
    Present {
        /// `IMMUTABLE` (not `MUTABLE`, nor an exclusion variant that lets some tags move).
        tag_immutable: bool,
        /// ECR's spelling, for messages.
        tag_mutability: String,
        /// Scanned on push by the repository's own setting or a registry scanning rule.
        scan_on_push: bool,
    },
}

/// The scan findings of one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Findings {
    /// The scan finished: how many CRITICAL findings it reported.
    Scanned { critical: u32 },
    /// A scan is running or has not produced results yet.
    Pending,
    /// The image was never scanned.
    NotScanned,
    /// No such image.
    NoImage,
}

/// What `ensure_repository` found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnsuredRepository {
    pub state: RepositoryState,
    /// Settings that differ from the configuration and were left as they are.
    pub drift: Vec<Drift>,
    /// Settings that differed and were applied (`target.ecr.enforceSettings: true`).
    pub corrected: Vec<Drift>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepositoryState {
    Created,
    Existed,
    /// The registry creates repositories on push; nothing to do.
    CreatedOnPush,
}

/// How an image in the target is named for an existence check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageId {
    Tag(String),
    Digest(String),
}

/// The registry privateer mirrors into.
pub trait TargetProvider: Send + Sync {
    /// The registry host images are named with (`<account>.dkr.ecr.<region>.amazonaws.com`).
    fn registry(&self) -> &str;

    /// Create `repository` with the configured settings, or check an existing one for drift.
    fn ensure_repository(
        &self,
        repository: &str,
    ) -> impl Future<Output = Result<EnsuredRepository, TargetError>> + Send;

    /// Where and how to push and pull: the data-plane endpoint and its credentials.
    fn access(&self) -> impl Future<Output = Result<RegistryAccess, TargetError>> + Send;

    /// The registry refused `access` (HTTP 401): fetch new credentials on the next `access`.
    fn access_rejected(&self, access: &RegistryAccess);

    /// The manifest digest `image` names in `repository`, or `None` when it is not there.
    /// Never answered from a cache: lifecycle rules delete images behind our back.
    fn manifest_digest(
        &self,
        repository: &str,
        image: &ImageId,
    ) -> impl Future<Output = Result<Option<String>, TargetError>> + Send;

    /// Does the repository exist, with tag immutability and scan on push? Cached.
    fn repository_facts(
        &self,
        repository: &str,
    ) -> impl Future<Output = Answer<RepositoryFacts>> + Send;

    /// Delete the image `digest` (with every tag naming it) from `repository`, for
    /// `deletionPolicy: Delete`. `Ok(false)`: it was not there.
    fn delete_image(
        &self,
        repository: &str,
        digest: &str,
    ) -> impl Future<Output = Result<bool, TargetError>> + Send;

    /// The scan findings of the image with `digest`. Cached.
    fn findings(
        &self,
        repository: &str,
        digest: &str,
    ) -> impl Future<Output = Answer<Findings>> + Send;
}

/// The provider the configuration asks for.
pub enum Provider {
    Ecr(Box<EcrProvider>),
    Generic(GenericProvider),
}

impl Provider {
    /// Build the configured provider. `generic_credentials` is the content of
    /// `target.credentialsSecret` (a dockerconfigjson), read by the caller.
    pub async fn from_config(
        config: &Config,
        generic_credentials: Option<DockerConfig>,
    ) -> Result<Self, TargetError> {
        match config.target.kind {
            TargetKind::Ecr => {
                let options = EcrOptions {
                    cache_ttl: config.policy.ecr_compliance.cache_ttl.into(),
                    ..EcrOptions::default()
                };
                let provider = EcrProvider::connect(&config.target, options).await?;
                Ok(Self::Ecr(Box::new(provider)))
            }
            TargetKind::Generic => Ok(Self::Generic(GenericProvider::new(
                &config.target,
                generic_credentials,
            )?)),
        }
    }
}

macro_rules! delegate {
    ($self:ident, $p:ident => $call:expr) => {
        match $self {
            Provider::Ecr($p) => $call,
            Provider::Generic($p) => $call,
        }
    };
}

impl TargetProvider for Provider {
    fn registry(&self) -> &str {
        delegate!(self, p => p.registry())
    }

    async fn ensure_repository(&self, repository: &str) -> Result<EnsuredRepository, TargetError> {
        delegate!(self, p => p.ensure_repository(repository).await)
    }

    async fn access(&self) -> Result<RegistryAccess, TargetError> {
        delegate!(self, p => p.access().await)
    }

    fn access_rejected(&self, access: &RegistryAccess) {
        delegate!(self, p => p.access_rejected(access))
    }

    async fn manifest_digest(
        &self,
        repository: &str,
        image: &ImageId,
    ) -> Result<Option<String>, TargetError> {
        delegate!(self, p => p.manifest_digest(repository, image).await)
    }

    async fn repository_facts(&self, repository: &str) -> Answer<RepositoryFacts> {
        delegate!(self, p => p.repository_facts(repository).await)
    }

    async fn delete_image(&self, repository: &str, digest: &str) -> Result<bool, TargetError> {
        delegate!(self, p => p.delete_image(repository, digest).await)
    }

    async fn findings(&self, repository: &str, digest: &str) -> Answer<Findings> {
        delegate!(self, p => p.findings(repository, digest).await)
    }
}
