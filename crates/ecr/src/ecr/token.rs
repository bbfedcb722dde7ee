//! Data-plane tokens from `GetAuthorizationToken`, cached until shortly before they expire.
//!
//! A token whose expiry is already past when it arrives (moto hands out one from 2015) is used
//! until the registry refuses it; a refused token is replaced on the next request, unless it is
//! younger than `min_age`, so a registry that refuses every token is not asked in a tight loop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;

use crate::{Credentials, RegistryAccess, TargetError};

struct Cached {
    access: RegistryAccess,
    fetched: Instant,
    /// `None`: the token came already expired (or nearly); keep it until refused.
    refresh_at: Option<Instant>,
}

pub(super) struct TokenCache {
    endpoint_override: Option<String>,
    margin: Duration,
    min_age: Duration,
    current: tokio::sync::Mutex<Option<Cached>>,
    /// Generation of the last refused token, plus one (0: none refused).
    refused: AtomicU64,
    generations: AtomicU64,
}

impl TokenCache {
    pub(super) fn new(
        endpoint_override: Option<String>,
        margin: Duration,
        min_age: Duration,
    ) -> Self {
        Self {
            endpoint_override,
            margin,
            min_age,
            current: tokio::sync::Mutex::new(None),
            refused: AtomicU64::new(0),
            generations: AtomicU64::new(0),
        }
    }

    pub(super) fn rejected(&self, generation: u64) {
        self.refused.store(generation + 1, Ordering::SeqCst);
    }

    pub(super) async fn get(
        &self,
        client: &aws_sdk_ecr::Client,
    ) -> Result<RegistryAccess, TargetError> {
        // Held across the fetch: concurrent callers wait for one GetAuthorizationToken.
        let mut current = self.current.lock().await;
        let now = Instant::now();
        if let Some(cached) = current.as_ref() {
            let refused = self.refused.load(Ordering::SeqCst) == cached.access.generation + 1;
            let due = cached.refresh_at.is_some_and(|at| now >= at);
            let young = now.duration_since(cached.fetched) < self.min_age;
            if (!refused && !due) || (refused && young) {
                return Ok(cached.access.clone());
            }
        }
        let fresh = self.fetch(client).await?;
        let access = fresh.access.clone();
        *current = Some(fresh);
        Ok(access)
    }

    async fn fetch(&self, client: &aws_sdk_ecr::Client) -> Result<Cached, TargetError> {
        const ACTION: &str = "ecr:GetAuthorizationToken";
        let output = client
            .get_authorization_token()
            .send()
            .await
            .map_err(|e| TargetError::from_sdk(ACTION, "*", e))?;
        let invalid = |problem: &str| TargetError::Rejected {
            action: ACTION.into(),
            resource: "*".into(),
            code: "InvalidResponse".into(),
            message: problem.into(),
        };
        let data = output
            .authorization_data()
            .first()
            .ok_or_else(|| invalid("no authorization data"))?;
        let token = data
            .authorization_token()
            .ok_or_else(|| invalid("no authorization token"))?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| invalid("the token is not base64 text"))?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| invalid("the token is not user:password"))?;
        let endpoint = match (&self.endpoint_override, data.proxy_endpoint()) {
            (Some(endpoint), _) => endpoint.clone(),
            (None, Some(proxy)) => proxy.trim_end_matches('/').to_owned(),
            (None, None) => return Err(invalid("no proxyEndpoint and no registryEndpoint")),
        };
        let fetched = Instant::now();
        let remaining = data
            .expires_at()
            .and_then(|at| SystemTime::try_from(*at).ok())
            .and_then(|at| at.duration_since(SystemTime::now()).ok());
        let refresh_at = remaining
            .filter(|left| *left > self.margin)
            .map(|left| fetched + (left - self.margin));
        if refresh_at.is_none() {
            tracing::debug!("ECR token arrived expired or nearly; using it until it is refused");
        }
        Ok(Cached {
            access: RegistryAccess {
                endpoint,
                credentials: Some(Credentials {
                    username: username.to_owned(),
                    password: password.to_owned(),
                }),
                generation: self.generations.fetch_add(1, Ordering::SeqCst),
            },
            fetched,
            refresh_at,
        })
    }
}
