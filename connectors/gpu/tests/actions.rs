//! Every action of the `gpu` connector through the engine's test harness, against a
//! fake `nvidia-smi` that replays real captures (see `connector_gpu::testing`).


use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use connector_gpu::testing::{combine, four_gpus, gpu_table, script, FakeSmi};
use connector_gpu::smi::parse_query_xml;
use connector_gpu::{Allocate, CudaInfo, Deallocate, GpuConnector, Health, Info, List, MemoryInfo, Mig, Monitor, Processes, Reset, Select, TopologyAction};
use engine_connector::{Connector, ErrorKind, ResourceState, StepContext};
use serde_json::{json, Value};

const T4_UUID: &str = "GPU-d37e67a5-91dd-3774-a5cb-99096249601a";
const A10G_UUID: &str = "GPU-9a9a6c50-2a47-2f51-a902-b82c3b127e94";
const RTX3090_UUID: &str = "GPU-12345678-aaaa-bbbb-cccc-0123456789ab";

fn four() -> FakeSmi {
    FakeSmi::new(&four_gpus())
}

#[test]
fn the_connector_has_every_action_with_schemas() {
    let actions = GpuConnector.actions();
    let ids: Vec<&str> = actions.iter().map(|a| a.id()).collect();
    for want in [
        "gpu.list", "gpu.info", "gpu.monitor", "gpu.allocate", "gpu.deallocate", "gpu.cuda_info", "gpu.memory_info", "gpu.processes", "gpu.topology", "gpu.reset", "gpu.mig",
        "gpu.health", "gpu.select",
    ] {
        assert!(ids.contains(&want), "{want} missing from {ids:?}");
    }
    assert_eq!(ids.len(), 13);
    assert_eq!(GpuConnector.name(), "gpu");
    for a in &actions {
        assert_eq!(a.input_schema()["type"], "object", "{}", a.id());
        assert_eq!(a.output_schema()["type"], "object", "{}", a.id());
        assert!(a.description().len() > 10);
    }
    let kinds: BTreeMap<&str, Option<&str>> = actions.iter().map(|a| (a.id(), a.resource_kind())).collect();
    assert_eq!(kinds["gpu.allocate"], Some("gpu.allocation"));
    assert_eq!(kinds["gpu.mig"], Some("gpu.mig_instance"));
    assert_eq!(kinds["gpu.list"], None);
    // Typed outputs: numbers are numbers.
    let list = actions.iter().find(|a| a.id() == "gpu.list").unwrap().output_schema();
    let text = list.to_string();
    assert!(text.contains("memory_total_mib") && text.contains("integer"), "{text}");
}

#[tokio::test]
async fn list_reads_every_gpu_with_numbers_and_nulls() {
    let fake = four();
    let out = fake.harness("list").run(&List, json!({})).await.unwrap();
    assert_eq!(out.count, 4);
    assert_eq!(out.host, "local");
    assert_eq!(out.driver_version.as_deref(), Some("515.105.01"));
    let names: Vec<_> = out.gpus.iter().map(|g| g.name.as_deref().unwrap()).collect();
    assert_eq!(names, ["NVIDIA A10G", "Tesla T4", "NVIDIA GeForce RTX 3090", "NVIDIA A100-SXM4-80GB"]);
    let t4 = &out.gpus[1];
    assert_eq!((t4.index, t4.uuid.as_deref(), t4.memory_total_mib, t4.memory_free_mib), (1, Some(T4_UUID), Some(15360), Some(13939)));
    assert_eq!((t4.temperature_c, t4.power_draw_w, t4.processes), (Some(40), Some(26.78), 2));
    let a100 = &out.gpus[3];
    assert_eq!((a100.mig_enabled, a100.utilization_percent), (Some(true), None));
    let v = serde_json::to_value(&out).unwrap();
    assert_eq!(v["gpus"][3]["utilization_percent"], Value::Null);
    assert_eq!(v["gpus"][1]["memory_total_mib"], json!(15360));
    assert_eq!(v["gpus"][1]["power_draw_w"], json!(26.78));
    assert_eq!(fake.calls(), ["-q -x"]);
}

