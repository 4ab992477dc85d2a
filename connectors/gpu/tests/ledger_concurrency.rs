//! Two engine processes allocating exclusive GPUs from one ledger at the same time:
//! no GPU may be handed out twice, and together they get exactly all of them.
//!
//! The test re-runs its own binary as the two "engines" (`child_process`, selected by
//! the `GPU_LEDGER_CHILD` environment variable). Each child runs `gpu.allocate` for one
//! exclusive GPU, step after step, until it gets a `capacity` error, and prints what it
//! got. The children start together on a signal file, many rounds over.


use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use connector_gpu::testing::{combine, FakeSmi};
use connector_gpu::Allocate;
use engine_connector::harness::Harness;
use engine_connector::ErrorKind;
use serde_json::json;

const CHILD_ENV: &str = "GPU_LEDGER_CHILD";
const GPUS: u8 = 12;
const ROUNDS: usize = 8;

/// One engine: allocate until nothing is left. Does nothing unless run as a child.
#[test]
fn child_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let parts: Vec<&str> = spec.split('|').collect();
    let (smi, ledger, round, me, dir) = (parts[0], parts[1], parts[2], parts[3], Path::new(parts[4]));
    std::fs::write(dir.join(format!("ready-{me}")), "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.join("go").exists() {
        assert!(Instant::now() < deadline, "no go signal");
        std::thread::sleep(Duration::from_millis(1));
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        for i in 0.. {
            let mut h = Harness::new(&format!("round{round}-engine{me}-step{i}"));
            h.settings = json!({ "nvidia_smi": smi, "ledger_dir": ledger });
            match h.run(&Allocate, json!({"count": 1})).await {
                Ok(out) => println!("GOT {}", out.uuids[0]),
                Err(e) if e.kind == ErrorKind::Capacity => break,
                Err(e) => panic!("engine {me}: {e}"),
            }
        }
    });
}

#[test]
fn two_engines_never_hand_out_a_gpu_twice() {
    let parts: Vec<(&str, Option<u8>)> = (1..=GPUS).map(|i| ("tesla-t4.xml", Some(i))).collect();
    let fake = FakeSmi::new(&combine(&parts));
    let exe = std::env::current_exe().unwrap();
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let ledger = fake.dir.path().join(format!("ledger-{round}"));
        let children: Vec<_> = (0..2)
            .map(|me| {
                let spec = format!("{}|{}|{round}|{me}|{}", fake.path().display(), ledger.display(), dir.path().display());
                Command::new(&exe)
                    .args(["--exact", "child_process", "--nocapture", "--test-threads=1", "--quiet"])
                    .env(CHILD_ENV, spec)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(dir.path().join("ready-0").exists() && dir.path().join("ready-1").exists()) {
            assert!(Instant::now() < deadline, "the engines did not start");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::fs::write(dir.path().join("go"), "").unwrap();
        let mut got: Vec<String> = Vec::new();
        let mut per_engine = Vec::new();
        for child in children {
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "engine failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
            let mine: Vec<String> = stdout.lines().filter_map(|l| l.strip_prefix("GOT ")).map(str::to_owned).collect();
            per_engine.push(mine.len());
            got.extend(mine);
        }
        let unique: BTreeSet<&String> = got.iter().collect();
        assert_eq!(unique.len(), got.len(), "round {round}: a GPU was handed out twice: {got:?}");
        assert_eq!(got.len(), usize::from(GPUS), "round {round}: the engines got {per_engine:?} GPUs, {GPUS} exist");
        // The ledger agrees.
        let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(ledger.join("ledger.json")).unwrap()).unwrap();
        assert_eq!(state["allocations"].as_array().unwrap().len(), usize::from(GPUS));
    }
}
