//! `ssh.wait`.
//!
//! ## What it does
//! Tries to connect and log in every `interval` until it works or `within` has passed: the
//! port answers, the host key is trusted (see the crate docs: the first key seen is pinned
//! for the run), and the credentials are accepted. A fresh server refuses connections while
//! it boots, and may refuse the key until cloud-init has installed it: both are waited out.
//! Progress reports the share of `within` used.
//!
//! ## Undo
//! Nothing is created.
//!
//! ## Errors
//! `timeout` when the host never answered within the limit (the last error in the
//! message); `auth` when it answered but kept refusing the credentials until the limit;
//! `auth` at once for an untrusted host key (a mismatch is never waited out); `invalid` at
//! once for a bad key file or setting; `cancelled`.
//!
//! ## Example
//! ```yaml
//! ready:
//!   uses: ssh.wait
//!   with: { host: "${{ steps.server.outputs.public_ip }}", private_key: "${{ secrets.ssh_key }}", within: 5m }
//! ```

use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, LogStream, StepContext};
use engine_core::duration::DurationStr;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::{show_duration as shown, Error};
use crate::session::Session;
use crate::target::SshTarget;

/// Input of `ssh.wait`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SshWaitInput {
    /// Where to connect and how to log in.
    #[serde(flatten)]
    pub target: SshTarget,
    /// How long to keep trying (default `5m`).
    #[serde(default = "default_within")]
    pub within: DurationStr,
    /// Pause between attempts (default `2s`).
    #[serde(default = "default_interval")]
    pub interval: DurationStr,
}

fn default_within() -> DurationStr {
    DurationStr::literal("5m")
}

fn default_interval() -> DurationStr {
    DurationStr::literal("2s")
}

/// Output of `ssh.wait`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SshWaitOutput {
    /// The host.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The user that logged in.
    pub user: String,
    /// Connection attempts made (1 when it was ready at once).
    pub attempts: u32,
    /// Seconds spent waiting.
    pub waited_s: f64,
    /// SHA-256 fingerprint of the server's host key (`SHA256:...`).
    pub host_key: String,
    /// How the host key was trusted: `known_hosts`, `pinned` or `unchecked`.
    pub host_key_trust: String,
}

/// `ssh.wait`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SshWait;

/// Errors that end the wait at once: waiting will not change them.
fn is_final(e: &Error) -> bool {
    matches!(e, Error::HostKey(_) | Error::Config(_) | Error::Cancelled(_)) || e.kind() == engine_connector::ErrorKind::Invalid
}

#[async_trait]
impl Action for SshWait {
    const ID: &'static str = "ssh.wait";
    const DESCRIPTION: &'static str = "wait until a host accepts an SSH login (port open, host key trusted, credentials accepted)";
    type Input = SshWaitInput;
    type Output = SshWaitOutput;

    fn validate(&self, input: &SshWaitInput) -> Result<(), ConnectorError> {
        input.target.validate()?;
        if input.interval.get().is_zero() {
            return Err(ConnectorError::invalid("`interval` must be more than 0"));
        }
        Ok(())
    }

    async fn run(&self, mut input: SshWaitInput, cx: &StepContext) -> Result<SshWaitOutput, ConnectorError> {
        input.target.merge_defaults(&cx.settings)?;
        input.target.validate()?;
        let target = &input.target;
        let addr = target.addr();
        let within = input.within.get();
        let interval = input.interval.get();
        let start = Instant::now();
        let deadline = start + within;
        let mut attempts = 0u32;
        let mut last: Option<Error> = None;
        cx.progress("connecting", Some(0));
        loop {
            attempts += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            let limit = target.connect_timeout().min(left.max(std::time::Duration::from_millis(100)));
            match Session::connect_within(cx, target, limit).await {
                Ok(session) => {
                    let waited = start.elapsed();
                    if attempts > 1 {
                        cx.log(LogStream::Stdout, &format!("{addr} accepted the login after {} ({attempts} attempts)", shown(waited)));
                    }
                    cx.progress("ready", Some(100));
                    let key = session.host_key().clone();
                    let user = session.user().to_string();
                    session.close().await;
                    return Ok(SshWaitOutput {
                        host: target.host.clone(),
                        port: target.port(),
                        user,
                        attempts,
                        waited_s: (waited.as_secs_f64() * 1000.0).round() / 1000.0,
                        host_key: key.fingerprint,
                        host_key_trust: key.trust.as_str().to_string(),
                    });
                }
                Err(e) if is_final(&e) => return Err(e.into()),
                Err(e) => {
                    let reason = e.to_string();
                    if last.as_ref().is_none_or(|l| std::mem::discriminant(l) != std::mem::discriminant(&e)) {
                        cx.log(LogStream::Stdout, &format!("{addr} is not ready: {reason}; trying every {} for up to {}", shown(interval), shown(within)));
                    }
                    last = Some(e);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let pct = u8::try_from((now - start).as_millis() * 100 / within.as_millis().max(1)).unwrap_or(99).min(99);
            cx.progress("waiting", Some(pct));
            cx.sleep(interval.min(deadline - now)).await?;
            if Instant::now() >= deadline {
                // One last try right at the limit would only start after it; stop here.
                break;
            }
        }
        let waited = shown(start.elapsed());
        Err(match last {
            Some(Error::AuthRefused(m)) => ConnectorError::auth(format!("{addr} answered but still refused the login after {waited} ({attempts} attempts): {m}")),
            other => ConnectorError::timeout(format!(
                "{addr} did not accept an SSH login within {} ({attempts} attempts){}",
                shown(within),
                other.map(|e| format!(": {e}")).unwrap_or_default()
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn defaults_and_validation() {
        let i: SshWaitInput = serde_json::from_value(json!({"host": "h"})).unwrap();
        assert_eq!(i.within.get().as_secs(), 300);
        assert_eq!(i.interval.get().as_secs(), 2);
        assert!(SshWait.validate(&i).is_ok());
        let i: SshWaitInput = serde_json::from_value(json!({"host": "h", "interval": "0s"})).unwrap();
        assert!(SshWait.validate(&i).is_err());
        assert!(serde_json::from_value::<SshWaitInput>(json!({"host": "h", "within": "soon"})).is_err());
    }
}
