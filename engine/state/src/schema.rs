//! Opening a state file: permissions, sanity checks, pragmas and the schema.

use std::fs::{DirBuilder, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::StateError;

/// The schema version this build writes and understands (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 2;

/// How long a connection waits for another process's lock before failing.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Version 1. `idx` is -1 for a step that is not part of a fan-out: NULLs are
/// distinct in a SQLite UNIQUE key, so NULL would let an upsert insert twice.
const SCHEMA_V1: &str = "
CREATE TABLE runs (
    id                 TEXT PRIMARY KEY NOT NULL,
    workflow_path      TEXT NOT NULL,
    workflow_name      TEXT NOT NULL,
    status             TEXT NOT NULL,
    inputs             TEXT NOT NULL,
    outputs            TEXT NOT NULL,
    error              TEXT,
    created_at_ms      INTEGER NOT NULL,
    updated_at_ms      INTEGER NOT NULL,
    lock_owner         TEXT,
    lock_expires_at_ms INTEGER
);
CREATE INDEX runs_created ON runs (created_at_ms);

CREATE TABLE steps (
    seq            INTEGER PRIMARY KEY,
    run_id         TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step           TEXT NOT NULL,
    idx            INTEGER NOT NULL,
    status         TEXT NOT NULL,
    attempts       INTEGER NOT NULL,
    outputs        TEXT NOT NULL,
    error          TEXT,
    started_at_ms  INTEGER,
    finished_at_ms INTEGER,
    UNIQUE (run_id, step, idx)
);

CREATE TABLE resources (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    kind   TEXT NOT NULL,
    key    TEXT NOT NULL,
    id     TEXT,
    state  TEXT NOT NULL,
    undo   TEXT NOT NULL,
    step   TEXT NOT NULL,
    idx    INTEGER NOT NULL,
    UNIQUE (run_id, kind, key)
);

CREATE TABLE logs (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step   TEXT NOT NULL,
    idx    INTEGER NOT NULL,
    stream TEXT NOT NULL,
    line   TEXT NOT NULL,
    ts_ms  INTEGER NOT NULL
);
CREATE INDEX logs_run ON logs (run_id, seq);
";

/// Version 2 adds the run's pins: values trusted on first use (an SSH host key), first
/// writer wins.
const SCHEMA_V2: &str = "
CREATE TABLE pins (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);
";

/// Create the parent directories (0700) and, when missing, the file itself (0600),
/// then check that an existing non-empty file starts like a SQLite database.
pub(crate) fn prepare_file(path: &Path) -> Result<(), StateError> {
    let label = path.display().to_string();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| StateError::io("create state directory", dir, e))?;
    }
    match OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(StateError::io("create state file", path, e)),
    }
    let mut header = Vec::with_capacity(100);
    let file = std::fs::File::open(path).map_err(|e| StateError::io("open state file", path, e))?;
    file.take(100).read_to_end(&mut header).map_err(|e| StateError::io("read state file", path, e))?;
    if header.is_empty() {
        return Ok(());
    }
    if header.len() < 100 || !header.starts_with(SQLITE_MAGIC) {
        return Err(StateError::Corrupt { path: label, detail: "it is not a sqlite database: its header is wrong".into() });
    }
    Ok(())
}

/// Open a connection to an existing file without creating it.
pub(crate) fn connect(path: &Path, label: &str) -> Result<Connection, StateError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| StateError::sqlite("open the database", label, e))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| StateError::sqlite("set busy_timeout", label, e))?;
    // Until the file has passed the checks, closing must not checkpoint a WAL into it.
    set_checkpoint_on_close(&conn, label, false)?;
    Ok(conn)
}

fn set_checkpoint_on_close(conn: &Connection, label: &str, on: bool) -> Result<(), StateError> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, !on)
        .map(drop)
        .map_err(|e| StateError::sqlite("configure checkpoint on close", label, e))
}

/// Check the file, set the connection's pragmas and create or migrate the schema.
///
/// Nothing is written before the version check has passed: a newer or foreign
/// file is left byte-for-byte as it was.
pub(crate) fn init_writer(conn: &mut Connection, label: &str, on_disk: bool) -> Result<(), StateError> {
    // Reading sqlite_master parses page 1: a damaged or foreign file fails here.
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(|e| StateError::sqlite("read the schema", label, e))?;
    let version = user_version(conn, label)?;
    check_version(version, tables, label)?;
    set_checkpoint_on_close(conn, label, true)?;

    if on_disk {
        let mode = switch_to_wal(conn, label)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StateError::Corrupt { path: label.to_string(), detail: format!("cannot use WAL journal mode (got {mode})") });
        }
    }
    set_session_pragmas(conn, label)?;

    if version < SCHEMA_VERSION {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| StateError::sqlite("begin schema creation", label, e))?;
        // Another process may have created it meanwhile.
        let tables: i64 = tx
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(|e| StateError::sqlite("read the schema", label, e))?;
        let version = user_version(&tx, label)?;
        check_version(version, tables, label)?;
        if version == 0 {
            tx.execute_batch(SCHEMA_V1).map_err(|e| StateError::sqlite("create the schema", label, e))?;
        }
        // Later versions migrate here, one step at a time.
        if version < 2 {
            tx.execute_batch(SCHEMA_V2).map_err(|e| StateError::sqlite("migrate the schema to version 2", label, e))?;
        }
        if version < SCHEMA_VERSION {
            tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(|e| StateError::sqlite("set the schema version", label, e))?;
        }
        tx.commit().map_err(|e| StateError::sqlite("commit the schema", label, e))?;
    }
    Ok(())
}

/// Switch the file to WAL. Another engine opening the same new file at the same moment may
/// hold the lock the switch needs (SQLite does not wait for it through the busy handler):
/// retry until it is done, by us or by the other engine, within [`BUSY_TIMEOUT`].
fn switch_to_wal(conn: &Connection, label: &str) -> Result<String, StateError> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0)) {
            Ok(mode) => return Ok(mode),
            Err(rusqlite::Error::SqliteFailure(f, _)) if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(StateError::sqlite("switch to WAL journal mode", label, e)),
        }
    }
}

/// A read connection: same pragmas, and it may never write.
pub(crate) fn init_reader(conn: &Connection, label: &str) -> Result<(), StateError> {
    set_checkpoint_on_close(conn, label, true)?;
    set_session_pragmas(conn, label)?;
    conn.pragma_update(None, "query_only", true).map_err(|e| StateError::sqlite("set query_only", label, e))
}

fn set_session_pragmas(conn: &Connection, label: &str) -> Result<(), StateError> {
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(|e| StateError::sqlite("set synchronous=NORMAL", label, e))?;
    conn.pragma_update(None, "foreign_keys", true).map_err(|e| StateError::sqlite("enable foreign keys", label, e))
}

fn user_version(conn: &Connection, label: &str) -> Result<i64, StateError> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(|e| StateError::sqlite("read the schema version", label, e))
}

fn check_version(version: i64, tables: i64, label: &str) -> Result<(), StateError> {
    if version > SCHEMA_VERSION {
        return Err(StateError::TooNew { path: label.to_string(), found: version, supported: SCHEMA_VERSION });
    }
    if version == 0 && tables > 0 {
        return Err(StateError::Corrupt {
            path: label.to_string(),
            detail: "it is a sqlite database with tables but no engine schema version: another program's file".into(),
        });
    }
    if version < 0 {
        return Err(StateError::Corrupt { path: label.to_string(), detail: format!("invalid schema version {version}") });
    }
    Ok(())
}
