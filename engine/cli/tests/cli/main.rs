//! End-to-end tests of the `engine` binary: exit codes, stdout and stderr.

mod aws;
mod cluster;
mod clusters_k8s_pve;
mod durable;
mod faults;
mod gpu;
mod plugins;
mod ssh;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub(crate) struct CliTest {
    pub(crate) dir: tempfile::TempDir,
}

impl CliTest {
    pub(crate) fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("tempdir") }
    }
    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p
    }
    pub(crate) fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_engine"));
        c.current_dir(self.dir.path())
            .env("NO_COLOR", "1")
            .env("ENGINE_STATE", self.dir.path().join("state.db"))
            .env("ENGINE_TEST_CANARY", CANARY);
        c
    }
    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("spawn engine")
    }
}

/// A secret value every test's engine can read (`env: ENGINE_TEST_CANARY`); no
/// state file any test leaves may contain it.
pub(crate) const CANARY: &str = "canary-5e1f0c2b9d";

impl Drop for CliTest {
    fn drop(&mut self) {
        for f in ["state.db", "state.db-wal", "state.db-shm"] {
            let bytes = std::fs::read(self.dir.path().join(f)).unwrap_or_default();
            let leaked = bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes());
            if leaked && !std::thread::panicking() {
                panic!("the canary secret reached {f}");
            }
        }
    }
}

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn hello_example_runs_with_json_events() {
    let t = CliTest::new();
    let hello = root().join("examples/hello.yaml");
    let out = t.run(&["run", hello.to_str().unwrap(), "--output", "json", "-i", "workers=4", "-i", "port=18766"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
    assert!(lines.iter().all(|l| l["event"].is_string() && l["run_id"].is_string()));
    let last = lines.last().unwrap();
    assert_eq!(last["event"], "run_finished");
    assert_eq!(last["status"], "succeeded");
    assert_eq!(last["outputs"]["greetings"].as_array().unwrap().len(), 4);
    assert_eq!(last["outputs"]["flaky"], "succeeded on attempt 3");
    assert!(lines.iter().any(|l| l["event"] == "step_retry" && l["step"] == "flaky"));
    assert!(lines.iter().any(|l| l["event"] == "step" && l["step"] == "greet" && l["index"] == 3 && l["status"] == "succeeded"));
}

#[test]
fn validate_reports_every_error_located_with_exit_2() {
    let t = CliTest::new();
    let f = t.write("bad.yaml", "version: 1\nsteps:\n  a:\n    uses: shell.run\n    neds: [b]\n    with: { command: 'echo ${{ steps.zz.outputs.x }}' }\n  b:\n    uses: shell.nope\n    timeout: 5 minutes\n");
    let out = t.run(&["validate", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    for needle in ["error[WF0100]", "bad.yaml:5:5", "did you mean `needs`?", "error[WF0141]", "bad.yaml:6:32", "error[WF0120]", "bad.yaml:8:11", "error[WF0105]", "bad.yaml:9:14", "4 problems found"] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(err.contains("^^^^"), "caret line missing:\n{err}");
    let out = t.run(&["validate", "--format", "json", f.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 4);
    assert_eq!(v[0]["location"]["line"], 5);
}

#[test]
fn cycles_are_reported_with_the_whole_chain() {
    let t = CliTest::new();
    let f = t.write("c.yaml", "version: 1\nsteps:\n  a: { uses: shell.run, needs: [c], with: { command: x } }\n  b: { uses: shell.run, needs: [a], with: { command: x } }\n  c: { uses: shell.run, with: { command: '${{ steps.b.outputs.stdout }}' } }\n");
    let out = t.run(&["validate", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("dependency cycle: a -> c -> b -> a"), "{}", text(&out.stderr));
}

#[test]
fn inputs_are_checked_before_anything_runs() {
    let t = CliTest::new();
    let f = t.write("i.yaml", "version: 1\ninputs:\n  n: { type: integer, minimum: 1 }\n  zone: { type: string, default: a, enum: [a, b] }\nsteps:\n  s: { uses: shell.run, with: { command: touch ran } }\n");
    let p = f.to_str().unwrap();
    for (args, needle) in [
        (vec!["run", p], "WF0152"),
        (vec!["run", p, "-i", "n=three"], "WF0151"),
        (vec!["run", p, "-i", "n=0"], "WF0153"),
        (vec!["run", p, "-i", "n=1", "-i", "zone=c"], "WF0153"),
        (vec!["run", p, "-i", "n=1", "-i", "zonee=a"], "did you mean `zone`?"),
    ] {
        let out = t.run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(text(&out.stderr).contains(needle), "{args:?}: {}", text(&out.stderr));
    }
    assert!(!t.dir.path().join("ran").exists(), "a step ran despite bad inputs");
    let vals = t.write("vals.yaml", "n: 2\nzone: b\n");
    let out = t.run(&["run", p, "--inputs", vals.to_str().unwrap(), "--output", "plain"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn secrets_are_masked_in_everything_printed() {
    let t = CliTest::new();
    let f = t.write(
        "s.yaml",
        "version: 1\nsecrets:\n  tok: { env: MY_TOKEN }\n  key: { file: key.txt }\n  canary: { env: ENGINE_TEST_CANARY }\nsteps:\n  leak: { uses: shell.run, with: { command: 'echo token=${{ secrets.tok }} ${{ secrets.canary }}; echo key=$K >&2; exit 3', env: { K: '${{ secrets.key }}' } } }\noutputs:\n  t: ${{ secrets.tok }}\n",
    );
    t.write("key.txt", "file-secret-123\n");
    for mode in ["json", "plain"] {
        let out = t.cmd().args(["run", f.to_str().unwrap(), "--output", mode]).env("MY_TOKEN", "env-secret-456").output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let all = text(&out.stdout) + &text(&out.stderr);
        assert!(!all.contains("env-secret-456") && !all.contains("file-secret-123"), "{all}");
        assert!(all.contains("token=***"), "{all}");
    }
    let out = t.run(&["run", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("MY_TOKEN"));
}

#[test]
fn failed_run_exits_1_and_ctrl_c_exits_130() {
    let t = CliTest::new();
    let f = t.write("f.yaml", "version: 1\nsteps:\n  x: { uses: shell.run, with: { command: 'exit 4' } }\n");
    assert_eq!(t.run(&["run", f.to_str().unwrap(), "--output", "plain"]).status.code(), Some(1));

    let f = t.write("long.yaml", "version: 1\nsteps:\n  long: { uses: shell.run, with: { command: 'echo started; sleep 30' } }\n  after: { uses: shell.run, needs: long, with: { command: 'touch after' } }\n");
    let mut child = t.cmd().args(["run", f.to_str().unwrap(), "--output", "json"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    // Wait until the step printed, then interrupt.
    while std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() > 0 {
        if line.contains("\"line\":\"started\"") {
            break;
        }
        line.clear();
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let last: serde_json::Value = serde_json::from_str(rest.lines().last().unwrap()).unwrap();
    assert_eq!(last["status"], "cancelled");
    assert!(!t.dir.path().join("after").exists());
}

#[test]
fn graph_plan_connectors_schema_and_explain() {
    let t = CliTest::new();
    let hello = root().join("examples/hello.yaml");
    let h = hello.to_str().unwrap();
    let dot = text(&t.run(&["graph", h]).stdout);
    assert!(dot.starts_with("digraph") && dot.contains("\"workdir\" -> \"server\""), "{dot}");
    let mm = text(&t.run(&["graph", h, "--format", "mermaid"]).stdout);
    assert!(mm.starts_with("flowchart LR") && mm.contains("flaky --> stop"), "{mm}");
    let plan = t.run(&["plan", h, "-i", "workers=2"]);
    assert_eq!(plan.status.code(), Some(0));
    let plan = text(&plan.stdout);
    assert!(plan.contains("for_each: 2 elements") && plan.contains("(known after `workdir`)"), "{plan}");
    let c = text(&t.run(&["connectors"]).stdout);
    assert!(c.contains("shell.run") && c.contains("http.check"));
    let c: serde_json::Value = serde_json::from_slice(&t.run(&["connectors", "shell"]).stdout).unwrap();
    assert!(c["shell.run"]["output"]["properties"]["stdout"].is_object());
    let s: serde_json::Value = serde_json::from_slice(&t.run(&["schema"]).stdout).unwrap();
    assert_eq!(s["title"], "engine workflow");
    assert!(text(&t.run(&["explain", "WF0130"]).stdout).contains("cycle"));
    assert_eq!(t.run(&["explain", "XX1"]).status.code(), Some(2));
    assert_eq!(t.run(&["frobnicate"]).status.code(), Some(2));
}

/// `schemas/` holds the generated schemas; `UPDATE_SCHEMAS=1` rewrites them.
#[test]
fn committed_schemas_are_current() {
    let t = CliTest::new();
    let mut expected = vec![(root().join("schemas/workflow.schema.json"), text(&t.run(&["schema"]).stdout))];
    for connector in ["shell", "http", "lock", "ssh", "gpu", "container", "aws", "scaleway", "proxmox", "kubernetes"] {
        let actions: serde_json::Value = serde_json::from_slice(&t.run(&["connectors", connector]).stdout).unwrap();
        for (id, v) in actions.as_object().unwrap_or_else(|| panic!("`engine connectors {connector}` printed no actions")) {
            expected.push((root().join(format!("schemas/actions/{id}.json")), serde_json::to_string_pretty(v).unwrap() + "\n"));
        }
    }
    // A schema left behind by an action that no longer exists is stale too.
    for e in std::fs::read_dir(root().join("schemas/actions")).unwrap().flatten() {
        let p = e.path();
        if !expected.iter().any(|(q, _)| *q == p) {
            if std::env::var_os("UPDATE_SCHEMAS").is_some() {
                std::fs::remove_file(&p).unwrap();
            } else {
                panic!("{} belongs to no action (run `UPDATE_SCHEMAS=1 cargo test -p engine --test cli`)", p.display());
            }
        }
    }
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    let mut stale = Vec::new();
    for (path, want) in expected {
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if have != want {
            if update {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, want).unwrap();
            } else {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(stale.is_empty(), "stale schemas (run `UPDATE_SCHEMAS=1 cargo test -p engine --test cli`): {stale:?}");
}

/// Every shipped workflow and example passes `engine validate`.
#[test]
fn shipped_workflows_validate() {
    let t = CliTest::new();
    let mut files = Vec::new();
    for dir in ["examples", "workflows"] {
        let mut stack = vec![root().join(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                    files.push(p);
                }
            }
        }
    }
    assert!(!files.is_empty());
    for f in files {
        let out = t.run(&["validate", f.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}: {}", f.display(), text(&out.stderr));
    }
}

/// `plan` prices what a workflow would create from the connectors' dated tables, per resource
/// and in all, and says when a count is known only at run time.
#[test]
fn plan_shows_the_hourly_cost_of_what_it_would_create() {
    let t = CliTest::new();
    let f = t.write(
        "gpus.yaml",
        "version: 1\nsteps:\n  vm:\n    uses: aws.instance.create\n    for_each: ${{ range(3) }}\n    with: { gpu: { type: a10g, count: 1 }, ami: ami-12345678 }\n  spot:\n    uses: aws.instance.create\n    with: { instance_type: p4d.24xlarge, ami: ami-12345678, spot: true, max_price: 9.5 }\n",
    );
    let out = t.run(&["plan", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    let line = |needle: &str| s.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no `{needle}` in:\n{s}")).to_string();
    let vm = line("3 × aws.instance (step vm)");
    assert!(vm.contains("USD/h each") && vm.contains("on-demand list price") && vm.contains("table of 20"), "{vm}");
    assert!(line("1 × aws.instance (step spot)").contains("9.50 USD/h each, 9.50 USD/h in all (AWS spot, at most max_price"), "{s}");
    // A Scaleway server in the same plan is priced in its own currency.
    let f = t.write("mixed.yaml", "version: 1\nsteps:\n  l4:\n    uses: scaleway.server.create\n    for_each: ${{ range(2) }}\n    with: { commercial_type: L4-1-24G }\n  vm:\n    uses: aws.instance.create\n    with: { gpu: { type: a10g, count: 1 }, ami: ami-12345678 }\n");
    let mixed = text(&t.run(&["plan", f.to_str().unwrap()]).stdout);
    assert!(mixed.contains("2 × scaleway.server (step l4): 0.75 EUR/h each, 1.50 EUR/h in all (Scaleway list price"), "{mixed}");
    assert!(mixed.lines().any(|l| l.starts_with("estimated cost:") && l.contains("EUR/h + ") && l.contains("USD/h")), "{mixed}");
    // 3 × g5.xlarge on demand + 9.50 spot.
    let all: f64 = vm.split("each, ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(line("estimated cost:").contains(&format!("{:.2} USD/h", all + 9.5)), "{s}");
}

/// A sub-workflow's own `secrets:` are resolved with the importer's (one scope for the run)
/// and masked like them.
#[test]
fn a_sub_workflows_secrets_are_resolved_and_masked() {
    let t = CliTest::new();
    t.write("sub.yaml", "version: 1\nsecrets:\n  token: { env: ENGINE_TEST_CANARY }\nsteps:\n  use:\n    uses: shell.run\n    with: { command: 'echo \"token=$T\"', env: { T: '${{ secrets.token }}' } }\noutputs:\n  said: '${{ steps.use.outputs.stdout }}'\n");
    let main = t.write("main.yaml", "version: 1\nsteps:\n  sub: { uses: ./sub.yaml }\noutputs:\n  said: '${{ steps.sub.outputs.said }}'\n");
    let out = t.run(&["run", main.to_str().unwrap(), "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("token=***"), "{stdout}");
    assert!(!stdout.contains(CANARY), "the secret leaked: {stdout}");
}
