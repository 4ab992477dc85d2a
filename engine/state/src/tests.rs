//! Tests of the run store.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use engine_core::{ResourceRecord, ResourceState, StepRef};
use serde_json::json;

use super::*;

fn run(id: &str, created: i64) -> RunRecord {
    RunRecord {
        id: id.into(),
        workflow_path: "/w/wf.yaml".into(),
        workflow_name: "wf".into(),
        status: "running".into(),
        inputs: json!({"region": "fr-par", "n": 3}),
        outputs: serde_json::Value::Null,
        error: None,
        created_at_ms: created,
        updated_at_ms: created,
        lock_owner: None,
        lock_expires_at_ms: None,
    }
}

fn step(name: &str, index: Option<usize>, status: &str) -> StepRecord {
    StepRecord {
        step: name.into(),
        index,
        status: status.into(),
        attempts: 1,
        outputs: json!({"ip": "10.0.0.1"}),
        error: None,
        started_at_ms: Some(10),
        finished_at_ms: None,
    }
}

fn res(kind: &str, key: &str, state: ResourceState) -> ResourceRecord {
    ResourceRecord {
        kind: kind.into(),
        key: key.into(),
        id: None,
        state,
        undo: json!({"zone": "fr-par-1"}),
        step: StepRef { step: "make".into(), index: Some(2) },
    }
}

fn log(step: &str, line: &str) -> LogRecord {
    LogRecord { seq: 0, step: step.into(), index: None, stream: "stdout".into(), line: line.into(), ts_ms: 5 }
}

async fn create(s: &Store, id: &str, created: i64) {
    s.write(Write::CreateRun(run(id, created))).await.unwrap();
}

#[tokio::test]
async fn run_round_trip_and_update() {
    let s = Store::memory().unwrap();
    create(&s, "r1", 100).await;
    let got = s.get_run("r1").unwrap().unwrap();
    assert_eq!(got, run("r1", 100));
    assert!(s.get_run("nope").unwrap().is_none());

    s.write(Write::UpdateRun { id: "r1".into(), status: "failed".into(), outputs: json!({"a": [1, 2]}), error: Some("boom".into()) })
        .await
        .unwrap();
    let got = s.get_run("r1").unwrap().unwrap();
    assert_eq!(got.status, "failed");
    assert_eq!(got.outputs, json!({"a": [1, 2]}));
    assert_eq!(got.error.as_deref(), Some("boom"));
    assert!(got.updated_at_ms > 100);
    assert_eq!(got.created_at_ms, 100);

    let e = s.write(Write::UpdateRun { id: "nope".into(), status: "failed".into(), outputs: json!(null), error: None }).await;
    assert!(matches!(e, Err(StateError::NotFound(ref id)) if id == "nope"), "{e:?}");

    let dup = s.write(Write::CreateRun(run("r1", 1))).await.unwrap_err();
    assert!(matches!(dup, StateError::Sqlite { .. }), "{dup:?}");
    assert!(dup.to_string().starts_with("failed to create run r1 in state file :memory:"), "{dup}");
}

#[tokio::test]
async fn step_upsert_dedupes_plain_and_fan_out_steps() {
    let s = Store::memory().unwrap();
    create(&s, "r1", 1).await;
    let w = |rec| Write::Step { run_id: "r1".into(), rec };
    s.write(w(step("a", None, "pending"))).await.unwrap();
    s.write(w(step("b", Some(0), "running"))).await.unwrap();
    s.write(w(step("b", Some(1), "running"))).await.unwrap();
    let mut done = step("a", None, "succeeded");
    done.attempts = 3;
    done.outputs = json!({"x": "y"});
    done.error = Some("retried".into());
    done.finished_at_ms = Some(99);
    s.write(w(done.clone())).await.unwrap();
    s.write(w(step("b", Some(0), "failed"))).await.unwrap();

    let steps = s.steps("r1").unwrap();
    assert_eq!(steps.len(), 3, "{steps:?}");
    // Insertion order, kept across upserts.
    assert_eq!(steps[0], done);
    assert_eq!((steps[1].step.as_str(), steps[1].index, steps[1].status.as_str()), ("b", Some(0), "failed"));
    assert_eq!((steps[2].step.as_str(), steps[2].index, steps[2].status.as_str()), ("b", Some(1), "running"));
    assert!(s.steps("other").unwrap().is_empty());
}

