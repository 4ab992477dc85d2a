//! How the connector runs commands: locally, or (once the ssh connector's library API is
//! there) on a remote host.
//!
//! Every action talks to the machine through [`Exec`]: `run(argv, timeout)` returns the
//! exit status and the captured output. [`LocalExec`] runs the program with
//! `tokio::process`, in its own process group, killed when the step is cancelled or the
//! timeout passes. A missing program is reported the way a shell on a remote host would
//! report it, as exit status 127, so that the callers have one way to recognise it.
//!
//! Remote hosts (`host:` in every action's input) are described by [`HostInput`], whose
//! object form is the ssh connector's [`SshTarget`]; [`RemoteExec`] runs the same
//! commands there over one [`Session`] per step, quoted for the remote shell.

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use connector_ssh::{Session, SshTarget};
use engine_connector::{ConnectorError, StepContext};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// Most bytes of each stream kept from one command.
const MAX_CAPTURE: u64 = 16 << 20;

/// The exit status a shell gives a command it cannot find.
pub const NOT_FOUND_STATUS: i32 = 127;

/// What a command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Exit status; -1 when killed by a signal; [`NOT_FOUND_STATUS`] when the program
    /// does not exist.
    pub status: i32,
    /// Standard output (lossy UTF-8).
    pub stdout: String,
    /// Standard error (lossy UTF-8).
    pub stderr: String,
}

impl Output {
    /// Whether the command exited with status 0.
    #[must_use]
    pub fn success(&self) -> bool {
        self.status == 0
    }

    /// Standard output and standard error, trimmed and joined, cut to `max` characters
    /// (nvidia-smi prints its own errors on standard output).
    #[must_use]
    pub fn text(&self, max: usize) -> String {
        let joined = [self.stdout.trim(), self.stderr.trim()].iter().filter(|s| !s.is_empty()).copied().collect::<Vec<_>>().join("\n");
        let mut cut: String = joined.chars().take(max).collect();
        if cut.len() < joined.len() {
            cut.push_str("...");
        }
        cut
    }
}

/// Runs commands on the machine whose GPUs an action looks at.
#[async_trait]
pub trait Exec: Send + Sync {
    /// Where commands run, for messages: `local`, or `user@host:port`.
    fn target(&self) -> &str;

    /// Run `argv` (program first) and wait at most `timeout`.
    ///
    /// # Errors
    /// `cancelled` when the step is cancelled, `timeout` when the command outlives
    /// `timeout`, `invalid` or `transient` when it cannot be started for another reason
    /// than a missing program (which is `Ok` with status [`NOT_FOUND_STATUS`]).
    async fn run(&self, argv: &[&str], timeout: Duration) -> Result<Output, ConnectorError>;
}

/// Runs commands on this machine.
#[derive(Debug, Clone)]
pub struct LocalExec {
    cx: StepContext,
}

impl LocalExec {
    /// An executor that stops its commands when the step `cx` is cancelled.
    #[must_use]
    pub fn new(cx: &StepContext) -> Self {
        Self { cx: cx.clone() }
    }
}

/// Kills the process group of a child that is still running when dropped.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            engine_connector::signal_process_group(pid, "KILL");
        }
    }
}

async fn read_all<R: tokio::io::AsyncRead + Unpin>(r: Option<R>) -> String {
    let Some(r) = r else { return String::new() };
    let mut buf = Vec::new();
    let _ = r.take(MAX_CAPTURE).read_to_end(&mut buf).await;
    String::from_utf8_lossy(&buf).into_owned()
}

#[async_trait]
impl Exec for LocalExec {
    fn target(&self) -> &'static str {
        "local"
    }

    async fn run(&self, argv: &[&str], timeout: Duration) -> Result<Output, ConnectorError> {
        let Some((program, args)) = argv.split_first() else {
            return Err(ConnectorError::invalid("no command to run"));
        };
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.process_group(0);
        cmd.kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Output { status: NOT_FOUND_STATUS, stdout: String::new(), stderr: format!("{program}: command not found") });
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(ConnectorError::invalid(format!("cannot run `{program}`: permission denied (is it executable?)")).with_source(e));
            }
            Err(e) => return Err(ConnectorError::transient(format!("cannot start `{program}`: {e}")).with_source(e)),
        };
        let mut guard = GroupGuard(child.id());
        let (out, err) = (child.stdout.take(), child.stderr.take());
        let work = async {
            let (stdout, stderr) = tokio::join!(read_all(out), read_all(err));
            (stdout, stderr, child.wait().await)
        };
        let shown = argv.join(" ");
        let (stdout, stderr, status) = tokio::select! {
            r = work => r,
            () = self.cx.cancelled() => return Err(ConnectorError::cancelled(format!("cancelled while `{shown}` ran; it was killed"))),
            () = tokio::time::sleep(timeout) => {
                return Err(ConnectorError::timeout(format!("`{shown}` did not finish within {}s; it was killed", timeout.as_secs_f64())));
            }
        };
        guard.0 = None;
        let status = status.map_err(|e| ConnectorError::transient(format!("waiting for `{shown}`: {e}")).with_source(e))?;
        Ok(Output { status: status.code().unwrap_or(-1), stdout, stderr })
    }
}

