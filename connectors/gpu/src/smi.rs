//! Parser of `nvidia-smi -q -x` (the XML query report).
//!
//! [`parse_query_xml`] reads the whole document into a [`SmiReport`]: the driver and
//! CUDA versions and, for each `<gpu>`, its identity, memory, utilisation,
//! temperatures, power, clocks, active clock event (throttle) reasons, PCIe link,
//! MIG state and processes.
//!
//! ## Versions
//! The document's layout changes between drivers (DTD `nvsmi_device_v10` to `v13`),
//! and the DTD version alone does not say which names are used (driver 525 writes
//! DTD v12 with the old names). The parser therefore looks for every known name:
//!
//! | Data | Older drivers | Newer drivers |
//! |---|---|---|
//! | power section | `power_readings` (≤ 525) | `gpu_power_readings` (≥ 535) |
//! | power draw | `power_draw` (≤ 536) | `average_power_draw` + `instant_power_draw` (≥ 570) |
//! | power limit in effect | `enforced_power_limit` (≤ 525) | `current_power_limit` (≥ 535) |
//! | requested power limit | `power_limit` (≤ 525) | `requested_power_limit` (≥ 535) |
//! | clock reasons | `clocks_throttle_reasons/clocks_throttle_reason_*` (≤ 525) | `clocks_event_reasons/clocks_event_reason_*` (≥ 535) |
//! | temperature thresholds | `gpu_temp_max_threshold`, `gpu_temp_slow_threshold`, ... (absolute) | also `gpu_temp_max_tlimit_threshold`, ... (relative to T.Limit; seen on an Ada board with driver 595) |
//!
//! (Driver numbers are those of the captures in the shared fixtures.)
//!
//! ## Values
//! Text values are normalised: `N/A`, `[N/A]`, `Not Supported`, `[Not Supported]`,
//! `Unknown Error`, `[Unknown Error]`, `Requested functionality has been deprecated`
//! and an empty element read as absent (`None`); units are stripped (`1024 MiB`,
//! `35 C`, `70.00 W`, `1410 MHz`, `10 %`, `16x`); `Enabled`/`Disabled` (also
//! `Yes`/`No`, `Active`/`Not Active`) become booleans.

use std::str::FromStr;

use roxmltree::{Document, Node, ParsingOptions};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The root element of an `nvidia-smi -q -x` document.
const ROOT: &str = "nvidia_smi_log";

/// Texts nvidia-smi writes in place of a value it does not have.
const ABSENT: &[&str] = &[
    "N/A",
    "[N/A]",
    "Not Supported",
    "[Not Supported]",
    "Unknown Error",
    "[Unknown Error]",
    "Requested functionality has been deprecated",
    "[Requested functionality has been deprecated]",
];

/// Why an `nvidia-smi -q -x` document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmiError {
    /// The input is empty or only whitespace.
    #[error("nvidia-smi output is empty")]
    Empty,
    /// The input does not start like an XML document (often an error message from
    /// nvidia-smi itself, such as a driver that cannot be reached).
    #[error("nvidia-smi output is not xml, it starts with `{start}`")]
    NotXml {
        /// The first line of the input, cut to 120 characters.
        start: String,
    },
    /// The input looks like XML but is not well-formed (for example truncated).
    #[error("nvidia-smi output is not well-formed xml: {message}")]
    InvalidXml {
        /// What the XML parser found wrong, with its position.
        message: String,
    },
    /// The document's root element is not `nvidia_smi_log`.
    #[error("unexpected root element `{found}` in nvidia-smi output, expected `nvidia_smi_log`")]
    WrongRoot {
        /// The root element's name.
        found: String,
    },
}

/// The whole `nvidia-smi -q -x` report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SmiReport {
    /// Version of the DTD named by the document type (`nvsmi_device_v12.dtd` → 12),
    /// when the document has one.
    pub dtd_version: Option<u32>,
    /// When the report was taken, as nvidia-smi wrote it (`Fri Aug  4 11:44:30 2023`).
    pub timestamp: Option<String>,
    /// NVIDIA driver version (`535.54.03`).
    pub driver_version: Option<String>,
    /// Highest CUDA version the driver supports (`12.2`).
    pub cuda_version: Option<String>,
    /// Number of GPUs attached to the system as nvidia-smi counts them. It can be
    /// larger than `gpus.len()` when the query was restricted (`-i`).
    pub attached_gpus: Option<u32>,
    /// The GPUs in the report, in document order.
    pub gpus: Vec<GpuInfo>,
}

