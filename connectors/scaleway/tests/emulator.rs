//! Integration tests against the Scaleway emulator (`engine-emulator`), which implements the
//! Instance, Block and Marketplace endpoints with seed 002's behaviour (an image-only create
//! makes a 20 GB SBS boot volume; state transitions take time, scaled down here).

use connector_scaleway::{Availability, EnsurePorts, Images, Prices, ServerCreate, ServerDelete, VolumeResize};
use engine_connector::harness::Harness;
use engine_connector::ErrorKind;
use engine_emulator::scaleway::{start, Config, Server, Stock};
use serde_json::{json, Value};

const PROJECT: &str = "6a1b9e3c-5d2f-4a8b-9c7d-0e1f2a3b4c5d";
const SECRET: &str = "0f1e2d3c-4b5a-4697-8877-665544332211";

async fn emulator() -> Server {
    start("127.0.0.1:0".parse().unwrap(), Config { time_scale: 0.01, project_id: PROJECT.into(), secret_key: SECRET.into() }).await.expect("the emulator starts")
}

fn harness(emu: &Server, step: &str, extra: Value) -> Harness {
    let mut h = Harness::new(step);
    let mut s = json!({"secret_key": SECRET, "project_id": PROJECT, "endpoint": emu.base_url, "zone": "fr-par-2"});
    if let (Some(o), Some(e)) = (s.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    h.settings = s;
    h
}

fn list<'a>(snap: &'a Value, k: &str) -> &'a Vec<Value> {
    snap[k].as_array().unwrap_or_else(|| panic!("snapshot has no {k}: {snap}"))
}

