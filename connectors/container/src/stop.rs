//! `container.stop`: stop a running container.

use std::sync::Arc;

use async_trait::async_trait;
use bollard::query_parameters::StopContainerOptionsBuilder;
use engine_connector::{Action, ConnectorError, StepContext};
use engine_core::duration::DurationStr;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ops::{exit_of, inspect_existing, masked, status_of};
use crate::client::Clients;

fn default_timeout() -> DurationStr {
    DurationStr::literal("10s")
}

/// Input of `container.stop`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopInput {
    /// The Docker daemon for this step: `unix:///path`, `tcp://HOST:PORT`, or
    /// `ssh://user@host[:port][/socket]` (through the ssh connector, to the remote
    /// `/var/run/docker.sock` unless a path is given). Default: the `connectors: container:`
    /// block's `host`, then `DOCKER_HOST`, then the local socket.
    #[serde(default)]
    pub host: Option<String>,
    /// The container: name or id.
    pub container: String,
    /// The grace period between the stop signal (SIGTERM, or the image's `STOPSIGNAL`) and
    /// SIGKILL (default `10s`).
    #[serde(default = "default_timeout")]
    pub timeout: DurationStr,
}

/// Output of `container.stop`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct StopOutput {
    /// Container id.
    pub id: String,
    /// Whether it was running (false: it had stopped already, and nothing was done).
    pub was_running: bool,
    /// Its state now (`exited`).
    pub status: String,
    /// Its exit code (143 after SIGTERM, 137 after SIGKILL, for most programs).
    pub exit_code: i64,
}

/// `container.stop`: stop a container, gracefully first.
///
/// ## What it does
/// `POST /containers/{id}/stop?t=SECONDS`: the stop signal, then SIGKILL once `timeout` passed.
/// A container that is not running is left as it is (`was_running: false`). The container is not
/// removed: `container.remove` or `engine destroy` does that.
///
/// ## Undo
/// Nothing.
///
/// ## Errors
/// - `not_found`: no such container.
/// - `transient`: the daemon cannot be reached, or answered 5xx.
///
/// ## Example
/// ```yaml
/// stop-ollama:
///   uses: container.stop
///   with: { container: ollama, timeout: 30s }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Stop {
    pub(crate) clients: Arc<Clients>,
}

#[async_trait]
impl Action for Stop {
    const ID: &'static str = "container.stop";
    const DESCRIPTION: &'static str = "stop a container (SIGTERM, then SIGKILL after a timeout)";
    type Input = StopInput;
    type Output = StopOutput;

    fn validate(&self, input: &StopInput) -> Result<(), ConnectorError> {
        if input.container.trim().is_empty() {
            return Err(ConnectorError::invalid("`container` is empty"));
        }
        if input.timeout.get().as_secs() > i32::MAX as u64 {
            return Err(ConnectorError::invalid("`timeout` is too long"));
        }
        Ok(())
    }

    async fn run(&self, input: StopInput, cx: &StepContext) -> Result<StopOutput, ConnectorError> {
        let conn = self.clients.connect(cx, input.host.as_deref()).await.map_err(|e| masked(cx, e))?;
        let before = inspect_existing(&conn, &input.container).await.map_err(|e| masked(cx, e))?;
        let id = before.id.clone().unwrap_or_else(|| input.container.clone());
        let was_running = before.state.as_ref().and_then(|s| s.running).unwrap_or(false);
        if was_running {
            cx.progress("stop", Some(30));
            let secs = input.timeout.get().as_secs();
            let options = StopContainerOptionsBuilder::new().t(i32::try_from(secs).unwrap_or(i32::MAX)).build();
            let docker = conn.patient(input.timeout.get());
            let what = format!("stopping container {}", input.container);
            tokio::select! {
                r = docker.stop_container(&id, Some(options)) => r.map_err(|e| masked(cx, conn.err(&what, e)))?,
                () = cx.cancelled() => return Err(ConnectorError::cancelled(format!("cancelled while {what}; Docker goes on stopping it"))),
            }
        }
        let after = inspect_existing(&conn, &id).await.map_err(|e| masked(cx, e))?;
        cx.progress("done", Some(100));
        Ok(StopOutput { id, was_running, status: status_of(&after), exit_code: exit_of(&after).0 })
    }
}
