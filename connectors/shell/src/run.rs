//! `shell.run`.
//!
//! ## What it does
//! Runs `command` with `sh -c` (or `shell`), or uploads nothing and runs the local
//! file `script` with the shell. Output lines go to the step log as they come.
//!
//! ## Undo
//! Nothing is created; give the step a `cleanup: {uses: shell.run, with: ...}` to
//! undo what the command made.
//!
//! ## Errors
//! Non-zero exit: `transient` (retried when the step asks for retries); 126/127:
//! `invalid`; the shell cannot be started: `invalid`; cancelled: `cancelled`.
//!
//! ## Example
//! ```yaml
//! build:
//!   uses: shell.run
//!   with: { command: "make -C ${{ workflow.dir }} all", env: { JOBS: "4" } }
//! ```

use std::process::Stdio;

use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, LogStream, StepContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// Most bytes of each stream kept in the outputs.
const MAX_CAPTURE: usize = 1 << 20;

/// Input of `shell.run`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShellRunInput {
    /// A command line, run with `sh -c`.
    #[serde(default)]
    pub command: Option<String>,
    /// A local script file, run with the shell (relative to the workflow's directory).
    #[serde(default)]
    pub script: Option<String>,
    /// Arguments passed to the script (or to the command, as `$1`...).
    #[serde(default)]
    pub args: Vec<String>,
    /// The shell (default `sh`).
    #[serde(default)]
    pub shell: Option<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: engine_core::env::EnvMap,
    /// Working directory (default: the workflow's directory).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Text written to standard input.
    #[serde(default)]
    pub stdin: Option<String>,
    /// Fail the step when the exit code is not 0 (default true).
    #[serde(default)]
    pub check: Option<bool>,
}

/// Output of `shell.run`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ShellRunOutput {
    /// Exit code (-1 when killed by a signal).
    pub exit_code: i32,
    /// Standard output (first MiB).
    pub stdout: String,
    /// Standard error (first MiB).
    pub stderr: String,
}

/// `shell.run`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShellRun;

async fn pump<R: AsyncRead + Unpin>(r: R, stream: LogStream, cx: &StepContext) -> String {
    let mut reader = BufReader::new(r);
    let mut out = String::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                cx.log(stream, text.trim_end_matches(['\n', '\r']));
                if out.len() < MAX_CAPTURE {
                    out.push_str(&text);
                }
            }
        }
    }
    out
}

#[async_trait]
impl Action for ShellRun {
    const ID: &'static str = "shell.run";
    const DESCRIPTION: &'static str = "run a local command or script; outputs exit_code, stdout, stderr";
    type Input = ShellRunInput;
    type Output = ShellRunOutput;

    fn validate(&self, input: &ShellRunInput) -> Result<(), ConnectorError> {
        match (&input.command, &input.script) {
            (Some(_), Some(_)) => Err(ConnectorError::invalid("give `command` or `script`, not both")),
            (None, None) => Err(ConnectorError::invalid("give `command` (a command line) or `script` (a local file)")),
            _ => Ok(()),
        }
    }

