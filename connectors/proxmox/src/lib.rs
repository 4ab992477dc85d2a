//! The `proxmox` connector: Proxmox VE VMs over its API (`/api2/json`).
//!
//! | action | what it does |
//! |---|---|
//! | `proxmox.vm.create` | full-clone a template (or create) a VM: cores, memory, disk, `net0`, cloud-init, GPU passthrough (`hostpciN`, seed 004) after checking the device exists and is free; start; guest agent IP; a resource (`proxmox.vm`) |
//! | `proxmox.vm.start` / `vm.stop` / `vm.delete` | power and delete (purge), waiting for the tasks |
//! | `proxmox.gpu.list` | PCI devices of a node with IOMMU groups, names, mappings and the VMs using them |
//! | `proxmox.task.wait` | wait for a UPID task; a failed task is an error with its log tail |
//!
//! Requests, authentication (API token, or ticket + CSRF), TLS and error classification are in
//! [`client`].
//!
//! ```
//! use engine_connector::Connector;
//! let ids: Vec<&str> = connector_proxmox::ProxmoxConnector.actions().iter().map(|a| a.id()).collect();
//! assert_eq!(ids, ["proxmox.vm.create", "proxmox.vm.start", "proxmox.vm.stop", "proxmox.vm.delete",
//!                  "proxmox.gpu.list", "proxmox.task.wait"]);
//! ```

pub mod client;
pub mod gpu;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod vm;

use std::sync::Arc;

use engine_connector::{Connector, DynAction};

pub use client::{Pve, Settings};
pub use gpu::{GpuList, GpuListInput, GpuListOutput, GpuPassthrough};
pub use vm::{CreateInput, CreateOutput, TaskWait, TaskWaitInput, TaskWaitOutput, VmCreate, VmDelete, VmRef, VmStart, VmState, VmStop, KIND as VM_KIND};

/// The `proxmox` connector.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProxmoxConnector;

impl Connector for ProxmoxConnector {
    fn name(&self) -> &'static str {
        "proxmox"
    }

    fn description(&self) -> &'static str {
        "Proxmox VE VMs: clone/create with cloud-init and GPU passthrough, start/stop/delete, PCI devices, tasks"
    }

    fn actions(&self) -> Vec<Arc<dyn DynAction>> {
        vec![Arc::new(VmCreate), Arc::new(VmStart), Arc::new(VmStop), Arc::new(VmDelete), Arc::new(GpuList), Arc::new(TaskWait)]
    }
}
