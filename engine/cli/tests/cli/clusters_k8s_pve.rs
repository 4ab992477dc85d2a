//! Seed 004 end to end through the `engine` binary: `examples/k8s-gpu-job.yaml` against the
//! Kubernetes emulator (in process, reached through the kubeconfig it writes) with two GPU node
//! pools, falling back from the full one; and `proxmox.vm.create` against a real fakepve
//! (scripts/peers/fakepve.sh), SIGKILLed at many points of its event stream, resumed to exactly
//! one VM and destroyed to none.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use connector_proxmox::testing::FakePve;
use engine_emulator::kubernetes::{self as kemu, NodeSpec};
use serde_json::Value;

use crate::{root, text, CliTest};

fn json_lines(s: &str) -> Vec<Value> {
    s.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn run_id_of(events: &[Value]) -> String {
    events.iter().find_map(|e| e["run_id"].as_str()).expect("a run id in the events").to_string()
}

fn pool_node(name: &str, pool: &str, gpus: u32, product: &str) -> NodeSpec {
    let labels = BTreeMap::from([
        ("pool".to_string(), pool.to_string()),
        ("nvidia.com/gpu.product".to_string(), product.to_string()),
        ("nvidia.com/gpu.count".to_string(), gpus.to_string()),
    ]);
    NodeSpec { name: name.into(), gpus, labels, taints: Vec::new() }
}

/// Jobs and Pods the emulator holds (Events are left out: they outlive what they are about).
fn jobs_and_pods(snap: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for k in ["batch/jobs", "pods"] {
        for o in snap["objects"][k].as_array().into_iter().flatten() {
            out.push(format!("{k}: {}/{}", o["metadata"]["namespace"].as_str().unwrap_or(""), o["metadata"]["name"].as_str().unwrap_or("")));
        }
    }
    out
}

/// Two GPU pools: `h100` has one GPU, `l40s` four. Two GPUs on `h100` cannot be scheduled (the
/// scheduler's `Insufficient nvidia.com/gpu`): after `schedule_timeout` the step fails with
/// kind `capacity`, its fallback runs on `l40s` and succeeds; `destroy` leaves no Job or Pod.
#[test]
fn a_gpu_job_that_cannot_be_scheduled_falls_back_to_another_pool() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let nodes = vec![pool_node("gpu-h100-0", "h100", 1, "NVIDIA-H100-80GB-HBM3"), pool_node("gpu-l40s-0", "l40s", 4, "NVIDIA-L40S")];
    let server = rt.block_on(kemu::start("127.0.0.1:0".parse().unwrap(), kemu::Config { nodes, token: "t0ken".into(), time_scale: 0.05 })).expect("the emulator starts");
    let t = CliTest::new();
    let kubeconfig = t.dir.path().join("kubeconfig");
    server.kubeconfig(&kubeconfig).expect("kubeconfig written");
    let engine = |args: &[&str]| -> Output { t.cmd().env("KUBECONFIG", &kubeconfig).env_remove("KUBERNETES_SERVICE_HOST").args(args).output().unwrap() };

    // The cluster's admin set up the NVIDIA runtime class (the GPU operator does), as the example expects.
    let setup = t.write(
        "runtime-class.yaml",
        "version: 1\nsteps:\n  rc:\n    uses: kubernetes.apply\n    with:\n      yaml: |\n        apiVersion: node.k8s.io/v1\n        kind: RuntimeClass\n        metadata: { name: nvidia }\n        handler: nvidia\n",
    );
    let out = engine(&["run", setup.to_str().unwrap(), "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));

    let example = root().join("examples/k8s-gpu-job.yaml");
    let started = Instant::now();
    let out = engine(&["run", example.to_str().unwrap(), "-i", "gpus=2", "-i", "pool=h100", "-i", "fallback_pool=l40s", "-i", "schedule_timeout=2s", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let events = json_lines(&text(&out.stdout));
    let run_id = run_id_of(&events);

    let fallbacks: Vec<&Value> = events.iter().filter(|e| e["event"] == "step_fallback").collect();
    assert_eq!(fallbacks.len(), 1, "{fallbacks:?}");
    let f = fallbacks[0];
    assert_eq!(f["step"], "job", "{f}");
    assert_eq!(f["fallback_index"], 0, "{f}");
    let why = f["error"].as_str().unwrap_or_default();
    assert!(why.contains("Insufficient nvidia.com/gpu"), "the scheduler's reason is not in the fallback event: {f}");
    assert!(!events.iter().any(|e| e["event"] == "step_retry" && e["step"] == "job"), "capacity was retried on the same pool");
    let last = events.last().unwrap();
    assert_eq!(last["event"], "run_finished");
    assert_eq!(last["status"], "succeeded");
    assert_eq!(last["outputs"]["node"], "gpu-l40s-0", "{last}");
    assert!(started.elapsed().as_secs() < 60, "the fallback took {:?}", started.elapsed());

    let shown = engine(&["show", &run_id, "--output", "json"]);
    assert_eq!(shown.status.code(), Some(0), "{}", text(&shown.stderr));
    let shown: Value = serde_json::from_slice(&shown.stdout).expect("show --output json");
    let job = &shown["steps"]["job"];
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["outputs"]["fallback_index"], 0, "{job}");
    // Each reason is `KIND: MESSAGE`: the first attempt failed with kind `capacity`.
    let reasons = job["outputs"]["fallback_reasons"].as_array().cloned().unwrap_or_default();
    assert_eq!(reasons.len(), 1, "fallback_reasons: {reasons:?}");
    let reason = reasons[0].as_str().unwrap_or_default();
    assert!(reason.starts_with("capacity: ") && reason.contains("Insufficient nvidia.com/gpu"), "the first attempt did not fail with kind capacity for lack of GPUs: {reason}");
    assert_eq!(job["outputs"]["node"], "gpu-l40s-0", "{job}");
    // The refused job on h100 was deleted before the fallback: only the l40s one is left.
    let live = jobs_and_pods(&server.snapshot());
    assert!(live.iter().any(|o| o.starts_with("batch/jobs")), "no job in the emulator: {live:?}");
    assert_eq!(live.iter().filter(|o| o.starts_with("batch/jobs")).count(), 1, "{live:?}");

    let d = engine(&["destroy", &run_id]);
    assert_eq!(d.status.code(), Some(0), "{}\n{}", text(&d.stdout), text(&d.stderr));
    let left = jobs_and_pods(&server.snapshot());
    assert!(left.is_empty(), "destroy left {left:?}");
    rt.block_on(server.shutdown());
}

const VM_NAME: &str = "crash-vm";

/// `proxmox.gpu.list`, then `proxmox.vm.create` (full clone of the Ceph-backed template 9001,
/// start), retried on transient errors as a real workflow is: a task the killed engine left
/// running holds the VM's lock for a moment ("can't lock file ... got timeout").
const PVE_WORKFLOW: &str = "version: 1\nname: pve-clone\n\
secrets:\n  tok: { env: PROXMOX_TOKEN_SECRET }\n\
connectors:\n  proxmox: { endpoint: '${{ env.PROXMOX_URL }}', token_id: '${{ env.PROXMOX_TOKEN_ID }}', token_secret: '${{ secrets.tok }}', ca_file: '${{ env.PROXMOX_CA_FILE }}' }\n\
steps:\n  gpus: { uses: proxmox.gpu.list, with: { node: pve1 } }\n\
\x20 vm:\n    uses: proxmox.vm.create\n    needs: [gpus]\n    retry: { attempts: 4, delay: 1s }\n    with: { node: pve1, clone: 9001, name: crash-vm, cores: 2, memory: 2048, start: true }\n\
outputs:\n  vmid: ${{ steps.vm.outputs.vmid }}\n";

/// The run SIGKILLed after each event of the JSON stream. The template's disk is on fakepve's
/// Ceph storage, made slow, so a clone takes a moment: a kill after a `task qmclone running`
/// progress event falls while the engine waits on the clone task, and at least one must:
/// `resume` leaves exactly one VM named `crash-vm`, running, and `destroy` none.
#[test]
fn a_crash_during_clone_resumes_to_exactly_one_vm() {
    let Some(pve) = FakePve::start(0.05) else { return };
    // Slow OSDs: every operation on the Ceph-backed template's disk takes 20 PVE seconds (1 s).
    assert_eq!(pve.cmd(&serde_json::json!({"ceph_slow": 20})), serde_json::json!({"ok": true}));
    let started = Instant::now();
    let t = CliTest::new();
    let wf = t.write("pve.yaml", PVE_WORKFLOW);
    let env = |c: &mut Command| {
        c.env("PROXMOX_URL", &pve.url).env("PROXMOX_TOKEN_ID", &pve.token_id).env("PROXMOX_TOKEN_SECRET", &pve.token_secret).env("PROXMOX_CA_FILE", &pve.ca_file);
    };
    let engine = |args: &[&str]| -> Output {
        let mut c = t.cmd();
        env(&mut c);
        c.args(args).output().unwrap()
    };
    // fakepve's own state: how many VMs carry the name.
    let vms = || pve.count_named(VM_NAME);

    // A full run first: how many events there are, and that it works at all.
    let full = engine(&["run", wf.to_str().unwrap(), "--output", "json"]);
    assert_eq!(full.status.code(), Some(0), "{}\n{}", text(&full.stdout), text(&full.stderr));
    let probe = json_lines(&text(&full.stdout));
    let vmid = probe.last().unwrap()["outputs"]["vmid"].as_u64().expect("vmid output");
    assert_eq!(pve.vm(vmid)["status"], "running", "{}", pve.vm(vmid));
    assert_eq!(vms(), 1);
    let d = engine(&["destroy", &run_id_of(&probe)]);
    assert_eq!(d.status.code(), Some(0), "{}", text(&d.stderr));
    assert_eq!(vms(), 0);
    let total = probe.len();

    let mut labels = BTreeSet::new();
    let mut during_clone = 0;
    for k in 1..total {
        let mut cmd = t.cmd();
        env(&mut cmd);
        let mut child = cmd.args(["run", wf.to_str().unwrap(), "--output", "json"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut seen = Vec::new();
        let mut line = String::new();
        while seen.len() < k {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 {
                break;
            }
            seen.push(serde_json::from_str::<Value>(&line).unwrap());
        }
        // Killed while the engine waited on the clone task: its last event says the task was
        // still running at the last look (`task qmclone running, 0.3s`).
        let cloning = seen.last().is_some_and(|l| l["event"] == "step_progress" && l["stage"].as_str().is_some_and(|s| s.starts_with("task qmclone running")));
        Command::new("kill").args(["-KILL", &child.id().to_string()]).status().unwrap();
        let _ = child.wait();
        let Some(last) = seen.last() else { continue };
        if last["event"] == "run_finished" {
            continue;
        }
        let stage = last["stage"].as_str().or(last["message"].as_str()).or(last["status"].as_str()).unwrap_or("");
        let point = format!("#{k} {} {} {stage}", last["event"], last["step"]);
        let still_cloning = cloning;
        let run_id = run_id_of(&seen);
        let out = engine(&["resume", &run_id, "--output", "json"]);
        assert_eq!(out.status.code(), Some(0), "kill after {point}: {}\n{}", text(&out.stdout), text(&out.stderr));
        let n = vms();
        assert_eq!(n, 1, "kill after {point}: {n} VMs named {VM_NAME}");
        let shown: Value = serde_json::from_slice(&engine(&["show", &run_id, "--output", "json"]).stdout).expect("show --output json");
        let got = shown["steps"]["vm"]["outputs"]["vmid"].as_u64().unwrap_or_else(|| panic!("kill after {point}: no vmid in {}", shown["steps"]["vm"]));
        assert_eq!(pve.vm(got)["status"], "running", "kill after {point}: {}", pve.vm(got));
        let d = engine(&["destroy", &run_id]);
        assert_eq!(d.status.code(), Some(0), "kill after {point}: {}\n{}", text(&d.stdout), text(&d.stderr));
        assert_eq!(vms(), 0, "kill after {point}: destroy left a VM named {VM_NAME}");
        assert!(pve.vm(got).is_null(), "kill after {point}: VM {got} is still there: {}", pve.vm(got));
        if still_cloning {
            during_clone += 1;
        }
        labels.insert(point);
    }
    eprintln!("{} kill points of {total} events ({during_clone} during the clone) in {:?}", labels.len(), started.elapsed());
    assert!(labels.len() >= 10, "only {} kill points: {labels:?}", labels.len());
    assert!(during_clone >= 1, "no kill point fell while the clone task ran: {labels:?}");
}
