//! The request layer: settings, authentication (API token, or ticket + CSRF), TLS, one call of
//! the Proxmox VE API (`/api2/json`), error classification and waiting for UPID tasks.
//!
//! # Where settings come from, first match wins
//! | what | order |
//! |---|---|
//! | endpoint | `endpoint` in the `connectors: proxmox:` block, `PROXMOX_URL` (`https://host:8006`, `/api2/json` optional) |
//! | token | `token_id` (`USER@REALM!TOKENID`) + `token_secret`, `PROXMOX_TOKEN_ID` + `PROXMOX_TOKEN_SECRET` |
//! | password | `username` + `password`, `PROXMOX_USER` + `PROXMOX_PASSWORD` (a ticket is asked once per action) |
//! | TLS | verified against the system roots; `ca_file` adds a CA (PEM); `insecure: true` skips the check (logged as a warning) |
//!
//! A token wins over a password when both are set.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use engine_connector::{ConnectorError, ErrorKind, LogStream, Secret, StepContext};
use serde::Deserialize;
use serde_json::Value;

/// How long one HTTP request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Default limit of a task wait: clones and disk resizes take minutes.
pub const DEFAULT_TASK_TIMEOUT_SECS: u64 = 1800;

/// The workflow's `connectors: proxmox:` block.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `https://pve.example:8006`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `root@pam`, for a ticket login.
    #[serde(default)]
    pub username: Option<String>,
    /// Password of `username`.
    #[serde(default, deserialize_with = "opt_secret")]
    pub password: Option<Secret>,
    /// `USER@REALM!TOKENID`.
    #[serde(default)]
    pub token_id: Option<String>,
    /// The token's secret (a UUID).
    #[serde(default, deserialize_with = "opt_secret")]
    pub token_secret: Option<Secret>,
    /// Default node of every action.
    #[serde(default)]
    pub node: Option<String>,
    /// A PEM CA certificate to verify the server with (a self-signed PVE's `pve-root-ca.pem`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Skip TLS verification (logged as a warning).
    #[serde(default)]
    pub insecure: bool,
}

fn opt_secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()).map(Secret::new))
}

impl Settings {
    /// Reads the block from the step context (`null` is an empty block).
    ///
    /// # Errors
    /// `invalid` for an unknown key or a wrong type.
    pub fn from_context(cx: &StepContext) -> Result<Self, ConnectorError> {
        if cx.settings.is_null() {
            return Ok(Self::default());
        }
        serde_json::from_value(cx.settings.clone()).map_err(|e| ConnectorError::invalid(format!("invalid `connectors: proxmox:` block: {e}")))
    }

    /// Fills what the block leaves out from `PROXMOX_*` variables (`env` looks one up).
    #[must_use]
    pub fn with_env(mut self, env: impl Fn(&str) -> Option<String>) -> Self {
        let get = |k: &str| env(k).filter(|v| !v.is_empty());
        if self.endpoint.is_none() {
            self.endpoint = get("PROXMOX_URL");
        }
        if self.token_id.is_none() && self.token_secret.is_none() {
            self.token_id = get("PROXMOX_TOKEN_ID");
            self.token_secret = get("PROXMOX_TOKEN_SECRET").map(Secret::new);
        }
        if self.username.is_none() && self.password.is_none() {
            self.username = get("PROXMOX_USER");
            self.password = get("PROXMOX_PASSWORD").map(Secret::new);
        }
        self
    }
}

enum Auth {
    Token(Secret),
    Ticket { cookie: Secret, csrf: Secret },
}

/// An authenticated client of one PVE cluster.
pub struct Pve {
    base: String,
    http: reqwest::Client,
    auth: Auth,
    /// The block's default node.
    pub default_node: Option<String>,
}

impl std::fmt::Debug for Pve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pve").field("base", &self.base).finish_non_exhaustive()
    }
}

/// The API base (`https://host:8006/api2/json`) of an endpoint.
#[must_use]
pub fn api_base(endpoint: &str) -> String {
    let e = endpoint.trim_end_matches('/');
    if e.ends_with("/api2/json") {
        e.to_string()
    } else {
        format!("{e}/api2/json")
    }
}

