//! The `lock` connector: lock files that a step takes, waiting while another run holds
//! them, and that `engine destroy` releases.
//!
//! A lock file holds the idempotency key of the step that holds it (`RUN/STEP[/INDEX]`),
//! so a retry or a resumed run recognises its own lock, and undo can find a lock from the
//! key alone when the engine died before the lock was confirmed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use engine_connector::{Action, Connector, ConnectorError, DynAction, LogStream, ResourceRecord, StepContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The kind of resource `lock.acquire` creates.
const KIND: &str = "lock.file";
/// How often a held lock is looked at again.
const POLL: Duration = Duration::from_millis(500);

/// The `lock` connector.
#[derive(Debug, Default, Clone)]
pub struct LockConnector;

impl Connector for LockConnector {
    fn name(&self) -> &'static str {
        "lock"
    }
    fn description(&self) -> &'static str {
        "lock files: wait for one, hold it, release it on destroy"
    }
    fn actions(&self) -> Vec<Arc<dyn DynAction>> {
        vec![Arc::new(Acquire)]
    }
}

/// Input of `lock.acquire`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AcquireInput {
    /// Name of the lock: letters, digits, `.`, `_` and `-`.
    pub name: String,
    /// Seconds to wait while another run holds the lock (default 60); after that the
    /// step fails with `timeout`.
    #[serde(default = "default_wait")]
    pub wait: u64,
}

fn default_wait() -> u64 {
    60
}

/// Output of `lock.acquire`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AcquireOutput {
    /// The lock file.
    pub path: String,
    /// Whether this step held the lock already (a retry, or a resumed run, adopted it).
    pub adopted: bool,
    /// Seconds spent waiting for another holder.
    pub waited: u64,
}

/// `lock.acquire`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Acquire;

/// Where lock files live: the connector setting `dir` (relative to the workflow's
/// directory), else `$TMPDIR/engine-locks`. Undo needs it too, so it comes from the
/// settings, which every request sees, and not from the step's input, which undo does not.
fn lock_dir(cx: &StepContext) -> PathBuf {
    match cx.settings.get("dir").and_then(Value::as_str) {
        Some(d) => cx.workflow_dir.join(d),
        None => std::env::temp_dir().join("engine-locks"),
    }
}

/// Classify an I/O error for the engine's retry and fallback policy.
fn io_error(what: &str, e: std::io::Error) -> ConnectorError {
    let message = format!("{what}: {e}");
    let err = match e.kind() {
        std::io::ErrorKind::NotFound => ConnectorError::not_found(message),
        std::io::ErrorKind::AlreadyExists => ConnectorError::conflict(message),
        // Retrying will not fix a permission or a bad path: fail at once.
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::InvalidInput => ConnectorError::invalid(message),
        // Interrupted, timed out, a busy NFS server...: worth another attempt.
        _ => ConnectorError::transient(message),
    };
    err.with_source(e)
}

/// Who holds the lock at `path`: the idempotency key written in it; `None` when free.
fn holder(path: &Path) -> Result<Option<String>, ConnectorError> {
    if path.is_dir() {
        return Err(ConnectorError::conflict(format!("{} is a directory, not a lock file", path.display())));
    }
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.lines().next().unwrap_or_default().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(&format!("reading {}", path.display()), e)),
    }
}

/// Create the lock file holding `key`; an `AlreadyExists` error when someone was faster.
fn create(path: &Path, key: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    f.write_all(format!("{key}\n").as_bytes())?;
    f.sync_all()
}

