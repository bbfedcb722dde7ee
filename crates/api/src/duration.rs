//! Durations as Kubernetes writes them (`90s`, `1h30m`, Go's `time.Duration` format), for the
//! configuration file and `spec.refreshInterval`. Parsed by kube's parser after a bounds
//! check: kube-core 5 panics on values that overflow (`99999999999999999999h`), and input
//! from users must get an error, never a panic.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// The longest duration accepted: 100 years, in seconds.
const MAX_SECONDS: f64 = 100.0 * 365.25 * 86_400.0;

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Duration(kube::core::Duration);

impl Duration {
    pub fn is_negative(&self) -> bool {
        self.0.is_negative()
    }
}

/// Seconds `text` stands for, when every part is a number and a unit; `None` otherwise (the
/// real parser then names the problem).
fn rough_seconds(text: &str) -> Option<f64> {
    let mut rest = text.trim_start_matches(['+', '-']);
    let mut total = 0.0;
    while !rest.is_empty() && rest != "0" {
        let unit_start = rest.find(char::is_alphabetic)?;
        let (number, tail) = rest.split_at(unit_start);
        let unit_end = tail
            .find(|c: char| !c.is_alphabetic())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "\u{00b5}s" | "\u{03bc}s" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += number.parse::<f64>().ok()? * scale;
        rest = tail;
    }
    Some(total)
}

impl FromStr for Duration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if rough_seconds(text).is_some_and(|s| !s.is_finite() || s > MAX_SECONDS) {
            return Err(format!("duration {text:?} is longer than 100 years"));
        }
        text.parse::<kube::core::Duration>()
            .map(Self)
            .map_err(|e| format!("duration {text:?}: {e} (write it like 90s, 15m or 1h30m)"))
    }
}

impl PartialOrd for Duration {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        self.0.partial_cmp(&other.0)
    }
}

impl From<std::time::Duration> for Duration {
    fn from(duration: std::time::Duration) -> Self {
        Self(duration.into())
    }
}

impl From<Duration> for std::time::Duration {
    fn from(duration: Duration) -> Self {
        duration.0.into()
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<'de, str>::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

impl schemars::JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string"})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflowing_durations_are_errors_not_panics() {
        for text in [
            "99999999999999999999h",
            "999999999h",
            "1e300s",
            "9999999999999999999999999s",
        ] {
            let error = text.parse::<Duration>().expect_err(text);
            assert!(
                error.contains("100 years") || error.contains(text),
                "{error}"
            );
        }
        let parsed: std::time::Duration = "1h30m".parse::<Duration>().expect("1h30m").into();
        assert_eq!(parsed.as_secs(), 5400);
        assert!("-5s".parse::<Duration>().expect("-5s").is_negative());
        assert!("5 minutes".parse::<Duration>().is_err());
        let yaml: Result<Duration, _> = serde_yaml::from_str("\"99999999999999999999h\"");
        assert!(yaml.is_err());
    }
}