impl Pve {
    /// Settings of the step (block, then environment), then a login.
    ///
    /// # Errors
    /// `invalid` for missing settings, `auth` for refused credentials, TLS and connection errors.
    pub async fn from_context(cx: &StepContext) -> Result<Self, ConnectorError> {
        let s = Settings::from_context(cx)?.with_env(|k| std::env::var(k).ok());
        Self::connect(&s, cx).await
    }

    /// Build the HTTP client and log in (a ticket for a password; nothing to do for a token).
    ///
    /// # Errors
    /// As [`Pve::from_context`].
    pub async fn connect(s: &Settings, cx: &StepContext) -> Result<Self, ConnectorError> {
        let endpoint = s.endpoint.as_deref().ok_or_else(|| ConnectorError::invalid("no Proxmox endpoint: set `endpoint` in `connectors: proxmox:` or PROXMOX_URL"))?;
        if !endpoint.starts_with("https://") && !endpoint.starts_with("http://") {
            return Err(ConnectorError::invalid(format!("proxmox endpoint `{endpoint}` must start with https://")));
        }
        let mut b = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).connect_timeout(Duration::from_secs(15));
        if let Some(ca) = &s.ca_file {
            let path = if ca.is_relative() { cx.workflow_dir.join(ca) } else { ca.clone() };
            let pem = std::fs::read(&path).map_err(|e| ConnectorError::invalid(format!("cannot read proxmox `ca_file` {}: {e}", path.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| ConnectorError::invalid(format!("proxmox `ca_file` {} is not a PEM certificate: {e}", path.display())))?;
            b = b.add_root_certificate(cert);
        }
        if s.insecure {
            cx.log(LogStream::Stderr, &format!("warning: TLS certificate verification is off for {endpoint} (`insecure: true`)"));
            b = b.danger_accept_invalid_certs(true);
        }
        let http = b.build().map_err(|e| ConnectorError::invalid(format!("cannot build the HTTP client: {e}")))?;
        let base = api_base(endpoint);
        let auth = match (&s.token_id, &s.token_secret, &s.username, &s.password) {
            (Some(id), Some(secret), _, _) => {
                if !id.contains('!') || !id.contains('@') {
                    return Err(ConnectorError::invalid(format!("proxmox `token_id` `{id}` must be USER@REALM!TOKENID")));
                }
                Auth::Token(Secret::new(format!("PVEAPIToken={id}={}", secret.expose())))
            }
            (Some(_), None, _, _) => return Err(ConnectorError::invalid("proxmox `token_id` is set but not `token_secret` (or PROXMOX_TOKEN_SECRET)")),
            (_, _, Some(user), Some(password)) => ticket(&http, &base, user, password).await?,
            _ => {
                return Err(ConnectorError::invalid(
                    "no Proxmox credentials: set `token_id` + `token_secret` (PROXMOX_TOKEN_ID + PROXMOX_TOKEN_SECRET) or `username` + `password` (PROXMOX_USER + PROXMOX_PASSWORD)",
                ))
            }
        };
        Ok(Self { base, http, auth, default_node: s.node.clone() })
    }

    /// `GET path` with query pairs; the `data` of the answer.
    ///
    /// # Errors
    /// A classified error.
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ConnectorError> {
        self.call(reqwest::Method::GET, path, query).await
    }

    /// `POST path` with form pairs.
    ///
    /// # Errors
    /// A classified error.
    pub async fn post(&self, path: &str, form: &[(&str, String)]) -> Result<Value, ConnectorError> {
        self.call(reqwest::Method::POST, path, form).await
    }

    /// `PUT path` with form pairs.
    ///
    /// # Errors
    /// A classified error.
    pub async fn put(&self, path: &str, form: &[(&str, String)]) -> Result<Value, ConnectorError> {
        self.call(reqwest::Method::PUT, path, form).await
    }

    /// `DELETE path` with query pairs.
    ///
    /// # Errors
    /// A classified error.
    pub async fn delete(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ConnectorError> {
        self.call(reqwest::Method::DELETE, path, query).await
    }

    async fn call(&self, method: reqwest::Method, path: &str, params: &[(&str, String)]) -> Result<Value, ConnectorError> {
        let url = format!("{}{path}", self.base);
        let write = method != reqwest::Method::GET && method != reqwest::Method::DELETE;
        let mut rb = self.http.request(method.clone(), &url);
        rb = if write { rb.form(params) } else { rb.query(params) };
        rb = match &self.auth {
            Auth::Token(h) => rb.header("Authorization", h.expose()),
            Auth::Ticket { cookie, csrf } => {
                let rb = rb.header("Cookie", format!("PVEAuthCookie={}", cookie.expose()));
                if method == reqwest::Method::GET {
                    rb
                } else {
                    rb.header("CSRFPreventionToken", csrf.expose())
                }
            }
        };
        let what = format!("{method} {path}");
        let resp = rb.send().await.map_err(|e| send_error(&what, &self.base, &e))?;
        answer(&what, resp).await
    }

    /// The node to use: the input's, the block's, else the first online node of the cluster.
    ///
    /// # Errors
    /// `not_found` when the cluster lists no online node.
    pub async fn node(&self, input: Option<&str>) -> Result<String, ConnectorError> {
        if let Some(n) = input.or(self.default_node.as_deref()) {
            return Ok(n.to_string());
        }
        let nodes = self.get("/nodes", &[]).await?;
        let mut names: Vec<String> = nodes
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n.get("status").and_then(Value::as_str).is_none_or(|s| s == "online"))
            .filter_map(|n| n.get("node").and_then(Value::as_str).map(String::from))
            .collect();
        names.sort();
        names.into_iter().next().ok_or_else(|| ConnectorError::not_found("the Proxmox cluster lists no online node"))
    }

    /// Wait for a UPID task to stop, up to `limit`; its `exitstatus` (`OK`, `WARNINGS: n`).
    ///
    /// # Errors
    /// `timeout` past the limit; for a failed task, its exit status and the tail of its log,
    /// classified as [`classify_message`] does (`invalid` when nothing more is known).
    pub async fn wait_task(&self, cx: &StepContext, upid: &str, limit: Duration) -> Result<String, ConnectorError> {
        let node = upid_node(upid).ok_or_else(|| ConnectorError::invalid(format!("`{upid}` is not a Proxmox task id (UPID:node:...)")))?;
        let path = format!("/nodes/{node}/tasks/{upid}");
        let start = Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            let st = self.get(&format!("{path}/status"), &[]).await?;
            if st.get("status").and_then(Value::as_str) == Some("stopped") {
                let exit = st.get("exitstatus").and_then(Value::as_str).unwrap_or("").to_string();
                if exit == "OK" || exit.starts_with("WARNINGS") {
                    return Ok(exit);
                }
                let log = self.get(&format!("{path}/log"), &[("start", "0".into()), ("limit", "1000".into())]).await.unwrap_or(Value::Null);
                let lines: Vec<&str> = log.as_array().into_iter().flatten().filter_map(|l| l.get("t").and_then(Value::as_str)).collect();
                let tail = lines[lines.len().saturating_sub(10)..].join("\n");
                let kind = classify_message(&exit).or_else(|| classify_message(&tail)).unwrap_or(ErrorKind::Invalid);
                return Err(ConnectorError::new(kind, format!("task {upid} failed: {exit}{}", if tail.is_empty() { String::new() } else { format!("\nlog tail:\n{tail}") })));
            }
            if start.elapsed() >= limit {
                return Err(ConnectorError::timeout(format!("task {upid} still running after {}s", limit.as_secs())));
            }
            // Clones and disk moves run for minutes: say the task is alive at every look.
            let kind = upid.split(':').nth(5).filter(|k| !k.is_empty()).unwrap_or("task");
            cx.progress(&format!("task {kind} running, {:.1}s", start.elapsed().as_secs_f64()), None);
            cx.sleep(pause).await?;
            pause = (pause * 2).min(Duration::from_secs(3));
        }
    }

