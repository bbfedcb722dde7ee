//! Logging in, the way registries ask for it: a request goes out with the authorization
//! known for its operation; a 401 is answered (basic credentials, a ready token, or the Docker
//! token flow at the challenge's realm) and the request sent once more.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use http::{HeaderValue, StatusCode, header};

use super::remembered::Remembered;
use super::{Operation, Side};
use crate::Credentials;
use crate::auth::{self, Challenge};
use crate::error::{CopyError, ErrorClass};
use crate::wire::{read_limited, request_error, status_error};

/// Hosts whose 401 asked for basic auth (ECR's data plane always does). A copy's first
/// request to one carries its basic credentials from the start: a round trip less per copy
/// and operation, the whole cost of logging in there.
static BASIC_HOSTS: Remembered = Remembered::new(1024);
/// Hosts this process has had an answer from, whatever it asked for.
static ANSWERED_HOSTS: Remembered = Remembered::new(1024);
/// Held by the first request to a host not yet answered. Copies started together (a Job's
/// pairs) otherwise each meet the same 401 before any has learned that the host wants basic
/// credentials; the others wait for that one answer instead.
static FIRST_ASKS: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>> =
    Mutex::new(BTreeMap::new());

/// The turn of a host's first request; when dropped, the host counts as answered.
struct FirstAsk {
    host: String,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for FirstAsk {
    fn drop(&mut self) {
        ANSWERED_HOSTS.insert(&self.host);
        FIRST_ASKS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.host);
    }
}

/// The first request's turn for `host`, after waiting for any other's; `None` once it has been
/// answered.
async fn first_ask(host: &str) -> Option<FirstAsk> {
    if ANSWERED_HOSTS.contains(host) {
        return None;
    }
    let turn = FIRST_ASKS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(host.to_owned())
        .or_default()
        .clone();
    let turn = turn.lock_owned().await;
    (!ANSWERED_HOSTS.contains(host)).then(|| FirstAsk {
        host: host.to_owned(),
        _turn: turn,
    })
}

impl Side {
    /// This side's basic credentials, when its host is known to ask for them.
    fn basic_known_to_be_asked(&self) -> Option<HeaderValue> {
        let Credentials::Basic { username, password } = &self.credentials else {
            return None;
        };
        BASIC_HOSTS
            .contains(&self.host)
            .then(|| auth::basic(username, password).ok())
            .flatten()
    }

    /// Send what `build` makes with the authorization known for `operation`; on a 401, answer
    /// its challenge and send once more.
    pub(super) async fn send(
        &self,
        operation: Operation,
        action: &str,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, CopyError> {
        let known = self.authorization.lock().await.get(&operation).cloned();
        // Held until this request and its login are done.
        let _first = match known {
            Some(_) => None,
            None => first_ask(&self.host).await,
        };
        let tried = match &known {
            Some(known) => known.clone(),
            None => self.basic_known_to_be_asked(),
        };
        let response = self.send_with(&build, tried.clone(), action).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            if known.is_none() {
                self.authorization.lock().await.insert(operation, tried);
            }
            return Ok(response);
        }
        let challenge = response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let fresh = self.authorize(operation, challenge, tried, action).await?;
        let response = self.send_with(&build, Some(fresh), action).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            return Err(status_error(response, &self.host, action).await);
        }
        Ok(response)
    }

    async fn send_with(
        &self,
        build: &impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
        authorization: Option<HeaderValue>,
        action: &str,
    ) -> Result<reqwest::Response, CopyError> {
        // A host that asked to be left alone (Retry-After) is, by every copy of the process.
        crate::pause::wait(&self.host, self.retry.max_delay, action).await?;
        let mut request = build(&self.http);
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        request
            .send()
            .await
            .map_err(|e| request_error(action, &e, &self.host))
    }

    /// The `Authorization` answering `challenge`, kept for `operation`. Another task may have
    /// logged in while this one waited: its answer is taken instead of asking again.
    async fn authorize(
        &self,
        operation: Operation,
        challenge: Option<String>,
        tried: Option<HeaderValue>,
        action: &str,
    ) -> Result<HeaderValue, CopyError> {
        let mut known = self.authorization.lock().await;
        if let Some(Some(current)) = known.get(&operation)
            && Some(current) != tried.as_ref()
        {
            return Ok(current.clone());
        }
        let unauthorized =
            |message: String| CopyError::new(ErrorClass::Unauthorized, action, message);
        let invalid = |message: String| CopyError::new(ErrorClass::Invalid, action, message);
        let value = match (&self.credentials, challenge) {
            (Credentials::Bearer(token), _) => auth::bearer(token).map_err(invalid)?,
            (_, None) => {
                return Err(unauthorized(format!(
                    "401 from {} without a WWW-Authenticate challenge",
                    self.host
                )));
            }
            (credentials, Some(challenge)) => {
                match auth::parse_challenge(&challenge)
                    .map_err(|e| invalid(format!("{}: {e}", self.host)))?
                {
                    Challenge::Basic => match credentials {
                        Credentials::Basic { username, password } => {
                            let value = auth::basic(username, password).map_err(invalid)?;
                            BASIC_HOSTS.insert(&self.host);
                            value
                        }
                        _ => {
                            return Err(unauthorized(format!(
                                "{} asks for basic auth and no credentials were given",
                                self.host
                            )));
                        }
                    },
                    Challenge::Bearer { realm, service, .. } => {
                        self.fetch_token(operation, &realm, service.as_deref(), action)
                            .await?
                    }
                }
            }
        };
        known.insert(operation, Some(value.clone()));
        Ok(value)
    }

    /// The Docker token flow: ask `realm` for a token scoped to this repository.
    async fn fetch_token(
        &self,
        operation: Operation,
        realm: &str,
        service: Option<&str>,
        action: &str,
    ) -> Result<HeaderValue, CopyError> {
        let action = format!("{action}: log in at the token endpoint of {}", self.host);
        let invalid = |message: String| CopyError::new(ErrorClass::Invalid, &action, message);
        let mut url = reqwest::Url::parse(realm)
            .map_err(|e| invalid(format!("the challenge's realm is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "the challenge's realm has scheme {:?} (only http and https)",
                url.scheme()
            )));
        }
        let actions = match operation {
            Operation::Pull => "pull",
            Operation::Push => "pull,push",
        };
        {
            let mut query = url.query_pairs_mut();
            query.append_pair(
                "scope",
                &format!("repository:{}:{actions}", self.repository),
            );
            if let Some(service) = service {
                query.append_pair("service", service);
            }
        }
        let mut request = self.http.get(url.clone());
        if let Credentials::Basic { username, password } = &self.credentials {
            request = request.basic_auth(username, Some(password));
        }
        let response = request
            .send()
            .await
            .map_err(|e| request_error(&action, &e, &crate::wire::host_port(&url)))?;
        let status = response.status();
        if !status.is_success() {
            let mut error = status_error(response, &crate::wire::host_port(&url), &action).await;
            if matches!(status.as_u16(), 400 | 403) {
                error.class = ErrorClass::Unauthorized;
            }
            return Err(error);
        }
        let body = read_limited(
            response,
            self.limits.token_bytes,
            &action,
            "limits.tokenBytes",
        )
        .await?;
        auth::parse_token(&body).map_err(invalid)
    }
}