/// One `<gpu>` of the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GpuInfo {
    /// Position of the GPU in the report (0-based). With a full query this is the
    /// nvidia-smi index; with `-i` it is the position in the filtered output.
    pub index: usize,
    /// The `id` attribute of `<gpu>` (the PCI bus id, `00000000:01:00.0`).
    pub id: Option<String>,
    /// PCI bus id from `pci/pci_bus_id` (falls back to the `id` attribute).
    pub pci_bus_id: Option<String>,
    /// GPU UUID (`GPU-513536b6-...`), the stable identity to allocate by.
    pub uuid: Option<String>,
    /// Marketing name (`NVIDIA A100-SXM4-80GB`).
    pub product_name: Option<String>,
    /// Brand (`NVIDIA`, `GeForce`, `Quadro`, `NVIDIA RTX`).
    pub product_brand: Option<String>,
    /// Architecture (`Ampere`, `Ada Lovelace`); absent before driver 450.
    pub product_architecture: Option<String>,
    /// Board serial number.
    pub serial: Option<String>,
    /// VBIOS version.
    pub vbios_version: Option<String>,
    /// Persistence mode (`None` where not supported, e.g. on Windows).
    pub persistence_mode: Option<bool>,
    /// Whether a display can be initialised on the GPU (`display_mode`).
    pub display_mode: Option<bool>,
    /// Whether a display is initialised on the GPU (`display_active`).
    pub display_active: Option<bool>,
    /// Multi-Instance GPU state and devices.
    pub mig: MigInfo,
    /// Framebuffer (device) memory.
    pub fb_memory: MemoryUsage,
    /// BAR1 memory.
    pub bar1_memory: MemoryUsage,
    /// Compute mode (`Default`, `Exclusive_Process`, `Prohibited`).
    pub compute_mode: Option<String>,
    /// Utilisation over the last sample period.
    pub utilization: Utilization,
    /// Temperatures and limits.
    pub temperature: Temperature,
    /// Power draw and limits of the GPU.
    pub power: Power,
    /// Current clocks.
    pub clocks: Clocks,
    /// Maximum clocks.
    pub max_clocks: Clocks,
    /// Names of the clock event (throttle) reasons that are active now, without the
    /// element prefix (`gpu_idle`, `sw_power_cap`, `hw_thermal_slowdown`, ...).
    /// `None` when the report has no reasons section.
    pub clock_event_reasons: Option<Vec<String>>,
    /// PCIe link.
    pub pcie: Pcie,
    /// Fan speed in percent (`None` for passively cooled boards).
    pub fan_speed_percent: Option<u32>,
    /// Performance state (`P0` fastest to `P12`).
    pub performance_state: Option<String>,
    /// ECC mode now (`None` where not supported).
    pub ecc_mode_current: Option<bool>,
    /// ECC mode after the next reboot.
    pub ecc_mode_pending: Option<bool>,
    /// Processes using the GPU.
    pub processes: Vec<GpuProcess>,
    /// ECC error counts (all `None` where ECC is not supported).
    pub ecc_errors: EccErrors,
    /// Retired memory pages (older boards; newer ones remap rows instead).
    pub retired_pages: RetiredPages,
    /// Remapped memory rows (Ampere and later data-centre boards).
    pub remapped_rows: RemappedRows,
    /// Whether the driver asks for a GPU reset (`gpu_reset_status/reset_required`).
    pub reset_required: Option<bool>,
}

/// ECC error counts, summed over the memory kinds the report lists (`sram_*` and
/// `dram_*` on newer drivers, `single_bit/total` and `double_bit/total` on older ones).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EccErrors {
    /// Correctable errors since the driver was loaded.
    pub volatile_correctable: Option<u64>,
    /// Uncorrectable errors since the driver was loaded.
    pub volatile_uncorrectable: Option<u64>,
    /// Correctable errors over the board's lifetime.
    pub aggregate_correctable: Option<u64>,
    /// Uncorrectable errors over the board's lifetime.
    pub aggregate_uncorrectable: Option<u64>,
}