#[tokio::test]
async fn resources_keep_creation_order_across_upserts() {
    let s = Store::memory().unwrap();
    create(&s, "r1", 1).await;
    let w = |rec| Write::Resource { run_id: "r1".into(), rec };
    s.write(w(res("scaleway.server", "k1", ResourceState::Intended))).await.unwrap();
    s.write(w(res("scaleway.volume", "k2", ResourceState::Intended))).await.unwrap();
    let mut confirmed = res("scaleway.server", "k1", ResourceState::Created);
    confirmed.id = Some("srv-123".into());
    confirmed.undo = json!({"zone": "fr-par-2", "ip": "1.2.3.4"});
    s.write(w(confirmed.clone())).await.unwrap();
    // Same key, other kind: a different resource.
    let mut plain = res("scaleway.ip", "k1", ResourceState::Deleted);
    plain.step = StepRef { step: "p/c".into(), index: None };
    s.write(w(plain.clone())).await.unwrap();

    let got = s.resources("r1").unwrap();
    assert_eq!(got.len(), 3);
    assert!(got[0].0 < got[1].0 && got[1].0 < got[2].0);
    assert_eq!(got[0].1, confirmed);
    assert_eq!(got[1].1, res("scaleway.volume", "k2", ResourceState::Intended));
    assert_eq!(got[2].1, plain);
}

// The held guard stalls the writer on purpose; the runtime is single-threaded.
#[allow(clippy::await_holding_lock)]
#[tokio::test]
async fn writes_for_an_unknown_run_fail_alone() {
    let s = Store::memory().unwrap();
    create(&s, "r1", 1).await;
    let hold = s.hold_writer();
    let bad = tokio::spawn({
        let s = s.clone();
        async move { s.write(Write::Step { run_id: "ghost".into(), rec: step("a", None, "running") }).await }
    });
    let good = tokio::spawn({
        let s = s.clone();
        async move { s.write(Write::Step { run_id: "r1".into(), rec: step("a", None, "running") }).await }
    });
    wait_submitted(&s, 3).await;
    drop(hold);
    let bad = bad.await.unwrap();
    assert!(matches!(bad, Err(StateError::NotFound(ref id)) if id == "ghost"), "{bad:?}");
    good.await.unwrap().unwrap();
    assert_eq!(s.steps("r1").unwrap().len(), 1);
    assert_eq!(s.stats().transactions, 2, "both shared one transaction");
    let e = s.write(Write::Logs { run_id: "ghost".into(), logs: vec![log("a", "x")] }).await;
    assert!(matches!(e, Err(StateError::NotFound(_))), "{e:?}");
}

async fn wait_submitted(s: &Store, n: u64) {
    for _ in 0..10_000 {
        if s.stats().submitted >= n {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("only {} of {n} writes submitted", s.stats().submitted);
}

#[allow(clippy::await_holding_lock)]
#[tokio::test]
async fn group_commit_shares_one_transaction() {
    let s = Store::memory().unwrap();
    create(&s, "r1", 1).await;
    assert_eq!(s.stats().transactions, 1);
    let hold = s.hold_writer();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.write(Write::Step { run_id: "r1".into(), rec: step(&format!("s{i}"), None, "running") }).await })
        })
        .collect();
    wait_submitted(&s, 201).await;
    drop(hold);
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let st = s.stats();
    assert_eq!(st.transactions, 2, "{st:?}");
    assert_eq!(st.applied, 201);
    assert_eq!(s.steps("r1").unwrap().len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_to_a_file_are_all_acked_and_present() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("state.db")).unwrap();
    create(&s, "r1", 1).await;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                s.write(Write::Step { run_id: "r1".into(), rec: step("fan", Some(i), "succeeded") }).await?;
                s.write(Write::Resource { run_id: "r1".into(), rec: res("x.y", &format!("k{i}"), ResourceState::Created) }).await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let st = s.stats();
    assert_eq!(st.applied, 401);
    assert!(st.transactions <= 401, "{st:?}");
    assert_eq!(s.steps("r1").unwrap().len(), 200);
    assert_eq!(s.resources("r1").unwrap().len(), 200);
}

