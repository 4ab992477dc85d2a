//! How the connector reaches a Docker daemon: the connector settings, the host they name, a
//! [`bollard::Docker`] client per host with its API version negotiated, and the seam where a
//! remote transport (an SSH tunnel) plugs in.
//!
//! # Which daemon
//! 1. `connectors: container: host:` (or `endpoint:`, the engine-wide name for the same thing),
//! 2. else the environment's `DOCKER_HOST`,
//! 3. else the local socket `unix:///var/run/docker.sock`.
//!
//! `unix://PATH` (or a bare absolute path) and `tcp://HOST:PORT` / `http://HOST:PORT` are built
//! in. Any other scheme (`ssh://user@host`) needs a [`RemoteTransport`] registered with
//! [`crate::ContainerConnector::with_remote`]: it hands back a [`Dialer`] that opens one byte
//! stream to the daemon's API per request, and the connector speaks HTTP/1.1 over it.
//!
//! # API version
//! bollard speaks API 1.53 by default; older daemons (Docker 20.10 speaks 1.41) refuse a
//! versioned path that is newer than theirs. Every client asks the daemon's `/version` first
//! and steps down to the daemon's version when it is older (`Docker::negotiate_version`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::{BollardRequest, Docker, API_DEFAULT_VERSION};
use engine_connector::{ConnectorError, StepContext};
use engine_core::duration::DurationStr;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Mutex;

use crate::error::{docker_host_env, Error, Target};

/// The socket a local Docker daemon listens on.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";
/// The default timeout of one request to the daemon (streams are not cut by it: only the wait
/// for the answer's headers is).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the first request (`/version`) may take: a daemon that does not answer this fast is
/// reported as unreachable rather than waited on for minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// The `connectors: container:` block of a workflow.
///
/// ```yaml
/// connectors:
///   container:
///     host: tcp://10.0.0.5:2375     # else $DOCKER_HOST, else unix:///var/run/docker.sock
///     timeout: 2m                    # per request
/// ```
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The Docker daemon: `unix:///var/run/docker.sock`, `tcp://HOST:PORT`, or a scheme a
    /// plugged-in remote transport handles (`ssh://user@host`). Default: `$DOCKER_HOST`, else the
    /// local socket.
    #[serde(default)]
    pub host: Option<String>,
    /// Another name for `host` (the `endpoint:` every connector block accepts).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// How long one request may wait for the daemon's answer (default `120s`). A stop with a
    /// longer grace period raises it for that request.
    #[serde(default)]
    pub timeout: Option<DurationStr>,
    /// For `ssh://` hosts: the defaults a host leaves out (`private_key_file`, `known_hosts`,
    /// `host_key_check`, `port`, `user`...), the same keys as the `connectors: ssh:` block.
    #[serde(default)]
    pub ssh: Option<Value>,
}

impl Settings {
    /// Read the settings a step sees.
    ///
    /// # Errors
    /// `invalid` for an unknown key or a bad value.
    pub fn from_context(cx: &StepContext) -> Result<Self, Error> {
        if cx.settings.is_null() {
            return Ok(Self::default());
        }
        let s: Self = serde_json::from_value(cx.settings.clone()).map_err(|e| Error::Input(format!("connectors.container: {e}")))?;
        if s.host.is_some() && s.endpoint.is_some() {
            return Err(Error::Input("connectors.container: give `host` or `endpoint`, not both".into()));
        }
        Ok(s)
    }

    fn timeout(&self) -> Duration {
        self.timeout.as_ref().map_or(DEFAULT_TIMEOUT, DurationStr::get).max(Duration::from_secs(1))
    }
}

/// The Docker host to use: the setting, else `DOCKER_HOST` (`env`), else the local socket.
#[must_use]
pub fn resolve_host(setting: Option<&str>, env: Option<&str>) -> String {
    let pick = |v: Option<&str>| v.map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
    pick(setting).or_else(|| pick(env)).unwrap_or_else(|| DEFAULT_HOST.to_string())
}

/// How a host is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix socket path.
    Unix(String),
    /// `HOST:PORT` over plain HTTP.
    Tcp(String),
    /// A scheme only a [`RemoteTransport`] can reach (`ssh`).
    Remote {
        /// The scheme, without `://`.
        scheme: String,
    },
}

