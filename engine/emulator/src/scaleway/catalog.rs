//! The emulator's fixed catalogue: zones, commercial types (with GPU info,
//! prices and volume constraints) and public OS images.
//!
//! # What is in it, and where it comes from
//! A documented subset of Scaleway's public offer, not a copy of it:
//! - zones `fr-par-1`, `fr-par-2`, `nl-ams-1`, `pl-waw-2`;
//! - general purpose types everywhere (`DEV1-S`, `DEV1-M`, `GP1-XS`,
//!   `PRO2-S`); `GP1-XS` is not in `pl-waw-2`;
//! - GPU types only where we place them, after Scaleway's GPU pages (L4 in
//!   `fr-par-2`, `nl-ams-1` and `pl-waw-2`; L40S in `fr-par-2` only; H100 PCIe
//!   in `fr-par-2` and `pl-waw-2`; H100 SXM in `fr-par-2` only;
//!   `GPU-3070-S` in `fr-par-2`; `RENDER-S` in `fr-par-1`). No GPU type is in
//!   `fr-par-1` except `RENDER-S`, so "L4 in fr-par-1" is the
//!   wrong-zone case of seed 000;
//! - prices in EUR per hour, rounded from the public price list; monthly
//!   prices are 730 hours;
//! - L4, L40S and H100 types take no local volume (`volumes_constraint` 0..0,
//!   no `per_volume_constraint.l_ssd`), as seed 002 found for L4-1-24G.
//!
//! Images: every label exists in every zone, once per kind
//! (`instance_local`: root `l_ssd`; `instance_sbs`: root `sbs_snapshot`).
//! GPU OS labels are only compatible with GPU types and the others only with
//! non-GPU types, which reproduces seed 000's "couldn't find a local image for
//! the given zone and commercial type" for `ubuntu_jammy` on L4. Two ids are
//! real: `c00ae53c-...` (Ubuntu 20.04 Focal Fossa, `instance_local`, fr-par-1,
//! from the official Python SDK's cassettes) and `5c3d28db-...` (Ubuntu Noble
//! GPU OS 13 passthrough, `instance_sbs`, fr-par-2, from seed 002); the others
//! are derived from the label, zone and kind so they stay stable.

/// The zones the emulator serves.
pub const ZONES: &[&str] = &["fr-par-1", "fr-par-2", "nl-ams-1", "pl-waw-2"];

/// The organization that owns Scaleway's public images.
pub const PUBLIC_IMAGES_ORGANIZATION: &str = "51b656e3-4865-41e8-adbc-0c45bdd780db";

/// A GPU model.
#[derive(Debug, Clone, Copy)]
pub struct Gpu {
    /// `NVIDIA`.
    pub manufacturer: &'static str,
    /// `L4`, `L40S`, `H100`...
    pub name: &'static str,
    /// Memory per GPU, bytes.
    pub memory: u64,
}

/// A commercial type.
#[derive(Debug, Clone, Copy)]
pub struct CommercialType {
    /// `L4-1-24G`.
    pub name: &'static str,
    /// vCPUs.
    pub ncpus: u32,
    /// RAM, bytes.
    pub ram: u64,
    /// GPUs and their model.
    pub gpus: u32,
    /// GPU model, if any.
    pub gpu: Option<Gpu>,
    /// EUR per hour.
    pub hourly_price: f64,
    /// Most local storage in total, bytes (0: no local volume allowed).
    pub local_max: u64,
    /// Range for the product catalogue (`Development`, `GPU`...).
    pub range: &'static str,
    /// Zones that offer it.
    pub zones: &'static [&'static str],
}

impl CommercialType {
    /// Whether the type takes local (`l_ssd`) volumes at all.
    #[must_use]
    pub fn takes_local_volumes(&self) -> bool {
        self.local_max > 0
    }

    /// Whether it is offered in `zone`.
    #[must_use]
    pub fn in_zone(&self, zone: &str) -> bool {
        self.zones.contains(&zone)
    }
}

const GB: u64 = 1_000_000_000;
const GIB: u64 = 1 << 30;

const L4: Gpu = Gpu {
    manufacturer: "NVIDIA",
    name: "L4",
    memory: 24 * GIB,
};
const L40S: Gpu = Gpu {
    manufacturer: "NVIDIA",
    name: "L40S",
    memory: 48 * GIB,
};
const H100: Gpu = Gpu {
    manufacturer: "NVIDIA",
    name: "H100",
    memory: 80 * GIB,
};
const H100_SXM: Gpu = Gpu {
    manufacturer: "NVIDIA",
    name: "H100-SXM",
    memory: 80 * GIB,
};
const RTX3070: Gpu = Gpu {
    manufacturer: "NVIDIA",
    name: "RTX-3070",
    memory: 8 * GIB,
};
const P100: Gpu = Gpu {
    manufacturer: "NVIDIA",
    name: "P100",
    memory: 16 * GIB,
};

