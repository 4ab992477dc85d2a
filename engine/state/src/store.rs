//! The store handle: opening, writes through the writer thread, reads, run locks.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use engine_core::{ResourceRecord, StepRef};
use rusqlite::types::Type;
use rusqlite::{params, Connection, OptionalExtension, Row};
use tokio::sync::oneshot;

use crate::schema;
use crate::writer::{self, idx_from_sql, state_from_sql, Ack, Counters, Msg, Op};
use crate::{LogRecord, RunRecord, StateError, StepRecord, Write};

/// The durable run store. Cheap to clone: every clone shares one writer thread
/// and one read connection.
///
/// When the last clone is dropped, the writer commits what is still queued
/// (fire-and-forget log lines included) and the drop waits for it.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    tx: Sender<Msg>,
    read: Arc<Mutex<Connection>>,
    label: Arc<str>,
    path: Option<PathBuf>,
    counters: Arc<Counters>,
    writer: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Disconnect the queue; the writer drains it, commits and exits.
        drop(std::mem::replace(&mut self.tx, mpsc::channel().0));
        if let Some(h) = self.writer.take() {
            if h.join().is_err() {
                tracing::error!(path = %self.label, "State writer thread panicked.");
            }
        }
    }
}

/// Writer activity since the store was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Operations handed to the writer.
    pub submitted: u64,
    /// Operations applied (committed or failed).
    pub applied: u64,
    /// Transactions run; `applied / transactions` is the mean group-commit size.
    pub transactions: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.inner.label).finish_non_exhaustive()
    }
}

impl Store {
    /// Open (or create) the state file at `path`.
    ///
    /// Missing parent directories are created with mode 0700 and a new file with
    /// mode 0600; existing files keep their mode. The file is put in WAL mode with
    /// `synchronous=NORMAL`, a 5 s busy timeout and foreign keys on.
    ///
    /// # Errors
    /// - [`StateError::Corrupt`] when the file is not a SQLite database, belongs to
    ///   another program, or is damaged;
    /// - [`StateError::TooNew`] when a newer engine wrote it;
    /// - [`StateError::Io`] / [`StateError::Sqlite`] when it cannot be created or opened.
    ///
    /// # Guarantees
    /// A file rejected as corrupt or too new is not written to.
    pub fn open(path: &Path) -> Result<Store, StateError> {
        let label = path.display().to_string();
        schema::prepare_file(path)?;
        let mut conn = schema::connect(path, &label)?;
        schema::init_writer(&mut conn, &label, true)?;
        let reader = schema::connect(path, &label)?;
        schema::init_reader(&reader, &label)?;
        Self::start(Arc::new(Mutex::new(conn)), Arc::new(Mutex::new(reader)), label, Some(path.to_path_buf()))
    }

    /// A private in-memory store, for tests. Nothing survives the last clone.
    ///
    /// # Errors
    /// When SQLite cannot open an in-memory database or the writer thread cannot start.
    pub fn memory() -> Result<Store, StateError> {
        let label = ":memory:".to_string();
        let mut conn = Connection::open_in_memory().map_err(|e| StateError::sqlite("open the database", &label, e))?;
        schema::init_writer(&mut conn, &label, false)?;
        // One connection: an in-memory database is private to it. Reads share it with the writer.
        let conn = Arc::new(Mutex::new(conn));
        Self::start(conn.clone(), conn, label, None)
    }

    fn start(
        write: Arc<Mutex<Connection>>,
        read: Arc<Mutex<Connection>>,
        label: String,
        path: Option<PathBuf>,
    ) -> Result<Store, StateError> {
        let (tx, rx) = mpsc::channel::<Msg>();
        let counters = Arc::new(Counters::default());
        let label: Arc<str> = label.into();
        let writer = {
            let (counters, thread_label) = (counters.clone(), label.clone());
            std::thread::Builder::new()
                .name("engine-state-writer".into())
                .spawn(move || writer::run(&write, &thread_label, &rx, &counters))
                .map_err(|e| StateError::io("start the writer thread for", PathBuf::from(&*label), e))?
        };
        Ok(Store { inner: Arc::new(Inner { tx, read, label, path, counters, writer: Some(writer) }) })
    }