/// Retired memory pages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RetiredPages {
    /// Pages retired for multiple single-bit errors.
    pub single_bit: Option<u64>,
    /// Pages retired for a double-bit error.
    pub double_bit: Option<u64>,
    /// Whether a retirement waits for the next driver reload.
    pub pending: Option<bool>,
}

/// Remapped memory rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RemappedRows {
    /// Rows remapped for correctable errors.
    pub correctable: Option<u64>,
    /// Rows remapped for uncorrectable errors.
    pub uncorrectable: Option<u64>,
    /// Whether a remapping waits for the next GPU reset.
    pub pending: Option<bool>,
    /// Whether a remapping failed (the board needs service).
    pub failure: Option<bool>,
}

/// Memory usage in MiB.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MemoryUsage {
    /// Total memory, MiB.
    pub total_mib: Option<u64>,
    /// Used memory, MiB.
    pub used_mib: Option<u64>,
    /// Free memory, MiB.
    pub free_mib: Option<u64>,
    /// Memory reserved by the driver, MiB (framebuffer only, driver 470 and later).
    pub reserved_mib: Option<u64>,
}

/// Multi-Instance GPU (MIG) state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MigInfo {
    /// MIG mode now (`None` on GPUs without MIG).
    pub current: Option<bool>,
    /// MIG mode after the next GPU reset.
    pub pending: Option<bool>,
    /// The MIG devices (empty when MIG is off or unsupported).
    pub devices: Vec<MigDevice>,
}

/// One MIG device (a GPU instance + compute instance pair).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MigDevice {
    /// Index of the MIG device on its GPU.
    pub index: Option<u32>,
    /// GPU instance id.
    pub gpu_instance_id: Option<u32>,
    /// Compute instance id.
    pub compute_instance_id: Option<u32>,
    /// Streaming multiprocessors of the device (`multiprocessor_count`).
    pub sm_count: Option<u32>,
    /// Framebuffer memory of the device.
    pub fb_memory: MemoryUsage,
}

/// Utilisation in percent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Utilization {
    /// GPU (kernel) utilisation, percent.
    pub gpu_percent: Option<u32>,
    /// Memory controller utilisation, percent.
    pub memory_percent: Option<u32>,
    /// Video encoder utilisation, percent.
    pub encoder_percent: Option<u32>,
    /// Video decoder utilisation, percent.
    pub decoder_percent: Option<u32>,
}

/// Temperatures in degrees Celsius.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Temperature {
    /// GPU core temperature.
    pub gpu_c: Option<i32>,
    /// Memory (HBM) temperature.
    pub memory_c: Option<i32>,
    /// Temperature at which the GPU shuts down (`gpu_temp_max_threshold`).
    pub shutdown_c: Option<i32>,
    /// Temperature at which the GPU slows down (`gpu_temp_slow_threshold`).
    pub slowdown_c: Option<i32>,
    /// Maximum operating temperature of the GPU (`gpu_temp_max_gpu_threshold`).
    pub max_operating_c: Option<i32>,
    /// Maximum operating temperature of the memory (`gpu_temp_max_mem_threshold`).
    pub max_memory_c: Option<i32>,
    /// Target temperature set for the GPU (`gpu_target_temperature`).
    pub target_c: Option<i32>,
    /// Distance to the thermal limit (`gpu_temp_tlimit`, T.Limit).
    pub tlimit_c: Option<i32>,
    /// Shutdown threshold relative to T.Limit (`gpu_temp_max_tlimit_threshold`,
    /// newer drivers that report thresholds this way).
    pub shutdown_tlimit_c: Option<i32>,
    /// Slowdown threshold relative to T.Limit (`gpu_temp_slow_tlimit_threshold`).
    pub slowdown_tlimit_c: Option<i32>,
    /// Maximum operating threshold relative to T.Limit
    /// (`gpu_temp_max_gpu_tlimit_threshold`).
    pub max_operating_tlimit_c: Option<i32>,
}

