//! Environment variable values in action inputs. Environment values are strings, but a
//! workflow writes `PORT: 8080`, `DEBUG: true`, or `N: ${{ inputs.n }}` (an expression that
//! keeps its type): like docker-compose, a number or a boolean is taken as its text.

use std::borrow::Cow;
use std::collections::BTreeMap;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One environment value: a string, or a number or boolean taken as its text.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct EnvValue(pub String);

/// `NAME: value` pairs, in name order.
pub type EnvMap = BTreeMap<String, EnvValue>;

impl EnvValue {
    /// The text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for EnvValue {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_ref()
    }
}

impl std::fmt::Display for EnvValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for EnvValue {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(Self(s)),
            serde_json::Value::Number(n) => Ok(Self(n.to_string())),
            serde_json::Value::Bool(b) => Ok(Self(b.to_string())),
            other => Err(serde::de::Error::custom(format!("an environment value is a string, number or boolean, not {}", kind(&other)))),
        }
    }
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a map",
        _ => "that",
    }
}

impl Serialize for EnvValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl JsonSchema for EnvValue {
    fn schema_name() -> Cow<'static, str> {
        "EnvValue".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": ["string", "number", "boolean"],
            "description": "An environment value; a number or boolean is taken as its text.",
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn scalars_become_their_text_and_the_rest_is_refused() {
        let m: EnvMap = serde_json::from_value(json!({"A": "x", "PORT": 8080, "F": 0.5, "DEBUG": true})).unwrap();
        let got: Vec<(&str, &str)> = m.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, [("A", "x"), ("DEBUG", "true"), ("F", "0.5"), ("PORT", "8080")]);
        for bad in [json!({"A": null}), json!({"A": [1]}), json!({"A": {"b": 1}})] {
            let e = serde_json::from_value::<EnvMap>(bad).unwrap_err().to_string();
            assert!(e.contains("an environment value is a string, number or boolean"), "{e}");
        }
    }
}
