//! Docker operations that several actions share: pulling with progress, finding a step's
//! container by its key, starting with the GPU failure explained, waiting while streaming logs,
//! stopping and removing, and the undo of a `container.container` resource.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::models::{ContainerInspectResponse, ContainerSummary, PortMap};
use bollard::query_parameters::{
    CreateImageOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use engine_connector::{ConnectorError, ErrorKind, LogStream, ResourceRecord, ResourceState, Secret, StepContext};
use futures_util::{Stream, StreamExt};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use crate::client::{Clients, Conn};
use crate::error::{is_no_gpu_driver, Error};
use crate::spec::{split_reference, LABEL_KEY};

/// Most bytes of each output stream kept in an action's outputs (the step log gets every line).
pub const OUTPUT_LIMIT: usize = 1024 * 1024;
/// The grace period undo gives a container before it is killed, when neither the record nor the
/// container says (Docker's own default).
pub const UNDO_STOP_SECS: u64 = 10;
/// How long a stop that relies on the container's own stop timeout is waited for.
const MAX_CONTAINER_STOP_SECS: u64 = 600;

/// Registry credentials for a pull. They are sent to the daemon only, never logged, never
/// stored in the run state.
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryAuth {
    /// User name.
    pub username: String,
    /// Password or access token (use `${{ secrets.NAME }}`).
    #[schemars(with = "String")]
    #[serde(deserialize_with = "secret")]
    pub password: Secret,
    /// The registry (`ghcr.io`); default: the one the image names.
    #[serde(default)]
    pub server: Option<String>,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth").field("username", &self.username).field("password", &self.password).field("server", &self.server).finish()
    }
}

fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    String::deserialize(d).map(Secret::new)
}

impl RegistryAuth {
    fn credentials(&self) -> DockerCredentials {
        DockerCredentials {
            username: Some(self.username.clone()),
            password: Some(self.password.expose().to_string()),
            serveraddress: self.server.clone(),
            ..Default::default()
        }
    }
}

/// When `container.run` pulls its image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PullPolicy {
    /// Pull only when the daemon does not have the image.
    #[default]
    Missing,
    /// Pull every time (the image may have moved).
    Always,
    /// Never pull: the image must be there (loaded, built, or pulled by an earlier step).
    Never,
}

/// What a pull did.
#[derive(Debug, Clone, Default)]
pub(crate) struct Pulled {
    /// The image id after the pull.
    pub id: String,
    /// The registry digest, when the pull reported one.
    pub digest: Option<String>,
    /// Docker's last status line (`Status: Downloaded newer image for ...`).
    pub status: String,
}