#[test]
fn write_blocking_and_log_nowait_without_a_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let s = Store::open(&path).unwrap();
        s.write_blocking(Write::CreateRun(run("r1", 1))).unwrap();
        for i in 0..50 {
            s.log_nowait("r1", vec![log("a", &format!("line {i}"))]);
        }
        s.log_nowait("ghost", vec![log("a", "lost, and only logged")]);
        s.log_nowait("r1", vec![]);
        // Dropping the last clone drains the queue.
    }
    let s = Store::open(&path).unwrap();
    let logs = s.logs("r1", None, 0, 1000).unwrap();
    assert_eq!(logs.len(), 50);
    assert_eq!(logs[49].line, "line 49");
    assert_eq!(s.get_run("r1").unwrap().unwrap(), run("r1", 1));
}

#[tokio::test]
async fn logs_filter_by_step_and_page_after_seq() {
    let s = Store::memory().unwrap();
    create(&s, "r1", 1).await;
    create(&s, "r2", 2).await;
    let mut indexed = log("fan", "f0");
    indexed.index = Some(7);
    indexed.stream = "stderr".into();
    let lines = vec![
        log("parent", "p1"),
        log("parent/child", "c1"),
        log("parentx", "not a child"),
        log("parent/child/deep", "d1"),
        indexed.clone(),
        log("other", "o1"),
        log("par_%", "wildcards are literal"),
    ];
    s.log_nowait("r1", lines);
    s.log_nowait("r2", vec![log("parent", "other run")]);
    s.flush().await.unwrap();

    let all = s.logs("r1", None, 0, 100).unwrap();
    assert_eq!(all.len(), 7);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(all[4].index, Some(7));
    assert_eq!(all[4].stream, "stderr");
    assert_eq!(all[4].ts_ms, 5);

    let lines = |v: Vec<LogRecord>| v.into_iter().map(|l| l.line).collect::<Vec<_>>();
    assert_eq!(lines(s.logs("r1", Some("parent"), 0, 100).unwrap()), ["p1", "c1", "d1"]);
    assert_eq!(lines(s.logs("r1", Some("parent/child"), 0, 100).unwrap()), ["c1", "d1"]);
    assert_eq!(lines(s.logs("r1", Some("par"), 0, 100).unwrap()), Vec::<String>::new());
    assert_eq!(lines(s.logs("r1", Some("par_%"), 0, 100).unwrap()), ["wildcards are literal"]);
    assert_eq!(lines(s.logs("r2", Some("parent"), 0, 100).unwrap()), ["other run"]);

    // Paging.
    let page1 = s.logs("r1", None, 0, 3).unwrap();
    assert_eq!(lines(page1.clone()), ["p1", "c1", "not a child"]);
    let page2 = s.logs("r1", None, page1[2].seq, 3).unwrap();
    assert_eq!(lines(page2.clone()), ["d1", "f0", "o1"]);
    let page3 = s.logs("r1", None, page2[2].seq, 3).unwrap();
    assert_eq!(lines(page3.clone()), ["wildcards are literal"]);
    assert!(s.logs("r1", None, page3[0].seq, 3).unwrap().is_empty());
    let filtered = s.logs("r1", Some("parent"), all[0].seq, 1).unwrap();
    assert_eq!(lines(filtered), ["c1"]);
}

