//! The engine side of the connector protocol against small `sh` plugins, one per
//! behaviour: a good one, and each way a plugin can misbehave.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use engine_connector::{CancellationToken, ConnectorError, ErrorKind, LogStream, StepContext, StepSink};
use engine_core::{ResourceRecord, ResourceState, StepRef};
use serde_json::{json, Value};

const DESCRIBE: &str = r#"{"type":"describe","connector":{"name":"t","description":"test plugin"},"actions":[{"name":"make","description":"makes a file","input_schema":{"type":"object","properties":{"n":{"type":"integer"}},"required":["n"],"additionalProperties":false},"output_schema":{"type":"object","properties":{"made":{"type":"integer"}},"required":["made"]},"resource":"t.file"}]}"#;

/// A plugin: `$BODY` runs once the hello and the request were read into `$req`.
fn plugin(dir: &std::path::Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    let script = format!(
        "#!/bin/sh\nread hello\nread req\ncase \"$req\" in *'\"describe\"'*) echo '{{\"type\":\"hello\",\"protocol\":1}}'; echo '{DESCRIBE}'; exit 0;; esac\n{body}\n"
    );
    std::fs::write(&p, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[derive(Default)]
struct Recorder {
    resources: Mutex<Vec<ResourceRecord>>,
    logs: Mutex<Vec<String>>,
    progress: Mutex<Vec<(String, Option<u8>)>>,
    /// When each record was stored, to check the plugin waited for its ack.
    stored_at: Mutex<HashMap<String, u128>>,
}

#[async_trait]
impl StepSink for Recorder {
    fn progress(&self, _: &StepRef, _: u32, stage: &str, percent: Option<u8>) {
        self.progress.lock().unwrap().push((stage.into(), percent));
    }
    fn log(&self, _: &StepRef, _: LogStream, line: &str) {
        self.logs.lock().unwrap().push(line.into());
    }
    async fn record(&self, r: &ResourceRecord) -> Result<(), ConnectorError> {
        // A slow store: the plugin must wait for the ack before going on.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        self.stored_at.lock().unwrap().insert(format!("{:?}", r.state), now);
        self.resources.lock().unwrap().push(r.clone());
        Ok(())
    }
}

fn cx(dir: &std::path::Path, rec: Arc<Recorder>, cancel: CancellationToken) -> StepContext {
    let mut cx = StepContext::new("run-1", StepRef { step: "s".into(), index: Some(2) }, cancel, rec);
    cx.workflow_dir = dir.to_path_buf();
    cx.settings = json!({"path": "./secret-location", "zone": "z1"});
    cx
}

async fn action(dir: &std::path::Path, body: &str) -> Arc<dyn engine_connector::DynAction> {
    let p = plugin(dir, "engine-connector-t", body);
    let c = engine_plugin::describe("t", &p).await.unwrap();
    assert_eq!(c.actions.len(), 1);
    c.actions[0].clone()
}

fn tmp() -> tempdir::Dir {
    tempdir::Dir::new()
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let d = std::env::temp_dir().join(format!("plugin-test-{}-{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)));
            std::fs::create_dir_all(&d).unwrap();
            Self(d)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

const GOOD: &str = r#"echo '{"type":"hello","protocol":1,"future_field":true}'
case "$req" in
  *'"undo"'*) echo '{"type":"done"}'; exit 0;;
esac
echo "$req" > last-request.json
echo '{"type":"something_new","x":1}'
echo '{"type":"progress","stage":"making","percent":40}'
echo '{"type":"log","stream":"stdout","line":"hello from the plugin"}'
echo '{"type":"resource","kind":"t.file","key":"k1","id":null,"undo":{"path":"f"}}'
read ack
date +%s%N > after-ack
echo '{"type":"resource","kind":"t.file","key":"k1","id":"file-1","undo":{"path":"f"}}'
read ack
echo '{"type":"result","output":{"made":3}}'"#;

#[tokio::test]
async fn a_good_plugin_is_described_invoked_and_undone() {
    let d = tmp();
    let a = action(&d.0, GOOD).await;
    assert_eq!(a.id(), "t.make");
    assert_eq!(a.resource_kind(), Some("t.file"));
    assert_eq!(a.input_schema()["required"], json!(["n"]));
    let rec = Arc::new(Recorder::default());
    let out = a.run_value(json!({"n": 3}), &cx(&d.0, rec.clone(), CancellationToken::new())).await.unwrap();
    assert_eq!(out, json!({"made": 3}));
    let r = rec.resources.lock().unwrap().clone();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].state, ResourceState::Intended);
    assert_eq!(r[1].id.as_deref(), Some("file-1"));
    assert_eq!(r[1].step.index, Some(2));
    assert_eq!(rec.logs.lock().unwrap().as_slice(), ["hello from the plugin"]);
    assert_eq!(rec.progress.lock().unwrap().as_slice(), [("making".to_string(), Some(40))]);
    // The context reached the plugin, without the `path` setting.
    let req: Value = serde_json::from_str(&std::fs::read_to_string(d.0.join("last-request.json")).unwrap()).unwrap();
    assert_eq!(req["context"]["idempotency_key"], "run-1/s/2");
    assert_eq!(req["context"]["settings"], json!({"zone": "z1"}));
    // The plugin went on only after the intent was stored.
    let after_ack: u128 = std::fs::read_to_string(d.0.join("after-ack")).unwrap().trim().parse().unwrap();
    let stored = rec.stored_at.lock().unwrap()["Intended"];
    assert!(after_ack > stored, "the plugin went on {} ms before its intent was stored", (stored - after_ack) / 1_000_000);
    a.undo_value(&r[1], &cx(&d.0, rec.clone(), CancellationToken::new())).await.unwrap();
}

async fn failure(body: &str) -> ConnectorError {
    let d = tmp();
    let a = action(&d.0, body).await;
    let rec = Arc::new(Recorder::default());
    let started = Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(10), a.run_value(json!({"n": 1}), &cx(&d.0, rec, CancellationToken::new()))).await.expect("the engine hung").unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    e
}

#[tokio::test]
async fn bad_json_is_a_clear_invalid_error() {
    let e = failure("echo '{\"type\":\"hello\",\"protocol\":1}'; echo 'this is not json'").await;
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert!(e.message.contains("connector `t`") && e.message.contains("not a JSON object") && e.message.contains("this is not json"), "{}", e.message);
}

#[tokio::test]
async fn exiting_early_names_the_exit_code_and_stderr() {
    let e = failure("echo '{\"type\":\"hello\",\"protocol\":1}'; echo 'disk on fire' >&2; exit 3").await;
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert!(e.message.contains("exited with code 3") && e.message.contains("disk on fire"), "{}", e.message);
    let e = failure("kill -9 $$").await;
    assert_eq!(e.kind, ErrorKind::Transient, "{}", e.message);
    assert!(e.message.contains("killed by a signal"), "{}", e.message);
}

#[tokio::test]
async fn another_protocol_version_is_refused() {
    let e = failure("echo '{\"type\":\"hello\",\"protocol\":99}'").await;
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert!(e.message.contains("protocol 99") && e.message.contains("speaks 1"), "{}", e.message);
}

#[tokio::test]
async fn an_output_that_breaks_its_schema_is_refused() {
    let e = failure("echo '{\"type\":\"hello\",\"protocol\":1}'; echo '{\"type\":\"result\",\"output\":{\"made\":\"three\"}}'").await;
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert!(e.message.contains("does not match its schema"), "{}", e.message);
}

#[tokio::test]
async fn typed_errors_keep_their_kind_and_retry_after() {
    let e = failure("echo '{\"type\":\"hello\",\"protocol\":1}'; echo '{\"type\":\"error\",\"kind\":\"capacity\",\"message\":\"no L4 in fr-par-2\",\"retry_after_ms\":1500}'").await;
    assert_eq!(e.kind, ErrorKind::Capacity);
    assert_eq!(e.message, "no L4 in fr-par-2");
    assert_eq!(e.retry_after, Some(Duration::from_millis(1500)));
}

#[tokio::test]
async fn a_hanging_plugin_is_stopped_by_cancellation() {
    let d = tmp();
    let a = action(&d.0, "echo '{\"type\":\"hello\",\"protocol\":1}'; sleep 600 & wait").await;
    let token = CancellationToken::new();
    let c = cx(&d.0, Arc::new(Recorder::default()), token.clone());
    let t = tokio::spawn(async move { a.run_value(json!({"n": 1}), &c).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    token.cancel();
    let e = t.await.unwrap().unwrap_err();
    assert_eq!(e.kind, ErrorKind::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_plugin_that_hangs_in_describe_times_out() {
    let d = tmp();
    let p = d.0.join("engine-connector-slow");
    std::fs::write(&p, "#!/bin/sh\nsleep 600\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    tokio::time::pause();
    let e = engine_plugin::describe("slow", &p).await.unwrap_err();
    assert!(e.contains("did not describe itself within 10s"), "{e}");
}

#[tokio::test]
async fn a_plugin_that_cannot_start_is_named() {
    let e = engine_plugin::describe("nope", std::path::Path::new("/nonexistent/engine-connector-nope")).await.unwrap_err();
    assert!(e.contains("cannot start connector `nope`"), "{e}");
}
