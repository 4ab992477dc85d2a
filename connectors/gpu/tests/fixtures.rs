//! `parse_query_xml` against real `nvidia-smi -q -x` captures.
//!
//! The captures live in `tests/data/nvidia-smi/` (from telegraf's test data, MIT
//! licence; see the README there). A missing file fails the tests loudly.

use std::path::PathBuf;

use connector_gpu::smi::{parse_query_xml, EccErrors, GpuInfo, RemappedRows, RetiredPages, SmiReport};

/// Every capture the data folder is expected to hold.
const FIXTURES: &[&str] = &[
    "a100-sxm4-v12.xml",
    "a10g.xml",
    "gtx-1070-ti.xml",
    "gtx-1660-ti.xml",
    "quadro-p2000-v12.xml",
    "quadro-p400.xml",
    "rtx-3060-v12.xml",
    "rtx-3080-v12.xml",
    "rtx-3080-v13.xml",
    "rtx-3090-v12.xml",
    "rtx-4000-sff-ada-v13.xml",
    "tesla-t4.xml",
];

/// The crate's own copy of the captures.
fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/nvidia-smi")
}

fn read(name: &str) -> String {
    let path = fixture_dir().join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read nvidia-smi fixture {}: {e}", path.display()))
}

fn parse(name: &str) -> SmiReport {
    parse_query_xml(&read(name)).unwrap_or_else(|e| panic!("{name} does not parse: {e}"))
}

/// The report's only GPU.
fn only_gpu(report: &SmiReport) -> &GpuInfo {
    assert_eq!(report.gpus.len(), 1, "expected one <gpu>");
    &report.gpus[0]
}

fn reasons(gpu: &GpuInfo) -> Vec<&str> {
    gpu.clock_event_reasons
        .as_ref()
        .expect("a clock reasons section")
        .iter()
        .map(String::as_str)
        .collect()
}

#[test]
fn every_fixture_parses() {
    let dir = fixture_dir();
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("fixture folder is readable")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".xml"))
        .collect();
    on_disk.sort();
    for name in FIXTURES {
        assert!(
            on_disk.iter().any(|n| n == name),
            "fixture {name} is missing from {}",
            dir.display()
        );
    }
    // Parse everything there, including captures added later.
    for name in &on_disk {
        let report = parse(name);
        assert!(!report.gpus.is_empty(), "{name}: no gpu");
        for (i, gpu) in report.gpus.iter().enumerate() {
            assert_eq!(gpu.index, i);
            assert!(gpu.product_name.is_some(), "{name}: no product name");
            assert!(
                gpu.uuid.as_deref().is_some_and(|u| u.starts_with("GPU-")),
                "{name}: uuid"
            );
            assert!(
                gpu.fb_memory.total_mib.is_some_and(|t| t > 0),
                "{name}: memory total"
            );
            assert!(gpu.temperature.gpu_c.is_some(), "{name}: temperature");
            assert!(gpu.pci_bus_id.is_some(), "{name}: pci bus id");
            assert!(
                gpu.performance_state
                    .as_deref()
                    .is_some_and(|p| p.starts_with('P')),
                "{name}"
            );
        }
        // The typed report serializes to JSON (the future connector's output).
        serde_json::to_value(&report).expect("report serializes");
    }
}

#[test]
fn report_schema_is_generated() {
    let schema = serde_json::to_value(schemars::schema_for!(SmiReport)).unwrap();
    assert!(schema["properties"]["gpus"].is_object());
}

