//! The allocation ledger: which GPUs which steps hold, in a file that outlives the
//! engine process and that several engines on one machine share safely.
//!
//! The ledger is `ledger.json` in a directory: the `ledger_dir` setting (relative to the
//! workflow's directory), else `$XDG_STATE_HOME/engine/gpu`, else
//! `$HOME/.local/state/engine/gpu`. Every change is a read-modify-write under an
//! exclusive OS lock on `ledger.lock` beside it (`flock` through `std::fs::File::lock`),
//! and the new content replaces the old atomically (a temporary file, `fsync`, `rename`,
//! `fsync` of the directory), so a reader never sees half a file and a crash leaves
//! either the old ledger or the new one. The lock is on a separate file because `rename`
//! replaces the ledger's inode.
//!
//! # Assumptions
//! The ledger lives on the machine that runs the engine. Allocations on a remote host
//! (`host:`) are recorded under that host's label; engines on *other* machines that
//! allocate on the same remote host do not see them.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use engine_connector::{ConnectorError, StepContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::client::Settings;

/// The ledger file's format version.
const VERSION: u32 = 1;

/// How a GPU is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Nobody else gets the GPU while the allocation lasts.
    Exclusive,
    /// Other shared allocations may hold the GPU too; exclusive ones may not.
    Shared,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Exclusive => "exclusive",
            Self::Shared => "shared",
        })
    }
}

/// One allocated GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HeldGpu {
    /// nvidia-smi index when allocated.
    pub index: usize,
    /// UUID: the identity the ledger matches GPUs by (the index may change after a reboot).
    pub uuid: Option<String>,
    /// Model.
    pub name: Option<String>,
}

impl HeldGpu {
    /// Whether this is the GPU with `index` and `uuid` (by UUID when both have one).
    #[must_use]
    pub fn is(&self, index: usize, uuid: Option<&str>) -> bool {
        match (self.uuid.as_deref(), uuid) {
            (Some(a), Some(b)) => a == b,
            _ => self.index == index,
        }
    }
}

/// One allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Allocation {
    /// Allocation id (`gpu-` and 16 hex digits, derived from host and key).
    pub id: String,
    /// The idempotency key of the step that allocated (`RUN/STEP[/INDEX]`).
    pub key: String,
    /// The machine: `local` or the host's label.
    pub host: String,
    /// Exclusive or shared.
    pub mode: Mode,
    /// The GPUs held.
    pub gpus: Vec<HeldGpu>,
    /// The workload type asked for.
    #[serde(default)]
    pub workload: Option<String>,
    /// Seconds since the Unix epoch when allocated.
    pub created_at: u64,
    /// Seconds since the Unix epoch after which the allocation no longer counts
    /// (`ttl`); `None` holds until released.
    #[serde(default)]
    pub expires_at: Option<u64>,
}

impl Allocation {
    /// Whether the allocation has expired at `now`.
    #[must_use]
    pub fn expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }
}

/// MIG GPU instances that `gpu.mig` created, so that undo finds them from the key alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MigRecord {
    /// The idempotency key of the step that created them.
    pub key: String,
    /// The machine.
    pub host: String,
    /// nvidia-smi index of the GPU.
    pub gpu_index: usize,
    /// UUID of the GPU.
    pub gpu_uuid: Option<String>,
    /// The GPU instance ids created.
    pub gpu_instance_ids: Vec<u32>,
    /// How to reach the host again (no secrets); `null` for this machine.
    #[serde(default)]
    pub ssh: serde_json::Value,
}

/// The ledger's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LedgerState {
    /// Format version.
    pub version: u32,
    /// Live allocations.
    #[serde(default)]
    pub allocations: Vec<Allocation>,
    /// MIG instances created by steps.
    #[serde(default)]
    pub mig: Vec<MigRecord>,
}

impl Default for LedgerState {
    fn default() -> Self {
        Self { version: VERSION, allocations: Vec::new(), mig: Vec::new() }
    }
}

