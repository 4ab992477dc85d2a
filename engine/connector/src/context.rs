//! What an action sees of the engine while it runs.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use engine_core::{Masker, ResourceRecord, ResourceState, StepRef};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::ConnectorError;

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl LogStream {
    /// `stdout` or `stderr`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// Where an action's progress, logs and resource records go. The engine provides it.
#[async_trait]
pub trait StepSink: Send + Sync {
    /// A stage of a long action, with a percentage.
    fn progress(&self, step: &StepRef, attempt: u32, stage: &str, percent: Option<u8>);
    /// A line of output (already masked by the caller).
    fn log(&self, step: &StepRef, stream: LogStream, line: &str);
    /// Store a resource record durably before returning.
    ///
    /// # Errors
    /// When the record cannot be stored; the action must then not go on.
    async fn record(&self, record: &ResourceRecord) -> Result<(), ConnectorError>;
    /// Trust on first use, run-wide: the value pinned under `key` in this run (by any step,
    /// before a crash and resume too), or, when none is, pin `value` durably and return it.
    ///
    /// The default keeps nothing: every call returns `value`.
    ///
    /// # Errors
    /// When a new pin cannot be stored.
    async fn pin(&self, _key: &str, value: &str) -> Result<String, ConnectorError> {
        Ok(value.to_string())
    }
}

/// A sink that drops everything (for tests and `plan`).
#[derive(Debug, Default)]
pub struct NullSink;

#[async_trait]
impl StepSink for NullSink {
    fn progress(&self, _: &StepRef, _: u32, _: &str, _: Option<u8>) {}
    fn log(&self, _: &StepRef, _: LogStream, _: &str) {}
    async fn record(&self, _: &ResourceRecord) -> Result<(), ConnectorError> {
        Ok(())
    }
}

/// The context of one attempt of one step (one element of a fan-out).
#[derive(Clone)]
pub struct StepContext {
    /// Run id.
    pub run_id: String,
    /// Workflow name.
    pub run_name: String,
    /// Step id and fan-out index.
    pub step: StepRef,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Directory of the workflow file (relative paths in inputs are resolved against it).
    pub workflow_dir: PathBuf,
    /// The workflow's `connectors:` block for this action's connector, rendered.
    pub settings: Value,
    /// Masks secret values; apply it to every line handed to [`StepContext::log`].
    pub masker: Masker,
    cancel: CancellationToken,
    sink: Arc<dyn StepSink>,
}

impl std::fmt::Debug for StepContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepContext").field("run_id", &self.run_id).field("step", &self.step).field("attempt", &self.attempt).finish_non_exhaustive()
    }
}

impl StepContext {
    /// A context; the engine builds these.
    #[must_use]
    pub fn new(run_id: impl Into<String>, step: StepRef, cancel: CancellationToken, sink: Arc<dyn StepSink>) -> Self {
        Self {
            run_id: run_id.into(),
            run_name: String::new(),
            step,
            attempt: 1,
            workflow_dir: PathBuf::from("."),
            settings: Value::Null,
            masker: Masker::default(),
            cancel,
            sink,
        }
    }

    /// A context that records nothing, for tests.
    #[must_use]
    pub fn detached(step: &str) -> Self {
        Self::new("test-run", StepRef { step: step.into(), index: None }, CancellationToken::new(), Arc::new(NullSink))
    }

    /// The key that names what this step creates, stable across retries and resumes:
    /// run id, step id and fan-out index.
    #[must_use]
    pub fn idempotency_key(&self) -> String {
        match self.step.index {
            Some(i) => format!("{}/{}/{i}", self.run_id, self.step.step),
            None => format!("{}/{}", self.run_id, self.step.step),
        }
    }

    /// Report a stage with a percentage.
    pub fn progress(&self, stage: &str, percent: Option<u8>) {
        self.sink.progress(&self.step, self.attempt, stage, percent);
    }

    /// Log a line of the action's output; secrets are masked here.
    pub fn log(&self, stream: LogStream, line: &str) {
        self.sink.log(&self.step, stream, &self.masker.mask(line));
    }

    /// Record the intent to create a resource, durably, before sending the create.
    ///
    /// # Errors
    /// When it cannot be stored.
    pub async fn intend(&self, kind: &str, key: &str) -> Result<ResourceRecord, ConnectorError> {
        let rec = ResourceRecord {
            kind: kind.to_string(),
            key: key.to_string(),
            id: None,
            state: ResourceState::Intended,
            undo: Value::Null,
            step: self.step.clone(),
        };
        self.sink.record(&rec).await?;
        Ok(rec)
    }

    /// Confirm a created resource with its provider id and undo payload.
    ///
    /// # Errors
    /// When it cannot be stored.
    pub async fn confirm(&self, mut rec: ResourceRecord, id: impl Into<String>, undo: Value) -> Result<ResourceRecord, ConnectorError> {
        rec.id = Some(id.into());
        rec.state = ResourceState::Created;
        rec.undo = undo;
        self.sink.record(&rec).await?;
        Ok(rec)
    }

    /// Store a resource record as given (for connectors that build their own
    /// records, such as out-of-process plugins).
    ///
    /// # Errors
    /// When it cannot be stored.
    pub async fn record(&self, rec: &ResourceRecord) -> Result<(), ConnectorError> {
        self.sink.record(rec).await
    }

    /// Trust on first use, run-wide (an SSH host key the run first saw): returns the value
    /// already pinned under `key` in this run, or pins `value` and returns it. The pin is
    /// stored in the run state, so a resumed run keeps it. Compare the result with `value`:
    /// a difference means the peer changed.
    ///
    /// # Errors
    /// When a new pin cannot be stored.
    pub async fn pin(&self, key: &str, value: &str) -> Result<String, ConnectorError> {
        self.sink.pin(key, value).await
    }

    /// Whether the step is being cancelled.
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves when the step is cancelled; `select!` on it while waiting.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await;
    }

    /// Sleep, or return `cancelled` early.
    ///
    /// # Errors
    /// A `cancelled` error when the step is cancelled during the sleep.
    pub async fn sleep(&self, d: std::time::Duration) -> Result<(), ConnectorError> {
        tokio::select! {
            () = tokio::time::sleep(d) => Ok(()),
            () = self.cancel.cancelled() => Err(ConnectorError::cancelled("cancelled while waiting")),
        }
    }
}
