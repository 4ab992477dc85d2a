//! The `container` connector: containers on a Docker Engine, through its HTTP API ([`bollard`]).
//!
//! | action | what it does |
//! |---|---|
//! | `container.pull` | pull an image, with progress |
//! | `container.run` | create and start a container (`gpus`, ports, volumes, env...), then wait for its exit or detach once it runs (and is healthy); a resource |
//! | `container.exec` | run a command in a running container |
//! | `container.logs` | read a container's output |
//! | `container.stop` | stop a container |
//! | `container.remove` | remove a container |
//! | `container.runtime_info` | the daemon's runtimes, and whether the `nvidia` runtime is configured |
//! | `container.gpu_check` | run `nvidia-smi` in a container with GPUs and report the GPUs it saw; a resource while it runs |
//!
//! The daemon is the workflow's `connectors: container: host:`, else `DOCKER_HOST`, else the
//! local socket (see [`client`] and [`Settings`]); the API version is negotiated with it, so
//! old daemons (Docker 20.10, API 1.41) work. A remote daemon behind SSH is reached through a
//! [`RemoteTransport`] plugged in with [`ContainerConnector::with_remote`].
//!
//! Containers are resources of kind [`KIND`]: recorded before they are created, labelled
//! `engine.key=RUN/STEP[/INDEX]` and named after that key unless a `name` is given, so that a
//! retry or a resumed run adopts its container; undo stops and removes it.
//!
//! ```
//! use engine_connector::Connector;
//! let c = connector_container::ContainerConnector::new();
//! let ids: Vec<&str> = c.actions().iter().map(|a| a.id()).collect();
//! assert_eq!(ids, ["container.pull", "container.run", "container.exec", "container.logs", "container.stop",
//!                  "container.remove", "container.runtime_info", "container.gpu_check"]);
//! ```

pub mod client;
mod error;
mod exec;
mod gpu_check;
mod logs;
mod ops;
mod pull;
mod remove;
mod run;
mod runtime_info;
pub mod ssh;
pub mod spec;
mod stop;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use engine_connector::{Connector, DynAction};

pub use client::{over_dialer, parse_host, resolve_host, Dialer, DockerStream, Endpoint, RemoteTransport, Settings, UnixDialer, DEFAULT_HOST};
pub use error::{is_no_gpu_driver, pull_kind, status_kind, Error};
pub use exec::{Exec, ExecInput, ExecOutput};
pub use gpu_check::{parse_gpus, GpuCheck, GpuCheckInput, GpuCheckOutput, GpuSeen, DEFAULT_QUERY};
pub use logs::{since_unix, Logs, LogsInput, LogsOutput};
pub use ops::{PullPolicy, RegistryAuth, OUTPUT_LIMIT};
pub use pull::{Pull, PullInput, PullOutput};
pub use remove::{Remove, RemoveInput, RemoveOutput};
pub use run::{Healthcheck, Run, RunInput, RunOutput};
pub use runtime_info::{RuntimeInfo, RuntimeInfoInput, RuntimeInfoOutput};
pub use spec::{Command, GpuRequest};
pub use stop::{Stop, StopInput, StopOutput};

/// The kind of resource `container.run` and `container.gpu_check` record.
pub const KIND: &str = "container.container";

/// The `container` connector. Clones share their clients (one per Docker host, negotiated once).
#[derive(Debug, Clone, Default)]
pub struct ContainerConnector {
    clients: Arc<client::Clients>,
}

impl ContainerConnector {
    /// A connector for the local daemon, `DOCKER_HOST`, the `host` setting, or a remote
    /// daemon over SSH (`ssh://user@host`). Nothing is contacted until an action runs.
    #[must_use]
    pub fn new() -> Self {
        Self::default().with_remote(Arc::new(ssh::SshTransport))
    }

    /// The same connector, also able to reach hosts of `remote.scheme()` (`ssh://`) through it.
    #[must_use]
    pub fn with_remote(&self, remote: Arc<dyn RemoteTransport>) -> Self {
        Self { clients: Arc::new(self.clients.with_remote(remote)) }
    }

    /// `container.pull`.
    #[must_use]
    pub fn pull(&self) -> Pull {
        Pull { clients: self.clients.clone() }
    }

    /// `container.run`.
    #[must_use]
    pub fn run(&self) -> Run {
        Run { clients: self.clients.clone() }
    }

    /// `container.exec`.
    #[must_use]
    pub fn exec(&self) -> Exec {
        Exec { clients: self.clients.clone() }
    }

    /// `container.logs`.
    #[must_use]
    pub fn logs(&self) -> Logs {
        Logs { clients: self.clients.clone() }
    }

    /// `container.stop`.
    #[must_use]
    pub fn stop(&self) -> Stop {
        Stop { clients: self.clients.clone() }
    }

    /// `container.remove`.
    #[must_use]
    pub fn remove(&self) -> Remove {
        Remove { clients: self.clients.clone() }
    }

    /// `container.runtime_info`.
    #[must_use]
    pub fn runtime_info(&self) -> RuntimeInfo {
        RuntimeInfo { clients: self.clients.clone() }
    }

    /// `container.gpu_check`.
    #[must_use]
    pub fn gpu_check(&self) -> GpuCheck {
        GpuCheck { clients: self.clients.clone() }
    }
}

impl Connector for ContainerConnector {
    fn name(&self) -> &'static str {
        "container"
    }

    fn description(&self) -> &'static str {
        "Docker Engine containers: pull, run (with NVIDIA GPUs), exec, logs, stop, remove, runtime and GPU checks"
    }

    fn actions(&self) -> Vec<Arc<dyn DynAction>> {
        vec![
            Arc::new(self.pull()),
            Arc::new(self.run()),
            Arc::new(self.exec()),
            Arc::new(self.logs()),
            Arc::new(self.stop()),
            Arc::new(self.remove()),
            Arc::new(self.runtime_info()),
            Arc::new(self.gpu_check()),
        ]
    }
}
