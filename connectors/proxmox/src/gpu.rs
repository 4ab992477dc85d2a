//! GPU passthrough (seed 004): the `hostpciN` values, the checks that a device exists on the
//! node and is given to no other VM, and `proxmox.gpu.list`.

use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, StepContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::client::Pve;

/// `gpu:` of `vm.create`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuPassthrough {
    /// Host PCI addresses (`0000:01:00.0`, or `01:00` for every function), one `hostpciN` each.
    #[serde(default)]
    pub pci_devices: Vec<String>,
    /// A cluster resource mapping (`/cluster/mapping/pci`) instead of addresses.
    #[serde(default)]
    pub mapping: Option<String>,
    /// PCI Express passthrough (`pcie=1`, needs the q35 machine, set when absent).
    #[serde(default = "yes")]
    pub pcie: bool,
    /// `x-vga=1`: the GPU is the VM's primary display.
    #[serde(default)]
    pub x_vga: bool,
    /// `rombar=0` when false (default: PVE's default, on).
    #[serde(default)]
    pub rombar: Option<bool>,
    /// Seed 004's "primary GPU": `x-vga=1` on the first device.
    #[serde(default)]
    pub primary: bool,
}

fn yes() -> bool {
    true
}

impl GpuPassthrough {
    /// Pure checks.
    ///
    /// # Errors
    /// `invalid`.
    pub fn validate(&self) -> Result<(), ConnectorError> {
        match (self.pci_devices.is_empty(), &self.mapping) {
            (true, None) => Err(ConnectorError::invalid("gpu: give `pci_devices` or `mapping`")),
            (false, Some(_)) => Err(ConnectorError::invalid("gpu: give `pci_devices` or `mapping`, not both")),
            _ if self.pci_devices.len() > 16 => Err(ConnectorError::invalid("gpu: at most 16 PCI devices (hostpci0..hostpci15)")),
            _ => {
                for d in &self.pci_devices {
                    if normalize(d).is_none() {
                        return Err(ConnectorError::invalid(format!("gpu: `{d}` is not a PCI address (0000:01:00.0 or 01:00.0)")));
                    }
                }
                Ok(())
            }
        }
    }

    /// `(key, value)` of each `hostpciN`.
    #[must_use]
    pub fn hostpci(&self) -> Vec<(String, String)> {
        let targets: Vec<String> = match &self.mapping {
            Some(m) => vec![format!("mapping={m}")],
            None => self.pci_devices.clone(),
        };
        targets
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                let mut v = t;
                if self.pcie {
                    v.push_str(",pcie=1");
                }
                if self.x_vga || (self.primary && i == 0) {
                    v.push_str(",x-vga=1");
                }
                if self.rombar == Some(false) {
                    v.push_str(",rombar=0");
                }
                (format!("hostpci{i}"), v)
            })
            .collect()
    }
}

/// `0000:01:00.0` from `01:00.0`, `0000:01:00` from `01:00`; lowercase. `None` for what is no address.
#[must_use]
pub fn normalize(addr: &str) -> Option<String> {
    let a = addr.trim().to_lowercase();
    let parts: Vec<&str> = a.split(':').collect();
    let (dom, bus, rest) = match parts.as_slice() {
        [b, r] => ("0000", *b, *r),
        [d, b, r] => (*d, *b, *r),
        _ => return None,
    };
    let (slot, func) = rest.split_once('.').map_or((rest, None), |(s, f)| (s, Some(f)));
    let hex = |s: &str, n: usize| s.len() == n && s.chars().all(|c| c.is_ascii_hexdigit());
    if !(hex(dom, 4) && hex(bus, 2) && hex(slot, 2) && func.is_none_or(|f| f.len() == 1 && f.chars().all(|c| c.is_digit(8)))) {
        return None;
    }
    Some(match func {
        Some(f) => format!("{dom}:{bus}:{slot}.{f}"),
        None => format!("{dom}:{bus}:{slot}"),
    })
}

/// Whether two addresses overlap (one names a whole device, the other one of its functions).
fn overlaps(a: &str, b: &str) -> bool {
    let (Some(a), Some(b)) = (normalize(a), normalize(b)) else { return false };
    a == b || a.starts_with(&format!("{b}.")) || b.starts_with(&format!("{a}."))
}

/// What a `hostpciN` value passes through: `Ok(address list)` or `Err(mapping name)`.
fn hostpci_targets(value: &str) -> Result<Vec<String>, String> {
    let first = value.split(',').next().unwrap_or("");
    let mut host = first.strip_prefix("host=").unwrap_or(first).to_string();
    for part in value.split(',') {
        if let Some(m) = part.strip_prefix("mapping=") {
            return Err(m.to_string());
        }
        if let Some(h) = part.strip_prefix("host=") {
            h.clone_into(&mut host);
        }
    }
    Ok(host.split(';').map(String::from).collect())
}

