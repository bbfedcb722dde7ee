//! Reading the configuration file: YAML → [`Config`], then [`Config::validate`].

use std::path::Path;

use thiserror::Error;

use super::Config;

/// One thing wrong with a configuration, named by its key path (`webhook.rewritePolicy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {problem}")]
    Parse { path: String, problem: Problem },
    #[error("{path}: invalid configuration:\n{}", list(.problems))]
    Invalid {
        path: String,
        problems: Vec<Problem>,
    },
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// Parses and validates YAML text; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config = parse(text).map_err(|problem| ConfigError::Parse {
            path: origin.to_owned(),
            problem,
        })?;
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: origin.to_owned(),
                problems,
            })
        }
    }
}

fn parse(text: &str) -> Result<Config, Problem> {
    // An empty file (or one of comments only) is the all-defaults configuration.
    let value: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| yaml_problem(None, &e))?;
    if value.is_null() {
        return Ok(Config::default());
    }
    let deserializer = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        yaml_problem(Some(key), e.inner())
    })
}

fn yaml_problem(key: Option<String>, error: &serde_yaml::Error) -> Problem {
    let mut message = error.to_string();
    // serde_yaml puts the location at the end; say it once, in our words.
    if let Some(at) = message.find(" at line ") {
        message.truncate(at);
    }
    if let Some(location) = error.location() {
        message = format!(
            "{message} (line {}, column {})",
            location.line(),
            location.column()
        );
    }
    let key = match key.as_deref() {
        None | Some(".") | Some("") => "(document)".to_owned(),
        Some(key) => key.to_owned(),
    };
    // serde_yaml may start the message with (part of) the path itself: say the path once.
    let message = match message.split_once(": ") {
        Some((path, rest)) if key.starts_with(path) && !path.contains(' ') => rest.to_owned(),
        _ => message,
    };
    Problem { key, message }
}
