//! `http.check`: poll a URL until it answers with an expected status (and body).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, LogStream, StepContext};
use reqwest::header::HeaderMap;
use reqwest::{Method, Url};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::client::{body_text, header_map, parse_method, parse_url, read_body, redact, Clients, ExpectStatus};
use engine_core::duration::DurationStr;
use crate::error::{describe, Error};

/// How much of each answer's body is kept (and searched for `contains`): 64 KiB.
pub const CHECK_BODY_LIMIT: usize = 64 * 1024;

fn default_method() -> String {
    "GET".into()
}
fn default_interval() -> DurationStr {
    DurationStr::literal("2s")
}
fn default_within() -> DurationStr {
    DurationStr::literal("60s")
}
fn default_request_timeout() -> DurationStr {
    DurationStr::literal("10s")
}

/// Input of `http.check`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckInput {
    /// The URL to poll, `http://` or `https://`.
    pub url: String,
    /// The status code, or list of status codes, that counts as ready.
    #[serde(default)]
    pub expect_status: ExpectStatus,
    /// Also require the body to contain this text (searched in the first 64 KiB).
    #[serde(default)]
    pub contains: Option<String>,
    /// The HTTP method of each poll.
    #[serde(default = "default_method")]
    pub method: String,
    /// Headers sent with each poll.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The wait between the end of one poll and the start of the next (`500ms`, `2s`).
    #[serde(default = "default_interval")]
    pub interval: DurationStr,
    /// Give up, with a `timeout` error, when the URL is not ready this long after the first poll.
    #[serde(default = "default_within")]
    pub within: DurationStr,
    /// The longest one poll may take: connecting, the answer and its body.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: DurationStr,
    /// Skip TLS certificate verification (self-signed certificates).
    #[serde(default)]
    pub insecure: bool,
}

/// Output of `http.check`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CheckOutput {
    /// The status of the last answer, the one that passed.
    pub status: u16,
    /// The body of the last answer, cut at 64 KiB.
    pub body: String,
    /// How many polls were made.
    pub attempts: u32,
    /// Milliseconds from the first poll to the answer that passed.
    pub elapsed_ms: u64,
}

/// `http.check`: wait until a URL answers as expected.
///
/// ## What it does
/// Sends `method url` (with `headers`) every `interval` until the answer's status is one of
/// `expect_status` (default 200) and, when `contains` is given, its body contains that text.
/// Each poll may take at most `request_timeout`; refused connections, timeouts and other
/// statuses only mean "not yet". A line goes to the step's log when what the URL answers
/// changes (first failure, a new status, a new error), not on every poll.
///
/// ## Undo
/// Nothing: it creates nothing.
///
/// ## Errors
/// - `timeout` when `within` passes first; the message names the URL, the number of polls
///   and the last status or connection error.
/// - `cancelled` as soon as the step is cancelled, also in the middle of a request.
/// - `invalid` for a URL that is not absolute `http`/`https`, a bad method or header, or an
///   `expect_status` that is not a status code.
///
/// ## Example
/// ```yaml
/// wait_for_api:
///   uses: http.check
///   with:
///     url: "http://${{ steps.vm.outputs.public_ip }}:8000/health"
///     expect_status: [200, 204]
///     contains: '"ready":true'
///     interval: 5s
///     within: 15m
/// ```
#[derive(Debug, Clone, Default)]
pub struct HttpCheck {
    pub(crate) clients: Arc<Clients>,
}

/// What one poll saw.
#[derive(Debug)]
enum Observation {
    Answer { status: u16, body: String },
    Failed(String),
}

impl Observation {
    fn ready(&self, input: &CheckInput) -> bool {
        match self {
            Self::Answer { status, body } => input.expect_status.matches(*status) && input.contains.as_deref().into_iter().all(|c| body.contains(c)),
            Self::Failed(_) => false,
        }
    }