    /// Wait for a call's answer when it is a UPID (PVE answers most writes with one).
    ///
    /// # Errors
    /// As [`Pve::wait_task`].
    pub async fn wait_if_task(&self, cx: &StepContext, data: &Value, limit: Duration) -> Result<(), ConnectorError> {
        if let Some(upid) = data.as_str().filter(|s| s.starts_with("UPID:")) {
            self.wait_task(cx, upid, limit).await?;
        }
        Ok(())
    }
}

/// The node named in a UPID (`UPID:pve1:...`).
#[must_use]
pub fn upid_node(upid: &str) -> Option<&str> {
    let mut parts = upid.split(':');
    (parts.next() == Some("UPID")).then_some(())?;
    parts.next().filter(|n| !n.is_empty())
}

async fn ticket(http: &reqwest::Client, base: &str, user: &str, password: &Secret) -> Result<Auth, ConnectorError> {
    let what = "POST /access/ticket";
    let resp = http
        .post(format!("{base}/access/ticket"))
        .form(&[("username", user), ("password", password.expose())])
        .send()
        .await
        .map_err(|e| send_error(what, base, &e))?;
    let data = answer(what, resp).await.map_err(|e| if e.kind == ErrorKind::Auth { ConnectorError::auth(format!("Proxmox login of `{user}` refused: {}", e.message)) } else { e })?;
    let cookie = data.get("ticket").and_then(Value::as_str);
    let csrf = data.get("CSRFPreventionToken").and_then(Value::as_str);
    if data.get("NeedTFA").is_some_and(|v| v.as_i64() == Some(1) || v.as_bool() == Some(true)) {
        return Err(ConnectorError::auth(format!("Proxmox login of `{user}` needs a second factor: use an API token (`token_id` + `token_secret`)")));
    }
    match (cookie, csrf) {
        (Some(c), Some(t)) => Ok(Auth::Ticket { cookie: Secret::new(c), csrf: Secret::new(t) }),
        _ => Err(ConnectorError::auth(format!("Proxmox login of `{user}`: the answer has no ticket"))),
    }
}

