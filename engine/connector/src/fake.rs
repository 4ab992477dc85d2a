//! A scriptable action for engine tests: fails a set number of times with a chosen
//! kind, waits on the (possibly paused) tokio clock, creates a resource, and logs
//! every start and end so tests can check ordering and concurrency.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use engine_core::{ErrorKind, ResourceRecord};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Action, Connector, ConnectorError, DynAction, StepContext};

/// Input of `fake.run`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FakeInput {
    /// Value returned as `outputs.value`.
    #[serde(default)]
    pub value: Value,
    /// Fail this many attempts before succeeding.
    #[serde(default)]
    pub fail_times: u32,
    /// Kind of the failures.
    #[serde(default)]
    pub kind: Option<ErrorKind>,
    /// Ask for this many ms before a retry.
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
    /// Wait this many ms (on the tokio clock) before answering.
    #[serde(default)]
    pub sleep_ms: u64,
    /// Create a `fake.thing` resource.
    #[serde(default)]
    pub create: bool,
    /// Pin `[key, value]` for the run; the value the run holds is returned as `pinned`.
    #[serde(default)]
    pub pin: Option<(String, String)>,
}

/// Output of `fake.run`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FakeOutput {
    /// The input's `value`.
    pub value: Value,
    /// Which attempt succeeded.
    pub attempt: u32,
    /// The value pinned under the input's `pin` key.
    pub pinned: Option<String>,
}

/// What the fake saw, shared with the test.
#[derive(Debug, Default)]
pub struct FakeLog {
    /// `start <step>[<index>]` and `end <step>[<index>]` in order.
    pub events: Vec<String>,
    /// Attempts per step key.
    pub attempts: HashMap<String, u32>,
    /// Largest number running at once.
    pub max_running: usize,
    running: usize,
    /// Undone resource keys.
    pub undone: Vec<String>,
    /// The tokio instants at which each attempt started, per key.
    pub started_at: HashMap<String, Vec<tokio::time::Instant>>,
}

/// The `fake` connector.
#[derive(Debug, Clone, Default)]
pub struct FakeConnector {
    /// Shared log.
    pub log: Arc<Mutex<FakeLog>>,
}

/// `fake.run`.
#[derive(Debug, Clone)]
pub struct FakeRun {
    log: Arc<Mutex<FakeLog>>,
}

impl FakeRun {
    /// The action, logging into `log`.
    #[must_use]
    pub fn new(log: Arc<Mutex<FakeLog>>) -> Self {
        Self { log }
    }
}

fn label(cx: &StepContext) -> String {
    match cx.step.index {
        Some(i) => format!("{}[{i}]", cx.step.step),
        None => cx.step.step.clone(),
    }
}

#[async_trait]
impl Action for FakeRun {
    const ID: &'static str = "fake.run";
    const DESCRIPTION: &'static str = "a scriptable action for tests";
    const RESOURCE: Option<&'static str> = Some("fake.thing");
    type Input = FakeInput;
    type Output = FakeOutput;

    async fn run(&self, input: FakeInput, cx: &StepContext) -> Result<FakeOutput, ConnectorError> {
        let key = label(cx);
        let attempt = {
            let mut log = self.log.lock().unwrap();
            log.events.push(format!("start {key}"));
            log.running += 1;
            log.max_running = log.max_running.max(log.running);
            log.started_at.entry(key.clone()).or_default().push(tokio::time::Instant::now());
            let a = log.attempts.entry(key.clone()).or_insert(0);
            *a += 1;
            *a
        };
        let result = async {
            if input.sleep_ms > 0 {
                cx.sleep(Duration::from_millis(input.sleep_ms)).await?;
            }
            if attempt <= input.fail_times {
                let mut e = ConnectorError::new(input.kind.unwrap_or(ErrorKind::Transient), format!("planned failure {attempt}"));
                if let Some(ms) = input.retry_after_ms {
                    e = e.retry_after(Duration::from_millis(ms));
                }
                return Err(e);
            }
            if input.create {
                let rec = cx.intend("fake.thing", &cx.idempotency_key()).await?;
                cx.confirm(rec, format!("thing-{key}"), serde_json::json!({"key": key})).await?;
            }
            let pinned = match &input.pin {
                Some((k, v)) => Some(cx.pin(k, v).await?),
                None => None,
            };
            Ok(FakeOutput { value: input.value, attempt, pinned })
        }
        .await;
        let mut log = self.log.lock().unwrap();
        log.running -= 1;
        log.events.push(format!("end {key}"));
        result
    }

    async fn undo(&self, record: &ResourceRecord, _cx: &StepContext) -> Result<(), ConnectorError> {
        self.log.lock().unwrap().undone.push(record.key.clone());
        Ok(())
    }
}

impl Connector for FakeConnector {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn description(&self) -> &'static str {
        "scriptable actions for tests"
    }
    fn actions(&self) -> Vec<Arc<dyn DynAction>> {
        vec![Arc::new(FakeRun { log: self.log.clone() })]
    }
}
