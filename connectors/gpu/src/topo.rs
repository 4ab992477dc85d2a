//! Parser of `nvidia-smi topo -m` (the topology matrix).
//!
//! The output is a tab-separated matrix: a header row of device names (`GPU0`, `GPU1`,
//! `NIC0` or `mlx5_0`, ...) followed by `CPU Affinity`, `NUMA Affinity` and, on newer
//! drivers, `GPU NUMA ID`; one row per device with the link type to every other device
//! (`X` for itself, `NV#` for # bonded NVLinks, `PIX`, `PXB`, `PHB`, `NODE`, `SYS`, `SOC`
//! on old drivers) and its affinities; then a `Legend:` and, on newer drivers, a
//! `NIC Legend:` naming each `NICn`. Terminals get the header underlined with ANSI
//! escapes; those are removed first.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Why a topology matrix could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopoError {
    /// No header row naming `GPU0`.
    #[error("nvidia-smi topo -m output has no matrix header (a line naming GPU0)")]
    NoHeader,
}

/// How two devices are connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LinkKind {
    /// Bonded NVLinks (`NV#`): the fastest.
    Nvlink,
    /// At most one PCIe bridge (`PIX`).
    Pix,
    /// Several PCIe bridges, no host bridge (`PXB`).
    Pxb,
    /// Through a PCIe host bridge, typically the CPU (`PHB`).
    Phb,
    /// Between PCIe host bridges within a NUMA node (`NODE`).
    Node,
    /// Across NUMA nodes over the SMP interconnect, QPI/UPI (`SYS`, `SOC` on old drivers).
    Sys,
    /// The device itself (`X`).
    SelfLink,
    /// A value this parser does not know.
    Unknown,
}

impl LinkKind {
    /// Parse a matrix cell; the number of NVLinks for `NV#`.
    #[must_use]
    pub fn parse(cell: &str) -> (Self, Option<u32>) {
        let c = cell.trim();
        if let Some(n) = c.strip_prefix("NV") {
            if let Ok(n) = n.parse() {
                return (Self::Nvlink, Some(n));
            }
        }
        let kind = match c {
            "X" => Self::SelfLink,
            "PIX" => Self::Pix,
            "PXB" => Self::Pxb,
            "PHB" => Self::Phb,
            "NODE" => Self::Node,
            "SYS" | "SOC" => Self::Sys,
            _ => Self::Unknown,
        };
        (kind, None)
    }

    /// Rank for "best link": lower is faster.
    #[must_use]
    pub fn rank(self) -> u8 {
        match self {
            Self::SelfLink => 0,
            Self::Nvlink => 1,
            Self::Pix => 2,
            Self::Pxb => 3,
            Self::Phb => 4,
            Self::Node => 5,
            Self::Sys => 6,
            Self::Unknown => 7,
        }
    }
}

/// One GPU's row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TopoGpu {
    /// Name in the matrix (`GPU0`).
    pub name: String,
    /// Its nvidia-smi index (from the name).
    pub index: Option<usize>,
    /// CPUs close to the GPU (`0-15,32-47`); `None` when `N/A`.
    pub cpu_affinity: Option<String>,
    /// NUMA node(s) close to the GPU; `None` when `N/A`.
    pub numa_affinity: Option<String>,
    /// The GPU's own NUMA node id (newer drivers; `None` when `N/A`).
    pub gpu_numa_id: Option<String>,
}

/// A link between two devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TopoLink {
    /// One device (`GPU0`).
    pub from: String,
    /// The other device (`GPU1`, `NIC0`).
    pub to: String,
    /// The cell as printed (`NV12`, `PHB`).
    pub link: String,
    /// The kind of link.
    pub kind: LinkKind,
    /// Number of bonded NVLinks, for NVLink.
    pub nvlinks: Option<u32>,
}

/// The parsed matrix.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Topology {
    /// GPU rows, in order.
    pub gpus: Vec<TopoGpu>,
    /// Other devices (NICs), as named in the matrix.
    pub nics: Vec<String>,
    /// `NIC0` → `mlx5_0`, from the NIC legend.
    pub nic_names: BTreeMap<String, String>,
    /// Every GPU-to-GPU link, each pair once.
    pub gpu_links: Vec<TopoLink>,
    /// Every GPU-to-NIC link.
    pub nic_links: Vec<TopoLink>,
}

/// Remove ANSI escape sequences (`\x1b[4m`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

fn absent(v: &str) -> Option<String> {
    let v = v.trim();
    (!v.is_empty() && !v.eq_ignore_ascii_case("N/A")).then(|| v.to_string())
}

/// Cells of a row. Tabs separate cells; rows printed with spaces instead (some captures
/// pasted by people) are split on runs of two or more spaces.
fn cells(line: &str) -> Vec<String> {
    if line.contains('\t') {
        line.split('\t').map(|c| c.trim().to_string()).collect()
    } else {
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut spaces = 0;
        for c in line.chars() {
            if c == ' ' {
                spaces += 1;
                continue;
            }
            if spaces >= 2 && !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            } else if spaces == 1 && !cur.is_empty() {
                cur.push(' ');
            }
            spaces = 0;
            cur.push(c);
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            out.insert(0, String::new());
        }
        out
    }
}

