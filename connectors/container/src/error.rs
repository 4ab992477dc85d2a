//! The errors of the `container` connector and how each maps to an [`ErrorKind`].
//!
//! | what happened | kind |
//! |---|---|
//! | the daemon cannot be reached (no socket, refused, reset, no answer in time) | `transient` |
//! | permission denied on the socket | `auth` |
//! | Docker answered 404 (no such image, container, network) | `not_found` |
//! | Docker answered 409 (name in use, container not running) | `conflict` |
//! | Docker answered 401/403 | `auth` |
//! | Docker answered 400, or 500 with a message that no retry fixes (no GPU driver, no such executable) | `invalid` |
//! | Docker answered 500/503 otherwise, or a stream broke | `transient` |
//! | a bad input, an unsupported `host` | `invalid` |

use engine_connector::{ConnectorError, ErrorKind};

/// What went wrong in a `container` action.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input or setting that cannot be used.
    #[error("{0}")]
    Input(String),
    /// The Docker daemon cannot be reached.
    #[error("{what}: cannot reach the Docker daemon at {host}: {detail}; is the Docker daemon running? DOCKER_HOST={docker_host}")]
    Unreachable {
        /// What was being done.
        what: String,
        /// The Docker host used.
        host: String,
        /// The innermost cause.
        detail: String,
        /// `DOCKER_HOST` as this process sees it (`unset` when it is not set).
        docker_host: String,
    },
    /// The daemon's socket refused us.
    #[error("{what}: permission denied on the Docker daemon at {host}: {detail}; run as root or as a member of the `docker` group, or point `host` at a daemon you may use")]
    Permission {
        /// What was being done.
        what: String,
        /// The Docker host used.
        host: String,
        /// The innermost cause.
        detail: String,
    },
    /// No answer within the request timeout.
    #[error("{what}: no answer from the Docker daemon at {host} within {secs}s")]
    NoAnswer {
        /// What was being done.
        what: String,
        /// The Docker host used.
        host: String,
        /// The request timeout.
        secs: u64,
    },
    /// Docker answered with an error status.
    #[error("{what}: Docker answered {status}: {message}")]
    Api {
        /// What was being done.
        what: String,
        /// HTTP status.
        status: u16,
        /// Docker's own message.
        message: String,
    },
    /// A streamed answer (pull progress, logs) carried an error or broke off.
    #[error("{what}: {message}")]
    Stream {
        /// What was being done.
        what: String,
        /// Docker's message, with a hint where one helps.
        message: String,
        /// The kind it counts as.
        kind: ErrorKind,
    },
    /// Docker has no `nvidia` device driver: the NVIDIA Container Toolkit is missing.
    #[error("{what}: the Docker daemon cannot give this container GPUs ({detail}). Install the NVIDIA Container Toolkit (nvidia-container-toolkit) on the Docker host and make it Docker's GPU runtime: `sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker` (workflows/install-nvidia-container-toolkit.yaml does both). runtime_info found: {found}")]
    NoGpuRuntime {
        /// What was being done.
        what: String,
        /// Docker's own message.
        detail: String,
        /// What `container.runtime_info` sees on this daemon.
        found: String,
    },
    /// An answer the client could not read.
    #[error("{what}: unexpected answer from the Docker daemon: {detail}")]
    Protocol {
        /// What was being done.
        what: String,
        /// The decoding error.
        detail: String,
    },
    /// A classified failure that is not Docker's (a command's exit code, a health check).
    #[error("{message}")]
    Failed {
        /// The kind it counts as.
        kind: ErrorKind,
        /// For people.
        message: String,
    },
    /// The step was cancelled.
    #[error("{0}")]
    Cancelled(String),
}

impl Error {
    /// The kind the engine's retry and fallback policy sees.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Input(_) | Self::NoGpuRuntime { .. } | Self::Protocol { .. } => ErrorKind::Invalid,
            Self::Unreachable { .. } | Self::NoAnswer { .. } => ErrorKind::Transient,
            Self::Permission { .. } => ErrorKind::Auth,
            Self::Api { status, message, .. } => status_kind(*status, message),
            Self::Stream { kind, .. } | Self::Failed { kind, .. } => *kind,
            Self::Cancelled(_) => ErrorKind::Cancelled,
        }
    }

    /// A failure of the given kind.
    pub(crate) fn failed(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::Failed { kind, message: message.into() }
    }

    /// Whether Docker answered `404`.
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Api { status: 404, .. })
    }

    /// Whether Docker answered `409`.
    #[must_use]
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Api { status: 409, .. })
    }
}

/// Messages of a `500` that no retry fixes: the request itself cannot work on this host.
const PERMANENT_500: &[&str] = &[
    "could not select device driver",
    "executable file not found",
    "no such file or directory",
    "permission denied",
    "invalid reference format",
    "invalid mount config",
    "bind source path does not exist",
    "unknown or invalid runtime name",
    "invalid volume specification",
    "is not a valid",
];