impl LedgerState {
    /// The live (unexpired) allocations on `host`.
    pub fn live_on<'a>(&'a self, host: &'a str, now: u64) -> impl Iterator<Item = &'a Allocation> + 'a {
        self.allocations.iter().filter(move |a| a.host == host && !a.expired(now))
    }

    /// Drop expired allocations; returns how many.
    pub fn purge_expired(&mut self, now: u64) -> usize {
        let before = self.allocations.len();
        self.allocations.retain(|a| !a.expired(now));
        before - self.allocations.len()
    }
}

/// The ledger in one directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ledger {
    dir: PathBuf,
}

/// Seconds since the Unix epoch.
#[must_use]
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The allocation id for `key` on `host`: `gpu-` and the FNV-1a hash of both, so that
/// every attempt and every undo computes the same id without reading anything.
#[must_use]
pub fn allocation_id(host: &str, key: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in host.bytes().chain(std::iter::once(0)).chain(key.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("gpu-{h:016x}")
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> ConnectorError {
    let message = format!("{what} {}: {e}", path.display());
    match e.kind() {
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::InvalidInput | std::io::ErrorKind::NotADirectory | std::io::ErrorKind::IsADirectory => ConnectorError::invalid(message),
        _ => ConnectorError::transient(message),
    }
    .with_source(e)
}

impl Ledger {
    /// The ledger in `dir`.
    #[must_use]
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The ledger the step's settings name (see the module docs).
    ///
    /// # Errors
    /// `invalid` when no directory can be found (no setting, no `XDG_STATE_HOME`, no `HOME`).
    pub fn for_context(cx: &StepContext) -> Result<Self, ConnectorError> {
        let settings = Settings::from_context(cx)?;
        if let Some(d) = settings.ledger_dir {
            return Ok(Self::at(cx.workflow_dir.join(d)));
        }
        let nonempty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        if let Some(state) = nonempty("XDG_STATE_HOME").filter(|p| p.is_absolute()) {
            return Ok(Self::at(state.join("engine/gpu")));
        }
        if let Some(home) = nonempty("HOME") {
            return Ok(Self::at(home.join(".local/state/engine/gpu")));
        }
        Err(ConnectorError::invalid("no place for the gpu allocation ledger: set `connectors: gpu: ledger_dir:`, or XDG_STATE_HOME or HOME"))
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The ledger file.
    #[must_use]
    pub fn path(&self) -> PathBuf {
        self.dir.join("ledger.json")
    }

    fn lock_file(&self) -> Result<File, ConnectorError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io_error("creating", &self.dir, e))?;
        let path = self.dir.join("ledger.lock");
        OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path).map_err(|e| io_error("opening", &path, e))
    }

    fn load(&self) -> Result<LedgerState, ConnectorError> {
        let path = self.path();
        match std::fs::read_to_string(&path) {
            Ok(text) if text.trim().is_empty() => Ok(LedgerState::default()),
            Ok(text) => {
                let state: LedgerState = serde_json::from_str(&text).map_err(|e| {
                    ConnectorError::invalid(format!("the gpu allocation ledger {} is not valid: {e}; move it away to start a new one", path.display()))
                })?;
                if state.version > VERSION {
                    return Err(ConnectorError::invalid(format!("the gpu allocation ledger {} has version {}, newer than this engine's {VERSION}", path.display(), state.version)));
                }
                Ok(state)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LedgerState::default()),
            Err(e) => Err(io_error("reading", &path, e)),
        }
    }

    fn store(&self, state: &LedgerState) -> Result<(), ConnectorError> {
        let path = self.path();
        let tmp = self.dir.join(format!(".ledger.json.{}.tmp", std::process::id()));
        let body = serde_json::to_vec_pretty(state).map_err(|e| ConnectorError::invalid(format!("encoding the gpu ledger: {e}")))?;
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&body)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            // Make the rename itself durable.
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io_error("writing", &path, e)
        })
    }

    /// Read the ledger (under a shared lock, so never during another's write).
    ///
    /// # Errors
    /// When the file cannot be read or is not a ledger.
    pub fn read(&self) -> Result<LedgerState, ConnectorError> {
        let lock = self.lock_file()?;
        lock.lock_shared().map_err(|e| io_error("locking", &self.dir.join("ledger.lock"), e))?;
        let state = self.load();
        drop(lock);
        state
    }

    /// Read, change and write the ledger under the exclusive lock. `change` returns
    /// `(result, changed)`; the file is written only when `changed`.
    ///
    /// # Errors
    /// `change`'s error (nothing is written then), or an I/O error.
    ///
    /// # Guarantees
    /// No other process reads or writes the ledger between the read and the write.
    /// The lock is held only while `change` runs, which must not wait on anything.
    pub fn update<T>(&self, change: impl FnOnce(&mut LedgerState) -> Result<(T, bool), ConnectorError>) -> Result<T, ConnectorError> {
        let lock = self.lock_file()?;
        lock.lock().map_err(|e| io_error("locking", &self.dir.join("ledger.lock"), e))?;
        let mut state = self.load()?;
        let (out, changed) = change(&mut state)?;
        if changed {
            self.store(&state)?;
        }
        drop(lock);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(key: &str, mode: Mode, uuid: &str, expires_at: Option<u64>) -> Allocation {
        Allocation {
            id: allocation_id("local", key),
            key: key.into(),
            host: "local".into(),
            mode,
            gpus: vec![HeldGpu { index: 0, uuid: Some(uuid.into()), name: None }],
            workload: None,
            created_at: 1,
            expires_at,
        }
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        assert_eq!(allocation_id("local", "r/s"), allocation_id("local", "r/s"));
        assert_ne!(allocation_id("local", "r/s"), allocation_id("local", "r/t"));
        assert_ne!(allocation_id("a", "r/s"), allocation_id("b", "r/s"));
        assert!(allocation_id("local", "x").starts_with("gpu-") && allocation_id("local", "x").len() == 20);
    }

    #[test]
    fn updates_survive_and_failed_changes_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::at(dir.path().join("nested"));
        assert_eq!(ledger.read().unwrap(), LedgerState::default());
        ledger.update(|s| Ok(((), { s.allocations.push(alloc("r/a", Mode::Exclusive, "GPU-1", None)); true }))).unwrap();
        let e = ledger.update::<()>(|s| {
            s.allocations.clear();
            Err(ConnectorError::capacity("no"))
        });
        assert!(e.is_err());
        let again = Ledger::at(dir.path().join("nested")).read().unwrap();
        assert_eq!(again.allocations.len(), 1);
        assert_eq!(again.allocations[0].key, "r/a");
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(ledger.dir()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }

    #[test]
    fn a_corrupt_ledger_is_invalid_not_silently_reset() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::at(dir.path());
        std::fs::write(ledger.path(), "{not json").unwrap();
        let e = ledger.read().unwrap_err();
        assert_eq!(e.kind, engine_connector::ErrorKind::Invalid);
        assert!(e.message.contains("move it away"), "{}", e.message);
    }

    #[test]
    fn expired_allocations_do_not_count() {
        let mut s = LedgerState::default();
        s.allocations.push(alloc("r/a", Mode::Exclusive, "GPU-1", Some(100)));
        s.allocations.push(alloc("r/b", Mode::Shared, "GPU-2", None));
        assert_eq!(s.live_on("local", 50).count(), 2);
        assert_eq!(s.live_on("local", 100).count(), 1);
        assert_eq!(s.live_on("other", 50).count(), 0);
        assert_eq!(s.purge_expired(100), 1);
        assert_eq!(s.allocations[0].key, "r/b");
    }

    #[test]
    fn the_directory_comes_from_settings_then_xdg_then_home() {
        let mut cx = StepContext::detached("s");
        cx.workflow_dir = PathBuf::from("/srv/wf");
        cx.settings = serde_json::json!({"ledger_dir": "state/gpu"});
        assert_eq!(Ledger::for_context(&cx).unwrap().dir(), Path::new("/srv/wf/state/gpu"));
        cx.settings = serde_json::json!({"ledger_dir": "/abs/gpu"});
        assert_eq!(Ledger::for_context(&cx).unwrap().dir(), Path::new("/abs/gpu"));
    }
}