const ALL: &[&str] = ZONES;
const NO_WAW: &[&str] = &["fr-par-1", "fr-par-2", "nl-ams-1"];
const L4_ZONES: &[&str] = &["fr-par-2", "nl-ams-1", "pl-waw-2"];
const PAR2: &[&str] = &["fr-par-2"];
const H100_ZONES: &[&str] = &["fr-par-2", "pl-waw-2"];
const PAR1: &[&str] = &["fr-par-1"];

macro_rules! ct {
    ($name:expr, $cpu:expr, $ram_gib:expr, $gpus:expr, $gpu:expr, $price:expr, $local_gb:expr, $range:expr, $zones:expr) => {
        CommercialType {
            name: $name,
            ncpus: $cpu,
            ram: $ram_gib * GIB,
            gpus: $gpus,
            gpu: $gpu,
            hourly_price: $price,
            local_max: $local_gb * GB,
            range: $range,
            zones: $zones,
        }
    };
}

/// Every commercial type, in catalogue order.
pub const COMMERCIAL_TYPES: &[CommercialType] = &[
    ct!("DEV1-S", 2, 2, 0, None, 0.0099, 20, "Development", ALL),
    ct!("DEV1-M", 3, 4, 0, None, 0.0198, 40, "Development", ALL),
    ct!(
        "GP1-XS",
        4,
        16,
        0,
        None,
        0.091,
        150,
        "General Purpose",
        NO_WAW
    ),
    ct!("PRO2-S", 8, 32, 0, None, 0.219, 0, "General Purpose", ALL),
    ct!("GPU-3070-S", 8, 16, 1, Some(RTX3070), 0.98, 0, "GPU", PAR2),
    ct!("RENDER-S", 10, 42, 1, Some(P100), 1.221, 400, "GPU", PAR1),
    ct!("L4-1-24G", 8, 48, 1, Some(L4), 0.75, 0, "GPU", L4_ZONES),
    ct!("L4-2-24G", 16, 96, 2, Some(L4), 1.5, 0, "GPU", L4_ZONES),
    ct!("L4-4-24G", 32, 192, 4, Some(L4), 3.0, 0, "GPU", L4_ZONES),
    ct!("L4-8-24G", 64, 384, 8, Some(L4), 6.0, 0, "GPU", L4_ZONES),
    ct!("L40S-1-48G", 8, 96, 1, Some(L40S), 1.4, 0, "GPU", PAR2),
    ct!("L40S-2-48G", 16, 192, 2, Some(L40S), 2.8, 0, "GPU", PAR2),
    ct!("L40S-4-48G", 32, 384, 4, Some(L40S), 5.6, 0, "GPU", PAR2),
    ct!("L40S-8-48G", 64, 768, 8, Some(L40S), 11.2, 0, "GPU", PAR2),
    ct!(
        "H100-1-80G",
        24,
        240,
        1,
        Some(H100),
        2.73,
        0,
        "GPU",
        H100_ZONES
    ),
    ct!(
        "H100-2-80G",
        48,
        480,
        2,
        Some(H100),
        5.46,
        0,
        "GPU",
        H100_ZONES
    ),
    ct!(
        "H100-SXM-2-80G",
        32,
        240,
        2,
        Some(H100_SXM),
        6.018,
        0,
        "GPU",
        PAR2
    ),
    ct!(
        "H100-SXM-4-80G",
        64,
        480,
        4,
        Some(H100_SXM),
        11.61,
        0,
        "GPU",
        PAR2
    ),
    ct!(
        "H100-SXM-8-80G",
        128,
        960,
        8,
        Some(H100_SXM),
        23.028,
        0,
        "GPU",
        PAR2
    ),
];

/// The commercial type called `name`.
#[must_use]
pub fn commercial_type(name: &str) -> Option<&'static CommercialType> {
    COMMERCIAL_TYPES.iter().find(|t| t.name == name)
}

/// Whether `zone` is served.
#[must_use]
pub fn is_zone(zone: &str) -> bool {
    ZONES.contains(&zone)
}

/// A marketplace image (one label).
#[derive(Debug, Clone, Copy)]
pub struct Label {
    /// `ubuntu_jammy`.
    pub label: &'static str,
    /// `Ubuntu 22.04 Jammy Jellyfish`.
    pub name: &'static str,
    /// Whether it is a GPU OS image (compatible with GPU types only).
    pub gpu: bool,
    /// Marketplace category.
    pub category: &'static str,
}

/// The marketplace labels.
pub const LABELS: &[Label] = &[
    Label {
        label: "ubuntu_focal",
        name: "Ubuntu 20.04 Focal Fossa",
        gpu: false,
        category: "distribution",
    },
    Label {
        label: "ubuntu_jammy",
        name: "Ubuntu 22.04 Jammy Jellyfish",
        gpu: false,
        category: "distribution",
    },
    Label {
        label: "ubuntu_noble",
        name: "Ubuntu 24.04 Noble Numbat",
        gpu: false,
        category: "distribution",
    },
    Label {
        label: "debian_bookworm",
        name: "Debian Bookworm",
        gpu: false,
        category: "distribution",
    },
    Label {
        label: "ubuntu_jammy_gpu_os_12",
        name: "Ubuntu Jammy GPU OS 12 passthrough",
        gpu: true,
        category: "Machine Learning",
    },
    Label {
        label: "ubuntu_noble_gpu_os_13",
        name: "Ubuntu Noble GPU OS 13 passthrough",
        gpu: true,
        category: "Machine Learning",
    },
];

