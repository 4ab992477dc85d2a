//! `ssh.upload`.
//!
//! ## What it does
//! Writes a local file (`source`, relative to the workflow's directory) or inline `content`
//! to `path` on the host. The bytes go into a temporary file beside `path` (a local file is
//! streamed in chunks, never read whole), the host's size and SHA-256 of it are compared
//! with what was sent, and only then is it renamed over `path`, with `mode` (default: the
//! mode of the file it replaces, else `0644`). Missing parent directories are created
//! unless `create_dirs: false`; `sudo: true` writes as root.
//!
//! ## Undo
//! Nothing is recorded: the file is the step's result, as a `scp` would leave it. Remove it
//! with a `cleanup:` step if it must not outlive the run.
//!
//! ## Errors
//! `invalid`: no `source` nor `content` (or both), an unreadable `source`, a directory that
//! does not exist with `create_dirs: false`, permission denied on the host, `path` is a
//! directory. `auth`: `sudo` wants a password. `transient`: the content arrived damaged, or
//! the connection failed. `cancelled`.
//!
//! ## Example
//! ```yaml
//! config:
//!   uses: ssh.upload
//!   with:
//!     host: ${{ steps.server.outputs.public_ip }}
//!     source: ./files/vllm.service
//!     path: /etc/systemd/system/vllm.service
//!     mode: "0644"
//!     sudo: true
//! ```

use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, StepContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::session::Session;
use crate::target::SshTarget;
use crate::transfer::{UploadOptions, UploadSource};

/// Input of `ssh.upload`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SshUploadInput {
    /// Where to connect and how to log in.
    #[serde(flatten)]
    pub target: SshTarget,
    /// Remote path of the file to write (absolute, or relative to the user's home).
    pub path: String,
    /// A local file to upload (relative to the workflow's directory).
    #[serde(default)]
    pub source: Option<String>,
    /// The content to write, instead of `source`.
    #[serde(default)]
    pub content: Option<String>,
    /// Permission bits in octal (`"0644"`, `"755"`); default: those of the file replaced,
    /// else `0644`.
    #[serde(default)]
    pub mode: Option<String>,
    /// Create missing parent directories (default true).
    #[serde(default = "yes")]
    pub create_dirs: bool,
    /// Write as root with `sudo -n` (password-less sudo needed).
    #[serde(default)]
    pub sudo: bool,
}

fn yes() -> bool {
    true
}

/// Output of `ssh.upload`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SshUploadOutput {
    /// The remote path written.
    pub path: String,
    /// Bytes written.
    pub size: u64,
    /// SHA-256 of the content, lowercase hex.
    pub sha256: String,
    /// The file's mode on the host, four octal digits.
    pub mode: String,
    /// Whether the host's own SHA-256 was compared (false: it has no `sha256sum`, only the
    /// size was).
    pub checksum_verified: bool,
}

/// `ssh.upload`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SshUpload;

/// `"0644"`, `"755"`, `"0o600"` as permission bits.
pub(crate) fn parse_mode(m: &str) -> Result<u32, ConnectorError> {
    let digits = m.trim().trim_start_matches("0o");
    match u32::from_str_radix(digits, 8) {
        Ok(v) if !digits.is_empty() && v <= 0o7777 => Ok(v),
        _ => Err(ConnectorError::invalid(format!("`mode` `{m}` is not an octal file mode such as \"0644\""))),
    }
}

#[async_trait]
impl Action for SshUpload {
    const ID: &'static str = "ssh.upload";
    const DESCRIPTION: &'static str = "upload a local file or inline content to a host over SSH, checked by size and SHA-256";
    type Input = SshUploadInput;
    type Output = SshUploadOutput;

    fn validate(&self, input: &SshUploadInput) -> Result<(), ConnectorError> {
        input.target.validate()?;
        match (&input.source, &input.content) {
            (Some(_), Some(_)) => return Err(ConnectorError::invalid("give `source` or `content`, not both")),
            (None, None) => return Err(ConnectorError::invalid("give `source` (a local file) or `content` (the text to write)")),
            _ => {}
        }
        if input.path.trim().is_empty() || input.path.ends_with('/') {
            return Err(ConnectorError::invalid(format!("`path` `{}` must name a file", input.path)));
        }
        if let Some(m) = &input.mode {
            parse_mode(m)?;
        }
        Ok(())
    }

    async fn run(&self, mut input: SshUploadInput, cx: &StepContext) -> Result<SshUploadOutput, ConnectorError> {
        input.target.merge_defaults(&cx.settings)?;
        input.target.validate()?;
        let source = match (input.source, input.content) {
            (Some(s), _) => {
                let path = cx.workflow_dir.join(s);
                if !path.is_file() {
                    return Err(ConnectorError::invalid(format!("`source` {} is not a file", path.display())));
                }
                UploadSource::File(path)
            }
            (None, Some(text)) => UploadSource::Bytes(text.into_bytes()),
            (None, None) => return Err(ConnectorError::invalid("give `source` or `content`")),
        };
        let options = UploadOptions { mode: input.mode.as_deref().map(parse_mode).transpose()?, create_dirs: input.create_dirs, sudo: input.sudo };
        cx.progress("connecting", Some(0));
        let session = Session::connect(cx, &input.target).await?;
        let done = session.upload(source, &input.path, &options).await?;
        session.close().await;
        cx.progress("done", Some(100));
        Ok(SshUploadOutput { path: done.path, size: done.size, sha256: done.sha256, mode: done.mode, checksum_verified: done.checksum_verified })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0644").unwrap(), 0o644);
        assert_eq!(parse_mode("755").unwrap(), 0o755);
        assert_eq!(parse_mode("0o600").unwrap(), 0o600);
        assert!(parse_mode("rw-r--r--").is_err());
        assert!(parse_mode("99").is_err());
        assert!(parse_mode("").is_err());
    }

    #[test]
    fn validate() {
        let i = |v: serde_json::Value| serde_json::from_value::<SshUploadInput>(v).unwrap();
        assert!(SshUpload.validate(&i(json!({"host": "h", "path": "/x"}))).is_err());
        assert!(SshUpload.validate(&i(json!({"host": "h", "path": "/x", "source": "a", "content": "b"}))).is_err());
        assert!(SshUpload.validate(&i(json!({"host": "h", "path": "/x/", "content": "b"}))).is_err());
        assert!(SshUpload.validate(&i(json!({"host": "h", "path": "/x", "content": "b", "mode": "8"}))).is_err());
        let ok = i(json!({"host": "h", "path": "/x", "content": "b"}));
        assert!(SshUpload.validate(&ok).is_ok());
        assert!(ok.create_dirs);
    }
}
