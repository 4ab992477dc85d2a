//! `container.gpu_check`: prove that a container sees GPUs, by running `nvidia-smi` in one.

use std::sync::Arc;

use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, ErrorKind, LogStream, ResourceRecord, StepContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::client::Clients;
use crate::error::Error;
use crate::ops::{masked, PullPolicy, RegistryAuth};
use crate::run::{Run, RunInput};
use crate::spec::{check_image, parse_size, Command, GpuRequest};
use crate::KIND;

/// The query the default command makes.
pub const DEFAULT_QUERY: &[&str] = &["nvidia-smi", "--query-gpu=index,uuid,name,memory.total,driver_version", "--format=csv,noheader,nounits"];

fn one() -> u32 {
    1
}

/// Input of `container.gpu_check`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuCheckInput {
    /// The Docker daemon for this step: `unix:///path`, `tcp://HOST:PORT`, or
    /// `ssh://user@host[:port][/socket]` (through the ssh connector, to the remote
    /// `/var/run/docker.sock` unless a path is given). Default: the `connectors: container:`
    /// block's `host`, then `DOCKER_HOST`, then the local socket.
    #[serde(default)]
    pub host: Option<String>,
    /// The image to run the check in. The NVIDIA runtime mounts `nvidia-smi` and the driver's
    /// libraries into it (capability `utility`), so any glibc-based image does
    /// (`ubuntu:24.04`, `nvidia/cuda:12.4.1-base-ubuntu22.04`).
    pub image: String,
    /// The GPUs to ask for (default: all, with the `utility` capability `nvidia-smi` needs).
    #[serde(default)]
    pub gpus: Option<GpuRequest>,
    /// The command (default: `nvidia-smi --query-gpu=index,uuid,name,memory.total,driver_version
    /// --format=csv,noheader,nounits`). Lines in that CSV form, or in the form of `nvidia-smi -L`,
    /// are read as GPUs.
    #[serde(default)]
    pub command: Option<Command>,
    /// Fail when fewer GPUs are seen (default 1).
    #[serde(default = "one")]
    pub min_count: u32,
    /// When to pull the image: `missing` (default), `always`, `never`.
    #[serde(default)]
    pub pull: PullPolicy,
    /// Registry credentials for the pull.
    #[serde(default)]
    pub auth: Option<RegistryAuth>,
}

/// One GPU the container saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct GpuSeen {
    /// Index (`0`).
    pub index: u32,
    /// UUID (`GPU-...`), when reported.
    pub uuid: Option<String>,
    /// Model (`NVIDIA H100 80GB HBM3`).
    pub name: String,
    /// Total memory in MiB, when reported.
    pub memory_total_mib: Option<u64>,
    /// Driver version, when reported.
    pub driver_version: Option<String>,
}

/// Output of `container.gpu_check`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct GpuCheckOutput {
    /// The GPUs the container saw.
    pub gpus: Vec<GpuSeen>,
    /// How many.
    pub count: u32,
    /// The command's exit code.
    pub exit_code: i64,
    /// The command's standard output.
    pub stdout: String,
    /// The command's standard error.
    pub stderr: String,
    /// The image it ran in.
    pub image: String,
}

/// Read GPUs from `nvidia-smi --query-gpu=index,uuid,name,memory.total,driver_version
/// --format=csv,noheader,nounits` lines, or `nvidia-smi -L` lines
/// (`GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-...)`).
#[must_use]
pub fn parse_gpus(stdout: &str) -> Vec<GpuSeen> {
    let mut out = Vec::new();
    for line in stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("GPU ") {
            let Some((idx, desc)) = rest.split_once(':') else { continue };
            let Ok(index) = idx.trim().parse() else { continue };
            let (name, uuid) = match desc.rsplit_once("(UUID:") {
                Some((n, u)) => (n.trim().to_string(), Some(u.trim().trim_end_matches(')').trim().to_string())),
                None => (desc.trim().to_string(), None),
            };
            out.push(GpuSeen { index, uuid, name, memory_total_mib: None, driver_version: None });
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() < 3 {
            continue;
        }
        let Ok(index) = fields[0].parse() else { continue };
        let opt = |i: usize| fields.get(i).map(|s| (*s).to_string()).filter(|s| !s.is_empty() && s != "[N/A]");
        out.push(GpuSeen {
            index,
            uuid: opt(1),
            name: fields[2].to_string(),
            memory_total_mib: fields.get(3).and_then(|m| m.trim_end_matches("MiB").trim().parse().ok()),
            driver_version: opt(4),
        });
    }
    out
}