#[test]
fn a100_sxm4_v12_mig() {
    let report = parse("a100-sxm4-v12.xml");
    assert_eq!(report.dtd_version, Some(12));
    assert_eq!(
        report.timestamp.as_deref(),
        Some("Fri Aug  4 11:44:30 2023")
    );
    assert_eq!(report.driver_version.as_deref(), Some("535.54.03"));
    assert_eq!(report.cuda_version.as_deref(), Some("12.2"));
    // The capture was taken with `-i`: 4 attached, 1 reported.
    assert_eq!(report.attached_gpus, Some(4));
    let gpu = only_gpu(&report);
    assert_eq!(gpu.product_name.as_deref(), Some("NVIDIA A100-SXM4-80GB"));
    assert_eq!(gpu.product_architecture.as_deref(), Some("Ampere"));
    assert_eq!(gpu.pci_bus_id.as_deref(), Some("00000000:01:00.0"));
    assert_eq!(gpu.serial.as_deref(), Some("1650522003820"));
    assert_eq!(gpu.fb_memory.total_mib, Some(81920));
    assert_eq!(gpu.fb_memory.reserved_mib, Some(869));
    assert_eq!(gpu.fb_memory.used_mib, Some(50));
    assert_eq!(gpu.fb_memory.free_mib, Some(80999));
    assert_eq!(gpu.bar1_memory.total_mib, Some(131_072));
    assert_eq!(gpu.bar1_memory.reserved_mib, None);
    // gpu_power_readings with power_draw and current_power_limit.
    assert_eq!(gpu.power.draw_w, Some(67.03));
    assert_eq!(gpu.power.limit_w, Some(500.0));
    assert_eq!(gpu.power.requested_limit_w, Some(500.0));
    assert_eq!(gpu.power.min_limit_w, Some(100.0));
    assert_eq!(gpu.utilization.gpu_percent, None); // N/A under MIG
    assert_eq!(gpu.fan_speed_percent, None);
    assert_eq!(gpu.temperature.gpu_c, Some(27));
    assert_eq!(gpu.temperature.memory_c, Some(44));
    assert_eq!(gpu.temperature.shutdown_c, Some(92));
    assert_eq!(gpu.temperature.slowdown_c, Some(89));
    assert_eq!(gpu.temperature.max_operating_c, Some(85));
    assert_eq!(gpu.temperature.max_memory_c, Some(95));
    assert_eq!(gpu.max_clocks.sm_mhz, Some(1410));
    assert_eq!(gpu.clocks.mem_mhz, Some(1593));
    assert_eq!(gpu.pcie.link_gen_current, Some(4));
    assert_eq!(gpu.pcie.link_width_max, Some(16));
    assert_eq!(reasons(gpu), Vec::<&str>::new());
    assert_eq!(gpu.ecc_mode_current, Some(true));
    assert_eq!(gpu.ecc_errors.aggregate_uncorrectable, Some(0));
    assert_eq!(gpu.reset_required, Some(false));
    assert!(gpu.processes.is_empty());

    assert_eq!(gpu.mig.current, Some(true));
    assert_eq!(gpu.mig.pending, Some(true));
    assert_eq!(gpu.mig.devices.len(), 4);
    let gi_ids: Vec<_> = gpu.mig.devices.iter().map(|d| d.gpu_instance_id).collect();
    assert_eq!(gi_ids, [Some(3), Some(4), Some(5), Some(6)]);
    for (i, device) in gpu.mig.devices.iter().enumerate() {
        assert_eq!(device.index, Some(u32::try_from(i).unwrap()));
        assert_eq!(device.compute_instance_id, Some(0));
        assert_eq!(device.sm_count, Some(14));
        assert_eq!(device.fb_memory.total_mib, Some(19968));
        assert_eq!(device.fb_memory.used_mib, Some(12));
        assert_eq!(device.fb_memory.free_mib, Some(19955));
    }
}

