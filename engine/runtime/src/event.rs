//! The events a run emits, serialized one per line by `--output json`.

use engine_core::ErrorKind;
use serde::Serialize;
use serde_json::Value;

/// Where a step is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Waiting for its dependencies.
    Pending,
    /// An attempt is in flight.
    Running,
    /// Done.
    Succeeded,
    /// Failed after its retries (and fallbacks).
    Failed,
    /// Not run: its condition was false or a dependency did not succeed.
    Skipped,
    /// Stopped by a cancellation.
    Cancelled,
}

impl StepStatus {
    /// Whether the step is over.
    #[must_use]
    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Pending | Self::Running)
    }
    /// The lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Cancelled => "cancelled",
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Every step succeeded or was skipped (or failed with `continue_on_error`).
    Succeeded,
    /// A step failed.
    Failed,
    /// Interrupted.
    Cancelled,
}

impl RunStatus {
    /// The lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// One thing that happened in a run. Every event carries the run id; step events
/// carry `step` (`parent/child` inside a sub-workflow), `index` in a fan-out,
/// `status` and `attempt`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The run began.
    RunStarted {
        /// Run id.
        run_id: String,
        /// Workflow name.
        workflow: String,
        /// Path of the workflow file.
        file: String,
    },
    /// A step (or one element of a fan-out) changed status.
    Step {
        /// Run id.
        run_id: String,
        /// Step id.
        step: String,
        /// Index in a fan-out.
        #[serde(skip_serializing_if = "Option::is_none")]
        index: Option<usize>,
        /// New status.
        status: StepStatus,
        /// Attempt number (0 before the first).
        attempt: u32,
        /// Why it was skipped or cancelled.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// The error, when failed.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// The error's kind, when failed.
        #[serde(skip_serializing_if = "Option::is_none")]
        kind: Option<ErrorKind>,
        /// Milliseconds the step took, when it ended.
        #[serde(skip_serializing_if = "Option::is_none")]
        duration_ms: Option<u64>,
    },
    /// An attempt failed and another will follow.
    StepRetry {
        /// Run id.
        run_id: String,
        /// Step id.
        step: String,
        /// Index in a fan-out.
        #[serde(skip_serializing_if = "Option::is_none")]
        index: Option<usize>,
        /// The attempt that failed.
        attempt: u32,
        /// Wait before the next one.
        delay_ms: u64,
        /// What failed.
        error: String,
        /// Its kind.
        kind: ErrorKind,
    },
    /// A step moved to a fallback alternative.
    StepFallback {
        /// Run id.
        run_id: String,
        /// Step id.
        step: String,
        /// Index in a fan-out.
        #[serde(skip_serializing_if = "Option::is_none")]
        index: Option<usize>,
        /// Position of the alternative in `fallback`.
        fallback_index: usize,
        /// Why.
        error: String,
    },
    /// A long action reported a stage.
    StepProgress {
        /// Run id.
        run_id: String,
        /// Step id.
        step: String,
        /// Index in a fan-out.
        #[serde(skip_serializing_if = "Option::is_none")]
        index: Option<usize>,
        /// Attempt.
        attempt: u32,
        /// Stage name.
        stage: String,
        /// Percentage.
        #[serde(skip_serializing_if = "Option::is_none")]
        percent: Option<u8>,
    },
    /// A line a step printed (secrets masked).
    StepLog {
        /// Run id.
        run_id: String,
        /// Step id.
        step: String,
        /// Index in a fan-out.
        #[serde(skip_serializing_if = "Option::is_none")]
        index: Option<usize>,
        /// `stdout` or `stderr`.
        stream: &'static str,
        /// The line.
        line: String,
    },
    /// A resource is being undone (`destroy`, `on_failure: cleanup`).
    ResourceUndo {
        /// Run id.
        run_id: String,
        /// The step that created it.
        step: String,
        /// Index in a fan-out.
        #[serde(skip_serializing_if = "Option::is_none")]
        index: Option<usize>,
        /// Resource kind.
        kind: String,
        /// Provider id (or idempotency key when the create never confirmed).
        id: String,
        /// `deleting`, `deleted`, `kept` or `failed`.
        status: &'static str,
        /// Why it failed or was kept.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The run ended; always the last event.
    RunFinished {
        /// Run id.
        run_id: String,
        /// How it ended.
        status: RunStatus,
        /// Workflow outputs (secrets masked).
        outputs: Value,
        /// Why it failed.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

/// Receives events as they happen.
pub trait EventSink: Send + Sync {
    /// One event.
    fn emit(&self, event: Event);
}

impl<F: Fn(Event) + Send + Sync> EventSink for F {
    fn emit(&self, event: Event) {
        self(event);
    }
}
