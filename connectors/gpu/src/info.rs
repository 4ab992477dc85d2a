//! `gpu.info` and `gpu.memory_info`.
//!
//! ## What it does
//! `gpu.info` returns everything `nvidia-smi -q -x` says about each GPU, typed: identity,
//! memory, utilisation, temperatures and thresholds, power and limits, clocks, clock
//! event (throttle) reasons, PCIe link, MIG state, ECC errors, retired pages, remapped
//! rows and processes. `gpu.memory_info` returns the memory part only: framebuffer and
//! BAR1 memory per GPU, its MIG devices' memory, and the totals.
//!
//! ## Undo
//! Nothing is created.
//!
//! ## Errors
//! As `gpu.list`.
//!
//! ## Example
//! ```yaml
//! memory:
//!   uses: gpu.memory_info
//!   with: { gpus: [0] }
//! ```

use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, StepContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::client::Smi;
use crate::common::percent;
use crate::exec::HostInput;
use crate::gpus::{pick, GpuRef};
use crate::smi::{GpuInfo, MemoryUsage};

/// Input of `gpu.info` and `gpu.memory_info`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InfoInput {
    /// Remote host to read over SSH (default: this machine).
    #[serde(default)]
    pub host: Option<HostInput>,
    /// Only these GPUs (index, UUID or PCI bus id).
    #[serde(default)]
    pub gpus: Option<Vec<GpuRef>>,
}

/// Output of `gpu.info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InfoOutput {
    /// Where the GPUs are.
    pub host: String,
    /// When nvidia-smi took the report.
    pub timestamp: Option<String>,
    /// NVIDIA driver version.
    pub driver_version: Option<String>,
    /// Highest CUDA version the driver supports.
    pub cuda_version: Option<String>,
    /// GPUs attached to the machine.
    pub attached_gpus: Option<u32>,
    /// Version of nvidia-smi's XML format.
    pub dtd_version: Option<u32>,
    /// The GPUs.
    pub gpus: Vec<GpuInfo>,
}

/// `gpu.info`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Info;

#[async_trait]
impl Action for Info {
    const ID: &'static str = "gpu.info";
    const DESCRIPTION: &'static str = "everything nvidia-smi reports about each GPU, typed";
    type Input = InfoInput;
    type Output = InfoOutput;

    async fn run(&self, input: InfoInput, cx: &StepContext) -> Result<InfoOutput, ConnectorError> {
        let smi = Smi::new(cx, input.host.as_ref()).await?;
        let report = smi.report().await?;
        let gpus = pick(&report, input.gpus.as_deref(), smi.target())?.into_iter().cloned().collect();
        Ok(InfoOutput {
            host: smi.target().to_string(),
            timestamp: report.timestamp,
            driver_version: report.driver_version,
            cuda_version: report.cuda_version,
            attached_gpus: report.attached_gpus,
            dtd_version: report.dtd_version,
            gpus,
        })
    }
}

/// Memory of one MIG device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MigMemory {
    /// GPU instance id.
    pub gpu_instance_id: Option<u32>,
    /// Compute instance id.
    pub compute_instance_id: Option<u32>,
    /// Total, MiB.
    pub total_mib: Option<u64>,
    /// Used, MiB.
    pub used_mib: Option<u64>,
    /// Free, MiB.
    pub free_mib: Option<u64>,
}

/// Memory of one GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GpuMemory {
    /// nvidia-smi index.
    pub index: usize,
    /// UUID.
    pub uuid: Option<String>,
    /// Model.
    pub name: Option<String>,
    /// Total framebuffer memory, MiB.
    pub total_mib: Option<u64>,
    /// Used, MiB.
    pub used_mib: Option<u64>,
    /// Free, MiB.
    pub free_mib: Option<u64>,
    /// Reserved by the driver, MiB.
    pub reserved_mib: Option<u64>,
    /// Used, percent of total.
    pub used_percent: Option<f64>,
    /// BAR1 memory.
    pub bar1: MemoryUsage,
    /// MIG devices' memory.
    pub mig_devices: Vec<MigMemory>,
    /// Memory used by each process, MiB, by pid.
    pub processes: Vec<ProcessMemory>,
}

/// Memory one process uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProcessMemory {
    /// Process id.
    pub pid: Option<u32>,
    /// Process name.
    pub name: Option<String>,
    /// Used, MiB.
    pub used_mib: Option<u64>,
}

/// Output of `gpu.memory_info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MemoryInfoOutput {
    /// Where the GPUs are.
    pub host: String,
    /// Sum of the totals, MiB (of the GPUs that report it).
    pub total_mib: u64,
    /// Sum of the used memory, MiB.
    pub used_mib: u64,
    /// Sum of the free memory, MiB.
    pub free_mib: u64,
    /// Per GPU.
    pub gpus: Vec<GpuMemory>,
}

/// `gpu.memory_info`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryInfo;

#[async_trait]
impl Action for MemoryInfo {
    const ID: &'static str = "gpu.memory_info";
    const DESCRIPTION: &'static str = "GPU memory per GPU, MIG device and process, with totals";
    type Input = InfoInput;
    type Output = MemoryInfoOutput;

    async fn run(&self, input: InfoInput, cx: &StepContext) -> Result<MemoryInfoOutput, ConnectorError> {
        let smi = Smi::new(cx, input.host.as_ref()).await?;
        let report = smi.report().await?;
        let gpus: Vec<GpuMemory> = pick(&report, input.gpus.as_deref(), smi.target())?
            .into_iter()
            .map(|g| GpuMemory {
                index: g.index,
                uuid: g.uuid.clone(),
                name: g.product_name.clone(),
                total_mib: g.fb_memory.total_mib,
                used_mib: g.fb_memory.used_mib,
                free_mib: g.fb_memory.free_mib,
                reserved_mib: g.fb_memory.reserved_mib,
                used_percent: percent(g.fb_memory.used_mib, g.fb_memory.total_mib),
                bar1: g.bar1_memory.clone(),
                mig_devices: g
                    .mig
                    .devices
                    .iter()
                    .map(|d| MigMemory {
                        gpu_instance_id: d.gpu_instance_id,
                        compute_instance_id: d.compute_instance_id,
                        total_mib: d.fb_memory.total_mib,
                        used_mib: d.fb_memory.used_mib,
                        free_mib: d.fb_memory.free_mib,
                    })
                    .collect(),
                processes: g.processes.iter().map(|p| ProcessMemory { pid: p.pid, name: p.process_name.clone(), used_mib: p.used_memory_mib }).collect(),
            })
            .collect();
        let sum = |f: fn(&GpuMemory) -> Option<u64>| gpus.iter().filter_map(f).sum();
        Ok(MemoryInfoOutput { host: smi.target().to_string(), total_mib: sum(|g| g.total_mib), used_mib: sum(|g| g.used_mib), free_mib: sum(|g| g.free_mib), gpus })
    }
}
