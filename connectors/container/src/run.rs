//! `container.run`: create and start a container (with GPUs), then wait for it to exit or, with
//! `detach: true`, for it to run (and be healthy).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::{ContainerCreateBody, HealthConfig, HostConfig};
use bollard::query_parameters::CreateContainerOptionsBuilder;
use engine_connector::{Action, ConnectorError, ErrorKind, LogStream, ResourceRecord, StepContext};
use engine_core::duration::DurationStr;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Instant;

use crate::client::{Clients, Conn};
use crate::error::Error;
use crate::ops::{
    ensure_image, exit_error, exit_of, find_by_key, forget, health_of, inspect, inspect_existing, ip_of, masked, ports_of, remove, start, status_of,
    stop_and_remove, wait_with_logs, PullPolicy, RegistryAuth, UNDO_STOP_SECS,
};
use crate::spec::{
    check_env, check_image, env_lines, name_for_key, parse_restart, parse_size, parse_volume, port_map, step_labels, valid_name, Command, GpuRequest,
    VolumeSpec, LABEL_GPU_MEMORY, LABEL_KEY,
};
use crate::KIND;

fn yes() -> bool {
    true
}

/// A health check, as a Dockerfile's `HEALTHCHECK` writes it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Healthcheck {
    /// The check: a line run with the container's shell (`CMD-SHELL`), a list run as is (`CMD`),
    /// or `NONE` to switch off the image's own check. Exit 0 means healthy.
    pub test: Command,
    /// Time between checks (default 30s).
    #[serde(default)]
    pub interval: Option<DurationStr>,
    /// How long one check may take (default 30s).
    #[serde(default)]
    pub timeout: Option<DurationStr>,
    /// Consecutive failures that make the container unhealthy (default 3).
    #[serde(default)]
    pub retries: Option<u32>,
    /// Time to start before failures count (default 0s).
    #[serde(default)]
    pub start_period: Option<DurationStr>,
}

impl Healthcheck {
    fn config(&self) -> Result<HealthConfig, Error> {
        let test = match &self.test {
            Command::Line(l) if l.trim() == "NONE" => vec!["NONE".to_string()],
            Command::Line(l) => vec!["CMD-SHELL".to_string(), l.clone()],
            Command::Argv(_) => {
                let mut t = vec!["CMD".to_string()];
                t.extend(self.test.argv()?);
                t
            }
        };
        let nanos = |d: &Option<DurationStr>| d.as_ref().map(|d| i64::try_from(d.get().as_nanos()).unwrap_or(i64::MAX));
        Ok(HealthConfig {
            test: Some(test),
            interval: nanos(&self.interval),
            timeout: nanos(&self.timeout),
            retries: self.retries.map(i64::from),
            start_period: nanos(&self.start_period),
            start_interval: None,
        })
    }
}