/// Pull `image`, reporting layer progress between `from` and `to` percent and logging each
/// layer's milestones.
///
/// # Errors
/// A classified error; a registry that cannot be reached says so and points at `pull: never`.
pub(crate) async fn pull(conn: &Conn, cx: &StepContext, image: &str, auth: Option<&RegistryAuth>, from: u8, to: u8) -> Result<Pulled, Error> {
    let (name, tag) = split_reference(image);
    let options = CreateImageOptionsBuilder::new().from_image(&name).tag(&tag).build();
    let what = format!("pulling {image}");
    let mut stream = conn.docker.create_image(Some(options), None, auth.map(RegistryAuth::credentials));
    let mut layers: HashMap<String, (i64, i64)> = HashMap::new();
    let mut out = Pulled::default();
    let mut last_percent = None;
    cx.progress("pull", Some(from));
    loop {
        let item = tokio::select! {
            item = stream.next() => item,
            () = cx.cancelled() => return Err(Error::Cancelled(format!("cancelled while {what}"))),
        };
        let Some(item) = item else { break };
        let info = item.map_err(|e| explain_pull(conn.err(&what, e), image))?;
        if let Some(detail) = info.error_detail.as_ref().and_then(|d| d.message.clone()) {
            return Err(explain_pull(conn.err(&what, bollard::errors::Error::DockerStreamError { error: detail }), image));
        }
        let status = info.status.clone().unwrap_or_default();
        match (&info.id, &info.progress_detail) {
            (Some(id), Some(p)) if p.total.unwrap_or(0) > 0 && status.starts_with("Downloading") => {
                layers.insert(id.clone(), (p.current.unwrap_or(0), p.total.unwrap_or(0)));
                let (cur, total) = layers.values().fold((0i64, 0i64), |(c, t), (lc, lt)| (c + lc, t + lt));
                let share = u8::try_from((cur.clamp(0, total) * i64::from(to - from)) / total.max(1)).unwrap_or(0);
                let percent = from + share;
                if last_percent != Some(percent) {
                    cx.progress("pull", Some(percent));
                    last_percent = Some(percent);
                }
            }
            (_, _) if status.starts_with("Downloading") || status.starts_with("Extracting") || status.starts_with("Waiting") => {}
            (Some(id), _) => cx.log(LogStream::Stdout, &format!("{id}: {status}")),
            (None, _) => {
                if let Some(d) = status.strip_prefix("Digest: ") {
                    out.digest = Some(d.to_string());
                }
                if !status.is_empty() {
                    cx.log(LogStream::Stdout, &status);
                    out.status = status;
                }
            }
        }
    }
    let inspected = conn.docker.inspect_image(image).await.map_err(|e| conn.err(&format!("inspecting {image} after the pull"), e))?;
    out.id = inspected.id.unwrap_or_default();
    cx.progress("pull", Some(to));
    Ok(out)
}

/// Say why a pull failed in terms a user can act on.
fn explain_pull(e: Error, image: &str) -> Error {
    let (message, status) = match &e {
        Error::Api { message, status, .. } => (message.clone(), Some(*status)),
        Error::Stream { message, .. } => (message.clone(), None),
        _ => return e,
    };
    let kind = match status {
        Some(404) => ErrorKind::NotFound,
        Some(401 | 403) => ErrorKind::Auth,
        _ => crate::error::pull_kind(&message),
    };
    let unreachable = ["dial tcp", "no such host", "connection refused", "i/o timeout", "network is unreachable", "tls handshake timeout", "temporary failure in name resolution"];
    let lower = message.to_lowercase();
    let hint = if unreachable.iter().any(|u| lower.contains(u)) {
        "; the registry cannot be reached from the Docker host: on a host without registry access, load or build the image there (docker load, docker build) and set `pull: never`"
    } else if kind == ErrorKind::NotFound {
        "; the registry has no such image (check the name and tag), or it is private and needs `auth`"
    } else if kind == ErrorKind::Auth {
        "; the registry refused the credentials: give `auth: {username, password}`"
    } else {
        ""
    };
    Error::Stream { what: format!("pulling {image}"), message: format!("{message}{hint}"), kind }
}