/// Parse the output of `nvidia-smi topo -m`.
///
/// # Errors
/// [`TopoError::NoHeader`] when there is no matrix.
pub fn parse_topo(text: &str) -> Result<Topology, TopoError> {
    let text = strip_ansi(text);
    let lines: Vec<&str> = text.lines().collect();
    let header_at = lines.iter().position(|l| cells(l).iter().any(|c| c == "GPU0")).ok_or(TopoError::NoHeader)?;
    let header: Vec<String> = cells(lines[header_at]).into_iter().filter(|c| !c.is_empty()).collect();
    let devices: Vec<String> = header.iter().take_while(|h| !h.contains("Affinity") && !h.contains("NUMA")).cloned().collect();
    let extra: Vec<String> = header[devices.len()..].to_vec();
    let mut topo = Topology::default();
    let mut matrix: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in &lines[header_at + 1..] {
        if line.trim().is_empty() || line.trim_start().starts_with("Legend") {
            break;
        }
        let row = cells(line);
        let Some(name) = row.first().filter(|n| !n.is_empty()).cloned() else { continue };
        let rest = &row[1..];
        let links: Vec<String> = rest.iter().take(devices.len()).cloned().collect();
        // Affinity columns: the non-empty cells after the device columns, in header order.
        let tail: Vec<&String> = rest.iter().skip(devices.len()).filter(|c| !c.is_empty()).collect();
        let col = |label: &str| extra.iter().position(|h| h == label).and_then(|i| tail.get(i)).and_then(|v| absent(v));
        if name.starts_with("GPU") {
            topo.gpus.push(TopoGpu {
                index: name.strip_prefix("GPU").and_then(|n| n.parse().ok()),
                cpu_affinity: col("CPU Affinity"),
                numa_affinity: col("NUMA Affinity"),
                gpu_numa_id: col("GPU NUMA ID"),
                name: name.clone(),
            });
        } else {
            topo.nics.push(name.clone());
        }
        matrix.insert(name, links);
    }
    // "NIC Legend:" lines: "  NIC0: mlx5_0".
    if let Some(at) = lines.iter().position(|l| l.trim_start().starts_with("NIC Legend")) {
        for l in &lines[at + 1..] {
            if let Some((k, v)) = l.trim().split_once(':') {
                if k.starts_with("NIC") {
                    topo.nic_names.insert(k.trim().to_string(), v.trim().to_string());
                }
            }
        }
    }
    for (i, a) in topo.gpus.iter().enumerate() {
        let Some(row) = matrix.get(&a.name) else { continue };
        for (j, dev) in devices.iter().enumerate() {
            let Some(cell) = row.get(j) else { continue };
            let (kind, nvlinks) = LinkKind::parse(cell);
            if kind == LinkKind::SelfLink {
                continue;
            }
            let link = TopoLink { from: a.name.clone(), to: dev.clone(), link: cell.clone(), kind, nvlinks };
            if dev.starts_with("GPU") {
                // Each pair once: only to GPUs after this one.
                if topo.gpus.iter().position(|g| &g.name == dev).is_some_and(|k| k > i) {
                    topo.gpu_links.push(link);
                }
            } else {
                topo.nic_links.push(link);
            }
        }
    }
    Ok(topo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_is_stripped() {
        assert_eq!(strip_ansi("\u{1b}[4mGPU0\tGPU1\u{1b}[0m"), "GPU0\tGPU1");
    }

    #[test]
    fn cells_split_on_tabs_or_wide_spaces() {
        assert_eq!(cells("\tGPU0\tGPU1\tCPU Affinity"), ["", "GPU0", "GPU1", "CPU Affinity"]);
        assert_eq!(cells("GPU0     X      NV12    0-31            0"), ["GPU0", "X", "NV12", "0-31", "0"]);
        assert_eq!(cells("        GPU0    GPU1    CPU Affinity    NUMA Affinity"), ["", "GPU0", "GPU1", "CPU Affinity", "NUMA Affinity"]);
    }

    #[test]
    fn link_kinds() {
        assert_eq!(LinkKind::parse("NV18"), (LinkKind::Nvlink, Some(18)));
        assert_eq!(LinkKind::parse(" X "), (LinkKind::SelfLink, None));
        assert_eq!(LinkKind::parse("SOC"), (LinkKind::Sys, None));
        assert_eq!(LinkKind::parse("NVX"), (LinkKind::Unknown, None));
        assert!(LinkKind::Nvlink.rank() < LinkKind::Sys.rank());
    }

    #[test]
    fn a_matrix_pasted_with_spaces_is_read_too() {
        let text = "        GPU0    GPU1    CPU Affinity    NUMA Affinity\nGPU0     X      PHB     0-11            N/A\nGPU1    PHB      X      0-11            N/A\n\nLegend:\n\n  X    = Self\n";
        let t = parse_topo(text).unwrap();
        assert_eq!(t.gpus.len(), 2);
        assert_eq!((t.gpus[1].index, t.gpus[1].cpu_affinity.as_deref(), t.gpus[1].numa_affinity.as_deref()), (Some(1), Some("0-11"), None));
        assert_eq!(t.gpu_links.len(), 1);
        assert_eq!((t.gpu_links[0].kind, t.gpu_links[0].link.as_str()), (LinkKind::Phb, "PHB"));
        assert!(t.nics.is_empty());
    }

    #[test]
    fn no_matrix_is_an_error() {
        assert_eq!(parse_topo("nothing here\n"), Err(TopoError::NoHeader));
    }
}