/// The kind of a Docker error status: 404 `not_found`, 409 `conflict`, 401/403 `auth`,
/// 408/429 and 5xx `transient` (except a 500 whose message says that the request itself cannot
/// work, which is `invalid`), any other 4xx `invalid`.
#[must_use]
pub fn status_kind(status: u16, message: &str) -> ErrorKind {
    match status {
        404 => ErrorKind::NotFound,
        409 => ErrorKind::Conflict,
        401 | 403 => ErrorKind::Auth,
        500 if is_permanent(message) => ErrorKind::Invalid,
        408 | 429 | 500..=599 => ErrorKind::Transient,
        _ => ErrorKind::Invalid,
    }
}

fn is_permanent(message: &str) -> bool {
    let m = message.to_lowercase();
    PERMANENT_500.iter().any(|p| m.contains(p))
}

/// Whether a Docker message is the "no GPU driver" failure of a container that asks for GPUs on
/// a daemon without the NVIDIA Container Toolkit.
#[must_use]
pub fn is_no_gpu_driver(message: &str) -> bool {
    message.contains("could not select device driver")
}

/// The kind of a registry failure reported while pulling: a name the registry does not know is
/// `not_found`, a refused login `auth`, anything about reaching the registry `transient`.
#[must_use]
pub fn pull_kind(message: &str) -> ErrorKind {
    let m = message.to_lowercase();
    if m.contains("manifest unknown") || m.contains("not found") || m.contains("repository does not exist") || m.contains("pull access denied") {
        ErrorKind::NotFound
    } else if m.contains("unauthorized") || m.contains("authentication required") || m.contains("denied") {
        ErrorKind::Auth
    } else if m.contains("invalid reference format") || m.contains("no matching manifest") {
        ErrorKind::Invalid
    } else {
        ErrorKind::Transient
    }
}

impl From<Error> for ConnectorError {
    fn from(e: Error) -> Self {
        ConnectorError::new(e.kind(), e.to_string())
    }
}

/// The innermost cause of an error, in its own words (`Connection refused (os error 111)`).
pub(crate) fn innermost(e: &(dyn std::error::Error + 'static)) -> (String, Option<std::io::ErrorKind>) {
    let mut inner: &(dyn std::error::Error + 'static) = e;
    let mut io = None;
    loop {
        if let Some(x) = inner.downcast_ref::<std::io::Error>() {
            io = Some(x.kind());
        }
        match inner.source() {
            Some(s) => inner = s,
            None => break,
        }
    }
    (inner.to_string(), io)
}

/// Where a request went, for messages.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The Docker host, as resolved.
    pub host: String,
    /// The request timeout in seconds.
    pub timeout: u64,
}

impl Target {
    /// Classify a client error from a request made while doing `what`.
    pub(crate) fn classify(&self, what: &str, e: bollard::errors::Error) -> Error {
        use bollard::errors::Error as B;
        let what = what.to_string();
        match e {
            B::DockerResponseServerError { status_code, message } => Error::Api { what, status: status_code, message },
            B::DockerStreamError { error } => {
                let kind = pull_kind(&error);
                Error::Stream { what, message: error, kind }
            }
            B::RequestTimeoutError => Error::NoAnswer { what, host: self.host.clone(), secs: self.timeout },
            B::SocketNotFoundError(path) => Error::Unreachable {
                what,
                host: self.host.clone(),
                detail: format!("the socket {path} does not exist"),
                docker_host: docker_host_env(),
            },
            B::JsonDataError { message, .. } => Error::Protocol { what, detail: message },
            B::JsonSerdeError { err } => Error::Protocol { what, detail: err.to_string() },
            B::APIVersionParseError {} => Error::Protocol { what, detail: "the daemon's API version cannot be parsed".into() },
            B::UnsupportedURISchemeError { uri } => Error::Input(format!("{what}: unsupported Docker host `{uri}`")),
            // `transparent`: the io::Error is not in its own source chain, so look at it here.
            B::IOError { err } if err.kind() == std::io::ErrorKind::PermissionDenied => {
                Error::Permission { what, host: self.host.clone(), detail: err.to_string() }
            }
            other => {
                let (detail, io) = innermost(&other);
                match io {
                    Some(std::io::ErrorKind::PermissionDenied) => Error::Permission { what, host: self.host.clone(), detail },
                    _ => Error::Unreachable { what, host: self.host.clone(), detail, docker_host: docker_host_env() },
                }
            }
        }
    }
}

/// `DOCKER_HOST` as this process sees it, for messages.
pub(crate) fn docker_host_env() -> String {
    match std::env::var("DOCKER_HOST") {
        Ok(v) if !v.is_empty() => v,
        _ => "unset".into(),
    }
}
