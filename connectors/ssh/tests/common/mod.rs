//! What the `ssh` connector's tests share beyond the sshd peer of
//! [`connector_ssh::testing`] (a real OpenSSH sshd on 127.0.0.1, keys from the real
//! `ssh-keygen`): a step sink that pins host keys, contexts over it, process probes.
//!
//! Without `/usr/sbin/sshd` a test prints `skipped: ...` and returns, unless
//! `ENGINE_REQUIRE_PEERS=1`, where it fails (install it with `scripts/peers/sshd.sh`).

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use engine_connector::{CancellationToken, ConnectorError, LogStream, ResourceRecord, StepContext, StepRef, StepSink};

/// Start a [`connector_ssh::testing::Peer`] or return from the test when sshd is missing.
#[macro_export]
macro_rules! peer {
    () => {
        match connector_ssh::testing::Peer::start() {
            Some(p) => p,
            None => return,
        }
    };
}

/// A step sink that keeps logs and progress and pins host keys in a map, as the run state
/// does.
#[derive(Default)]
pub struct TestSink {
    pub pins: Mutex<HashMap<String, String>>,
    pub logs: Mutex<Vec<(LogStream, String)>>,
    pub progress: Mutex<Vec<(String, Option<u8>)>>,
}

#[async_trait]
impl StepSink for TestSink {
    fn progress(&self, _: &StepRef, _: u32, stage: &str, percent: Option<u8>) {
        self.progress.lock().unwrap().push((stage.to_string(), percent));
    }
    fn log(&self, _: &StepRef, stream: LogStream, line: &str) {
        self.logs.lock().unwrap().push((stream, line.to_string()));
    }
    async fn record(&self, _: &ResourceRecord) -> Result<(), ConnectorError> {
        Ok(())
    }
    async fn pin(&self, key: &str, value: &str) -> Result<String, ConnectorError> {
        Ok(self.pins.lock().unwrap().entry(key.to_string()).or_insert_with(|| value.to_string()).clone())
    }
}

impl TestSink {
    pub fn lines(&self, stream: LogStream) -> Vec<String> {
        self.logs.lock().unwrap().iter().filter(|(s, _)| *s == stream).map(|(_, l)| l.clone()).collect()
    }
}

/// A context over `sink`, cancelled by `token`, with `workflow_dir`.
pub fn context(sink: &Arc<TestSink>, token: &CancellationToken, workflow_dir: &Path) -> StepContext {
    let mut cx = StepContext::new("test-run", StepRef { step: "ssh".into(), index: None }, token.clone(), sink.clone());
    cx.workflow_dir = workflow_dir.to_path_buf();
    cx
}

/// A fresh sink and token, and a context over them.
pub fn fresh(workflow_dir: &Path) -> (Arc<TestSink>, CancellationToken, StepContext) {
    let sink = Arc::new(TestSink::default());
    let token = CancellationToken::new();
    let cx = context(&sink, &token, workflow_dir);
    (sink, token, cx)
}

/// Whether a process is alive (and not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or_default().trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

/// Wait up to `limit` for `cond`.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    cond()
}