/// Power in watts (from `power_readings` or `gpu_power_readings`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Power {
    /// Power draw: `power_draw` where present, else `average_power_draw`, else
    /// `instant_power_draw`.
    pub draw_w: Option<f64>,
    /// Average power draw over the last second (`average_power_draw`, newer drivers).
    pub average_draw_w: Option<f64>,
    /// Instantaneous power draw (`instant_power_draw`, newer drivers).
    pub instant_draw_w: Option<f64>,
    /// Power limit in effect: `current_power_limit`, or `enforced_power_limit` on
    /// older drivers, or `power_limit` when neither is given.
    pub limit_w: Option<f64>,
    /// Power limit requested by software: `requested_power_limit`, or `power_limit`
    /// on older drivers.
    pub requested_limit_w: Option<f64>,
    /// Default power limit.
    pub default_limit_w: Option<f64>,
    /// Lowest power limit that can be set.
    pub min_limit_w: Option<f64>,
    /// Highest power limit that can be set.
    pub max_limit_w: Option<f64>,
}

/// Clocks in MHz.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Clocks {
    /// Graphics clock, MHz.
    pub graphics_mhz: Option<u32>,
    /// Streaming multiprocessor clock, MHz.
    pub sm_mhz: Option<u32>,
    /// Memory clock, MHz.
    pub mem_mhz: Option<u32>,
    /// Video clock, MHz.
    pub video_mhz: Option<u32>,
}

/// PCIe link of the GPU.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Pcie {
    /// Current link generation (drops when idle).
    pub link_gen_current: Option<u32>,
    /// Maximum link generation of the GPU and system.
    pub link_gen_max: Option<u32>,
    /// Current link width (lanes, `16x` → 16).
    pub link_width_current: Option<u32>,
    /// Maximum link width (lanes).
    pub link_width_max: Option<u32>,
}

/// A process using the GPU.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GpuProcess {
    /// Process id.
    pub pid: Option<u32>,
    /// `C` (compute), `G` (graphics) or `C+G`.
    pub process_type: Option<String>,
    /// Process name or command line.
    pub process_name: Option<String>,
    /// GPU memory used by the process, MiB.
    pub used_memory_mib: Option<u64>,
    /// GPU instance the process runs in (MIG only).
    pub gpu_instance_id: Option<u32>,
    /// Compute instance the process runs in (MIG only).
    pub compute_instance_id: Option<u32>,
}

/// Parse the output of `nvidia-smi -q -x`.
///
/// # Errors
/// [`SmiError`] when the input is empty, is not XML (for example nvidia-smi's own
/// error text), is malformed or truncated XML, or its root is not `nvidia_smi_log`.
///
/// # Guarantees
/// Never panics. Inside a well-formed `nvidia_smi_log` nothing is required: an
/// element that is missing, holds a placeholder (`N/A`, `[Not Supported]`, ...) or a
/// value that does not parse as the expected number or state is `None`, so a new
/// driver's additions or removals never fail the whole report.
pub fn parse_query_xml(xml: &str) -> Result<SmiReport, SmiError> {
    let trimmed = xml.trim_start_matches('\u{feff}').trim();
    if trimmed.is_empty() {
        return Err(SmiError::Empty);
    }
    if !trimmed.starts_with('<') {
        let first_line = trimmed.lines().next().unwrap_or_default().trim();
        return Err(SmiError::NotXml {
            start: first_line.chars().take(120).collect(),
        });
    }
    // nvidia-smi names an external DTD (`<!DOCTYPE nvidia_smi_log SYSTEM ...>`);
    // roxmltree never loads it, and still guards against entity expansion.
    let options = ParsingOptions {
        allow_dtd: true,
        ..ParsingOptions::default()
    };
    let doc = Document::parse_with_options(trimmed, options).map_err(|e| SmiError::InvalidXml {
        message: e.to_string(),
    })?;
    let root = doc.root_element();
    if root.tag_name().name() != ROOT {
        return Err(SmiError::WrongRoot {
            found: root.tag_name().name().to_owned(),
        });
    }

    let gpus = elements(root, "gpu")
        .enumerate()
        .map(|(index, gpu)| parse_gpu(index, gpu))
        .collect();
    Ok(SmiReport {
        dtd_version: dtd_version(trimmed),
        timestamp: string(root, &["timestamp"]),
        driver_version: string(root, &["driver_version"]),
        cuda_version: string(root, &["cuda_version"]),
        attached_gpus: number(root, &["attached_gpus"], ""),
        gpus,
    })
}

