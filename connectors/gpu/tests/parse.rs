//! `parse_query_xml` on hand-written documents: malformed input, several GPUs,
//! value normalisation and the element renames between nvidia-smi versions.

use connector_gpu::smi::{parse_query_xml, SmiError};

const TWO_GPUS: &str = r#"<?xml version="1.0" ?>
<!DOCTYPE nvidia_smi_log SYSTEM "nvsmi_device_v12.dtd">
<nvidia_smi_log>
  <timestamp>Mon Jan  1 00:00:00 2024</timestamp>
  <driver_version>550.54.15</driver_version>
  <cuda_version>12.4</cuda_version>
  <attached_gpus>2</attached_gpus>
  <gpu id="00000000:17:00.0">
    <product_name>NVIDIA H100 80GB HBM3</product_name>
    <persistence_mode>Enabled</persistence_mode>
    <display_active>Disabled</display_active>
    <mig_mode><current_mig>Disabled</current_mig><pending_mig>Enabled</pending_mig></mig_mode>
    <uuid>GPU-aaaaaaaa-0000-0000-0000-000000000000</uuid>
    <fan_speed>[N/A]</fan_speed>
    <clocks_event_reasons>
      <clocks_event_reason_gpu_idle>Not Active</clocks_event_reason_gpu_idle>
      <clocks_event_reason_sw_power_cap>Active</clocks_event_reason_sw_power_cap>
      <clocks_event_reason_hw_thermal_slowdown>Active</clocks_event_reason_hw_thermal_slowdown>
      <clocks_event_reason_sync_boost>N/A</clocks_event_reason_sync_boost>
    </clocks_event_reasons>
    <fb_memory_usage>
      <total>81559 MiB</total><reserved>[Not Supported]</reserved><used>1024 MiB</used><free>80535 MiB</free>
    </fb_memory_usage>
    <utilization><gpu_util>10 %</gpu_util><memory_util>Unknown Error</memory_util></utilization>
    <temperature><gpu_temp>35 C</gpu_temp></temperature>
    <gpu_power_readings>
      <power_draw>Not Supported</power_draw>
      <instant_power_draw>120.50 W</instant_power_draw>
      <current_power_limit>700.00 W</current_power_limit>
    </gpu_power_readings>
    <clocks><graphics_clock>1980 MHz</graphics_clock></clocks>
    <processes></processes>
  </gpu>
  <gpu id="00000000:2A:00.0">
    <product_name>NVIDIA H100 80GB HBM3</product_name>
    <persistence_mode>Disabled</persistence_mode>
    <uuid>GPU-bbbbbbbb-0000-0000-0000-000000000000</uuid>
    <fan_speed>55 %</fan_speed>
    <clocks_throttle_reasons>
      <clocks_throttle_reason_gpu_idle>Active</clocks_throttle_reason_gpu_idle>
    </clocks_throttle_reasons>
    <fb_memory_usage><total>N/A</total></fb_memory_usage>
    <power_readings>
      <power_draw>[N/A]</power_draw>
      <power_limit>650.00 W</power_limit>
    </power_readings>
    <processes>
      <process_info>
        <gpu_instance_id>1</gpu_instance_id>
        <compute_instance_id>0</compute_instance_id>
        <pid>4242</pid>
        <type>C</type>
        <process_name>python train.py &amp; more</process_name>
        <used_memory>[N/A]</used_memory>
      </process_info>
    </processes>
  </gpu>
</nvidia_smi_log>
"#;

#[test]
fn several_gpus_are_read_in_order() {
    let report = parse_query_xml(TWO_GPUS).unwrap();
    assert_eq!(report.attached_gpus, Some(2));
    assert_eq!(report.driver_version.as_deref(), Some("550.54.15"));
    assert_eq!(report.gpus.len(), 2);
    let ids: Vec<_> = report
        .gpus
        .iter()
        .map(|g| (g.index, g.pci_bus_id.as_deref().unwrap()))
        .collect();
    assert_eq!(ids, [(0, "00000000:17:00.0"), (1, "00000000:2A:00.0")]);
}

