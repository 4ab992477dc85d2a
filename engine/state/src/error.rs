//! The one error type of the run store.

use std::path::PathBuf;
use std::sync::Arc;

/// What went wrong in the run store.
///
/// Cheap to clone (sources sit behind `Arc`), so one failed group commit can
/// answer every write that was part of it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// SQLite refused an operation.
    #[error("failed to {context} in state file {path}: {source}")]
    Sqlite {
        /// What the store was doing, e.g. `upsert step build of run r1`.
        context: String,
        /// The state file (`:memory:` for an in-memory store).
        path: String,
        /// The SQLite error.
        #[source]
        source: Arc<rusqlite::Error>,
    },
    /// A filesystem operation failed.
    #[error("failed to {context} {path}: {source}")]
    Io {
        /// What the store was doing, e.g. `create state directory`.
        context: String,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The file was written by a newer engine; it is left untouched.
    #[error(
        "state file {path} has schema version {found}, newer than the {supported} this engine supports: \
         upgrade the engine to use it (the file was not modified)"
    )]
    TooNew {
        /// The state file.
        path: String,
        /// Its schema version.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// The file is not an engine state database, or it is damaged; it is left untouched.
    #[error(
        "state file {path} is not a usable engine state database ({detail}); \
         it was not modified: move it aside or point ENGINE_STATE / --state elsewhere"
    )]
    Corrupt {
        /// The state file.
        path: String,
        /// What is wrong with it.
        detail: String,
    },
    /// Another owner holds the run's lock.
    #[error("run {run_id} is held by {owner} (lock expires in {}s): it is already being run; wait for it or stop that engine", expires_in_ms.div_ceil(1000))]
    Locked {
        /// The run.
        run_id: String,
        /// Who holds the lock.
        owner: String,
        /// Milliseconds until the lock expires unless renewed.
        expires_in_ms: u64,
    },
    /// A lock being renewed is no longer held by its owner (it expired and may have been taken).
    #[error("lock on run {run_id} is no longer held by {owner}: it expired or was released")]
    LockLost {
        /// The run.
        run_id: String,
        /// The owner that tried to renew.
        owner: String,
    },
    /// No run with this id.
    #[error("no run {0} in the state file")]
    NotFound(String),
    /// A run id prefix matches several runs.
    #[error("run id prefix `{prefix}` is ambiguous: it matches {}", matches.join(", "))]
    Ambiguous {
        /// The prefix asked for.
        prefix: String,
        /// Some of the matching run ids (at most ten).
        matches: Vec<String>,
    },
    /// The writer thread is gone (it panicked, or the store is shutting down).
    #[error("the state writer thread has stopped; the write was not recorded")]
    WriterStopped,
}

impl StateError {
    /// Wrap a SQLite error with what was being done; corruption becomes [`StateError::Corrupt`].
    pub(crate) fn sqlite(context: impl Into<String>, path: &str, e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
        match e.sqlite_error_code() {
            Some(DatabaseCorrupt | NotADatabase) => Self::Corrupt { path: path.to_string(), detail: e.to_string() },
            _ => Self::Sqlite { context: context.into(), path: path.to_string(), source: Arc::new(e) },
        }
    }

    pub(crate) fn io(context: impl Into<String>, path: impl Into<PathBuf>, e: std::io::Error) -> Self {
        Self::Io { context: context.into(), path: path.into(), source: Arc::new(e) }
    }
}
