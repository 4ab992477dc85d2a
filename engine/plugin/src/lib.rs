//! Out-of-process connectors: the engine side of the connector protocol
//! (`docs/connector-protocol.md`).
//!
//! An executable named `engine-connector-NAME` on `PATH`, or named by a workflow's
//! `connectors: NAME: path:`, is described once ([`describe`]) and then used exactly like a
//! built-in connector: each of its actions is a [`DynAction`] that starts the executable
//! per request, speaks newline-delimited JSON with it, records the resources it reports,
//! and turns every way a plugin can misbehave into a clear, classified step error.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use engine_connector::{ConnectorError, DynAction, ErrorKind, LogStream, StepContext};
use engine_core::{ResourceRecord, ResourceState, StepRef};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

/// The protocol version this engine speaks.
pub const PROTOCOL: u64 = 1;
/// How long a `describe` may take.
pub const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Prefix of plugin executables found on `PATH`.
pub const PREFIX: &str = "engine-connector-";
/// Lines of the plugin's standard error kept for error messages.
const STDERR_TAIL: usize = 10;

/// A described plugin connector.
#[derive(Clone)]
pub struct PluginConnector {
    /// Connector name.
    pub name: String,
    /// One line.
    pub description: String,
    /// The executable.
    pub path: PathBuf,
    /// Its actions.
    pub actions: Vec<Arc<dyn DynAction>>,
}

impl std::fmt::Debug for PluginConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginConnector").field("name", &self.name).field("path", &self.path).finish_non_exhaustive()
    }
}

/// One action of a plugin.
pub struct PluginAction {
    id: &'static str,
    action: String,
    connector: String,
    description: &'static str,
    resource: Option<&'static str>,
    input_schema: Value,
    output_schema: Value,
    output_validator: Option<jsonschema::Validator>,
    path: PathBuf,
}

/// Leak a string: action ids are `&'static str` in the connector interface, and a
/// process describes each plugin once.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn label(name: &str, path: &Path) -> String {
    format!("connector `{name}` ({})", path.display())
}

/// Every `engine-connector-*` executable on `PATH`, first one of each name.
#[must_use]
pub fn find_on_path() -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut found: Vec<(String, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let conn = name.strip_prefix(PREFIX)?.to_string();
                is_executable(&e.path()).then_some((conn, e.path()))
            })
            .collect();
        found.sort();
        for (n, p) in found {
            if !out.iter().any(|(m, _)| *m == n) {
                out.push((n, p));
            }
        }
    }
    out
}

/// The executable for connector `name` on `PATH`.
#[must_use]
pub fn find(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).map(|d| d.join(format!("{PREFIX}{name}"))).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A running request to a plugin.
struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    who: String,
    pid: Option<u32>,
}

impl Drop for Session {
    fn drop(&mut self) {
        // A request abandoned (timeout, cancellation, error) ends the plugin's whole group.
        if let Some(pid) = self.pid.take() {
            engine_connector::signal_process_group(pid, "KILL");
        }
    }
}

