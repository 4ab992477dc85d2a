//! `ssh.run`.
//!
//! ## What it does
//! Connects to `host` (host key checked, see the crate docs), then runs `command` with
//! `sh -c` (or `shell`), or uploads the local file `script` (relative to the workflow's
//! directory) to a private temporary file on the host and runs it: with the interpreter of
//! its `#!` line, else with the shell; the file is removed afterwards. `args` become `$1`...;
//! `env` becomes `export NAME='value'` assignments that the command sources first (sshd's
//! `AcceptEnv` drops most variables sent as SSH `env` requests, so they are not sent that
//! way); they travel in a private temporary file, sourced and removed at once, so that
//! secret values never appear on a command line other users could see with `ps` (`args`
//! do: pass secrets in `env`); `cwd` is the remote working directory; `sudo: true` runs it all as root with `sudo -n` (never prompts). Every output
//! line goes to the step log as it arrives, secrets masked.
//!
//! ## Undo
//! Nothing is created; give the step a `cleanup:` to undo what the command did.
//!
//! ## Errors
//! Non-zero exit: `invalid`, with the exit code and the last lines of standard error (not
//! retried unless the step says `retry: {on: [invalid]}`; `check: false` returns it as an
//! output instead). Killed by a signal: `transient`. `sudo` wants a password or the user may
//! not use it: `auth`. `sudo` missing: `invalid`. Connection errors as for every `ssh.*`
//! action. Cancelled (or the step's timeout): the remote process group gets `SIGTERM`, then
//! `SIGKILL`, and the channel is closed.
//!
//! ## Example
//! ```yaml
//! install:
//!   uses: ssh.run
//!   with:
//!     host: ${{ steps.server.outputs.public_ip }}
//!     user: ${{ steps.server.outputs.ssh_user }}
//!     private_key: ${{ secrets.ssh_key }}
//!     script: ./scripts/install-worker.sh
//!     args: [--gpu]
//!     env: { MODEL: llama3 }
//!     sudo: true
//! ```


use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, StepContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::session::{shell_quote, ExecOutput, Session};
use crate::target::SshTarget;

/// Most bytes of each stream kept in the step's outputs (the log gets everything).
const MAX_OUTPUT: usize = 1 << 20;

/// Input of `ssh.run`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SshRunInput {
    /// Where to connect and how to log in.
    #[serde(flatten)]
    pub target: SshTarget,
    /// A command line, run on the host with `sh -c` (or `shell`).
    #[serde(default)]
    pub command: Option<String>,
    /// A local script file (relative to the workflow's directory), uploaded and run on the
    /// host with the interpreter of its `#!` line, else with the shell.
    #[serde(default)]
    pub script: Option<String>,
    /// Arguments, as `$1`, `$2`... of the command or the script.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables, exported in front of the command (names: letters, digits, `_`).
    #[serde(default)]
    pub env: engine_core::env::EnvMap,
    /// Remote working directory (default: the user's home).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Run as root with `sudo -n` (the user needs password-less sudo; a password prompt fails
    /// the step with `auth`).
    #[serde(default)]
    pub sudo: bool,
    /// The shell on the host (default `sh`).
    #[serde(default)]
    pub shell: Option<String>,
    /// Text written to the command's standard input.
    #[serde(default)]
    pub stdin: Option<String>,
    /// Fail the step when the exit code is not 0 (default true).
    #[serde(default)]
    pub check: Option<bool>,
}

/// Output of `ssh.run`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SshRunOutput {
    /// Exit code (-1 when killed by a signal).
    pub exit_code: i32,
    /// Standard output (first MiB).
    pub stdout: String,
    /// Standard error (first MiB).
    pub stderr: String,
    /// The signal that killed the command (`TERM`, `KILL`...), when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// SHA-256 fingerprint of the host key the connection was checked against.
    pub host_key: String,
}

/// `ssh.run`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SshRun;