/// Input of `container.run`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunInput {
    /// The Docker daemon for this step: `unix:///path`, `tcp://HOST:PORT`, or
    /// `ssh://user@host[:port][/socket]` (through the ssh connector, to the remote
    /// `/var/run/docker.sock` unless a path is given). Default: the `connectors: container:`
    /// block's `host`, then `DOCKER_HOST`, then the local socket.
    #[serde(default)]
    pub host: Option<String>,
    /// The image (`repository[:tag]`, `repository@sha256:...`).
    pub image: String,
    /// The command (the image's `CMD` when left out): a list, or a line split into words like a
    /// shell does (no variables or pipes: `[sh, -c, "..."]` for those).
    #[serde(default)]
    pub command: Option<Command>,
    /// Replace the image's `ENTRYPOINT`: a list, or a line split into words; `[]` clears it.
    #[serde(default)]
    pub entrypoint: Option<Command>,
    /// The container's name. Default: `engine-` and the step's idempotency key, so that a retry or
    /// a resumed run finds the container instead of making a second one.
    #[serde(default)]
    pub name: Option<String>,
    /// Environment variables.
    #[serde(default)]
    pub env: engine_core::env::EnvMap,
    /// Labels, besides the `engine.key`, `engine.run` and `engine.step` labels every container the
    /// connector makes carries.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Published ports: `[HOST_IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp|sctp]` (`11434:11434`,
    /// `127.0.0.1:8080:80`, `53:53/udp`, `80` for a host port Docker picks).
    #[serde(default)]
    pub ports: Vec<String>,
    /// Volumes: `/host/path:/in/container[:ro]`, `./path:/in` (relative to the workflow's
    /// directory), `NAME:/in` (a named volume), or `/in` (an anonymous volume).
    #[serde(default)]
    pub volumes: Vec<String>,
    /// NVIDIA GPUs, as `docker run --gpus` gives them (see `gpus.*`). The host needs the NVIDIA
    /// Container Toolkit: without it the step fails with `invalid`, saying how to install it.
    #[serde(default)]
    pub gpus: Option<GpuRequest>,
    /// The OCI runtime (`nvidia` for the toolkit's runtime without a GPU request, `runc`).
    #[serde(default)]
    pub runtime: Option<String>,
    /// Restart policy: `no`, `always`, `unless-stopped`, `on-failure[:N]`.
    #[serde(default)]
    pub restart: Option<String>,
    /// Network: `bridge`, `host`, `none`, a network's name, or `container:NAME`.
    #[serde(default)]
    pub network: Option<String>,
    /// User (`1000`, `1000:1000`, `nobody`).
    #[serde(default)]
    pub user: Option<String>,
    /// Working directory inside the container.
    #[serde(default)]
    pub workdir: Option<String>,
    /// Host name inside the container.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Memory limit (`512m`, `16g`).
    #[serde(default)]
    pub memory: Option<String>,
    /// CPU limit, in CPUs (`1.5`).
    #[serde(default)]
    pub cpus: Option<f64>,
    /// Size of `/dev/shm` (`1g`; `PyTorch` data loaders want more than the default 64m).
    #[serde(default)]
    pub shm_size: Option<String>,
    /// A health check, replacing the image's.
    #[serde(default)]
    pub healthcheck: Option<Healthcheck>,
    /// Return once the container runs, instead of waiting for it to exit.
    #[serde(default)]
    pub detach: bool,
    /// With `detach`: also wait, at most this long, until the health check reports `healthy`.
    #[serde(default)]
    pub wait_healthy: Option<DurationStr>,
    /// Without `detach`: fail the step when the container exits non-zero (default true). With
    /// `check: false` the exit code is an output like any other.
    #[serde(default = "yes")]
    pub check: bool,
    /// Without `detach`: remove the container once it exited and its output was read (as
    /// `docker run --rm`). Otherwise it stays, recorded, until `engine destroy`.
    #[serde(default)]
    pub rm: bool,
    /// When to pull the image: `missing` (default), `always`, `never`.
    #[serde(default)]
    pub pull: PullPolicy,
    /// Registry credentials for the pull.
    #[serde(default)]
    pub auth: Option<RegistryAuth>,
    /// The grace period `engine destroy` gives the container between SIGTERM and SIGKILL
    /// (default 10s).
    #[serde(default)]
    pub stop_timeout: Option<DurationStr>,
}

/// Output of `container.run`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RunOutput {
    /// Container id.
    pub id: String,
    /// Container name.
    pub name: String,
    /// The image it runs.
    pub image: String,
    /// Whether an earlier attempt of this step had made the container already (a retry, a resumed
    /// run) and it was adopted.
    pub adopted: bool,
    /// Whether the image was pulled for this step.
    pub pulled: bool,
    /// State: `running`, `exited`...
    pub status: String,
    /// Exit code, once it exited (`null` while it runs).
    pub exit_code: Option<i64>,
    /// Standard output (first MiB), when the step waited for the exit.
    pub stdout: String,
    /// Standard error (first MiB), when the step waited for the exit.
    pub stderr: String,
    /// Health status (`starting`, `healthy`, `unhealthy`), when it has a health check.
    pub health: Option<String>,
    /// Published ports: `11434/tcp` → `["0.0.0.0:11434"]`.
    pub ports: BTreeMap<String, Vec<String>>,
    /// Its address on its (first) network.
    pub ip_address: Option<String>,
}

