//! The Amazon ECR provider.

mod compliance;
mod repository;
mod token;

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_ecr::config::{Region, SharedCredentialsProvider};
use aws_sdk_ecr::error::{ProvideErrorMetadata, SdkError};
use privateer_api::config::TargetConfig;

use crate::auth::endpoint_url;
use crate::cache::AnswerCache;
use crate::host::EcrHost;
use crate::settings::RepositorySettings;
use crate::{
    Answer, EnsuredRepository, Findings, ImageId, RegistryAccess, RepositoryFacts, TargetError,
    TargetProvider,
};
use compliance::ScanningRules;
use token::TokenCache;

/// Is the error one of ECR's `codes` (how ECR says "there is none")?
fn is_code<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>, codes: &[&str]) -> bool {
    error
        .as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|code| codes.contains(&code))
}

/// Knobs that are not in the configuration file: sensible defaults, and shorter ones in tests.
#[derive(Clone, Debug)]
pub struct EcrOptions {
    /// Attempts per ECR call (throttling, 5xx and network errors are retried with backoff).
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    /// Longest one ECR call may take, retries included.
    pub operation_timeout: Duration,
    /// Compliance answers are trusted this long (`policy.ecrCompliance.cacheTtl`).
    pub cache_ttl: Duration,
    /// "No such repository / image / scan" is trusted this long.
    pub negative_cache_ttl: Duration,
    pub cache_capacity: u64,
    /// A compliance lookup that takes longer answers "unknown" (admission has a deadline).
    pub lookup_timeout: Duration,
    /// A token is refreshed this long before ECR says it expires.
    pub token_refresh_margin: Duration,
    /// A rejected token younger than this is not replaced: no refresh storm when the registry
    /// refuses even fresh tokens.
    pub token_min_age: Duration,
    /// Credentials to use instead of the default chain (env, profile, IRSA, instance role).
    pub credentials: Option<SharedCredentialsProvider>,
}

impl Default for EcrOptions {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            operation_timeout: Duration::from_secs(30),
            cache_ttl: Duration::from_secs(300),
            negative_cache_ttl: Duration::from_secs(30),
            cache_capacity: 10_000,
            lookup_timeout: Duration::from_secs(3),
            token_refresh_margin: Duration::from_secs(30 * 60),
            token_min_age: Duration::from_secs(30),
            credentials: None,
        }
    }
}

pub struct EcrProvider {
    client: aws_sdk_ecr::Client,
    host: EcrHost,
    registry: String,
    settings: RepositorySettings,
    enforce_settings: bool,
    tokens: TokenCache,
    facts: AnswerCache<String, RepositoryFacts>,
    scanning: AnswerCache<(), ScanningRules>,
    findings: AnswerCache<(String, String), Findings>,
    lookup_timeout: Duration,
}

