//! The `gpu` connector: NVIDIA GPUs through `nvidia-smi`, on this machine or on a remote
//! host given as `host:` (over SSH, with the ssh connector's library; see [`exec`]).
//!
//! | action | what |
//! |---|---|
//! | `gpu.list` | GPUs with memory, utilisation, temperature, power and allocations |
//! | `gpu.info` | everything `nvidia-smi -q -x` says, typed |
//! | `gpu.memory_info` | memory per GPU, MIG device and process, with totals |
//! | `gpu.cuda_info` | driver and CUDA versions, compute capabilities, toolkit |
//! | `gpu.processes` | compute processes (`--query-compute-apps`) |
//! | `gpu.topology` | `nvidia-smi topo -m` parsed: NVLink/PCIe links, CPU/NUMA affinity |
//! | `gpu.monitor` | samples for a duration, plus insights |
//! | `gpu.select` | ranks GPUs for a workload and explains the choice |
//! | `gpu.allocate` | holds GPUs in a ledger (resource `gpu.allocation`) |
//! | `gpu.deallocate` | releases an allocation |
//! | `gpu.reset` | `nvidia-smi -r`, refused while processes or allocations use the GPU |
//! | `gpu.mig` | MIG status, mode, instances (resource `gpu.mig_instance`) |
//! | `gpu.health` | the post-deployment check (seed 001 AC 8) |
//!
//! Settings (`connectors: gpu:`) are listed in [`client`]; the ledger in [`ledger`]; the
//! selection strategy in [`strategy`]. nvidia-smi's XML is read by [`smi`], its topology
//! matrix by [`topo`], its CSV by [`client::parse_csv`].

pub mod allocate;
pub mod client;
pub mod common;
pub mod cuda_info;
pub mod exec;
pub mod gpus;
pub mod health;
pub mod info;
pub mod ledger;
pub mod list;
pub mod mig;
pub mod monitor;
pub mod processes;
pub mod reset;
pub mod smi;
pub mod strategy;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod topo;
pub mod topology;

use std::sync::Arc;

use engine_connector::{Connector, DynAction};

pub use allocate::{Allocate, Deallocate, Select, ALLOCATION_KIND};
pub use cuda_info::CudaInfo;
pub use health::Health;
pub use info::{Info, MemoryInfo};
pub use list::List;
pub use mig::{Mig, MIG_KIND};
pub use monitor::Monitor;
pub use processes::Processes;
pub use reset::Reset;
pub use smi::{parse_query_xml, SmiError, SmiReport};
pub use topology::TopologyAction;

/// The `gpu` connector.
#[derive(Debug, Default, Clone)]
pub struct GpuConnector;

impl Connector for GpuConnector {
    fn name(&self) -> &'static str {
        "gpu"
    }
    fn description(&self) -> &'static str {
        "NVIDIA GPUs through nvidia-smi: list, inspect, monitor, select, allocate, reset, MIG, health"
    }
    fn actions(&self) -> Vec<Arc<dyn DynAction>> {
        vec![
            Arc::new(List),
            Arc::new(Info),
            Arc::new(Monitor),
            Arc::new(Allocate),
            Arc::new(Deallocate),
            Arc::new(CudaInfo),
            Arc::new(MemoryInfo),
            Arc::new(Processes),
            Arc::new(TopologyAction),
            Arc::new(Reset),
            Arc::new(Mig),
            Arc::new(Health),
            Arc::new(Select),
        ]
    }
}
