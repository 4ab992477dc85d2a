//! The `proxmox` connector against a real fakepve (a third-party emulator built from PVE's API
//! schema), started per test by `fakepve_launcher.py` on 127.0.0.1 and a free port.
//! Missing peer: `skipped: ...`, or a failure naming scripts/peers/fakepve.sh with
//! ENGINE_REQUIRE_PEERS=1.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;

use connector_proxmox::{GpuList, TaskWait, VmCreate, VmDelete, VmStart, VmStop};
use engine_connector::harness::Harness;
use engine_connector::{ErrorKind, LogStream};
use serde_json::{json, Value};

struct Peer {
    child: Child,
    io: Mutex<(ChildStdin, BufReader<ChildStdout>)>,
    url: String,
    ca_file: String,
    token_id: String,
    token_secret: String,
    _dir: tempfile::TempDir,
}

fn python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("FAKEPVE_PYTHON") {
        return Some(PathBuf::from(p)).filter(|p| p.exists());
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/peers/fakepve-venv/bin/python");
    let fakepve = p.with_file_name("fakepve");
    (p.exists() && fakepve.exists()).then_some(p)
}

impl Peer {
    fn start() -> Option<Self> {
        let Some(py) = python() else {
            assert!(std::env::var("ENGINE_REQUIRE_PEERS").as_deref() != Ok("1"), "fakepve not found: run scripts/peers/fakepve.sh");
            eprintln!("skipped: fakepve not found (run scripts/peers/fakepve.sh)");
            return None;
        };
        let here = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests");
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut child = Command::new(py)
            .arg(here.join("fakepve_launcher.py"))
            .arg(here.join("guests.json"))
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the fakepve launcher");
        let stdin = child.stdin.take().expect("stdin");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("the launcher's first line");
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("launcher said {line:?}: {e}"));
        let s = |k: &str| v[k].as_str().expect(k).to_string();
        Some(Self { url: s("url"), ca_file: s("ca_file"), token_id: s("token_id"), token_secret: s("token_secret"), child, io: Mutex::new((stdin, out)), _dir: dir })
    }

    fn cmd(&self, c: Value) -> Value {
        let mut io = self.io.lock().unwrap();
        writeln!(io.0, "{c}").unwrap();
        io.0.flush().unwrap();
        let mut line = String::new();
        io.1.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }

    fn vm(&self, vmid: u64) -> Value {
        self.cmd(json!({"vm": vmid}))
    }

    fn token_settings(&self) -> Value {
        json!({"endpoint": self.url, "token_id": self.token_id, "token_secret": self.token_secret, "ca_file": self.ca_file, "node": "pve1"})
    }

    fn harness(&self, step: &str) -> Harness {
        let mut h = Harness::new(step);
        h.settings = self.token_settings();
        h
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

macro_rules! peer {
    () => {
        match Peer::start() {
            Some(p) => p,
            None => return,
        }
    };
}

fn clone_input() -> Value {
    json!({
        "clone": 9000, "name": "gpu-worker", "cores": 4, "memory": 8192, "bridge": "vmbr0",
        "ciuser": "ubuntu", "ssh_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB+key/x= me@host"],
        "ipconfig0": "ip=dhcp",
        "gpu": {"mapping": "fake", "pcie": true, "x_vga": true, "rombar": false},
        "start": true, "wait_ip": true, "ip_timeout_secs": 20,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_clones_with_passthrough_adopts_on_retry_and_undo_deletes() {
    let p = peer!();
    // The guests cloned from the template run qemu-guest-agent (fakepve answers for them).
    assert_eq!(p.cmd(json!({"guest_agents": true})), json!({"ok": true}));
    let h = p.harness("gpu");
    let out = h.run(&VmCreate, clone_input()).await.unwrap();
    h.assert_intent_before_create();
    let vmid = out.vmid;
    assert!(vmid >= 100, "{out:?}");
    assert_eq!((out.provider.as_str(), out.zone.as_str(), out.instance_type.as_str()), ("proxmox", "pve1", "4c-8g"));
    assert_eq!(out.image.as_deref(), Some("debian-12-tpl"));
    assert_eq!(out.private_ip.as_deref(), Some("192.0.2.10"), "the guest agent's address");
    assert_eq!(out.public_ip, None);
    assert_eq!(out.ssh_user, "ubuntu");
    assert_eq!(out.hostpci, ["mapping=fake,pcie=1,x-vga=1,rombar=0"]);
    let gpu = out.gpu.as_ref().expect("gpu");
    assert_eq!(gpu.count, 1);
    assert!(!out.adopted);
    // What fakepve holds (GET .../config through the connector's own client is checked below too).
    let vm = p.vm(vmid);
    assert_eq!(vm["status"], "running");
    let cfg = &vm["config"];
    assert_eq!(cfg["hostpci0"], "mapping=fake,pcie=1,x-vga=1,rombar=0");
    assert_eq!(cfg["machine"], "q35");
    assert_eq!(cfg["ciuser"], "ubuntu");
    assert_eq!(cfg["ipconfig0"], "ip=dhcp");
    assert_eq!(cfg["cores"].to_string().trim_matches('"'), "4");
    assert!(cfg["scsi0"].as_str().unwrap().contains(&format!("vm-{vmid}-disk")), "a full clone has its own disk: {cfg}");
    let keys = cfg["sshkeys"].as_str().unwrap();
    assert!(keys.starts_with("ssh-ed25519%20AAAAC3NzaC1lZDI1NTE5AAAAIB%2Bkey%2Fx%3D%20me%40host"), "{keys}");
    // The same check over the API: GET /nodes/pve1/qemu/{vmid}/config.
    let cx = h.context();
    let pve = connector_proxmox::Pve::from_context(&cx).await.unwrap();
    let api_cfg = pve.get(&format!("/nodes/pve1/qemu/{vmid}/config"), &[]).await.unwrap();
    assert_eq!(api_cfg["hostpci0"], "mapping=fake,pcie=1,x-vga=1,rombar=0");

    // A retry of the same step adopts the VM: still exactly one.
    let again = h.run(&VmCreate, clone_input()).await.unwrap();
    assert!(again.adopted);
    assert_eq!(again.vmid, vmid);
    assert_eq!(p.cmd(json!({"count_named": "gpu-worker"})), 1);

    // gpu.list shows the mapping used by this VM.
    let list = h.run(&GpuList, json!({"all": true})).await.unwrap();
    let m = list.mappings.iter().find(|m| m.id == "fake").expect("the mapping");
    assert_eq!(m.used_by, [vmid]);
    assert!(!list.devices.is_empty(), "fakepve's placeholder device");
    let only_gpus = h.run(&GpuList, json!({})).await.unwrap();
    assert!(only_gpus.devices.iter().all(|d| d.class.starts_with("0x03")));

    // Undo: stop + purge, idempotent, and a never-confirmed record too.
    let created = h.created();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].kind, "proxmox.vm");
    h.assert_undo_idempotent(&VmCreate).await;
    assert!(p.vm(vmid).is_null(), "undo deleted the VM");
    assert_eq!(p.cmd(json!({"count_named": "gpu-worker"})), 0);
    // No secret anywhere in what was recorded or logged.
    let rec = h.recorded();
    let all = format!("{:?}{:?}", rec.records, rec.logs);
    assert!(!all.contains(&p.token_secret));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_given_to_another_vm_is_a_conflict_and_a_missing_device_not_found() {
    let p = peer!();
    let first = p.harness("a");
    let a = first.run(&VmCreate, json!({"clone": 9000, "name": "a", "gpu": {"mapping": "fake"}})).await.unwrap();
    let second = p.harness("b");
    let e = second.run(&VmCreate, json!({"clone": 9000, "name": "b", "gpu": {"mapping": "fake"}})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
    assert!(e.message.contains(&format!("VM {}", a.vmid)) && e.message.contains("hostpci0"), "{e}");
    assert_eq!(p.cmd(json!({"count_named": "b"})), 0, "nothing cloned");
    assert!(second.created().is_empty());
    // fakepve's /hardware/pci only has a placeholder: a real address is not on the node.
    let e = p.harness("c").run(&VmCreate, json!({"clone": 9000, "gpu": {"pci_devices": ["0000:01:00.0"]}})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    assert!(e.message.contains("0000:01:00.0") && e.message.contains("pve1"), "{e}");
    let e = p.harness("d").run(&VmCreate, json!({"clone": 9000, "gpu": {"mapping": "nope"}})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    first.assert_undo_idempotent(&VmCreate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameter_errors_keep_pves_wording() {
    let p = peer!();
    let h = p.harness("bad");
    let e = h.run(&VmCreate, json!({"clone": 9000, "name": "bad", "cores": 0})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid, "{e}");
    assert!(e.message.contains("Parameter verification failed") && e.message.contains("cores:"), "{e}");
    // The clone was made and recorded before the config failed: undo removes it.
    assert_eq!(h.created().len(), 1);
    h.assert_undo_idempotent(&VmCreate).await;
    assert_eq!(p.cmd(json!({"count_named": "bad"})), 0);
    let e = h.run(&VmCreate, json!({"clone": 4242})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    assert!(e.message.contains("does not exist"), "{e}");
    let e = h.run(&VmCreate, json!({"wait_ip": true})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticket_login_power_actions_and_delete() {
    let p = peer!();
    let mut h = Harness::new("power");
    h.settings = json!({"endpoint": p.url, "username": "root@pam", "password": "secret", "ca_file": p.ca_file});
    let s = h.run(&VmStart, json!({"vmid": 120})).await.unwrap();
    assert_eq!((s.status.as_str(), s.node.as_str()), ("running", "pve1"));
    assert_eq!(p.vm(120)["status"], "running");
    let s = h.run(&VmStop, json!({"vmid": 120})).await.unwrap();
    assert_eq!(s.status, "stopped");
    assert_eq!(p.vm(120)["status"], "stopped");
    let d = h.run(&VmDelete, json!({"vmid": 120})).await.unwrap();
    assert!(d.existed);
    assert!(p.vm(120).is_null());
    let d = h.run(&VmDelete, json!({"vmid": 120})).await.unwrap();
    assert!(!d.existed, "gone is done");
    let e = h.run(&VmStart, json!({"vmid": 120})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");

    h.settings = json!({"endpoint": p.url, "username": "root@pam", "password": "wrong-pass", "ca_file": p.ca_file});
    let e = h.run(&VmStart, json!({"vmid": 9000})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert!(!e.message.contains("wrong-pass"));
    h.settings = json!({"endpoint": p.url, "token_id": p.token_id, "token_secret": "not-the-secret", "ca_file": p.ca_file});
    let e = h.run(&VmStart, json!({"vmid": 9000})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert!(!e.message.contains("not-the-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_verified_unless_a_ca_file_or_insecure_is_given() {
    let p = peer!();
    let mut h = Harness::new("tls");
    h.settings = json!({"endpoint": p.url, "token_id": p.token_id, "token_secret": p.token_secret});
    let e = h.run(&VmStop, json!({"vmid": 120})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid, "{e}");
    assert!(e.message.contains("ca_file") && e.message.contains("insecure"), "{e}");
    h.settings = json!({"endpoint": p.url, "token_id": p.token_id, "token_secret": p.token_secret, "insecure": true});
    h.run(&VmStop, json!({"vmid": 120})).await.unwrap();
    let warned = h.recorded().logs.iter().any(|(s, l)| *s == LogStream::Stderr && l.contains("insecure"));
    assert!(warned, "insecure is logged as a warning");
    h.settings = json!({"endpoint": p.url, "token_id": p.token_id, "token_secret": p.token_secret, "ca_file": p.ca_file});
    h.run(&VmStop, json!({"vmid": 120})).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_and_faults() {
    let p = peer!();
    let h = p.harness("tasks");
    let cx = h.context();
    let pve = connector_proxmox::Pve::from_context(&cx).await.unwrap();
    // A task that fails inside PVE's worker: an error with the task's own words.
    let set = p.cmd(json!({"fail": {"method": "POST", "suffix": "/nodes/pve1/qemu/120/status/start", "error": "qemu_exited_code", "times": 1}}));
    assert_eq!(set, json!({"ok": true}));
    let upid = pve.post("/nodes/pve1/qemu/120/status/start", &[]).await.unwrap();
    let e = h.run(&TaskWait, json!({"upid": upid})).await.unwrap_err();
    assert!(e.message.contains("QEMU exited with code 1") && e.message.contains("TASK ERROR"), "{e}");
    let upid = pve.post("/nodes/pve1/qemu/120/status/start", &[]).await.unwrap();
    let ok = h.run(&TaskWait, json!({"upid": upid, "timeout_secs": 30})).await.unwrap();
    assert_eq!(ok.exitstatus, "OK");
    assert_eq!(p.vm(120)["status"], "running");
    // A config lock timeout is transient.
    let set = p.cmd(json!({"fail": {"method": "POST", "suffix": "/nodes/pve1/qemu/120/status/stop", "error": "config_lock_timeout", "times": 1}}));
    assert_eq!(set, json!({"ok": true}));
    let e = h.run(&VmStop, json!({"vmid": 120})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(e.message.contains("can't lock file"), "{e}");
    let set = p.cmd(json!({"fail": {"method": "GET", "suffix": "/nodes/pve1/qemu/120/status/current", "status": 503, "message": "busy", "times": 1}}));
    assert_eq!(set, json!({"ok": true}));
    let e = h.run(&VmStop, json!({"vmid": 120})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    let e = h.run(&TaskWait, json!({"upid": "nope"})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
}

/// Without `clone`: a new VM is created (disk, network, cloud-init drive, guest agent), then
/// configured and started like a clone; undo deletes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_without_a_template_makes_a_cloud_init_vm() {
    let p = peer!();
    let h = p.harness("fresh");
    let out = h
        .run(&VmCreate, json!({"name": "fresh-vm", "cores": 2, "memory": 4096, "disk_gb": 32, "ciuser": "ubuntu", "ipconfig0": "ip=dhcp", "start": true}))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.adopted);
    let vm = p.vm(out.vmid);
    assert_eq!(vm["status"], "running", "{vm}");
    let cfg = &vm["config"];
    assert_eq!(cfg["name"], "fresh-vm", "{cfg}");
    assert_eq!(cfg["cores"].to_string().trim_matches('"'), "2", "{cfg}");
    assert_eq!(cfg["memory"].to_string().trim_matches('"'), "4096", "{cfg}");
    assert_eq!(cfg["ciuser"], "ubuntu", "{cfg}");
    assert!(cfg["scsi0"].as_str().is_some_and(|d| d.contains("32G")), "a 32 GB disk: {cfg}");
    // The cloud-init drive (`STORAGE:cloudinit`, which fakepve allocates as a numbered disk).
    assert!(cfg["ide2"].as_str().is_some_and(|d| d.contains("media=cdrom")), "a cloud-init drive: {cfg}");
    assert_eq!(cfg["agent"], "1", "{cfg}");
    assert_eq!(out.instance_type, "2c-4g");
    assert_eq!(p.cmd(json!({"count_named": "fresh-vm"})), 1);
    h.assert_undo_idempotent(&VmCreate).await;
    assert_eq!(p.cmd(json!({"count_named": "fresh-vm"})), 0);
}
