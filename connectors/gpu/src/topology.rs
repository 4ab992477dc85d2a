//! `gpu.topology`.
//!
//! ## What it does
//! Runs `nvidia-smi topo -m` and returns its matrix parsed: each GPU's CPU and NUMA
//! affinity, the link between every pair of GPUs (`NV#` NVLinks, `PIX`, `PXB`, `PHB`,
//! `NODE`, `SYS`) and between GPUs and NICs, plus two digests: whether any GPUs are
//! joined by NVLink, and the GPUs grouped by NUMA affinity (for pinning processes).
//!
//! ## Undo
//! Nothing is created.
//!
//! ## Errors
//! As `gpu.list`; output without a matrix: `transient`.
//!
//! ## Example
//! ```yaml
//! topo:
//!   uses: gpu.topology
//! ```

use std::collections::BTreeMap;

use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, StepContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::client::Smi;
use crate::exec::HostInput;
use crate::topo::{parse_topo, LinkKind, Topology};

/// Input of `gpu.topology`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TopologyInput {
    /// Remote host to read over SSH (default: this machine).
    #[serde(default)]
    pub host: Option<HostInput>,
}

/// Output of `gpu.topology`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TopologyOutput {
    /// Where the GPUs are.
    pub host: String,
    /// The matrix.
    #[serde(flatten)]
    pub topology: Topology,
    /// Whether any two GPUs are joined by NVLink.
    pub nvlink: bool,
    /// GPU indices by NUMA affinity (`"0": [0, 1]`); GPUs with none under `"N/A"`.
    pub numa_groups: BTreeMap<String, Vec<usize>>,
}

/// `gpu.topology`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TopologyAction;

#[async_trait]
impl Action for TopologyAction {
    const ID: &'static str = "gpu.topology";
    const DESCRIPTION: &'static str = "GPU interconnect matrix (NVLink, PCIe), CPU and NUMA affinity";
    type Input = TopologyInput;
    type Output = TopologyOutput;

    async fn run(&self, input: TopologyInput, cx: &StepContext) -> Result<TopologyOutput, ConnectorError> {
        let smi = Smi::new(cx, input.host.as_ref()).await?;
        let out = smi.run(&["topo", "-m"]).await?;
        let topology = parse_topo(&out.stdout).map_err(|e| ConnectorError::transient(format!("reading `nvidia-smi topo -m` on {}: {e}: {}", smi.target(), out.text(300))))?;
        let nvlink = topology.gpu_links.iter().any(|l| l.kind == LinkKind::Nvlink);
        let mut numa_groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for g in &topology.gpus {
            if let Some(i) = g.index {
                numa_groups.entry(g.numa_affinity.clone().unwrap_or_else(|| "N/A".into())).or_default().push(i);
            }
        }
        Ok(TopologyOutput { host: smi.target().to_string(), topology, nvlink, numa_groups })
    }
}
