//! The run store as the runtime's journal: every step change and resource is
//! committed before the engine acts on it; log lines are queued without waiting.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use engine_runtime::{Journal, Record, StepStatus};
use engine_state::{LogRecord, SharedStore, StepRecord, Write};
use serde_json::Value;

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(i64::MAX)
}

/// Journal of one run.
pub struct StoreJournal {
    store: SharedStore,
    run_id: String,
    started: Mutex<HashMap<(String, Option<usize>), i64>>,
}

impl StoreJournal {
    pub fn new(store: SharedStore, run_id: String) -> Self {
        Self { store, run_id, started: Mutex::new(HashMap::new()) }
    }
}

#[async_trait]
impl Journal for StoreJournal {
    async fn record(&self, record: Record<'_>) -> Result<(), String> {
        let w = match record {
            Record::Step { step, index, status, attempts, outputs, error } => {
                let now = now_ms();
                let key = (step.to_string(), index);
                let started_at_ms = {
                    let mut s = self.started.lock().expect("journal lock");
                    if status == StepStatus::Running {
                        Some(*s.entry(key).or_insert(now))
                    } else {
                        s.get(&key).copied()
                    }
                };
                let finished_at_ms = status.is_terminal().then_some(now);
                Write::Step {
                    run_id: self.run_id.clone(),
                    rec: StepRecord {
                        step: step.to_string(),
                        index,
                        status: status.as_str().to_string(),
                        attempts,
                        outputs: outputs.clone(),
                        error: error.map(str::to_string),
                        started_at_ms,
                        finished_at_ms,
                    },
                }
            }
            Record::Resource(r) => Write::Resource { run_id: self.run_id.clone(), rec: r.clone() },
            Record::Pin { key, value } => Write::Pin { run_id: self.run_id.clone(), key: key.to_string(), value: value.to_string() },
        };
        self.store.write(w).await.map_err(|e| e.to_string())
    }

    fn log(&self, step: &str, index: Option<usize>, stream: &'static str, line: &str) {
        self.store.log_nowait(
            &self.run_id,
            vec![LogRecord { seq: 0, step: step.to_string(), index, stream: stream.to_string(), line: line.to_string(), ts_ms: now_ms() }],
        );
    }
}

/// Outputs of what finished in a stored run, by instance key (`a`, `a[2]`, `p/c`).
pub fn finished_outputs(steps: &[StepRecord]) -> serde_json::Map<String, Value> {
    steps
        .iter()
        .filter(|s| s.status == "succeeded")
        .map(|s| (engine_runtime::instance_key(&s.step, s.index), s.outputs.clone()))
        .collect()
}
