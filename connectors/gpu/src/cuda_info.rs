//! `gpu.cuda_info`.
//!
//! ## What it does
//! Returns the driver version, the highest CUDA version the driver supports (from
//! `nvidia-smi -q -x`), each GPU's compute capability (`--query-gpu=compute_cap`,
//! drivers 510 and later; `null` before), and the CUDA toolkit found on the machine
//! (`nvcc --version`; `null` when there is no `nvcc`, which is normal on machines that
//! only run CUDA programs). With `min_cuda_version`, checks that the driver supports it.
//!
//! ## Undo
//! Nothing is created.
//!
//! ## Errors
//! As `gpu.list`; `min_cuda_version` newer than the driver supports: `invalid`, naming
//! both versions (a newer driver is needed).
//!
//! ## Example
//! ```yaml
//! cuda:
//!   uses: gpu.cuda_info
//!   with: { min_cuda_version: "12.1" }
//! ```

use std::cmp::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, LogStream, StepContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::client::{is_unknown_field, Smi};
use crate::exec::{HostInput, NOT_FOUND_STATUS};

/// Input of `gpu.cuda_info`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CudaInfoInput {
    /// Remote host to read over SSH (default: this machine).
    #[serde(default)]
    pub host: Option<HostInput>,
    /// Fail unless the driver supports at least this CUDA version (`"12.1"`).
    #[serde(default)]
    pub min_cuda_version: Option<String>,
}

/// One GPU's CUDA view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CudaGpu {
    /// nvidia-smi index.
    pub index: usize,
    /// UUID.
    pub uuid: Option<String>,
    /// Model.
    pub name: Option<String>,
    /// Compute capability (`8.0`); `null` when the driver cannot say.
    pub compute_capability: Option<String>,
}

/// The CUDA toolkit found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Toolkit {
    /// Release (`12.2`).
    pub version: String,
    /// Build (`V12.2.140`).
    pub build: Option<String>,
}

/// Output of `gpu.cuda_info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CudaInfoOutput {
    /// Where the GPUs are.
    pub host: String,
    /// NVIDIA driver version.
    pub driver_version: Option<String>,
    /// Highest CUDA version the driver supports.
    pub cuda_version: Option<String>,
    /// The CUDA toolkit (`nvcc`), if any.
    pub toolkit: Option<Toolkit>,
    /// Whether the driver supports `min_cuda_version` (`null` when not asked).
    pub compatible: Option<bool>,
    /// Per GPU.
    pub gpus: Vec<CudaGpu>,
}

/// Compare dotted versions numerically (`12.10` > `12.9`); `None` when one does not parse.
#[must_use]
pub fn compare_versions(a: &str, b: &str) -> Option<Ordering> {
    let parse = |s: &str| s.trim().split('.').map(|p| p.parse::<u64>().ok()).collect::<Option<Vec<u64>>>();
    let (mut a, mut b) = (parse(a)?, parse(b)?);
    let n = a.len().max(b.len());
    a.resize(n, 0);
    b.resize(n, 0);
    Some(a.cmp(&b))
}

/// The release and build in `nvcc --version` output
/// (`Cuda compilation tools, release 12.2, V12.2.140`).
#[must_use]
pub fn parse_nvcc(text: &str) -> Option<Toolkit> {
    let line = text.lines().find(|l| l.contains("release "))?;
    let after = &line[line.find("release ")? + "release ".len()..];
    let (version, build) = match after.split_once(',') {
        Some((v, b)) => (v.trim(), Some(b.trim().to_string()).filter(|b| !b.is_empty())),
        None => (after.trim(), None),
    };
    Some(Toolkit { version: version.to_string(), build })
}

/// `gpu.cuda_info`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CudaInfo;

#[async_trait]
impl Action for CudaInfo {
    const ID: &'static str = "gpu.cuda_info";
    const DESCRIPTION: &'static str = "driver and CUDA versions, compute capabilities, CUDA toolkit";
    type Input = CudaInfoInput;
    type Output = CudaInfoOutput;

    fn validate(&self, input: &CudaInfoInput) -> Result<(), ConnectorError> {
        if let Some(v) = &input.min_cuda_version {
            if compare_versions(v, "0").is_none() {
                return Err(ConnectorError::invalid(format!("`min_cuda_version: {v}` is not a version like `12.1`")));
            }
        }
        Ok(())
    }

    async fn run(&self, input: CudaInfoInput, cx: &StepContext) -> Result<CudaInfoOutput, ConnectorError> {
        let smi = Smi::new(cx, input.host.as_ref()).await?;
        let report = smi.report().await?;
        let caps = match smi.query_gpu(&["index", "uuid", "compute_cap"]).await {
            Ok(rows) => rows,
            Err(e) if is_unknown_field(&e) => {
                cx.log(LogStream::Stderr, "this driver cannot report compute capabilities (drivers 510 and later can)");
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        let gpus = report
            .gpus
            .iter()
            .map(|g| CudaGpu {
                index: g.index,
                uuid: g.uuid.clone(),
                name: g.product_name.clone(),
                compute_capability: caps
                    .iter()
                    .find(|r| match (r.get("uuid"), g.uuid.as_deref()) {
                        (Some(a), Some(b)) => a == b,
                        _ => r.num::<usize>("index") == Some(g.index),
                    })
                    .and_then(|r| r.get("compute_cap").map(str::to_owned)),
            })
            .collect();
        let nvcc = smi.run_other(&[&smi.settings.nvcc, "--version"], Duration::from_secs(30)).await?;
        let toolkit = if nvcc.success() {
            parse_nvcc(&nvcc.stdout)
        } else {
            if nvcc.status != NOT_FOUND_STATUS {
                cx.log(LogStream::Stderr, &format!("`{} --version` failed with exit {}: {}", smi.settings.nvcc, nvcc.status, nvcc.text(300)));
            }
            None
        };
        let compatible = match &input.min_cuda_version {
            None => None,
            Some(min) => {
                let ok = report.cuda_version.as_deref().and_then(|have| compare_versions(have, min)).is_some_and(|o| o != Ordering::Less);
                if !ok {
                    return Err(ConnectorError::invalid(format!(
                        "CUDA {min} is needed but the driver {} on {} supports CUDA {}: install a newer NVIDIA driver",
                        report.driver_version.as_deref().unwrap_or("(unknown version)"),
                        smi.target(),
                        report.cuda_version.as_deref().unwrap_or("(not reported)")
                    )));
                }
                Some(true)
            }
        };
        Ok(CudaInfoOutput { host: smi.target().to_string(), driver_version: report.driver_version, cuda_version: report.cuda_version, toolkit, compatible, gpus })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(compare_versions("12.10", "12.9"), Some(Ordering::Greater));
        assert_eq!(compare_versions("12.2", "12.2.0"), Some(Ordering::Equal));
        assert_eq!(compare_versions("11.7", "12"), Some(Ordering::Less));
        assert_eq!(compare_versions("12.x", "12"), None);
    }

    #[test]
    fn nvcc_output_is_read() {
        let text = "nvcc: NVIDIA (R) Cuda compiler driver\nCopyright (c) 2005-2023 NVIDIA Corporation\nBuilt on Tue_Jun_13_19:16:58_PDT_2023\nCuda compilation tools, release 12.2, V12.2.91\nBuild cuda_12.2.r12.2/compiler.32965470_0\n";
        assert_eq!(parse_nvcc(text), Some(Toolkit { version: "12.2".into(), build: Some("V12.2.91".into()) }));
        assert_eq!(parse_nvcc("nothing"), None);
    }
}
