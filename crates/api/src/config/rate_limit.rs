//! `sources.rateLimits`: a budget per source host (`docker.io: 100/6h`), so that mirroring
//! stays inside what a public registry allows (Docker Hub: 100 pulls per 6 hours anonymous)
//! instead of finding out from a storm of 429s.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use crate::Duration;

/// `REQUESTS/PERIOD`: at most `requests` mirror passes (a resolve, and the copy when one is
/// needed) against the host in any `period`, spread evenly once the burst is spent.
#[derive(Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub requests: u32,
    pub per: Duration,
}

impl RateLimit {
    pub fn period(&self) -> std::time::Duration {
        self.per.into()
    }
}

impl FromStr for RateLimit {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let shape = || format!("rate limit {text:?}: write it as REQUESTS/PERIOD, like 100/6h");
        let (requests, per) = text.trim().split_once('/').ok_or_else(shape)?;
        let requests: u32 = requests.trim().parse().map_err(|_| shape())?;
        if requests == 0 {
            return Err(format!("rate limit {text:?}: allow at least 1 request"));
        }
        let per: Duration = per
            .trim()
            .parse()
            .map_err(|e| format!("rate limit {text:?}: {e}"))?;
        if per.is_negative() || std::time::Duration::from(per).is_zero() {
            return Err(format!("rate limit {text:?}: the period must be positive"));
        }
        Ok(Self { requests, per })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.requests, self.per)
    }
}

impl fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for RateLimit {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<'de, str>::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

impl schemars::JsonSchema for RateLimit {
    fn schema_name() -> Cow<'static, str> {
        "RateLimit".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "pattern": "^[0-9]+/.+$"})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_read_as_requests_per_period_and_bad_ones_are_named() {
        let limit: RateLimit = "100/6h".parse().expect("100/6h");
        assert_eq!(limit.requests, 100);
        assert_eq!(limit.period().as_secs(), 6 * 3600);
        assert_eq!(limit.to_string(), "100/21600s");
        assert_eq!(limit.to_string().parse::<RateLimit>(), Ok(limit));
        for bad in ["100", "0/1h", "-1/1h", "x/1h", "10/0s", "10/-5m", "10/soon"] {
            let error = bad.parse::<RateLimit>().expect_err(bad);
            assert!(error.contains(bad), "{error}");
        }
        let yaml: Result<RateLimit, _> = serde_yaml::from_str("\"5/99999999999999999999h\"");
        assert!(yaml.is_err());
    }
}
