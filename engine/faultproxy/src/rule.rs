//! Rules: which requests to fault ([`Match`]), how ([`Fault`]), and how often
//! ([`Rule::times`], [`Rule::after`]).
//!
//! The types serialize (serde, externally tagged, `snake_case`) to the JSON the
//! binary's control API and `--rules` file take:
//!
//! ```json
//! [
//!   {"matcher": {"param": {"name": "Action", "value": "RunInstances"}},
//!    "fault": "ec2_insufficient_capacity", "times": 2},
//!   {"matcher": {"all_of": [{"method": "POST"}, {"path_regex": "^/instance/v1/zones/[^/]+/servers$"}]},
//!    "fault": "scaleway_out_of_stock", "after": 1},
//!   {"fault": {"status": {"code": 503, "body": "", "headers": {}}}, "times": 1},
//!   {"fault": {"too_many": {"retry_after_secs": 1}}, "times": 1},
//!   {"matcher": {"path_prefix": "/api2/json/nodes"}, "fault": {"latency": 150}},
//!   {"matcher": {"body_contains": "Action=TerminateInstances"}, "fault": "reset", "times": 1}
//! ]
//! ```
//!
//! `matcher` defaults to `"any"`, `times` to always (`null`), `after` to 0;
//! `name` is optional and shows up in the request log. Latency is in
//! milliseconds.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hyper::Method;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// One fault rule: requests that match [`Rule::matcher`] get [`Rule::fault`],
/// after the first [`Rule::after`] matching requests went through untouched, at
/// most [`Rule::times`] times.
///
/// Rules are tried in the order they were added; the first one that fires
/// decides the request, later rules do not see it (their counters do not move).
/// A rule that matches but does not fire (still in its `after` window, or
/// used up) lets the next rules try.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A label that the request log repeats, to tell rules apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Which requests this rule applies to.
    #[serde(default)]
    pub matcher: Match,
    /// What to do to them.
    pub fault: Fault,
    /// How many times to fire; `None` fires on every match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
    /// How many matching requests to let through before firing.
    #[serde(default)]
    pub after: u32,
}

impl Rule {
    /// A rule that fires on every request.
    #[must_use]
    pub fn always(fault: Fault) -> Self {
        Self {
            name: None,
            matcher: Match::Any,
            fault,
            times: None,
            after: 0,
        }
    }

    /// A rule that fires on the first matching request only.
    #[must_use]
    pub fn once(fault: Fault) -> Self {
        Self::times(1, fault)
    }

    /// A rule that fires on the first `n` matching requests.
    #[must_use]
    pub fn times(n: u32, fault: Fault) -> Self {
        Self {
            times: Some(n),
            ..Self::always(fault)
        }
    }

    /// Restricts the rule to requests that match `matcher`.
    #[must_use]
    pub fn matching(mut self, matcher: Match) -> Self {
        self.matcher = matcher;
        self
    }

    /// Lets the first `n` matching requests through before firing.
    #[must_use]
    pub fn after(mut self, n: u32) -> Self {
        self.after = n;
        self
    }

    /// Names the rule; the request log repeats the name.
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Parses a rules document: a JSON list of rules, or a single rule.
    ///
    /// # Errors
    /// [`Error::InvalidRules`] when the text is not a rule or a list of rules
    /// (unknown fields, a bad regex and unknown fault kinds included).
    pub fn list_from_json(text: &str) -> Result<Vec<Self>, Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            Many(Vec<Rule>),
            One(Box<Rule>),
        }
        // Try the list first so its error message is the one shown for a list.
        let trimmed = text.trim_start();
        if trimmed.starts_with('[') {
            return serde_json::from_str(text).map_err(Error::InvalidRules);
        }
        match serde_json::from_str::<OneOrMany>(text) {
            Ok(OneOrMany::Many(rules)) => Ok(rules),
            Ok(OneOrMany::One(rule)) => Ok(vec![*rule]),
            // Re-parse as a single rule for a precise message.
            Err(_) => serde_json::from_str::<Self>(text)
                .map(|r| vec![r])
                .map_err(Error::InvalidRules),
        }
    }
}

/// Which requests a [`Rule`] applies to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Match {
    /// Every request.
    #[default]
    Any,
    /// The HTTP method (case-insensitive), e.g. `"POST"`.
    Method(String),
    /// The path starts with this (the query string is not part of the path).
    PathPrefix(String),
    /// The path matches this regex (unanchored unless the pattern says `^...$`).
    PathRegex(PathRegex),
    /// The raw request body contains this text.
    BodyContains(String),
    /// The raw query string (without `?`) contains this text.
    QueryContains(String),
    /// A parameter of the query string or of a form body
    /// (`application/x-www-form-urlencoded`) equals this value, after
    /// percent-decoding. EC2's Query API names its action this way:
    /// `Action=RunInstances` ([`Match::ec2_action`]).
    Param {
        /// The parameter name, e.g. `Action`.
        name: String,
        /// The exact value, e.g. `RunInstances`.
        value: String,
    },
    /// Every one of these matches (an empty list matches everything).
    AllOf(Vec<Match>),
    /// At least one of these matches (an empty list matches nothing).
    AnyOf(Vec<Match>),
}