#[test]
fn placeholders_become_none() {
    let report = parse_query_xml(TWO_GPUS).unwrap();
    let (first, second) = (&report.gpus[0], &report.gpus[1]);
    assert_eq!(first.fan_speed_percent, None); // [N/A]
    assert_eq!(first.fb_memory.reserved_mib, None); // [Not Supported]
    assert_eq!(first.utilization.memory_percent, None); // Unknown Error
    assert_eq!(second.fb_memory.total_mib, None); // N/A
    assert_eq!(second.power.draw_w, None); // [N/A]
    assert_eq!(second.processes[0].used_memory_mib, None); // [N/A]
    assert_eq!(first.product_architecture, None); // missing element
}

#[test]
fn units_are_stripped() {
    let report = parse_query_xml(TWO_GPUS).unwrap();
    let (first, second) = (&report.gpus[0], &report.gpus[1]);
    assert_eq!(first.fb_memory.total_mib, Some(81559));
    assert_eq!(first.fb_memory.used_mib, Some(1024));
    assert_eq!(first.temperature.gpu_c, Some(35));
    assert_eq!(first.utilization.gpu_percent, Some(10));
    assert_eq!(first.clocks.graphics_mhz, Some(1980));
    assert_eq!(first.power.limit_w, Some(700.0));
    assert_eq!(second.fan_speed_percent, Some(55));
    assert_eq!(second.power.limit_w, Some(650.0));
}

#[test]
fn enabled_disabled_become_booleans() {
    let report = parse_query_xml(TWO_GPUS).unwrap();
    let (first, second) = (&report.gpus[0], &report.gpus[1]);
    assert_eq!(first.persistence_mode, Some(true));
    assert_eq!(first.display_active, Some(false));
    assert_eq!(first.mig.current, Some(false));
    assert_eq!(first.mig.pending, Some(true));
    assert_eq!(second.persistence_mode, Some(false));
    assert_eq!(second.display_active, None);
}

#[test]
fn renamed_elements_are_both_read() {
    let report = parse_query_xml(TWO_GPUS).unwrap();
    let (first, second) = (&report.gpus[0], &report.gpus[1]);
    // clocks_event_reasons (new) and clocks_throttle_reasons (old).
    assert_eq!(
        first.clock_event_reasons.as_deref(),
        Some(&["sw_power_cap".to_owned(), "hw_thermal_slowdown".to_owned()][..])
    );
    assert_eq!(
        second.clock_event_reasons.as_deref(),
        Some(&["gpu_idle".to_owned()][..])
    );
    // gpu_power_readings: power_draw not supported, instant_power_draw stands in.
    assert_eq!(first.power.draw_w, Some(120.5));
    assert_eq!(first.power.instant_draw_w, Some(120.5));
    // power_readings: power_limit is both the limit and the requested limit.
    assert_eq!(second.power.requested_limit_w, Some(650.0));
}

#[test]
fn processes_are_read() {
    let report = parse_query_xml(TWO_GPUS).unwrap();
    assert!(report.gpus[0].processes.is_empty());
    let process = &report.gpus[1].processes[0];
    assert_eq!(process.pid, Some(4242));
    assert_eq!(process.process_type.as_deref(), Some("C"));
    assert_eq!(
        process.process_name.as_deref(),
        Some("python train.py & more")
    );
    assert_eq!(process.gpu_instance_id, Some(1));
    assert_eq!(process.compute_instance_id, Some(0));
}

