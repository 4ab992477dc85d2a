//! What the connector knows without asking: seed 000's image table (GPU commercial type →
//! GPU OS image) and a dated price table of the GPU types, used when live prices cannot be read.

/// The date of [`PRICES`] (Scaleway's public price list, on-demand, excluding VAT).
pub const PRICES_DATE: &str = "2025-01";

/// The prefixes that make a commercial type a GPU type (seed 000:
/// `^(GPU-|RENDER-|L4-|L40S-|H100-)`).
pub const GPU_PREFIXES: [&str; 5] = ["GPU-", "RENDER-", "L4-", "L40S-", "H100-"];

/// The image seed 000 picks for GPU types.
pub const GPU_IMAGE: &str = "gpu-os-12";
/// The image seed 000 picks for every other type.
pub const DEFAULT_IMAGE: &str = "ubuntu_jammy";

/// Marketplace labels to try for a seed-000 image name, in order: the name itself, then the
/// marketplace's own label for it.
#[must_use]
pub fn label_candidates(image: &str) -> Vec<String> {
    let mut out = vec![image.to_string()];
    if image == GPU_IMAGE {
        out.push("ubuntu_jammy_gpu_os_12".into());
    }
    out
}

/// Whether `commercial_type` is a GPU type (seed 000's regex).
#[must_use]
pub fn is_gpu(commercial_type: &str) -> bool {
    GPU_PREFIXES.iter().any(|p| commercial_type.starts_with(p))
}

/// The image seed 000's table picks for a type.
#[must_use]
pub fn image_for(commercial_type: &str) -> &'static str {
    if is_gpu(commercial_type) {
        GPU_IMAGE
    } else {
        DEFAULT_IMAGE
    }
}

/// One GPU type of the price table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuType {
    /// Commercial type.
    pub commercial_type: &'static str,
    /// GPU model.
    pub model: &'static str,
    /// GPUs.
    pub count: u32,
    /// Memory of one GPU, GB.
    pub memory_gb: u32,
    /// € per hour.
    pub hourly_eur: f64,
}

const fn g(commercial_type: &'static str, model: &'static str, count: u32, memory_gb: u32, hourly_eur: f64) -> GpuType {
    GpuType { commercial_type, model, count, memory_gb, hourly_eur }
}

/// The dated price table (see [`PRICES_DATE`]).
pub const PRICES: &[GpuType] = &[
    g("L4-1-24G", "NVIDIA L4", 1, 24, 0.75),
    g("L4-2-24G", "NVIDIA L4", 2, 24, 1.5),
    g("L4-4-24G", "NVIDIA L4", 4, 24, 3.0),
    g("L4-8-24G", "NVIDIA L4", 8, 24, 6.0),
    g("L40S-1-48G", "NVIDIA L40S", 1, 48, 1.4),
    g("L40S-2-48G", "NVIDIA L40S", 2, 48, 2.8),
    g("L40S-4-48G", "NVIDIA L40S", 4, 48, 5.6),
    g("L40S-8-48G", "NVIDIA L40S", 8, 48, 11.2),
    g("H100-1-80G", "NVIDIA H100 PCIe", 1, 80, 2.73),
    g("H100-2-80G", "NVIDIA H100 PCIe", 2, 80, 5.46),
    g("H100-SXM-2-80G", "NVIDIA H100 SXM", 2, 80, 6.018),
    g("H100-SXM-4-80G", "NVIDIA H100 SXM", 4, 80, 11.61),
    g("H100-SXM-8-80G", "NVIDIA H100 SXM", 8, 80, 23.028),
    g("GPU-3070-S", "NVIDIA RTX 3070", 1, 8, 0.98),
    g("RENDER-S", "NVIDIA Tesla P100", 1, 16, 1.221),
];

/// The table's row for a type.
#[must_use]
pub fn by_type(commercial_type: &str) -> Option<&'static GpuType> {
    PRICES.iter().find(|t| t.commercial_type.eq_ignore_ascii_case(commercial_type))
}

/// The zones the connector looks in when a type is not offered where it was asked.
pub const ZONES: [&str; 9] = ["fr-par-1", "fr-par-2", "fr-par-3", "nl-ams-1", "nl-ams-2", "nl-ams-3", "pl-waw-1", "pl-waw-2", "pl-waw-3"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_000_table() {
        for t in ["L4-1-24G", "L40S-1-48G", "H100-1-80G", "GPU-3070-S", "RENDER-S", "H100-SXM-8-80G"] {
            assert!(is_gpu(t), "{t}");
            assert_eq!(image_for(t), "gpu-os-12", "{t}");
        }
        for t in ["DEV1-M", "GP1-S", "PRO2-XS", "POP2-HC-8C-16G", "l4-1-24g", "XL4-1"] {
            assert!(!is_gpu(t), "{t}");
            assert_eq!(image_for(t), "ubuntu_jammy", "{t}");
        }
        assert_eq!(label_candidates("gpu-os-12"), ["gpu-os-12", "ubuntu_jammy_gpu_os_12"]);
        assert_eq!(label_candidates("ubuntu_jammy"), ["ubuntu_jammy"]);
    }

    #[test]
    fn every_priced_type_is_a_gpu_type() {
        for t in PRICES {
            assert!(is_gpu(t.commercial_type), "{}", t.commercial_type);
            assert!(t.hourly_eur > 0.0 && t.count >= 1 && t.memory_gb >= 8);
        }
        assert_eq!(by_type("l4-1-24g").map(|t| t.model), Some("NVIDIA L4"));
    }
}