impl Match {
    /// Every request.
    #[must_use]
    pub fn any() -> Self {
        Self::Any
    }

    /// Requests with this method (case-insensitive).
    #[must_use]
    pub fn method(method: impl Into<String>) -> Self {
        Self::Method(method.into())
    }

    /// Requests whose path starts with `prefix`.
    #[must_use]
    pub fn path_prefix(prefix: impl Into<String>) -> Self {
        Self::PathPrefix(prefix.into())
    }

    /// Requests whose path matches `pattern`.
    ///
    /// # Errors
    /// [`Error::InvalidPathRegex`] when the pattern does not compile.
    pub fn path_regex(pattern: &str) -> Result<Self, Error> {
        PathRegex::new(pattern).map(Self::PathRegex)
    }

    /// Requests whose raw body contains `text`.
    #[must_use]
    pub fn body_contains(text: impl Into<String>) -> Self {
        Self::BodyContains(text.into())
    }

    /// Requests whose raw query string contains `text`.
    #[must_use]
    pub fn query_contains(text: impl Into<String>) -> Self {
        Self::QueryContains(text.into())
    }

    /// Requests with a query or form parameter `name` equal to `value`.
    #[must_use]
    pub fn param(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self::Param {
            name: name.into(),
            value: value.into(),
        }
    }

    /// EC2 Query API requests for `action` (`Action=<action>` in the form body
    /// or the query string), exactly: `DescribeInstanceTypes` does not match
    /// `DescribeInstanceTypeOfferings`.
    #[must_use]
    pub fn ec2_action(action: impl Into<String>) -> Self {
        Self::param("Action", action)
    }

    /// Requests that match all of `matchers`.
    #[must_use]
    pub fn all_of(matchers: impl IntoIterator<Item = Match>) -> Self {
        Self::AllOf(matchers.into_iter().collect())
    }

    /// Requests that match any of `matchers`.
    #[must_use]
    pub fn any_of(matchers: impl IntoIterator<Item = Match>) -> Self {
        Self::AnyOf(matchers.into_iter().collect())
    }

    /// Whether `req` matches.
    pub(crate) fn matches(&self, req: &RequestParts<'_>) -> bool {
        match self {
            Self::Any => true,
            Self::Method(m) => req.method.as_str().eq_ignore_ascii_case(m),
            Self::PathPrefix(p) => req.path.starts_with(p.as_str()),
            Self::PathRegex(re) => re.0.is_match(req.path),
            Self::BodyContains(text) => contains(req.body, text.as_bytes()),
            Self::QueryContains(text) => req.query.is_some_and(|q| q.contains(text.as_str())),
            Self::Param { name, value } => {
                let in_query = req
                    .query
                    .is_some_and(|q| has_param(q.as_bytes(), name, value));
                in_query || (req.form_body && has_param(req.body, name, value))
            }
            Self::AllOf(all) => all.iter().all(|m| m.matches(req)),
            Self::AnyOf(any) => any.iter().any(|m| m.matches(req)),
        }
    }
}

/// What a matcher looks at.
pub(crate) struct RequestParts<'a> {
    pub(crate) method: &'a Method,
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
    pub(crate) body: &'a [u8],
    /// The body is `application/x-www-form-urlencoded` (or has no content type
    /// and looks like a form): [`Match::Param`] reads it.
    pub(crate) form_body: bool,
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