/// Whether the daemon has `image`.
pub(crate) async fn has_image(conn: &Conn, image: &str) -> Result<bool, Error> {
    match conn.docker.inspect_image(image).await {
        Ok(_) => Ok(true),
        Err(e) => {
            let e = conn.err(&format!("inspecting image {image}"), e);
            if e.is_not_found() {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}

/// Make sure the daemon has `image`, as `policy` says.
pub(crate) async fn ensure_image(conn: &Conn, cx: &StepContext, image: &str, policy: PullPolicy, auth: Option<&RegistryAuth>) -> Result<bool, Error> {
    match policy {
        PullPolicy::Always => pull(conn, cx, image, auth, 5, 50).await.map(|_| true),
        PullPolicy::Missing => {
            if has_image(conn, image).await? {
                Ok(false)
            } else {
                cx.log(LogStream::Stdout, &format!("{image} is not on the Docker host; pulling it"));
                pull(conn, cx, image, auth, 5, 50).await.map(|_| true)
            }
        }
        PullPolicy::Never => {
            if has_image(conn, image).await? {
                Ok(false)
            } else {
                Err(Error::failed(
                    ErrorKind::NotFound,
                    format!("image {image} is not on the Docker host at {} and `pull: never` forbids pulling it", conn.target.host),
                ))
            }
        }
    }
}

/// Every container, running or not, that carries the label `engine.key=KEY`.
pub(crate) async fn find_by_key(conn: &Conn, key: &str) -> Result<Vec<ContainerSummary>, Error> {
    let filters = HashMap::from([("label", vec![format!("{LABEL_KEY}={key}")])]);
    let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
    conn.docker.list_containers(Some(options)).await.map_err(|e| conn.err(&format!("listing containers labelled {LABEL_KEY}={key}"), e))
}

/// Inspect a container; `None` when it does not exist.
pub(crate) async fn inspect(conn: &Conn, container: &str) -> Result<Option<ContainerInspectResponse>, Error> {
    match conn.docker.inspect_container(container, None).await {
        Ok(c) => Ok(Some(c)),
        Err(e) => {
            let e = conn.err(&format!("inspecting container {container}"), e);
            if e.is_not_found() {
                Ok(None)
            } else {
                Err(e)
            }
        }
    }
}

/// Inspect a container that must exist.
pub(crate) async fn inspect_existing(conn: &Conn, container: &str) -> Result<ContainerInspectResponse, Error> {
    match inspect(conn, container).await? {
        Some(c) => Ok(c),
        None => Err(Error::failed(ErrorKind::NotFound, format!("no container {container} on the Docker host at {}", conn.target.host))),
    }
}

/// The state of an inspected container: `running`, `exited`...
pub(crate) fn status_of(c: &ContainerInspectResponse) -> String {
    c.state.as_ref().and_then(|s| s.status).map(|s| s.to_string()).unwrap_or_default()
}

/// A container's health status, when it has a health check.
pub(crate) fn health_of(c: &ContainerInspectResponse) -> Option<String> {
    c.state.as_ref().and_then(|s| s.health.as_ref()).and_then(|h| h.status).map(|s| s.to_string()).filter(|s| !s.is_empty())
}

/// Published ports: `80/tcp` → `["0.0.0.0:49153"]`.
pub(crate) fn ports_of(c: &ContainerInspectResponse) -> BTreeMap<String, Vec<String>> {
    let map: Option<&PortMap> = c.network_settings.as_ref().and_then(|n| n.ports.as_ref());
    map.into_iter()
        .flatten()
        .filter_map(|(port, bindings)| {
            let b: Vec<String> =
                bindings.iter().flatten().map(|b| format!("{}:{}", b.host_ip.clone().unwrap_or_default(), b.host_port.clone().unwrap_or_default())).collect();
            (!b.is_empty()).then(|| (port.clone(), b))
        })
        .collect()
}

/// The container's address on its first network that gave it one.
pub(crate) fn ip_of(c: &ContainerInspectResponse) -> Option<String> {
    let nets = c.network_settings.as_ref()?.networks.as_ref()?;
    let mut names: Vec<&String> = nets.keys().collect();
    names.sort();
    names.into_iter().filter_map(|n| nets[n].ip_address.clone()).find(|ip| !ip.is_empty())
}

/// Start a container. A GPU request on a daemon without the NVIDIA runtime becomes
/// [`Error::NoGpuRuntime`], with what `runtime_info` sees.
pub(crate) async fn start(conn: &Conn, id: &str, name: &str) -> Result<(), Error> {
    let what = format!("starting container {name}");
    match conn.docker.start_container(id, None).await {
        Ok(()) => Ok(()),
        Err(e) => Err(gpu_explained(conn, &what, conn.err(&what, e)).await),
    }
}

/// Turn a "could not select device driver" answer into [`Error::NoGpuRuntime`].
pub(crate) async fn gpu_explained(conn: &Conn, what: &str, e: Error) -> Error {
    match e {
        Error::Api { message, .. } if is_no_gpu_driver(&message) => {
            let found = match crate::runtime_info::read(conn).await {
                Ok(info) => info.summary(),
                Err(e) => format!("nothing: /info failed: {e}"),
            };
            Error::NoGpuRuntime { what: what.to_string(), detail: message, found }
        }
        other => other,
    }
}

/// Stop (with a grace period of `stop_secs`, else the container's own stop timeout, which
/// `container.run` sets from `stop_timeout`) and remove a container, with its anonymous volumes.
/// `Ok(false)` when it was already gone.
pub(crate) async fn stop_and_remove(conn: &Conn, id: &str, stop_secs: Option<u64>) -> Result<bool, Error> {
    let mut options = StopContainerOptionsBuilder::new();
    if let Some(s) = stop_secs {
        options = options.t(i32::try_from(s).unwrap_or(i32::MAX));
    }
    let patience = Duration::from_secs(stop_secs.unwrap_or(MAX_CONTAINER_STOP_SECS));
    let stop = conn.patient(patience).stop_container(id, Some(options.build())).await;
    if let Err(e) = stop {
        let e = conn.err(&format!("stopping container {id}"), e);
        if e.is_not_found() {
            return Ok(false);
        }
        // A container that is being removed, or dead, cannot be stopped: removing it settles it.
        if !e.is_conflict() && !matches!(e.kind(), ErrorKind::Invalid) {
            return Err(e);
        }
    }
    remove(conn, id, true, true).await
}

/// Remove a container. `Ok(false)` when it was already gone.
pub(crate) async fn remove(conn: &Conn, id: &str, force: bool, volumes: bool) -> Result<bool, Error> {
    let options = RemoveContainerOptionsBuilder::new().force(force).v(volumes).build();
    match conn.docker.remove_container(id, Some(options)).await {
        Ok(()) => Ok(true),
        Err(e) => {
            let e = conn.err(&format!("removing container {id}"), e);
            match &e {
                _ if e.is_not_found() => Ok(false),
                // Someone else is removing it already.
                Error::Api { status: 409, message, .. } if message.contains("already in progress") => Ok(true),
                _ => Err(e),
            }
        }
    }
}

/// Mark a record as undone, after the action removed what it created itself.
pub(crate) async fn forget(cx: &StepContext, record: &ResourceRecord) -> Result<(), ConnectorError> {
    let mut r = record.clone();
    r.state = ResourceState::Deleted;
    cx.record(&r).await
}

/// Undo of `container.container`: stop and remove the container the record names and any
/// other container labelled with its key (an intent whose create never confirmed is found that
/// way). `not_found` when there was none: the engine counts it as done.
pub(crate) async fn undo_container(clients: &Clients, record: &ResourceRecord, cx: &StepContext) -> Result<(), ConnectorError> {
    let host = record.undo.get("host").and_then(Value::as_str);
    let conn = clients.connect(cx, host).await.map_err(|e| masked(cx, e))?;
    // The confirmed record says; for an intent, the container's own stop timeout applies.
    let stop_secs = record.undo.get("stop_timeout").and_then(Value::as_u64);
    let mut ids: Vec<String> = record.id.clone().or_else(|| record.undo.get("id").and_then(Value::as_str).map(str::to_string)).into_iter().collect();
    for c in find_by_key(&conn, &record.key).await.map_err(|e| masked(cx, e))? {
        if let Some(id) = c.id {
            if !ids.iter().any(|i| id.starts_with(i.as_str()) || i.starts_with(id.as_str())) {
                ids.push(id);
            }
        }
    }
    let mut removed = 0;
    for id in &ids {
        if stop_and_remove(&conn, id, stop_secs).await.map_err(|e| masked(cx, e))? {
            cx.log(LogStream::Stdout, &format!("removed container {id}"));
            removed += 1;
        }
    }
    if removed == 0 {
        return Err(ConnectorError::not_found(format!("no container of `{}` is left on {}", record.key, conn.target.host)));
    }
    Ok(())
}

/// An error as the engine sees it, with secrets masked out of Docker's words.
pub(crate) fn masked(cx: &StepContext, e: Error) -> ConnectorError {
    let mut c = ConnectorError::from(e);
    c.message = cx.masker.mask(&c.message);
    c
}

/// The two output streams of a container or an exec: every line goes to the step log, the
/// first [`OUTPUT_LIMIT`] bytes of each stream are kept.
#[derive(Debug, Default)]
pub(crate) struct Captured {
    pub stdout: String,
    pub stderr: String,
    out_line: Vec<u8>,
    err_line: Vec<u8>,
    out_bytes: Vec<u8>,
    err_bytes: Vec<u8>,
}

impl Captured {
    pub(crate) fn push(&mut self, cx: &StepContext, item: &LogOutput) {
        self.push_to(Some(cx), item);
    }

    /// Keep `item`; log its complete lines when `cx` is given.
    fn push_to(&mut self, cx: Option<&StepContext>, item: &LogOutput) {
        let (stream, line, bytes, data) = match item {
            LogOutput::StdOut { message } | LogOutput::Console { message } => (LogStream::Stdout, &mut self.out_line, &mut self.out_bytes, message),
            LogOutput::StdErr { message } => (LogStream::Stderr, &mut self.err_line, &mut self.err_bytes, message),
            LogOutput::StdIn { .. } => return,
        };
        let room = OUTPUT_LIMIT.saturating_sub(bytes.len());
        bytes.extend_from_slice(&data[..data.len().min(room)]);
        for &b in data {
            if b == b'\n' {
                if let Some(cx) = cx {
                    cx.log(stream, String::from_utf8_lossy(line).trim_end_matches('\r'));
                }
                line.clear();
            } else {
                line.push(b);
            }
        }
    }

    /// Log the last partial lines and settle the texts.
    pub(crate) fn finish(&mut self, cx: &StepContext) {
        for (stream, line) in [(LogStream::Stdout, &mut self.out_line), (LogStream::Stderr, &mut self.err_line)] {
            if !line.is_empty() {
                cx.log(stream, &String::from_utf8_lossy(line));
                line.clear();
            }
        }
        self.stdout = String::from_utf8_lossy(&self.out_bytes).into_owned();
        self.stderr = String::from_utf8_lossy(&self.err_bytes).into_owned();
    }

    /// The last lines of stderr (else stdout), masked, for an error message.
    pub(crate) fn tail(&self, cx: &StepContext) -> String {
        let text = if self.stderr.trim().is_empty() { &self.stdout } else { &self.stderr };
        let lines: Vec<&str> = text.lines().rev().take(5).collect();
        let tail = lines.into_iter().rev().collect::<Vec<_>>().join("\n");
        if tail.is_empty() {
            String::new()
        } else {
            format!(": {}", cx.masker.mask(&tail))
        }
    }
}

/// Read a log stream to its end into `cap`.
pub(crate) async fn drain<S>(conn: &Conn, cx: &StepContext, what: &str, mut stream: S, cap: &mut Captured) -> Result<(), Error>
where
    S: Stream<Item = Result<LogOutput, bollard::errors::Error>> + Unpin,
{
    while let Some(item) = stream.next().await {
        match item {
            Ok(item) => cap.push(cx, &item),
            Err(e) => {
                cap.finish(cx);
                return Err(conn.err(what, e));
            }
        }
    }
    cap.finish(cx);
    Ok(())
}

/// A container's whole log so far (first [`OUTPUT_LIMIT`] bytes of each stream), not logged.
async fn read_all(conn: &Conn, id: &str) -> Result<Captured, Error> {
    let mut s = conn.docker.logs(id, Some(LogsOptionsBuilder::new().stdout(true).stderr(true).build()));
    let mut cap = Captured::default();
    while let Some(item) = s.next().await {
        cap.push_to(None, &item.map_err(|e| conn.err(&format!("reading the logs of container {id}"), e))?);
    }
    cap.stdout = String::from_utf8_lossy(&cap.out_bytes).into_owned();
    cap.stderr = String::from_utf8_lossy(&cap.err_bytes).into_owned();
    Ok(cap)
}

impl Captured {
    /// Take the complete output `full`, logging the part of each stream that this live capture
    /// had not seen.
    fn settle(&mut self, cx: &StepContext, full: Captured) {
        for (stream, live, whole) in [(LogStream::Stdout, &self.stdout, &full.stdout), (LogStream::Stderr, &self.stderr, &full.stderr)] {
            if whole.len() > live.len() && whole.starts_with(live.as_str()) {
                // Complete lines were logged as they came; an unfinished last line was logged by
                // `finish` and is not logged twice when it did not grow.
                let seen = live.rfind('\n').map_or(0, |i| i + 1);
                for (n, line) in whole[seen..].lines().enumerate() {
                    if n == 0 && seen < live.len() && line == &live[seen..] {
                        continue;
                    }
                    cx.log(stream, line.trim_end_matches('\r'));
                }
            }
        }
        self.stdout = full.stdout;
        self.stderr = full.stderr;
    }
}

/// Wait until the container is not running, streaming its logs (from its start) to the step log;
/// cancellation returns at once and leaves the container as it is.
pub(crate) async fn wait_with_logs(conn: &Conn, cx: &StepContext, id: &str, name: &str) -> Result<Captured, Error> {
    let logs_what = format!("reading the logs of container {name}");
    let wait_what = format!("waiting for container {name}");
    let work = async {
        let logs = conn.docker.logs(id, Some(LogsOptionsBuilder::new().follow(true).stdout(true).stderr(true).build()));
        let mut cap = Captured::default();
        let wait = async {
            let mut w = conn.docker.wait_container(id, Some(WaitContainerOptionsBuilder::new().condition("not-running").build()));
            match w.next().await {
                // A non-zero exit code arrives as an error; the exit code is read by inspect.
                None | Some(Ok(_) | Err(bollard::errors::Error::DockerContainerWaitError { .. })) => Ok(()),
                Some(Err(e)) => Err(conn.err(&wait_what, e)),
            }
        };
        let (logged, waited) = tokio::join!(drain(conn, cx, &logs_what, logs, &mut cap), wait);
        waited?;
        // A followed log can end a moment before the logger wrote the container's last output
        // (seen with Docker 20.10: a final line without a newline went missing). Once the
        // container has exited its log is complete: read it again and keep that, logging what
        // the live stream had not shown.
        match read_all(conn, id).await {
            Ok(full) => cap.settle(cx, full),
            Err(e) => {
                if let Err(le) = logged {
                    cx.log(LogStream::Stderr, &format!("the output may be incomplete: {le}"));
                }
                cx.log(LogStream::Stderr, &format!("the output may be incomplete: {e}"));
            }
        }
        Ok::<_, Error>(cap)
    };
    tokio::select! {
        r = work => r,
        () = cx.cancelled() => Err(Error::Cancelled(format!(
            "cancelled while waiting for container {name}; it is left as it is and recorded: `engine destroy` stops and removes it"
        ))),
    }
}

/// Exit code, OOM kill and Docker's error of an exited container.
pub(crate) fn exit_of(c: &ContainerInspectResponse) -> (i64, bool, String) {
    let s = c.state.as_ref();
    (
        s.and_then(|s| s.exit_code).unwrap_or(-1),
        s.and_then(|s| s.oom_killed).unwrap_or(false),
        s.and_then(|s| s.error.clone()).unwrap_or_default(),
    )
}

/// The error for a command that exited non-zero: `invalid` for 126/127 (cannot run, not found)
/// and an OOM kill (the same limit fails again), `transient` otherwise, as `shell.run` does.
pub(crate) fn exit_error(what: &str, code: i64, oom: bool, tail: &str) -> Error {
    if oom {
        return Error::failed(ErrorKind::Invalid, format!("{what} was killed for using more memory than its limit (OOMKilled, exit code {code}); raise `memory`{tail}"));
    }
    let kind = if code == 126 || code == 127 { ErrorKind::Invalid } else { ErrorKind::Transient };
    Error::failed(kind, format!("{what} exited with code {code}{tail}"))
}