/// Parse a Docker host.
///
/// # Errors
/// `invalid` for a host that names no daemon, or TLS (`https://`, which this build leaves out).
pub fn parse_host(host: &str) -> Result<Endpoint, Error> {
    if let Some(path) = host.strip_prefix("unix://") {
        if path.is_empty() {
            return Err(Error::Input(format!("Docker host `{host}` names no socket")));
        }
        return Ok(Endpoint::Unix(path.to_string()));
    }
    if host.starts_with('/') {
        return Ok(Endpoint::Unix(host.to_string()));
    }
    for scheme in ["tcp://", "http://"] {
        if let Some(rest) = host.strip_prefix(scheme) {
            let addr = rest.trim_end_matches('/');
            if addr.is_empty() || addr.contains('/') {
                return Err(Error::Input(format!("Docker host `{host}`: expected {scheme}HOST:PORT")));
            }
            return Ok(Endpoint::Tcp(addr.to_string()));
        }
    }
    if host.starts_with("https://") {
        return Err(Error::Input(format!(
            "Docker host `{host}`: TLS Docker hosts are not supported by the container connector; reach the daemon over its Unix socket (through an SSH tunnel for a remote host) or plain tcp:// on a trusted network"
        )));
    }
    match host.split_once("://") {
        Some((scheme, rest)) if !scheme.is_empty() && !rest.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric() || c == '+') => {
            Ok(Endpoint::Remote { scheme: scheme.to_string() })
        }
        _ => Err(Error::Input(format!("Docker host `{host}`: use unix:///path/to/docker.sock or tcp://HOST:PORT"))),
    }
}

/// A byte stream to a Docker daemon's API (a Unix socket, an SSH channel to one).
pub trait DockerStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> DockerStream for T {}

/// Opens connections to one Docker daemon. The connector opens one per request and speaks
/// HTTP/1.1 over it (upgrades included, for `exec`).
#[async_trait]
pub trait Dialer: Send + Sync + 'static {
    /// A new connection to the daemon's API.
    ///
    /// # Errors
    /// An I/O error; `PermissionDenied` is reported as `auth`, anything else as unreachable
    /// (`transient`).
    async fn dial(&self) -> std::io::Result<Box<dyn DockerStream>>;
}

/// Reaches Docker hosts whose scheme bollard does not know, `ssh://user@host` above all: given
/// the host and the step (its settings, masker and cancellation), it returns a [`Dialer`].
///
/// The `ssh` connector is the natural provider: a `direct-streamlocal@openssh.com` channel to
/// the remote `/var/run/docker.sock`, or `docker system dial-stdio` run over an exec channel (what
/// the docker CLI does for `ssh://`), is exactly one [`DockerStream`].
#[async_trait]
pub trait RemoteTransport: Send + Sync + 'static {
    /// The scheme it handles, without `://` (`ssh`).
    fn scheme(&self) -> &'static str;
    /// A dialer for `host`.
    ///
    /// # Errors
    /// A classified error (`auth` for a refused key, `transient` for an unreachable host...).
    async fn dialer(&self, host: &str, cx: &StepContext) -> Result<Arc<dyn Dialer>, ConnectorError>;
}

/// A client with what error messages need to say where it went.
#[derive(Clone)]
pub(crate) struct Conn {
    pub docker: Docker,
    pub target: Target,
}

impl Conn {
    /// Classify a client error from a request made while doing `what`.
    pub(crate) fn err(&self, what: &str, e: bollard::errors::Error) -> Error {
        self.target.classify(what, e)
    }

    /// The client, with a request timeout of at least `d` (plus a margin).
    pub(crate) fn patient(&self, d: Duration) -> Docker {
        let want = d + Duration::from_secs(30);
        if want.as_secs() > self.target.timeout {
            self.docker.clone().with_timeout(want)
        } else {
            self.docker.clone()
        }
    }

    /// The API version in use after negotiation (`1.41`).
    pub(crate) fn api_version(&self) -> String {
        let v = self.docker.client_version();
        format!("{}.{}", v.major_version, v.minor_version)
    }
}

/// The clients of one connector, one per host and timeout, each negotiated once.
#[derive(Default)]
pub(crate) struct Clients {
    cache: Mutex<HashMap<(String, u64), Docker>>,
    remotes: Vec<Arc<dyn RemoteTransport>>,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients").field("remotes", &self.remotes.iter().map(|r| r.scheme()).collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

impl Clients {
    pub(crate) fn with_remote(&self, remote: Arc<dyn RemoteTransport>) -> Self {
        let mut remotes = self.remotes.clone();
        remotes.retain(|r| r.scheme() != remote.scheme());
        remotes.push(remote);
        Self { cache: Mutex::default(), remotes }
    }

