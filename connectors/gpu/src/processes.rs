//! `gpu.processes`.
//!
//! ## What it does
//! Lists the compute processes on the GPUs with
//! `nvidia-smi --query-compute-apps=gpu_uuid,pid,used_gpu_memory,process_name`, and
//! maps each to its GPU's index with `--query-gpu=index,uuid,name`. Memory is in MiB,
//! `null` where the driver does not say (inside containers, on Windows under WDDM).
//!
//! ## Undo
//! Nothing is created.
//!
//! ## Errors
//! As `gpu.list`.
//!
//! ## Example
//! ```yaml
//! who:
//!   uses: gpu.processes
//!   with: { gpus: [0] }
//! ```

use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, StepContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::client::Smi;
use crate::exec::HostInput;
use crate::gpus::GpuRef;

/// Input of `gpu.processes`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessesInput {
    /// Remote host to read over SSH (default: this machine).
    #[serde(default)]
    pub host: Option<HostInput>,
    /// Only processes on these GPUs (index, UUID or PCI bus id).
    #[serde(default)]
    pub gpus: Option<Vec<GpuRef>>,
}

/// A compute process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ComputeProcess {
    /// Index of its GPU (`null` when the UUID matched no GPU).
    pub gpu_index: Option<usize>,
    /// UUID of its GPU.
    pub gpu_uuid: Option<String>,
    /// Model of its GPU.
    pub gpu_name: Option<String>,
    /// Process id.
    pub pid: Option<u32>,
    /// Process name.
    pub name: Option<String>,
    /// GPU memory used, MiB.
    pub used_memory_mib: Option<u64>,
}

/// Output of `gpu.processes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProcessesOutput {
    /// Where the GPUs are.
    pub host: String,
    /// Number of processes.
    pub count: usize,
    /// The processes.
    pub processes: Vec<ComputeProcess>,
}

/// The compute processes on `smi`'s machine, optionally only on `gpus`.
///
/// # Errors
/// The failures of nvidia-smi; `not_found` when a `gpus` entry names no GPU.
pub async fn compute_processes(smi: &Smi, gpus: Option<&[GpuRef]>) -> Result<Vec<ComputeProcess>, ConnectorError> {
    let devices = smi.query_gpu(&["index", "uuid", "pci.bus_id", "name"]).await?;
    let info = |uuid: Option<&str>| devices.iter().find(|d| d.get("uuid").is_some() && d.get("uuid") == uuid);
    if let Some(refs) = gpus.filter(|r| !r.is_empty()) {
        for r in refs {
            if !devices.iter().any(|d| ref_matches(r, d)) {
                return Err(ConnectorError::not_found(format!("no GPU `{r}` on {}", smi.target())));
            }
        }
    }
    let rows = smi.query_compute_apps(&["gpu_uuid", "pid", "used_gpu_memory", "process_name"]).await?;
    Ok(rows
        .iter()
        .filter(|r| match gpus.filter(|g| !g.is_empty()) {
            None => true,
            Some(refs) => info(r.get("gpu_uuid")).is_some_and(|d| refs.iter().any(|x| ref_matches(x, d))),
        })
        .map(|r| {
            let d = info(r.get("gpu_uuid"));
            ComputeProcess {
                gpu_index: d.and_then(|d| d.num("index")),
                gpu_uuid: r.get("gpu_uuid").map(str::to_owned),
                gpu_name: d.and_then(|d| d.get("name")).map(str::to_owned),
                pid: r.num("pid"),
                name: r.get("process_name").map(str::to_owned),
                used_memory_mib: r.num("used_gpu_memory"),
            }
        })
        .collect())
}

/// Whether a `--query-gpu=index,uuid,pci.bus_id` row is the GPU `r` names.
fn ref_matches(r: &GpuRef, row: &crate::client::CsvRow) -> bool {
    let g = crate::smi::GpuInfo {
        index: row.num("index").unwrap_or(usize::MAX),
        uuid: row.get("uuid").map(str::to_owned),
        pci_bus_id: row.get("pci.bus_id").map(str::to_owned),
        ..crate::smi::GpuInfo::default()
    };
    r.matches(&g)
}

/// `gpu.processes`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Processes;

#[async_trait]
impl Action for Processes {
    const ID: &'static str = "gpu.processes";
    const DESCRIPTION: &'static str = "compute processes on the GPUs, with their memory";
    type Input = ProcessesInput;
    type Output = ProcessesOutput;

    async fn run(&self, input: ProcessesInput, cx: &StepContext) -> Result<ProcessesOutput, ConnectorError> {
        let smi = Smi::new(cx, input.host.as_ref()).await?;
        let processes = compute_processes(&smi, input.gpus.as_deref()).await?;
        Ok(ProcessesOutput { host: smi.target().to_string(), count: processes.len(), processes })
    }
}