/// Every (group, port) inbound rule in the snapshot.
fn rule_ports(snap: &Value) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = list(snap, "security_groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default().into_iter().map(move |r| (g["id"].as_str().unwrap_or_default().to_string(), r)))
        .filter(|(_, r)| r["direction"] == "inbound" && r["action"] == "accept")
        .filter_map(|(g, r)| r["dest_port_from"].as_u64().map(|p| (g, p)))
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_002_sequence_adopt_and_undo() {
    let emu = emulator().await;
    let ssh = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ssh_addr = ssh.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((_s, _)) = ssh.accept().await {}
    });
    let before = emu.snapshot();
    let rules_before = rule_ports(&before);
    let h = harness(&emu, "gpu", json!({"ip_map": {"*": ssh_addr}}));
    let input = json!({"commercial_type": "L4-1-24G", "open_ports": [22, 8000, 8080], "wait_ssh": true, "ssh_timeout": 20});
    let out = h.run(&ServerCreate, input.clone()).await.expect("create");

    // The common server outputs.
    assert_eq!(out.provider, "scaleway");
    assert_eq!(out.zone, "fr-par-2");
    assert_eq!(out.instance_type, "L4-1-24G");
    assert_eq!(out.ssh_user, "root");
    assert_eq!(out.state, "running");
    assert!(out.public_ip.is_some());
    assert!(!out.adopted);
    let gpu = out.gpu.clone().expect("gpu info");
    assert!(gpu.model.contains("L4") && gpu.count == 1 && gpu.memory_gb == 24, "{gpu:?}");
    assert_eq!(out.hourly_price, Some(0.75));
    assert_eq!(out.root_volume_gb, 200);
    assert_eq!(out.rules_added.iter().map(|r| r.port).collect::<Vec<_>>().len(), 3 - rules_before.iter().filter(|(_, p)| [22, 8000, 8080].contains(p)).count());

    // Seed 002's stages, in order, with their percentages.
    let stages: Vec<(String, Option<u8>)> = h.recorded().progress.clone();
    let want = [
        ("REQUEST_CREATE", 0),
        ("PROVIDER_CREATE", 20),
        ("PROVIDER_VOLUME_RESIZE", 25),
        ("PROVIDER_START", 30),
        ("PROVIDER_GET_IP", 40),
        ("PROVIDER_SECURITY_GROUP", 45),
        ("WORKER_SSH_ACCESSIBLE", 50),
        ("ready", 100),
    ];
    assert_eq!(stages, want.iter().map(|(s, p)| ((*s).to_string(), Some(*p))).collect::<Vec<_>>());
    h.assert_intent_before_create();

    // The emulator: one server, running, booting from one 200 GB SBS volume; the ports open.
    let snap = emu.snapshot();
    let servers = list(&snap, "servers");
    assert_eq!(servers.len(), 1, "{snap}");
    assert_eq!(servers[0]["state"], "running");
    assert!(servers[0]["tags"].as_array().unwrap().iter().any(|t| t.as_str() == Some("engine:key=harness-run/gpu")));
    let vols = list(&snap, "volumes");
    assert_eq!(vols.len(), 1, "{snap}");
    assert_eq!(vols[0]["size"].as_u64(), Some(200_000_000_000));
    assert_eq!(vols[0]["id"], out.volume_id.as_str());
    assert!(list(&snap, "local_volumes").is_empty(), "image-only create makes no local volume");
    let group = out.security_group_id.clone().expect("group");
    for p in [22, 8000, 8080] {
        assert!(rule_ports(&snap).contains(&(group.clone(), p)), "port {p} not open: {snap}");
    }

    // A retry adopts the same server.
    let again = h.run(&ServerCreate, input).await.expect("retry");
    assert!(again.adopted);
    assert_eq!(again.id, out.id);
    assert_eq!(again.root_volume_gb, 200);
    assert_eq!(list(&emu.snapshot(), "servers").len(), 1);

    // Undo (twice, and from a record without id) leaves nothing but the rules that were there before.
    h.assert_undo_idempotent(&ServerCreate).await;
    let snap = emu.snapshot();
    assert!(list(&snap, "servers").is_empty(), "{snap}");
    assert!(list(&snap, "volumes").is_empty(), "{snap}");
    assert!(list(&snap, "ips").is_empty(), "{snap}");
    let left: Vec<u64> = rule_ports(&snap).into_iter().map(|(_, p)| p).collect();
    let had: Vec<u64> = rules_before.into_iter().map(|(_, p)| p).collect();
    assert_eq!(left, had, "undo must remove exactly the rules it added");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_stock_is_capacity_and_leaves_nothing() {
    let emu = emulator().await;
    emu.set_stock("fr-par-2", "L4-1-24G", Stock::Shortage);
    let h = harness(&emu, "oos", json!({}));
    let e = h.run(&ServerCreate, json!({"commercial_type": "L4-1-24G", "flexible_ip": true})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Capacity, "{e}");
    h.assert_undo_idempotent(&ServerCreate).await;
    let snap = emu.snapshot();
    assert!(list(&snap, "servers").is_empty() && list(&snap, "volumes").is_empty() && list(&snap, "ips").is_empty(), "{snap}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_type_in_the_wrong_zone_is_invalid_naming_zones() {
    let emu = emulator().await;
    let h = harness(&emu, "wrong", json!({}));
    let e = h.run(&ServerCreate, json!({"zone": "fr-par-1", "commercial_type": "L4-1-24G"})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid, "{e}");
    for z in ["fr-par-2", "nl-ams-1", "pl-waw-2"] {
        assert!(e.message.contains(z), "{}", e.message);
    }
    let named = e.message.split("zones that have it:").nth(1).unwrap_or_default();
    assert!(e.message.contains("not offered in fr-par-1") && !named.contains("fr-par-1"), "{}", e.message);
    assert!(list(&emu.snapshot(), "servers").is_empty());
    let e = h.run(&ServerCreate, json!({"commercial_type": "L4-1-24G", "root_volume_gb": 100})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert!(e.message.contains("150"), "{}", e.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_is_auth_and_never_shown() {
    let emu = emulator().await;
    let h = harness(&emu, "auth", json!({"secret_key": "11111111-2222-4333-8444-555555555555"}));
    let e = h.run(&Availability, json!({"types": ["L4-1-24G"]})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert!(!e.message.contains("11111111-2222"), "{}", e.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn availability_prices_and_images() {
    let emu = emulator().await;
    emu.set_stock("fr-par-2", "H100-1-80G", Stock::Shortage);
    let h = harness(&emu, "q", json!({}));
    let a = h.run(&Availability, json!({"types": ["H100-1-80G", "L4-1-24G", "NOPE-1"]})).await.unwrap();
    assert_eq!(a.stock["H100-1-80G"], "shortage");
    assert_eq!(a.stock["NOPE-1"], "not_offered");
    assert_eq!(a.first_available.as_deref(), Some("L4-1-24G"));

    let p = h.run(&Prices, json!({"types": ["L4-1-24G", "DEV1-S"]})).await.unwrap();
    let l4 = &p.prices["L4-1-24G"];
    assert_eq!((l4.hourly_price, l4.source.as_str()), (Some(0.75), "live"));
    assert_eq!(l4.gpu.as_ref().map(|g| g.count), Some(1));
    assert!(p.prices["DEV1-S"].gpu.is_none());
    let all = h.run(&Prices, json!({})).await.unwrap();
    assert!(all.prices.contains_key("H100-SXM-8-80G") && !all.prices.contains_key("DEV1-S"));

    let i = h.run(&Images, json!({"commercial_type": "L4-1-24G"})).await.unwrap();
    assert!(i.gpu);
    assert_eq!(i.label, "gpu-os-12");
    assert_eq!(i.image.label, "ubuntu_jammy_gpu_os_12");
    assert_eq!(i.image.image_type, "instance_sbs");
    assert!(i.image.compatible_commercial_types.iter().any(|t| t == "L4-1-24G"));
    let i = h.run(&Images, json!({"commercial_type": "DEV1-M"})).await.unwrap();
    assert_eq!((i.gpu, i.label.as_str(), i.image.label.as_str()), (false, "ubuntu_jammy", "ubuntu_jammy"));
    let i = h.run(&Images, json!({"label": "ubuntu_noble_gpu_os_13"})).await.unwrap();
    assert_eq!(i.image_id, "5c3d28db-33ce-4997-8572-f49506339283");
    let e = h.run(&Images, json!({"commercial_type": "L4-1-24G", "label": "ubuntu_jammy"})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_ports_and_delete() {
    let emu = emulator().await;
    let h = harness(&emu, "dev", json!({}));
    let s = h.run(&ServerCreate, json!({"commercial_type": "L4-1-24G", "root_volume_gb": 150, "open_ports": []})).await.unwrap();
    assert_eq!(s.root_volume_gb, 150);
    assert!(s.rules_added.is_empty());

    let r = h.run(&VolumeResize, json!({"volume_id": s.volume_id, "size_gb": 300})).await.unwrap();
    assert_eq!((r.previous_size_gb, r.size_gb, r.resized), (150, 300, true));
    let e = h.run(&VolumeResize, json!({"volume_id": s.volume_id, "size_gb": 100})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid, "{e}");

    let p = Harness::new("ports");
    let mut p = p;
    p.settings = h.settings.clone();
    let before = rule_ports(&emu.snapshot());
    let o = p.run(&EnsurePorts, json!({"server_id": s.id, "ports": [9000, 9001]})).await.unwrap();
    assert_eq!(o.added.len(), 2);
    let o2 = p.run(&EnsurePorts, json!({"server_id": s.id, "ports": [9000]})).await.unwrap();
    assert!(o2.added.is_empty());
    assert_eq!(o2.already_open, vec![9000]);
    p.assert_undo_idempotent(&EnsurePorts).await;
    assert_eq!(rule_ports(&emu.snapshot()), before);

    let d = h.run(&ServerDelete, json!({"server_id": s.id})).await.unwrap();
    assert!(!d.already_gone);
    assert_eq!(d.deleted.volumes, vec![s.volume_id.clone()]);
    let d = h.run(&ServerDelete, json!({"server_id": s.id})).await.unwrap();
    assert!(d.already_gone);
    let snap = emu.snapshot();
    assert!(list(&snap, "servers").is_empty() && list(&snap, "volumes").is_empty(), "{snap}");
    let e = h.run(&VolumeResize, json!({"volume_id": s.volume_id, "size_gb": 400})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_adopts_a_server_left_stopped_at_20_gb() {
    use connector_scaleway::client::{resolve, Env, Scw, Settings};
    let emu = emulator().await;
    let h = harness(&emu, "crash", json!({}));
    // What a crash right after `POST /servers` leaves: a stopped server tagged with the key,
    // booting from the 20 GB volume Scaleway made.
    let settings: Settings = serde_json::from_value(h.settings.clone()).unwrap();
    let scw = Scw::new(resolve(&settings, None, &Env::default()).unwrap()).unwrap();
    let cx = h.context();
    let image = h.run(&Images, json!({"commercial_type": "L4-1-24G"})).await.unwrap().image_id;
    let tags = ["engine:run=harness-run", "engine:step=crash", "engine:key=harness-run/crash"];
    let made = scw
        .post(&cx, &scw.instance("/servers"), &json!({"name": "engine-crash", "commercial_type": "L4-1-24G", "project": PROJECT, "image": image, "tags": tags, "dynamic_ip_required": true}))
        .await
        .unwrap();
    let id = made["server"]["id"].as_str().unwrap().to_string();
    assert_eq!(list(&emu.snapshot(), "volumes")[0]["size"].as_u64(), Some(20_000_000_000));

    let out = h.run(&ServerCreate, json!({"commercial_type": "L4-1-24G"})).await.unwrap();
    assert!(out.adopted);
    assert_eq!(out.id, id);
    assert_eq!((out.root_volume_gb, out.state.as_str()), (200, "running"));
    let snap = emu.snapshot();
    assert_eq!(list(&snap, "servers").len(), 1);
    assert_eq!(list(&snap, "volumes")[0]["size"].as_u64(), Some(200_000_000_000));

    // Undo from a record whose create never confirmed finds the server by its tag.
    let mut rec = h.created().pop().unwrap();
    rec.id = None;
    rec.undo = Value::Null;
    h.undo(&ServerCreate, &rec).await.unwrap();
    let snap = emu.snapshot();
    assert!(list(&snap, "servers").is_empty() && list(&snap, "volumes").is_empty(), "{snap}");
}
