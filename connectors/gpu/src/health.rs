//! `gpu.health`: the post-deployment GPU check (seed 001, acceptance criterion 8).
//!
//! ## What it does
//! Runs these checks and reports each as passed or failed, with the reason:
//! - `driver`: nvidia-smi answers (the driver and NVML are installed and loaded);
//!   when it does not, the other GPU checks are not run;
//! - `gpu_count`: `expected_gpus` GPUs are visible (at least one when not given);
//! - `driver_version` / `cuda_version`: at least `min_driver_version` /
//!   `min_cuda_version`, when given;
//! - `memory`: every GPU has at least `min_memory_gb` / `min_memory_mb` in total, when
//!   given;
//! - `temperature`: every GPU is at or below `max_temperature_c` (default 85 °C);
//! - `ecc`: no uncorrectable ECC error since the driver loaded, on GPUs that report ECC;
//! - `memory_repair`: no page retirement or row remapping pending, no failed remapping;
//! - `reset_required`: the driver does not ask for a GPU reset;
//! - `container`, with `container_image`: `docker run --rm --gpus all IMAGE nvidia-smi -L`
//!   on the same machine lists the same GPUs (the NVIDIA Container Toolkit works). The
//!   image must contain nvidia-smi or get it from the toolkit (any CUDA base image).
//!
//! ## Failing
//! With `fail: true` (the default) an unhealthy result fails the step with an `invalid`
//! error listing the failed checks, so that a deployment stops there; `retry:` with
//! `on: [invalid]` can wait for a driver that is still being installed. With
//! `fail: false` the step succeeds and `healthy` says the result, for a later step's
//! `if:`.
//!
//! ## Undo
//! Nothing is created.
//!
//! ## Example
//! ```yaml
//! gpu-ok:
//!   uses: gpu.health
//!   with: { expected_gpus: 1, min_memory_gb: 20, container_image: nvidia/cuda:12.2.0-base-ubuntu22.04 }
//! ```

use std::cmp::Ordering;

use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, ErrorKind, StepContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::client::Smi;
use crate::common::min_memory_mib;
use crate::cuda_info::compare_versions;
use crate::exec::HostInput;
use crate::list::{summarise, GpuSummary};
use crate::smi::{GpuInfo, SmiReport};

fn yes() -> bool {
    true
}

fn default_max_temperature() -> i32 {
    85
}

/// Input of `gpu.health`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthInput {
    /// Remote host to check, over SSH (default: this machine).
    #[serde(default)]
    pub host: Option<HostInput>,
    /// How many GPUs must be visible (default: at least one).
    #[serde(default)]
    pub expected_gpus: Option<u32>,
    /// Total memory each GPU must have, GiB.
    #[serde(default)]
    pub min_memory_gb: Option<f64>,
    /// Total memory each GPU must have, MiB.
    #[serde(default)]
    pub min_memory_mb: Option<u64>,
    /// Highest acceptable GPU temperature, °C (default 85).
    #[serde(default = "default_max_temperature")]
    pub max_temperature_c: i32,
    /// Lowest acceptable driver version (`535.104`).
    #[serde(default)]
    pub min_driver_version: Option<String>,
    /// Lowest CUDA version the driver must support (`12.2`).
    #[serde(default)]
    pub min_cuda_version: Option<String>,
    /// Also check that a container sees the GPUs: runs
    /// `docker run --rm --gpus all IMAGE nvidia-smi -L`.
    #[serde(default)]
    pub container_image: Option<String>,
    /// Fail the step when a check fails (default true).
    #[serde(default = "yes")]
    pub fail: bool,
}

/// One check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Check {
    /// Name (`driver`, `gpu_count`, `memory`, ...).
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// What was found.
    pub detail: String,
}

/// Output of `gpu.health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HealthOutput {
    /// Where the GPUs are.
    pub host: String,
    /// Whether every check passed.
    pub healthy: bool,
    /// The checks, in order.
    pub checks: Vec<Check>,
    /// Names of the failed checks.
    pub failed: Vec<String>,
    /// One line.
    pub summary: String,
    /// Driver version.
    pub driver_version: Option<String>,
    /// Highest CUDA version the driver supports.
    pub cuda_version: Option<String>,
    /// The GPUs.
    pub gpus: Vec<GpuSummary>,
}

fn check(name: &str, passed: bool, detail: impl Into<String>) -> Check {
    Check { name: name.into(), passed, detail: detail.into() }
}

fn who(g: &GpuInfo) -> String {
    format!("GPU {}", g.index)
}

