//! The GPU catalogue: EC2 GPU instance types with their GPUs (seed 001), the
//! `gpu_type × gpu_count → instance type` table (seed 003), and a dated price table.
//!
//! Prices are **approximate** public on-demand list prices for Linux in us-east-1, in USD per
//! hour, as of [`PRICE_TABLE_DATE`] (after AWS's June 2025 cut for P4d/P5); other regions cost
//! more or less. The spot figures are typical, not quoted: [`SPOT_FACTOR`] of on-demand,
//! rounded. `aws.cost.estimate` reads live spot prices where the API answers.

use engine_connector::ConnectorError;
use schemars::JsonSchema;
use serde::Serialize;

/// When the price table was written.
pub const PRICE_TABLE_DATE: &str = "2025-06-15";
/// Typical spot price as a share of on-demand (GPU types, us-east-1, 2025; varies by hour and zone).
pub const SPOT_FACTOR: f64 = 0.35;

/// One GPU instance type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuInstance {
    /// `g5.xlarge`.
    pub instance_type: &'static str,
    /// The catalogue's GPU type: `t4`, `a10g`, `v100`, `a100`, `l4`, `l40s`, `h100`.
    pub gpu_type: &'static str,
    /// `NVIDIA A10G`.
    pub gpu_model: &'static str,
    /// GPUs per instance.
    pub gpu_count: u32,
    /// Memory of one GPU, GiB.
    pub gpu_memory_gb: u32,
    /// vCPUs.
    pub vcpu: u32,
    /// RAM, GiB.
    pub memory_gb: u32,
    /// On-demand USD per hour, us-east-1, approximate.
    pub on_demand: f64,
}

#[allow(clippy::too_many_arguments)]
const fn g(instance_type: &'static str, gpu_type: &'static str, gpu_model: &'static str, gpu_count: u32, gpu_memory_gb: u32, vcpu: u32, memory_gb: u32, on_demand: f64) -> GpuInstance {
    GpuInstance { instance_type, gpu_type, gpu_model, gpu_count, gpu_memory_gb, vcpu, memory_gb, on_demand }
}

/// Every GPU instance type the connector knows.
pub const CATALOGUE: &[GpuInstance] = &[
    g("g4dn.xlarge", "t4", "NVIDIA T4", 1, 16, 4, 16, 0.526),
    g("g4dn.2xlarge", "t4", "NVIDIA T4", 1, 16, 8, 32, 0.752),
    g("g4dn.4xlarge", "t4", "NVIDIA T4", 1, 16, 16, 64, 1.204),
    g("g4dn.8xlarge", "t4", "NVIDIA T4", 1, 16, 32, 128, 2.176),
    g("g4dn.16xlarge", "t4", "NVIDIA T4", 1, 16, 64, 256, 4.352),
    g("g4dn.12xlarge", "t4", "NVIDIA T4", 4, 16, 48, 192, 3.912),
    g("g4dn.metal", "t4", "NVIDIA T4", 8, 16, 96, 384, 7.824),
    g("g5.xlarge", "a10g", "NVIDIA A10G", 1, 24, 4, 16, 1.006),
    g("g5.2xlarge", "a10g", "NVIDIA A10G", 1, 24, 8, 32, 1.212),
    g("g5.4xlarge", "a10g", "NVIDIA A10G", 1, 24, 16, 64, 1.624),
    g("g5.8xlarge", "a10g", "NVIDIA A10G", 1, 24, 32, 128, 2.448),
    g("g5.16xlarge", "a10g", "NVIDIA A10G", 1, 24, 64, 256, 4.096),
    g("g5.12xlarge", "a10g", "NVIDIA A10G", 4, 24, 48, 192, 5.672),
    g("g5.24xlarge", "a10g", "NVIDIA A10G", 4, 24, 96, 384, 8.144),
    g("g5.48xlarge", "a10g", "NVIDIA A10G", 8, 24, 192, 768, 16.288),
    g("p3.2xlarge", "v100", "NVIDIA V100", 1, 16, 8, 61, 3.06),
    g("p3.8xlarge", "v100", "NVIDIA V100", 4, 16, 32, 244, 12.24),
    g("p3.16xlarge", "v100", "NVIDIA V100", 8, 16, 64, 488, 24.48),
    g("p3dn.24xlarge", "v100", "NVIDIA V100", 8, 32, 96, 768, 31.212),
    g("p4d.24xlarge", "a100", "NVIDIA A100", 8, 40, 96, 1152, 21.958),
    g("p4de.24xlarge", "a100", "NVIDIA A100", 8, 80, 96, 1152, 27.447),
    g("g6.xlarge", "l4", "NVIDIA L4", 1, 24, 4, 16, 0.805),
    g("g6.2xlarge", "l4", "NVIDIA L4", 1, 24, 8, 32, 0.978),
    g("g6.4xlarge", "l4", "NVIDIA L4", 1, 24, 16, 64, 1.323),
    g("g6.8xlarge", "l4", "NVIDIA L4", 1, 24, 32, 128, 2.014),
    g("g6.16xlarge", "l4", "NVIDIA L4", 1, 24, 64, 256, 3.397),
    g("g6.12xlarge", "l4", "NVIDIA L4", 4, 24, 48, 192, 4.602),
    g("g6.24xlarge", "l4", "NVIDIA L4", 4, 24, 96, 384, 6.675),
    g("g6.48xlarge", "l4", "NVIDIA L4", 8, 24, 192, 768, 13.350),
    g("g6e.xlarge", "l40s", "NVIDIA L40S", 1, 48, 4, 32, 1.861),
    g("g6e.2xlarge", "l40s", "NVIDIA L40S", 1, 48, 8, 64, 2.242),
    g("g6e.4xlarge", "l40s", "NVIDIA L40S", 1, 48, 16, 128, 3.004),
    g("g6e.8xlarge", "l40s", "NVIDIA L40S", 1, 48, 32, 256, 4.529),
    g("g6e.16xlarge", "l40s", "NVIDIA L40S", 1, 48, 64, 512, 7.577),
    g("g6e.12xlarge", "l40s", "NVIDIA L40S", 4, 48, 48, 384, 10.493),
    g("g6e.24xlarge", "l40s", "NVIDIA L40S", 4, 48, 96, 768, 15.066),
    g("g6e.48xlarge", "l40s", "NVIDIA L40S", 8, 48, 192, 1536, 30.131),
    g("p5.48xlarge", "h100", "NVIDIA H100", 8, 80, 192, 2048, 55.040),
];

