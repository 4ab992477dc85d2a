//! `container.runtime_info`: what the Docker daemon runs containers with, and whether it can give
//! them NVIDIA GPUs.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, StepContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::client::{Clients, Conn};
use crate::error::Error;
use crate::ops::masked;

/// Input of `container.runtime_info`: which daemon to ask.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuntimeInfoInput {
    /// The Docker daemon for this step: `unix:///path`, `tcp://HOST:PORT`, or
    /// `ssh://user@host[:port][/socket]` (through the ssh connector, to the remote
    /// `/var/run/docker.sock` unless a path is given). Default: the `connectors: container:`
    /// block's `host`, then `DOCKER_HOST`, then the local socket.
    #[serde(default)]
    pub host: Option<String>,
}

/// Output of `container.runtime_info`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RuntimeInfoOutput {
    /// The Docker host asked.
    pub host: String,
    /// The daemon's version (`20.10.24+dfsg1`).
    pub server_version: String,
    /// The API version the daemon speaks at most (`1.41`).
    pub server_api_version: String,
    /// The API version the connector uses with it, after negotiation.
    pub api_version: String,
    /// Operating system of the daemon's host (`Debian GNU/Linux 12 (bookworm)`).
    pub operating_system: String,
    /// Kernel of the daemon's host.
    pub kernel_version: String,
    /// CPU architecture (`x86_64`).
    pub architecture: String,
    /// The OCI runtimes configured, by name, with their path (`runc` → `runc`).
    pub runtimes: BTreeMap<String, String>,
    /// The runtime a container gets when it names none (`runc`).
    pub default_runtime: String,
    /// Whether a runtime called `nvidia` is configured (what `nvidia-ctk runtime configure
    /// --runtime=docker` adds).
    pub nvidia_runtime: bool,
    /// Whether `nvidia` is also the default runtime (`--set-as-default`): then every container
    /// can see GPUs through `NVIDIA_VISIBLE_DEVICES` without a GPU request.
    pub nvidia_default: bool,
    /// Directories the daemon reads CDI device specs from (Docker 25 and later report them; empty
    /// otherwise).
    pub cdi_spec_dirs: Vec<String>,
    /// The daemon's own warnings.
    pub warnings: Vec<String>,
    /// One line for people: what was found about GPU support.
    pub gpu_support: String,
}

impl RuntimeInfoOutput {
    /// `runtimes [runc, io.containerd.runc.v2], default runtime runc; the nvidia runtime is not
    /// configured`.
    #[must_use]
    pub fn summary(&self) -> String {
        format!(
            "Docker {} (API {}), runtimes [{}], default runtime {}; {}",
            self.server_version,
            self.server_api_version,
            self.runtimes.keys().cloned().collect::<Vec<_>>().join(", "),
            if self.default_runtime.is_empty() { "unknown" } else { &self.default_runtime },
            self.gpu_support
        )
    }
}

/// Read `/info` and `/version`.
pub(crate) async fn read(conn: &Conn) -> Result<RuntimeInfoOutput, Error> {
    let info = conn.docker.info().await.map_err(|e| conn.err("reading /info", e))?;
    let version = conn.docker.version().await.map_err(|e| conn.err("reading /version", e))?;
    let runtimes: BTreeMap<String, String> =
        info.runtimes.unwrap_or_default().into_iter().map(|(name, r)| (name.clone(), r.path.unwrap_or(name))).collect();
    let default_runtime = info.default_runtime.unwrap_or_default();
    let nvidia_runtime = runtimes.contains_key("nvidia");
    let nvidia_default = default_runtime == "nvidia";
    let cdi_spec_dirs = info.cdi_spec_dirs.unwrap_or_default();
    let gpu_support = match (nvidia_runtime, nvidia_default) {
        (true, true) => "the nvidia runtime is configured and is the default runtime".to_string(),
        (true, false) => "the nvidia runtime is configured (not the default runtime)".to_string(),
        (false, _) if !cdi_spec_dirs.is_empty() => {
            format!("the nvidia runtime is not configured; CDI devices are read from {}", cdi_spec_dirs.join(", "))
        }
        (false, _) => "the nvidia runtime is not configured".to_string(),
    };
    Ok(RuntimeInfoOutput {
        host: conn.target.host.clone(),
        server_version: info.server_version.or(version.version).unwrap_or_default(),
        server_api_version: version.api_version.unwrap_or_default(),
        api_version: conn.api_version(),
        operating_system: info.operating_system.unwrap_or_default(),
        kernel_version: info.kernel_version.unwrap_or_default(),
        architecture: info.architecture.unwrap_or_default(),
        runtimes,
        default_runtime,
        nvidia_runtime,
        nvidia_default,
        cdi_spec_dirs,
        warnings: info.warnings.unwrap_or_default(),
        gpu_support,
    })
}

/// `container.runtime_info`: the daemon's runtimes and GPU support.
///
/// ## What it does
/// Reads the daemon's `/info` and `/version`: its version, the API version negotiated with it,
/// the OCI runtimes configured and the default one, whether the `nvidia` runtime is configured
/// (and default), and the CDI spec directories when the daemon reports them. Use it before
/// `container.run` with `gpus`, or after the NVIDIA Container Toolkit was installed, to check that
/// Docker picked it up (seed 001, AC 4).
///
/// Docker answers a GPU request (`DeviceRequests` with driver `nvidia`) through the NVIDIA
/// Container Toolkit's hook, which `/info` does not list; `nvidia_runtime` is the configuration
/// `nvidia-ctk runtime configure` writes, the usual sign that the toolkit is installed. Only
/// `container.gpu_check` proves that a container sees GPUs.
///
/// ## Undo
/// Nothing: it creates nothing.
///
/// ## Errors
/// - `transient` when the daemon cannot be reached; `auth` when its socket refuses us.
///
/// ## Example
/// ```yaml
/// docker:
///   uses: container.runtime_info
/// gpu-runtime:
///   uses: ./workflows/install-nvidia-container-toolkit.yaml
///   if: ${{ not steps.docker.outputs.nvidia_runtime }}
/// ```
#[derive(Debug, Clone, Default)]
pub struct RuntimeInfo {
    pub(crate) clients: Arc<Clients>,
}

#[async_trait]
impl Action for RuntimeInfo {
    const ID: &'static str = "container.runtime_info";
    const DESCRIPTION: &'static str = "the Docker daemon's version, runtimes, and whether the nvidia runtime is configured";
    type Input = RuntimeInfoInput;
    type Output = RuntimeInfoOutput;

    async fn run(&self, input: RuntimeInfoInput, cx: &StepContext) -> Result<RuntimeInfoOutput, ConnectorError> {
        let conn = self.clients.connect(cx, input.host.as_deref()).await.map_err(|e| masked(cx, e))?;
        cx.progress("info", Some(50));
        let out = read(&conn).await.map_err(|e| masked(cx, e))?;
        cx.progress("done", Some(100));
        Ok(out)
    }
}