    async fn run(&self, input: ShellRunInput, cx: &StepContext) -> Result<ShellRunOutput, ConnectorError> {
        let shell = input.shell.as_deref().unwrap_or("sh");
        let mut cmd = Command::new(shell);
        let shown = if let Some(c) = &input.command {
            cmd.arg("-c").arg(c).arg(shell);
            c.clone()
        } else {
            let s = input.script.as_deref().unwrap_or_default();
            let path = cx.workflow_dir.join(s);
            if !path.is_file() {
                return Err(ConnectorError::invalid(format!("script `{}` not found", path.display())));
            }
            cmd.arg(&path);
            path.display().to_string()
        };
        cmd.args(&input.args);
        cmd.envs(&input.env);
        cmd.current_dir(input.cwd.as_ref().map_or_else(|| cx.workflow_dir.clone(), |c| cx.workflow_dir.join(c)));
        cmd.stdin(if input.stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.process_group(0);
        cmd.kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| ConnectorError::invalid(format!("cannot start `{shell}`: {e}")).with_source(e))?;
        let pid = child.id();
        if let (Some(text), Some(mut w)) = (input.stdin.clone(), child.stdin.take()) {
            tokio::spawn(async move {
                let _ = w.write_all(text.as_bytes()).await;
            });
        }
        let out = child.stdout.take();
        let err = child.stderr.take();
        let work = async {
            let (stdout, stderr) = tokio::join!(
                async {
                    match out {
                        Some(o) => pump(o, LogStream::Stdout, cx).await,
                        None => String::new(),
                    }
                },
                async {
                    match err {
                        Some(e) => pump(e, LogStream::Stderr, cx).await,
                        None => String::new(),
                    }
                }
            );
            let status = child.wait().await;
            (stdout, stderr, status)
        };
        // Kill the process group if this future is dropped (timeout) or cancelled.
        struct Guard(Option<u32>);
        impl Drop for Guard {
            fn drop(&mut self) {
                if let Some(pid) = self.0.take() {
                    // The child leads its own process group: kill all of it.
                    engine_connector::signal_process_group(pid, "KILL");
                }
            }
        }
        let mut guard = Guard(pid);
        let (stdout, stderr, status) = tokio::select! {
            r = work => r,
            () = cx.cancelled() => return Err(ConnectorError::cancelled("cancelled; the command's process group was killed")),
        };
        guard.0 = None;
        let status = status.map_err(|e| ConnectorError::transient(format!("waiting for `{shown}`: {e}")))?;
        let exit_code = status.code().unwrap_or(-1);
        if exit_code != 0 && input.check.unwrap_or(true) {
            let tail: String = stderr.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
            let msg = format!(
                "command exited with {}{}",
                if exit_code == -1 { "a signal".to_string() } else { format!("code {exit_code}") },
                if tail.is_empty() { String::new() } else { format!(": {}", cx.masker.mask(&tail)) }
            );
            return Err(if exit_code == 126 || exit_code == 127 { ConnectorError::invalid(msg) } else { ConnectorError::transient(msg) });
        }
        Ok(ShellRunOutput { exit_code, stdout, stderr })
    }
}

#[cfg(test)]
mod tests {
    use engine_connector::{CancellationToken, ErrorKind, StepRef};

    use super::*;

    fn input(cmd: &str) -> ShellRunInput {
        serde_json::from_value(serde_json::json!({ "command": cmd })).unwrap()
    }

    #[tokio::test]
    async fn captures_output_and_exit_code() {
        let cx = StepContext::detached("s");
        let out = ShellRun.run(input("echo hi; echo err >&2"), &cx).await.unwrap();
        assert_eq!(out.exit_code, 0);
        assert_eq!(out.stdout, "hi\n");
        assert_eq!(out.stderr, "err\n");
    }

    #[tokio::test]
    async fn nonzero_exit_is_transient_and_127_is_invalid() {
        let cx = StepContext::detached("s");
        let e = ShellRun.run(input("echo boom >&2; exit 3"), &cx).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Transient);
        assert!(e.message.contains("code 3") && e.message.contains("boom"), "{}", e.message);
        let e = ShellRun.run(input("no-such-command-xyz"), &cx).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Invalid);
        let mut i = input("exit 4");
        i.check = Some(false);
        assert_eq!(ShellRun.run(i, &cx).await.unwrap().exit_code, 4);
    }

    #[tokio::test]
    async fn env_stdin_and_args() {
        let cx = StepContext::detached("s");
        let i: ShellRunInput = serde_json::from_value(serde_json::json!({
            "command": "read x; echo \"$x $FOO $1\"", "env": {"FOO": "bar"}, "stdin": "in\n", "args": ["a1"]
        }))
        .unwrap();
        assert_eq!(ShellRun.run(i, &cx).await.unwrap().stdout, "in bar a1\n");
    }

    #[tokio::test]
    async fn cancellation_kills_the_process_group() {
        let dir = std::env::temp_dir().join(format!("shell-cancel-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let token = CancellationToken::new();
        let cx = StepContext::new("r", StepRef { step: "s".into(), index: None }, token.clone(), std::sync::Arc::new(engine_connector::NullSink));
        let cmd = format!("(sleep 1; touch {}) & sleep 30", dir.display());
        let t = tokio::spawn(async move { ShellRun.run(input(&cmd), &cx).await });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        token.cancel();
        let e = t.await.unwrap().unwrap_err();
        assert_eq!(e.kind, ErrorKind::Cancelled);
        tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
        assert!(!dir.exists(), "the background child survived the cancellation");
    }

    #[test]
    fn validate_needs_exactly_one_of_command_and_script() {
        let both: ShellRunInput = serde_json::from_value(serde_json::json!({"command": "x", "script": "y"})).unwrap();
        assert!(ShellRun.validate(&both).is_err());
        let none: ShellRunInput = serde_json::from_value(serde_json::json!({})).unwrap();
        assert!(ShellRun.validate(&none).is_err());
    }
}