/// The GPU types, in order from the smallest class up, with the family seed 003's table uses.
pub const GPU_TYPES: &[(&str, &str)] = &[("t4", "g4dn"), ("l4", "g6"), ("a10g", "g5"), ("v100", "p3"), ("l40s", "g6e"), ("a100", "p4d"), ("h100", "p5")];

/// The catalogue entry of an instance type.
#[must_use]
pub fn by_type(instance_type: &str) -> Option<&'static GpuInstance> {
    CATALOGUE.iter().find(|g| g.instance_type == instance_type)
}

/// The family of an instance type (`g5` of `g5.xlarge`).
#[must_use]
pub fn family(instance_type: &str) -> &str {
    instance_type.split('.').next().unwrap_or(instance_type)
}

/// Canonical GPU type of a name users write: `T4`, `nvidia-t4`, `NVIDIA A10G`, `a100`.
#[must_use]
pub fn canonical_gpu(name: &str) -> Option<&'static str> {
    let n = name.trim().to_ascii_lowercase().replace(['_', ' '], "-");
    let n = n.strip_prefix("nvidia-").unwrap_or(&n);
    GPU_TYPES.iter().map(|(t, _)| *t).find(|t| *t == n)
}

/// The instance type for `gpu_count` GPUs of `gpu_type` (seed 003's table): the cheapest type
/// of the type's main family with exactly that many GPUs.
///
/// # Errors
/// `invalid`, listing the valid GPU types or counts.
pub fn select(gpu_type: &str, gpu_count: u32) -> Result<&'static GpuInstance, ConnectorError> {
    let canon = canonical_gpu(gpu_type).ok_or_else(|| {
        let valid: Vec<String> = GPU_TYPES.iter().map(|(t, _)| format!("nvidia-{t}")).collect();
        ConnectorError::invalid(format!("unknown GPU type {gpu_type:?}: valid GPU types are {} (the `nvidia-` prefix is optional)", valid.join(", ")))
    })?;
    let fam = main_family(canon);
    CATALOGUE
        .iter()
        .filter(|g| family(g.instance_type) == fam && g.gpu_count == gpu_count)
        .min_by(|a, b| a.on_demand.total_cmp(&b.on_demand))
        .ok_or_else(|| {
            let counts = counts_of(canon);
            ConnectorError::invalid(format!(
                "no {fam} instance type has {gpu_count} {} GPU(s): valid gpu_count values for nvidia-{canon} are {}",
                canon.to_ascii_uppercase(),
                counts.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
            ))
        })
}

/// The family seed 003's table uses for a canonical GPU type.
#[must_use]
pub fn main_family(canon: &str) -> &'static str {
    GPU_TYPES.iter().find(|(t, _)| *t == canon).map_or("", |(_, f)| *f)
}