impl EcrProvider {
    /// Build the client from `target` and the AWS default credential chain (or
    /// `options.credentials`), assuming `target.ecr.assumeRoleArn` when set.
    pub async fn connect(target: &TargetConfig, options: EcrOptions) -> Result<Self, TargetError> {
        let host = EcrHost::parse(&target.registry)
            .map_err(|e| TargetError::Config(format!("target.registry: {e}")))?;
        let region = if target.ecr.region.is_empty() {
            host.region.clone()
        } else {
            target.ecr.region.clone()
        };
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region))
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(options.max_attempts)
                    .with_initial_backoff(options.initial_backoff),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(options.operation_timeout)
                    .build(),
            )
            .use_fips(host.fips)
            .use_dual_stack(host.dual_stack);
        if let Some(credentials) = options.credentials.clone() {
            loader = loader.credentials_provider(credentials);
        }
        let sdk = loader.load().await;
        let mut config = aws_sdk_ecr::config::Builder::from(&sdk);
        if !target.ecr.assume_role_arn.is_empty() {
            let provider =
                aws_config::sts::AssumeRoleProvider::builder(target.ecr.assume_role_arn.clone())
                    .session_name("privateer")
                    .configure(&sdk)
                    .build()
                    .await;
            config = config.credentials_provider(provider);
        }
        if !target.ecr.endpoint_url.is_empty() {
            config = config.endpoint_url(target.ecr.endpoint_url.clone());
        }
        let endpoint_override = (!target.ecr.registry_endpoint.is_empty())
            .then(|| endpoint_url(&target.ecr.registry_endpoint, target.insecure));
        let negative = options.negative_cache_ttl.min(options.cache_ttl);
        Ok(Self {
            client: aws_sdk_ecr::Client::from_conf(config.build()),
            registry: target.registry.to_ascii_lowercase(),
            settings: RepositorySettings::from_config(&target.ecr),
            enforce_settings: target.ecr.enforce_settings,
            tokens: TokenCache::new(
                endpoint_override,
                options.token_refresh_margin,
                options.token_min_age,
            ),
            facts: AnswerCache::new(options.cache_capacity, options.cache_ttl, negative),
            scanning: AnswerCache::new(1, options.cache_ttl, negative),
            findings: AnswerCache::new(options.cache_capacity, options.cache_ttl, negative),
            lookup_timeout: options.lookup_timeout,
            host,
        })
    }

    /// The parsed registry host (account, region, partition).
    pub fn host(&self) -> &EcrHost {
        &self.host
    }

    fn account(&self) -> &str {
        &self.host.account
    }

    /// The repository as `DescribeRepositories` reports it, or `None` when there is none.
    async fn describe_repository(
        &self,
        repository: &str,
    ) -> Result<Option<aws_sdk_ecr::types::Repository>, TargetError> {
        let described = self
            .client
            .describe_repositories()
            .registry_id(self.account())
            .repository_names(repository)
            .send()
            .await;
        match described {
            Err(e) if is_code(&e, &["RepositoryNotFoundException"]) => Ok(None),
            other => Ok(other
                .map_err(|e| TargetError::from_sdk("ecr:DescribeRepositories", repository, e))?
                .repositories()
                .first()
                .cloned()),
        }
    }

    /// Run a lookup for the webhook: bounded in time, failures become "unknown".
    async fn answer<T>(
        &self,
        lookup: impl Future<Output = Result<T, std::sync::Arc<TargetError>>>,
    ) -> Answer<T> {
        match tokio::time::timeout(self.lookup_timeout, lookup).await {
            Ok(Ok(value)) => Answer::Known(value),
            Ok(Err(error)) => Answer::Unknown(error.to_string()),
            Err(_) => Answer::Unknown(format!(
                "ECR did not answer within {:?}",
                self.lookup_timeout
            )),
        }
    }
}

impl TargetProvider for EcrProvider {
    fn registry(&self) -> &str {
        &self.registry
    }

    async fn delete_image(&self, repository: &str, digest: &str) -> Result<bool, TargetError> {
        Box::pin(compliance::delete_image(self, repository, digest)).await
    }

    async fn ensure_repository(&self, repository: &str) -> Result<EnsuredRepository, TargetError> {
        // Boxed: SDK futures are large, and nested ones overflow small (test) thread stacks.
        let outcome = Box::pin(repository::ensure(self, repository)).await;
        // Whatever happened, the webhook's cached view of this repository may be stale now.
        self.facts.invalidate(&repository.to_owned()).await;
        outcome
    }

    async fn access(&self) -> Result<RegistryAccess, TargetError> {
        Box::pin(self.tokens.get(&self.client)).await
    }

    fn access_rejected(&self, access: &RegistryAccess) {
        self.tokens.rejected(access.generation);
    }

    async fn manifest_digest(
        &self,
        repository: &str,
        image: &ImageId,
    ) -> Result<Option<String>, TargetError> {
        Box::pin(compliance::describe_image(self, repository, image)).await
    }

    async fn repository_facts(&self, repository: &str) -> Answer<RepositoryFacts> {
        let lookup = self.facts.get_or_fetch(
            repository.to_owned(),
            |facts| *facts == RepositoryFacts::Missing,
            Box::pin(compliance::repository_facts(self, repository)),
        );
        self.answer(Box::pin(lookup)).await
    }

    async fn findings(&self, repository: &str, digest: &str) -> Answer<Findings> {
        let lookup = self.findings.get_or_fetch(
            (repository.to_owned(), digest.to_owned()),
            |findings| !matches!(findings, Findings::Scanned { .. }),
            Box::pin(compliance::findings(self, repository, digest)),
        );
        self.answer(Box::pin(lookup)).await
    }
}
