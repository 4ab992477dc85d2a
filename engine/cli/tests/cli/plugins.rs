//! Out-of-process connectors through the CLI: the worked examples, discovery on PATH,
//! validation against a plugin's schema, misbehaving plugins, and `destroy` of a
//! plugin's resources.

use std::path::PathBuf;

use serde_json::Value;

use crate::{root, text, CliTest};

fn example(rel: &str) -> PathBuf {
    root().join("examples/connectors").join(rel)
}

fn last_event(stdout: &[u8]) -> Value {
    serde_json::from_str(text(stdout).lines().last().unwrap()).unwrap()
}

#[test]
fn python_plugin_creates_resources_that_destroy_removes() {
    let t = CliTest::new();
    let dir = t.dir.path().join("notes");
    let out = t.run(&["run", example("notes.yaml").to_str().unwrap(), "-i", &format!("dir={}", dir.display()), "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let last = last_event(&out.stdout);
    assert_eq!(last["outputs"]["paths"].as_array().unwrap().len(), 3);
    let run_id = last["run_id"].as_str().unwrap().to_string();
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 3);
    let show: Value = serde_json::from_slice(&t.run(&["show", &run_id, "--output", "json"]).stdout).unwrap();
    let res = show["resources"].as_array().unwrap();
    assert_eq!(res.iter().filter(|r| r["kind"] == "notes.file" && r["state"] == "created").count(), 3, "{show}");
    let d = t.run(&["destroy", &run_id]);
    assert_eq!(d.status.code(), Some(0), "{}", text(&d.stderr));
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}

#[test]
fn bash_plugin_runs() {
    let t = CliTest::new();
    let out = t.run(&["run", example("sysinfo.yaml").to_str().unwrap(), "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let last = last_event(&out.stdout);
    assert!(last["outputs"]["uptime_seconds"].as_f64().unwrap() > 0.0, "{last}");
}

#[test]
fn plugins_on_path_are_found_listed_and_validated() {
    let t = CliTest::new();
    let bin = t.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::copy(example("bash/engine-connector-sysinfo"), bin.join("engine-connector-sysinfo")).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let wf = t.write("w.yaml", "version: 1\nsteps:\n  up: { uses: sysinfo.uptime }\noutputs: { s: '${{ steps.up.outputs.seconds }}' }\n");
    let out = t.cmd().args(["run", wf.to_str().unwrap(), "--output", "json"]).env("PATH", &path).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let list = t.cmd().args(["connectors"]).env("PATH", &path).output().unwrap();
    assert!(text(&list.stdout).contains("sysinfo.disk") && text(&list.stdout).contains("(plugin:"), "{}", text(&list.stdout));
    let schemas: Value = serde_json::from_slice(&t.cmd().args(["connectors", "sysinfo"]).env("PATH", &path).output().unwrap().stdout).unwrap();
    assert!(schemas["sysinfo.disk"]["input"]["properties"]["path"].is_object(), "{schemas}");
    // `with` is checked against the plugin's own schema before anything runs.
    let bad = t.write("b.yaml", "version: 1\nsteps:\n  d: { uses: sysinfo.disk, with: { paht: / } }\n  u: { uses: sysinfo.uptimee }\n  o: { uses: sysinfo.uptime, with: {} }\n  x: { uses: shell.run, with: { command: 'echo ${{ steps.o.outputs.secs }}' } }\n");
    let out = t.cmd().args(["validate", bad.to_str().unwrap()]).env("PATH", &path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    for needle in ["error[WF0121]: unknown key `paht`", "did you mean `path`?", "error[WF0120]: connector `sysinfo` has no action `uptimee`", "error[WF0142]: step `o` has no output `secs`"] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    // Without the plugin on PATH, the connector is unknown.
    let out = t.cmd().args(["validate", wf.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown action `sysinfo.uptime`"));
}

#[test]
fn misbehaving_plugins_fail_the_step_with_a_clear_error() {
    let t = CliTest::new();
    let dir = t.dir.path().join("notes");
    let wf = example("notes.yaml");
    for (mode, needle) in [
        ("bad_json", "sent a line that is not a JSON object"),
        ("exit_early", "exited with code 3"),
        ("bad_protocol", "speaks protocol 99"),
        ("bad_output", "does not match its schema"),
    ] {
        let out = t
            .cmd()
            .args(["run", wf.to_str().unwrap(), "-i", &format!("dir={}", dir.display()), "--output", "json"])
            .env("NOTES_MISBEHAVE", mode)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{mode}: {}", text(&out.stderr));
        let last = last_event(&out.stdout);
        let e = last["error"].as_str().unwrap_or_default();
        assert!(e.contains("connector `notes`") && e.contains(needle), "{mode}: {e}");
    }
    // A hanging plugin is stopped by the step's timeout.
    let hang = t.write("h.yaml", &std::fs::read_to_string(&wf).unwrap().replace("timeout: 30s", "timeout: 1s").replace("./python/", &format!("{}/", example("python").display())));
    let started = std::time::Instant::now();
    let out = t.cmd().args(["run", hang.to_str().unwrap(), "-i", &format!("dir={}", dir.display()), "--output", "json"]).env("NOTES_MISBEHAVE", "hang").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(last_event(&out.stdout)["error"].as_str().unwrap().contains("timed out after 1s"));
    assert!(started.elapsed().as_secs() < 10);
}
