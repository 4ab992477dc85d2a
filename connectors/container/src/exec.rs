//! `container.exec`: run a command in a running container.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use engine_connector::{Action, ConnectorError, StepContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::client::{Clients, Conn};
use crate::error::Error;
use crate::ops::{drain, exit_error, masked, Captured};
use crate::spec::{check_env, env_lines, Command};

fn yes() -> bool {
    true
}

/// Input of `container.exec`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecInput {
    /// The Docker daemon for this step: `unix:///path`, `tcp://HOST:PORT`, or
    /// `ssh://user@host[:port][/socket]` (through the ssh connector, to the remote
    /// `/var/run/docker.sock` unless a path is given). Default: the `connectors: container:`
    /// block's `host`, then `DOCKER_HOST`, then the local socket.
    #[serde(default)]
    pub host: Option<String>,
    /// The container: name or id. It must be running.
    pub container: String,
    /// The command: a list, or a line split into words like a shell does (no variables or pipes:
    /// `[sh, -c, "..."]` for those).
    pub command: Command,
    /// Extra environment variables.
    #[serde(default)]
    pub env: engine_core::env::EnvMap,
    /// Run as this user (default: the container's).
    #[serde(default)]
    pub user: Option<String>,
    /// Working directory (default: the container's).
    #[serde(default)]
    pub workdir: Option<String>,
    /// Run with extended privileges.
    #[serde(default)]
    pub privileged: bool,
    /// Fail the step when the exit code is not 0 (default true).
    #[serde(default = "yes")]
    pub check: bool,
}

/// Output of `container.exec`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ExecOutput {
    /// Exit code.
    pub exit_code: i64,
    /// Standard output (first MiB).
    pub stdout: String,
    /// Standard error (first MiB).
    pub stderr: String,
}

/// `container.exec`: run a command inside a running container.
///
/// ## What it does
/// `POST /containers/{id}/exec` then `/exec/{id}/start`, attached: each output line goes to the
/// step log, and the exit code, stdout and stderr are the outputs. A non-zero exit fails the step
/// (`transient`; `invalid` for 126 and 127) unless `check: false`.
///
/// ## Undo
/// Nothing: an exec leaves nothing to remove.
///
/// ## Errors
/// - `not_found`: no such container.
/// - `conflict`: the container is not running.
/// - `invalid`: the executable does not exist in the container (126/127).
/// - `transient`: a non-zero exit; the daemon cannot be reached.
/// - `cancelled`: the step was cancelled. Docker cannot kill an exec: the command may go on
///   inside the container.
///
/// ## Example
/// ```yaml
/// pull-model:
///   uses: container.exec
///   with: { container: ollama, command: "ollama pull llama3.1:8b" }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Exec {
    pub(crate) clients: Arc<Clients>,
}

/// Run `argv` in `container` and collect its output and exit code.
pub(crate) async fn exec(conn: &Conn, cx: &StepContext, container: &str, input: &ExecInput) -> Result<(i64, Captured), Error> {
    let argv = input.command.argv()?;
    let what = format!("running `{}` in container {container}", argv.join(" "));
    let config = ExecConfig {
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        cmd: Some(argv),
        env: (!input.env.is_empty()).then(|| env_lines(&input.env)),
        user: input.user.clone(),
        working_dir: input.workdir.clone(),
        privileged: Some(input.privileged),
        ..Default::default()
    };
    let created = conn.docker.create_exec(container, config).await.map_err(|e| conn.err(&what, e))?;
    let started = conn.docker.start_exec(&created.id, Some(StartExecOptions { detach: false, tty: false, output_capacity: None }));
    let mut cap = Captured::default();
    let work = async {
        match started.await.map_err(|e| conn.err(&what, e))? {
            StartExecResults::Attached { output, .. } => drain(conn, cx, &what, output, &mut cap).await,
            StartExecResults::Detached => Ok(()),
        }
    };
    tokio::select! {
        r = work => r?,
        () = cx.cancelled() => return Err(Error::Cancelled(format!("cancelled while {what}; the command may still run inside the container"))),
    }
    // The output ends when the process does; its exit code is set a moment later.
    for _ in 0..100 {
        let inspected = conn.docker.inspect_exec(&created.id).await.map_err(|e| conn.err(&what, e))?;
        if inspected.running != Some(true) {
            if let Some(code) = inspected.exit_code {
                return Ok((code, cap));
            }
        }
        cx.sleep(Duration::from_millis(20)).await.map_err(|e| Error::Cancelled(e.message))?;
    }
    Err(Error::failed(engine_connector::ErrorKind::Transient, format!("{what}: the output ended but Docker reports no exit code after 2s")))
}

#[async_trait]
impl Action for Exec {
    const ID: &'static str = "container.exec";
    const DESCRIPTION: &'static str = "run a command in a running container; outputs exit_code, stdout, stderr";
    type Input = ExecInput;
    type Output = ExecOutput;

    fn validate(&self, input: &ExecInput) -> Result<(), ConnectorError> {
        if input.container.trim().is_empty() {
            return Err(ConnectorError::invalid("`container` is empty"));
        }
        input.command.argv()?;
        check_env(&input.env)?;
        Ok(())
    }

    async fn run(&self, input: ExecInput, cx: &StepContext) -> Result<ExecOutput, ConnectorError> {
        let conn = self.clients.connect(cx, input.host.as_deref()).await.map_err(|e| masked(cx, e))?;
        cx.progress("exec", Some(20));
        let (exit_code, cap) = exec(&conn, cx, &input.container, &input).await.map_err(|e| masked(cx, e))?;
        cx.progress("done", Some(100));
        if exit_code != 0 && input.check {
            let argv = input.command.argv()?;
            return Err(masked(cx, exit_error(&format!("`{}` in container {}", argv.join(" "), input.container), exit_code, false, &cap.tail(cx))));
        }
        Ok(ExecOutput { exit_code, stdout: cap.stdout, stderr: cap.stderr })
    }
}
