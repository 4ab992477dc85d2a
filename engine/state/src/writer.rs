//! The single writer thread and its group commit.
//!
//! The thread blocks for one operation, then drains whatever else is already
//! queued (up to [`MAX_BATCH`]) and applies the lot in one `BEGIN IMMEDIATE`
//! transaction. Each operation runs inside its own savepoint, so one bad
//! operation (an unknown run, a held lock) fails alone; if the commit itself
//! fails, every operation of the batch gets that error. Acknowledgements are
//! sent only after the commit returned.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use engine_core::{ResourceRecord, ResourceState};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::oneshot;

use crate::{LogRecord, RunRecord, StateError, StepRecord, Write};

/// Most operations in one transaction, bounding commit latency.
pub(crate) const MAX_BATCH: usize = 4096;

/// An operation for the writer.
// `Write` is most of the traffic; boxing it would cost an allocation per write.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Op {
    Write(Write),
    Acquire {
        run_id: String,
        owner: String,
        ttl: Duration,
    },
    Renew {
        run_id: String,
        owner: String,
        ttl: Duration,
    },
    Release {
        run_id: String,
        owner: String,
    },
    /// Nothing: acknowledged once everything queued before it is committed.
    Flush,
}

/// Where the result of an operation goes.
pub(crate) enum Ack {
    None,
    Async(oneshot::Sender<Result<(), StateError>>),
    Blocking(SyncSender<Result<(), StateError>>),
}

pub(crate) struct Msg {
    pub(crate) op: Op,
    pub(crate) ack: Ack,
}

/// Counters, shared with the store handle.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) submitted: AtomicU64,
    pub(crate) applied: AtomicU64,
    pub(crate) transactions: AtomicU64,
}

/// The writer loop; returns when every sender is gone and the queue is empty.
pub(crate) fn run(conn: &Mutex<Connection>, label: &str, rx: &Receiver<Msg>, counters: &Counters) {
    while let Ok(first) = rx.recv() {
        // Take the connection before draining: whatever queues up while it is busy joins this batch.
        let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let results = apply_batch(&mut conn, label, &batch);
        drop(conn);
        counters.transactions.fetch_add(1, Ordering::Relaxed);
        counters.applied.fetch_add(batch.len() as u64, Ordering::Relaxed);
        for (msg, result) in batch.into_iter().zip(results) {
            match msg.ack {
                Ack::None => {
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "Failed to append log lines.");
                    }
                }
                Ack::Async(tx) => drop(tx.send(result)),
                Ack::Blocking(tx) => drop(tx.send(result)),
            }
        }
    }
}

fn apply_batch(conn: &mut Connection, label: &str, batch: &[Msg]) -> Vec<Result<(), StateError>> {
    let n = batch.len();
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => return vec![Err(StateError::sqlite("begin a write transaction", label, e)); n],
    };
    let now = now_ms();
    let mut results = Vec::with_capacity(n);
    for msg in batch {
        if matches!(msg.op, Op::Flush) {
            results.push(Ok(()));
            continue;
        }
        let result = match tx.savepoint() {
            // Dropping a savepoint rolls it back.
            Ok(sp) => {
                apply(&sp, label, &msg.op, now).and_then(|()| sp.commit().map_err(|e| StateError::sqlite("release a savepoint", label, e)))
            }
            Err(e) => Err(StateError::sqlite("open a savepoint", label, e)),
        };
        results.push(result);
    }
    match tx.commit() {
        Ok(()) => results,
        Err(e) => vec![Err(StateError::sqlite(format!("commit {n} writes"), label, e)); n],
    }
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Fan-out index as stored: -1 for none.
pub(crate) fn idx_to_sql(index: Option<usize>) -> i64 {
    index.map_or(-1, |i| i64::try_from(i).unwrap_or(i64::MAX))
}

/// Fan-out index as read back.
pub(crate) fn idx_from_sql(idx: i64) -> Option<usize> {
    usize::try_from(idx).ok()
}

pub(crate) fn state_to_sql(s: ResourceState) -> &'static str {
    match s {
        ResourceState::Intended => "intended",
        ResourceState::Created => "created",
        ResourceState::Deleted => "deleted",
    }
}

pub(crate) fn state_from_sql(s: &str) -> Option<ResourceState> {
    match s {
        "intended" => Some(ResourceState::Intended),
        "created" => Some(ResourceState::Created),
        "deleted" => Some(ResourceState::Deleted),
        _ => None,
    }
}

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

/// A SQLite error, or `NotFound` when a foreign key says the run does not exist.
fn err_for_run(context: impl Into<String>, label: &str, run_id: &str, e: rusqlite::Error) -> StateError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY {
            return StateError::NotFound(run_id.to_string());
        }
    }
    StateError::sqlite(context, label, e)
}

