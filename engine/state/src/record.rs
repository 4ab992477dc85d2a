//! What the store holds: runs, step states, log lines, and the write operations.

use engine_core::ResourceRecord;
use serde::{Deserialize, Serialize};

/// One run of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Run id (unique; `find_run` accepts a unique prefix).
    pub id: String,
    /// Path of the workflow file, as the run saw it.
    pub workflow_path: String,
    /// The workflow's `name`.
    pub workflow_name: String,
    /// `running`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    /// Inputs, secrets already masked by the caller.
    pub inputs: serde_json::Value,
    /// Outputs, once the run finished.
    pub outputs: serde_json::Value,
    /// Why the run failed.
    pub error: Option<String>,
    /// When the run was created, milliseconds since the epoch.
    pub created_at_ms: i64,
    /// Last change of status, outputs or error, milliseconds since the epoch.
    pub updated_at_ms: i64,
    /// Who holds the run's lock (ignored on create; set through the lock calls).
    pub lock_owner: Option<String>,
    /// When that lock expires, milliseconds since the epoch.
    pub lock_expires_at_ms: Option<i64>,
}

/// State of one step (or one fan-out instance of it) in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Step id, `parent/child` inside a sub-workflow.
    pub step: String,
    /// Index in a fan-out; `None` for a plain step.
    pub index: Option<usize>,
    /// `pending`, `running`, `succeeded`, `failed`, `skipped` or `cancelled`.
    pub status: String,
    /// Attempts so far.
    pub attempts: u32,
    /// Outputs of a succeeded step (secrets masked by the caller).
    pub outputs: serde_json::Value,
    /// Why it failed or was skipped.
    pub error: Option<String>,
    /// When it (last) started, milliseconds since the epoch.
    pub started_at_ms: Option<i64>,
    /// When it finished, milliseconds since the epoch.
    pub finished_at_ms: Option<i64>,
}

/// One line of a step's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Position in the store, increasing; assigned by the store (ignored on write).
    pub seq: i64,
    /// Step id, `parent/child` inside a sub-workflow.
    pub step: String,
    /// Index in a fan-out.
    pub index: Option<usize>,
    /// `stdout`, `stderr`, or another stream name the connector picks.
    pub stream: String,
    /// The line, without its newline (secrets masked by the caller).
    pub line: String,
    /// When it was read, milliseconds since the epoch.
    pub ts_ms: i64,
}

/// One change to the store, applied by the writer thread.
#[derive(Debug, Clone)]
pub enum Write {
    /// Record a new run. Fails if the id exists. `lock_owner`/`lock_expires_at_ms` are ignored.
    CreateRun(RunRecord),
    /// Set a run's status, outputs and error; `updated_at_ms` becomes now.
    UpdateRun {
        /// Run id.
        id: String,
        /// New status.
        status: String,
        /// Outputs (may be `null`).
        outputs: serde_json::Value,
        /// Error, if it failed.
        error: Option<String>,
    },
    /// Insert or replace a step's state, keyed by (run, step, index).
    Step {
        /// Run id.
        run_id: String,
        /// The step state.
        rec: StepRecord,
    },
    /// Insert or replace a resource, keyed by (run, kind, key); its creation order is kept.
    Resource {
        /// Run id.
        run_id: String,
        /// The resource.
        rec: ResourceRecord,
    },
    /// Pin `value` under `key` for the run unless a value is pinned there already (the
    /// first writer wins; read the pin back with `pins`).
    Pin {
        /// Run id.
        run_id: String,
        /// What is pinned (`ssh-host-key:HOST:PORT`).
        key: String,
        /// The value first seen.
        value: String,
    },
    /// Append log lines (`seq` is assigned by the store).
    Logs {
        /// Run id.
        run_id: String,
        /// The lines, in order.
        logs: Vec<LogRecord>,
    },
}