/// Every `(vmid, name, key, value)` of a `hostpciN` among the VMs of `node`.
///
/// # Errors
/// A classified API error.
pub async fn hostpci_in_use(pve: &Pve, node: &str) -> Result<Vec<(u64, String, String, String)>, ConnectorError> {
    let vms = pve.get(&format!("/nodes/{node}/qemu"), &[]).await?;
    let mut out = Vec::new();
    for vm in vms.as_array().into_iter().flatten() {
        let Some(vmid) = vm.get("vmid").and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))) else { continue };
        let name = vm.get("name").and_then(Value::as_str).unwrap_or("").to_string();
        let cfg = match pve.get(&format!("/nodes/{node}/qemu/{vmid}/config"), &[]).await {
            Ok(c) => c,
            Err(e) if e.kind == engine_connector::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for (k, v) in cfg.as_object().into_iter().flatten() {
            if k.starts_with("hostpci") && k[7..].chars().all(|c| c.is_ascii_digit()) {
                if let Some(v) = v.as_str() {
                    out.push((vmid, name.clone(), k.clone(), v.to_string()));
                }
            }
        }
    }
    Ok(out)
}

/// The node's PCI devices (`/nodes/{node}/hardware/pci`, every class).
///
/// # Errors
/// A classified API error.
pub async fn node_pci(pve: &Pve, node: &str) -> Result<Vec<Value>, ConnectorError> {
    let v = pve.get(&format!("/nodes/{node}/hardware/pci"), &[("pci-class-blacklist", String::new())]).await?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

/// The cluster's PCI mappings (`/cluster/mapping/pci`).
///
/// # Errors
/// A classified API error.
pub async fn mappings(pve: &Pve) -> Result<Vec<Value>, ConnectorError> {
    let v = pve.get("/cluster/mapping/pci", &[]).await?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

/// Check that the asked devices exist on `node` and no VM but `own_vmid` has them; the model
/// name of the first one (vendor + device name) when the node says.
///
/// # Errors
/// `not_found` for a device the node does not have, `conflict` for one another VM has.
pub async fn check_free(pve: &Pve, node: &str, gpu: &GpuPassthrough, own_vmid: u64) -> Result<Option<String>, ConnectorError> {
    let mut model = None;
    if let Some(m) = &gpu.mapping {
        let maps = mappings(pve).await?;
        let Some(found) = maps.iter().find(|x| x.get("id").and_then(Value::as_str) == Some(m)) else {
            let names: Vec<&str> = maps.iter().filter_map(|x| x.get("id").and_then(Value::as_str)).collect();
            return Err(ConnectorError::not_found(format!("PCI mapping `{m}` does not exist in the cluster (mappings: {})", if names.is_empty() { "none".into() } else { names.join(", ") })));
        };
        model = found.get("description").and_then(Value::as_str).filter(|d| !d.is_empty()).map(String::from);
    } else {
        let devices = node_pci(pve, node).await?;
        for want in &gpu.pci_devices {
            let hit = devices.iter().find(|d| d.get("id").and_then(Value::as_str).is_some_and(|id| overlaps(id, want)));
            let Some(hit) = hit else {
                let ids: Vec<&str> = devices.iter().filter_map(|d| d.get("id").and_then(Value::as_str)).take(20).collect();
                return Err(ConnectorError::not_found(format!("PCI device {want} does not exist on node {node} (its devices: {})", ids.join(", "))));
            };
            if model.is_none() {
                let vendor = hit.get("vendor_name").and_then(Value::as_str).unwrap_or("");
                let dev = hit.get("device_name").and_then(Value::as_str).unwrap_or("");
                let m = format!("{vendor} {dev}").trim().to_string();
                model = (!m.is_empty()).then_some(m);
            }
        }
    }
    for (vmid, name, key, value) in hostpci_in_use(pve, node).await? {
        if vmid == own_vmid {
            continue;
        }
        let taken = match (hostpci_targets(&value), &gpu.mapping) {
            (Err(m), Some(want)) => &m == want,
            (Ok(addrs), None) => addrs.iter().any(|a| gpu.pci_devices.iter().any(|w| overlaps(a, w))),
            _ => false,
        };
        if taken {
            return Err(ConnectorError::conflict(format!("the GPU is already given to VM {vmid} ({name}) on node {node}: {key}: {value}")));
        }
    }
    Ok(model)
}

/// Input of `proxmox.gpu.list`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuListInput {
    /// Node (default: the block's `node`, else the first online node).
    #[serde(default)]
    pub node: Option<String>,
    /// Every PCI device, not only display controllers (class 0x03).
    #[serde(default)]
    pub all: bool,
}

/// One PCI device.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PciDevice {
    /// `0000:01:00.0`.
    pub id: String,
    /// PCI class (`0x030000`).
    pub class: String,
    /// Vendor id and name.
    pub vendor: String,
    /// Vendor name.
    pub vendor_name: Option<String>,
    /// Device id.
    pub device: String,
    /// Device name.
    pub device_name: Option<String>,
    /// IOMMU group (-1: none, passthrough impossible).
    pub iommugroup: Option<i64>,
    /// Mappings that name this device on the node.
    pub mappings: Vec<String>,
    /// VMs (vmid) whose `hostpciN` has it, directly or through a mapping.
    pub used_by: Vec<u64>,
}