fn has_param(encoded: &[u8], name: &str, value: &str) -> bool {
    encoded.split(|&b| b == b'&').any(|pair| {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        percent_decode(k) == name.as_bytes() && percent_decode(v) == value.as_bytes()
    })
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space); a bad
/// escape is kept as it is.
fn percent_decode(input: &[u8]) -> Vec<u8> {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < input.len() => match (hex(input[i + 1]), hex(input[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// A compiled path regex that serializes as its pattern.
#[derive(Clone)]
pub struct PathRegex(regex::Regex);

impl PathRegex {
    /// Compiles `pattern`.
    ///
    /// # Errors
    /// [`Error::InvalidPathRegex`] when the pattern does not compile.
    pub fn new(pattern: &str) -> Result<Self, Error> {
        regex::Regex::new(pattern)
            .map(Self)
            .map_err(|source| Error::InvalidPathRegex {
                pattern: pattern.to_owned(),
                source,
            })
    }

    /// The pattern as given.
    #[must_use]
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for PathRegex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PathRegex").field(&self.0.as_str()).finish()
    }
}

impl PartialEq for PathRegex {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Serialize for PathRegex {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for PathRegex {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let pattern = String::deserialize(deserializer)?;
        Self::new(&pattern).map_err(serde::de::Error::custom)
    }
}

/// What the proxy does to a request a [`Rule`] fired on.
///
/// All but [`Fault::Latency`] answer without calling the upstream, so the peer
/// behind never sees the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Answers with this status, body and headers. Without a `Content-Type`
    /// header, one is guessed from the body (`{`/`[`: JSON, `<`: XML, else
    /// text). A code outside 100..=999 answers 500.
    Status {
        /// The HTTP status code.
        code: u16,
        /// The response body.
        #[serde(default)]
        body: String,
        /// Extra response headers.
        #[serde(default)]
        headers: BTreeMap<String, String>,
    },
    /// Answers 429 Too Many Requests with `Retry-After: <retry_after_secs>`.
    TooMany {
        /// The `Retry-After` value, in seconds.
        retry_after_secs: u64,
    },
    /// Reads the request, then closes the connection without an answer
    /// (`SO_LINGER` 0, so the client sees a reset).
    Reset,
    /// Waits this long (milliseconds in JSON), then forwards the request.
    Latency(#[serde(with = "millis")] Duration),
    /// EC2's `InsufficientInstanceCapacity` error: HTTP 500 with the EC2 XML
    /// error body (see [`crate::shapes`]).
    Ec2InsufficientCapacity,
    /// EC2's `RequestLimitExceeded` throttling error: HTTP 503 with the EC2
    /// XML error body.
    Ec2Throttling,
    /// Scaleway Instance API's out-of-stock answer to a server create: HTTP
    /// 412 with `{"type": "out_of_stock", ...}` (see [`crate::shapes`]).
    ScalewayOutOfStock,
}

impl Fault {
    /// Answers `code` with an empty body.
    #[must_use]
    pub fn status(code: u16) -> Self {
        Self::Status {
            code,
            body: String::new(),
            headers: BTreeMap::new(),
        }
    }

    /// Answers `code` with `body` (content type guessed from the body).
    #[must_use]
    pub fn status_with_body(code: u16, body: impl Into<String>) -> Self {
        Self::Status {
            code,
            body: body.into(),
            headers: BTreeMap::new(),
        }
    }

    /// Answers 429 with `Retry-After: <secs>`.
    #[must_use]
    pub fn too_many(retry_after_secs: u64) -> Self {
        Self::TooMany { retry_after_secs }
    }

    /// Waits `ms` milliseconds, then forwards.
    #[must_use]
    pub fn latency_ms(ms: u64) -> Self {
        Self::Latency(Duration::from_millis(ms))
    }

    /// Any EC2 Query API error: `status` with the EC2 XML error body carrying
    /// `code` and `message` (e.g. `400`, `"InsufficientAddressCapacity"`).
    #[must_use]
    pub fn ec2_error(status: u16, code: &str, message: &str) -> Self {
        let mut headers = BTreeMap::new();
        headers.insert(
            "content-type".to_owned(),
            crate::shapes::EC2_CONTENT_TYPE.to_owned(),
        );
        Self::Status {
            code: status,
            body: crate::shapes::ec2_error_body(code, message, &crate::shapes::request_id()),
            headers,
        }
    }

    /// Any Scaleway Instance API error: `status` with
    /// `{"message": <message>, "type": <error_type>}` (plus `resource` when
    /// given), as the Instance API answers.
    #[must_use]
    pub fn scaleway_error(
        status: u16,
        error_type: &str,
        message: &str,
        resource: Option<&str>,
    ) -> Self {
        let mut headers = BTreeMap::new();
        headers.insert("content-type".to_owned(), "application/json".to_owned());
        Self::Status {
            code: status,
            body: crate::shapes::scaleway_error_body(error_type, message, resource),
            headers,
        }
    }

    /// The fault's kind as its JSON tag says it (`"status"`, `"reset"`, ...),
    /// as the request log records it.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Status { .. } => "status",
            Self::TooMany { .. } => "too_many",
            Self::Reset => "reset",
            Self::Latency(_) => "latency",
            Self::Ec2InsufficientCapacity => "ec2_insufficient_capacity",
            Self::Ec2Throttling => "ec2_throttling",
            Self::ScalewayOutOfStock => "scaleway_out_of_stock",
        }
    }
}

/// Durations as whole milliseconds.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts<'a>(
        method: &'a Method,
        path: &'a str,
        query: Option<&'a str>,
        body: &'a [u8],
    ) -> RequestParts<'a> {
        RequestParts {
            method,
            path,
            query,
            body,
            form_body: true,
        }
    }

    #[test]
    fn module_doc_example_parses() {
        let doc = include_str!("rule.rs");
        let start = doc.find("//! ```json\n").unwrap() + "//! ```json\n".len();
        let end = start + doc[start..].find("//! ```\n").unwrap();
        let json: String = doc[start..end]
            .lines()
            .map(|l| l.trim_start_matches("//!"))
            .collect();
        let rules = Rule::list_from_json(&json).unwrap();
        assert_eq!(rules.len(), 6);
        assert_eq!(
            rules[0],
            Rule::times(2, Fault::Ec2InsufficientCapacity)
                .matching(Match::ec2_action("RunInstances"))
        );
        assert_eq!(rules[4].fault, Fault::latency_ms(150));
        assert_eq!(rules[5].fault, Fault::Reset);
    }

    #[test]
    fn rules_round_trip_through_json() {
        let rules = vec![
            Rule::times(2, Fault::Ec2InsufficientCapacity)
                .matching(Match::all_of([
                    Match::method("POST"),
                    Match::body_contains("Action=RunInstances"),
                ]))
                .named("ice"),
            Rule::always(Fault::latency_ms(20))
                .matching(Match::path_regex("^/a/[0-9]+$").unwrap())
                .after(3),
            Rule::once(Fault::too_many(2)),
            Rule::once(Fault::Reset).matching(Match::any_of([
                Match::query_contains("x=1"),
                Match::path_prefix("/p"),
            ])),
        ];
        let json = serde_json::to_string(&rules).unwrap();
        assert!(
            json.contains(r#""fault":"ec2_insufficient_capacity""#),
            "{json}"
        );
        assert!(json.contains(r#""latency":20"#), "{json}");
        assert!(json.contains(r#""path_regex":"^/a/[0-9]+$""#), "{json}");
        assert_eq!(Rule::list_from_json(&json).unwrap(), rules);
    }

    #[test]
    fn single_rule_and_errors() {
        let one = Rule::list_from_json(r#"{"fault": "reset"}"#).unwrap();
        assert_eq!(one, vec![Rule::always(Fault::Reset)]);
        let err = Rule::list_from_json(r#"[{"fault": "reset", "tims": 2}]"#).unwrap_err();
        assert!(err.to_string().contains("tims"), "{err}");
        let err = Rule::list_from_json(r#"{"fault": "nope"}"#).unwrap_err();
        assert!(
            err.to_string().starts_with("failed to parse rules"),
            "{err}"
        );
        let err = Rule::list_from_json(r#"[{"matcher": {"path_regex": "("}, "fault": "reset"}]"#)
            .unwrap_err();
        assert!(
            err.to_string().contains("failed to compile path regex"),
            "{err}"
        );
        assert!(Match::path_regex("(").is_err());
    }

    #[test]
    fn matchers() {
        let post = Method::POST;
        let body = b"Action=RunInstances&Version=2016-11-15&InstanceType=g5.xlarge";
        let req = parts(&post, "/", None, body);
        assert!(Match::ec2_action("RunInstances").matches(&req));
        assert!(!Match::ec2_action("RunInstance").matches(&req));
        assert!(Match::body_contains("Action=RunInstances").matches(&req));
        assert!(Match::method("post").matches(&req));
        assert!(!Match::method("GET").matches(&req));
        assert!(Match::all_of([]).matches(&req));
        assert!(!Match::any_of([]).matches(&req));

        let get = Method::GET;
        let req = parts(
            &get,
            "/instance/v1/zones/fr-par-1/servers",
            Some("name=a%20b&page=2"),
            b"",
        );
        assert!(Match::path_prefix("/instance/v1/").matches(&req));
        assert!(Match::path_regex("^/instance/v1/zones/[^/]+/servers$")
            .unwrap()
            .matches(&req));
        assert!(Match::query_contains("page=2").matches(&req));
        assert!(Match::param("name", "a b").matches(&req));
        assert!(!Match::query_contains("page=3").matches(&req));

        let not_form = RequestParts {
            form_body: false,
            ..parts(&post, "/", None, body)
        };
        assert!(!Match::ec2_action("RunInstances").matches(&not_form));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode(b"a%20b+c"), b"a b c");
        assert_eq!(percent_decode(b"%41"), b"A");
        assert_eq!(percent_decode(b"%4"), b"%4");
        assert_eq!(percent_decode(b"%zz%"), b"%zz%");
    }
}