/// A valid environment variable name.
pub(crate) fn valid_env_name(k: &str) -> bool {
    let mut chars = k.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The interpreter and its one optional argument from a `#!` line, as the kernel reads it.
pub(crate) fn shebang(script: &[u8]) -> Option<Vec<String>> {
    let first = script.strip_prefix(b"#!")?;
    let end = first.iter().position(|&b| b == b'\n').unwrap_or(first.len());
    let line = String::from_utf8_lossy(&first[..end]);
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    match line.split_once([' ', '\t']) {
        Some((interp, arg)) if !arg.trim().is_empty() => Some(vec![interp.to_string(), arg.trim().to_string()]),
        _ => Some(vec![line.split([' ', '\t']).next().unwrap_or(line).to_string()]),
    }
}

/// `export NAME='value'` lines for `env`.
pub(crate) fn exports(env: &engine_core::env::EnvMap) -> String {
    env.iter().map(|(k, v)| format!("export {k}={}\n", shell_quote(v.as_str()))).collect()
}

/// Write `content` to a new private file (mode 0600) in the host's temporary directory;
/// returns its path.
async fn stage(session: &Session, content: &[u8], what: &str) -> Result<String, ConnectorError> {
    let put = format!("umask 077; f=$(mktemp \"${{TMPDIR:-/tmp}}/engine-ssh-{what}.XXXXXXXXXX\") && cat > \"$f\" && printf '%s\\n' \"$f\"");
    let mut input = content;
    let out = session.exec_inner(&format!("sh -c {}", shell_quote(&put)), Some(&mut input), false).await?;
    let remote = out.stdout.trim().to_string();
    if !out.success() || remote.is_empty() {
        return Err(session.failure(&out, &format!("staging the {what} file")).map_or_else(
            || ConnectorError::transient(format!("staging the {what} file on {} gave no file name", session.addr())),
            ConnectorError::from,
        ));
    }
    Ok(remote)
}

/// What the remote login shell is given: `[sudo -n --] SHELL -c 'SETUP cd; BODY' SHELL ARGS...`.
pub(crate) fn remote_command(shell: &str, setup: &str, cwd: Option<&str>, body: &str, args: &[String], sudo: bool) -> String {
    let mut inner = setup.to_string();
    if let Some(dir) = cwd {
        let target = match dir.strip_prefix("~/") {
            Some(rest) => format!("\"$HOME\"/{}", shell_quote(rest)),
            None if dir == "~" => "\"$HOME\"".to_string(),
            None => shell_quote(dir),
        };
        inner.push_str(&format!("cd -- {target} || exit 1; "));
    }
    inner.push_str(body);
    let mut cmd = format!("{} -c {} {}", shell_quote(shell), shell_quote(&inner), shell_quote(shell));
    for a in args {
        cmd.push(' ');
        cmd.push_str(&shell_quote(a));
    }
    if sudo {
        format!("sudo -n -- {cmd}")
    } else {
        cmd
    }
}

/// Recognise `sudo -n` refusing to run: it wants a password, or the user may not use it.
pub(crate) fn sudo_failure(out: &ExecOutput, addr: &str, user: &str) -> Option<Error> {
    let err = &out.stderr;
    let code = out.exit_code?;
    if code == 1 && (err.contains("sudo: a password is required") || err.contains("sudo: a terminal is required")) {
        return Some(Error::Sudo(format!(
            "sudo on {addr} wants a password for `{user}`, and `sudo -n` never prompts: allow `{user}` password-less sudo \
             (NOPASSWD in sudoers) or log in as root"
        )));
    }
    if code == 1 && (err.contains("is not in the sudoers file") || err.contains("may not run sudo") || err.contains("is not allowed to execute")) {
        return Some(Error::Sudo(format!("`{user}` may not use sudo on {addr}: {}", out.stderr_tail(1))));
    }
    if code == 127 && err.contains("sudo") && err.contains("not found") {
        return Some(Error::Config(format!("sudo is not installed on {addr}")));
    }
    None
}

/// Cut a string to at most `max` bytes, on a character boundary.
fn capped(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[async_trait]
impl Action for SshRun {
    const ID: &'static str = "ssh.run";
    const DESCRIPTION: &'static str = "run a command or a local script on a host over SSH; outputs exit_code, stdout, stderr";
    type Input = SshRunInput;
    type Output = SshRunOutput;

    fn validate(&self, input: &SshRunInput) -> Result<(), ConnectorError> {
        input.target.validate()?;
        match (&input.command, &input.script) {
            (Some(_), Some(_)) => return Err(ConnectorError::invalid("give `command` or `script`, not both")),
            (None, None) => return Err(ConnectorError::invalid("give `command` (a command line) or `script` (a local file)")),
            _ => {}
        }
        if let Some(k) = input.env.keys().find(|k| !valid_env_name(k)) {
            return Err(ConnectorError::invalid(format!("`env` name `{k}` is not a variable name (letters, digits and `_`, not first a digit)")));
        }
        if input.shell.as_deref().is_some_and(|s| s.trim().is_empty()) {
            return Err(ConnectorError::invalid("`shell` is empty"));
        }
        Ok(())
    }

    async fn run(&self, mut input: SshRunInput, cx: &StepContext) -> Result<SshRunOutput, ConnectorError> {
        input.target.merge_defaults(&cx.settings)?;
        input.target.validate()?;
        let shell = input.shell.clone().unwrap_or_else(|| "sh".into());
        // Read the script before connecting: a missing file is the step's fault, not the host's.
        let script = match &input.script {
            Some(s) => {
                let path = cx.workflow_dir.join(s);
                let bytes = tokio::fs::read(&path).await.map_err(|e| ConnectorError::invalid(format!("cannot read script {}: {e}", path.display())))?;
                Some((path, bytes))
            }
            None => None,
        };

        cx.progress("connecting", Some(5));
        let session = Session::connect(cx, &input.target).await?;
        let addr = session.addr().to_string();

        // Values of `env` may be secrets: they go to the host in a private file that the
        // command sources and removes, never on a command line that `ps` would show.
        let setup = if input.env.is_empty() {
            String::new()
        } else {
            let file = shell_quote(&stage(&session, exports(&input.env).as_bytes(), "env").await?);
            format!(". {file}; rm -f -- {file}; ")
        };
        let (body, what) = if let Some((path, bytes)) = &script {
            cx.progress("uploading script", Some(15));
            let q = shell_quote(&stage(&session, bytes, "script").await?);
            let run = match shebang(bytes) {
                Some(interp) => interp.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" "),
                None => shell_quote(&shell),
            };
            // The EXIT trap removes the file; the TERM/INT/HUP traps make a cancelled run
            // reach it too.
            let body = format!("trap 'rm -f -- {q}' EXIT; trap 'exit 143' TERM; trap 'exit 130' INT; trap 'exit 129' HUP; {run} {q} \"$@\"");
            (body, format!("script {}", path.display()))
        } else {
            (input.command.clone().unwrap_or_default(), "the command".to_string())
        };
        let command = remote_command(&shell, &setup, input.cwd.as_deref(), &body, &input.args, input.sudo);

        cx.progress("running", Some(25));
        let out = match &input.stdin {
            Some(text) => session.exec_inner(&command, Some(&mut text.as_bytes()), true).await?,
            None => session.exec_inner(&command, None, true).await?,
        };
        if input.sudo {
            if let Some(e) = sudo_failure(&out, &addr, session.user()) {
                return Err(e.into());
            }
        }
        if input.check.unwrap_or(true) {
            if let Some(e) = session.failure(&out, &what) {
                return Err(e.into());
            }
        }
        cx.progress("done", Some(100));
        let host_key = session.host_key().fingerprint.clone();
        session.close().await;
        Ok(SshRunOutput {
            exit_code: out.code(),
            stdout: capped(out.stdout, MAX_OUTPUT),
            stderr: capped(out.stderr, MAX_OUTPUT),
            signal: out.signal,
            host_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_input_takes_the_target_flat_and_refuses_unknown_keys() {
        let i: SshRunInput = serde_json::from_value(json!({"host": "h", "port": 2222, "command": "true", "sudo": true})).unwrap();
        assert_eq!(i.target.port(), 2222);
        assert!(i.sudo);
        let e = serde_json::from_value::<SshRunInput>(json!({"host": "h", "command": "true", "sudoo": true})).unwrap_err();
        assert!(e.to_string().contains("sudoo"), "{e}");
        let schema = engine_connector::schema_of::<SshRunInput>();
        assert_eq!(schema["additionalProperties"], json!(false));
        assert!(schema["properties"]["host"].is_object() && schema["properties"]["command"].is_object());
        assert_eq!(schema["properties"]["password"]["writeOnly"], json!(true));
        assert_eq!(schema["required"], json!(["host"]));
    }

    #[test]
    fn validate() {
        let i = |v: serde_json::Value| serde_json::from_value::<SshRunInput>(v).unwrap();
        assert!(SshRun.validate(&i(json!({"host": "h"}))).is_err());
        assert!(SshRun.validate(&i(json!({"host": "h", "command": "a", "script": "b"}))).is_err());
        assert!(SshRun.validate(&i(json!({"host": "h", "command": "a", "env": {"1X": "v"}}))).is_err());
        assert!(SshRun.validate(&i(json!({"host": "h", "command": "a", "env": {"MY_VAR2": "v"}}))).is_ok());
    }

    #[test]
    fn commands_are_quoted_once_for_the_login_shell() {
        // What the login shell receives is run here by a real `sh`.
        let env = engine_core::env::EnvMap::from([("A".to_string(), "it's $HOME".into())]);
        let body = r#"printf '%s|%s|%s|%s' "$A" "$1" "$2" "$(pwd)""#;
        let c = remote_command("sh", &exports(&env), Some("~/bin"), body, &["x y".into(), "'q'".into()], false);
        let out = std::process::Command::new("sh").arg("-c").arg(&c).env("HOME", "/usr").output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "it's $HOME|x y|'q'|/usr/bin", "{c}");
        assert!(remote_command("sh", "", None, "true", &[], true).starts_with("sudo -n -- sh -c "));
        assert_eq!(remote_command("bash", "", None, "true", &[], false), "bash -c true bash");
    }

    #[test]
    fn shebang_lines() {
        assert_eq!(shebang(b"#!/bin/sh\necho"), Some(vec!["/bin/sh".into()]));
        assert_eq!(shebang(b"#! /usr/bin/env python3 \nx"), Some(vec!["/usr/bin/env".into(), "python3".into()]));
        assert_eq!(shebang(b"#!/bin/bash -eu\n"), Some(vec!["/bin/bash".into(), "-eu".into()]));
        assert_eq!(shebang(b"echo hi\n"), None);
        assert_eq!(shebang(b"#!\n"), None);
    }

    #[test]
    fn sudo_refusals_are_recognised() {
        let out = |code, err: &str| ExecOutput { exit_code: Some(code), stderr: err.into(), ..ExecOutput::default() };
        let e = sudo_failure(&out(1, "sudo: a password is required\n"), "h:22", "bob").unwrap();
        assert_eq!(e.kind(), engine_connector::ErrorKind::Auth);
        assert!(e.to_string().contains("password") && e.to_string().contains("bob"));
        assert_eq!(sudo_failure(&out(127, "sh: 1: sudo: not found\n"), "h:22", "bob").unwrap().kind(), engine_connector::ErrorKind::Invalid);
        assert!(sudo_failure(&out(1, "grep: nothing\n"), "h:22", "bob").is_none());
        assert_eq!(capped("héllo".into(), 2), "h");
    }
}
