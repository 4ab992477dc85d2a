//! The `kubernetes` connector, on kube-rs.
//!
//! | action | what it does |
//! |---|---|
//! | `kubernetes.apply` | server-side apply (field manager `engine`) of manifests; each object a `kubernetes.object` resource, undone by a foreground delete |
//! | `kubernetes.delete` | delete by manifest or kind/name, waiting until gone |
//! | `kubernetes.wait` | a condition, a JSONPath value, or deletion |
//! | `kubernetes.logs` | a pod's log, or a Job's pods' |
//! | `kubernetes.job` | a GPU Job to completion: logs, exit code; unschedulable for lack of GPUs is `capacity` |
//! | `kubernetes.gpu_nodes` | nodes with allocatable and free `nvidia.com/gpu`, GPU labels, taints |
//! | `kubernetes.device_plugin` | NVIDIA device plugin DaemonSet present/running; installs a pinned version |
//!
//! Settings and kubeconfig resolution: [`client`]. Errors: [`client::classify`].
//!
//! ```
//! use engine_connector::Connector;
//! let ids: Vec<&str> = connector_kubernetes::KubernetesConnector.actions().iter().map(|a| a.id()).collect();
//! assert_eq!(ids, ["kubernetes.apply", "kubernetes.delete", "kubernetes.wait", "kubernetes.logs",
//!                  "kubernetes.job", "kubernetes.gpu_nodes", "kubernetes.device_plugin"]);
//! ```

pub mod apply;
pub mod client;
pub mod job;
pub mod manifest;
pub mod nodes;
pub mod wait;

use std::sync::Arc;

use engine_connector::{Connector, DynAction};

pub use apply::{Apply, ApplyInput, ApplyOutput, Delete, DeleteInput, DeleteOutput, ObjectRef, KIND as OBJECT_KIND};
pub use client::Settings;
pub use job::{Job, JobInput, JobOutput};
pub use nodes::{DevicePlugin, DevicePluginInput, DevicePluginOutput, GpuNodes, GpuNodesInput, GpuNodesOutput, DEVICE_PLUGIN_VERSION};
pub use wait::{Logs, LogsInput, LogsOutput, Wait, WaitInput, WaitOutput};

/// The `kubernetes` connector.
#[derive(Debug, Clone, Copy, Default)]
pub struct KubernetesConnector;

impl Connector for KubernetesConnector {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn description(&self) -> &'static str {
        "Kubernetes (kube-rs): server-side apply, delete, wait, logs, GPU jobs, GPU nodes, the NVIDIA device plugin"
    }

    fn actions(&self) -> Vec<Arc<dyn DynAction>> {
        vec![Arc::new(Apply), Arc::new(Delete), Arc::new(Wait), Arc::new(Logs), Arc::new(Job), Arc::new(GpuNodes), Arc::new(DevicePlugin)]
    }
}
