//! The durable run store: runs, step states, resources and log lines of every
//! workflow run, in one SQLite file (WORKFLOW-FORMAT.md, "Run state").
//!
//! # Durability
//! The file is in WAL journal mode with `synchronous=NORMAL`. A write that
//! [`Store::write`] acknowledged survives the engine process being killed at any
//! instant (SIGKILL, OOM, panic): it is in the WAL, which the OS holds. An OS
//! crash or power loss may lose the last commits (never corrupt the file);
//! `synchronous=FULL` would close that window at one fsync per commit, which the
//! promise of "resume after the engine was killed" does not need.
//!
//! # Group commit
//! All writes go through one writer thread that owns the write connection. It
//! waits for an operation, takes every other operation already queued, applies
//! them all in one transaction (each in its own savepoint, so one bad write
//! fails alone) and commits; only then is each caller acknowledged. Many steps
//! finishing at once therefore share one commit. Reads use a separate connection
//! and, thanks to WAL, do not wait for the writer.
//!
//! Run locks ([`Store::acquire_lock`], ...) go through the writer too, as one
//! conditional `UPDATE`, so two engines can never both hold a run.
//!
//! # Secrets
//! The store writes what it is given. Callers must mask secret values in inputs,
//! outputs, errors and log lines before they get here: nothing in this crate
//! knows which strings are secret.
//!
//! # Files
//! A new state file is created with mode 0600 (its directories 0700); the WAL
//! and shared-memory files SQLite adds inherit that mode. A file written by a
//! newer engine ([`StateError::TooNew`]) or that is not a state database
//! ([`StateError::Corrupt`]) is refused and left untouched.

use std::ffi::OsString;
use std::path::PathBuf;

mod error;
mod record;
mod run_store;
mod schema;
mod store;
mod writer;

pub use error::StateError;
pub use record::{LogRecord, RunRecord, StepRecord, Write};
pub use schema::SCHEMA_VERSION;
pub use run_store::{RunStore, SharedStore};
pub use store::{Store, StoreStats};

/// Where the state file lives by default: `$ENGINE_STATE` when set (a path;
/// `postgres://` URLs are for the caller to recognise first), else
/// `$XDG_STATE_HOME/engine/state.db`, else `~/.local/state/engine/state.db`.
pub fn default_path() -> PathBuf {
    default_path_from(std::env::var_os("ENGINE_STATE"), std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME"))
}

fn default_path_from(engine_state: Option<OsString>, xdg_state_home: Option<OsString>, home: Option<OsString>) -> PathBuf {
    if let Some(p) = engine_state.filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    // The XDG spec says to ignore a relative XDG_STATE_HOME.
    if let Some(x) = xdg_state_home.map(PathBuf::from).filter(|p| p.is_absolute()) {
        return x.join("engine").join("state.db");
    }
    let home = home.filter(|h| !h.is_empty()).map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local").join("state").join("engine").join("state.db")
}

#[cfg(test)]
mod tests;
