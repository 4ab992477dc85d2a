//! The ssh connector through the `engine` binary, against a real OpenSSH sshd on 127.0.0.1
//! (`connector_ssh::testing::Peer`): the host key pinned in the run state across a resume, and
//! the shipped NVIDIA Container Toolkit script really run over SSH.

use std::path::Path;

use connector_gpu::testing::{four_gpus, FakeSmi};
use connector_ssh::testing::{keygen, Peer};
use serde_json::Value;

use crate::{root, text, CliTest};

fn last_event(stdout: &[u8]) -> Value {
    serde_json::from_str(text(stdout).lines().last().unwrap_or("null")).unwrap_or(Value::Null)
}

/// The `connectors: ssh:` block that logs in to `peer` (its key, an empty known_hosts: pin).
fn ssh_block(peer: &Peer) -> String {
    let s = peer.settings();
    format!(
        "connectors:\n  ssh:\n    user: {}\n    private_key_file: {}\n    known_hosts: {}\n    connect_timeout: 5s\n",
        s["user"].as_str().unwrap(),
        s["private_key_file"].as_str().unwrap(),
        s["known_hosts"].as_str().unwrap()
    )
}

/// A run pins the host key it first sees in its state; after a crash-free failure and a host
/// key change, `resume` refuses the host instead of trusting the new key, while a new run
/// (its own trust on first use) accepts it.
#[test]
fn a_resumed_run_refuses_a_host_whose_key_changed() {
    let Some(mut peer) = Peer::start() else { return };
    let t = CliTest::new();
    let marker = t.dir.path().join("ready");
    let wf = t.write(
        "pin.yaml",
        &format!(
            "version: 1\nname: pin\n{}steps:\n  first:\n    uses: ssh.run\n    with: {{ host: 127.0.0.1, port: {port}, command: 'echo hello' }}\n  second:\n    uses: ssh.run\n    needs: [first]\n    with: {{ host: 127.0.0.1, port: {port}, command: 'test -f {marker}' }}\n",
            ssh_block(&peer),
            port = peer.port(),
            marker = marker.display()
        ),
    );
    let out = t.run(&["run", wf.to_str().unwrap(), "--output", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let run_id = last_event(&out.stdout)["run_id"].as_str().unwrap().to_string();
    // The host changes its key; the condition `second` waited for now holds.
    std::fs::write(&marker, "").unwrap();
    let other = keygen(peer.path(), "host_other", "ed25519", "");
    peer.restart_with_host_key(&other);
    let again = t.run(&["resume", &run_id, "--output", "json"]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again.stdout));
    let events: Vec<Value> = text(&again.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let second = events.iter().rev().find(|e| e["event"] == "step" && e["step"] == "second").unwrap();
    assert_eq!(second["status"], "failed");
    assert_eq!(second["kind"], "auth", "{second}");
    let why = second["error"].as_str().unwrap();
    assert!(why.contains("SHA256:") && why.contains("127.0.0.1"), "{why}");
    // A new run trusts the new key on first use, and the command runs.
    let fresh = t.run(&["run", wf.to_str().unwrap(), "--output", "json"]);
    assert_eq!(fresh.status.code(), Some(0), "{}", text(&fresh.stdout));
}

/// Executables standing in for a GPU host's tools, and the log of how they were called.
struct FakeHost {
    bin: std::path::PathBuf,
    _smi: FakeSmi,
}

fn write_exe(path: &Path, body: &str) {
    std::fs::write(path, body).unwrap();
    let mut p = std::fs::metadata(path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o755);
    std::fs::set_permissions(path, p).unwrap();
}

/// A host with a driver (the fake nvidia-smi over real captures), the toolkit installed, and a
/// Docker whose runtimes are kept in a file that `nvidia-ctk runtime configure` changes.
fn fake_host(dir: &Path, runtimes: &str) -> FakeHost {
    let smi = FakeSmi::new(&four_gpus());
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(smi.path(), bin.join("nvidia-smi")).unwrap();
    for f in std::fs::read_dir(smi.dir.path()).unwrap().flatten() {
        if f.file_name() != "nvidia-smi" {
            std::fs::copy(f.path(), bin.join(f.file_name())).unwrap();
        }
    }
    std::fs::write(bin.join("runtimes"), runtimes).unwrap();
    std::fs::write(bin.join("default"), "runc").unwrap();
    let log = bin.join("calls.log");
    write_exe(&bin.join("nvidia-ctk"), &format!("#!/bin/sh\necho \"nvidia-ctk $*\" >> {log}\ncase \"$1\" in\n  --version) echo 'NVIDIA Container Toolkit CLI version 1.17.4' ;;\n  runtime) echo '{{\"io.containerd.runc.v2\":{{}},\"nvidia\":{{}},\"runc\":{{}}}}' > {b}/runtimes; case \"$*\" in *--set-as-default*) echo nvidia > {b}/default ;; esac ;;\nesac\n", log = log.display(), b = bin.display()));
    write_exe(&bin.join("docker"), &format!("#!/bin/sh\necho \"docker $*\" >> {log}\ncase \"$*\" in\n  *Runtimes*) cat {b}/runtimes ;;\n  *DefaultRuntime*) cat {b}/default ;;\n  *) echo \"unexpected docker $*\" >&2; exit 2 ;;\nesac\n", log = log.display(), b = bin.display()));
    write_exe(&bin.join("systemctl"), &format!("#!/bin/sh\necho \"systemctl $*\" >> {log}\n", log = log.display()));
    write_exe(&bin.join("apt-get"), &format!("#!/bin/sh\necho \"apt-get $*\" >> {log}\necho 'no network here' >&2\nexit 100\n", log = log.display()));
    FakeHost { bin, _smi: smi }
}

fn toolkit_workflow(t: &CliTest, peer: &Peer, host: &FakeHost, set_default: bool) -> std::path::PathBuf {
    let script = root().join("workflows/scripts/install-nvidia-container-toolkit.sh");
    t.write(
        "toolkit.yaml",
        &format!(
            "version: 1\nname: toolkit\n{}steps:\n  install:\n    uses: ssh.run\n    with:\n      host: 127.0.0.1\n      port: {}\n      script: {}\n      env:\n        PATH: {}:/usr/sbin:/usr/bin:/sbin:/bin\n        SET_DEFAULT: {}\n",
            ssh_block(peer),
            peer.port(),
            script.display(),
            host.bin.display(),
            u8::from(set_default)
        ),
    )
}

/// The shipped install script, uploaded and run over SSH on a host that already has the
/// toolkit: it only checks, and changes nothing; asked to make nvidia the default runtime, it
/// configures Docker once and restarts it; run again, nothing more happens.
#[test]
fn the_toolkit_script_runs_over_ssh_and_is_idempotent() {
    let Some(peer) = Peer::start() else { return };
    let t = CliTest::new();
    let host = fake_host(t.dir.path(), r#"{"nvidia":{},"runc":{}}"#);
    let calls = || std::fs::read_to_string(host.bin.join("calls.log")).unwrap_or_default();
    let wf = toolkit_workflow(&t, &peer, &host, false);
    let out = t.run(&["run", wf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(!calls().contains("runtime configure") && !calls().contains("systemctl"), "{}", calls());
    let wf = toolkit_workflow(&t, &peer, &host, true);
    let out = t.run(&["run", wf.to_str().unwrap(), "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(calls().matches("nvidia-ctk runtime configure --runtime=docker --set-as-default").count(), 1, "{}", calls());
    assert_eq!(calls().matches("systemctl restart docker").count(), 1);
    assert!(text(&out.stdout).contains("default runtime: nvidia"), "{}", text(&out.stdout));
    let out = t.run(&["run", wf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(calls().matches("systemctl restart docker").count(), 1, "a second run restarted Docker again");
    assert!(!calls().contains("apt-get"), "the toolkit was there: nothing to install");
}

/// The sub-workflow as users import it, pointed at a host without an NVIDIA driver: the script
/// runs there over SSH and stops at once with what is missing.
#[test]
fn the_toolkit_sub_workflow_says_when_the_host_has_no_driver() {
    let Some(peer) = Peer::start() else { return };
    let t = CliTest::new();
    let sub = root().join("workflows/install-nvidia-container-toolkit.yaml");
    let wf = t.write(
        "main.yaml",
        &format!(
            "version: 1\nname: main\n{}steps:\n  toolkit:\n    uses: {}\n    with: {{ host: '127.0.0.1:{}', user: {} }}\n",
            ssh_block(&peer),
            sub.display(),
            peer.port(),
            peer.user
        ),
    );
    let out = t.run(&["run", wf.to_str().unwrap(), "--output", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let events: Vec<Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let remote = events.iter().rev().find(|e| e["event"] == "step" && e["step"] == "toolkit/remote").unwrap();
    assert_eq!(remote["status"], "failed", "{remote}");
    assert!(remote["error"].as_str().unwrap().contains("nvidia-smi not found: install the NVIDIA driver first"), "{remote}");
    let local = events.iter().rev().find(|e| e["event"] == "step" && e["step"] == "toolkit/local").unwrap();
    assert_eq!(local["status"], "skipped");
}