/// `container.run`: run a container, optionally with NVIDIA GPUs.
///
/// ## What it does
/// Makes sure the image is there (`pull: missing|always|never`), records the container as a
/// resource (`container.container`) before creating it, creates it named `name` (default: from
/// the step's idempotency key) and labelled `engine.key=RUN/STEP[/INDEX]`, and starts it. Then:
/// - by default it waits for the exit, streaming the output to the step log, and returns
///   `exit_code`, `stdout` and `stderr`; a non-zero exit fails the step (`transient`; `invalid`
///   for 126/127 and an OOM kill) unless `check: false`. `rm: true` removes it afterwards.
/// - with `detach: true` it returns once the container runs, after waiting for `healthy` when
///   `wait_healthy` is given, with its ports, address and health.
///
/// `gpus` becomes a `DeviceRequests` entry (driver `nvidia`; `count: -1` for all, `count: N`, or
/// `device_ids`; capabilities `[["gpu", ...]]`), as `docker run --gpus` does, plus
/// `NVIDIA_VISIBLE_DEVICES` and `NVIDIA_DRIVER_CAPABILITIES` in the environment (unless `env`
/// sets them), which the NVIDIA runtime reads. `gpus.memory` cannot be enforced by Docker: it is
/// recorded as the label `engine.gpu.memory` (bytes) and checked by `container.gpu_check`.
///
/// A retry or a resumed run adopts the container its key labels instead of making a second one:
/// a running one is adopted as it is, a created one is started; one that exited is replaced,
/// except that a waited run that had exited 0 is adopted with its result (the work was done).
/// Adoption does not compare the configuration: a changed input does not replace the container.
///
/// ## Undo
/// Stops the container (SIGTERM, then SIGKILL after `stop_timeout`) and removes it with its
/// anonymous volumes; a container already gone counts as done. An intent whose create never
/// confirmed is found by its `engine.key` label.
///
/// ## Errors
/// - `invalid`: GPUs asked on a host without the NVIDIA Container Toolkit (the message says how
///   to install it and what `runtime_info` found; the container is removed), a command that
///   does not exist in the image, bad inputs.
/// - `not_found`: the image is missing and cannot be pulled (`pull: never`, or unknown to the
///   registry).
/// - `conflict`: `name` is taken by a container this step did not create.
/// - `transient`: the daemon or the registry cannot be reached; Docker answered 5xx; the command
///   exited non-zero; the container exited or turned unhealthy before it was healthy.
/// - `timeout`: not healthy within `wait_healthy`.
/// - `cancelled`: the step was cancelled while waiting; the container is left recorded.
///
/// ## Example
/// ```yaml
/// ollama:
///   uses: container.run
///   with:
///     image: ollama/ollama:0.3.12
///     name: ollama
///     detach: true
///     gpus: { all: true, capabilities: [compute, utility] }
///     ports: ["11434:11434"]
///     volumes: ["ollama:/root/.ollama"]
///     restart: unless-stopped
///     healthcheck: { test: "ollama list", interval: 5s, retries: 10 }
///     wait_healthy: 5m
/// ```
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub(crate) clients: Arc<Clients>,
}

/// What `get_or_create` found or made.
struct Got {
    id: String,
    name: String,
    adopted: bool,
    needs_start: bool,
}

impl RunInput {
    fn stop_secs(&self) -> u64 {
        self.stop_timeout.as_ref().map_or(UNDO_STOP_SECS, |d| d.get().as_secs())
    }