#[tokio::test]
async fn list_and_find_runs() {
    let s = Store::memory().unwrap();
    create(&s, "abc123", 1).await;
    create(&s, "abd456", 3).await;
    create(&s, "xyz789", 2).await;
    create(&s, "ab", 0).await;
    let ids = |v: Vec<RunRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(s.list_runs(10).unwrap()), ["abd456", "xyz789", "abc123", "ab"]);
    assert_eq!(ids(s.list_runs(2).unwrap()), ["abd456", "xyz789"]);

    assert_eq!(s.find_run("x").unwrap().unwrap().id, "xyz789");
    assert_eq!(s.find_run("abc").unwrap().unwrap().id, "abc123");
    assert_eq!(s.find_run("abd456").unwrap().unwrap().id, "abd456");
    // An exact id wins over longer ids it prefixes.
    assert_eq!(s.find_run("ab").unwrap().unwrap().id, "ab");
    assert!(s.find_run("q").unwrap().is_none());
    assert!(s.find_run("").unwrap().is_none());
    let e = s.find_run("a").unwrap_err();
    match &e {
        StateError::Ambiguous { prefix, matches } => {
            assert_eq!(prefix, "a");
            assert_eq!(matches, &["abd456", "abc123", "ab"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.to_string(), "run id prefix `a` is ambiguous: it matches abd456, abc123, ab");
}

#[tokio::test]
async fn locks_two_owners_expiry_and_renew() {
    let s = Store::memory().unwrap();
    create(&s, "r1", 1).await;
    let long = Duration::from_secs(60);
    s.acquire_lock("r1", "alice", long).await.unwrap();
    // Re-entrant for the holder.
    s.acquire_lock("r1", "alice", long).await.unwrap();
    let e = s.acquire_lock("r1", "bob", long).await.unwrap_err();
    match &e {
        StateError::Locked { run_id, owner, expires_in_ms } => {
            assert_eq!((run_id.as_str(), owner.as_str()), ("r1", "alice"));
            assert!(*expires_in_ms > 50_000 && *expires_in_ms <= 60_000, "{expires_in_ms}");
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().starts_with("run r1 is held by alice (lock expires in 60s)"), "{e}");
    let rec = s.get_run("r1").unwrap().unwrap();
    assert_eq!(rec.lock_owner.as_deref(), Some("alice"));
    assert!(rec.lock_expires_at_ms.is_some());

    // Releasing someone else's lock does nothing.
    s.release_lock("r1", "bob").await.unwrap();
    assert!(matches!(s.acquire_lock("r1", "bob", long).await, Err(StateError::Locked { .. })));
    s.release_lock("r1", "alice").await.unwrap();
    s.acquire_lock("r1", "bob", Duration::from_millis(300)).await.unwrap();
    assert!(matches!(s.acquire_lock("r1", "alice", long).await, Err(StateError::Locked { .. })));

    // Expiry: bob's lock lapses, alice takes it, bob cannot renew.
    tokio::time::sleep(Duration::from_millis(400)).await;
    s.acquire_lock("r1", "alice", Duration::from_millis(30)).await.unwrap();
    let e = s.renew_lock("r1", "bob", long).await.unwrap_err();
    assert!(matches!(e, StateError::LockLost { ref owner, .. } if owner == "bob"), "{e:?}");
    // Renewing keeps alice's lock past its first expiry.
    s.renew_lock("r1", "alice", long).await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(matches!(s.acquire_lock("r1", "bob", long).await, Err(StateError::Locked { .. })));
    // Renewing an expired lock nobody took is fine.
    s.acquire_lock("r1", "alice", Duration::ZERO).await.unwrap();
    s.renew_lock("r1", "alice", long).await.unwrap();
    assert!(matches!(s.acquire_lock("r1", "bob", long).await, Err(StateError::Locked { .. })));

    s.release_lock_blocking("r1", "alice").unwrap();
    let rec = s.get_run("r1").unwrap().unwrap();
    assert_eq!((rec.lock_owner, rec.lock_expires_at_ms), (None, None));
    let e = s.renew_lock("r1", "alice", long).await.unwrap_err();
    assert!(matches!(e, StateError::LockLost { .. }), "{e:?}");

    for e in [s.acquire_lock("ghost", "a", long).await, s.renew_lock("ghost", "a", long).await, s.release_lock("ghost", "a").await] {
        assert!(matches!(e, Err(StateError::NotFound(ref id)) if id == "ghost"), "{e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_one_of_many_concurrent_acquirers_wins() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("s.db")).unwrap();
    create(&s, "r1", 1).await;
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.acquire_lock("r1", &format!("owner{i}"), Duration::from_secs(60)).await })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => won += 1,
            Err(StateError::Locked { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(won, 1);
}

#[test]
fn new_file_is_private_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/state.db");
    {
        let s = Store::open(&path).unwrap();
        assert_eq!(s.path(), Some(path.as_path()));
        s.write_blocking(Write::CreateRun(run("r1", 1))).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&dir.path().join("a/b")), 0o700);
        // SQLite gives the WAL the database's mode.
        let wal = dir.path().join("a/b/state.db-wal");
        assert!(wal.exists());
        assert_eq!(mode(&wal), 0o600);
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.get_run("r1").unwrap().unwrap(), run("r1", 1));
    let c = rusqlite::Connection::open(&path).unwrap();
    let mode: String = c.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    let v: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(v, SCHEMA_VERSION);
}

#[test]
fn garbage_file_is_corrupt_and_untouched() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in
        [("garbage.db", b"this is not a database, it is a shopping list\n".repeat(100)), ("short.db", b"SQLite format 3\0".to_vec())]
    {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let e = Store::open(&path).unwrap_err();
        assert!(matches!(e, StateError::Corrupt { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("state file {} is not a usable engine state database", path.display())), "{msg}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "file was modified");
    }
}

#[test]
fn damaged_sqlite_file_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    drop(Store::open(&path).unwrap());
    // Keep the header, wreck the rest of page 1 (the schema).
    let mut bytes = std::fs::read(&path).unwrap();
    for b in &mut bytes[100..4096] {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let e = Store::open(&path).unwrap_err();
    assert!(matches!(e, StateError::Corrupt { .. }), "{e:?}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn foreign_sqlite_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch("CREATE TABLE cookies (name TEXT); INSERT INTO cookies VALUES ('x');").unwrap();
    drop(c);
    let before = std::fs::read(&path).unwrap();
    let e = Store::open(&path).unwrap_err();
    assert!(matches!(e, StateError::Corrupt { ref detail, .. } if detail.contains("another program")), "{e:?}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn newer_schema_is_refused_and_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    drop(Store::open(&path).unwrap());
    let c = rusqlite::Connection::open(&path).unwrap();
    c.pragma_update(None, "user_version", 999).unwrap();
    drop(c);
    let before = std::fs::read(&path).unwrap();
    let e = Store::open(&path).unwrap_err();
    match &e {
        StateError::TooNew { found, supported, .. } => assert_eq!((*found, *supported), (999, SCHEMA_VERSION)),
        other => panic!("{other:?}"),
    }
    let msg = e.to_string();
    assert!(msg.contains("schema version 999") && msg.contains("upgrade the engine") && msg.contains(&path.display().to_string()), "{msg}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn newer_schema_in_an_uncheckpointed_wal_is_not_checkpointed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    drop(Store::open(&path).unwrap());
    // A newer engine was killed: its last commit is only in the WAL.
    let c = rusqlite::Connection::open(&path).unwrap();
    c.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true).unwrap();
    c.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
    drop(c);
    let wal = dir.path().join("state.db-wal");
    assert!(std::fs::metadata(&wal).unwrap().len() > 0);
    let before = std::fs::read(&path).unwrap();
    let e = Store::open(&path).unwrap_err();
    assert!(matches!(e, StateError::TooNew { found, .. } if found == SCHEMA_VERSION + 1), "{e:?}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "the WAL was checkpointed into the file");
    assert!(std::fs::metadata(&wal).unwrap().len() > 0);
}

#[test]
fn a_directory_in_the_way_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = Store::open(dir.path()).unwrap_err();
    assert!(matches!(e, StateError::Io { .. } | StateError::Corrupt { .. }), "{e:?}");
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    let e = Store::open(&blocker.join("state.db")).unwrap_err();
    assert!(matches!(e, StateError::Io { .. }), "{e:?}");
    assert!(e.to_string().starts_with("failed to create state directory"), "{e}");
}

#[test]
fn default_path_order() {
    use std::ffi::OsString;
    let os = |s: &str| Some(OsString::from(s));
    assert_eq!(default_path_from(os("/x/s.db"), os("/xdg"), os("/home/u")), PathBuf::from("/x/s.db"));
    assert_eq!(default_path_from(None, os("/xdg"), os("/home/u")), PathBuf::from("/xdg/engine/state.db"));
    assert_eq!(default_path_from(os(""), os("relative"), os("/home/u")), PathBuf::from("/home/u/.local/state/engine/state.db"));
    assert_eq!(default_path_from(None, None, None), PathBuf::from("./.local/state/engine/state.db"));
}

#[test]
fn records_serialize() {
    let r = run("r1", 1);
    let back: RunRecord = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
    assert_eq!(back, r);
    let st = step("a", Some(1), "running");
    let back: StepRecord = serde_json::from_value(serde_json::to_value(&st).unwrap()).unwrap();
    assert_eq!(back, st);
    let l = log("a", "x");
    let back: LogRecord = serde_json::from_value(serde_json::to_value(&l).unwrap()).unwrap();
    assert_eq!(back, l);
}

#[test]
fn error_messages_are_lowercase() {
    let errs = [
        StateError::NotFound("r".into()),
        StateError::WriterStopped,
        StateError::LockLost { run_id: "r".into(), owner: "o".into() },
        StateError::Locked { run_id: "r".into(), owner: "o".into(), expires_in_ms: 1 },
        StateError::TooNew { path: "p".into(), found: 2, supported: 1 },
        StateError::Corrupt { path: "p".into(), detail: "d".into() },
        StateError::Ambiguous { prefix: "a".into(), matches: vec!["ab".into()] },
    ];
    for e in errs {
        let m = e.to_string();
        assert!(m.starts_with(|c: char| c.is_lowercase()) && !m.ends_with('.'), "{m}");
    }
}

#[tokio::test]
async fn the_first_pin_wins_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let s = Store::open(&path).unwrap();
        s.write(Write::CreateRun(run("r1", 1))).await.unwrap();
        let pin = |v: &str| Write::Pin { run_id: "r1".into(), key: "ssh-host-key:h:22".into(), value: v.into() };
        s.write(pin("SHA256:first")).await.unwrap();
        s.write(pin("SHA256:second")).await.unwrap();
        assert_eq!(s.pins("r1").unwrap(), vec![("ssh-host-key:h:22".to_string(), "SHA256:first".to_string())]);
        assert!(s.pins("r2").unwrap().is_empty());
        // A pin for a run that does not exist is refused, like any other record of it.
        assert!(s.write(Write::Pin { run_id: "ghost".into(), key: "k".into(), value: "v".into() }).await.is_err());
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.pins("r1").unwrap()[0].1, "SHA256:first");
}

#[tokio::test]
async fn a_version_1_file_is_migrated_with_its_runs_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let s = Store::open(&path).unwrap();
        s.write(Write::CreateRun(run("r1", 1))).await.unwrap();
    }
    // Make it look like a file written by a version-1 engine.
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch("DROP TABLE pins; PRAGMA user_version = 1;").unwrap();
    drop(c);
    let s = Store::open(&path).unwrap();
    assert_eq!(s.get_run("r1").unwrap().unwrap(), run("r1", 1));
    s.write(Write::Pin { run_id: "r1".into(), key: "k".into(), value: "v".into() }).await.unwrap();
    assert_eq!(s.pins("r1").unwrap().len(), 1);
    let c = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(v, SCHEMA_VERSION);
}