/// `container.gpu_check`: run `nvidia-smi` in a container with GPUs and report what it saw.
///
/// ## What it does
/// Runs `image` with `gpus` (default: all, capability `utility`), the command (default: an
/// `nvidia-smi --query-gpu` CSV query), waits for it, removes the container, and reads the GPUs
/// from the output. It fails when fewer than `min_count` GPUs are seen, or when `gpus.memory` is
/// given and a GPU has less. This is the proof that Docker's GPU runtime works end to end (seed
/// 001, AC 4 and 8): driver, toolkit, Docker configuration, device visibility.
///
/// ## Undo
/// The container is recorded (`container.container`) while it exists and removed when the check
/// ends; undo removes it if the step was interrupted first.
///
/// ## Errors
/// - `invalid`: the host has no NVIDIA Container Toolkit (the message says how to install it and
///   what `runtime_info` found); the command failed inside the container (no driver, a driver
///   and library mismatch); fewer GPUs than `min_count`; a GPU with less memory than
///   `gpus.memory`.
/// - `not_found`: the image is missing and cannot be pulled.
/// - `transient`: the daemon cannot be reached.
///
/// ## Example
/// ```yaml
/// gpu-health:
///   uses: container.gpu_check
///   with:
///     image: nvidia/cuda:12.4.1-base-ubuntu22.04
///     gpus: { count: 1, memory: 16GiB }
/// ```
#[derive(Debug, Clone, Default)]
pub struct GpuCheck {
    pub(crate) clients: Arc<Clients>,
}

impl GpuCheckInput {
    fn gpus(&self) -> GpuRequest {
        self.gpus.clone().unwrap_or_else(|| GpuRequest { all: true, capabilities: vec!["utility".into()], ..GpuRequest::default() })
    }

    fn run_input(&self) -> RunInput {
        RunInput {
            host: self.host.clone(),
            image: self.image.clone(),
            command: Some(self.command.clone().unwrap_or_else(|| Command::Argv(DEFAULT_QUERY.iter().map(|s| (*s).to_string()).collect()))),
            entrypoint: None,
            name: None,
            env: engine_core::env::EnvMap::new(),
            labels: std::collections::BTreeMap::new(),
            ports: Vec::new(),
            volumes: Vec::new(),
            gpus: Some(self.gpus()),
            runtime: None,
            restart: None,
            network: None,
            user: None,
            workdir: None,
            hostname: None,
            memory: None,
            cpus: None,
            shm_size: None,
            healthcheck: None,
            detach: false,
            wait_healthy: None,
            check: false,
            rm: true,
            pull: self.pull,
            auth: self.auth.clone(),
            stop_timeout: None,
        }
    }
}

#[async_trait]
impl Action for GpuCheck {
    const ID: &'static str = "container.gpu_check";
    const DESCRIPTION: &'static str = "run nvidia-smi (or a command) in a container with GPUs and report the GPUs it saw";
    const RESOURCE: Option<&'static str> = Some(KIND);
    type Input = GpuCheckInput;
    type Output = GpuCheckOutput;

    fn validate(&self, input: &GpuCheckInput) -> Result<(), ConnectorError> {
        check_image(&input.image)?;
        input.gpus().check()?;
        if let Some(c) = &input.command {
            c.argv()?;
        }
        Ok(())
    }

    async fn run(&self, input: GpuCheckInput, cx: &StepContext) -> Result<GpuCheckOutput, ConnectorError> {
        let run = Run { clients: self.clients.clone() };
        let out = run.run(input.run_input(), cx).await?;
        let code = out.exit_code.unwrap_or(-1);
        let tail = |text: &str| cx.masker.mask(text.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n").trim());
        if code != 0 {
            let said = if out.stderr.trim().is_empty() { tail(&out.stdout) } else { tail(&out.stderr) };
            return Err(masked(
                cx,
                Error::failed(
                    ErrorKind::Invalid,
                    format!("the GPU check in {} exited with code {code}: {said}; the container got GPUs but could not use them (is the NVIDIA driver loaded on the host, and does `nvidia-smi` work there?)", input.image),
                ),
            ));
        }
        let gpus = parse_gpus(&out.stdout);
        let count = u32::try_from(gpus.len()).unwrap_or(u32::MAX);
        for g in &gpus {
            cx.log(LogStream::Stdout, &format!("GPU {}: {}{}", g.index, g.name, g.memory_total_mib.map_or_else(String::new, |m| format!(", {m} MiB"))));
        }
        if count < input.min_count {
            return Err(masked(
                cx,
                Error::failed(ErrorKind::Invalid, format!("the container saw {count} GPU(s), fewer than min_count {}; output: {}", input.min_count, tail(&out.stdout))),
            ));
        }
        if let Some(want) = input.gpus().memory.as_deref() {
            let bytes = parse_size(want).map_err(|e| masked(cx, e))?;
            let want_mib = bytes / (1024 * 1024);
            match gpus.iter().find(|g| g.memory_total_mib.is_some_and(|m| m < want_mib)) {
                Some(g) => {
                    return Err(masked(
                        cx,
                        Error::failed(
                            ErrorKind::Invalid,
                            format!("GPU {} ({}) has {} MiB of memory, less than gpus.memory {want}", g.index, g.name, g.memory_total_mib.unwrap_or(0)),
                        ),
                    ))
                }
                None if gpus.iter().any(|g| g.memory_total_mib.is_none()) => cx.log(
                    LogStream::Stderr,
                    &format!("gpus.memory {want}: the output does not say how much memory every GPU has, so it was not checked for those"),
                ),
                None => {}
            }
        }
        Ok(GpuCheckOutput { gpus, count, exit_code: code, stdout: out.stdout, stderr: out.stderr, image: input.image })
    }

    async fn undo(&self, record: &ResourceRecord, cx: &StepContext) -> Result<(), ConnectorError> {
        crate::ops::undo_container(&self.clients, record, cx).await
    }
}
