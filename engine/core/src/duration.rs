//! Duration strings (`"500ms"`, `"2s"`, `"0.1s"`, `"15m"`, `"1h30m"`): the one parser
//! behind the workflow format's `timeout`/`retry` durations and every connector input
//! that takes a duration.

use std::borrow::Cow;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The regular expression of a duration; the same text as the workflow format's, so that
/// `engine validate` reports a bad one with its duration diagnostic.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$";

/// A duration written as text: a number (decimals allowed) and a unit (`ms`, `s`, `m`, `h`,
/// `d`), or several of them one after the other (`1h30m`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationStr {
    text: String,
    value: std::time::Duration,
}

impl DurationStr {
    /// Parse the text.
    ///
    /// # Errors
    /// When it is not a duration, with a message that shows the syntax.
    pub fn parse(s: &str) -> Result<Self, String> {
        parse_duration(s).map(|value| Self { text: s.to_string(), value })
    }

    /// The duration.
    #[must_use]
    pub fn get(&self) -> std::time::Duration {
        self.value
    }

    /// The text it was written as.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// A default value from a literal known to be valid.
    ///
    /// # Panics
    /// When the literal is not a duration (a programming error).
    #[must_use]
    pub fn literal(s: &'static str) -> Self {
        Self::parse(s).unwrap_or_else(|e| unreachable!("bad built-in duration: {e}"))
    }
}

impl fmt::Display for DurationStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for DurationStr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for DurationStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for DurationStr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl JsonSchema for DurationStr {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "A duration: a number and a unit (`ms`, `s`, `m`, `h`, `d`), or a sum (`1h30m`).",
        })
    }
}

/// Parse `500ms`, `0.1s`, `90s`, `15m`, `1h30m`, `2d`.
///
/// # Errors
/// When the text is not a duration or is too large.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("`{s}` is not a duration: write a number and a unit (ms, s, m, h, d), e.g. `90s`, `15m`, `1h30m`");
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = 0.0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let num = &rest[..num_len];
        if num_len == 0 || num.starts_with('.') || num.ends_with('.') || num.matches('.').count() > 1 {
            return Err(bad());
        }
        let n: f64 = num.parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let (unit, len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else if rest.starts_with('d') {
            (86400.0, 1)
        } else {
            return Err(bad());
        };
        total += n * unit;
        rest = &rest[len..];
    }
    std::time::Duration::try_from_secs_f64(total).map_err(|_| format!("`{s}` is too long a duration"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn parses_the_workflow_syntax() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("0.1s").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("10.0s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("1m30s500ms").unwrap(), Duration::from_millis(90_500));
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        for s in ["", "5", "s", "1.s", ".5s", "1..2s", "5x", "-1s", "1 s", "1.2.3s", "1e3s", "99999999999999999999999999d"] {
            assert!(parse_duration(s).is_err(), "{s:?} should be rejected");
        }
    }

    #[test]
    fn pattern_and_parser_agree() {
        let re_ok = ["1s", "0.5s", "1h30m", "250ms"];
        for s in re_ok {
            assert!(DurationStr::parse(s).is_ok());
        }
        let d: DurationStr = serde_json::from_value(serde_json::json!("2s")).unwrap();
        assert_eq!(d.get(), Duration::from_secs(2));
        assert_eq!(d.to_string(), "2s");
        let e = serde_json::from_value::<DurationStr>(serde_json::json!("2 seconds")).unwrap_err();
        assert!(e.to_string().contains("is not a duration"), "{e}");
        assert!(serde_json::from_value::<DurationStr>(serde_json::json!(2)).is_err());
    }
}