    /// A short account, the same for two polls that saw the same thing.
    fn summary(&self, input: &CheckInput) -> String {
        match self {
            Self::Answer { status, .. } if input.expect_status.matches(*status) => {
                format!("status {status} but the body does not contain `{}`", input.contains.as_deref().unwrap_or_default())
            }
            Self::Answer { status, .. } => format!("status {status} (expected {})", input.expect_status.describe()),
            Self::Failed(e) => format!("error: {e}"),
        }
    }
}

async fn poll_once(client: &reqwest::Client, method: Method, url: Url, headers: HeaderMap, timeout: Duration) -> Observation {
    let exchange = async {
        let mut resp = client.request(method, url).headers(headers).send().await?;
        let status = resp.status().as_u16();
        let (bytes, truncated) = read_body(&mut resp, CHECK_BODY_LIMIT).await?;
        Ok::<_, reqwest::Error>((status, body_text(bytes, truncated)))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok((status, body))) => Observation::Answer { status, body },
        Ok(Err(e)) => Observation::Failed(describe(&e).1),
        Err(_) => Observation::Failed(format!("no answer within {timeout:?}")),
    }
}

#[async_trait]
impl Action for HttpCheck {
    const ID: &'static str = "http.check";
    const DESCRIPTION: &'static str = "poll a URL until it answers with the expected status (and body)";
    type Input = CheckInput;
    type Output = CheckOutput;

    fn validate(&self, input: &CheckInput) -> Result<(), ConnectorError> {
        parse_url(&input.url)?;
        parse_method(&input.method)?;
        header_map(&input.headers)?;
        input.expect_status.check()?;
        for (name, d) in [("interval", &input.interval), ("within", &input.within), ("request_timeout", &input.request_timeout)] {
            if d.get().is_zero() {
                return Err(Error::Input(format!("`{name}` must be longer than zero, not `{d}`")).into());
            }
        }
        Ok(())
    }

    async fn run(&self, input: CheckInput, cx: &StepContext) -> Result<CheckOutput, ConnectorError> {
        let url = parse_url(&input.url)?;
        let method = parse_method(&input.method)?;
        let headers = header_map(&input.headers)?;
        let client = self.clients.get(input.insecure)?;
        let shown = redact(&url);
        let start = Instant::now();
        // A `within` too large to add is as good as forever.
        let deadline = start.checked_add(input.within.get()).unwrap_or_else(|| start + Duration::from_secs(100 * 365 * 86_400));
        let cancelled = |attempts: u32| -> ConnectorError {
            let after = if attempts == 0 { String::new() } else { format!(" after {attempts} poll{}", if attempts == 1 { "" } else { "s" }) };
            Error::Cancelled { method: method.to_string(), url: shown.clone(), after }.into()
        };
        let mut attempts = 0u32;
        let mut last: Option<String> = None;
        cx.progress("polling", None);
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if attempts > 0 && remaining.is_zero() {
                break;
            }
            attempts += 1;
            let timeout = input.request_timeout.get().min(remaining);
            let seen = tokio::select! {
                seen = poll_once(&client, method.clone(), url.clone(), headers.clone(), timeout) => seen,
                () = cx.cancelled() => return Err(cancelled(attempts)),
            };
            if seen.ready(&input) {
                if let Observation::Answer { status, body } = seen {
                    let elapsed_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
                    if last.is_some() {
                        cx.log(LogStream::Stderr, &format!("{method} {shown}: status {status}, ready after {attempts} polls"));
                    }
                    return Ok(CheckOutput { status, body, attempts, elapsed_ms });
                }
            }
            let summary = seen.summary(&input);
            if last.as_deref() != Some(summary.as_str()) {
                cx.log(LogStream::Stderr, &format!("{method} {shown}: poll {attempts}: {summary}"));
            }
            last = Some(summary);
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            if cx.sleep(input.interval.get().min(remaining)).await.is_err() {
                return Err(cancelled(attempts));
            }
        }
        Err(Error::NotReady {
            method: method.to_string(),
            url: shown,
            within: input.within.to_string(),
            attempts,
            last: format!("last {}", last.unwrap_or_else(|| "poll made no request".into())),
        }
        .into())
    }
}