#[test]
fn ecc_counts_are_summed_over_memory_kinds() {
    let xml = r#"<nvidia_smi_log><gpu id="0">
      <ecc_errors>
        <volatile>
          <sram_correctable>2</sram_correctable><sram_uncorrectable_parity>1</sram_uncorrectable_parity>
          <sram_uncorrectable_secded>4</sram_uncorrectable_secded><dram_correctable>5</dram_correctable>
          <dram_uncorrectable>N/A</dram_uncorrectable>
        </volatile>
        <aggregate><single_bit><total>7</total></single_bit><double_bit><total>1</total></double_bit></aggregate>
      </ecc_errors>
      <retired_pages><pending_retirement>Yes</pending_retirement></retired_pages>
      <remapped_rows><remapped_row_failure>Yes</remapped_row_failure></remapped_rows>
      <gpu_reset_status><reset_required>Yes</reset_required></gpu_reset_status>
    </gpu></nvidia_smi_log>"#;
    let gpu = &parse_query_xml(xml).unwrap().gpus[0];
    assert_eq!(gpu.ecc_errors.volatile_correctable, Some(7));
    assert_eq!(gpu.ecc_errors.volatile_uncorrectable, Some(5));
    assert_eq!(gpu.ecc_errors.aggregate_correctable, Some(7));
    assert_eq!(gpu.ecc_errors.aggregate_uncorrectable, Some(1));
    assert_eq!(gpu.retired_pages.pending, Some(true));
    assert_eq!(gpu.remapped_rows.failure, Some(true));
    assert_eq!(gpu.reset_required, Some(true));
}

#[test]
fn no_gpu_is_an_empty_list() {
    let report =
        parse_query_xml("<nvidia_smi_log><attached_gpus>0</attached_gpus></nvidia_smi_log>")
            .unwrap();
    assert_eq!(report.attached_gpus, Some(0));
    assert!(report.gpus.is_empty());
}

#[test]
fn empty_input_is_an_error() {
    assert_eq!(parse_query_xml(""), Err(SmiError::Empty));
    assert_eq!(parse_query_xml("  \n\t "), Err(SmiError::Empty));
    assert_eq!(
        parse_query_xml("").unwrap_err().to_string(),
        "nvidia-smi output is empty"
    );
}

#[test]
fn text_that_is_not_xml_is_an_error() {
    let out = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. \
               Make sure that the latest NVIDIA driver is installed and running.\n";
    let err = parse_query_xml(out).unwrap_err();
    assert!(matches!(err, SmiError::NotXml { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with("nvidia-smi output is not xml, it starts with `NVIDIA-SMI has failed"),
        "{message}"
    );
    assert_plain_message(&message);
}

#[test]
fn wrong_root_is_an_error() {
    let err = parse_query_xml("<?xml version=\"1.0\"?><html><body/></html>").unwrap_err();
    assert_eq!(
        err,
        SmiError::WrongRoot {
            found: "html".to_owned()
        }
    );
    let message = err.to_string();
    assert_eq!(
        message,
        "unexpected root element `html` in nvidia-smi output, expected `nvidia_smi_log`"
    );
    assert_plain_message(&message);
}

#[test]
fn truncated_xml_is_an_error() {
    let cut = &TWO_GPUS[..TWO_GPUS.len() / 2];
    let err = parse_query_xml(cut).unwrap_err();
    assert!(matches!(err, SmiError::InvalidXml { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with("nvidia-smi output is not well-formed xml: "),
        "{message}"
    );
    assert_plain_message(&message);
}

#[test]
fn broken_xml_is_an_error() {
    for input in [
        "<nvidia_smi_log>",
        "<nvidia_smi_log><gpu></nvidia_smi_log>",
        "<a><b></a>",
        "<<>>",
        "<?xml",
    ] {
        let err = parse_query_xml(input).unwrap_err();
        assert!(
            matches!(err, SmiError::InvalidXml { .. }),
            "{input}: {err:?}"
        );
        assert_plain_message(&err.to_string());
    }
}

#[test]
fn every_prefix_of_a_document_fails_cleanly() {
    // Truncation at any byte: an error or a report, never a panic.
    for end in (0..TWO_GPUS.len()).filter(|&i| TWO_GPUS.is_char_boundary(i)) {
        let _ = parse_query_xml(&TWO_GPUS[..end]);
    }
}

/// Error messages are lowercase (apart from quoted input) and have no trailing period.
fn assert_plain_message(message: &str) {
    assert!(
        message.starts_with(|c: char| !c.is_uppercase()),
        "{message}"
    );
    assert!(!message.ends_with('.'), "{message}");
}