/// The GPU counts the main family of a canonical GPU type offers.
#[must_use]
pub fn counts_of(canon: &str) -> Vec<u32> {
    let fam = main_family(canon);
    let mut counts: Vec<u32> = CATALOGUE.iter().filter(|g| family(g.instance_type) == fam).map(|g| g.gpu_count).collect();
    counts.sort_unstable();
    counts.dedup();
    counts
}

/// A row of seed 003's table.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TableRow {
    /// `nvidia-t4`.
    pub gpu_type: String,
    /// GPUs.
    pub gpu_count: u32,
    /// The instance type chosen.
    pub instance_type: String,
}

/// The whole `gpu_type × gpu_count → instance type` table.
#[must_use]
pub fn table() -> Vec<TableRow> {
    let mut out = Vec::new();
    for (t, _) in GPU_TYPES {
        for c in counts_of(t) {
            if let Ok(g) = select(t, c) {
                out.push(TableRow { gpu_type: format!("nvidia-{t}"), gpu_count: c, instance_type: g.instance_type.to_string() });
            }
        }
    }
    out
}

/// Typical spot price of a catalogue type.
#[must_use]
pub fn typical_spot(g: &GpuInstance) -> f64 {
    round3(g.on_demand * SPOT_FACTOR)
}

/// Rounds to a tenth of a cent.
#[must_use]
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Alternatives to an instance type, best first: the next sizes of the family with at least
/// as many GPUs, then the next GPU classes with the same count.
#[must_use]
pub fn alternatives(instance_type: &str) -> Vec<(&'static GpuInstance, &'static str)> {
    let Some(asked) = by_type(instance_type) else { return Vec::new() };
    let mut out: Vec<(&'static GpuInstance, &'static str)> = Vec::new();
    let mut same_family: Vec<&GpuInstance> =
        CATALOGUE.iter().filter(|g| family(g.instance_type) == family(instance_type) && g.instance_type != instance_type && g.gpu_count >= asked.gpu_count && g.on_demand > asked.on_demand).collect();
    same_family.sort_by(|a, b| a.on_demand.total_cmp(&b.on_demand));
    out.extend(same_family.into_iter().take(2).map(|g| (g, "next size")));
    let pos = GPU_TYPES.iter().position(|(t, _)| *t == asked.gpu_type).unwrap_or(0);
    for (t, _) in GPU_TYPES.iter().skip(pos + 1).take(2) {
        if let Ok(g) = select(t, asked.gpu_count) {
            out.push((g, "next GPU class"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_003_table() {
        for (t, c, want) in [
            ("nvidia-t4", 1, "g4dn.xlarge"),
            ("nvidia-t4", 4, "g4dn.12xlarge"),
            ("nvidia-a10g", 1, "g5.xlarge"),
            ("nvidia-a10g", 4, "g5.12xlarge"),
            ("nvidia-v100", 1, "p3.2xlarge"),
            ("nvidia-v100", 4, "p3.8xlarge"),
            ("nvidia-v100", 8, "p3.16xlarge"),
            ("nvidia-a100", 8, "p4d.24xlarge"),
            ("T4", 1, "g4dn.xlarge"),
            ("NVIDIA L40S", 1, "g6e.xlarge"),
            ("h100", 8, "p5.48xlarge"),
        ] {
            assert_eq!(select(t, c).unwrap().instance_type, want, "{t} x{c}");
        }
    }

    #[test]
    fn seed_001_specs() {
        let g = by_type("p3.2xlarge").unwrap();
        assert_eq!((g.gpu_model, g.gpu_memory_gb, g.vcpu, g.memory_gb), ("NVIDIA V100", 16, 8, 61));
        let g = by_type("g5.2xlarge").unwrap();
        assert_eq!((g.gpu_model, g.gpu_memory_gb, g.vcpu, g.memory_gb), ("NVIDIA A10G", 24, 8, 32));
    }

    #[test]
    fn invalid_types_and_counts_list_the_valid_ones() {
        let e = select("nvidia-k80", 1).unwrap_err();
        assert!(e.message.contains("nvidia-t4") && e.message.contains("nvidia-h100"), "{}", e.message);
        let e = select("nvidia-a100", 2).unwrap_err();
        assert!(e.message.contains("valid gpu_count values for nvidia-a100 are 8"), "{}", e.message);
        let e = select("t4", 3).unwrap_err();
        assert!(e.message.contains("1, 4, 8"), "{}", e.message);
    }

    #[test]
    fn alternatives_go_up_in_size_then_class() {
        let alts: Vec<&str> = alternatives("g4dn.xlarge").iter().map(|(g, _)| g.instance_type).collect();
        assert_eq!(alts, ["g4dn.2xlarge", "g4dn.4xlarge", "g6.xlarge", "g5.xlarge"]);
        assert!(alternatives("t3.micro").is_empty());
        assert_eq!(table().len(), 17);
    }
}