#[test]
fn a10g_v11() {
    let report = parse("a10g.xml");
    assert_eq!(report.dtd_version, Some(11));
    assert_eq!(report.driver_version.as_deref(), Some("515.105.01"));
    assert_eq!(report.attached_gpus, Some(1));
    let gpu = only_gpu(&report);
    assert_eq!(gpu.product_name.as_deref(), Some("NVIDIA A10G"));
    assert_eq!(gpu.fb_memory.total_mib, Some(23028));
    assert_eq!(gpu.fb_memory.reserved_mib, Some(435));
    // power_readings with power_limit and enforced_power_limit.
    assert_eq!(gpu.power.draw_w, Some(25.58));
    assert_eq!(gpu.power.limit_w, Some(300.0));
    assert_eq!(gpu.power.requested_limit_w, Some(300.0));
    assert_eq!(gpu.power.average_draw_w, None);
    // clocks_throttle_reasons.
    assert_eq!(reasons(gpu), ["gpu_idle"]);
    assert_eq!(gpu.mig.current, None);
    assert!(gpu.mig.devices.is_empty()); // <mig_devices>None</mig_devices>
    assert_eq!(gpu.pcie.link_gen_current, Some(1));
    assert_eq!(gpu.pcie.link_gen_max, Some(4));
    assert_eq!(gpu.pcie.link_width_current, Some(8));
    assert_eq!(gpu.fan_speed_percent, Some(0));
    assert_eq!(gpu.processes.len(), 1);
    assert_eq!(gpu.processes[0].pid, Some(725));
    assert_eq!(gpu.processes[0].process_type.as_deref(), Some("G"));
    assert_eq!(
        gpu.processes[0].process_name.as_deref(),
        Some("/usr/lib/xorg/Xorg")
    );
    assert_eq!(gpu.processes[0].used_memory_mib, Some(22));
    assert_eq!(gpu.processes[0].gpu_instance_id, None);
    // ECC on, no errors; rows remapped instead of pages retired.
    assert_eq!(gpu.ecc_errors, EccErrors { volatile_correctable: Some(0), volatile_uncorrectable: Some(0), aggregate_correctable: Some(0), aggregate_uncorrectable: Some(0) });
    assert_eq!(gpu.retired_pages, RetiredPages { single_bit: None, double_bit: None, pending: None });
    assert_eq!(gpu.remapped_rows, RemappedRows { correctable: Some(0), uncorrectable: Some(0), pending: Some(false), failure: Some(false) });
}

#[test]
fn gtx_1070_ti_v10_minimal() {
    let report = parse("gtx-1070-ti.xml");
    assert_eq!(report.dtd_version, Some(10));
    // A reduced capture: no versions, no count, no identity beyond name and uuid.
    assert_eq!(report.driver_version, None);
    assert_eq!(report.attached_gpus, None);
    let gpu = only_gpu(&report);
    assert_eq!(gpu.product_name.as_deref(), Some("GeForce GTX 1070 Ti"));
    assert_eq!(gpu.id.as_deref(), Some("00000000:01:00.0"));
    assert_eq!(gpu.pci_bus_id.as_deref(), Some("00000000:01:00.0")); // from the id attribute
    assert_eq!(gpu.fb_memory.total_mib, Some(4096));
    assert_eq!(gpu.fb_memory.reserved_mib, None);
    assert_eq!(gpu.fan_speed_percent, Some(100));
    assert_eq!(gpu.power.draw_w, None);
    assert_eq!(gpu.power.limit_w, None);
    assert_eq!(gpu.clock_event_reasons, None);
    assert_eq!(gpu.persistence_mode, None);
    assert_eq!(gpu.clocks.graphics_mhz, Some(135));
    assert_eq!(gpu.max_clocks.graphics_mhz, None);
}

#[test]
fn gtx_1660_ti_no_doctype() {
    let report = parse("gtx-1660-ti.xml");
    assert_eq!(report.dtd_version, None);
    assert_eq!(report.driver_version.as_deref(), Some("418.43"));
    assert_eq!(report.cuda_version.as_deref(), Some("10.1"));
    let gpu = only_gpu(&report);
    assert_eq!(gpu.product_name.as_deref(), Some("Graphics Device"));
    assert_eq!(gpu.product_architecture, None);
    assert_eq!(gpu.serial, None); // N/A
    assert_eq!(gpu.fb_memory.total_mib, Some(5912));
    assert_eq!(gpu.power.draw_w, Some(8.93));
    assert_eq!(gpu.power.limit_w, Some(130.0));
    assert_eq!(gpu.power.min_limit_w, Some(70.0));
    assert_eq!(reasons(gpu), ["gpu_idle"]);
    assert_eq!(gpu.max_clocks.graphics_mhz, Some(2145));
    assert_eq!(gpu.temperature.max_operating_c, Some(91));
}