    /// The create request, everything but the name.
    pub(crate) fn body(&self, cx: &StepContext, key: &str) -> Result<ContainerCreateBody, Error> {
        let mut env = self.env.clone();
        let mut labels = self.labels.clone();
        labels.extend(step_labels(key, &cx.run_id, &cx.step.step));
        let mut host = HostConfig::default();
        if let Some(g) = &self.gpus {
            host.device_requests = Some(vec![g.device_request()]);
            for (k, v) in g.env() {
                env.entry(k).or_insert(engine_core::env::EnvValue(v));
            }
            if let Some(bytes) = g.memory_bytes() {
                labels.insert(LABEL_GPU_MEMORY.to_string(), bytes.to_string());
            }
        }
        let (exposed, bindings) = port_map(&self.ports)?;
        let mut binds = Vec::new();
        let mut anonymous = Vec::new();
        for v in &self.volumes {
            match parse_volume(v, &cx.workflow_dir)? {
                VolumeSpec::Bind(b) => binds.push(b),
                VolumeSpec::Anonymous(t) => anonymous.push(t),
            }
        }
        if !binds.is_empty() {
            host.binds = Some(binds);
        }
        if !bindings.is_empty() {
            host.port_bindings = Some(bindings);
        }
        host.restart_policy = self.restart.as_deref().map(parse_restart).transpose()?;
        host.network_mode.clone_from(&self.network);
        host.runtime.clone_from(&self.runtime);
        host.memory = self.memory.as_deref().map(size_i64).transpose()?;
        host.shm_size = self.shm_size.as_deref().map(size_i64).transpose()?;
        #[allow(clippy::cast_possible_truncation)]
        if let Some(c) = self.cpus {
            host.nano_cpus = Some((c * 1e9).round() as i64);
        }
        Ok(ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: self.command.as_ref().map(Command::argv).transpose()?,
            entrypoint: match &self.entrypoint {
                // `[]` clears the image's entrypoint: Docker wants `[""]` for that.
                Some(Command::Argv(v)) if v.is_empty() => Some(vec![String::new()]),
                Some(e) => Some(e.argv()?),
                None => None,
            },
            env: (!env.is_empty()).then(|| env_lines(&env)),
            labels: Some(labels.into_iter().collect()),
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            volumes: (!anonymous.is_empty()).then_some(anonymous),
            user: self.user.clone(),
            working_dir: self.workdir.clone(),
            hostname: self.hostname.clone(),
            healthcheck: self.healthcheck.as_ref().map(Healthcheck::config).transpose()?,
            stop_timeout: self.stop_timeout.as_ref().map(|d| i64::try_from(d.get().as_secs()).unwrap_or(i64::MAX)),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            host_config: Some(host),
            ..Default::default()
        })
    }
}

fn size_i64(s: &str) -> Result<i64, Error> {
    parse_size(s).map(|b| i64::try_from(b).unwrap_or(i64::MAX))
}