#[tokio::test]
async fn list_filters_gpus_and_names_unknown_ones() {
    let fake = four();
    let h = fake.harness("list");
    let out = h.run(&List, json!({"gpus": [T4_UUID, 0, "00000000:01:00.0"]})).await.unwrap();
    let idx: Vec<usize> = out.gpus.iter().map(|g| g.index).collect();
    // The A10G and the A100 share a PCI bus id in the captures; both match it.
    assert_eq!(idx, [0, 1, 3]);
    let e = h.run(&List, json!({"gpus": [9]})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(e.message.contains("no GPU `9`") && e.message.contains(T4_UUID), "{}", e.message);
}

#[tokio::test]
async fn inputs_are_checked_before_anything_runs() {
    let fake = four();
    let h = fake.harness("list");
    let e = h.run(&List, json!({"bogus": 1})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert!(e.message.contains("unknown field"), "{}", e.message);
    // A host nobody answers on: the ssh connector's connection error, nothing run here.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let e = h.run(&List, json!({"host": format!("ubuntu@127.0.0.1:{port}")})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    let e = h.run(&List, json!({"host": {"host": "gpu-1", "pasword": "x"}})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
    let e = h.run(&Monitor, json!({"duration": "10 seconds"})).await.unwrap_err();
    assert!(e.message.contains("is not a duration"), "{}", e.message);
    assert!(fake.calls().is_empty(), "nothing may run for a refused input");
}

#[tokio::test]
async fn the_dyn_action_path_returns_json() {
    let fake = four();
    let mut cx = StepContext::detached("list");
    cx.settings = fake.settings();
    let action = GpuConnector.actions().into_iter().find(|a| a.id() == "gpu.memory_info").unwrap();
    let v = action.run_value(json!({"gpus": [1]}), &cx).await.unwrap();
    assert_eq!(v["gpus"][0]["total_mib"], json!(15360));
    assert_eq!(v["gpus"][0]["used_percent"], json!(6.7));
    assert!(action.validate_value(&json!({"gpus": "all"})).is_err());
}

#[tokio::test]
async fn info_is_the_whole_typed_report() {
    let fake = four();
    let out = fake.harness("info").run(&Info, json!({"gpus": [3]})).await.unwrap();
    assert_eq!(out.attached_gpus, Some(4));
    assert_eq!(out.dtd_version, Some(12));
    let a100 = &out.gpus[0];
    assert_eq!(a100.mig.devices.len(), 4);
    assert_eq!(a100.ecc_errors.volatile_uncorrectable, Some(0));
    assert_eq!(a100.reset_required, Some(false));
    let v = serde_json::to_value(&out).unwrap();
    assert_eq!(v["gpus"][0]["fb_memory"]["total_mib"], json!(81920));
    assert_eq!(v["gpus"][0]["power"]["draw_w"], json!(67.03));
    assert_eq!(v["gpus"][0]["fan_speed_percent"], Value::Null);
}

#[tokio::test]
async fn memory_info_per_gpu_mig_device_process_and_totals() {
    let fake = four();
    let out = fake.harness("mem").run(&MemoryInfo, json!({})).await.unwrap();
    assert_eq!(out.total_mib, 23028 + 15360 + 24576 + 81920);
    assert_eq!(out.used_mib, out.gpus.iter().filter_map(|g| g.used_mib).sum::<u64>());
    assert_eq!(out.gpus[3].mig_devices.len(), 4);
    assert_eq!(out.gpus[3].mig_devices[0].total_mib, Some(19968));
    let t4 = &out.gpus[1];
    assert_eq!(t4.processes.iter().map(|p| p.pid).collect::<Vec<_>>(), [Some(675), Some(5762)]);
    assert_eq!(t4.processes[1].used_mib, Some(1005));
    assert_eq!(t4.bar1.total_mib, Some(256));
}

#[tokio::test]
async fn cuda_info_reads_versions_capabilities_and_the_toolkit() {
    let fake = four();
    let nvcc = fake.dir.path().join("nvcc");
    script(&nvcc, "#!/bin/sh\necho 'nvcc: NVIDIA (R) Cuda compiler driver'\necho 'Cuda compilation tools, release 11.7, V11.7.99'\necho 'Build cuda_11.7.r11.7/compiler.31442593_0'\n");
    let mut h = fake.harness("cuda");
    h.settings["nvcc"] = json!(nvcc.to_str().unwrap());
    let out = h.run(&CudaInfo, json!({"min_cuda_version": "11.4"})).await.unwrap();
    assert_eq!((out.driver_version.as_deref(), out.cuda_version.as_deref(), out.compatible), (Some("515.105.01"), Some("11.7"), Some(true)));
    assert_eq!(out.toolkit.as_ref().map(|t| t.version.as_str()), Some("11.7"));
    assert_eq!(out.gpus.len(), 4);
    assert_eq!(out.gpus[1].compute_capability.as_deref(), Some("8.6"));
    let e = h.run(&CudaInfo, json!({"min_cuda_version": "12.2"})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert!(e.message.contains("CUDA 12.2 is needed") && e.message.contains("supports CUDA 11.7"), "{}", e.message);
    assert!(h.run(&CudaInfo, json!({"min_cuda_version": "twelve"})).await.is_err());

    // An older driver without `compute_cap`, and no nvcc: nulls, not errors.
    let old = four();
    let mut rows = gpu_table(&parse_query_xml(&four_gpus()).unwrap());
    for r in &mut rows {
        r.remove("compute_cap");
    }
    old.query_gpu(1, &rows);
    let mut h = old.harness("cuda");
    h.settings["nvcc"] = json!("/nonexistent/nvcc");
    let out = h.run(&CudaInfo, json!({})).await.unwrap();
    assert!(out.gpus.iter().all(|g| g.compute_capability.is_none()));
    assert_eq!((out.toolkit, out.compatible), (None, None));
}

#[tokio::test]
async fn processes_are_mapped_to_their_gpus() {
    let fake = four();
    fake.compute_apps(1, &[(T4_UUID, 5762, "1005", "python"), (RTX3090_UUID, 4242, "[N/A]", "/usr/bin/python3 train.py --lr=0.1,0.2")]);
    let h = fake.harness("ps");
    let out = h.run(&Processes, json!({})).await.unwrap();
    assert_eq!(out.count, 2);
    let p = &out.processes[0];
    assert_eq!((p.gpu_index, p.pid, p.name.as_deref(), p.used_memory_mib, p.gpu_name.as_deref()), (Some(1), Some(5762), Some("python"), Some(1005), Some("Tesla T4")));
    let q = &out.processes[1];
    assert_eq!((q.gpu_index, q.used_memory_mib, q.name.as_deref()), (Some(2), None, Some("/usr/bin/python3 train.py --lr=0.1,0.2")));
    let only = h.run(&Processes, json!({"gpus": [2]})).await.unwrap();
    assert_eq!(only.processes.iter().map(|p| p.pid).collect::<Vec<_>>(), [Some(4242)]);
    assert_eq!(h.run(&Processes, json!({"gpus": ["GPU-nope"]})).await.unwrap_err().kind, ErrorKind::NotFound);
    assert!(fake.calls().iter().any(|c| c == "--query-compute-apps=gpu_uuid,pid,used_gpu_memory,process_name --format=csv,noheader,nounits"), "{:?}", fake.calls());
}

#[tokio::test]
async fn topology_parses_the_matrix() {
    let fake = four();
    fake.write("topo.txt", &std::fs::read_to_string(connector_gpu::testing::data_dir().join("topo-m-4gpu.txt")).unwrap());
    let out = fake.harness("topo").run(&TopologyAction, json!({})).await.unwrap();
    let t = &out.topology;
    assert_eq!(t.gpus.len(), 4);
    assert_eq!(t.gpus[0].cpu_affinity.as_deref(), Some("0-15,32-47"));
    assert_eq!(t.gpus[3].numa_affinity.as_deref(), Some("1"));
    assert_eq!(t.gpus[3].gpu_numa_id, None);
    assert_eq!(t.gpu_links.len(), 6);
    let l01 = t.gpu_links.iter().find(|l| l.from == "GPU0" && l.to == "GPU1").unwrap();
    assert_eq!((l01.link.as_str(), l01.nvlinks), ("NV12", Some(12)));
    let l23 = t.gpu_links.iter().find(|l| l.from == "GPU2" && l.to == "GPU3").unwrap();
    assert_eq!(l23.link, "SYS");
    assert!(out.nvlink);
    assert_eq!(out.numa_groups, BTreeMap::from([("0".to_string(), vec![0, 1, 2]), ("1".to_string(), vec![3])]));
    assert_eq!(t.nics, ["NIC0"]);
    assert_eq!(t.nic_names.get("NIC0").map(String::as_str), Some("mlx5_0"));
    assert_eq!(t.nic_links.iter().filter(|l| l.to == "NIC0").count(), 4);
    let v = serde_json::to_value(&out).unwrap();
    assert_eq!(v["gpu_links"][0]["kind"], "nvlink");

    fake.write("topo.txt", "GPU topology not available\n");
    let e = fake.harness("topo").run(&TopologyAction, json!({})).await.unwrap_err();
    assert!(e.message.contains("no matrix header"), "{}", e.message);
}

/// Three `--query-gpu` answers with rising load on GPU 0 and a power cap on GPU 2.
fn load_samples(fake: &FakeSmi) {
    let base = gpu_table(&parse_query_xml(&four_gpus()).unwrap());
    for (n, (util, mem, temp, reasons)) in [(20, 1000, 50, "0x0000000000000000"), (80, 20000, 70, "0x0000000000000004"), (100, 22000, 88, "0x0000000000000044")].into_iter().enumerate() {
        let mut rows = base.clone();
        rows[0].insert("utilization.gpu".into(), util.to_string());
        rows[0].insert("memory.used".into(), mem.to_string());
        rows[0].insert("temperature.gpu".into(), temp.to_string());
        rows[0].insert("clocks_event_reasons.active".into(), reasons.into());
        fake.query_gpu(n + 1, &rows);
    }
}

#[tokio::test]
async fn monitor_samples_and_draws_insights() {
    let fake = four();
    load_samples(&fake);
    let h = fake.harness("watch");
    let out = h.run(&Monitor, json!({"duration": "200ms", "interval": "100ms", "gpus": [0, 2]})).await.unwrap();
    assert_eq!(out.samples.len(), 3);
    assert!(out.samples.iter().all(|s| s.gpus.iter().map(|g| g.index).collect::<Vec<_>>() == [0, 2]));
    assert!(out.elapsed_ms >= 180, "{}", out.elapsed_ms);
    assert_eq!(out.samples[2].gpus[0].throttle_reasons.as_deref(), Some(&["sw_power_cap".to_string(), "hw_thermal_slowdown".to_string()][..]));
    let g0 = &out.insights.gpus[0];
    assert_eq!((g0.samples, g0.utilization_avg_percent, g0.utilization_max_percent), (3, Some(66.7), Some(100)));
    assert_eq!((g0.memory_used_max_mib, g0.temperature_max_c, g0.name.as_deref()), (Some(22000), Some(88), Some("NVIDIA A10G")));
    assert_eq!(g0.throttle_reasons, BTreeMap::from([("hw_thermal_slowdown".to_string(), 1), ("sw_power_cap".to_string(), 2)]));
    for want in ["GPU 0 ran hot (peak 88 °C)", "GPU 0 memory was nearly full", "sw_power_cap in 2 of 3", "GPU 2 was mostly idle"] {
        assert!(out.insights.notes.iter().any(|n| n.contains(want)), "{want} not in {:?}", out.insights.notes);
    }
    let progress = h.recorded().progress.clone();
    assert_eq!(progress.last(), Some(&("sampling".to_string(), Some(100))));
    assert_eq!(fake.calls().iter().filter(|c| c.starts_with("--query-gpu=")).count(), 3);
}

#[tokio::test]
async fn monitor_uses_the_old_reason_field_on_old_drivers() {
    let fake = four();
    let mut rows = gpu_table(&parse_query_xml(&four_gpus()).unwrap());
    for r in &mut rows {
        let v = r.remove("clocks_event_reasons.active").unwrap();
        r.insert("clocks_throttle_reasons.active".into(), v);
    }
    fake.query_gpu(1, &rows);
    let out = fake.harness("watch").run(&Monitor, json!({"duration": "0s"})).await.unwrap();
    assert_eq!(out.samples.len(), 1);
    assert_eq!(out.samples[0].gpus[0].throttle_reasons.as_deref(), Some(&["gpu_idle".to_string()][..]));
    let calls = fake.calls();
    assert!(calls[1].contains("clocks_event_reasons.active") && calls[2].contains("clocks_throttle_reasons.active"), "{calls:?}");

    // Neither field: samples without reasons.
    for r in &mut rows {
        r.remove("clocks_throttle_reasons.active");
    }
    fake.query_gpu(1, &rows);
    std::fs::remove_file(fake.dir.path().join("query-gpu.count")).unwrap();
    let out = fake.harness("watch").run(&Monitor, json!({"duration": "0s"})).await.unwrap();
    assert_eq!(out.samples[0].gpus[0].throttle_reasons, None);
    assert_eq!(out.samples[0].gpus[1].memory_total_mib, Some(15360));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_stops_at_once_when_cancelled() {
    let fake = four();
    let h = std::sync::Arc::new(fake.harness("watch"));
    let h2 = h.clone();
    let started = Instant::now();
    let task = tokio::spawn(async move { h2.run(&Monitor, json!({"duration": "60s", "interval": "1s"})).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    h.cancel();
    let e = task.await.unwrap().unwrap_err();
    assert_eq!(e.kind, ErrorKind::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    drop(fake);
}

#[tokio::test]
async fn select_ranks_explains_and_honours_preferences() {
    let fake = four();
    let h = fake.harness("pick");
    let out = h.run(&Select, json!({"min_memory_gb": 20, "workload": "training"})).await.unwrap();
    // The RTX 3090 has the most free memory of the GPUs with 20 GiB free.
    assert_eq!(out.indices, [2]);
    assert_eq!(out.cuda_visible_devices, RTX3090_UUID);
    assert!(out.reason.contains("GPU 2 (NVIDIA GeForce RTX 3090) scored"), "{}", out.reason);
    assert!(out.reason.contains("GPU 1: 13939 MiB free, 20480 MiB asked"), "{}", out.reason);
    assert!(out.reason.contains("GPU 3: MIG mode is on"), "{}", out.reason);
    let c: BTreeMap<usize, &connector_gpu::strategy::Candidate> = out.candidates.iter().map(|c| (c.index, c)).collect();
    assert!(c[&2].eligible && c[&0].eligible && !c[&1].eligible && !c[&3].eligible);
    assert!(c[&2].score > c[&0].score);
    assert_eq!(c[&2].breakdown.memory, 1.0);
    assert_eq!(out.candidates[0].index, 2);
    assert!((out.weights.memory + out.weights.utilization + out.weights.model + out.weights.power + out.weights.workload - 1.0).abs() < 1e-9);

    let out = h.run(&Select, json!({"min_memory_gb": 20, "workload": "training", "preferred_models": ["A10G", "3090"]})).await.unwrap();
    assert_eq!(out.indices, [0]);
    assert!(out.reason.contains("matches preferred model `A10G`"), "{}", out.reason);

    // Inference prefers the smaller, more frugal board when both fit.
    let out = h.run(&Select, json!({"min_memory_gb": 10, "workload": "inference"})).await.unwrap();
    assert_eq!(out.indices, [1], "{}", out.reason);

    let e = h.run(&Select, json!({"count": 3, "min_memory_gb": 20})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Capacity);
    assert!(e.message.contains("3 exclusive GPUs asked on local, 2 available") && e.message.contains("MIG mode is on"), "{}", e.message);
    assert_eq!(h.run(&Select, json!({"count": 0})).await.unwrap_err().kind, ErrorKind::Invalid);
}

#[tokio::test]
async fn allocate_holds_adopts_and_releases() {
    let fake = four();
    let h = fake.harness("alloc");
    let out = h.run(&Allocate, json!({"count": 2, "workload": "training"})).await.unwrap();
    assert!(!out.adopted);
    assert_eq!(out.indices.len(), 2);
    assert!(!out.indices.contains(&3), "the MIG GPU is not allocatable");
    assert_eq!(out.cuda_visible_devices, out.uuids.join(","));
    assert_eq!(out.env["NVIDIA_VISIBLE_DEVICES"], out.cuda_visible_devices);
    h.assert_intent_before_create();
    let created = h.created();
    assert_eq!(created.len(), 1);
    assert_eq!((created[0].kind.as_str(), created[0].key.as_str(), created[0].id.as_deref()), ("gpu.allocation", "harness-run/alloc", Some(out.allocation_id.as_str())));
    let ledger: Value = serde_json::from_str(&std::fs::read_to_string(fake.ledger_dir().join("ledger.json")).unwrap()).unwrap();
    assert_eq!(ledger["allocations"][0]["key"], "harness-run/alloc");
    assert_eq!(ledger["allocations"][0]["mode"], "exclusive");

    // A retry of the same step adopts its allocation.
    let again = h.run(&Allocate, json!({"count": 2, "workload": "training"})).await.unwrap();
    assert!(again.adopted);
    assert_eq!((again.allocation_id.as_str(), &again.indices), (out.allocation_id.as_str(), &out.indices));

    // Another step gets what is left, and no more.
    let other = fake.harness("other");
    let e = other.run(&Allocate, json!({"count": 2})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Capacity);
    assert!(e.message.contains("held exclusively by allocation"), "{}", e.message);
    let rest = other.run(&Allocate, json!({"count": 1})).await.unwrap();
    assert!(!out.indices.contains(&rest.indices[0]));

    // Listed as allocated.
    let list = fake.harness("list").run(&List, json!({})).await.unwrap();
    let held: Vec<usize> = list.gpus.iter().filter(|g| !g.allocated_to.is_empty()).map(|g| g.index).collect();
    assert_eq!(held.len(), 3);

    // Release by id; releasing again finds nothing and succeeds.
    let d = fake.harness("free").run(&Deallocate, json!({"allocation_id": out.allocation_id})).await.unwrap();
    assert!(d.released);
    assert_eq!(d.gpus.len(), 2);
    let d = fake.harness("free").run(&Deallocate, json!({"allocation_id": out.allocation_id})).await.unwrap();
    assert!(!d.released);
    // By key.
    let d = fake.harness("free").run(&Deallocate, json!({"key": "harness-run/other"})).await.unwrap();
    assert!(d.released);
    assert!(fake.harness("free").run(&Deallocate, json!({})).await.is_err());

    // Undo of the first step: gone already, which counts as done, twice and as an intent.
    h.assert_undo_idempotent(&Allocate).await;
}

#[tokio::test]
async fn undo_releases_and_finds_unconfirmed_allocations_by_key() {
    let fake = four();
    let h = fake.harness("alloc");
    h.run(&Allocate, json!({"count": 3})).await.unwrap();
    let mut rec = h.created().remove(0);
    rec.id = None;
    rec.state = ResourceState::Intended;
    rec.undo = Value::Null;
    h.undo(&Allocate, &rec).await.unwrap();
    let state: Value = serde_json::from_str(&std::fs::read_to_string(fake.ledger_dir().join("ledger.json")).unwrap()).unwrap();
    assert_eq!(state["allocations"], json!([]));
    assert_eq!(h.undo(&Allocate, &rec).await.unwrap_err().kind, ErrorKind::NotFound);
    // Everything is free again.
    assert_eq!(fake.harness("next").run(&Allocate, json!({"count": 3})).await.unwrap().indices.len(), 3);
}

#[tokio::test]
async fn shared_allocations_share_only_with_shared_ones() {
    let fake = four();
    let a = fake.harness("a").run(&Allocate, json!({"count": 3, "mode": "shared", "workload": "inference"})).await.unwrap();
    assert_eq!(a.indices.len(), 3);
    let b = fake.harness("b").run(&Allocate, json!({"mode": "shared", "gpus": [A10G_UUID]})).await.unwrap();
    assert_eq!(b.indices, [0]);
    let e = fake.harness("c").run(&Allocate, json!({})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Capacity);
    assert!(e.message.contains("and an exclusive GPU is asked"), "{}", e.message);
    // Select sees the sharing.
    let s = fake.harness("s").run(&Select, json!({"mode": "shared", "count": 3})).await.unwrap();
    let a10g = s.candidates.iter().find(|c| c.index == 0).unwrap();
    assert_eq!(a10g.shared_by, 2);
    assert!(s.reason.contains("already shared by"), "{}", s.reason);
}

#[tokio::test]
async fn expired_allocations_free_their_gpus() {
    let fake = four();
    std::fs::create_dir_all(fake.ledger_dir()).unwrap();
    let stale = json!({"version": 1, "allocations": [
        {"id": "gpu-0000000000000001", "key": "old-run/train", "host": "local", "mode": "exclusive",
         "gpus": [{"index": 0, "uuid": A10G_UUID, "name": "NVIDIA A10G"}, {"index": 1, "uuid": T4_UUID, "name": "Tesla T4"}, {"index": 2, "uuid": RTX3090_UUID, "name": null}],
         "workload": "training", "created_at": 1, "expires_at": 2}
    ]});
    std::fs::write(fake.ledger_dir().join("ledger.json"), stale.to_string()).unwrap();
    let out = fake.harness("new").run(&Allocate, json!({"count": 3, "ttl": "2h"})).await.unwrap();
    assert_eq!(out.indices.len(), 3);
    assert!(out.expires_at.is_some_and(|e| e > 7000));
    let state: Value = serde_json::from_str(&std::fs::read_to_string(fake.ledger_dir().join("ledger.json")).unwrap()).unwrap();
    assert_eq!(state["allocations"].as_array().unwrap().len(), 1, "the expired allocation is purged");
}

#[tokio::test]
async fn reset_refuses_while_processes_or_allocations_use_the_gpu() {
    let fake = four();
    fake.compute_apps(1, &[(T4_UUID, 5762, "1005", "python")]);
    let h = fake.harness("reset");
    let e = h.run(&Reset, json!({"gpu": 1})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    assert!(e.message.contains("GPU 1 (Tesla T4)") && e.message.contains("5762 python") && e.message.contains("force: true"), "{}", e.message);
    assert_eq!(fake.read("resets.log"), "");

    let out = h.run(&Reset, json!({"gpu": T4_UUID, "force": true})).await.unwrap();
    assert_eq!((out.index, out.killed_processes.as_slice()), (1, &[5762][..]));
    assert!(out.message.contains("was successfully reset"), "{}", out.message);
    assert_eq!(fake.read("resets.log"), "-r -i 1\n");

    // Held by another step's allocation.
    fake.harness("holder").run(&Allocate, json!({"gpus": [2]})).await.unwrap();
    let e = h.run(&Reset, json!({"gpu": 2})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    assert!(e.message.contains("is allocated to"), "{}", e.message);
    h.run(&Reset, json!({"gpu": 0})).await.unwrap();
    assert_eq!(fake.read("resets.log"), "-r -i 1\n-r -i 0\n");
    assert!(h.run(&Reset, json!({})).await.is_err(), "`gpu` is required");
}

#[tokio::test]
async fn reset_maps_nvidia_smi_refusals() {
    let fake = four();
    let h = fake.harness("reset");
    fake.write("query.xml", &four_gpus());
    // Only the reset itself fails: a wrapper around the fake.
    let wrapper = fake.dir.path().join("smi-wrapper");
    script(
        &wrapper,
        &format!(
            "#!/bin/sh\nif [ \"$1\" = -r ]; then echo 'Unable to reset GPU 00000000:17:00.0 because it is being used by some other process (e.g. CUDA application, graphics application like X server, monitoring application like other instance of nvidia-smi). Please first kill all processes using this GPU and all compute applications running in the system.'; echo 'GPU 00000000:17:00.0 is currently in use by another process.'; exit 255; fi\nexec {} \"$@\"\n",
            fake.path().display()
        ),
    );
    let mut h2 = fake.harness("reset");
    h2.settings["nvidia_smi"] = json!(wrapper.to_str().unwrap());
    let e = h2.run(&Reset, json!({"gpu": 0})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    assert!(e.message.contains("the GPU is in use"), "{}", e.message);
    script(&wrapper, &format!("#!/bin/sh\nif [ \"$1\" = -r ]; then echo 'Insufficient Permissions'; exit 4; fi\nexec {} \"$@\"\n", fake.path().display()));
    assert_eq!(h2.run(&Reset, json!({"gpu": 0})).await.unwrap_err().kind, ErrorKind::Auth);
    drop(h);
}

const LGI: &str = "+-------------------------------------------------------+
| GPU instances:                                        |
| GPU   Name             Profile  Instance   Placement  |
|                          ID       ID       Start:Size |
|=======================================================|
|   3  MIG 1g.20gb         19        3          0:1     |
+-------------------------------------------------------+
|   3  MIG 1g.20gb         19        4          1:1     |
+-------------------------------------------------------+
";

const LGIP: &str = "+-----------------------------------------------------------------------------+
| GPU instance profiles:                                                      |
| GPU   Name             ID    Instances   Memory     P2P    SM    DEC   ENC  |
|                              Free/Total   GiB              CE    JPEG  OFA  |
|=============================================================================|
|   3  MIG 1g.20gb       19     3/7        19.50      No     14     0     0   |
|                                                             1     0     0   |
+-----------------------------------------------------------------------------+
|   3  MIG 3g.40gb        9     0/2        39.25      No     42     2     0   |
|                                                             3     0     0   |
+-----------------------------------------------------------------------------+
";

#[tokio::test]
async fn mig_status_lists_mode_devices_instances_and_profiles() {
    let fake = four();
    fake.write("mig-lgi.txt", LGI);
    fake.write("mig-lgip.txt", LGIP);
    let out = fake.harness("mig").run(&Mig, json!({})).await.unwrap();
    assert_eq!(out.gpus.len(), 4);
    let a10g = &out.gpus[0];
    assert_eq!((a10g.supported, a10g.current, a10g.gpu_instances.as_ref().map(Vec::len)), (false, None, Some(0)));
    let a100 = &out.gpus[3];
    assert_eq!((a100.supported, a100.current, a100.pending, a100.reset_needed), (true, Some(true), Some(true), false));
    assert_eq!(a100.devices.len(), 4);
    assert_eq!(a100.gpu_instances.as_ref().unwrap().iter().map(|g| g.id).collect::<Vec<_>>(), [3, 4]);
    let profiles = a100.profiles.as_ref().unwrap();
    assert_eq!(profiles.iter().map(|p| (p.id, p.free)).collect::<Vec<_>>(), [(19, Some(3)), (9, Some(0))]);

    // No MIG GPU: nvidia-smi mig is not asked.
    let plain = FakeSmi::new(&combine(&[("tesla-t4.xml", None)]));
    let out = plain.harness("mig").run(&Mig, json!({})).await.unwrap();
    assert_eq!((out.gpus[0].supported, out.gpus[0].gpu_instances.clone()), (false, None));
    assert_eq!(plain.calls(), ["-q -x"]);
}

#[tokio::test]
async fn mig_create_is_a_resource_that_undo_destroys() {
    let fake = four();
    fake.write("mig-lgi.txt", LGI);
    fake.write("mig-lgip.txt", LGIP);
    fake.write(
        "mig-create.txt",
        "Successfully created GPU instance ID  7 on GPU  3 using profile MIG 1g.20gb (ID 19)\n\
         Successfully created compute instance ID  0 on GPU  3 GPU instance ID  7 using profile MIG 1g.20gb (ID  0)\n\
         Successfully created GPU instance ID  8 on GPU  3 using profile MIG 1g.20gb (ID 19)\n\
         Successfully created compute instance ID  0 on GPU  3 GPU instance ID  8 using profile MIG 1g.20gb (ID  0)\n",
    );
    let h = fake.harness("slices");
    let e = h.run(&Mig, json!({"operation": "create", "gpu": 0, "profiles": ["1g.20gb"]})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert!(e.message.contains("does not support MIG"), "{}", e.message);
    let out = h.run(&Mig, json!({"operation": "create", "gpu": 3, "profiles": ["1g.20gb", "19"]})).await.unwrap();
    assert_eq!((out.created.as_slice(), out.adopted), (&[7, 8][..], false));
    assert!(fake.read("mig.log").contains("mig -i 3 -cgi 1g.20gb,19 -C"), "{}", fake.read("mig.log"));
    h.assert_intent_before_create();
    let again = h.run(&Mig, json!({"operation": "create", "gpu": 3, "profiles": ["1g.20gb", "19"]})).await.unwrap();
    assert_eq!((again.created.as_slice(), again.adopted), (&[7, 8][..], true));
    assert_eq!(fake.read("mig.log").matches("-cgi").count(), 1, "a retry must not create again");

    let rec = h.created().remove(0);
    assert_eq!(rec.kind, "gpu.mig_instance");
    // Undo from the key alone (an intent), as after a crash before the confirmation.
    let mut intent = rec.clone();
    intent.undo = Value::Null;
    intent.id = None;
    h.undo(&Mig, &intent).await.unwrap();
    let log = fake.read("mig.log");
    for want in ["mig -i 3 -gi 7 -dci", "mig -i 3 -gi 7 -dgi", "mig -i 3 -gi 8 -dci", "mig -i 3 -gi 8 -dgi"] {
        assert!(log.contains(want), "{want} not in {log}");
    }
    assert_eq!(h.undo(&Mig, &intent).await.unwrap_err().kind, ErrorKind::NotFound);
}

#[tokio::test]
async fn mig_mode_and_destroy() {
    let fake = four();
    fake.write("mig-lgi.txt", LGI);
    fake.write("mig-lgip.txt", LGIP);
    let h = fake.harness("mig");
    let out = h.run(&Mig, json!({"operation": "enable", "gpu": 3})).await.unwrap();
    assert!(out.messages[0].contains("Enabled MIG Mode"), "{:?}", out.messages);
    let out = h.run(&Mig, json!({"operation": "destroy", "gpu": 3, "gpu_instance_ids": [3]})).await.unwrap();
    assert_eq!(out.destroyed, [3]);
    let log = fake.read("mig.log");
    assert!(log.contains("-i 3 -mig 1") && log.contains("mig -i 3 -gi 3 -dci") && log.contains("mig -i 3 -gi 3 -dgi"), "{log}");
    h.run(&Mig, json!({"operation": "destroy", "gpu": 3, "all": true})).await.unwrap();
    assert!(fake.read("mig.log").contains("mig -i 3 -dci\n"), "{}", fake.read("mig.log"));
    assert!(h.run(&Mig, json!({"operation": "disable"})).await.is_err());
}

fn docker_listing(fake: &FakeSmi, lines: &str) -> std::path::PathBuf {
    let docker = fake.dir.path().join("docker");
    script(&docker, &format!("#!/bin/sh\nprintf '%s\\n' \"$*\" >> \"$(dirname \"$0\")/docker.log\"\ncat <<'EOF'\n{lines}EOF\n"));
    docker
}

#[tokio::test]
async fn health_passes_and_says_why_it_fails() {
    let fake = four();
    let report = parse_query_xml(&four_gpus()).unwrap();
    let listing: String = report.gpus.iter().map(|g| format!("GPU {}: {} (UUID: {})\n", g.index, g.product_name.as_deref().unwrap(), g.uuid.as_deref().unwrap())).collect();
    let docker = docker_listing(&fake, &listing);
    let mut h = fake.harness("health");
    h.settings["docker"] = json!(docker.to_str().unwrap());
    let out = h
        .run(&Health, json!({"expected_gpus": 4, "min_memory_gb": 15, "min_driver_version": "515.65", "min_cuda_version": "11.7", "container_image": "nvidia/cuda:12.2.0-base-ubuntu22.04"}))
        .await
        .unwrap();
    assert!(out.healthy, "{}", out.summary);
    let names: Vec<&str> = out.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["driver", "gpu_count", "driver_version", "cuda_version", "memory", "temperature", "ecc", "memory_repair", "reset_required", "container"]);
    assert!(fake.read("docker.log").contains("run --rm --gpus all nvidia/cuda:12.2.0-base-ubuntu22.04 nvidia-smi -L"));

    // Failing checks fail the step, with every reason.
    let e = h.run(&Health, json!({"expected_gpus": 8, "max_temperature_c": 30})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert!(e.message.contains("gpu_count: 4 GPUs visible, 8 expected") && e.message.contains("GPU 1 at 40 °C"), "{}", e.message);
    // ...or are reported with `fail: false`.
    let out = h.run(&Health, json!({"expected_gpus": 8, "min_memory_gb": 16, "fail": false})).await.unwrap();
    assert!(!out.healthy);
    assert_eq!(out.failed, ["gpu_count", "memory"]);
    assert!(out.checks.iter().any(|c| c.name == "memory" && c.detail.contains("GPU 1 has 15360 MiB")), "{:?}", out.checks);

    // A container that sees fewer GPUs.
    docker_listing(&fake, &listing.lines().take(2).map(|l| format!("{l}\n")).collect::<String>());
    let out = h.run(&Health, json!({"container_image": "cuda", "fail": false})).await.unwrap();
    assert_eq!(out.failed, ["container"]);
    assert!(out.checks.last().unwrap().detail.contains("sees 2 of 4 GPUs"), "{:?}", out.checks.last());
}

#[tokio::test]
async fn health_reads_ecc_and_memory_repair_state() {
    // Uncorrectable ECC errors, a pending row remapping and a reset request on the A10G.
    let xml = four_gpus()
        .replacen("<dram_uncorrectable>0</dram_uncorrectable>", "<dram_uncorrectable>3</dram_uncorrectable>", 1)
        .replacen("<remapped_row_pending>No</remapped_row_pending>", "<remapped_row_pending>Yes</remapped_row_pending>", 1)
        .replacen("<reset_required>No</reset_required>", "<reset_required>Yes</reset_required>", 1);
    let fake = FakeSmi::new(&xml);
    let out = fake.harness("health").run(&Health, json!({"fail": false})).await.unwrap();
    assert_eq!(out.failed, ["ecc", "memory_repair", "reset_required"], "{:?}", out.checks);
    let ecc = out.checks.iter().find(|c| c.name == "ecc").unwrap();
    assert!(ecc.detail.contains("GPU 0: 3 uncorrectable"), "{}", ecc.detail);
}

#[tokio::test]
async fn health_without_a_driver_reports_it_as_a_failed_check() {
    let fake = four();
    fake.fail_with(9, "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running.\n\n");
    let h = fake.harness("health");
    let out = h.run(&Health, json!({"fail": false, "container_image": "cuda"})).await.unwrap();
    assert!(!out.healthy);
    assert_eq!(out.checks.len(), 1, "{:?}", out.checks);
    assert_eq!(out.failed, ["driver"]);
    assert!(out.checks[0].detail.contains("modprobe nvidia"), "{}", out.checks[0].detail);
    let e = h.run(&Health, json!({})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert!(e.message.contains("driver:"), "{}", e.message);
}

#[tokio::test]
async fn missing_software_is_a_clear_error_never_a_parse_error() {
    let fake = four();
    let cases: Vec<(Value, &str)> = vec![
        (json!({"nvidia_smi": "/nonexistent/bin/nvidia-smi"}), "`/nonexistent/bin/nvidia-smi` does not exist on this machine"),
        (json!({"nvidia_smi": "nvidia-smi-not-installed-here"}), "`nvidia-smi-not-installed-here` was not found on the PATH of this machine"),
    ];
    for (settings, want) in cases {
        let mut h = fake.harness("list");
        h.settings = settings;
        let e = h.run(&List, json!({})).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert!(e.message.contains(want) && e.message.contains("install"), "{}", e.message);
    }
    fake.fail_with(
        12,
        "NVIDIA-SMI couldn't find libnvidia-ml.so library in your system. Please make sure that the NVIDIA Display Driver is properly installed and present in your system.\nPlease also try adding directory that contains libnvidia-ml.so to your system PATH.\n",
    );
    let e = fake.harness("list").run(&List, json!({})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert!(e.message.contains("cannot load the NVML library libnvidia-ml.so (exit 12)") && e.message.contains("libnvidia-ml1"), "{}", e.message);
    assert!(!e.message.contains("xml"), "{}", e.message);
    fake.fail_with(6, "Unable to determine the device handle for gpu 0000:01:00.0: Unknown Error\n");
    assert_eq!(fake.harness("topo").run(&TopologyAction, json!({})).await.unwrap_err().kind, ErrorKind::Transient);
}
