//! `container.remove`: remove a container.

use std::sync::Arc;

use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, ErrorKind, StepContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::client::Clients;
use crate::error::Error;
use crate::ops::{inspect, masked, remove};

/// Input of `container.remove`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveInput {
    /// The Docker daemon for this step: `unix:///path`, `tcp://HOST:PORT`, or
    /// `ssh://user@host[:port][/socket]` (through the ssh connector, to the remote
    /// `/var/run/docker.sock` unless a path is given). Default: the `connectors: container:`
    /// block's `host`, then `DOCKER_HOST`, then the local socket.
    #[serde(default)]
    pub host: Option<String>,
    /// The container: name or id.
    pub container: String,
    /// Remove it even while it runs (it is killed, with no grace period).
    #[serde(default)]
    pub force: bool,
    /// Also remove its anonymous volumes (named volumes stay).
    #[serde(default)]
    pub volumes: bool,
    /// Succeed when there is no such container (default false: `not_found`).
    #[serde(default)]
    pub missing_ok: bool,
}

/// Output of `container.remove`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RemoveOutput {
    /// Container id (`null` when there was none, with `missing_ok`).
    pub id: Option<String>,
    /// Whether a container was removed.
    pub removed: bool,
}

/// `container.remove`: remove a container.
///
/// ## What it does
/// `DELETE /containers/{id}`, with `force` (kill a running one) and `volumes` (its anonymous
/// volumes too). A running container without `force` is a `conflict`: stop it first with
/// `container.stop`.
///
/// ## Undo
/// Nothing. A container a `container.run` step made stays in the run's records: its undo then
/// finds it gone, which counts as done.
///
/// ## Errors
/// - `not_found`: no such container (unless `missing_ok`).
/// - `conflict`: it runs and `force` is false.
/// - `transient`: the daemon cannot be reached, or answered 5xx.
///
/// ## Example
/// ```yaml
/// cleanup:
///   uses: container.remove
///   with: { container: ollama, force: true, missing_ok: true }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Remove {
    pub(crate) clients: Arc<Clients>,
}

#[async_trait]
impl Action for Remove {
    const ID: &'static str = "container.remove";
    const DESCRIPTION: &'static str = "remove a container (force, volumes)";
    type Input = RemoveInput;
    type Output = RemoveOutput;

    fn validate(&self, input: &RemoveInput) -> Result<(), ConnectorError> {
        if input.container.trim().is_empty() {
            return Err(ConnectorError::invalid("`container` is empty"));
        }
        Ok(())
    }

    async fn run(&self, input: RemoveInput, cx: &StepContext) -> Result<RemoveOutput, ConnectorError> {
        let conn = self.clients.connect(cx, input.host.as_deref()).await.map_err(|e| masked(cx, e))?;
        let missing = || -> Result<RemoveOutput, ConnectorError> {
            if input.missing_ok {
                Ok(RemoveOutput { id: None, removed: false })
            } else {
                Err(masked(cx, Error::failed(ErrorKind::NotFound, format!("no container {} on the Docker host at {}", input.container, conn.target.host))))
            }
        };
        let Some(c) = inspect(&conn, &input.container).await.map_err(|e| masked(cx, e))? else {
            return missing();
        };
        let id = c.id.unwrap_or_else(|| input.container.clone());
        let removed = remove(&conn, &id, input.force, input.volumes).await.map_err(|e| {
            let e = match e {
                Error::Api { status: 409, message, what } => Error::Api {
                    status: 409,
                    message: format!("{message} (stop it first with container.stop, or set `force: true`)"),
                    what,
                },
                other => other,
            };
            masked(cx, e)
        })?;
        if !removed {
            return missing();
        }
        cx.progress("done", Some(100));
        Ok(RemoveOutput { id: Some(id), removed: true })
    }
}
