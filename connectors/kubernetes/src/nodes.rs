//! `kubernetes.gpu_nodes` and `kubernetes.device_plugin`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, ResourceRecord, StepContext};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ListParams};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::apply::{apply_recorded, undo_object, KIND};
use crate::client::{classify, connect, poll_delay, DurationSpec, Kube};
use crate::job::GPU_RESOURCE;
use crate::manifest;

/// A taint.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Taint {
    /// Key.
    pub key: String,
    /// Value.
    pub value: Option<String>,
    /// Effect.
    pub effect: String,
}

/// One node.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct GpuNode {
    /// Node name.
    pub name: String,
    /// `Ready` condition is True.
    pub ready: bool,
    /// Cordoned.
    pub unschedulable: bool,
    /// Allocatable `nvidia.com/gpu`.
    pub allocatable: u64,
    /// Capacity `nvidia.com/gpu`.
    pub capacity: u64,
    /// GPUs asked by the node's non-terminated pods (limits, else requests).
    pub used: u64,
    /// `allocatable - used`.
    pub free: u64,
    /// `nvidia.com/gpu.product`.
    pub product: Option<String>,
    /// `nvidia.com/gpu.memory` (MiB, as GPU feature discovery labels it).
    pub memory: Option<String>,
    /// `nvidia.com/gpu.count`.
    pub count: Option<String>,
    /// The node's `nvidia.com/*` labels.
    pub gpu_labels: BTreeMap<String, String>,
    /// Taints.
    pub taints: Vec<Taint>,
}

/// Input of `kubernetes.gpu_nodes`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuNodesInput {
    /// Only nodes matching this label selector.
    #[serde(default)]
    pub label_selector: Option<String>,
    /// Include nodes without GPUs too.
    #[serde(default)]
    pub all: bool,
    /// Only nodes with at least this many free GPUs.
    #[serde(default)]
    pub min_free: Option<u64>,
}

/// Output of `kubernetes.gpu_nodes`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct GpuNodesOutput {
    /// The nodes.
    pub nodes: Vec<GpuNode>,
    /// Sum of allocatable GPUs.
    pub total_gpus: u64,
    /// Sum of free GPUs on ready, schedulable nodes.
    pub free_gpus: u64,
}

/// `kubernetes.gpu_nodes`.
#[derive(Debug, Clone, Copy, Default)]
pub struct GpuNodes;

/// A whole-number quantity (`"4"`, `"4k"` is not used for GPUs).
#[must_use]
pub fn quantity_u64(q: Option<&Quantity>) -> u64 {
    q.and_then(|q| q.0.trim().parse::<f64>().ok()).map_or(0, |f| if f.is_sign_negative() { 0 } else { f as u64 })
}

/// GPUs a pod holds: sum over containers of limits (else requests) of `nvidia.com/gpu`.
#[must_use]
pub fn pod_gpus(p: &Pod) -> u64 {
    let Some(spec) = &p.spec else { return 0 };
    spec.containers
        .iter()
        .map(|c| {
            let r = c.resources.as_ref();
            let lim = r.and_then(|r| r.limits.as_ref()).and_then(|l| l.get(GPU_RESOURCE));
            let req = r.and_then(|r| r.requests.as_ref()).and_then(|l| l.get(GPU_RESOURCE));
            quantity_u64(lim.or(req))
        })
        .sum()
}

fn terminated(p: &Pod) -> bool {
    matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

/// Builds the node view from nodes and pods (pure, for tests).
#[must_use]
pub fn gpu_view(nodes: &[Node], pods: &[Pod]) -> Vec<GpuNode> {
    let mut used: BTreeMap<&str, u64> = BTreeMap::new();
    for p in pods.iter().filter(|p| !terminated(p)) {
        if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            *used.entry(n).or_default() += pod_gpus(p);
        }
    }
    nodes
        .iter()
        .map(|n| {
            let name = n.metadata.name.clone().unwrap_or_default();
            let labels = n.metadata.labels.clone().unwrap_or_default();
            let st = n.status.as_ref();
            let allocatable = quantity_u64(st.and_then(|s| s.allocatable.as_ref()).and_then(|a| a.get(GPU_RESOURCE)));
            let capacity = quantity_u64(st.and_then(|s| s.capacity.as_ref()).and_then(|a| a.get(GPU_RESOURCE)));
            let u = used.get(name.as_str()).copied().unwrap_or(0);
            let ready = st.and_then(|s| s.conditions.as_ref()).is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let spec = n.spec.as_ref();
            GpuNode {
                ready,
                unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
                allocatable,
                capacity,
                used: u,
                free: allocatable.saturating_sub(u),
                product: labels.get("nvidia.com/gpu.product").cloned(),
                memory: labels.get("nvidia.com/gpu.memory").cloned(),
                count: labels.get("nvidia.com/gpu.count").cloned(),
                gpu_labels: labels.iter().filter(|(k, _)| k.starts_with("nvidia.com/")).map(|(k, v)| (k.clone(), v.clone())).collect(),
                taints: spec.and_then(|s| s.taints.as_ref()).map(|t| t.iter().map(|t| Taint { key: t.key.clone(), value: t.value.clone(), effect: t.effect.clone() }).collect()).unwrap_or_default(),
                name,
            }
        })
        .collect()
}

