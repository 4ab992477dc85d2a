//! The real failure modes, from real programs:
//! - Debian's non-free `nvidia-smi` (unpacked by `scripts/peers/nvidia-smi.sh` under
//!   `target/peers/nvidia-smi/root`, never installed) on a machine without an NVIDIA
//!   driver: without `libnvidia-ml.so.1` on the library path it exits 12, with it (but
//!   no kernel driver) it exits 9, each with its message on standard output;
//! - the machine's Docker Engine without the NVIDIA runtime: `docker run --gpus all`
//!   fails with `could not select device driver`.
//!
//! A missing peer skips the test with a `skipped:` line on stderr, or fails it when
//! `ENGINE_REQUIRE_PEERS=1`.


use std::path::{Path, PathBuf};
use std::process::Command;

use connector_gpu::testing::{four_gpus, script, FakeSmi};
use connector_gpu::{Health, List, Monitor, TopologyAction};
use engine_connector::harness::Harness;
use engine_connector::ErrorKind;
use serde_json::json;

fn required() -> bool {
    std::env::var("ENGINE_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

/// Skip (or, with `ENGINE_REQUIRE_PEERS=1`, fail) for a missing peer.
fn missing(what: &str, fix: &str) {
    assert!(!required(), "{what} is missing: {fix}");
    eprintln!("skipped: {what} is missing ({fix})");
}

fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let p = entry.path();
        if p.is_dir() && !p.is_symlink() {
            if let Some(found) = find(&p, name) {
                return Some(found);
            }
        } else if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
    }
    None
}

/// The unpacked `nvidia-smi` binary and the directory of `libnvidia-ml.so.1`.
fn peer() -> Option<(PathBuf, PathBuf)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/peers/nvidia-smi/root");
    let bin = root.join("usr/lib/nvidia/current/nvidia-smi");
    let lib = find(&root, "libnvidia-ml.so.1")?;
    if !bin.is_file() {
        return None;
    }
    Some((bin, lib.parent()?.to_path_buf()))
}

fn nvidia_smi_peer() -> Option<(PathBuf, PathBuf)> {
    let p = peer();
    if p.is_none() {
        missing("Debian's nvidia-smi under target/peers/nvidia-smi", "run scripts/peers/nvidia-smi.sh");
    }
    p
}

fn harness(step: &str, nvidia_smi: &Path, ledger: &Path) -> Harness {
    let mut h = Harness::new(step);
    h.settings = json!({ "nvidia_smi": nvidia_smi.to_str().unwrap(), "ledger_dir": ledger.to_str().unwrap() });
    h
}

#[tokio::test]
async fn without_the_nvml_library_nvidia_smi_exits_12_and_the_error_says_what_to_install() {
    let Some((bin, _)) = nvidia_smi_peer() else { return };
    // The real program's own behaviour here, first.
    let raw = Command::new(&bin).args(["-q", "-x"]).env_remove("LD_LIBRARY_PATH").output().unwrap();
    if raw.status.code() != Some(12) {
        eprintln!("skipped: this machine has an NVML library (nvidia-smi exits {:?})", raw.status.code());
        return;
    }
    assert!(String::from_utf8_lossy(&raw.stdout).contains("couldn't find libnvidia-ml.so library"));

    let tmp = tempfile::tempdir().unwrap();
    let h = harness("list", &bin, tmp.path());
    let e = h.run(&List, json!({})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
    for want in ["cannot load the NVML library libnvidia-ml.so (exit 12)", "install the driver package", "libnvidia-ml1", "NVIDIA-SMI couldn't find libnvidia-ml.so library"] {
        assert!(e.message.contains(want), "`{want}` not in: {}", e.message);
    }
    assert!(!e.message.to_lowercase().contains("xml"), "{}", e.message);
}

#[tokio::test]
async fn without_a_driver_nvidia_smi_exits_9_and_the_error_says_to_load_it() {
    let Some((bin, lib)) = nvidia_smi_peer() else { return };
    let raw = Command::new(&bin).args(["-q", "-x"]).env("LD_LIBRARY_PATH", &lib).output().unwrap();
    if raw.status.code() != Some(9) {
        eprintln!("skipped: this machine has an NVIDIA driver (nvidia-smi exits {:?})", raw.status.code());
        return;
    }
    // nvidia-smi prints this on standard output, not standard error.
    assert!(String::from_utf8_lossy(&raw.stdout).contains("couldn't communicate with the NVIDIA driver"));

    let tmp = tempfile::tempdir().unwrap();
    let wrapper = tmp.path().join("nvidia-smi");
    script(&wrapper, &format!("#!/bin/sh\nLD_LIBRARY_PATH='{}' exec '{}' \"$@\"\n", lib.display(), bin.display()));
    let h = harness("list", &wrapper, tmp.path());
    let e = h.run(&List, json!({})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
    for want in ["cannot talk to the NVIDIA kernel driver (exit 9)", "modprobe nvidia", "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver"] {
        assert!(e.message.contains(want), "`{want}` not in: {}", e.message);
    }
    // The CSV and topology commands fail the same way.
    let e = h.run(&Monitor, json!({"duration": "0s"})).await.unwrap_err();
    assert!(e.message.contains("(exit 9)"), "{}", e.message);
    let e = h.run(&TopologyAction, json!({})).await.unwrap_err();
    assert!(e.message.contains("(exit 9)"), "{}", e.message);
    // Health reports it as its failed `driver` check.
    let out = h.run(&Health, json!({"fail": false})).await.unwrap();
    assert_eq!(out.failed, ["driver"]);
    assert!(out.checks[0].detail.contains("modprobe nvidia"), "{}", out.checks[0].detail);
}

/// A tiny local image (no registry here): one file, no nvidia-smi.
fn local_image() -> Option<&'static str> {
    const IMAGE: &str = "engine-test/gpu-no-runtime:1";
    let docker_ok = Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]).output().is_ok_and(|o| o.status.success());
    if !docker_ok {
        missing("a running Docker Engine", "start dockerd, or set DOCKER_HOST");
        return None;
    }
    let have = Command::new("docker").args(["image", "inspect", IMAGE]).output().is_ok_and(|o| o.status.success());
    if !have {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("README"), "connector-gpu test image\n").unwrap();
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("tar -C '{}' -c . | docker import - {IMAGE}", dir.path().display()))
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(ok, "docker import failed");
    }
    Some(IMAGE)
}

#[tokio::test]
async fn docker_without_the_nvidia_runtime_fails_the_container_check_with_a_fix() {
    let Some(image) = local_image() else { return };
    let info = Command::new("docker").args(["info", "--format", "{{json .Runtimes}}"]).output().unwrap();
    if String::from_utf8_lossy(&info.stdout).contains("nvidia") {
        eprintln!("skipped: this Docker Engine has the NVIDIA runtime");
        return;
    }
    let fake = FakeSmi::new(&four_gpus());
    let mut h = fake.harness("health");
    h.settings["docker"] = json!("docker");
    let out = h.run(&Health, json!({"container_image": image, "fail": false})).await.unwrap();
    assert_eq!(out.failed, ["container"], "{:?}", out.checks);
    let detail = &out.checks.last().unwrap().detail;
    for want in ["could not select device driver", "exit 125", "install the NVIDIA Container Toolkit", "nvidia-ctk runtime configure"] {
        assert!(detail.contains(want), "`{want}` not in: {detail}");
    }
}