/// Find the container an earlier attempt of this step made, or create it.
async fn get_or_create(conn: &Conn, cx: &StepContext, input: &RunInput, key: &str, name: &str, body: ContainerCreateBody) -> Result<Got, Error> {
    let mut chosen: Option<Got> = None;
    for c in find_by_key(conn, key).await? {
        let Some(id) = c.id.clone() else { continue };
        let cname = c.names.as_ref().and_then(|n| n.first()).map_or_else(|| id.clone(), |n| n.trim_start_matches('/').to_string());
        let state = c.state.map(|s| s.to_string()).unwrap_or_default();
        let keep = match state.as_str() {
            "running" | "restarting" | "paused" => Some(false),
            "created" => Some(true),
            // The work of a waited run that exited 0 is done: adopt the result, do not run again.
            "exited" if !input.detach => match inspect(conn, &id).await? {
                Some(i) if exit_of(&i).0 == 0 => Some(false),
                _ => None,
            },
            _ => None,
        };
        match keep {
            Some(needs_start) if chosen.is_none() => {
                cx.log(LogStream::Stdout, &format!("adopting container {cname} ({state}), made by an earlier attempt of this step"));
                chosen = Some(Got { id, name: cname, adopted: true, needs_start });
            }
            _ => {
                cx.log(LogStream::Stdout, &format!("removing container {cname} ({state}) left by an earlier attempt of this step"));
                stop_and_remove(conn, &id, Some(0)).await?;
            }
        }
    }
    if let Some(got) = chosen {
        return Ok(got);
    }
    let what = format!("creating container {name}");
    match conn.docker.create_container(Some(CreateContainerOptionsBuilder::new().name(name).build()), body).await {
        Ok(created) => {
            for w in created.warnings.iter().filter(|w| !w.is_empty()) {
                cx.log(LogStream::Stderr, &format!("docker: {w}"));
            }
            Ok(Got { id: created.id, name: name.to_string(), adopted: false, needs_start: true })
        }
        Err(e) => {
            let e = conn.err(&what, e);
            if !e.is_conflict() {
                return Err(e);
            }
            // The name is taken: by this step's own container (made between our look and our
            // create), or by someone else's.
            match inspect(conn, name).await? {
                Some(c) if c.config.as_ref().and_then(|c| c.labels.as_ref()).and_then(|l| l.get(LABEL_KEY)).map(String::as_str) == Some(key) => {
                    let status = status_of(&c);
                    Ok(Got { id: c.id.unwrap_or_default(), name: name.to_string(), adopted: true, needs_start: status != "running" })
                }
                Some(c) => Err(Error::failed(
                    ErrorKind::Conflict,
                    format!(
                        "{what}: the name is taken by container {} which this step did not create (no {LABEL_KEY}={key} label); choose another `name`, leave `name` out, or remove that container",
                        c.id.as_deref().map_or("?", |i| &i[..i.len().min(12)])
                    ),
                )),
                None => Err(e),
            }
        }
    }
}

/// With `detach` and `wait_healthy`: poll until healthy.
async fn wait_healthy(conn: &Conn, cx: &StepContext, id: &str, name: &str, limit: Duration) -> Result<bollard::models::ContainerInspectResponse, Error> {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    loop {
        let c = inspect_existing(conn, id).await?;
        let status = status_of(&c);
        if matches!(status.as_str(), "exited" | "dead") {
            let (code, oom, _) = exit_of(&c);
            let tail = crate::logs::tail_text(conn, id, 5).await.unwrap_or_default();
            let tail = if tail.is_empty() { String::new() } else { format!(": {}", cx.masker.mask(&tail)) };
            return Err(exit_error(&format!("container {name} exited before it was healthy; it"), code, oom, &tail));
        }
        let health = health_of(&c);
        match health.as_deref() {
            None | Some("none") => {
                return Err(Error::Input(format!(
                    "container {name} has no health check, so `wait_healthy` cannot wait for one: give `healthcheck`, or leave `wait_healthy` out"
                )))
            }
            Some("healthy") => return Ok(c),
            Some("unhealthy") => {
                let out = last_probe(&c);
                return Err(Error::failed(ErrorKind::Transient, format!("container {name} is unhealthy{out}")));
            }
            Some(h) => {
                if h != last {
                    cx.log(LogStream::Stdout, &format!("container {name}: health {h}"));
                    last = h.to_string();
                }
            }
        }
        if Instant::now() >= deadline {
            let out = last_probe(&c);
            return Err(Error::failed(ErrorKind::Timeout, format!("container {name} was not healthy within {}s (health: {last}){out}", limit.as_secs())));
        }
        cx.sleep(Duration::from_millis(500)).await.map_err(|_| {
            Error::Cancelled(format!("cancelled while waiting for container {name} to be healthy; it is left running and recorded: `engine destroy` removes it"))
        })?;
    }
}