fn parse_gpu(index: usize, gpu: Node<'_, '_>) -> GpuInfo {
    let id = gpu
        .attribute("id")
        .map(str::trim)
        .and_then(clean)
        .map(str::to_owned);
    GpuInfo {
        index,
        pci_bus_id: string(gpu, &["pci", "pci_bus_id"]).or_else(|| id.clone()),
        id,
        uuid: string(gpu, &["uuid"]),
        product_name: string(gpu, &["product_name"]),
        product_brand: string(gpu, &["product_brand"]),
        product_architecture: string(gpu, &["product_architecture"]),
        serial: string(gpu, &["serial"]),
        vbios_version: string(gpu, &["vbios_version"]),
        persistence_mode: flag(gpu, &["persistence_mode"]),
        display_mode: flag(gpu, &["display_mode"]),
        display_active: flag(gpu, &["display_active"]),
        mig: MigInfo {
            current: flag(gpu, &["mig_mode", "current_mig"]),
            pending: flag(gpu, &["mig_mode", "pending_mig"]),
            devices: find(gpu, &["mig_devices"])
                .map(|devices| {
                    elements(devices, "mig_device")
                        .map(parse_mig_device)
                        .collect()
                })
                .unwrap_or_default(),
        },
        fb_memory: memory(gpu, "fb_memory_usage"),
        bar1_memory: memory(gpu, "bar1_memory_usage"),
        compute_mode: string(gpu, &["compute_mode"]),
        utilization: Utilization {
            gpu_percent: number(gpu, &["utilization", "gpu_util"], "%"),
            memory_percent: number(gpu, &["utilization", "memory_util"], "%"),
            encoder_percent: number(gpu, &["utilization", "encoder_util"], "%"),
            decoder_percent: number(gpu, &["utilization", "decoder_util"], "%"),
        },
        temperature: temperature(gpu),
        power: power(gpu),
        clocks: clocks(gpu, "clocks"),
        max_clocks: clocks(gpu, "max_clocks"),
        clock_event_reasons: clock_event_reasons(gpu),
        pcie: Pcie {
            link_gen_current: number(
                gpu,
                &["pci", "pci_gpu_link_info", "pcie_gen", "current_link_gen"],
                "",
            ),
            link_gen_max: number(
                gpu,
                &["pci", "pci_gpu_link_info", "pcie_gen", "max_link_gen"],
                "",
            ),
            link_width_current: number(
                gpu,
                &[
                    "pci",
                    "pci_gpu_link_info",
                    "link_widths",
                    "current_link_width",
                ],
                "x",
            ),
            link_width_max: number(
                gpu,
                &["pci", "pci_gpu_link_info", "link_widths", "max_link_width"],
                "x",
            ),
        },
        fan_speed_percent: number(gpu, &["fan_speed"], "%"),
        performance_state: string(gpu, &["performance_state"]),
        ecc_mode_current: flag(gpu, &["ecc_mode", "current_ecc"]),
        ecc_mode_pending: flag(gpu, &["ecc_mode", "pending_ecc"]),
        processes: find(gpu, &["processes"])
            .map(|list| elements(list, "process_info").map(parse_process).collect())
            .unwrap_or_default(),
        ecc_errors: ecc_errors(gpu),
        retired_pages: RetiredPages {
            single_bit: number(gpu, &["retired_pages", "multiple_single_bit_retirement", "retired_count"], ""),
            double_bit: number(gpu, &["retired_pages", "double_bit_retirement", "retired_count"], ""),
            pending: flag(gpu, &["retired_pages", "pending_retirement"]),
        },
        remapped_rows: RemappedRows {
            correctable: number(gpu, &["remapped_rows", "remapped_row_corr"], ""),
            uncorrectable: number(gpu, &["remapped_rows", "remapped_row_unc"], ""),
            pending: flag(gpu, &["remapped_rows", "remapped_row_pending"]),
            failure: flag(gpu, &["remapped_rows", "remapped_row_failure"]),
        },
        reset_required: flag(gpu, &["gpu_reset_status", "reset_required"]),
    }
}