#[async_trait]
impl Action for GpuNodes {
    const ID: &'static str = "kubernetes.gpu_nodes";
    const DESCRIPTION: &'static str = "nodes with allocatable and free nvidia.com/gpu, GPU labels, taints, readiness";
    type Input = GpuNodesInput;
    type Output = GpuNodesOutput;

    async fn run(&self, input: GpuNodesInput, cx: &StepContext) -> Result<GpuNodesOutput, ConnectorError> {
        let k = connect(cx, None).await?;
        let mut lp = ListParams::default();
        if let Some(s) = &input.label_selector {
            lp = lp.labels(s);
        }
        let nodes = Api::<Node>::all(k.client.clone()).list(&lp).await.map_err(|e| classify("listing nodes", e))?.items;
        let pods = Api::<Pod>::all(k.client.clone()).list(&ListParams::default()).await.map_err(|e| classify("listing pods", e))?.items;
        let mut view = gpu_view(&nodes, &pods);
        view.retain(|n| (input.all || n.allocatable > 0) && input.min_free.is_none_or(|m| n.free >= m));
        let total_gpus = view.iter().map(|n| n.allocatable).sum();
        let free_gpus = view.iter().filter(|n| n.ready && !n.unschedulable).map(|n| n.free).sum();
        Ok(GpuNodesOutput { nodes: view, total_gpus, free_gpus })
    }
}

/// The pinned NVIDIA device plugin version whose DaemonSet `install: true` applies.
pub const DEVICE_PLUGIN_VERSION: &str = "v0.17.0";
/// The label of the device plugin's pods (and of the DaemonSet this crate installs).
pub const DEVICE_PLUGIN_LABEL: (&str, &str) = ("name", "nvidia-device-plugin-ds");
/// NVIDIA's static DaemonSet manifest (`nvidia-device-plugin.yml`) of [`DEVICE_PLUGIN_VERSION`].
pub const DEVICE_PLUGIN_MANIFEST: &str = include_str!("nvidia-device-plugin.yml");

/// Input of `kubernetes.device_plugin`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DevicePluginInput {
    /// Namespace to look in and install to (default `kube-system`).
    #[serde(default = "kube_system")]
    pub namespace: String,
    /// Install the pinned version when it is not there (a `kubernetes.object` resource).
    #[serde(default)]
    pub install: bool,
    /// Wait for the DaemonSet to be ready (default true).
    #[serde(default = "yes")]
    pub wait: bool,
    /// How long (default 5m).
    #[serde(default)]
    pub timeout: Option<DurationSpec>,
}

fn kube_system() -> String {
    "kube-system".into()
}
fn yes() -> bool {
    true
}

/// Output of `kubernetes.device_plugin`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DevicePluginOutput {
    /// A device plugin DaemonSet exists.
    pub present: bool,
    /// Its pods are ready on every node it targets.
    pub running: bool,
    /// DaemonSet name.
    pub name: Option<String>,
    /// Namespace.
    pub namespace: String,
    /// `desiredNumberScheduled`.
    pub desired: i32,
    /// `numberReady`.
    pub ready: i32,
    /// Container image.
    pub image: Option<String>,
    /// Version (the image tag).
    pub version: Option<String>,
    /// This step installed it.
    pub installed: bool,
}

/// `kubernetes.device_plugin`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DevicePlugin;

fn is_device_plugin(d: &DaemonSet) -> bool {
    let (k, v) = DEVICE_PLUGIN_LABEL;
    let has = |m: Option<&BTreeMap<String, String>>| m.is_some_and(|m| m.get(k).is_some_and(|x| x == v) || m.get("app.kubernetes.io/name").is_some_and(|x| x == "nvidia-device-plugin"));
    has(d.metadata.labels.as_ref())
        || has(d.spec.as_ref().and_then(|s| s.selector.match_labels.as_ref()))
        || has(d.spec.as_ref().and_then(|s| s.template.metadata.as_ref()).and_then(|m| m.labels.as_ref()))
}

async fn find(k: &Kube, ns: &str) -> Result<Option<DaemonSet>, ConnectorError> {
    let list = Api::<DaemonSet>::namespaced(k.client.clone(), ns).list(&ListParams::default()).await.map_err(|e| classify(&format!("listing DaemonSets in {ns}"), e))?;
    Ok(list.items.into_iter().find(is_device_plugin))
}

