//! Naming GPUs in inputs (`gpus: [0, "GPU-1234...", "00000000:17:00.0"]`) and picking
//! them out of a report.

use engine_connector::ConnectorError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::smi::{GpuInfo, SmiReport};

/// A GPU: its nvidia-smi index, its UUID (`GPU-...`) or its PCI bus id
/// (`00000000:17:00.0`, `0000:17:00.0` or `17:00.0`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum GpuRef {
    /// nvidia-smi index.
    Index(u32),
    /// UUID, PCI bus id, or an index written as text.
    Id(String),
}

impl std::fmt::Display for GpuRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Index(i) => write!(f, "{i}"),
            Self::Id(s) => f.write_str(s),
        }
    }
}

/// `(domain, bus, device, function)` of a PCI bus id.
fn pci(id: &str) -> Option<(u32, u32, u32, u32)> {
    let (rest, func) = id.trim().rsplit_once('.')?;
    let parts: Vec<&str> = rest.split(':').collect();
    let (domain, bus, dev) = match parts.as_slice() {
        [d, b, v] => (*d, *b, *v),
        [b, v] => ("0", *b, *v),
        _ => return None,
    };
    let hex = |s: &str| u32::from_str_radix(s, 16).ok();
    Some((hex(domain)?, hex(bus)?, hex(dev)?, hex(func)?))
}

impl GpuRef {
    /// Whether `gpu` is the GPU named.
    #[must_use]
    pub fn matches(&self, gpu: &GpuInfo) -> bool {
        match self {
            Self::Index(i) => usize::try_from(*i).is_ok_and(|i| i == gpu.index),
            Self::Id(s) => {
                let s = s.trim();
                if let Ok(i) = s.parse::<usize>() {
                    return i == gpu.index;
                }
                if gpu.uuid.as_deref().is_some_and(|u| u.eq_ignore_ascii_case(s)) {
                    return true;
                }
                match (pci(s), gpu.pci_bus_id.as_deref().and_then(pci)) {
                    (Some(a), Some(b)) => a == b,
                    _ => false,
                }
            }
        }
    }
}

/// The GPUs of `report` that `refs` names, in report order; all of them when `refs` is
/// `None` or empty.
///
/// # Errors
/// `not_found` when a reference names no GPU of the report.
pub fn pick<'a>(report: &'a SmiReport, refs: Option<&[GpuRef]>, target: &str) -> Result<Vec<&'a GpuInfo>, ConnectorError> {
    let Some(refs) = refs.filter(|r| !r.is_empty()) else {
        return Ok(report.gpus.iter().collect());
    };
    for r in refs {
        if !report.gpus.iter().any(|g| r.matches(g)) {
            let known: Vec<String> = report.gpus.iter().map(|g| format!("{} ({})", g.index, g.uuid.as_deref().unwrap_or("no uuid"))).collect();
            return Err(ConnectorError::not_found(format!(
                "no GPU `{r}` on {target}; it has {}: {}",
                report.gpus.len(),
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            )));
        }
    }
    Ok(report.gpus.iter().filter(|g| refs.iter().any(|r| r.matches(g))).collect())
}

/// The GPU name for messages: `GPU 1 (Tesla T4)`.
#[must_use]
pub fn describe(gpu: &GpuInfo) -> String {
    format!("GPU {} ({})", gpu.index, gpu.product_name.as_deref().unwrap_or("unknown model"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(index: usize, uuid: &str, bus: &str) -> GpuInfo {
        GpuInfo { index, uuid: Some(uuid.into()), pci_bus_id: Some(bus.into()), product_name: Some("X".into()), ..GpuInfo::default() }
    }

    #[test]
    fn refs_match_index_uuid_and_bus_id() {
        let g = gpu(1, "GPU-abc", "00000000:17:00.0");
        assert!(GpuRef::Index(1).matches(&g));
        assert!(!GpuRef::Index(0).matches(&g));
        assert!(GpuRef::Id("1".into()).matches(&g));
        assert!(GpuRef::Id("gpu-ABC".into()).matches(&g));
        assert!(GpuRef::Id("0000:17:00.0".into()).matches(&g));
        assert!(GpuRef::Id("17:00.0".into()).matches(&g));
        assert!(!GpuRef::Id("18:00.0".into()).matches(&g));
        assert!(!GpuRef::Id("GPU-abd".into()).matches(&g));
    }

    #[test]
    fn pick_reports_unknown_gpus() {
        let report = SmiReport { dtd_version: None, timestamp: None, driver_version: None, cuda_version: None, attached_gpus: Some(2), gpus: vec![gpu(0, "GPU-a", "01:00.0"), gpu(1, "GPU-b", "02:00.0")] };
        assert_eq!(pick(&report, None, "local").unwrap().len(), 2);
        let one = pick(&report, Some(&[GpuRef::Id("GPU-b".into())]), "local").unwrap();
        assert_eq!(one[0].index, 1);
        let e = pick(&report, Some(&[GpuRef::Index(5)]), "local").unwrap_err();
        assert_eq!(e.kind, engine_connector::ErrorKind::NotFound);
        assert!(e.message.contains("no GPU `5`") && e.message.contains("GPU-a"), "{}", e.message);
    }
}