/// ECC counts: the sum of the numbers present in `ecc_errors/{volatile,aggregate}`.
/// Newer drivers list `sram_correctable`, `sram_uncorrectable` (or its `_parity` and
/// `_secded` halves) and `dram_*`; older ones `single_bit/total` and `double_bit/total`.
fn ecc_errors(gpu: Node<'_, '_>) -> EccErrors {
    const CORRECTABLE: &[&[&str]] = &[&["sram_correctable"], &["dram_correctable"], &["single_bit", "total"]];
    const UNCORRECTABLE: &[&[&str]] = &[
        &["sram_uncorrectable"],
        &["sram_uncorrectable_parity"],
        &["sram_uncorrectable_secded"],
        &["dram_uncorrectable"],
        &["double_bit", "total"],
    ];
    let sum = |section: &str, names: &[&[&str]]| -> Option<u64> {
        let node = find(gpu, &["ecc_errors", section])?;
        names
            .iter()
            .filter_map(|path| number::<u64>(node, path, ""))
            .fold(None, |acc, n| Some(acc.unwrap_or(0).saturating_add(n)))
    };
    EccErrors {
        volatile_correctable: sum("volatile", CORRECTABLE),
        volatile_uncorrectable: sum("volatile", UNCORRECTABLE),
        aggregate_correctable: sum("aggregate", CORRECTABLE),
        aggregate_uncorrectable: sum("aggregate", UNCORRECTABLE),
    }
}

fn parse_mig_device(device: Node<'_, '_>) -> MigDevice {
    MigDevice {
        index: number(device, &["index"], ""),
        gpu_instance_id: number(device, &["gpu_instance_id"], ""),
        compute_instance_id: number(device, &["compute_instance_id"], ""),
        sm_count: number(
            device,
            &["device_attributes", "shared", "multiprocessor_count"],
            "",
        ),
        fb_memory: memory(device, "fb_memory_usage"),
    }
}

fn parse_process(process: Node<'_, '_>) -> GpuProcess {
    GpuProcess {
        pid: number(process, &["pid"], ""),
        process_type: string(process, &["type"]),
        process_name: string(process, &["process_name"]),
        used_memory_mib: mib(text(process, &["used_memory"])),
        gpu_instance_id: number(process, &["gpu_instance_id"], ""),
        compute_instance_id: number(process, &["compute_instance_id"], ""),
    }
}

fn memory(parent: Node<'_, '_>, section: &str) -> MemoryUsage {
    MemoryUsage {
        total_mib: mib(text(parent, &[section, "total"])),
        used_mib: mib(text(parent, &[section, "used"])),
        free_mib: mib(text(parent, &[section, "free"])),
        reserved_mib: mib(text(parent, &[section, "reserved"])),
    }
}

fn temperature(gpu: Node<'_, '_>) -> Temperature {
    let t = |name: &str| number(gpu, &["temperature", name], "C");
    Temperature {
        gpu_c: t("gpu_temp"),
        memory_c: t("memory_temp"),
        shutdown_c: t("gpu_temp_max_threshold"),
        slowdown_c: t("gpu_temp_slow_threshold"),
        max_operating_c: t("gpu_temp_max_gpu_threshold"),
        max_memory_c: t("gpu_temp_max_mem_threshold"),
        target_c: t("gpu_target_temperature"),
        tlimit_c: t("gpu_temp_tlimit"),
        shutdown_tlimit_c: t("gpu_temp_max_tlimit_threshold"),
        slowdown_tlimit_c: t("gpu_temp_slow_tlimit_threshold"),
        max_operating_tlimit_c: t("gpu_temp_max_gpu_tlimit_threshold"),
    }
}

fn power(gpu: Node<'_, '_>) -> Power {
    // `gpu_power_readings` from driver 535 on, `power_readings` before.
    let Some(section) = child(gpu, "gpu_power_readings").or_else(|| child(gpu, "power_readings"))
    else {
        return Power::default();
    };
    let w = |name: &str| number::<f64>(section, &[name], "W");
    let average_draw_w = w("average_power_draw");
    let instant_draw_w = w("instant_power_draw");
    Power {
        draw_w: w("power_draw").or(average_draw_w).or(instant_draw_w),
        average_draw_w,
        instant_draw_w,
        limit_w: w("current_power_limit")
            .or_else(|| w("enforced_power_limit"))
            .or_else(|| w("power_limit")),
        requested_limit_w: w("requested_power_limit").or_else(|| w("power_limit")),
        default_limit_w: w("default_power_limit"),
        min_limit_w: w("min_power_limit"),
        max_limit_w: w("max_power_limit"),
    }
}