fn send_error(what: &str, base: &str, e: &reqwest::Error) -> ConnectorError {
    let mut chain = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        src = s.source();
    }
    let lower = chain.to_lowercase();
    if lower.contains("certificate") || lower.contains("unknownissuer") || lower.contains("invalid peer") || lower.contains("tls") && lower.contains("handshake") {
        return ConnectorError::invalid(format!(
            "TLS verification of {base} failed ({chain}): the server's certificate is not trusted; set `ca_file` in `connectors: proxmox:` to its CA certificate (PEM, /etc/pve/pve-root-ca.pem on the node), or `insecure: true` to skip verification"
        ));
    }
    if e.is_timeout() {
        return ConnectorError::transient(format!("{what}: no answer from {base} within {}s", REQUEST_TIMEOUT.as_secs()));
    }
    ConnectorError::transient(format!("{what}: cannot reach {base}: {chain}"))
}

/// Kinds known from PVE's wording alone: lock timeouts are `transient`, a missing
/// object is `not_found`.
#[must_use]
pub fn classify_message(msg: &str) -> Option<ErrorKind> {
    let m = msg.to_lowercase();
    if m.contains("can't lock file") || m.contains("got timeout") || m.contains("unable to get lock") || m.contains("no quorum") {
        Some(ErrorKind::Transient)
    } else if m.contains("does not exist") || m.contains("no such") {
        Some(ErrorKind::NotFound)
    } else {
        None
    }
}

/// The kind of an HTTP answer that is not a success.
#[must_use]
pub fn classify(status: u16, message: &str, has_param_errors: bool) -> ErrorKind {
    if let Some(k) = classify_message(message) {
        return k;
    }
    match status {
        401 | 403 => ErrorKind::Auth,
        404 => ErrorKind::NotFound,
        400 if has_param_errors => ErrorKind::Invalid,
        400 | 405 | 501 => ErrorKind::Invalid,
        408 | 429 | 500..=599 => ErrorKind::Transient,
        _ => ErrorKind::Invalid,
    }
}