/// The checks on a report (everything but `driver` and `container`).
#[must_use]
pub fn report_checks(r: &SmiReport, input: &HealthInput, min_mib: Option<u64>) -> Vec<Check> {
    let mut out = Vec::new();
    let n = r.gpus.len();
    out.push(match input.expected_gpus {
        Some(want) => check("gpu_count", n == want as usize, format!("{n} GPUs visible, {want} expected")),
        None => check("gpu_count", n > 0, format!("{n} GPUs visible")),
    });
    let version_check = |name: &str, have: Option<&str>, min: &str| {
        let ok = have.and_then(|h| compare_versions(h, min)).is_some_and(|o| o != Ordering::Less);
        check(name, ok, format!("{} found, {min} or later needed", have.unwrap_or("none")))
    };
    if let Some(min) = &input.min_driver_version {
        out.push(version_check("driver_version", r.driver_version.as_deref(), min));
    }
    if let Some(min) = &input.min_cuda_version {
        out.push(version_check("cuda_version", r.cuda_version.as_deref(), min));
    }
    if let Some(min) = min_mib {
        let short: Vec<String> = r.gpus.iter().filter(|g| g.fb_memory.total_mib.is_none_or(|t| t < min)).map(|g| format!("{} has {} MiB", who(g), g.fb_memory.total_mib.map_or("unknown".into(), |t| t.to_string()))).collect();
        out.push(if short.is_empty() { check("memory", true, format!("every GPU has at least {min} MiB")) } else { check("memory", false, format!("{} ({min} MiB needed)", short.join(", "))) });
    }
    let limit = input.max_temperature_c;
    let hot: Vec<String> = r.gpus.iter().filter_map(|g| g.temperature.gpu_c.filter(|t| *t > limit).map(|t| format!("{} at {t} °C", who(g)))).collect();
    let temps: Vec<String> = r.gpus.iter().filter_map(|g| g.temperature.gpu_c.map(|t| format!("{} {t} °C", who(g)))).collect();
    out.push(if hot.is_empty() {
        check("temperature", true, format!("{} (limit {limit} °C)", if temps.is_empty() { "no temperature reported".into() } else { temps.join(", ") }))
    } else {
        check("temperature", false, format!("{} (limit {limit} °C)", hot.join(", ")))
    });
    let reported: Vec<&GpuInfo> = r.gpus.iter().filter(|g| g.ecc_errors.volatile_uncorrectable.is_some()).collect();
    let bad: Vec<String> = reported.iter().filter(|g| g.ecc_errors.volatile_uncorrectable.unwrap_or(0) > 0).map(|g| format!("{}: {} uncorrectable", who(g), g.ecc_errors.volatile_uncorrectable.unwrap_or(0))).collect();
    out.push(match (reported.is_empty(), bad.is_empty()) {
        (true, _) => check("ecc", true, "no GPU reports ECC errors (ECC off or not supported)"),
        (false, true) => check("ecc", true, format!("no uncorrectable ECC error on {} GPUs reporting ECC", reported.len())),
        (false, false) => check("ecc", false, bad.join(", ")),
    });
    let repair: Vec<String> = r
        .gpus
        .iter()
        .flat_map(|g| {
            let mut v = Vec::new();
            if g.retired_pages.pending == Some(true) {
                v.push(format!("{}: page retirement pending (reload the driver or reboot)", who(g)));
            }
            if g.remapped_rows.pending == Some(true) {
                v.push(format!("{}: row remapping pending (reset the GPU)", who(g)));
            }
            if g.remapped_rows.failure == Some(true) {
                v.push(format!("{}: row remapping failed (the board needs service)", who(g)));
            }
            v
        })
        .collect();
    out.push(if repair.is_empty() { check("memory_repair", true, "no page retirement or row remapping pending or failed") } else { check("memory_repair", false, repair.join(", ")) });
    let reset: Vec<String> = r.gpus.iter().filter(|g| g.reset_required == Some(true)).map(who).collect();
    out.push(if reset.is_empty() { check("reset_required", true, "no GPU asks for a reset") } else { check("reset_required", false, format!("{} ask for a reset (`gpu.reset`)", reset.join(", "))) });
    out
}

/// The GPU UUIDs in `nvidia-smi -L` output
/// (`GPU 0: NVIDIA A10G (UUID: GPU-6a3c...)`), one entry per GPU line.
#[must_use]
pub fn parse_list(text: &str) -> Vec<Option<String>> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("GPU ") && l.contains(':'))
        .map(|l| l.split_once("(UUID: ").and_then(|(_, rest)| rest.split(')').next()).map(|u| u.trim().to_string()))
        .collect()
}

/// `gpu.health`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Health;

#[async_trait]
impl Action for Health {
    const ID: &'static str = "gpu.health";
    const DESCRIPTION: &'static str = "post-deployment GPU check: driver, count, memory, temperature, ECC, container access";
    type Input = HealthInput;
    type Output = HealthOutput;

    fn validate(&self, input: &HealthInput) -> Result<(), ConnectorError> {
        min_memory_mib(input.min_memory_gb, input.min_memory_mb)?;
        for (name, v) in [("min_driver_version", &input.min_driver_version), ("min_cuda_version", &input.min_cuda_version)] {
            if let Some(v) = v {
                if compare_versions(v, "0").is_none() {
                    return Err(ConnectorError::invalid(format!("`{name}: {v}` is not a version like `535.104`")));
                }
            }
        }
        if input.container_image.as_deref().is_some_and(|i| i.trim().is_empty() || i.starts_with('-')) {
            return Err(ConnectorError::invalid("`container_image` must name an image"));
        }
        Ok(())
    }