fn clocks(gpu: Node<'_, '_>, section: &str) -> Clocks {
    let c = |name: &str| number(gpu, &[section, name], "MHz");
    Clocks {
        graphics_mhz: c("graphics_clock"),
        sm_mhz: c("sm_clock"),
        mem_mhz: c("mem_clock"),
        video_mhz: c("video_clock"),
    }
}

/// Active reasons of `clocks_event_reasons` (driver 535 on) or
/// `clocks_throttle_reasons` (before), without their element prefix.
fn clock_event_reasons(gpu: Node<'_, '_>) -> Option<Vec<String>> {
    const SECTIONS: &[(&str, &str)] = &[
        ("clocks_event_reasons", "clocks_event_reason_"),
        ("clocks_throttle_reasons", "clocks_throttle_reason_"),
    ];
    SECTIONS.iter().find_map(|&(section, prefix)| {
        let node = child(gpu, section)?;
        Some(
            node.children()
                .filter(Node::is_element)
                .filter(|reason| reason.text().and_then(clean).and_then(parse_bool) == Some(true))
                .map(|reason| {
                    let name = reason.tag_name().name();
                    name.strip_prefix(prefix).unwrap_or(name).to_owned()
                })
                .collect(),
        )
    })
}

/// The DTD version in `<!DOCTYPE nvidia_smi_log SYSTEM "nvsmi_device_v12.dtd">`.
fn dtd_version(xml: &str) -> Option<u32> {
    let prolog = &xml[..xml.find("<nvidia_smi_log").unwrap_or(xml.len())];
    let after = &prolog[prolog.find("nvsmi_device_v")? + "nvsmi_device_v".len()..];
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

// --- tree access ---------------------------------------------------------------

fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|n| n.has_tag_name(name))
}

fn elements<'a, 'i: 'a>(
    node: Node<'a, 'i>,
    name: &'a str,
) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    node.children().filter(move |n| n.has_tag_name(name))
}

fn find<'a, 'i>(node: Node<'a, 'i>, path: &[&str]) -> Option<Node<'a, 'i>> {
    path.iter().try_fold(node, |node, name| child(node, name))
}

/// The normalised text at `path` (see [`clean`]).
fn text<'a>(node: Node<'a, '_>, path: &[&str]) -> Option<&'a str> {
    find(node, path)?.text().and_then(clean)
}

fn string(node: Node<'_, '_>, path: &[&str]) -> Option<String> {
    text(node, path).map(str::to_owned)
}

fn flag(node: Node<'_, '_>, path: &[&str]) -> Option<bool> {
    text(node, path).and_then(parse_bool)
}

fn number<T: FromStr>(node: Node<'_, '_>, path: &[&str], unit: &str) -> Option<T> {
    text(node, path).and_then(|value| parse_unit(value, unit))
}

// --- value normalisation ---------------------------------------------------------

/// The trimmed text, or `None` for an empty text or a placeholder such as `N/A`.
pub(crate) fn clean(raw: &str) -> Option<&str> {
    let value = raw.trim();
    if value.is_empty()
        || ABSENT
            .iter()
            .any(|absent| absent.eq_ignore_ascii_case(value))
    {
        None
    } else {
        Some(value)
    }
}

/// `Enabled`/`Disabled`, `Yes`/`No`, `Active`/`Not Active`, `On`/`Off`, `True`/`False`
/// (any case) as a boolean; anything else is `None`.
pub(crate) fn parse_bool(value: &str) -> Option<bool> {
    const TRUE: &[&str] = &["enabled", "yes", "active", "on", "true"];
    const FALSE: &[&str] = &["disabled", "no", "not active", "off", "false"];
    let value = value.trim();
    if TRUE.iter().any(|t| t.eq_ignore_ascii_case(value)) {
        Some(true)
    } else if FALSE.iter().any(|f| f.eq_ignore_ascii_case(value)) {
        Some(false)
    } else {
        None
    }
}