async fn answer(what: &str, resp: reqwest::Response) -> Result<Value, ConnectorError> {
    let status = resp.status().as_u16();
    let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    let text = resp.text().await.map_err(|e| ConnectorError::transient(format!("{what}: reading the answer failed: {e}")))?;
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        if body.is_null() && !text.trim().is_empty() {
            return Err(ConnectorError::transient(format!("{what}: the answer is not JSON: {}", snippet(&text))));
        }
        return Ok(body.get("data").cloned().unwrap_or(Value::Null));
    }
    let mut message = body.get("message").and_then(Value::as_str).map(|m| m.trim().to_string()).unwrap_or_else(|| snippet(&text));
    if message.is_empty() {
        message = format!("HTTP {status}");
    }
    let errors = body.get("errors").and_then(Value::as_object).filter(|e| !e.is_empty());
    if let Some(errs) = errors {
        let detail: Vec<String> = errs.iter().map(|(k, v)| format!("{k}: {}", v.as_str().map_or_else(|| v.to_string(), |s| s.trim().to_string()))).collect();
        message = format!("{message} {}", detail.join("; "));
    }
    let kind = classify(status, &message, errors.is_some());
    let mut err = ConnectorError::new(kind, format!("{what}: HTTP {status}: {message}"));
    if let Some(s) = retry_after {
        err = err.retry_after(Duration::from_secs(s));
    }
    Err(err)
}

fn snippet(text: &str) -> String {
    text.trim().chars().take(300).collect()
}

/// Percent-encode everything but `A-Za-z0-9-_.~`, as PVE wants `sshkeys` (it URL-decodes them).
#[must_use]
pub fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(classify(401, "authentication failure", false), ErrorKind::Auth);
        assert_eq!(classify(403, "Permission check failed", false), ErrorKind::Auth);
        assert_eq!(classify(500, "Configuration file 'nodes/pve1/qemu-server/7.conf' does not exist", false), ErrorKind::NotFound);
        assert_eq!(classify(500, "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout", false), ErrorKind::Transient);
        assert_eq!(classify(400, "Parameter verification failed. cores: type check", true), ErrorKind::Invalid);
        assert_eq!(classify(503, "busy", false), ErrorKind::Transient);
    }

    #[test]
    fn encodes_ssh_keys_as_pve_wants() {
        assert_eq!(uri_encode("ssh-ed25519 AAAA+/= a@b\n"), "ssh-ed25519%20AAAA%2B%2F%3D%20a%40b%0A");
    }

    #[test]
    fn upid_and_base() {
        assert_eq!(upid_node("UPID:pve1:000003E8:00001B58:6B04CCCA:qmclone:9000:root@pam!engine:"), Some("pve1"));
        assert_eq!(upid_node("nope"), None);
        assert_eq!(api_base("https://h:8006/"), "https://h:8006/api2/json");
        assert_eq!(api_base("https://h:8006/api2/json"), "https://h:8006/api2/json");
    }

    #[test]
    fn env_fills_what_the_block_leaves_out() {
        let s = Settings { endpoint: Some("https://a:8006".into()), ..Settings::default() }.with_env(|k| match k {
            "PROXMOX_URL" => Some("https://b:8006".into()),
            "PROXMOX_TOKEN_ID" => Some("u@pve!t".into()),
            "PROXMOX_TOKEN_SECRET" => Some("s3".into()),
            _ => None,
        });
        assert_eq!(s.endpoint.as_deref(), Some("https://a:8006"));
        assert_eq!(s.token_id.as_deref(), Some("u@pve!t"));
        assert_eq!(s.token_secret.as_ref().map(Secret::expose), Some("s3"));
        assert!(format!("{s:?}").contains("REDACTED") && !format!("{s:?}").contains("s3"));
    }
}
