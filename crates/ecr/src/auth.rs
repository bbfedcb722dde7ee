//! Registry credentials: what a provider hands the copier, and docker config files
//! (`~/.docker/config.json`, `kubernetes.io/dockerconfigjson` Secrets).

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use serde::Deserialize;

/// A user name and password (for ECR: `AWS` and the authorization token).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    // Never print the password: these end up in logs through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Where the registry's data plane is and how to log in to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryAccess {
    /// `https://host[:port]` or `http://host[:port]`.
    pub endpoint: String,
    /// `None`: anonymous.
    pub credentials: Option<Credentials>,
    /// Which fetch of credentials this is; `access_rejected` names it so a rejection of an old
    /// token does not throw away a newer one.
    pub generation: u64,
}

impl RegistryAccess {
    /// `host[:port]` of the endpoint.
    pub fn host(&self) -> &str {
        let rest = self
            .endpoint
            .split_once("://")
            .map_or(self.endpoint.as_str(), |(_, rest)| rest);
        rest.split('/').next().unwrap_or(rest)
    }
}

/// A registry endpoint as a URL: `host[:port]` gets `https://`, or `http://` when `insecure`;
/// a URL stays as it is.
pub(crate) fn endpoint_url(host_or_url: &str, insecure: bool) -> String {
    match host_or_url {
        url if url.contains("://") => url.trim_end_matches('/').to_owned(),
        host if insecure => format!("http://{host}"),
        host => format!("https://{host}"),
    }
}

/// A parsed docker config: credentials per registry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DockerConfig {
    /// Keyed by normalized registry host (`docker.io`, `ghcr.io`, `host:5000`).
    auths: BTreeMap<String, Credentials>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerConfigError {
    #[error("docker config is not valid JSON: {0}")]
    Json(String),
    #[error("docker config entry {registry:?}: {problem}")]
    Entry { registry: String, problem: String },
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    auths: BTreeMap<String, RawEntry>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

impl DockerConfig {
    /// Parse a `config.json` or a dockerconfigjson Secret's `.dockerconfigjson` value.
    pub fn parse(bytes: &[u8]) -> Result<Self, DockerConfigError> {
        let raw: RawConfig =
            serde_json::from_slice(bytes).map_err(|e| DockerConfigError::Json(e.to_string()))?;
        let mut auths = BTreeMap::new();
        for (key, entry) in raw.auths {
            let problem = |problem: &str| DockerConfigError::Entry {
                registry: key.clone(),
                problem: problem.to_owned(),
            };
            let credentials = match (&entry.auth, &entry.username, &entry.password) {
                (Some(auth), _, _) if !auth.is_empty() => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        .map_err(|_| problem("`auth` is not base64"))?;
                    let text = String::from_utf8(decoded)
                        .map_err(|_| problem("`auth` is not UTF-8 text"))?;
                    let (user, password) = text
                        .split_once(':')
                        .ok_or_else(|| problem("`auth` is not base64 of user:password"))?;
                    Credentials {
                        username: user.to_owned(),
                        password: password.to_owned(),
                    }
                }
                (_, Some(user), Some(password)) => Credentials {
                    username: user.clone(),
                    password: password.clone(),
                },
                _ if entry.identitytoken.is_some() => {
                    return Err(problem(
                        "identity tokens (credential helpers' OAuth refresh tokens) are not supported; use auth or username and password",
                    ));
                }
                _ => return Err(problem("no auth, nor username and password")),
            };
            auths.insert(normalize_key(&key), credentials);
        }
        Ok(Self { auths })
    }

    /// The credentials for a registry host (`docker.io`, `index.docker.io` and
    /// `https://index.docker.io/v1/` are one registry).
    pub fn credentials_for(&self, host: &str) -> Option<&Credentials> {
        self.auths.get(&normalize_key(host))
    }
}

/// `https://index.docker.io/v1/` → `docker.io`; `http://host:5000/x` → `host:5000`.
fn normalize_key(key: &str) -> String {
    let rest = key.split_once("://").map_or(key, |(_, rest)| rest);
    let host = rest.split('/').next().unwrap_or(rest).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_and_username_forms_and_docker_hub_spellings() {
        let config = DockerConfig::parse(
            br#"{"auths": {
                "https://index.docker.io/v1/": {"auth": "dXNlcjpwYTpzcw=="},
                "Registry.Local:5000": {"username": "u", "password": "p"}
            }}"#,
        )
        .unwrap();
        let hub = config.credentials_for("docker.io").unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("user", "pa:ss")
        );
        assert!(config.credentials_for("registry.local:5000").is_some());
        assert!(config.credentials_for("registry.local").is_none());
        assert!(!format!("{hub:?}").contains("pa:ss"));
    }

    #[test]
    fn bad_entries_are_named() {
        let err = DockerConfig::parse(br#"{"auths": {"ghcr.io": {"auth": "!!"}}}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"docker config entry "ghcr.io": `auth` is not base64"#
        );
        let err = DockerConfig::parse(br#"{"auths": {"quay.io": {}}}"#).unwrap_err();
        assert!(err.to_string().contains("no auth"), "{err}");
        assert!(DockerConfig::parse(b"[").is_err());
    }

    #[test]
    fn endpoints_get_a_scheme_and_hosts_come_back_out() {
        let access = |insecure| RegistryAccess {
            endpoint: endpoint_url("127.0.0.1:5000", insecure),
            credentials: None,
            generation: 0,
        };
        assert_eq!(access(true).endpoint, "http://127.0.0.1:5000");
        assert_eq!(access(false).endpoint, "https://127.0.0.1:5000");
        assert_eq!(access(false).host(), "127.0.0.1:5000");
        assert_eq!(
            endpoint_url("http://mirror.local:80/", false),
            "http://mirror.local:80"
        );
    }
}