/// The lock file in `dir` that holds `key`, if any.
fn find_by_key(dir: &Path, key: &str) -> Result<Option<PathBuf>, ConnectorError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(&format!("listing {}", dir.display()), e)),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "lock") && holder(&path)?.as_deref() == Some(key) {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

#[async_trait]
impl Action for Acquire {
    const ID: &'static str = "lock.acquire";
    const DESCRIPTION: &'static str = "take a lock file, waiting while another run holds it; destroy releases it";
    const RESOURCE: Option<&'static str> = Some(KIND);
    type Input = AcquireInput;
    type Output = AcquireOutput;

    /// Pure checks the schema cannot express: no I/O, no await. `engine validate` runs
    /// them too, wherever `with` holds no expression.
    fn validate(&self, input: &AcquireInput) -> Result<(), ConnectorError> {
        let n = &input.name;
        if n.is_empty() || n == "." || n == ".." || !n.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
            return Err(ConnectorError::invalid(format!("lock name `{n}`: use letters, digits, `.`, `_` and `-`")));
        }
        if input.wait > 86_400 {
            return Err(ConnectorError::invalid("`wait` is at most 86400 seconds (one day)"));
        }
        Ok(())
    }

    async fn run(&self, input: AcquireInput, cx: &StepContext) -> Result<AcquireOutput, ConnectorError> {
        let dir = lock_dir(cx);
        let path = dir.join(format!("{}.lock", input.name));
        let shown = path.display().to_string();
        // RUN/STEP, or RUN/STEP/INDEX in a fan-out: the same in every attempt and after a
        // resume, different for every step and element.
        let key = cx.idempotency_key();
        let limit = Duration::from_secs(input.wait);
        let mut waited = Duration::ZERO;

        cx.progress("check", Some(10));
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&format!("creating {}", dir.display()), e))?;
        loop {
            match holder(&path)? {
                // Get: the lock already holds our key (an earlier attempt took it, or the run
                // was killed and resumed). Adopt it rather than wait for ourselves, and record
                // it again: records are keyed by kind and key, so this is idempotent.
                Some(h) if h == key => {
                    cx.log(LogStream::Stdout, &format!("{shown} is already held by this step; adopting it"));
                    let rec = cx.intend(KIND, &key).await?;
                    cx.confirm(rec, shown.clone(), json!({ "path": shown })).await?;
                    cx.progress("held", Some(100));
                    return Ok(AcquireOutput { path: shown, adopted: true, waited: waited.as_secs() });
                }
                // Held by someone else: poll until it is free or `wait` has passed.
                Some(other) => {
                    if waited >= limit {
                        return Err(ConnectorError::timeout(format!("{shown} is still held by `{other}` after {}s", limit.as_secs())));
                    }
                    if waited.is_zero() {
                        cx.log(LogStream::Stdout, &format!("{shown} is held by `{other}`; waiting up to {}s", limit.as_secs()));
                        cx.progress("waiting", Some(20));
                    }
                    // Returns a `cancelled` error at once when the step is cancelled (Ctrl-C).
                    cx.sleep(POLL).await?;
                    waited += POLL;
                }
                // Create: record the intent durably first, then create. If the engine dies
                // between the two, the record says the lock may exist, and undo can find it
                // by the key written in it.
                None => {
                    let rec = cx.intend(KIND, &key).await?;
                    match create(&path, &key) {
                        Ok(()) => {}
                        // Another run took it between our look and our create: look again.
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                        Err(e) => return Err(io_error(&format!("creating {shown}"), e)),
                    }
                    cx.log(LogStream::Stdout, &format!("took {shown}"));
                    cx.progress("confirm", Some(90));
                    cx.confirm(rec, shown.clone(), json!({ "path": shown })).await?;
                    cx.progress("held", Some(100));
                    return Ok(AcquireOutput { path: shown, adopted: false, waited: waited.as_secs() });
                }
            }
        }
    }

    /// Release the lock. Idempotent, and accepts an intent (`id == None`, `undo == null`):
    /// then the lock is found by the key written in it.
    async fn undo(&self, record: &ResourceRecord, cx: &StepContext) -> Result<(), ConnectorError> {
        let path = match record.undo.get("path").and_then(Value::as_str) {
            Some(p) => PathBuf::from(p),
            None => match find_by_key(&lock_dir(cx), &record.key)? {
                Some(p) => p,
                // Never created, or already released: `not_found` counts as done.
                None => return Err(ConnectorError::not_found(format!("no lock file holds `{}`", record.key))),
            },
        };
        match holder(&path)? {
            None => Err(ConnectorError::not_found(format!("{} is already released", path.display()))),
            // Released, then taken by another run: that lock is not ours to remove.
            Some(h) if h != record.key => {
                cx.log(LogStream::Stdout, &format!("{} is held by `{h}` now; leaving it", path.display()));
                Ok(())
            }
            Some(_) => {
                std::fs::remove_file(&path).map_err(|e| io_error(&format!("removing {}", path.display()), e))?;
                cx.log(LogStream::Stdout, &format!("released {}", path.display()));
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use engine_connector::{CancellationToken, ErrorKind, NullSink, ResourceState, StepRef, StepSink};

    use super::*;

    fn input(name: &str, wait: u64) -> AcquireInput {
        AcquireInput { name: name.into(), wait }
    }

    /// A fresh directory for one test's lock files.
    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lock-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// A sink that keeps every resource record, in order.
    #[derive(Default)]
    struct Records(Mutex<Vec<ResourceRecord>>);

    #[async_trait]
    impl StepSink for Records {
        fn progress(&self, _: &StepRef, _: u32, _: &str, _: Option<u8>) {}
        fn log(&self, _: &StepRef, _: LogStream, _: &str) {}
        async fn record(&self, r: &ResourceRecord) -> Result<(), ConnectorError> {
            self.0.lock().unwrap().push(r.clone());
            Ok(())
        }
    }

    #[tokio::test]
    async fn takes_adopts_and_releases() {
        let dir = scratch("basic");
        let sink = Arc::new(Records::default());
        let mut cx = StepContext::new("r1", StepRef { step: "lock".into(), index: None }, CancellationToken::new(), sink.clone());
        cx.settings = json!({ "dir": dir.to_str().unwrap() });

        let out = Acquire.run(input("db", 0), &cx).await.unwrap();
        assert!(!out.adopted);
        // The intent was stored before the lock existed, under the step's idempotency key.
        let records = sink.0.lock().unwrap().clone();
        assert_eq!(records.len(), 2);
        assert_eq!((records[0].state, records[1].state), (ResourceState::Intended, ResourceState::Created));
        assert_eq!(records[1].key, "r1/lock");

        // Another attempt of the same step adopts the lock instead of waiting for itself.
        assert!(Acquire.run(input("db", 0), &cx).await.unwrap().adopted);

        // Undo releases it; undoing again finds nothing, which the engine counts as done.
        Acquire.undo(&records[1], &cx).await.unwrap();
        assert!(!Path::new(&out.path).exists());
        assert_eq!(Acquire.undo(&records[1], &cx).await.unwrap_err().kind, ErrorKind::NotFound);
        Acquire.undo_value(&records[1], &cx).await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn undo_of_an_intent_finds_the_lock_by_its_key() {
        let dir = scratch("intent");
        let mut cx = StepContext::detached("lock");
        cx.settings = json!({ "dir": dir.to_str().unwrap() });
        let out = Acquire.run(input("db", 0), &cx).await.unwrap();
        // What the state holds when the engine died between the create and the confirmation.
        let intent = ResourceRecord {
            kind: KIND.into(),
            key: cx.idempotency_key(),
            id: None,
            state: ResourceState::Intended,
            undo: Value::Null,
            step: cx.step.clone(),
        };
        Acquire.undo(&intent, &cx).await.unwrap();
        assert!(!Path::new(&out.path).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn waits_then_times_out_and_stops_at_once_when_cancelled() {
        let dir = scratch("wait");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("db.lock"), "another-run/deploy\n").unwrap();

        // Held by another run for longer than `wait` (the paused clock makes this instant).
        let mut cx = StepContext::detached("lock");
        cx.settings = json!({ "dir": dir.to_str().unwrap() });
        let e = Acquire.run(input("db", 2), &cx).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Timeout);

        // Cancellation interrupts the wait.
        let token = CancellationToken::new();
        let mut cx = StepContext::new("r1", StepRef { step: "lock".into(), index: None }, token.clone(), Arc::new(NullSink));
        cx.settings = json!({ "dir": dir.to_str().unwrap() });
        let waiting = tokio::spawn(async move { Acquire.run(input("db", 3600), &cx).await });
        tokio::time::sleep(Duration::from_secs(5)).await;
        token.cancel();
        assert_eq!(waiting.await.unwrap().unwrap_err().kind, ErrorKind::Cancelled);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn validate_rejects_paths_in_names() {
        assert!(Acquire.validate(&input("../etc/passwd", 0)).is_err());
        assert!(Acquire.validate(&input("db-migrations", 60)).is_ok());
    }
}