/// A remote host whose GPUs an action looks at, reached over SSH with the ssh
/// connector's library (russh).
///
/// Either a string, `host`, `user@host` or `user@host:port`, or an object with the ssh
/// connector's target fields (`host`, `port`, `user`, `private_key_file`, `private_key`,
/// `password`, `passphrase`, `known_hosts`, `host_key_check`, `connect_timeout`). What a
/// step leaves out comes from the `ssh:` key of the `connectors: gpu:` block, which takes
/// the same keys as `connectors: ssh:`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum HostInput {
    /// `host`, `user@host` or `user@host:port`.
    Address(String),
    /// The ssh connector's target.
    Target(Box<SshTarget>),
}

impl HostInput {
    /// The target in the ssh connector's form: the string form split into its parts.
    ///
    /// # Errors
    /// `invalid` for an empty host or a port that is not a number.
    pub fn target(&self) -> Result<SshTarget, ConnectorError> {
        let t = match self {
            Self::Target(t) => (**t).clone(),
            Self::Address(s) => SshTarget::from_address(s)?,
        };
        if t.host.trim().is_empty() {
            return Err(ConnectorError::invalid("`host` is empty"));
        }
        Ok(t)
    }

    /// `host:port` (port 22 when not given): the machine's name in messages and in the
    /// allocation ledger.
    #[must_use]
    pub fn label(&self) -> String {
        match self.target() {
            Ok(t) => t.addr(),
            Err(_) => match self {
                Self::Address(s) => s.clone(),
                Self::Target(t) => t.host.clone(),
            },
        }
    }

    /// [`HostInput::label`] after filling in the `ssh:` settings (a port given there).
    #[must_use]
    pub fn label_with(&self, ssh_settings: &Value) -> String {
        match self.target() {
            Ok(mut t) => {
                // A bad block fails the connection with its own message; label what we have.
                let _ = t.merge_defaults(ssh_settings);
                t.addr()
            }
            Err(_) => self.label(),
        }
    }

    /// The fields needed to reach the host again (for an undo), without secrets:
    /// `host`, `port`, `user`, `private_key_file`, `known_hosts`.
    #[must_use]
    pub fn to_record(&self) -> Value {
        match self.target() {
            Ok(t) => json!({ "host": t.host, "port": t.port, "user": t.user, "private_key_file": t.private_key_file, "known_hosts": t.known_hosts }),
            Err(_) => Value::Null,
        }
    }

    /// The host [`HostInput::to_record`] wrote; `None` for `null` (this machine).
    ///
    /// # Errors
    /// `invalid` when the record is not a host.
    pub fn from_record(v: &Value) -> Result<Option<Self>, ConnectorError> {
        if v.is_null() {
            return Ok(None);
        }
        let compact: serde_json::Map<String, Value> = v.as_object().into_iter().flatten().filter(|(_, x)| !x.is_null()).map(|(k, x)| (k.clone(), x.clone())).collect();
        serde_json::from_value::<SshTarget>(Value::Object(compact))
            .map(|t| Some(Self::Target(Box::new(t))))
            .map_err(|e| ConnectorError::invalid(format!("recorded host {v} is not an ssh target: {e}")))
    }
}

/// Runs commands on a remote host over one SSH session.
pub struct RemoteExec {
    session: Session,
    label: String,
}

impl std::fmt::Debug for RemoteExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteExec").field("label", &self.label).finish_non_exhaustive()
    }
}

#[async_trait]
impl Exec for RemoteExec {
    fn target(&self) -> &str {
        &self.label
    }

    async fn run(&self, argv: &[&str], timeout: Duration) -> Result<Output, ConnectorError> {
        let command = shell_join(argv);
        // Dropping the exec (the timeout) ends the remote command, as the ssh connector does.
        let out = tokio::time::timeout(timeout, self.session.exec(&command))
            .await
            .map_err(|_| ConnectorError::timeout(format!("`{command}` on {} did not finish within {}s; it was stopped", self.label, timeout.as_secs_f64())))??;
        Ok(Output { status: out.code(), stdout: out.stdout, stderr: out.stderr })
    }
}

/// Where an action's commands run: `host` over SSH when given, else this machine.
///
/// The ssh connection settings a `host` leaves out come from the `ssh:` key of the
/// connector's settings (`connectors: gpu: ssh: {user: ubuntu, private_key_file: ...}`).
///
/// # Errors
/// A bad `host` or `ssh:` block (`invalid`), and the ssh connector's connection errors:
/// `transient` when the host cannot be reached, `auth` for a refused key or host key.
pub async fn executor(cx: &StepContext, host: Option<&HostInput>) -> Result<Box<dyn Exec>, ConnectorError> {
    let Some(h) = host else {
        return Ok(Box::new(LocalExec::new(cx)));
    };
    let mut target = h.target()?;
    target.merge_defaults(cx.settings.get("ssh").unwrap_or(&Value::Null)).map_err(|e| ConnectorError::invalid(format!("connectors.gpu.ssh: {}", e.message)))?;
    let session = Session::connect(cx, &target).await?;
    Ok(Box::new(RemoteExec { label: target.addr(), session }))
}