    /// A negotiated client for the step's daemon: `host` when given (undo passes the host the
    /// resource was created on), else the settings, `DOCKER_HOST`, the local socket.
    pub(crate) async fn connect(&self, cx: &StepContext, host: Option<&str>) -> Result<Conn, Error> {
        let settings = Settings::from_context(cx)?;
        let env = std::env::var("DOCKER_HOST").ok();
        let host = match host {
            Some(h) => h.to_string(),
            None => resolve_host(settings.host.as_deref().or(settings.endpoint.as_deref()), env.as_deref()),
        };
        let timeout = settings.timeout();
        let target = Target { host: host.clone(), timeout: timeout.as_secs() };
        let key = (host.clone(), timeout.as_secs());
        if let Some(d) = self.cache.lock().await.get(&key) {
            return Ok(Conn { docker: d.clone(), target });
        }
        let what = "connecting";
        let endpoint = parse_host(&host)?;
        // A remote client rides on an SSH session that belongs to this step (its cancellation,
        // its host-key pin): it is not shared with later steps.
        let shared = !matches!(endpoint, Endpoint::Remote { .. });
        let docker = match endpoint {
            Endpoint::Unix(path) => {
                Docker::connect_with_unix(&path, timeout.as_secs(), API_DEFAULT_VERSION).map_err(|e| target.classify(what, e))?
            }
            Endpoint::Tcp(addr) => {
                Docker::connect_with_http(&addr, timeout.as_secs(), API_DEFAULT_VERSION).map_err(|e| target.classify(what, e))?
            }
            Endpoint::Remote { scheme } => {
                let Some(remote) = self.remotes.iter().find(|r| r.scheme() == scheme) else {
                    return Err(Error::Input(format!(
                        "Docker host `{host}`: `{scheme}://` hosts need a remote transport (the ssh connector's tunnel), and none is plugged into this build; use unix:// or tcp://, or forward the remote socket first (`ssh -L /tmp/docker.sock:/var/run/docker.sock HOST`) and set host: unix:///tmp/docker.sock"
                    )));
                };
                let dialer = remote.dialer(&host, cx).await.map_err(|e| Error::failed(e.kind, e.message))?;
                over_dialer(dialer, timeout).map_err(|e| target.classify(what, e))?
            }
        };
        let docker = negotiate(docker, &target).await?;
        if shared {
            self.cache.lock().await.insert(key, docker.clone());
        }
        Ok(Conn { docker, target })
    }
}

/// Ask the daemon for its API version and step down to it when it is older than ours.
async fn negotiate(docker: Docker, target: &Target) -> Result<Docker, Error> {
    let timeout = docker.timeout();
    // The version lives behind an `Arc` shared by clones: negotiating on a clone with a short
    // timeout sets it for `docker` too.
    docker.clone().with_timeout(CONNECT_TIMEOUT.min(timeout)).negotiate_version().await.map_err(|e| match target.classify("connecting", e) {
        Error::NoAnswer { what, host, .. } => Error::Unreachable {
            what,
            host,
            detail: format!("no answer to /version within {}s", CONNECT_TIMEOUT.min(timeout).as_secs()),
            docker_host: docker_host_env(),
        },
        other => other,
    })?;
    Ok(docker)
}

/// A client that sends every request over a fresh stream from `dialer`.
///
/// # Errors
/// Only when bollard refuses the transport (it does not).
pub fn over_dialer(dialer: Arc<dyn Dialer>, timeout: Duration) -> Result<Docker, bollard::errors::Error> {
    let transport = move |req: BollardRequest| {
        let dialer = dialer.clone();
        async move {
            let (mut parts, body) = req.into_parts();
            // bollard builds absolute URIs (`http://docker/v1.41/...`); a connection of our own
            // sends the origin form with a Host header, as a Go server expects.
            let origin = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
            parts.uri = origin.parse().map_err(bollard::errors::Error::from)?;
            parts.headers.insert(hyper::header::HOST, hyper::header::HeaderValue::from_static("docker"));
            let stream = dialer.dial().await?;
            let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            // The connection runs until the answer (or the upgraded exec stream) is done.
            tokio::spawn(async move {
                let _ = connection.with_upgrades().await;
            });
            Ok(sender.send_request(BollardRequest::from_parts(parts, body)).await?)
        }
    };
    Docker::connect_with_custom_transport(transport, Some("http://docker"), timeout.as_secs(), API_DEFAULT_VERSION)
}

/// Connects to a local Unix socket: the simplest [`Dialer`], and the one the tests drive the
/// remote-transport path with.
#[derive(Debug, Clone)]
pub struct UnixDialer {
    /// The socket path.
    pub path: std::path::PathBuf,
}

#[async_trait]
impl Dialer for UnixDialer {
    async fn dial(&self) -> std::io::Result<Box<dyn DockerStream>> {
        Ok(Box::new(tokio::net::UnixStream::connect(&self.path).await?))
    }
}