#[test]
fn quadro_p2000_v12_with_old_names() {
    // DTD v12 from driver 525, still with power_readings and clocks_throttle_reasons.
    let report = parse("quadro-p2000-v12.xml");
    assert_eq!(report.dtd_version, Some(12));
    assert_eq!(report.driver_version.as_deref(), Some("525.125.06"));
    let gpu = only_gpu(&report);
    assert_eq!(gpu.product_name.as_deref(), Some("Quadro P2000"));
    assert_eq!(gpu.product_architecture.as_deref(), Some("Pascal"));
    assert_eq!(gpu.fb_memory.total_mib, Some(5120));
    assert_eq!(gpu.persistence_mode, Some(true));
    assert_eq!(gpu.power.draw_w, Some(4.61));
    assert_eq!(gpu.power.limit_w, Some(75.0));
    assert_eq!(reasons(gpu), ["gpu_idle"]);
    assert_eq!(gpu.fan_speed_percent, Some(46));
    assert_eq!(gpu.temperature.target_c, Some(83));
    assert_eq!(gpu.temperature.shutdown_c, Some(104));
    assert_eq!(gpu.temperature.max_operating_c, None);
    // The older single_bit/double_bit layout, all N/A.
    assert_eq!(gpu.ecc_errors, EccErrors::default());
    assert_eq!(gpu.remapped_rows, RemappedRows::default());
    assert_eq!(gpu.reset_required, None);
}

#[test]
fn quadro_p400_power_not_available() {
    let report = parse("quadro-p400.xml");
    assert_eq!(report.driver_version.as_deref(), Some("418.43"));
    let gpu = only_gpu(&report);
    assert_eq!(gpu.product_name.as_deref(), Some("Quadro P400"));
    assert_eq!(gpu.fb_memory.total_mib, Some(1998));
    assert_eq!(gpu.power, Default::default()); // every reading is N/A
    assert_eq!(reasons(gpu), ["gpu_idle"]);
    assert_eq!(gpu.fan_speed_percent, Some(34));
    assert_eq!(gpu.max_clocks.graphics_mhz, Some(1252));
}

#[test]
fn rtx_3060_v12_average_and_instant_draw() {
    let report = parse("rtx-3060-v12.xml");
    assert_eq!(report.dtd_version, Some(12));
    assert_eq!(report.driver_version.as_deref(), Some("570.124.04"));
    assert_eq!(report.cuda_version.as_deref(), Some("12.8"));
    let gpu = only_gpu(&report);
    assert_eq!(gpu.product_name.as_deref(), Some("NVIDIA GeForce RTX 3060"));
    assert_eq!(gpu.fb_memory.total_mib, Some(12288));
    assert_eq!(gpu.fb_memory.used_mib, Some(116));
    // No power_draw any more: average_power_draw stands in.
    assert_eq!(gpu.power.average_draw_w, Some(11.60));
    assert_eq!(gpu.power.instant_draw_w, Some(11.63));
    assert_eq!(gpu.power.draw_w, Some(11.60));
    assert_eq!(gpu.power.limit_w, Some(170.0));
    assert_eq!(gpu.power.max_limit_w, Some(190.0));
    assert_eq!(reasons(gpu), ["gpu_idle"]);
    assert_eq!(gpu.serial, None);
}