/// Image kinds: `instance_local` boots from an `l_ssd` copy, `instance_sbs` from an SBS snapshot.
pub const KINDS: &[&str] = &["instance_local", "instance_sbs"];

/// One public image in one zone (a marketplace "local image").
#[derive(Debug, Clone)]
pub struct ZoneImage {
    /// Image id in that zone.
    pub id: String,
    /// Its label.
    pub label: &'static Label,
    /// The zone.
    pub zone: &'static str,
    /// `instance_local` or `instance_sbs`.
    pub kind: &'static str,
    /// The root volume (or snapshot) id.
    pub root_id: String,
    /// Root volume size, bytes.
    pub root_size: u64,
}

impl ZoneImage {
    /// `l_ssd` or `sbs_snapshot`.
    #[must_use]
    pub fn root_volume_type(&self) -> &'static str {
        if self.kind == "instance_sbs" {
            "sbs_snapshot"
        } else {
            "l_ssd"
        }
    }

    /// The commercial types that can boot it in its zone.
    #[must_use]
    pub fn compatible_types(&self) -> Vec<&'static str> {
        COMMERCIAL_TYPES
            .iter()
            .filter(|t| t.in_zone(self.zone))
            .filter(|t| t.gpu.is_some() == self.label.gpu)
            .filter(|t| self.kind == "instance_sbs" || t.takes_local_volumes())
            .map(|t| t.name)
            .collect()
    }
}

/// Every public image of every zone.
#[must_use]
pub fn images() -> Vec<ZoneImage> {
    let mut out = Vec::new();
    for label in LABELS {
        for zone in ZONES {
            for kind in KINDS {
                let (id, root_id) = match (label.label, *zone, *kind) {
                    ("ubuntu_focal", "fr-par-1", "instance_local") => (
                        "c00ae53c-1e29-4087-a384-47f3c5c1cd84".to_owned(),
                        "6644dfd6-0731-45cc-a581-62f561eff7bf".to_owned(),
                    ),
                    ("ubuntu_noble_gpu_os_13", "fr-par-2", "instance_sbs") => (
                        "5c3d28db-33ce-4997-8572-f49506339283".to_owned(),
                        stable_uuid(&["root", label.label, zone, kind]),
                    ),
                    _ => (
                        stable_uuid(&["image", label.label, zone, kind]),
                        stable_uuid(&["root", label.label, zone, kind]),
                    ),
                };
                let root_size = if *kind == "instance_sbs" {
                    20 * GB
                } else {
                    10 * GB
                };
                out.push(ZoneImage {
                    id,
                    label,
                    zone,
                    kind,
                    root_id,
                    root_size,
                });
            }
        }
    }
    out
}

/// A UUID-shaped id derived from `parts` (FNV-1a, twice).
#[must_use]
pub fn stable_uuid(parts: &[&str]) -> String {
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b: u64 = 0x8422_2325_cbf2_9ce4;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0)) {
            a = (a ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
            b = (b ^ u64::from(byte))
                .wrapping_mul(0x0000_0100_0000_01b3)
                .rotate_left(7);
        }
    }
    format_uuid((u128::from(a) << 64) | u128::from(b))
}

/// Formats 128 bits as a version-4 UUID.
#[must_use]
pub fn format_uuid(bits: u128) -> String {
    let bits = (bits & !(0xf000 << 64) | (0x4000 << 64)) & !(0xc000 << 48) | (0x8000 << 48);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_types_are_where_documented() {
        let l4 = commercial_type("L4-1-24G").unwrap();
        assert!(l4.in_zone("fr-par-2") && !l4.in_zone("fr-par-1"));
        assert!(!l4.takes_local_volumes());
        assert!(COMMERCIAL_TYPES
            .iter()
            .filter(|t| t.gpu.is_some())
            .all(|t| !t.in_zone("fr-par-1") || t.name == "RENDER-S"));
    }

    #[test]
    fn images_have_stable_unique_ids_and_the_recorded_ones() {
        let all = images();
        let mut ids: Vec<_> = all.iter().map(|i| i.id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), all.len());
        assert!(all
            .iter()
            .any(|i| i.id == "5c3d28db-33ce-4997-8572-f49506339283"
                && i.root_volume_type() == "sbs_snapshot"));
        assert_eq!(stable_uuid(&["a"]), stable_uuid(&["a"]));
        assert_eq!(stable_uuid(&["a"]).len(), 36);
        let jammy_l4 = all
            .iter()
            .filter(|i| i.label.label == "ubuntu_jammy" && i.zone == "fr-par-2")
            .any(|i| i.compatible_types().contains(&"L4-1-24G"));
        assert!(!jammy_l4, "seed 000: ubuntu_jammy has no image for L4");
    }
}
