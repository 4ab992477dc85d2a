//! The `ssh` connector: wait for a host to accept a login, run commands and scripts on it,
//! upload files to it; and the library other connectors use to reach a host over SSH
//! (`gpu` runs `nvidia-smi` through [`Session::exec`], `container` reaches the remote Docker
//! socket through [`Session::open_unix_socket`]). Built on `russh` (pure Rust, `ring`).
//!
//! ## Actions
//! | action | does | outputs |
//! |---|---|---|
//! | `ssh.wait` | connect and log in every `interval` until it works or `within` passes | `host, port, user, attempts, waited_s, host_key, host_key_trust` |
//! | `ssh.run` | `command`, or a local `script` uploaded and run; `args`, `env`, `cwd`, `sudo`, `stdin`, `check`; output lines stream to the step log | `exit_code, stdout, stderr, signal, host_key` |
//! | `ssh.upload` | a local `source` file or inline `content` to `path`, `mode`, `create_dirs`, `sudo`; checked by size and SHA-256 | `path, size, sha256, mode, checksum_verified` |
//!
//! Every input also takes the connection keys of [`SshTarget`] (`host`, `port`, `user`,
//! `private_key_file`, `private_key`, `password`, `passphrase`, `known_hosts`,
//! `host_key_check`, `connect_timeout`); the workflow's `connectors: ssh:` block
//! ([`SshSettings`]) gives defaults for all but `host`.
//!
//! ## Host keys
//! Checked on every connection, before any credential is sent:
//! - a host listed in `known_hosts` (default `~/.ssh/known_hosts`; hashed names,
//!   `[host]:port`, wildcards, negation and `@revoked` are understood) must present a key
//!   listed for it; a mismatch fails naming the host, the file and line, and both
//!   `SHA256:` fingerprints;
//! - a host that is not listed: with `host_key_check: pin` (the default) the first key seen
//!   is pinned in the run state (`cx.pin("ssh-host-key:HOST:PORT", fingerprint)`), and every
//!   later connection of the run (retries, other steps, after a resume) must see the same
//!   key; `strict` refuses it; `off` accepts anything, with a warning in the log.
//!
//! Host key failures are of kind `auth` (the server failed to prove who it is), like refused
//! credentials: the engine does not retry them.
//!
//! ## Errors
//! Connection refused, reset or timed out: `transient`. Host key not trusted, credentials
//! refused, `sudo` wanting a password: `auth`. Unreadable key, bad setting, a remote command
//! exiting non-zero: `invalid`. A remote command killed by a signal: `transient`. A wait past
//! its limit: `timeout`. No message holds a password, passphrase or private key.
//!
//! ## Environment variables
//! `env` of `ssh.run` is sent as `export NAME='value'` assignments that the command sources
//! before it runs, not as SSH `env` requests: sshd accepts those only for the names its
//! `AcceptEnv` lists (by default `LANG` and `LC_*`) and drops the rest silently. The
//! assignments travel in a private (0600) temporary file, sourced and removed at once, so a
//! secret value is never on a command line that another user of the host could read with
//! `ps`.

mod error;
mod known_hosts;
mod run;
mod session;
mod target;
mod transfer;
mod upload;
mod wait;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

use std::sync::Arc;

use engine_connector::{Connector, DynAction};

pub use error::Error;
pub use known_hosts::fingerprint;
pub use run::{SshRun, SshRunInput, SshRunOutput};
pub use session::{shell_quote, ExecOutput, HostKey, HostKeyTrust, RemoteStream, Session, MAX_CAPTURE};
pub use target::{HostKeyCheck, SshSettings, SshTarget, DEFAULT_CONNECT_TIMEOUT, DEFAULT_PORT, DEFAULT_USER};
pub use transfer::{UploadOptions, UploadSource, Uploaded};
pub use upload::{SshUpload, SshUploadInput, SshUploadOutput};
pub use wait::{SshWait, SshWaitInput, SshWaitOutput};

/// The `ssh` connector.
#[derive(Debug, Default, Clone)]
pub struct SshConnector;

impl Connector for SshConnector {
    fn name(&self) -> &'static str {
        "ssh"
    }
    fn description(&self) -> &'static str {
        "remote hosts over SSH: wait for a login, run commands and scripts, upload files"
    }
    fn actions(&self) -> Vec<Arc<dyn DynAction>> {
        vec![Arc::new(SshWait), Arc::new(SshRun), Arc::new(SshUpload)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_belong_to_the_connector_and_publish_schemas() {
        let c = SshConnector;
        let ids: Vec<&str> = c.actions().iter().map(|a| a.id()).collect();
        assert_eq!(ids, ["ssh.wait", "ssh.run", "ssh.upload"]);
        for a in c.actions() {
            assert!(a.id().starts_with("ssh."));
            assert_eq!(a.input_schema()["additionalProperties"], serde_json::json!(false), "{}", a.id());
            assert!(a.input_schema()["properties"]["host_key_check"].is_object(), "{}", a.id());
        }
        let run = SshRun;
        assert_eq!(DynAction::output_names(&run), ["exit_code", "stdout", "stderr", "signal", "host_key"]);
    }
}