    async fn run(&self, input: HealthInput, cx: &StepContext) -> Result<HealthOutput, ConnectorError> {
        let min_mib = min_memory_mib(input.min_memory_gb, input.min_memory_mb)?;
        let smi = Smi::new(cx, input.host.as_ref()).await?;
        let mut checks = Vec::new();
        cx.progress("driver", Some(10));
        let report = match smi.report().await {
            Ok(r) => {
                checks.push(check(
                    "driver",
                    true,
                    format!("nvidia-smi answers: driver {}, CUDA {}", r.driver_version.as_deref().unwrap_or("(version not reported)"), r.cuda_version.as_deref().unwrap_or("(not reported)")),
                ));
                Some(r)
            }
            Err(e) if e.kind == ErrorKind::Cancelled => return Err(e),
            Err(e) => {
                checks.push(check("driver", false, e.message));
                None
            }
        };
        if let Some(r) = &report {
            checks.extend(report_checks(r, &input, min_mib));
            if let Some(image) = &input.container_image {
                cx.progress("container", Some(50));
                let docker = smi.settings.docker.clone();
                let argv = [docker.as_str(), "run", "--rm", "--gpus", "all", image.as_str(), "nvidia-smi", "-L"];
                let out = smi.run_other(&argv, smi.settings.container_timeout).await;
                checks.push(match out {
                    Err(e) if e.kind == ErrorKind::Cancelled => return Err(e),
                    Err(e) => check("container", false, e.message),
                    Ok(o) if o.status == crate::exec::NOT_FOUND_STATUS => check("container", false, format!("`{docker}` was not found on {}: install Docker, or set `connectors: gpu: docker:`", smi.target())),
                    Ok(o) if !o.success() => {
                        let said = o.text(600);
                        let hint = if said.contains("could not select device driver") {
                            ": Docker has no GPU support; install the NVIDIA Container Toolkit and run `nvidia-ctk runtime configure --runtime=docker`, then restart Docker"
                        } else {
                            ""
                        };
                        check("container", false, format!("`{}` failed with exit {}{hint}: {said}", argv.join(" "), o.status))
                    }
                    Ok(o) => {
                        let seen = parse_list(&o.stdout);
                        let host_uuids: Vec<&str> = r.gpus.iter().filter_map(|g| g.uuid.as_deref()).collect();
                        let missing: Vec<&str> = host_uuids.iter().copied().filter(|u| !seen.iter().flatten().any(|s| s == u)).collect();
                        if seen.len() == r.gpus.len() && (missing.is_empty() || seen.iter().all(Option::is_none)) {
                            check("container", true, format!("a container of {image} sees {} GPUs", seen.len()))
                        } else {
                            check("container", false, format!("a container of {image} sees {} of {} GPUs{}", seen.len(), r.gpus.len(), if missing.is_empty() { String::new() } else { format!(" (missing {})", missing.join(", ")) }))
                        }
                    }
                });
            }
        }
        let failed: Vec<String> = checks.iter().filter(|c| !c.passed).map(|c| c.name.clone()).collect();
        let healthy = failed.is_empty();
        let summary = if healthy {
            format!("healthy: {} checks passed on {}", checks.len(), smi.target())
        } else {
            let why: Vec<String> = checks.iter().filter(|c| !c.passed).map(|c| format!("{}: {}", c.name, c.detail)).collect();
            format!("unhealthy: {} of {} checks failed on {}: {}", failed.len(), checks.len(), smi.target(), why.join("; "))
        };
        cx.progress("done", Some(100));
        if !healthy && input.fail {
            return Err(ConnectorError::invalid(format!("gpu health check failed ({summary}); pass `fail: false` to get the result as outputs instead")));
        }
        Ok(HealthOutput {
            host: smi.target().to_string(),
            healthy,
            checks,
            failed,
            summary,
            driver_version: report.as_ref().and_then(|r| r.driver_version.clone()),
            cuda_version: report.as_ref().and_then(|r| r.cuda_version.clone()),
            gpus: report.as_ref().map(|r| r.gpus.iter().map(|g| summarise(g, Vec::new())).collect()).unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvidia_smi_l_is_read() {
        let text = "GPU 0: NVIDIA A10G (UUID: GPU-6a3c0b9e-8c4a-11ee-b9d1-0242ac120002)\nGPU 1: Tesla T4 (UUID: GPU-d37e67a5-91dd-3774-a5cb-99096249601a)\n  MIG 1g.10gb     Device  0: (UUID: MIG-abc)\n";
        assert_eq!(parse_list(text), [Some("GPU-6a3c0b9e-8c4a-11ee-b9d1-0242ac120002".to_string()), Some("GPU-d37e67a5-91dd-3774-a5cb-99096249601a".to_string())]);
        assert!(parse_list("").is_empty());
    }
}
