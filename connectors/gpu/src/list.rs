//! `gpu.list`.
//!
//! ## What it does
//! Reads `nvidia-smi -q -x` and returns one summary per GPU: identity, memory (MiB),
//! utilisation (%), temperature (°C), power (W), MIG mode, process count, and the
//! allocations of the ledger that hold it. Values the GPU does not report are `null`.
//!
//! ## Undo
//! Nothing is created.
//!
//! ## Errors
//! No nvidia-smi, no NVML library, no driver: `invalid`, saying what to install or
//! load. A `gpus` entry that names no GPU: `not_found`.
//!
//! ## Example
//! ```yaml
//! gpus:
//!   uses: gpu.list
//! ```

use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, StepContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::client::Smi;
use crate::common::{allocations_or_warn, host_label};
use crate::exec::HostInput;
use crate::gpus::{pick, GpuRef};
use crate::ledger::Mode;
use crate::smi::GpuInfo;

/// Input of `gpu.list`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListInput {
    /// Remote host to read over SSH (default: this machine).
    #[serde(default)]
    pub host: Option<HostInput>,
    /// Only these GPUs (index, UUID or PCI bus id).
    #[serde(default)]
    pub gpus: Option<Vec<GpuRef>>,
}

/// An allocation holding a GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HeldBy {
    /// Allocation id.
    pub id: String,
    /// The key of the step that holds it.
    pub key: String,
    /// Exclusive or shared.
    pub mode: Mode,
}

/// One GPU, summarised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GpuSummary {
    /// nvidia-smi index.
    pub index: usize,
    /// UUID.
    pub uuid: Option<String>,
    /// Model.
    pub name: Option<String>,
    /// PCI bus id.
    pub pci_bus_id: Option<String>,
    /// Total memory, MiB.
    pub memory_total_mib: Option<u64>,
    /// Used memory, MiB.
    pub memory_used_mib: Option<u64>,
    /// Free memory, MiB.
    pub memory_free_mib: Option<u64>,
    /// GPU utilisation, percent.
    pub utilization_percent: Option<u32>,
    /// GPU temperature, °C.
    pub temperature_c: Option<i32>,
    /// Power draw, W.
    pub power_draw_w: Option<f64>,
    /// Power limit in effect, W.
    pub power_limit_w: Option<f64>,
    /// Performance state (`P0`...).
    pub performance_state: Option<String>,
    /// MIG mode now.
    pub mig_enabled: Option<bool>,
    /// Processes on the GPU.
    pub processes: usize,
    /// Ledger allocations holding it.
    pub allocated_to: Vec<HeldBy>,
}

/// Output of `gpu.list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ListOutput {
    /// Where the GPUs are: `local` or the host.
    pub host: String,
    /// NVIDIA driver version.
    pub driver_version: Option<String>,
    /// Highest CUDA version the driver supports.
    pub cuda_version: Option<String>,
    /// Number of GPUs listed.
    pub count: usize,
    /// The GPUs.
    pub gpus: Vec<GpuSummary>,
}

/// The summary of one GPU.
#[must_use]
pub fn summarise(g: &GpuInfo, allocated_to: Vec<HeldBy>) -> GpuSummary {
    GpuSummary {
        index: g.index,
        uuid: g.uuid.clone(),
        name: g.product_name.clone(),
        pci_bus_id: g.pci_bus_id.clone(),
        memory_total_mib: g.fb_memory.total_mib,
        memory_used_mib: g.fb_memory.used_mib,
        memory_free_mib: g.fb_memory.free_mib,
        utilization_percent: g.utilization.gpu_percent,
        temperature_c: g.temperature.gpu_c,
        power_draw_w: g.power.draw_w,
        power_limit_w: g.power.limit_w,
        performance_state: g.performance_state.clone(),
        mig_enabled: g.mig.current,
        processes: g.processes.len(),
        allocated_to,
    }
}

/// `gpu.list`.
#[derive(Debug, Clone, Copy, Default)]
pub struct List;

#[async_trait]
impl Action for List {
    const ID: &'static str = "gpu.list";
    const DESCRIPTION: &'static str = "list NVIDIA GPUs with memory, utilisation, temperature, power and allocations";
    type Input = ListInput;
    type Output = ListOutput;

    async fn run(&self, input: ListInput, cx: &StepContext) -> Result<ListOutput, ConnectorError> {
        let smi = Smi::new(cx, input.host.as_ref()).await?;
        let report = smi.report().await?;
        let picked = pick(&report, input.gpus.as_deref(), smi.target())?;
        let allocations = allocations_or_warn(cx, &host_label(cx, input.host.as_ref()));
        let gpus: Vec<GpuSummary> = picked
            .into_iter()
            .map(|g| {
                let held = allocations
                    .iter()
                    .filter(|a| a.gpus.iter().any(|h| h.is(g.index, g.uuid.as_deref())))
                    .map(|a| HeldBy { id: a.id.clone(), key: a.key.clone(), mode: a.mode })
                    .collect();
                summarise(g, held)
            })
            .collect();
        Ok(ListOutput { host: smi.target().to_string(), driver_version: report.driver_version, cuda_version: report.cuda_version, count: gpus.len(), gpus })
    }
}
