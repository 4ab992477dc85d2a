//! `container.logs`: read a container's output.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bollard::query_parameters::LogsOptionsBuilder;
use engine_connector::{Action, ConnectorError, StepContext};
use engine_core::duration::parse_duration;
use futures_util::StreamExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::client::{Clients, Conn};
use crate::error::Error;
use crate::ops::{drain, inspect_existing, masked, Captured};

fn yes() -> bool {
    true
}

/// Input of `container.logs`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogsInput {
    /// The Docker daemon for this step: `unix:///path`, `tcp://HOST:PORT`, or
    /// `ssh://user@host[:port][/socket]` (through the ssh connector, to the remote
    /// `/var/run/docker.sock` unless a path is given). Default: the `connectors: container:`
    /// block's `host`, then `DOCKER_HOST`, then the local socket.
    #[serde(default)]
    pub host: Option<String>,
    /// The container: name or id.
    pub container: String,
    /// Only the last N lines (default: all).
    #[serde(default)]
    pub tail: Option<u64>,
    /// Only lines written since then: a duration back from now (`10m`, `1h`) or a Unix time in
    /// seconds (`1732400000`).
    #[serde(default)]
    pub since: Option<String>,
    /// Prefix each line with Docker's RFC 3339 timestamp.
    #[serde(default)]
    pub timestamps: bool,
    /// Include standard output (default true).
    #[serde(default = "yes")]
    pub stdout: bool,
    /// Include standard error (default true).
    #[serde(default = "yes")]
    pub stderr: bool,
}

/// Output of `container.logs`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct LogsOutput {
    /// Standard output (first MiB).
    pub stdout: String,
    /// Standard error (first MiB).
    pub stderr: String,
    /// Lines read, both streams together.
    pub lines: u64,
    /// The container's state when read (`running`, `exited`...).
    pub status: String,
}

/// `since` as a Unix time, `now` being the current Unix time.
///
/// # Errors
/// `invalid` for text that is neither a duration nor a number.
pub fn since_unix(since: &str, now: u64) -> Result<i64, Error> {
    if let Ok(t) = since.trim().parse::<i64>() {
        return Ok(t);
    }
    let d = parse_duration(since.trim()).map_err(|e| Error::Input(format!("since `{since}`: a duration (10m) or Unix seconds: {e}")))?;
    Ok(i64::try_from(now.saturating_sub(d.as_secs())).unwrap_or(i64::MAX))
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs()
}

/// The last `n` lines of a container's output (both streams), for error messages.
pub(crate) async fn tail_text(conn: &Conn, id: &str, n: u64) -> Result<String, Error> {
    let opts = LogsOptionsBuilder::new().stdout(true).stderr(true).tail(&n.to_string()).build();
    let mut s = conn.docker.logs(id, Some(opts));
    let mut text = String::new();
    while let Some(item) = s.next().await {
        match item {
            Ok(o) => text.push_str(&o.to_string()),
            Err(e) => return Err(conn.err(&format!("reading the logs of {id}"), e)),
        }
    }
    Ok(text.trim_end().to_string())
}

/// `container.logs`: a container's output so far.
///
/// ## What it does
/// Reads the container's log (`GET /containers/{id}/logs`, not following): all of it, the last
/// `tail` lines, or what came `since` a time; with `timestamps`, each line starts with Docker's
/// timestamp. Every line also goes to the step log. Works on running and exited containers whose
/// log driver keeps logs (`json-file`, `local`, `journald`).
///
/// ## Undo
/// Nothing: it creates nothing.
///
/// ## Errors
/// - `not_found`: no such container.
/// - `invalid`: a log driver that keeps nothing to read (`none`), a bad `since`.
/// - `transient`: the daemon cannot be reached.
///
/// ## Example
/// ```yaml
/// ollama-logs:
///   uses: container.logs
///   with: { container: ollama, tail: 50, since: 10m, timestamps: true }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Logs {
    pub(crate) clients: Arc<Clients>,
}

#[async_trait]
impl Action for Logs {
    const ID: &'static str = "container.logs";
    const DESCRIPTION: &'static str = "read a container's output (tail, since, timestamps)";
    type Input = LogsInput;
    type Output = LogsOutput;

    fn validate(&self, input: &LogsInput) -> Result<(), ConnectorError> {
        if input.container.trim().is_empty() {
            return Err(ConnectorError::invalid("`container` is empty"));
        }
        if !input.stdout && !input.stderr {
            return Err(ConnectorError::invalid("`stdout` and `stderr` are both false: there is nothing to read"));
        }
        if let Some(s) = &input.since {
            since_unix(s, 0)?;
        }
        Ok(())
    }

    async fn run(&self, input: LogsInput, cx: &StepContext) -> Result<LogsOutput, ConnectorError> {
        let conn = self.clients.connect(cx, input.host.as_deref()).await.map_err(|e| masked(cx, e))?;
        let c = inspect_existing(&conn, &input.container).await.map_err(|e| masked(cx, e))?;
        let mut opts = LogsOptionsBuilder::new().stdout(input.stdout).stderr(input.stderr).timestamps(input.timestamps);
        if let Some(n) = input.tail {
            opts = opts.tail(&n.to_string());
        }
        if let Some(s) = &input.since {
            let t = since_unix(s, now_unix()).map_err(|e| masked(cx, e))?;
            opts = opts.since(i32::try_from(t).unwrap_or(i32::MAX));
        }
        let id = c.id.clone().unwrap_or_else(|| input.container.clone());
        let stream = conn.docker.logs(&id, Some(opts.build()));
        let mut cap = Captured::default();
        cx.progress("read", Some(50));
        let what = format!("reading the logs of {}", input.container);
        tokio::select! {
            r = drain(&conn, cx, &what, stream, &mut cap) => r.map_err(|e| masked(cx, e))?,
            () = cx.cancelled() => return Err(ConnectorError::cancelled(format!("cancelled while {what}"))),
        }
        let lines = (cap.stdout.lines().count() + cap.stderr.lines().count()) as u64;
        cx.progress("done", Some(100));
        Ok(LogsOutput { stdout: cap.stdout, stderr: cap.stderr, lines, status: crate::ops::status_of(&c) })
    }
}