#[test]
fn rtx_3080_v12_windows() {
    let report = parse("rtx-3080-v12.xml");
    assert_eq!(report.driver_version.as_deref(), Some("536.40"));
    let gpu = only_gpu(&report);
    assert_eq!(gpu.product_name.as_deref(), Some("NVIDIA GeForce RTX 3080"));
    assert_eq!(gpu.fb_memory.total_mib, Some(10240));
    assert_eq!(gpu.fb_memory.used_mib, Some(1128));
    assert_eq!(gpu.persistence_mode, None); // N/A on Windows
    assert_eq!(gpu.display_active, Some(true));
    assert_eq!(gpu.power.draw_w, Some(22.78));
    assert_eq!(gpu.power.limit_w, Some(336.0));
    assert_eq!(gpu.power.default_limit_w, Some(320.0));
    assert_eq!(reasons(gpu), ["gpu_idle"]);
    assert_eq!(gpu.processes.len(), 5);
    assert_eq!(gpu.processes[0].pid, Some(835));
    assert_eq!(gpu.processes[0].used_memory_mib, Some(550));
    assert!(gpu.processes[2]
        .process_name
        .as_deref()
        .unwrap()
        .starts_with("/opt/microsoft/msedge/msedge"));
}

#[test]
fn rtx_3080_v13() {
    let report = parse("rtx-3080-v13.xml");
    assert_eq!(report.dtd_version, Some(13));
    assert_eq!(report.driver_version.as_deref(), Some("595.58.03"));
    assert_eq!(report.cuda_version.as_deref(), Some("13.2"));
    let gpu = only_gpu(&report);
    assert_eq!(gpu.product_name.as_deref(), Some("NVIDIA GeForce RTX 3080"));
    assert_eq!(gpu.fb_memory.total_mib, Some(10240));
    assert_eq!(gpu.fb_memory.used_mib, Some(9184));
    assert_eq!(gpu.utilization.gpu_percent, Some(65));
    assert_eq!(gpu.performance_state.as_deref(), Some("P2"));
    assert_eq!(gpu.power.average_draw_w, Some(139.62));
    assert_eq!(gpu.power.instant_draw_w, Some(142.33));
    assert_eq!(gpu.power.limit_w, Some(320.0));
    assert_eq!(gpu.power.max_limit_w, Some(336.0));
    assert_eq!(reasons(gpu), Vec::<&str>::new());
    assert_eq!(gpu.temperature.shutdown_c, Some(98));
    assert_eq!(gpu.clocks.graphics_mhz, Some(1950));
}

#[test]
fn rtx_3090_v12_reduced_power_limit() {
    let report = parse("rtx-3090-v12.xml");
    assert_eq!(report.driver_version.as_deref(), Some("525.147.05"));
    let gpu = only_gpu(&report);
    assert_eq!(gpu.product_name.as_deref(), Some("NVIDIA GeForce RTX 3090"));
    assert_eq!(gpu.fb_memory.total_mib, Some(24576));
    // power_limit/enforced_power_limit 200 W below the 350 W default.
    assert_eq!(gpu.power.limit_w, Some(200.0));
    assert_eq!(gpu.power.requested_limit_w, Some(200.0));
    assert_eq!(gpu.power.default_limit_w, Some(350.0));
    assert_eq!(gpu.power.max_limit_w, Some(375.0));
    assert_eq!(gpu.power.draw_w, Some(27.23));
    assert_eq!(reasons(gpu), ["gpu_idle"]);
    assert_eq!(gpu.persistence_mode, Some(true));
}