fn apply(c: &Connection, label: &str, op: &Op, now: i64) -> Result<(), StateError> {
    match op {
        Op::Write(Write::CreateRun(r)) => create_run(c, r).map_err(|e| StateError::sqlite(format!("create run {}", r.id), label, e)),
        Op::Write(Write::UpdateRun { id, status, outputs, error }) => {
            let n = c
                .prepare_cached("UPDATE runs SET status = ?2, outputs = ?3, error = ?4, updated_at_ms = ?5 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![id, status, outputs.to_string(), error, now]))
                .map_err(|e| StateError::sqlite(format!("update run {id}"), label, e))?;
            if n == 0 {
                return Err(StateError::NotFound(id.clone()));
            }
            Ok(())
        }
        Op::Write(Write::Step { run_id, rec }) => {
            upsert_step(c, run_id, rec).map_err(|e| err_for_run(format!("record step {} of run {run_id}", rec.step), label, run_id, e))
        }
        Op::Write(Write::Resource { run_id, rec }) => upsert_resource(c, run_id, rec)
            .map_err(|e| err_for_run(format!("record resource {} {} of run {run_id}", rec.kind, rec.key), label, run_id, e)),
        Op::Write(Write::Pin { run_id, key, value }) => c
            .prepare_cached("INSERT INTO pins (run_id, key, value) VALUES (?1, ?2, ?3) ON CONFLICT (run_id, key) DO NOTHING")
            .and_then(|mut s| s.execute(params![run_id, key, value]))
            .map(drop)
            .map_err(|e| err_for_run(format!("pin {key} for run {run_id}"), label, run_id, e)),
        Op::Write(Write::Logs { run_id, logs }) => {
            append_logs(c, run_id, logs).map_err(|e| err_for_run(format!("append logs of run {run_id}"), label, run_id, e))
        }
        Op::Acquire { run_id, owner, ttl } => {
            let n = c
                .prepare_cached(
                    "UPDATE runs SET lock_owner = ?2, lock_expires_at_ms = ?3 WHERE id = ?1 AND \
                     (lock_owner IS NULL OR lock_expires_at_ms IS NULL OR lock_expires_at_ms <= ?4 OR lock_owner = ?2)",
                )
                .and_then(|mut s| s.execute(params![run_id, owner, now.saturating_add(ttl_ms(*ttl)), now]))
                .map_err(|e| StateError::sqlite(format!("lock run {run_id}"), label, e))?;
            if n == 1 {
                return Ok(());
            }
            match current_lock(c, label, run_id)? {
                None => Err(StateError::NotFound(run_id.clone())),
                Some((holder, expires)) => Err(StateError::Locked {
                    run_id: run_id.clone(),
                    owner: holder.unwrap_or_default(),
                    expires_in_ms: u64::try_from(expires.unwrap_or(now).saturating_sub(now)).unwrap_or(0),
                }),
            }
        }
        Op::Renew { run_id, owner, ttl } => {
            let n = c
                .prepare_cached("UPDATE runs SET lock_expires_at_ms = ?3 WHERE id = ?1 AND lock_owner = ?2")
                .and_then(|mut s| s.execute(params![run_id, owner, now.saturating_add(ttl_ms(*ttl))]))
                .map_err(|e| StateError::sqlite(format!("renew the lock of run {run_id}"), label, e))?;
            if n == 1 {
                return Ok(());
            }
            match current_lock(c, label, run_id)? {
                None => Err(StateError::NotFound(run_id.clone())),
                Some(_) => Err(StateError::LockLost { run_id: run_id.clone(), owner: owner.clone() }),
            }
        }
        Op::Release { run_id, owner } => {
            let n = c
                .prepare_cached("UPDATE runs SET lock_owner = NULL, lock_expires_at_ms = NULL WHERE id = ?1 AND lock_owner = ?2")
                .and_then(|mut s| s.execute(params![run_id, owner]))
                .map_err(|e| StateError::sqlite(format!("release the lock of run {run_id}"), label, e))?;
            if n == 0 && current_lock(c, label, run_id)?.is_none() {
                return Err(StateError::NotFound(run_id.clone()));
            }
            Ok(())
        }
        Op::Flush => Ok(()),
    }
}

type LockRow = (Option<String>, Option<i64>);

fn current_lock(c: &Connection, label: &str, run_id: &str) -> Result<Option<LockRow>, StateError> {
    c.prepare_cached("SELECT lock_owner, lock_expires_at_ms FROM runs WHERE id = ?1")
        .and_then(|mut s| s.query_row([run_id], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(|e| StateError::sqlite(format!("read the lock of run {run_id}"), label, e))
}

fn create_run(c: &Connection, r: &RunRecord) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO runs (id, workflow_path, workflow_name, status, inputs, outputs, error, created_at_ms, updated_at_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        r.id,
        r.workflow_path,
        r.workflow_name,
        r.status,
        r.inputs.to_string(),
        r.outputs.to_string(),
        r.error,
        r.created_at_ms,
        r.updated_at_ms
    ])?;
    Ok(())
}

fn upsert_step(c: &Connection, run_id: &str, s: &StepRecord) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO steps (run_id, step, idx, status, attempts, outputs, error, started_at_ms, finished_at_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
         ON CONFLICT (run_id, step, idx) DO UPDATE SET status = excluded.status, attempts = excluded.attempts, \
         outputs = excluded.outputs, error = excluded.error, started_at_ms = excluded.started_at_ms, \
         finished_at_ms = excluded.finished_at_ms",
    )?
    .execute(params![
        run_id,
        s.step,
        idx_to_sql(s.index),
        s.status,
        s.attempts,
        s.outputs.to_string(),
        s.error,
        s.started_at_ms,
        s.finished_at_ms
    ])?;
    Ok(())
}

fn upsert_resource(c: &Connection, run_id: &str, r: &ResourceRecord) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO resources (run_id, kind, key, id, state, undo, step, idx) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
         ON CONFLICT (run_id, kind, key) DO UPDATE SET id = excluded.id, state = excluded.state, undo = excluded.undo, \
         step = excluded.step, idx = excluded.idx",
    )?
    .execute(params![
        run_id,
        r.kind,
        r.key,
        r.id,
        state_to_sql(r.state),
        r.undo.to_string(),
        r.step.step,
        idx_to_sql(r.step.index)
    ])?;
    Ok(())
}

fn append_logs(c: &Connection, run_id: &str, logs: &[LogRecord]) -> rusqlite::Result<()> {
    let mut stmt = c.prepare_cached("INSERT INTO logs (run_id, step, idx, stream, line, ts_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
    for l in logs {
        stmt.execute(params![run_id, l.step, idx_to_sql(l.index), l.stream, l.line, l.ts_ms])?;
    }
    Ok(())
}