impl Session {
    async fn start(name: &str, path: &Path, request: &Value, cwd: Option<&Path>) -> Result<Self, ConnectorError> {
        let who = label(name, path);
        let mut cmd = Command::new(path);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0).kill_on_drop(true);
        if let Some(d) = cwd {
            cmd.current_dir(d);
        }
        // ETXTBSY: the executable was just written and another thread's fork still holds it
        // open for writing; it clears within milliseconds.
        let mut tries = 0;
        let mut child = loop {
            match cmd.spawn() {
                Err(e) if e.raw_os_error() == Some(26) && tries < 20 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                other => break other.map_err(|e| ConnectorError::invalid(format!("cannot start {who}: {e}")).with_source(e))?,
            }
        };
        let pid = child.id();
        let mut stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or_else(|| ConnectorError::invalid(format!("{who}: no standard output")))?;
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(err) = child.stderr.take() {
            let tail = stderr.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(err).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    let mut t = tail.lock().expect("stderr lock");
                    if t.len() == STDERR_TAIL {
                        t.pop_front();
                    }
                    t.push_back(l);
                }
            });
        }
        let hello = json!({"type": "hello", "protocol": PROTOCOL, "engine": env!("CARGO_PKG_VERSION")});
        if let Some(w) = stdin.as_mut() {
            // A plugin that exits without reading is reported by the read loop, not here.
            let _ = w.write_all(format!("{hello}\n{request}\n").as_bytes()).await;
            let _ = w.flush().await;
        }
        let mut s = Self { child, stdin, lines: BufReader::new(stdout).lines(), stderr, who, pid };
        match s.next().await? {
            Some(m) if m["type"] == "hello" => {
                let v = m["protocol"].as_u64();
                if v != Some(PROTOCOL) {
                    return Err(ConnectorError::invalid(format!("{} speaks protocol {}, this engine speaks {PROTOCOL}", s.who, m["protocol"])));
                }
                Ok(s)
            }
            Some(m) => Err(ConnectorError::invalid(format!("{} did not answer `hello` first: {}", s.who, short(&m.to_string())))),
            None => Err(s.ended_early().await),
        }
    }

    /// The next message, `None` at end of output.
    async fn next(&mut self) -> Result<Option<Value>, ConnectorError> {
        loop {
            match self.lines.next_line().await {
                Ok(Some(l)) if l.trim().is_empty() => {}
                Ok(Some(l)) => {
                    return match serde_json::from_str::<Value>(&l) {
                        Ok(v) if v.is_object() => Ok(Some(v)),
                        _ => Err(ConnectorError::invalid(format!("{} sent a line that is not a JSON object: {}", self.who, short(&l)))),
                    };
                }
                Ok(None) => return Ok(None),
                Err(e) => return Err(ConnectorError::transient(format!("reading from {}: {e}", self.who))),
            }
        }
    }

    async fn ack(&mut self) {
        if let Some(w) = self.stdin.as_mut() {
            let _ = w.write_all(b"{\"type\":\"ack\"}\n").await;
            let _ = w.flush().await;
        }
    }

    fn stderr_tail(&self) -> String {
        let t = self.stderr.lock().expect("stderr lock");
        if t.is_empty() {
            String::new()
        } else {
            format!("; its last words: {}", t.iter().cloned().collect::<Vec<_>>().join(" | "))
        }
    }

    /// The plugin's output ended without a final message.
    async fn ended_early(&mut self) -> ConnectorError {
        self.stdin = None;
        let status = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
        // Let the stderr reader catch the last lines.
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.pid = None;
        match status {
            Ok(Ok(st)) => match st.code() {
                Some(c) => ConnectorError::invalid(format!("{} exited with code {c} before answering{}", self.who, self.stderr_tail())),
                None => ConnectorError::transient(format!("{} was killed by a signal before answering{}", self.who, self.stderr_tail())),
            },
            _ => ConnectorError::invalid(format!("{} closed its output without answering{}", self.who, self.stderr_tail())),
        }
    }

    async fn finish(&mut self) {
        self.stdin = None;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
        self.pid = None;
    }
}

fn short(s: &str) -> String {
    if s.chars().count() > 200 {
        format!("{}…", s.chars().take(200).collect::<String>())
    } else {
        s.to_string()
    }
}

fn error_from(who: &str, m: &Value) -> ConnectorError {
    let kind = m["kind"].as_str().and_then(ErrorKind::parse).unwrap_or(ErrorKind::Invalid);
    let mut e = ConnectorError::new(kind, m["message"].as_str().map_or_else(|| format!("{who} reported an error"), str::to_string));
    if let Some(ms) = m["retry_after_ms"].as_u64() {
        e = e.retry_after(Duration::from_millis(ms));
    }
    e
}

/// Describe the plugin at `path`, expected to be connector `name`.
///
/// # Errors
/// A message saying what is wrong with the plugin.
pub async fn describe(name: &str, path: &Path) -> Result<PluginConnector, String> {
    // Requests run in the workflow's directory: keep an absolute path.
    let path = &std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let who = label(name, path);
    let work = async {
        let mut s = Session::start(name, path, &json!({"type": "describe"}), None).await.map_err(|e| e.message)?;
        let m = loop {
            match s.next().await.map_err(|e| e.message)? {
                Some(m) if m["type"] == "describe" => break m,
                Some(m) if m["type"] == "error" => return Err(format!("{who}: {}", error_from(&who, &m).message)),
                Some(_) => {}
                None => return Err(s.ended_early().await.message),
            }
        };
        s.finish().await;
        Ok(m)
    };
    let m = tokio::time::timeout(DESCRIBE_TIMEOUT, work).await.map_err(|_| format!("{who} did not describe itself within {}s", DESCRIBE_TIMEOUT.as_secs()))??;
    let declared = m["connector"]["name"].as_str().unwrap_or(name);
    if declared != name {
        return Err(format!("{who} calls itself `{declared}`"));
    }
    let mut actions: Vec<Arc<dyn DynAction>> = Vec::new();
    for a in m["actions"].as_array().into_iter().flatten() {
        let Some(action) = a["name"].as_str() else { return Err(format!("{who}: an action has no `name`")) };
        let output_schema = a.get("output_schema").cloned().unwrap_or_else(|| json!({}));
        let output_validator = jsonschema::options().with_draft(jsonschema::Draft::Draft7).build(&output_schema).ok();
        let input_schema = a.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object"}));
        if jsonschema::options().with_draft(jsonschema::Draft::Draft7).build(&input_schema).is_err() {
            return Err(format!("{who}: the input schema of `{action}` is not a valid JSON Schema"));
        }
        actions.push(Arc::new(PluginAction {
            id: leak(format!("{name}.{action}")),
            action: action.to_string(),
            connector: name.to_string(),
            description: leak(a["description"].as_str().unwrap_or_default().to_string()),
            resource: a["resource"].as_str().map(|r| leak(r.to_string())),
            input_schema,
            output_schema,
            output_validator,
            path: path.to_path_buf(),
        }));
    }
    Ok(PluginConnector { name: name.to_string(), description: m["connector"]["description"].as_str().unwrap_or_default().to_string(), path: path.to_path_buf(), actions })
}