/// Quote `argv` for a POSIX shell (a remote `exec` takes one command line).
#[must_use]
pub fn shell_join(argv: &[&str]) -> String {
    argv.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ")
}

/// One word quoted for a POSIX shell; plain words stay as they are.
#[must_use]
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ',' | '=' | ':' | '+' | '@' | '%'));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_strings_are_split() {
        let t = HostInput::Address("ubuntu@gpu-1.example:2222".into()).target().unwrap();
        assert_eq!((t.user.as_deref(), t.host.as_str(), t.port), (Some("ubuntu"), "gpu-1.example", Some(2222)));
        let t = HostInput::Address("10.0.0.5".into()).target().unwrap();
        assert_eq!((t.user, t.host.as_str(), t.port), (None, "10.0.0.5", None));
        let t = HostInput::Address("root@[::1]:22".into()).target().unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", Some(22)));
        let t = HostInput::Address("fe80::1".into()).target().unwrap();
        assert_eq!((t.host.as_str(), t.port), ("fe80::1", None));
        assert!(HostInput::Address("h:port".into()).target().is_err());
        assert!(HostInput::Address(String::new()).target().is_err());
        assert_eq!(HostInput::Address("u@h:2".into()).label(), "h:2");
        assert_eq!(HostInput::Address("h".into()).label(), "h:22");
        assert_eq!(HostInput::Address("h".into()).label_with(&serde_json::json!({"port": 2222})), "h:2222");
        assert_eq!(HostInput::Address("h:23".into()).label_with(&serde_json::json!({"port": 2222})), "h:23");
    }

    #[test]
    fn host_objects_are_ssh_targets_and_records_keep_no_secret() {
        let h: HostInput = serde_json::from_value(serde_json::json!({"host": "h", "port": 2200, "user": "u", "password": "hunter2"})).unwrap();
        assert_eq!(h.label(), "h:2200");
        let rec = h.to_record();
        assert!(!rec.to_string().contains("hunter2"), "{rec}");
        let back = HostInput::from_record(&rec).unwrap().unwrap().target().unwrap();
        assert_eq!((back.host.as_str(), back.port, back.user.as_deref(), back.password.is_none()), ("h", Some(2200), Some("u"), true));
        assert!(HostInput::from_record(&Value::Null).unwrap().is_none());
        assert!(serde_json::from_value::<HostInput>(serde_json::json!({"host": "h", "pasword": "x"})).is_err());
    }

    #[test]
    fn words_are_quoted_for_a_shell() {
        assert_eq!(shell_join(&["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader,nounits"]), "nvidia-smi --query-gpu=index,uuid --format=csv,noheader,nounits");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b;rm -rf /"), "'a b;rm -rf /'");
    }

    #[tokio::test]
    async fn local_commands_report_status_and_output() {
        let cx = StepContext::detached("t");
        let ex = LocalExec::new(&cx);
        let out = ex.run(&["sh", "-c", "echo out; echo err >&2; exit 3"], Duration::from_secs(10)).await.unwrap();
        assert_eq!((out.status, out.stdout.as_str(), out.stderr.as_str()), (3, "out\n", "err\n"));
        assert_eq!(out.text(100), "out\nerr");
        let out = ex.run(&["/nonexistent/nvidia-smi"], Duration::from_secs(10)).await.unwrap();
        assert_eq!(out.status, NOT_FOUND_STATUS);
        let e = ex.run(&["sleep", "5"], Duration::from_millis(100)).await.unwrap_err();
        assert_eq!(e.kind, engine_connector::ErrorKind::Timeout);
    }

    #[tokio::test]
    async fn an_unreachable_host_is_a_connection_error() {
        let mut cx = StepContext::detached("t");
        cx.settings = serde_json::json!({"ssh": {"connect_timeout": "2s", "host_key_check": "off"}});
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let e = executor(&cx, Some(&HostInput::Address(format!("127.0.0.1:{port}")))).await.err().unwrap();
        assert_eq!(e.kind, engine_connector::ErrorKind::Transient, "{e}");
        cx.settings = serde_json::json!({"ssh": {"bogus": 1}});
        let e = executor(&cx, Some(&HostInput::Address("h".into()))).await.err().unwrap();
        assert_eq!(e.kind, engine_connector::ErrorKind::Invalid);
        assert!(e.message.contains("connectors.gpu.ssh"), "{}", e.message);
        assert!(executor(&cx, None).await.is_ok());
    }
}
