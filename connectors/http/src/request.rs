//! `http.request`: send one request and classify the answer.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, StepContext};
use reqwest::header::CONTENT_TYPE;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::client::{body_text, excerpt, header_map, headers_out, parse_method, parse_url, read_body, redact, retry_after, Clients, ExpectStatus};
use engine_core::duration::DurationStr;
use crate::error::{describe, status_kind, Error};

/// How much of an answer's body `http.request` keeps: 16 MiB.
pub const REQUEST_BODY_LIMIT: usize = 16 * 1024 * 1024;

fn default_method() -> String {
    "GET".into()
}
fn default_timeout() -> DurationStr {
    DurationStr::literal("30s")
}

/// Input of `http.request`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestInput {
    /// The URL, `http://` or `https://`.
    pub url: String,
    /// The HTTP method (`GET`, `POST`, `PUT`, `PATCH`, `DELETE`, ...).
    #[serde(default = "default_method")]
    pub method: String,
    /// Request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A body sent as it is written. Not with `json`.
    #[serde(default)]
    pub body: Option<String>,
    /// A body encoded as JSON, with `Content-Type: application/json` unless `headers` sets one. Not with `body`.
    #[serde(default)]
    pub json: Option<Value>,
    /// The status code, or list of status codes, that counts as success; when absent, any 2xx or 3xx does.
    #[serde(default)]
    pub expect_status: Option<ExpectStatus>,
    /// The longest the request may take: connecting, the answer and its body.
    #[serde(default = "default_timeout")]
    pub timeout: DurationStr,
    /// Skip TLS certificate verification (self-signed certificates).
    #[serde(default)]
    pub insecure: bool,
}

/// Output of `http.request`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RequestOutput {
    /// The answer's status code.
    pub status: u16,
    /// The answer's headers, names in lowercase; repeated headers joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// The answer's body as text (cut at 16 MiB).
    pub body: String,
    /// The body parsed as JSON when it is JSON, else null.
    pub json: Option<Value>,
    /// Whether the body was longer than 16 MiB and was cut.
    pub body_truncated: bool,
}

/// `http.request`: send one HTTP request.
///
/// ## What it does
/// Sends `method url` with `headers` and either `body` (text) or `json`, follows up to 10
/// redirects, and returns the status, headers and body, plus the body parsed as JSON when it
/// is JSON. The answer passes when its status is one of `expect_status`, or, without it, any
/// 2xx or 3xx. It does not retry: the engine's `retry` policy does, from the error kind.
///
/// ## Undo
/// Nothing: whatever the request changed on the server is not tracked.
///
/// ## Errors
/// Every message names the method, the URL and the status, with the first 200 characters of
/// the body.
/// - `transient`: connection refused or reset, no answer within `timeout`, 408, 429 and 5xx;
///   a `Retry-After: SECONDS` header becomes the wait before the next attempt.
/// - `auth`: 401, 403. `not_found`: 404. `conflict`: 409.
/// - `invalid`: any other status that did not pass; a TLS certificate that does not verify;
///   a URL that is not absolute `http`/`https`, a bad method or header, `body` together with
///   `json`.
/// - `cancelled` as soon as the step is cancelled.
///
/// ## Example
/// ```yaml
/// register:
///   uses: http.request
///   with:
///     url: "https://inventory.example.com/api/hosts"
///     method: POST
///     headers:
///       Authorization: "Bearer ${{ secrets.inventory_token }}"
///     json:
///       name: "${{ steps.vm.outputs.name }}"
///       ip: "${{ steps.vm.outputs.public_ip }}"
///     expect_status: [200, 201]
///     timeout: 10s
///   retry: { attempts: 3 }
/// ```
#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    pub(crate) clients: Arc<Clients>,
}

fn looks_like_json(content_type: Option<&str>, body: &str) -> bool {
    match content_type {
        Some(ct) if ct.to_ascii_lowercase().contains("json") => true,
        _ => matches!(body.trim_start().chars().next(), Some('{' | '[')),
    }
}

#[async_trait]
impl Action for HttpRequest {
    const ID: &'static str = "http.request";
    const DESCRIPTION: &'static str = "send one HTTP request and return its status, headers and body";
    type Input = RequestInput;
    type Output = RequestOutput;

    fn validate(&self, input: &RequestInput) -> Result<(), ConnectorError> {
        parse_url(&input.url)?;
        parse_method(&input.method)?;
        header_map(&input.headers)?;
        if input.body.is_some() && input.json.is_some() {
            return Err(Error::Input("give `body` or `json`, not both".into()).into());
        }
        if let Some(e) = &input.expect_status {
            e.check()?;
        }
        if input.timeout.get().is_zero() {
            return Err(Error::Input(format!("`timeout` must be longer than zero, not `{}`", input.timeout)).into());
        }
        Ok(())
    }

    async fn run(&self, input: RequestInput, cx: &StepContext) -> Result<RequestOutput, ConnectorError> {
        let url = parse_url(&input.url)?;
        let method = parse_method(&input.method)?;
        let headers = header_map(&input.headers)?;
        let client = self.clients.get(input.insecure)?;
        let shown = redact(&url);
        let mut req = client.request(method.clone(), url).headers(headers);
        if let Some(json) = &input.json {
            req = req.json(json);
        } else if let Some(body) = input.body {
            req = req.body(body);
        }
        let timeout = input.timeout.get();
        let exchange = async {
            let mut resp = req.send().await?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let (bytes, truncated) = read_body(&mut resp, REQUEST_BODY_LIMIT).await?;
            Ok::<_, reqwest::Error>((status, headers, body_text(bytes, truncated), truncated))
        };
        let answer = tokio::select! {
            r = tokio::time::timeout(timeout, exchange) => r,
            () = cx.cancelled() => return Err(Error::Cancelled { method: method.to_string(), url: shown, after: String::new() }.into()),
        };
        let (status, headers, body, body_truncated) = match answer {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                let (kind, detail) = describe(&e);
                return Err(Error::Send { method: method.to_string(), url: shown, detail, kind, source: e }.into());
            }
            Err(_) => return Err(Error::TimedOut { method: method.to_string(), url: shown, timeout: input.timeout.to_string() }.into()),
        };
        let passed = match &input.expect_status {
            Some(e) => e.matches(status),
            None => (200..400).contains(&status),
        };
        if !passed {
            let kind = status_kind(status);
            let retry = if kind == engine_connector::ErrorKind::Transient { retry_after(&headers) } else { None };
            return Err(Error::Status {
                method: method.to_string(),
                url: shown,
                status,
                expected: input.expect_status.as_ref().map(|e| format!(" (expected {})", e.describe())).unwrap_or_default(),
                body: excerpt(&body),
                retry_after: retry,
            }
            .into());
        }
        let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let json = if looks_like_json(content_type, &body) { serde_json::from_str(&body).ok() } else { None };
        Ok(RequestOutput { status, headers: headers_out(&headers), body, json, body_truncated })
    }
}