/// [`describe`] from synchronous code (on its own small runtime).
///
/// # Errors
/// As [`describe`].
pub fn describe_blocking(name: &str, path: &Path) -> Result<PluginConnector, String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(describe(name, path))
}

fn context(cx: &StepContext) -> Value {
    let mut settings = cx.settings.clone();
    if let Some(o) = settings.as_object_mut() {
        o.remove("path");
    }
    json!({
        "run_id": cx.run_id, "step": cx.step.step, "index": cx.step.index, "attempt": cx.attempt,
        "idempotency_key": cx.idempotency_key(), "settings": settings, "workflow_dir": cx.workflow_dir.display().to_string(),
    })
}

impl PluginAction {
    /// Send one request and serve it to its final message.
    async fn request(&self, request: Value, cx: &StepContext, undo: bool) -> Result<Value, ConnectorError> {
        let mut s = Session::start(&self.connector, &self.path, &request, Some(&cx.workflow_dir)).await?;
        let work = async {
            loop {
                let Some(m) = s.next().await? else { return Err(s.ended_early().await) };
                match m["type"].as_str().unwrap_or_default() {
                    "progress" => cx.progress(m["stage"].as_str().unwrap_or_default(), m["percent"].as_u64().and_then(|p| u8::try_from(p.min(100)).ok())),
                    "log" => cx.log(if m["stream"] == "stderr" { LogStream::Stderr } else { LogStream::Stdout }, m["line"].as_str().unwrap_or_default()),
                    "resource" => {
                        let (Some(kind), Some(key)) = (m["kind"].as_str(), m["key"].as_str()) else {
                            return Err(ConnectorError::invalid(format!("{} reported a resource without `kind` and `key`", s.who)));
                        };
                        let id = m["id"].as_str().map(str::to_string);
                        let rec = ResourceRecord {
                            kind: kind.to_string(),
                            key: key.to_string(),
                            state: if id.is_some() { ResourceState::Created } else { ResourceState::Intended },
                            id,
                            undo: m.get("undo").cloned().unwrap_or(Value::Null),
                            step: StepRef { step: cx.step.step.clone(), index: cx.step.index },
                        };
                        cx.record(&rec).await?;
                        s.ack().await;
                    }
                    "result" => return Ok(m.get("output").cloned().unwrap_or(Value::Null)),
                    "done" if undo => return Ok(Value::Null),
                    "error" => return Err(error_from(&s.who, &m)),
                    _ => {} // unknown message types are ignored (forward compatibility)
                }
            }
        };
        let out = tokio::select! {
            r = work => r,
            () = cx.cancelled() => {
                if let Some(pid) = s.pid {
                    engine_connector::signal_process_group(pid, "TERM");
                    let _ = tokio::time::timeout(Duration::from_secs(2), s.child.wait()).await;
                }
                return Err(ConnectorError::cancelled(format!("{} cancelled", s.who)));
            }
        };
        s.finish().await;
        out
    }
}

#[async_trait]
impl DynAction for PluginAction {
    fn id(&self) -> &'static str {
        self.id
    }
    fn description(&self) -> &'static str {
        self.description
    }
    fn resource_kind(&self) -> Option<&'static str> {
        self.resource
    }
    fn input_schema(&self) -> Value {
        self.input_schema.clone()
    }
    fn output_schema(&self) -> Value {
        self.output_schema.clone()
    }
    /// The protocol has no price table (v1): `plan` shows none.
    fn price_value(&self, _input: &Value) -> Option<engine_connector::Price> {
        None
    }
    fn validate_value(&self, _input: &Value) -> Result<(), ConnectorError> {
        // The input schema is checked by the engine; the plugin checks the rest when invoked.
        Ok(())
    }
    async fn run_value(&self, input: Value, cx: &StepContext) -> Result<Value, ConnectorError> {
        let out = self.request(json!({"type": "invoke", "action": self.action, "input": input, "context": context(cx)}), cx, false).await?;
        if let Some(v) = &self.output_validator {
            let errors: Vec<String> = v.iter_errors(&out).map(|e| e.to_string()).collect();
            if !errors.is_empty() {
                return Err(ConnectorError::invalid(format!("{} returned an output that does not match its schema: {}", label(&self.connector, &self.path), errors.join("; "))));
            }
        }
        Ok(out)
    }
    async fn undo_value(&self, record: &ResourceRecord, cx: &StepContext) -> Result<(), ConnectorError> {
        let rec = serde_json::to_value(record).unwrap_or(Value::Null);
        match self.request(json!({"type": "undo", "action": self.action, "resource": rec, "context": context(cx)}), cx, true).await {
            Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
            other => other.map(|_| ()),
        }
    }
}