fn describe(d: Option<&DaemonSet>, ns: &str, installed: bool) -> DevicePluginOutput {
    let st = d.and_then(|d| d.status.as_ref());
    let desired = st.map_or(0, |s| s.desired_number_scheduled);
    let ready = st.map_or(0, |s| s.number_ready);
    let image = d.and_then(|d| d.spec.as_ref()?.template.spec.as_ref()?.containers.first()?.image.clone());
    let version = image.as_deref().and_then(|i| i.rsplit_once(':')).map(|(_, t)| t.to_string()).filter(|t| !t.contains('/'));
    let observed = st.is_some() && d.and_then(|d| d.metadata.generation).is_none_or(|g| st.and_then(|s| s.observed_generation).is_none_or(|o| o >= g));
    DevicePluginOutput { present: d.is_some(), running: d.is_some() && observed && ready >= desired && st.is_some(), name: d.and_then(|d| d.metadata.name.clone()), namespace: ns.into(), desired, ready, image, version, installed }
}

#[async_trait]
impl Action for DevicePlugin {
    const ID: &'static str = "kubernetes.device_plugin";
    const DESCRIPTION: &'static str = "is the NVIDIA device plugin DaemonSet running; `install: true` applies a pinned version";
    const RESOURCE: Option<&'static str> = Some(KIND);
    type Input = DevicePluginInput;
    type Output = DevicePluginOutput;

    fn validate(&self, input: &DevicePluginInput) -> Result<(), ConnectorError> {
        if let Some(t) = &input.timeout {
            t.get()?;
        }
        Ok(())
    }

    async fn run(&self, input: DevicePluginInput, cx: &StepContext) -> Result<DevicePluginOutput, ConnectorError> {
        let k = connect(cx, None).await?;
        let ns = input.namespace.clone();
        let mut ds = find(&k, &ns).await?;
        let mut installed = false;
        if ds.is_none() && input.install {
            let mut objs = manifest::parse_yaml(DEVICE_PLUGIN_MANIFEST)?;
            for o in &mut objs {
                o["metadata"]["namespace"] = serde_json::json!(ns);
            }
            cx.progress(&format!("install NVIDIA device plugin {DEVICE_PLUGIN_VERSION}"), Some(10));
            apply_recorded(&k, cx, &objs, &ns, false).await?;
            installed = true;
            ds = find(&k, &ns).await?;
        }
        if ds.is_some() && (input.install || installed) && input.wait {
            let limit = input.timeout.as_ref().map(DurationSpec::get).transpose()?.unwrap_or(Duration::from_secs(300));
            let start = Instant::now();
            let mut n = 0;
            loop {
                let out = describe(ds.as_ref(), &ns, installed);
                if out.running {
                    break;
                }
                if start.elapsed() > limit {
                    return Err(ConnectorError::timeout(format!("the NVIDIA device plugin DaemonSet in {ns} has {}/{} pods ready after {}s", out.ready, out.desired, limit.as_secs())));
                }
                cx.sleep(poll_delay(n)).await?;
                n += 1;
                ds = find(&k, &ns).await?;
            }
        }
        cx.progress("done", Some(100));
        Ok(describe(ds.as_ref(), &ns, installed))
    }

    async fn undo(&self, record: &ResourceRecord, cx: &StepContext) -> Result<(), ConnectorError> {
        undo_object(record, cx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn free_gpus_subtract_limits_of_running_pods_only() {
        let nodes: Vec<Node> = serde_json::from_value(json!([
            {"metadata": {"name": "a", "labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.memory": "81559", "nvidia.com/gpu.count": "8", "kubernetes.io/os": "linux"}},
             "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
             "status": {"allocatable": {"nvidia.com/gpu": "8"}, "capacity": {"nvidia.com/gpu": "8"}, "conditions": [{"type": "Ready", "status": "True"}]}},
            {"metadata": {"name": "cpu"}, "status": {"allocatable": {"cpu": "4"}, "conditions": [{"type": "Ready", "status": "False"}]}}
        ]))
        .unwrap();
        let pod = |node: &str, gpus: &str, phase: &str| json!({"metadata": {"name": "p"}, "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": gpus}}}]}, "status": {"phase": phase}});
        let pods: Vec<Pod> = serde_json::from_value(json!([pod("a", "2", "Running"), pod("a", "1", "Pending"), pod("a", "4", "Succeeded")])).unwrap();
        let v = gpu_view(&nodes, &pods);
        assert_eq!((v[0].allocatable, v[0].used, v[0].free, v[0].ready), (8, 3, 5, true));
        assert_eq!(v[0].product.as_deref(), Some("NVIDIA-H100-80GB-HBM3"));
        assert_eq!(v[0].gpu_labels.len(), 3);
        assert_eq!(v[0].taints[0].effect, "NoSchedule");
        assert_eq!((v[1].allocatable, v[1].ready), (0, false));
    }

    #[test]
    fn the_embedded_manifest_is_the_pinned_daemonset() {
        let objs = manifest::parse_yaml(DEVICE_PLUGIN_MANIFEST).unwrap();
        assert_eq!(objs.len(), 1);
        let d: DaemonSet = serde_json::from_value(objs[0].clone()).unwrap();
        assert!(is_device_plugin(&d));
        let out = describe(Some(&d), "kube-system", false);
        assert_eq!(out.version.as_deref(), Some(DEVICE_PLUGIN_VERSION));
        assert!(!out.running, "no status yet: not running");
    }
}
