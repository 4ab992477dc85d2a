//! `container.pull`: pull an image, with its progress.

use std::sync::Arc;

use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, StepContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::client::Clients;
use crate::ops::{masked, pull, RegistryAuth};
use crate::spec::{check_image, split_reference};

/// Input of `container.pull`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PullInput {
    /// The Docker daemon for this step: `unix:///path`, `tcp://HOST:PORT`, or
    /// `ssh://user@host[:port][/socket]` (through the ssh connector, to the remote
    /// `/var/run/docker.sock` unless a path is given). Default: the `connectors: container:`
    /// block's `host`, then `DOCKER_HOST`, then the local socket.
    #[serde(default)]
    pub host: Option<String>,
    /// The image: `repository[:tag]` or `repository@sha256:...` (`:latest` when neither is given).
    pub image: String,
    /// Registry credentials, for a private image.
    #[serde(default)]
    pub auth: Option<RegistryAuth>,
}

/// Output of `container.pull`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PullOutput {
    /// The image as pulled (`ollama/ollama:latest`).
    pub image: String,
    /// The local image id (`sha256:...`).
    pub id: String,
    /// The registry digest, when the registry reported one.
    pub digest: Option<String>,
    /// Docker's last word (`Status: Downloaded newer image for ...`, `Status: Image is up to date
    /// for ...`).
    pub status: String,
}

/// `container.pull`: pull an image onto the Docker host.
///
/// ## What it does
/// `POST /images/create` for the image and its tag (`latest` when none is given: never every tag
/// of the repository), with the step's progress following the layers' download and each layer's
/// milestones in the step log. An error the registry reports in the middle of the stream fails
/// the step at once.
///
/// ## Undo
/// Nothing: images are not removed (other containers may use them).
///
/// ## Errors
/// - `not_found`: the registry has no such image (or it is private and no `auth` was given).
/// - `auth`: the registry refused the credentials.
/// - `transient`: the registry or the daemon cannot be reached (a host with no registry access
///   fails at once, saying so, instead of hanging); retrying helps only if the network comes back.
/// - `invalid`: a malformed reference.
///
/// ## Example
/// ```yaml
/// ollama-image:
///   uses: container.pull
///   with: { image: "ollama/ollama:0.3.12" }
///   retry: { attempts: 3 }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Pull {
    pub(crate) clients: Arc<Clients>,
}

#[async_trait]
impl Action for Pull {
    const ID: &'static str = "container.pull";
    const DESCRIPTION: &'static str = "pull an image onto the Docker host, with progress";
    type Input = PullInput;
    type Output = PullOutput;

    fn validate(&self, input: &PullInput) -> Result<(), ConnectorError> {
        check_image(&input.image).map_err(Into::into)
    }

    async fn run(&self, input: PullInput, cx: &StepContext) -> Result<PullOutput, ConnectorError> {
        let conn = self.clients.connect(cx, input.host.as_deref()).await.map_err(|e| masked(cx, e))?;
        let pulled = pull(&conn, cx, &input.image, input.auth.as_ref(), 0, 100).await.map_err(|e| masked(cx, e))?;
        let (name, tag) = split_reference(&input.image);
        let sep = if tag.contains(':') { '@' } else { ':' };
        Ok(PullOutput { image: format!("{name}{sep}{tag}"), id: pulled.id, digest: pulled.digest, status: pulled.status })
    }
}
