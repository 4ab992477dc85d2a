//! Executes a checked workflow: the DAG of steps on tokio, with `concurrency`,
//! `if` and skip propagation, `for_each` fan-out, retries with backoff, per-attempt
//! timeouts, `continue_on_error`, `fallback`, sub-workflows and cancellation.
//!
//! Everything the run does is reported as [`Event`]s; time is tokio's clock, so
//! tests run with a paused (fake) clock.

mod event;
mod executor;
mod undo;

pub use event::{Event, EventSink, RunStatus, StepStatus};
pub use undo::{destroy, DestroyResult};
pub use executor::{instance_key, run, Journal, Record, RunOptions, RunResult, StepResult};
