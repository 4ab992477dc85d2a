//! The gpu and container connectors through the `engine` binary: the fake `nvidia-smi` of
//! `connector_gpu::testing` (real captures) on `PATH`, the machine's real Docker Engine with
//! the locally built test image, and the GPU ledger shared by several engines at once.

use std::collections::HashSet;
use std::path::Path;
use std::process::Output;

use connector_gpu::testing::{combine, four_gpus, FakeSmi};
use serde_json::Value;

use crate::{root, text, CliTest};

const IMAGE: &str = "engine-test/busybox:1";

/// `PATH` with the fake nvidia-smi first.
fn path_with(fake: &FakeSmi) -> String {
    format!("{}:{}", fake.dir.path().display(), std::env::var("PATH").unwrap_or_default())
}

fn run_with_fake(t: &CliTest, fake: &FakeSmi, state: &Path, args: &[&str]) -> Output {
    t.cmd().args(args).env("PATH", path_with(fake)).env("XDG_STATE_HOME", state).output().expect("spawn engine")
}

fn last_event(out: &Output) -> Value {
    serde_json::from_str(text(&out.stdout).lines().last().unwrap_or("null")).unwrap_or(Value::Null)
}

fn ledger(state: &Path) -> Value {
    std::fs::read_to_string(state.join("engine/gpu/ledger.json")).map_or(Value::Null, |s| serde_json::from_str(&s).unwrap())
}

fn allocations(state: &Path) -> Vec<Value> {
    ledger(state)["allocations"].as_array().cloned().unwrap_or_default()
}

/// The Docker peer: the daemon answers and has the test image (scripts/peers/docker-images.sh).
fn docker_ready(test: &str) -> bool {
    let ok = std::process::Command::new("docker").args(["image", "inspect", IMAGE]).output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var("ENGINE_REQUIRE_PEERS").as_deref() != Ok("1"), "{test}: no Docker daemon or no {IMAGE}: run scripts/peers/docker-images.sh");
        eprintln!("skipped: {test}: no Docker daemon or no {IMAGE} (run scripts/peers/docker-images.sh)");
    }
    ok
}

fn containers_of_run(run_id: &str) -> Vec<String> {
    let out = std::process::Command::new("docker").args(["ps", "-aq", "--filter", &format!("label=engine.run={run_id}")]).output().unwrap();
    text(&out.stdout).lines().map(str::to_string).collect()
}

