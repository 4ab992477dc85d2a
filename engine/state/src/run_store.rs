//! The run store as a trait: what the engine needs of any backend (the embedded SQLite
//! [`Store`] is the default; a shared one, PostgreSQL say, implements the same trait).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use engine_core::ResourceRecord;

use crate::{LogRecord, RunRecord, StateError, StepRecord, Store, Write};

/// Durable storage of runs.
///
/// # Guarantees
/// `write` returns once the change is committed; the engine acts only after that.
/// Locks are atomic: two engines never both hold a run.
#[async_trait]
pub trait RunStore: Send + Sync {
    /// Commit one change.
    async fn write(&self, w: Write) -> Result<(), StateError>;
    /// Queue log lines (committed in order, not awaited).
    fn log_nowait(&self, run_id: &str, logs: Vec<LogRecord>);
    /// Take a run's lock for `ttl` if it is free, expired, or already `owner`'s.
    async fn acquire_lock(&self, run_id: &str, owner: &str, ttl: Duration) -> Result<(), StateError>;
    /// Extend a held lock.
    async fn renew_lock(&self, run_id: &str, owner: &str, ttl: Duration) -> Result<(), StateError>;
    /// Give a lock back (nothing happens if `owner` does not hold it).
    async fn release_lock(&self, run_id: &str, owner: &str) -> Result<(), StateError>;
    /// One run.
    fn get_run(&self, id: &str) -> Result<Option<RunRecord>, StateError>;
    /// Runs, newest first.
    fn list_runs(&self, limit: usize) -> Result<Vec<RunRecord>, StateError>;
    /// The run whose id starts with `prefix`, if exactly one does.
    fn find_run(&self, prefix: &str) -> Result<Option<RunRecord>, StateError>;
    /// A run's step records, in insertion order.
    fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>, StateError>;
    /// A run's resources, in creation order.
    fn resources(&self, run_id: &str) -> Result<Vec<(i64, ResourceRecord)>, StateError>;
    /// A run's pins (values trusted on first use), by key.
    fn pins(&self, run_id: &str) -> Result<Vec<(String, String)>, StateError>;
    /// A run's log lines after `after_seq`.
    fn logs(&self, run_id: &str, step: Option<&str>, after_seq: i64, limit: usize) -> Result<Vec<LogRecord>, StateError>;
}

#[async_trait]
impl RunStore for Store {
    async fn write(&self, w: Write) -> Result<(), StateError> {
        Store::write(self, w).await
    }
    fn log_nowait(&self, run_id: &str, logs: Vec<LogRecord>) {
        Store::log_nowait(self, run_id, logs);
    }
    async fn acquire_lock(&self, run_id: &str, owner: &str, ttl: Duration) -> Result<(), StateError> {
        Store::acquire_lock(self, run_id, owner, ttl).await
    }
    async fn renew_lock(&self, run_id: &str, owner: &str, ttl: Duration) -> Result<(), StateError> {
        Store::renew_lock(self, run_id, owner, ttl).await
    }
    async fn release_lock(&self, run_id: &str, owner: &str) -> Result<(), StateError> {
        Store::release_lock(self, run_id, owner).await
    }
    fn get_run(&self, id: &str) -> Result<Option<RunRecord>, StateError> {
        Store::get_run(self, id)
    }
    fn list_runs(&self, limit: usize) -> Result<Vec<RunRecord>, StateError> {
        Store::list_runs(self, limit)
    }
    fn find_run(&self, prefix: &str) -> Result<Option<RunRecord>, StateError> {
        Store::find_run(self, prefix)
    }
    fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>, StateError> {
        Store::steps(self, run_id)
    }
    fn resources(&self, run_id: &str) -> Result<Vec<(i64, ResourceRecord)>, StateError> {
        Store::resources(self, run_id)
    }
    fn pins(&self, run_id: &str) -> Result<Vec<(String, String)>, StateError> {
        Store::pins(self, run_id)
    }
    fn logs(&self, run_id: &str, step: Option<&str>, after_seq: i64, limit: usize) -> Result<Vec<LogRecord>, StateError> {
        Store::logs(self, run_id, step, after_seq, limit)
    }
}

/// A shared handle on any store.
pub type SharedStore = Arc<dyn RunStore>;
