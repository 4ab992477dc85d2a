//! The shared HTTP clients and the pieces both actions use: URL, method and header
//! checks, expected statuses, and bounded body reads.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The connector's clients: one that verifies TLS certificates and, built on first use,
/// one that does not (`insecure: true`). Both pool connections; clones share the pool.
#[derive(Debug, Default)]
pub(crate) struct Clients {
    secure: OnceLock<reqwest::Client>,
    insecure: OnceLock<reqwest::Client>,
}

impl Clients {
    /// The client to use.
    pub(crate) fn get(&self, insecure: bool) -> Result<reqwest::Client, Error> {
        let cell = if insecure { &self.insecure } else { &self.secure };
        if let Some(c) = cell.get() {
            return Ok(c.clone());
        }
        let built = reqwest::Client::builder()
            .use_rustls_tls()
            .danger_accept_invalid_certs(insecure)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("engine-connector-http/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::Client)?;
        Ok(cell.get_or_init(|| built).clone())
    }
}

/// A status code or a list of them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ExpectStatus {
    /// One status code.
    One(#[schemars(range(min = 100, max = 599))] u16),
    /// Any of these status codes.
    AnyOf(#[schemars(length(min = 1), inner(range(min = 100, max = 599)))] Vec<u16>),
}

impl Default for ExpectStatus {
    fn default() -> Self {
        Self::One(200)
    }
}

impl ExpectStatus {
    /// The codes, in the order written.
    #[must_use]
    pub fn codes(&self) -> &[u16] {
        match self {
            Self::One(c) => std::slice::from_ref(c),
            Self::AnyOf(v) => v,
        }
    }

    /// Whether `status` is one of them.
    #[must_use]
    pub fn matches(&self, status: u16) -> bool {
        self.codes().contains(&status)
    }

    /// `200` or `200, 204`.
    #[must_use]
    pub fn describe(&self) -> String {
        self.codes().iter().map(u16::to_string).collect::<Vec<_>>().join(" or ")
    }

    pub(crate) fn check(&self) -> Result<(), Error> {
        if self.codes().is_empty() {
            return Err(Error::Input("`expect_status` is an empty list: give at least one status code".into()));
        }
        if let Some(c) = self.codes().iter().find(|c| !(100..=599).contains(*c)) {
            return Err(Error::Input(format!("`expect_status` holds {c}, which is not an HTTP status code (100 to 599)")));
        }
        Ok(())
    }
}

/// Parse and check a URL: absolute, `http` or `https`, with a host.
pub(crate) fn parse_url(s: &str) -> Result<Url, Error> {
    let url = Url::parse(s).map_err(|e| Error::Input(format!("invalid url `{s}`: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::Input(format!("invalid url `{}`: the scheme must be http or https, not `{}`", redact(&url), url.scheme())));
    }
    if url.host_str().unwrap_or_default().is_empty() {
        return Err(Error::Input(format!("invalid url `{}`: it has no host", redact(&url))));
    }
    Ok(url)
}

/// The URL as it may be shown: a password in it is replaced with `***`.
pub(crate) fn redact(url: &Url) -> String {
    if url.password().is_some() {
        let mut u = url.clone();
        if u.set_password(Some("***")).is_ok() {
            return u.to_string();
        }
    }
    url.to_string()
}

/// Parse a method (`get` and `GET` alike; extension methods are allowed).
pub(crate) fn parse_method(s: &str) -> Result<Method, Error> {
    Method::from_bytes(s.to_ascii_uppercase().as_bytes()).map_err(|_| Error::Input(format!("invalid method `{s}`")))
}

/// Build a header map, checking each name and value.
pub(crate) fn header_map(headers: &BTreeMap<String, String>) -> Result<HeaderMap, Error> {
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| Error::Input(format!("invalid header name `{name}`")))?;
        // The value is not shown: it may be a credential.
        let v = HeaderValue::from_str(value)
            .map_err(|_| Error::Input(format!("invalid value for header `{name}`: it holds a control character or a non-ascii byte")))?;
        map.append(n, v);
    }
    Ok(map)
}

/// Response headers with lowercase names; repeated headers are joined with `, `.
pub(crate) fn headers_out(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        out.entry(name.as_str().to_string())
            .and_modify(|e| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert(v);
    }
    out
}

/// Read at most `limit` bytes of the body; says whether more was left.
pub(crate) async fn read_body(resp: &mut reqwest::Response, limit: usize) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = limit - buf.len();
        if chunk.len() > room {
            buf.extend_from_slice(&chunk[..room]);
            return Ok((buf, true));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok((buf, false))
}

/// Body bytes as text: invalid UTF-8 is replaced, and a character cut by truncation dropped.
pub(crate) fn body_text(mut bytes: Vec<u8>, truncated: bool) -> String {
    if truncated {
        if let Err(e) = std::str::from_utf8(&bytes) {
            if e.error_len().is_none() {
                bytes.truncate(e.valid_up_to());
            }
        }
    }
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The first 200 characters of a body, on one line, for error messages.
pub(crate) fn excerpt(body: &str) -> String {
    const MAX: usize = 200;
    let trimmed = body.trim();
    if trimmed.is_empty() {
        return "(empty body)".into();
    }
    let mut out: String = trimmed.chars().take(MAX).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if trimmed.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}

/// The `Retry-After` header in its seconds form.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(parse_url("http://127.0.0.1:8080/health").is_ok());
        assert!(parse_url("https://example.com").is_ok());
        for bad in ["", "example.com/health", "ftp://example.com", "file:///etc/passwd", "http://", "/health"] {
            assert!(parse_url(bad).is_err(), "{bad:?} should be rejected");
        }
        let e = parse_url("ftp://user:pw@example.com").unwrap_err().to_string();
        assert!(e.contains("scheme") && !e.contains("pw@"), "{e}");
    }

    #[test]
    fn methods_and_headers() {
        assert_eq!(parse_method("post").unwrap(), Method::POST);
        assert_eq!(parse_method("PURGE").unwrap().as_str(), "PURGE");
        assert!(parse_method("GE T").is_err());
        let ok: BTreeMap<String, String> = [("X-Token".to_string(), "abc".to_string())].into();
        assert!(header_map(&ok).is_ok());
        let bad_name: BTreeMap<String, String> = [("X Token".to_string(), "abc".to_string())].into();
        assert!(header_map(&bad_name).is_err());
        let bad_value: BTreeMap<String, String> = [("X-Token".to_string(), "a\nb".to_string())].into();
        let e = header_map(&bad_value).unwrap_err().to_string();
        assert!(!e.contains("a\nb"), "{e}");
    }

    #[test]
    fn text_and_excerpts() {
        let s = "é".repeat(3);
        let bytes = s.as_bytes()[..5].to_vec();
        assert_eq!(body_text(bytes, true), "éé");
        assert_eq!(body_text(vec![b'a', 0xff, b'b'], false), "a\u{fffd}b");
        assert_eq!(excerpt("  "), "(empty body)");
        let long = "x".repeat(300);
        assert_eq!(excerpt(&long).chars().count(), 201);
        assert_eq!(excerpt("a\nb"), "a b");
    }

    #[test]
    fn expected_statuses() {
        assert!(ExpectStatus::default().matches(200));
        let any: ExpectStatus = serde_json::from_value(serde_json::json!([200, 204])).unwrap();
        assert!(any.matches(204) && !any.matches(500));
        assert_eq!(any.describe(), "200 or 204");
        assert!(ExpectStatus::AnyOf(vec![]).check().is_err());
        assert!(ExpectStatus::One(700).check().is_err());
    }
}