/// Seed 004's ML environment on a machine whose Docker has no NVIDIA runtime: the GPUs are
/// checked, selected and held; the PyTorch step fails with the fix named, leaving no
/// container; `destroy` gives the GPUs back.
#[test]
fn local_gpu_ml_holds_gpus_names_the_missing_toolkit_and_destroy_releases() {
    if !docker_ready("local_gpu_ml") {
        return;
    }
    let t = CliTest::new();
    let fake = FakeSmi::new(&four_gpus());
    let state = t.dir.path().join("xdg");
    let wf = root().join("examples/local-gpu-ml.yaml");
    let out = run_with_fake(&t, &fake, &state, &["run", wf.to_str().unwrap(), "--output", "json", "-i", &format!("image={IMAGE}"), "-i", "train_seconds=5"]);
    assert_eq!(out.status.code(), Some(1), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let events: Vec<Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let step = |name: &str| events.iter().rev().find(|e| e["event"] == "step" && e["step"] == name).cloned().unwrap_or(Value::Null);
    for ok in ["health", "select", "hold", "watch"] {
        assert_eq!(step(ok)["status"], "succeeded", "{ok}: {}", step(ok));
    }
    let train = step("train");
    assert_eq!(train["status"], "failed");
    let why = train["error"].as_str().unwrap();
    assert!(why.contains("nvidia-container-toolkit") && why.contains("nvidia-ctk runtime configure"), "{why}");
    // The pick is explained, and the held GPU is the one picked.
    let run_id = last_event(&out)["run_id"].as_str().unwrap().to_string();
    let show: Value = serde_json::from_slice(&t.run(&["show", &run_id, "--output", "json"]).stdout).unwrap();
    let held = &show["steps"]["hold"]["outputs"];
    assert_eq!(held["indices"], show["steps"]["select"]["outputs"]["indices"], "{show}");
    assert!(!show["steps"]["select"]["outputs"]["reason"].as_str().unwrap_or_default().is_empty());
    assert!(show["steps"]["watch"]["outputs"]["samples"].as_array().is_some_and(|s| s.len() >= 2), "{}", show["steps"]["watch"]);
    assert_eq!(allocations(&state).len(), 1, "{}", ledger(&state));
    assert!(containers_of_run(&run_id).is_empty(), "the failed GPU container was left behind");
    let d = run_with_fake(&t, &fake, &state, &["destroy", &run_id]);
    assert_eq!(d.status.code(), Some(0), "{}", text(&d.stderr));
    assert!(allocations(&state).is_empty(), "destroy left {}", ledger(&state));
}

const HOLD: &str = r#"version: 1
name: hold
inputs:
  n: { type: integer, default: 3 }
steps:
  hold:
    uses: gpu.allocate
    for_each: ${{ range(inputs.n) }}
    continue_on_error: true
    with: { count: 1, mode: exclusive }
"#;

/// Two engines allocating exclusive GPUs from one ledger at the same moment: six requests for
/// four GPUs. Exactly four are granted, each GPU once; the other two fail with `capacity`
/// (what `fallback:` acts on). Destroying one run frees its GPUs for the next.
#[test]
fn two_engines_never_hand_out_one_exclusive_gpu_twice() {
    let t = CliTest::new();
    let fake = FakeSmi::new(&combine(&[("a10g.xml", None), ("a10g.xml", Some(1)), ("tesla-t4.xml", None), ("tesla-t4.xml", Some(2))]));
    let state = t.dir.path().join("xdg");
    let wf = t.write("hold.yaml", HOLD);
    let spawn = || t.cmd().args(["run", wf.to_str().unwrap(), "--output", "json"]).env("PATH", path_with(&fake)).env("XDG_STATE_HOME", &state).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let (mut succeeded, mut refused) = (0, 0);
    let mut runs = Vec::new();
    for out in [&a, &b] {
        let events: Vec<Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        for e in events.iter().filter(|e| e["event"] == "step" && e["step"] == "hold" && e["index"].is_u64()) {
            match e["status"].as_str() {
                Some("succeeded") => succeeded += 1,
                Some("failed") => {
                    refused += 1;
                    assert_eq!(e["kind"], "capacity", "{e}");
                }
                _ => {}
            }
        }
        runs.push(last_event(out)["run_id"].as_str().unwrap().to_string());
    }
    assert_eq!((succeeded, refused), (4, 2));
    // The ledger holds one allocation per success, each on its own GPU, split across both runs.
    let held = allocations(&state);
    let gpus: Vec<String> = held.iter().flat_map(|a| a["gpus"].as_array().unwrap().iter().map(|g| g["uuid"].as_str().unwrap().to_string())).collect();
    let distinct: HashSet<&String> = gpus.iter().collect();
    assert_eq!((held.len(), gpus.len(), distinct.len()), (4, 4, 4), "{}", ledger(&state));
    for r in &runs {
        assert!(held.iter().any(|a| a["key"].as_str().unwrap().starts_with(r.as_str())), "run {r} got nothing: {}", ledger(&state));
    }
    // Give back the first run's GPUs: a third run gets exactly those.
    let d = run_with_fake(&t, &fake, &state, &["destroy", &runs[0]]);
    assert_eq!(d.status.code(), Some(0), "{}", text(&d.stderr));
    let left = allocations(&state).len();
    let third = run_with_fake(&t, &fake, &state, &["run", wf.to_str().unwrap(), "--output", "json", "-i", "n=4"]);
    let events: Vec<Value> = text(&third.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let got = events.iter().filter(|e| e["event"] == "step" && e["step"] == "hold" && e["status"] == "succeeded" && e["index"].is_u64()).count();
    assert_eq!(got, 4 - left, "after destroy, the freed GPUs are granted again");
    for r in runs.iter().chain([&last_event(&third)["run_id"].as_str().unwrap().to_string()]) {
        assert_eq!(run_with_fake(&t, &fake, &state, &["destroy", r]).status.code(), Some(0));
    }
    assert!(allocations(&state).is_empty(), "{}", ledger(&state));
}

/// A service container started by a run is a resource: `engine destroy` stops and removes it,
/// and a second destroy finds nothing left to do.
#[test]
fn destroy_removes_the_containers_a_run_started() {
    if !docker_ready("destroy_removes_containers") {
        return;
    }
    let t = CliTest::new();
    let wf = t.write(
        "svc.yaml",
        &format!(
            r#"version: 1
name: svc
steps:
  web:
    uses: container.run
    for_each: ${{{{ range(2) }}}}
    with:
      image: {IMAGE}
      command: [sh, -c, "echo up $N; exec sleep 300"]
      env:
        N: ${{{{ index }}}}
      detach: true
      stop_timeout: 1s
  hello:
    uses: container.exec
    with:
      container: ${{{{ steps.web.outputs[1].id }}}}
      command: [sh, -c, "echo $N"]
      env: {{ N: from-exec }}
outputs:
  said: ${{{{ steps.hello.outputs.stdout | trim }}}}
"#
        ),
    );
    let out = t.run(&["run", wf.to_str().unwrap(), "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let last = last_event(&out);
    assert_eq!(last["outputs"]["said"], "from-exec");
    let run_id = last["run_id"].as_str().unwrap().to_string();
    assert_eq!(containers_of_run(&run_id).len(), 2);
    let d = t.run(&["destroy", &run_id]);
    assert_eq!(d.status.code(), Some(0), "{}", text(&d.stderr));
    assert!(containers_of_run(&run_id).is_empty(), "destroy left containers");
    assert_eq!(t.run(&["destroy", &run_id]).status.code(), Some(0));
}