#[test]
fn rtx_4000_sff_ada_v13() {
    let report = parse("rtx-4000-sff-ada-v13.xml");
    assert_eq!(report.dtd_version, Some(13));
    assert_eq!(report.driver_version.as_deref(), Some("595.84"));
    let gpu = only_gpu(&report);
    assert_eq!(
        gpu.product_name.as_deref(),
        Some("NVIDIA RTX 4000 SFF Ada Generation")
    );
    assert_eq!(gpu.product_brand.as_deref(), Some("NVIDIA RTX"));
    assert_eq!(gpu.product_architecture.as_deref(), Some("Ada Lovelace"));
    assert_eq!(gpu.fb_memory.total_mib, Some(20475));
    assert_eq!(gpu.fb_memory.reserved_mib, Some(460));
    // "Requested functionality has been deprecated"
    assert_eq!(gpu.display_mode, None);
    assert_eq!(gpu.display_active, Some(true));
    assert_eq!(gpu.persistence_mode, Some(true));
    assert_eq!(gpu.power.draw_w, Some(8.81));
    assert_eq!(gpu.power.instant_draw_w, Some(8.44));
    assert_eq!(gpu.power.limit_w, Some(70.0));
    assert_eq!(gpu.power.min_limit_w, Some(30.0));
    assert_eq!(reasons(gpu), ["gpu_idle"]);
    // Thresholds relative to T.Limit instead of absolute ones.
    assert_eq!(gpu.temperature.gpu_c, Some(38));
    assert_eq!(gpu.temperature.tlimit_c, Some(49));
    assert_eq!(gpu.temperature.shutdown_c, None);
    assert_eq!(gpu.temperature.shutdown_tlimit_c, Some(-7));
    assert_eq!(gpu.temperature.slowdown_tlimit_c, Some(-2));
    assert_eq!(gpu.temperature.max_operating_tlimit_c, Some(0));
    assert_eq!(gpu.temperature.target_c, Some(88));
    assert_eq!(gpu.fan_speed_percent, Some(30));
    assert_eq!(gpu.utilization.memory_percent, Some(37));
    assert_eq!(gpu.max_clocks.graphics_mhz, Some(3105));
    let types: Vec<_> = gpu
        .processes
        .iter()
        .map(|p| p.process_type.as_deref().unwrap())
        .collect();
    assert_eq!(types, ["G", "G", "C", "C+G"]);
    assert_eq!(gpu.processes[3].pid, Some(34626));
    assert_eq!(gpu.processes[3].used_memory_mib, Some(183));
}

#[test]
fn tesla_t4_v11() {
    let report = parse("tesla-t4.xml");
    assert_eq!(report.dtd_version, Some(11));
    assert_eq!(report.driver_version.as_deref(), Some("515.105.01"));
    assert_eq!(report.cuda_version.as_deref(), Some("11.7"));
    let gpu = only_gpu(&report);
    assert_eq!(gpu.product_name.as_deref(), Some("Tesla T4"));
    assert_eq!(
        gpu.uuid.as_deref(),
        Some("GPU-d37e67a5-91dd-3774-a5cb-99096249601a")
    );
    assert_eq!(gpu.vbios_version.as_deref(), Some("90.04.84.00.06"));
    assert_eq!(gpu.fb_memory.total_mib, Some(15360));
    assert_eq!(gpu.fb_memory.used_mib, Some(1032));
    assert_eq!(gpu.power.draw_w, Some(26.78));
    assert_eq!(gpu.power.limit_w, Some(70.0));
    assert_eq!(gpu.power.min_limit_w, Some(60.0));
    assert_eq!(reasons(gpu), Vec::<&str>::new());
    assert_eq!(gpu.pcie.link_width_current, Some(8));
    assert_eq!(gpu.pcie.link_width_max, Some(16));
    assert_eq!(gpu.utilization.encoder_percent, Some(0));
    assert_eq!(gpu.compute_mode.as_deref(), Some("Default"));
    assert_eq!(gpu.processes.len(), 2);
    assert_eq!(gpu.processes[1].pid, Some(5762));
    assert_eq!(gpu.processes[1].process_type.as_deref(), Some("C"));
    assert_eq!(gpu.processes[1].process_name.as_deref(), Some("python"));
    assert_eq!(gpu.processes[1].used_memory_mib, Some(1005));
    assert_eq!(gpu.retired_pages, RetiredPages { single_bit: Some(0), double_bit: Some(0), pending: Some(false) });
    assert_eq!(gpu.ecc_errors.volatile_uncorrectable, Some(0));
}