/// A number followed by `unit` (`"70.00 W"` with unit `W`); a bare number is
/// accepted too. Another unit, or no number, is `None`.
pub(crate) fn parse_unit<T: FromStr>(value: &str, unit: &str) -> Option<T> {
    let value = clean(value)?;
    let number = if unit.is_empty() {
        value
    } else {
        value.strip_suffix(unit).unwrap_or(value).trim_end()
    };
    number.parse().ok()
}

/// A memory size in MiB (`"1024 MiB"`); `GiB` and `KiB` are converted, a bare
/// number is taken as MiB.
fn mib(value: Option<&str>) -> Option<u64> {
    let value = value?;
    if let Some(gib) = value.strip_suffix("GiB") {
        let gib: f64 = gib.trim().parse().ok()?;
        return to_mib(gib * 1024.0);
    }
    if let Some(kib) = value.strip_suffix("KiB") {
        let kib: f64 = kib.trim().parse().ok()?;
        return to_mib(kib / 1024.0);
    }
    parse_unit(value, "MiB")
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn to_mib(value: f64) -> Option<u64> {
    (value.is_finite() && value >= 0.0).then(|| value.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_none() {
        for placeholder in ABSENT {
            assert_eq!(clean(placeholder), None, "{placeholder}");
            assert_eq!(parse_unit::<u64>(placeholder, "MiB"), None, "{placeholder}");
        }
        assert_eq!(clean("  N/A \n"), None);
        assert_eq!(clean(""), None);
        assert_eq!(clean("\n            "), None);
        assert_eq!(clean("Default"), Some("Default"));
        assert_eq!(clean(" [REDACTED] "), Some("[REDACTED]"));
    }

    #[test]
    fn units_are_stripped() {
        assert_eq!(mib(Some("1024 MiB")), Some(1024));
        assert_eq!(mib(Some("0 MiB")), Some(0));
        assert_eq!(mib(Some("80 GiB")), Some(81920));
        assert_eq!(mib(Some("2048 KiB")), Some(2));
        assert_eq!(mib(Some("512")), Some(512));
        assert_eq!(mib(Some("12 MB/s")), None);
        assert_eq!(mib(None), None);
        assert_eq!(parse_unit::<i32>("35 C", "C"), Some(35));
        assert_eq!(parse_unit::<i32>("-7 C", "C"), Some(-7));
        assert_eq!(parse_unit::<f64>("70.00 W", "W"), Some(70.0));
        assert_eq!(parse_unit::<f64>("67.03 W", "W"), Some(67.03));
        assert_eq!(parse_unit::<u32>("1410 MHz", "MHz"), Some(1410));
        assert_eq!(parse_unit::<u32>("10 %", "%"), Some(10));
        assert_eq!(parse_unit::<u32>("16x", "x"), Some(16));
        assert_eq!(parse_unit::<u32>("4", ""), Some(4));
        assert_eq!(parse_unit::<u32>("N/A", "MHz"), None);
        assert_eq!(parse_unit::<u32>("1410 GHz", "MHz"), None);
        assert_eq!(parse_unit::<u32>("fast", "MHz"), None);
    }

    #[test]
    fn states_are_booleans() {
        assert_eq!(parse_bool("Enabled"), Some(true));
        assert_eq!(parse_bool("Disabled"), Some(false));
        assert_eq!(parse_bool("disabled"), Some(false));
        assert_eq!(parse_bool("Yes"), Some(true));
        assert_eq!(parse_bool("No"), Some(false));
        assert_eq!(parse_bool("Active"), Some(true));
        assert_eq!(parse_bool("Not Active"), Some(false));
        assert_eq!(parse_bool("Supported"), None);
        assert_eq!(parse_bool("N/A"), None);
    }

    #[test]
    fn dtd_version_is_read_from_the_doctype() {
        let xml = "<?xml version=\"1.0\" ?>\n<!DOCTYPE nvidia_smi_log SYSTEM \"nvsmi_device_v13.dtd\">\n<nvidia_smi_log/>";
        assert_eq!(dtd_version(xml), Some(13));
        assert_eq!(dtd_version("<nvidia_smi_log/>"), None);
        assert_eq!(
            dtd_version("<nvidia_smi_log><x>nvsmi_device_v9</x></nvidia_smi_log>"),
            None
        );
    }
}