/// The output of the last health probe, for a message.
fn last_probe(c: &bollard::models::ContainerInspectResponse) -> String {
    c.state
        .as_ref()
        .and_then(|s| s.health.as_ref())
        .and_then(|h| h.log.as_ref())
        .and_then(|l| l.last())
        .and_then(|r| r.output.clone())
        .map(|o| o.trim().to_string())
        .filter(|o| !o.is_empty())
        .map_or_else(String::new, |o| format!("; last check said: {o}"))
}

#[async_trait]
impl Action for Run {
    const ID: &'static str = "container.run";
    const DESCRIPTION: &'static str = "run a container (GPUs, ports, volumes...): wait for its exit, or detach once it runs (and is healthy)";
    const RESOURCE: Option<&'static str> = Some(KIND);
    type Input = RunInput;
    type Output = RunOutput;

    fn validate(&self, input: &RunInput) -> Result<(), ConnectorError> {
        check(input).map_err(Into::into)
    }

    async fn run(&self, input: RunInput, cx: &StepContext) -> Result<RunOutput, ConnectorError> {
        let conn = self.clients.connect(cx, input.host.as_deref()).await.map_err(|e| masked(cx, e))?;
        let key = cx.idempotency_key();
        let name = input.name.clone().unwrap_or_else(|| name_for_key(&key));
        cx.progress("image", Some(5));
        let pulled = ensure_image(&conn, cx, &input.image, input.pull, input.auth.as_ref()).await.map_err(|e| masked(cx, e))?;
        let body = input.body(cx, &key).map_err(|e| masked(cx, e))?;

        // Durable before the create: if the engine dies now, undo finds the container by its label.
        let rec = cx.intend(KIND, &key).await?;
        cx.progress("create", Some(55));
        let got = get_or_create(&conn, cx, &input, &key, &name, body).await.map_err(|e| masked(cx, e))?;
        let payload = json!({ "id": got.id, "name": got.name, "host": conn.target.host, "stop_timeout": input.stop_secs() });
        let rec = cx.confirm(rec, got.id.clone(), payload).await?;

        if got.needs_start {
            cx.progress("start", Some(65));
            if let Err(e) = start(&conn, &got.id, &got.name).await {
                discard(&conn, cx, &rec, &got).await;
                return Err(masked(cx, e));
            }
        }
        let out = if input.detach { detached(&conn, cx, &input, &got).await } else { waited(&conn, cx, &input, &got, &rec).await };
        let mut out = out.map_err(|e| masked(cx, e))?;
        out.pulled = pulled;
        Ok(out)
    }

    async fn undo(&self, record: &ResourceRecord, cx: &StepContext) -> Result<(), ConnectorError> {
        crate::ops::undo_container(&self.clients, record, cx).await
    }
}

/// A container that could not start is removed at once (nothing is left behind); if even that
/// fails it stays recorded for `engine destroy`.
async fn discard(conn: &Conn, cx: &StepContext, rec: &ResourceRecord, got: &Got) {
    match stop_and_remove(conn, &got.id, Some(0)).await {
        Ok(_) => {
            cx.log(LogStream::Stderr, &format!("container {} did not start; removed it", got.name));
            if let Err(e) = forget(cx, rec).await {
                cx.log(LogStream::Stderr, &format!("could not record the removal of {}: {e}", got.name));
            }
        }
        Err(e) => cx.log(LogStream::Stderr, &format!("container {} did not start and could not be removed ({e}); it stays recorded for `engine destroy`", got.name)),
    }
}

