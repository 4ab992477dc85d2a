//! Durable runs: the state store, resume, destroy, locks, and a crash test.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::{text, CliTest};

/// A workflow whose steps create directories, each with a `cleanup:` undo.
const MAKER: &str = r#"
version: 1
inputs:
  dir: { type: string }
concurrency: 3
steps:
  base:
    uses: shell.run
    with: { command: "mkdir -p ${{ inputs.dir }}/base && echo made base" }
    cleanup: { uses: shell.run, with: { command: "rm -rf ${{ inputs.dir }}/base" } }
  node:
    uses: shell.run
    needs: [base]
    for_each: 16
    with: { command: "mkdir -p ${{ inputs.dir }}/node-${{ index }} && echo made node ${{ index }}" }
    cleanup: { uses: shell.run, with: { command: "rm -rf ${{ inputs.dir }}/node-${{ index }}" } }
  top:
    uses: shell.run
    needs: [node]
    with: { command: "mkdir -p ${{ inputs.dir }}/top && echo made top" }
    cleanup: { uses: shell.run, with: { command: "rm -rf ${{ inputs.dir }}/top" } }
outputs:
  made: ${{ steps.node.outputs | length }}
"#;

fn json_lines(s: &str) -> Vec<Value> {
    s.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn show(t: &CliTest, run: &str) -> Value {
    let out = t.run(&["show", run, "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn listing(dir: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
}

#[test]
fn run_is_recorded_and_shown() {
    let t = CliTest::new();
    let wf = t.write("m.yaml", MAKER);
    let made = t.dir.path().join("made");
    let out = t.run(&["run", wf.to_str().unwrap(), "-i", &format!("dir={}", made.display()), "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let events = json_lines(&text(&out.stdout));
    let run_id = events[0]["run_id"].as_str().unwrap().to_string();
    let s = show(&t, &run_id);
    assert_eq!(s["status"], "succeeded");
    assert_eq!(s["outputs"]["made"], 16);
    assert_eq!(s["steps"]["node[3]"]["status"], "succeeded");
    assert_eq!(s["steps"]["node"]["outputs"].as_array().unwrap().len(), 16);
    assert_eq!(s["resources"].as_array().unwrap().len(), 18);
    let runs = text(&t.run(&["runs"]).stdout);
    assert!(runs.contains(&run_id) && runs.contains("succeeded"), "{runs}");
    let logs = text(&t.run(&["logs", &run_id, "node"]).stdout);
    assert!(logs.contains("node[5] | made node 5"), "{logs}");
    assert!(!logs.contains("made base"));
    // A unique prefix is enough.
    assert_eq!(t.run(&["show", &run_id[..run_id.len() - 2]]).status.code(), Some(0));
    // destroy leaves nothing, and a second destroy has nothing to do.
    let d = t.run(&["destroy", &run_id]);
    assert_eq!(d.status.code(), Some(0), "{}", text(&d.stderr));
    assert!(text(&d.stdout).contains("18 undone"), "{}", text(&d.stdout));
    assert!(listing(&made).is_empty(), "{:?}", listing(&made));
    assert!(text(&t.run(&["destroy", &run_id]).stdout).contains("0 undone"));
    // The state file is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(t.dir.path().join("state.db")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn on_failure_cleanup_undoes_what_the_run_created() {
    let t = CliTest::new();
    let made = t.dir.path().join("made");
    let wf = t.write("f.yaml", &MAKER.replace("concurrency: 3", "concurrency: 3\non_failure: cleanup").replace("mkdir -p ${{ inputs.dir }}/top && echo made top", "exit 7"));
    let out = t.run(&["run", wf.to_str().unwrap(), "-i", &format!("dir={}", made.display()), "--output", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let events = json_lines(&text(&out.stdout));
    assert!(events.iter().any(|e| e["event"] == "resource_undo" && e["status"] == "deleted"));
    let last = events.last().unwrap();
    assert_eq!(last["event"], "run_finished");
    assert!(last["error"].as_str().unwrap().contains("on_failure: cleanup undid"), "{last}");
    assert!(listing(&made).is_empty(), "{:?}", listing(&made));
}

#[test]
fn a_held_run_cannot_be_resumed_twice() {
    let t = CliTest::new();
    let wf = t.write("l.yaml", "version: 1\nsteps:\n  long: { uses: shell.run, with: { command: 'echo started; sleep 20' } }\n");
    let mut child = t.cmd().args(["run", wf.to_str().unwrap(), "--output", "json"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let run_id = first["run_id"].as_str().unwrap().to_string();
    for l in lines.by_ref() {
        if l.unwrap().contains("\"line\":\"started\"") {
            break;
        }
    }
    let out = t.run(&["resume", &run_id]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("engine pid") && err.contains(&child.id().to_string()), "{err}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn secrets_never_reach_the_state_file() {
    let t = CliTest::new();
    let wf = t.write(
        "s.yaml",
        "version: 1\nsecrets: { tok: { env: CANARY }, suite: { env: ENGINE_TEST_CANARY } }\nsteps:\n  a: { uses: shell.run, with: { command: 'echo ${{ secrets.tok }}; echo err-${{ secrets.tok }} >&2; exit 1' }, continue_on_error: true }\n  b: { uses: shell.run, with: { command: 'echo v=${{ secrets.tok }} ${{ secrets.suite }}' } }\noutputs: { o: '${{ steps.b.outputs.stdout }}' }\n",
    );
    let out = t.cmd().args(["run", wf.to_str().unwrap(), "--output", "json"]).env("CANARY", "canary-7f3a9c").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for f in ["state.db", "state.db-wal", "state.db-shm"] {
        let bytes = std::fs::read(t.dir.path().join(f)).unwrap_or_default();
        assert!(!bytes.windows(13).any(|w| w == b"canary-7f3a9c"), "canary found in {f}");
    }
}

#[test]
fn a_corrupt_state_file_is_a_clear_error() {
    let t = CliTest::new();
    let garbage = b"this is not a database, it is a text file of some length........";
    std::fs::write(t.dir.path().join("state.db"), garbage).unwrap();
    let out = t.run(&["runs"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("state.db"), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(t.dir.path().join("state.db")).unwrap(), garbage, "the file was changed");
}

/// SIGKILL the engine at many points of a run; each time `resume` finishes it
/// without running a finished step again, and `destroy` leaves nothing behind.
#[test]
fn crash_at_any_point_then_resume_and_destroy() {
    let t = CliTest::new();
    let wf = t.write("m.yaml", MAKER);
    // How many events a whole run prints.
    let probe = t.dir.path().join("probe");
    let out = t.run(&["run", wf.to_str().unwrap(), "-i", &format!("dir={}", probe.display()), "--output", "json"]);
    let total = json_lines(&text(&out.stdout)).len();
    assert!(total > 55, "only {total} events");
    let mut points = 0;
    for k in 1..=total.min(56) {
        let made = t.dir.path().join(format!("made-{k}"));
        let mut child = t
            .cmd()
            .args(["run", wf.to_str().unwrap(), "-i", &format!("dir={}", made.display()), "--output", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut run_id = String::new();
        let mut line = String::new();
        for _ in 0..k {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 {
                break;
            }
            if run_id.is_empty() {
                let v: Value = serde_json::from_str(&line).unwrap();
                run_id = v["run_id"].as_str().unwrap().to_string();
            }
        }
        Command::new("kill").args(["-KILL", &child.id().to_string()]).status().unwrap();
        let _ = child.wait();
        points += 1;

        let before = show(&t, &run_id);
        let finished: BTreeSet<String> = before["steps"].as_object().unwrap().iter().filter(|(_, s)| s["status"] == "succeeded").map(|(k, _)| k.clone()).collect();
        let out = t.run(&["resume", &run_id, "--output", "json"]);
        assert_eq!(out.status.code(), Some(0), "kill point {k}: {}", text(&out.stderr));
        for e in json_lines(&text(&out.stdout)) {
            if e["event"] == "step" && e["status"] == "running" {
                let key = match e["index"].as_u64() {
                    Some(i) => format!("{}[{i}]", e["step"].as_str().unwrap()),
                    None => e["step"].as_str().unwrap().to_string(),
                };
                assert!(!finished.contains(&key), "kill point {k}: finished step {key} ran again");
            }
        }
        let after = show(&t, &run_id);
        assert_eq!(after["status"], "succeeded", "kill point {k}");
        assert_eq!(after["outputs"]["made"], 16);
        assert_eq!(listing(&made).len(), 18, "kill point {k}: {:?}", listing(&made));
        let d = t.run(&["destroy", &run_id]);
        assert_eq!(d.status.code(), Some(0), "kill point {k}: {}", text(&d.stderr));
        assert!(listing(&made).is_empty(), "kill point {k}: left behind {:?}", listing(&made));
    }
    assert!(points >= 50, "{points} kill points");
}

#[test]
fn logs_follow_a_live_run_until_it_ends() {
    let t = CliTest::new();
    let wf = t.write("f.yaml", "version: 1\nsteps:\n  tick: { uses: shell.run, with: { command: 'for i in 1 2 3 4 5; do echo tick $i; sleep 0.2; done' } }\n");
    let mut child = t.cmd().args(["run", wf.to_str().unwrap(), "--output", "json"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let run_id = first["run_id"].as_str().unwrap().to_string();
    let follow = t.cmd().args(["logs", &run_id, "--follow"]).output().unwrap();
    let _ = child.wait();
    assert_eq!(follow.status.code(), Some(0));
    let out = text(&follow.stdout);
    for i in 1..=5 {
        assert!(out.contains(&format!("tick | tick {i}")), "{out}");
    }
}

/// Engines started at the same moment on one new state file all get in (the first to switch
/// it to WAL must not make the others fail with "database is locked").
#[test]
fn engines_starting_at_once_on_a_new_state_file_all_run() {
    let t = CliTest::new();
    let wf = t.write("one.yaml", "version: 1\nsteps:\n  a: { uses: shell.run, with: { command: 'true' } }\n");
    for round in 0..15 {
        let state = t.dir.path().join(format!("state-{round}.db"));
        let children: Vec<_> = (0..4)
            .map(|_| t.cmd().env("ENGINE_STATE", &state).args(["run", wf.to_str().unwrap(), "--output", "json"]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap())
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert_eq!(out.status.code(), Some(0), "round {round}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}
