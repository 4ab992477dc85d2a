//! Secret values and the masker that keeps them out of every printed line.

use std::fmt;
use std::sync::Arc;

/// A secret string: `Debug` and `Display` print `**REDACTED**`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a value.
    #[must_use]
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself: only for the code that must send it somewhere.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("**REDACTED**")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("**REDACTED**")
    }
}

/// Replaces every known secret value in a text by `***`.
///
/// A multi-line secret is also masked line by line, so that a private key
/// printed piecewise does not leak.
#[derive(Clone, Default, Debug)]
pub struct Masker {
    needles: Arc<Vec<String>>,
}

/// What a masked secret is replaced by.
pub const MASK: &str = "***";

impl Masker {
    /// A masker for these secret values. Values shorter than 3 characters are
    /// not masked on their own (they would mask ordinary text) but still are as
    /// part of longer values.
    #[must_use]
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut needles: Vec<String> = Vec::new();
        for v in values {
            let v = v.trim_end_matches(['\n', '\r']);
            if v.len() >= 3 {
                needles.push(v.to_string());
            }
            if v.contains('\n') {
                for line in v.lines() {
                    let line = line.trim();
                    if line.len() >= 8 {
                        needles.push(line.to_string());
                    }
                }
            }
        }
        // Longest first, so that a value containing another is masked whole.
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup();
        Self { needles: Arc::new(needles) }
    }

    /// Whether there is nothing to mask.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// The text with every secret replaced.
    #[must_use]
    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        for n in self.needles.iter() {
            if out.contains(n.as_str()) {
                out = out.replace(n.as_str(), MASK);
            }
        }
        out
    }

    /// Mask every string inside a JSON value.
    #[must_use]
    pub fn mask_json(&self, value: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        if self.is_empty() {
            return value.clone();
        }
        match value {
            Value::String(s) => Value::String(self.mask(s)),
            Value::Array(a) => Value::Array(a.iter().map(|v| self.mask_json(v)).collect()),
            Value::Object(o) => {
                Value::Object(o.iter().map(|(k, v)| (k.clone(), self.mask_json(v))).collect())
            }
            other => other.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_values_and_lines_of_multiline_values() {
        let m = Masker::new(["hunter22", "-----BEGIN KEY-----\nAAAABBBBCCCC\n-----END KEY-----\n", "ab"]);
        assert_eq!(m.mask("pw=hunter22;"), "pw=***;");
        assert_eq!(m.mask("line AAAABBBBCCCC"), "line ***");
        assert_eq!(m.mask("ab stays"), "ab stays");
        assert_eq!(format!("{:?}", Secret::new("x")), "**REDACTED**");
    }
}