async fn detached(conn: &Conn, cx: &StepContext, input: &RunInput, got: &Got) -> Result<RunOutput, Error> {
    let c = match &input.wait_healthy {
        Some(limit) => {
            cx.progress("healthy", Some(80));
            wait_healthy(conn, cx, &got.id, &got.name, limit.get()).await?
        }
        None => inspect_existing(conn, &got.id).await?,
    };
    let status = status_of(&c);
    cx.log(LogStream::Stdout, &format!("container {} is {status}", got.name));
    cx.progress("done", Some(100));
    Ok(RunOutput {
        id: got.id.clone(),
        name: got.name.clone(),
        image: input.image.clone(),
        adopted: got.adopted,
        pulled: false,
        exit_code: matches!(status.as_str(), "exited" | "dead").then(|| exit_of(&c).0),
        status,
        stdout: String::new(),
        stderr: String::new(),
        health: health_of(&c),
        ports: ports_of(&c),
        ip_address: ip_of(&c),
    })
}

async fn waited(conn: &Conn, cx: &StepContext, input: &RunInput, got: &Got, rec: &ResourceRecord) -> Result<RunOutput, Error> {
    cx.progress("running", Some(75));
    let cap = wait_with_logs(conn, cx, &got.id, &got.name).await?;
    let c = inspect_existing(conn, &got.id).await?;
    let (code, oom, docker_error) = exit_of(&c);
    if !docker_error.is_empty() {
        cx.log(LogStream::Stderr, &format!("docker: {docker_error}"));
    }
    let out = RunOutput {
        id: got.id.clone(),
        name: got.name.clone(),
        image: input.image.clone(),
        adopted: got.adopted,
        pulled: false,
        status: status_of(&c),
        exit_code: Some(code),
        stdout: cap.stdout.clone(),
        stderr: cap.stderr.clone(),
        health: health_of(&c),
        ports: BTreeMap::new(),
        ip_address: None,
    };
    if input.rm {
        remove(conn, &got.id, true, true).await?;
        forget(cx, rec).await.map_err(|e| Error::failed(e.kind, e.message))?;
    }
    cx.progress("done", Some(100));
    if code != 0 && input.check {
        return Err(exit_error(&format!("container {} ({})", got.name, input.image), code, oom, &cap.tail(cx)));
    }
    Ok(out)
}

/// The checks of `validate`.
fn check(input: &RunInput) -> Result<(), Error> {
    check_image(&input.image)?;
    if let Some(n) = &input.name {
        if !valid_name(n) {
            return Err(Error::Input(format!("name `{n}`: use letters, digits, `_`, `.` and `-`, starting with a letter or digit")));
        }
    }
    if let Some(c) = &input.command {
        c.argv()?;
    }
    if let Some(Command::Line(e)) = &input.entrypoint {
        crate::spec::split_words(e)?;
    }
    check_env(&input.env)?;
    if let Some(k) = input.labels.keys().find(|k| k.starts_with("engine.")) {
        return Err(Error::Input(format!("label `{k}`: the `engine.` labels are the connector's own")));
    }
    port_map(&input.ports)?;
    for v in &input.volumes {
        parse_volume(v, std::path::Path::new("."))?;
    }
    if let Some(g) = &input.gpus {
        g.check()?;
    }
    if let Some(r) = &input.restart {
        parse_restart(r)?;
    }
    for (field, v) in [("memory", &input.memory), ("shm_size", &input.shm_size)] {
        if let Some(v) = v {
            parse_size(v).map_err(|e| Error::Input(format!("{field}: {e}")))?;
        }
    }
    if let Some(c) = input.cpus {
        if !(c.is_finite() && c > 0.0) {
            return Err(Error::Input(format!("cpus: {c} is not a positive number of CPUs")));
        }
    }
    if let Some(h) = &input.healthcheck {
        h.config()?;
    }
    if input.wait_healthy.is_some() && !input.detach {
        return Err(Error::Input("`wait_healthy` needs `detach: true` (a waited run ends when the container exits)".into()));
    }
    if input.rm && input.detach {
        return Err(Error::Input("`rm` removes a container once it exited: it needs a waited run, not `detach: true`".into()));
    }
    if input.restart.as_deref().is_some_and(|r| r != "no") && !input.detach {
        return Err(Error::Input("a restart policy keeps the container running: use it with `detach: true`".into()));
    }
    Ok(())
}