    /// Hold the write connection, stalling the writer (tests of group commit).
    #[cfg(test)]
    pub(crate) fn hold_writer(&self) -> std::sync::MutexGuard<'_, Connection> {
        // In memory the read connection is the write connection.
        assert!(self.inner.path.is_none(), "hold_writer needs an in-memory store");
        self.inner.read.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state file, `None` for an in-memory store.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// Writer activity so far.
    pub fn stats(&self) -> StoreStats {
        let c = &self.inner.counters;
        StoreStats {
            submitted: c.submitted.load(Ordering::Relaxed),
            applied: c.applied.load(Ordering::Relaxed),
            transactions: c.transactions.load(Ordering::Relaxed),
        }
    }

    fn send(&self, op: Op, ack: Ack) -> Result<(), StateError> {
        self.inner.counters.submitted.fetch_add(1, Ordering::Relaxed);
        self.inner.tx.send(Msg { op, ack }).map_err(|_| StateError::WriterStopped)
    }

    async fn submit(&self, op: Op) -> Result<(), StateError> {
        let (tx, rx) = oneshot::channel();
        self.send(op, Ack::Async(tx))?;
        rx.await.map_err(|_| StateError::WriterStopped)?
    }

    fn submit_blocking(&self, op: Op) -> Result<(), StateError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(op, Ack::Blocking(tx))?;
        rx.recv().map_err(|_| StateError::WriterStopped)?
    }

    /// Apply one write; returns once the transaction holding it has committed.
    ///
    /// # Errors
    /// [`StateError::NotFound`] when the run does not exist (for everything but
    /// `CreateRun`), [`StateError::Sqlite`] when SQLite refuses it (e.g. a duplicate
    /// run id) or the commit fails.
    ///
    /// # Guarantees
    /// Writes from one task are applied in the order they were issued. Dropping the
    /// future after its first poll does not withdraw the write.
    pub async fn write(&self, w: Write) -> Result<(), StateError> {
        self.submit(Op::Write(w)).await
    }

    /// [`Store::write`] for code that is not async; blocks the thread until the commit.
    ///
    /// # Errors
    /// As [`Store::write`].
    pub fn write_blocking(&self, w: Write) -> Result<(), StateError> {
        self.submit_blocking(Op::Write(w))
    }

    /// Queue log lines without waiting. They are committed in order with the other
    /// writes; a failure is logged through `tracing`, never returned.
    pub fn log_nowait(&self, run_id: &str, logs: Vec<LogRecord>) {
        if logs.is_empty() {
            return;
        }
        if let Err(e) = self.send(Op::Write(Write::Logs { run_id: run_id.to_string(), logs }), Ack::None) {
            tracing::warn!(run_id, error = %e, "Failed to queue log lines.");
        }
    }

    /// Wait until everything queued before this call (log lines included) is committed.
    ///
    /// # Errors
    /// [`StateError::WriterStopped`] when the writer is gone.
    pub async fn flush(&self) -> Result<(), StateError> {
        self.submit(Op::Flush).await
    }

    /// Take the run's lock for `owner` until now + `ttl`: atomically, if it is free,
    /// expired, or already held by `owner` (then it is extended).
    ///
    /// # Errors
    /// [`StateError::Locked`] naming the holder, [`StateError::NotFound`] for an unknown run.
    pub async fn acquire_lock(&self, run_id: &str, owner: &str, ttl: Duration) -> Result<(), StateError> {
        self.submit(Op::Acquire { run_id: run_id.into(), owner: owner.into(), ttl }).await
    }

    /// Extend a lock `owner` holds to now + `ttl` (also when it expired but nobody took it).
    ///
    /// # Errors
    /// [`StateError::LockLost`] when `owner` no longer holds it, [`StateError::NotFound`].
    pub async fn renew_lock(&self, run_id: &str, owner: &str, ttl: Duration) -> Result<(), StateError> {
        self.submit(Op::Renew { run_id: run_id.into(), owner: owner.into(), ttl }).await
    }

    /// Release the lock if `owner` holds it; a no-op otherwise.
    ///
    /// # Errors
    /// [`StateError::NotFound`] for an unknown run.
    pub async fn release_lock(&self, run_id: &str, owner: &str) -> Result<(), StateError> {
        self.submit(Op::Release { run_id: run_id.into(), owner: owner.into() }).await
    }

    /// [`Store::release_lock`] for code that is not async (shutdown paths).
    ///
    /// # Errors
    /// As [`Store::release_lock`].
    pub fn release_lock_blocking(&self, run_id: &str, owner: &str) -> Result<(), StateError> {
        self.submit_blocking(Op::Release { run_id: run_id.into(), owner: owner.into() })
    }

    fn read<T>(&self, context: impl FnOnce() -> String, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StateError> {
        let conn = self.inner.read.lock().unwrap_or_else(PoisonError::into_inner);
        f(&conn).map_err(|e| StateError::sqlite(context(), &self.inner.label, e))
    }

    /// The run with this exact id.
    ///
    /// # Errors
    /// When the read fails.
    pub fn get_run(&self, id: &str) -> Result<Option<RunRecord>, StateError> {
        self.read(
            || format!("read run {id}"),
            |c| c.prepare_cached(&format!("SELECT {RUN_COLS} FROM runs WHERE id = ?1"))?.query_row([id], run_row).optional(),
        )
    }

    /// The newest `limit` runs, newest first.
    ///
    /// # Errors
    /// When the read fails.
    pub fn list_runs(&self, limit: usize) -> Result<Vec<RunRecord>, StateError> {
        self.read(
            || "list runs".into(),
            |c| {
                c.prepare_cached(&format!("SELECT {RUN_COLS} FROM runs ORDER BY created_at_ms DESC, rowid DESC LIMIT ?1"))?
                    .query_map([to_limit(limit)], run_row)?
                    .collect()
            },
        )
    }

    /// The run whose id is `prefix`, or the only run whose id starts with it.
    /// An empty prefix matches nothing.
    ///
    /// # Errors
    /// [`StateError::Ambiguous`] when several runs match (and none exactly).
    pub fn find_run(&self, prefix: &str) -> Result<Option<RunRecord>, StateError> {
        if prefix.is_empty() {
            return Ok(None);
        }
        if let Some(r) = self.get_run(prefix)? {
            return Ok(Some(r));
        }
        let ids: Vec<String> = self.read(
            || format!("find runs starting with {prefix}"),
            |c| {
                c.prepare_cached(
                    "SELECT id FROM runs WHERE substr(id, 1, length(?1)) = ?1 ORDER BY created_at_ms DESC, rowid DESC LIMIT 11",
                )?
                .query_map([prefix], |r| r.get(0))?
                .collect()
            },
        )?;
        match ids.as_slice() {
            [] => Ok(None),
            [one] => self.get_run(one),
            _ => Err(StateError::Ambiguous { prefix: prefix.to_string(), matches: ids.into_iter().take(10).collect() }),
        }
    }

    /// The run's step states, in the order they were first recorded.
    ///
    /// # Errors
    /// When the read fails.
    pub fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>, StateError> {
        self.read(
            || format!("read steps of run {run_id}"),
            |c| {
                c.prepare_cached(
                    "SELECT step, idx, status, attempts, outputs, error, started_at_ms, finished_at_ms \
                     FROM steps WHERE run_id = ?1 ORDER BY seq",
                )?
                .query_map([run_id], |r| {
                    Ok(StepRecord {
                        step: r.get(0)?,
                        index: idx_from_sql(r.get(1)?),
                        status: r.get(2)?,
                        attempts: r.get(3)?,
                        outputs: json_col(r, 4)?,
                        error: r.get(5)?,
                        started_at_ms: r.get(6)?,
                        finished_at_ms: r.get(7)?,
                    })
                })?
                .collect()
            },
        )
    }

    /// The run's resources with their creation sequence number, in creation order
    /// (undo walks it backwards). Upserts keep the first number.
    ///
    /// # Errors
    /// When the read fails.
    pub fn resources(&self, run_id: &str) -> Result<Vec<(i64, ResourceRecord)>, StateError> {
        self.read(
            || format!("read resources of run {run_id}"),
            |c| {
                c.prepare_cached("SELECT seq, kind, key, id, state, undo, step, idx FROM resources WHERE run_id = ?1 ORDER BY seq")?
                    .query_map([run_id], |r| {
                        let state: String = r.get(4)?;
                        let state = state_from_sql(&state).ok_or_else(|| {
                            rusqlite::Error::FromSqlConversionFailure(4, Type::Text, format!("unknown resource state {state:?}").into())
                        })?;
                        let rec = ResourceRecord {
                            kind: r.get(1)?,
                            key: r.get(2)?,
                            id: r.get(3)?,
                            state,
                            undo: json_col(r, 5)?,
                            step: StepRef { step: r.get(6)?, index: idx_from_sql(r.get(7)?) },
                        };
                        Ok((r.get(0)?, rec))
                    })?
                    .collect()
            },
        )
    }

    /// A run's pins (`key`, `value`), by key.
    ///
    /// # Errors
    /// When the read fails.
    pub fn pins(&self, run_id: &str) -> Result<Vec<(String, String)>, StateError> {
        self.read(
            || format!("read pins of run {run_id}"),
            |c| c.prepare_cached("SELECT key, value FROM pins WHERE run_id = ?1 ORDER BY key")?.query_map([run_id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect(),
        )
    }

    /// Up to `limit` log lines of the run with `seq > after_seq`, oldest first.
    /// With `step`, only that step's lines, and those of its children
    /// (`step/child`) when it is a sub-workflow step. Page with the last `seq` seen.
    ///
    /// # Errors
    /// When the read fails.
    pub fn logs(&self, run_id: &str, step: Option<&str>, after_seq: i64, limit: usize) -> Result<Vec<LogRecord>, StateError> {
        self.read(
            || format!("read logs of run {run_id}"),
            |c| {
                c.prepare_cached(
                    "SELECT seq, step, idx, stream, line, ts_ms FROM logs \
                     WHERE run_id = ?1 AND seq > ?2 \
                     AND (?3 IS NULL OR step = ?3 OR substr(step, 1, length(?3) + 1) = ?3 || '/') \
                     ORDER BY seq LIMIT ?4",
                )?
                .query_map(params![run_id, after_seq, step, to_limit(limit)], |r| {
                    Ok(LogRecord {
                        seq: r.get(0)?,
                        step: r.get(1)?,
                        index: idx_from_sql(r.get(2)?),
                        stream: r.get(3)?,
                        line: r.get(4)?,
                        ts_ms: r.get(5)?,
                    })
                })?
                .collect()
            },
        )
    }
}

const RUN_COLS: &str = "id, workflow_path, workflow_name, status, inputs, outputs, error, created_at_ms, updated_at_ms, \
                        lock_owner, lock_expires_at_ms";

fn run_row(r: &Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        id: r.get(0)?,
        workflow_path: r.get(1)?,
        workflow_name: r.get(2)?,
        status: r.get(3)?,
        inputs: json_col(r, 4)?,
        outputs: json_col(r, 5)?,
        error: r.get(6)?,
        created_at_ms: r.get(7)?,
        updated_at_ms: r.get(8)?,
        lock_owner: r.get(9)?,
        lock_expires_at_ms: r.get(10)?,
    })
}

fn json_col(r: &Row<'_>, i: usize) -> rusqlite::Result<serde_json::Value> {
    let s: String = r.get(i)?;
    serde_json::from_str(&s).map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, Type::Text, Box::new(e)))
}

fn to_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}