/// One cluster mapping.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PciMapping {
    /// Mapping name.
    pub id: String,
    /// Description.
    pub description: Option<String>,
    /// The raw map entries (`node=pve1,path=0000:01:00.0,id=10de:2330,...`).
    pub map: Vec<String>,
    /// VMs of the node that use it.
    pub used_by: Vec<u64>,
}

/// Output of `proxmox.gpu.list`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct GpuListOutput {
    /// The node.
    pub node: String,
    /// Devices.
    pub devices: Vec<PciDevice>,
    /// Cluster mappings.
    pub mappings: Vec<PciMapping>,
}

/// `proxmox.gpu.list`.
#[derive(Debug, Clone, Copy, Default)]
pub struct GpuList;

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(|x| x.as_str().map(String::from).or_else(|| x.as_i64().map(|n| n.to_string())))
}

#[async_trait]
impl Action for GpuList {
    const ID: &'static str = "proxmox.gpu.list";
    const DESCRIPTION: &'static str = "PCI devices of a node (GPUs by default) with IOMMU groups, names, mappings and the VMs using them";
    type Input = GpuListInput;
    type Output = GpuListOutput;

    async fn run(&self, input: GpuListInput, cx: &StepContext) -> Result<GpuListOutput, ConnectorError> {
        let pve = Pve::from_context(cx).await?;
        let node = pve.node(input.node.as_deref()).await?;
        let raw = node_pci(&pve, &node).await?;
        let maps = mappings(&pve).await?;
        let used = hostpci_in_use(&pve, &node).await?;
        let mut out_maps = Vec::new();
        for m in &maps {
            let id = s(m, "id").unwrap_or_default();
            let map: Vec<String> = m.get("map").and_then(Value::as_array).into_iter().flatten().filter_map(|x| x.as_str().map(String::from)).collect();
            let used_by = used.iter().filter(|u| hostpci_targets(&u.3).err().as_deref() == Some(id.as_str())).map(|u| u.0).collect();
            out_maps.push(PciMapping { id, description: s(m, "description"), map, used_by });
        }
        let mut devices = Vec::new();
        for d in &raw {
            let id = s(d, "id").unwrap_or_default();
            let class = s(d, "class").unwrap_or_default();
            if !input.all && !class.to_lowercase().starts_with("0x03") {
                continue;
            }
            let mapped: Vec<&PciMapping> = out_maps
                .iter()
                .filter(|m| m.map.iter().any(|e| e.split(',').any(|p| p == format!("node={node}")) && e.split(',').any(|p| p.strip_prefix("path=").is_some_and(|a| overlaps(a, &id)))))
                .collect();
            let mut used_by: Vec<u64> = used.iter().filter(|u| hostpci_targets(&u.3).is_ok_and(|a| a.iter().any(|a| overlaps(a, &id)))).map(|u| u.0).collect();
            used_by.extend(mapped.iter().flat_map(|m| m.used_by.iter().copied()));
            used_by.sort_unstable();
            used_by.dedup();
            devices.push(PciDevice {
                id,
                class,
                vendor: s(d, "vendor").unwrap_or_default(),
                vendor_name: s(d, "vendor_name"),
                device: s(d, "device").unwrap_or_default(),
                device_name: s(d, "device_name"),
                iommugroup: d.get("iommugroup").and_then(Value::as_i64),
                mappings: mapped.iter().map(|m| m.id.clone()).collect(),
                used_by,
            });
        }
        Ok(GpuListOutput { node, devices, mappings: out_maps })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostpci_values() {
        let g = GpuPassthrough { pci_devices: vec!["0000:01:00.0".into(), "02:00".into()], pcie: true, rombar: Some(false), primary: true, ..GpuPassthrough::default() };
        g.validate().unwrap();
        assert_eq!(g.hostpci(), [("hostpci0".to_string(), "0000:01:00.0,pcie=1,x-vga=1,rombar=0".to_string()), ("hostpci1".into(), "02:00,pcie=1,rombar=0".into())]);
        let m = GpuPassthrough { mapping: Some("a100".into()), pcie: false, ..GpuPassthrough::default() };
        assert_eq!(m.hostpci(), [("hostpci0".to_string(), "mapping=a100".to_string())]);
        assert!(GpuPassthrough::default().validate().is_err());
        assert!(GpuPassthrough { pci_devices: vec!["gpu0".into()], ..GpuPassthrough::default() }.validate().is_err());
    }

    #[test]
    fn overlapping_addresses() {
        assert!(overlaps("01:00.0", "0000:01:00.0"));
        assert!(overlaps("0000:01:00", "0000:01:00.1"));
        assert!(!overlaps("0000:01:00.0", "0000:01:00.1"));
        assert_eq!(hostpci_targets("host=01:00.0;01:00.1,pcie=1"), Ok(vec!["01:00.0".to_string(), "01:00.1".to_string()]));
        assert_eq!(hostpci_targets("mapping=a100,pcie=1"), Err("a100".to_string()));
    }
}
