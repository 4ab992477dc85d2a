//! Durable runs: driving a run against the state store (`run`, `resume`), and the
//! verbs that read or undo stored runs (`runs`, `show`, `logs`, `destroy`).

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use engine_connector::{CancellationToken, Registry};
use engine_core::Masker;
use engine_runtime::{EventSink, RunOptions, RunStatus};
use engine_spec::Workflow;
use engine_state::{RunRecord, SharedStore, StateError, Store, Write};
use serde_json::{json, Map, Value};

use crate::cli::{OutputMode, ShowFormat};
use crate::commands::{secrets, sink};
use crate::diagnostics;
use crate::journal::{finished_outputs, now_ms, StoreJournal};

/// How long a run lock lasts without renewal.
const LOCK_TTL: Duration = Duration::from_secs(30);
/// How often a held lock is renewed.
const LOCK_RENEW: Duration = Duration::from_secs(10);

/// Open the store and run `f`; a store that cannot be opened is exit 2.
pub fn with_store(path: Option<&Path>, f: impl FnOnce(&SharedStore) -> u8) -> u8 {
    let path = path.map_or_else(engine_state::default_path, Path::to_path_buf);
    // `:memory:` keeps nothing after the process (benchmarks, throwaway runs).
    let opened = if path.as_os_str() == ":memory:" { Store::memory() } else { Store::open(&path) };
    match opened {
        Ok(s) => f(&(Arc::new(s) as SharedStore)),
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

/// What a run needs besides the store.
pub struct Session {
    pub wf: Arc<Workflow>,
    pub run_id: String,
    pub inputs: Map<String, Value>,
    pub secrets: Map<String, Value>,
}

fn runtime() -> Result<tokio::runtime::Runtime, u8> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| {
        eprintln!("error: cannot start the async runtime: {e}");
        1u8
    })
}

fn lock_owner() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "localhost".into());
    format!("engine pid {} on {host}", std::process::id())
}

/// Whether a lock holder is an engine process on this host that no longer exists
/// (killed): its lock need not be waited out.
fn holder_is_dead(holder: &str) -> bool {
    let Some(rest) = holder.strip_prefix("engine pid ") else { return false };
    let Some((pid, host)) = rest.split_once(" on ") else { return false };
    let ours = lock_owner();
    let our_host = ours.rsplit(" on ").next().unwrap_or_default();
    host == our_host && pid.parse::<u32>().is_ok_and(|p| !Path::new(&format!("/proc/{p}")).exists())
}

/// Take the run's lock; a lock left by a dead engine on this host is taken over.
async fn lock(store: &SharedStore, run_id: &str, owner: &str) -> Result<(), StateError> {
    match store.acquire_lock(run_id, owner, LOCK_TTL).await {
        Err(StateError::Locked { owner: holder, .. }) if holder_is_dead(&holder) => {
            eprintln!("note: taking over the lock of run {run_id} from {holder}, which is no longer running");
            store.release_lock(run_id, &holder).await?;
            store.acquire_lock(run_id, owner, LOCK_TTL).await
        }
        other => other,
    }
}

fn env_map() -> Map<String, Value> {
    std::env::vars().map(|(k, v)| (k, Value::String(v))).collect()
}

/// First Ctrl-C: cancel; second: exit at once. Installed before the first step starts.
fn on_interrupt(cancel: CancellationToken) {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()) {
        Ok(mut sigint) => {
            tokio::spawn(async move {
                if sigint.recv().await.is_some() {
                    eprintln!("interrupted: cancelling in-flight steps (Ctrl-C again to exit at once)");
                    cancel.cancel();
                    if sigint.recv().await.is_some() {
                        eprintln!("interrupted again: exiting");
                        std::process::exit(130);
                    }
                }
            });
        }
        Err(e) => eprintln!("warning: cannot handle Ctrl-C: {e}"),
    }
}

/// The options of a run (or a destroy) of `run_id`: recorded in `store`, secrets
/// masked, Ctrl-C wired to its cancellation (call inside the runtime).
fn options(store: &SharedStore, run_id: &str, inputs: Map<String, Value>, secrets: Map<String, Value>, events: Arc<dyn EventSink>) -> RunOptions {
    let cancel = CancellationToken::new();
    on_interrupt(cancel.clone());
    RunOptions {
        run_id: run_id.to_string(),
        masker: Masker::new(secrets.values().filter_map(Value::as_str)),
        inputs,
        secrets,
        env: env_map(),
        concurrency: None,
        cancel,
        events,
        journal: Some(Arc::new(StoreJournal::new(store.clone(), run_id.to_string()))),
        prior: Arc::default(),
        prior_resources: Vec::new(),
        prior_pins: HashMap::new(),
    }
}

/// Run (or resume) a workflow with its state in `store`; the exit code.
pub fn drive(store: &SharedStore, s: Session, concurrency: Option<usize>, mode: Option<OutputMode>, resume: bool) -> u8 {
    let (mode, events) = sink(mode);
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(c) => return c,
    };
    let store = store.clone();
    let code = rt.block_on(async move {
        let owner = lock_owner();
        let run_id = s.run_id.clone();
        if !resume {
            let now = now_ms();
            let rec = RunRecord {
                id: run_id.clone(),
                workflow_path: std::fs::canonicalize(&s.wf.path).unwrap_or_else(|_| s.wf.path.clone()).display().to_string(),
                workflow_name: s.wf.name.clone(),
                status: "running".into(),
                inputs: Value::Object(s.inputs.clone()),
                outputs: Value::Null,
                error: None,
                created_at_ms: now,
                updated_at_ms: now,
                lock_owner: None,
                lock_expires_at_ms: None,
            };
            if let Err(e) = store.write(Write::CreateRun(rec)).await {
                eprintln!("error: cannot record the run: {e}");
                return 1;
            }
        }
        if let Err(e) = lock(&store, &run_id, &owner).await {
            eprintln!("error: {e}");
            return 2;
        }
        let (prior, prior_resources) = if resume {
            let steps = store.steps(&run_id).unwrap_or_default();
            let resources = store.resources(&run_id).unwrap_or_default().into_iter().map(|(_, r)| r).collect();
            let prior: HashMap<String, Value> = finished_outputs(&steps).into_iter().collect();
            (prior, resources)
        } else {
            (HashMap::new(), Vec::new())
        };
        if resume {
            let _ = store.write(Write::UpdateRun { id: run_id.clone(), status: "running".into(), outputs: Value::Null, error: None }).await;
        }
        let renew = {
            let (store, run_id, owner) = (store.clone(), run_id.clone(), owner.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(LOCK_RENEW).await;
                    if let Err(e) = store.renew_lock(&run_id, &owner, LOCK_TTL).await {
                        eprintln!("warning: cannot renew the lock of run {run_id}: {e}");
                    }
                }
            })
        };
        let mut opts = options(&store, &run_id, s.inputs, s.secrets, events);
        opts.concurrency = concurrency;
        opts.prior = Arc::new(prior);
        opts.prior_resources = prior_resources;
        if resume {
            opts.prior_pins = store.pins(&run_id).unwrap_or_default().into_iter().collect();
        }
        let masker = opts.masker.clone();
        let result = engine_runtime::run(s.wf.clone(), opts).await;
        let outputs = masker.mask_json(&result.outputs);
        let error = result.error.as_deref().map(|e| masker.mask(e));
        if let Err(e) = store.write(Write::UpdateRun { id: run_id.clone(), status: result.status.as_str().into(), outputs: outputs.clone(), error }).await {
            eprintln!("error: cannot record the end of the run: {e}");
        }
        renew.abort();
        let _ = store.release_lock(&run_id, &owner).await;
        if mode != OutputMode::Json {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let _ = writeln!(out, "run {run_id} {}", result.status.as_str());
            if let Value::Object(o) = outputs {
                for (k, v) in o {
                    let shown = match v {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    let _ = writeln!(out, "{k}: {shown}");
                }
            }
        }
        match result.status {
            RunStatus::Succeeded => 0,
            RunStatus::Failed => 1,
            RunStatus::Cancelled => 130,
        }
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    code
}

fn find(store: &SharedStore, run: &str) -> Result<RunRecord, u8> {
    match store.find_run(run) {
        Ok(Some(r)) => Ok(r),
        Ok(None) => {
            eprintln!("error: no run `{run}` in the state file; `engine runs` lists them");
            Err(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Err(2)
        }
    }
}

/// The stored run's workflow, loaded again (it may have changed; it must still be valid).
fn reload(registry: &Registry, rec: &RunRecord) -> Result<Arc<Workflow>, u8> {
    let mut loader = engine_spec::Loader::with_resolver(registry, &crate::registry::Plugins);
    let wf = loader.load(Path::new(&rec.workflow_path));
    match wf {
        Some(w) if !loader.has_errors() => Ok(w),
        _ => {
            diagnostics::print_all(&loader.sources, &loader.diags);
            eprintln!("error: the workflow of run {} (`{}`) cannot be loaded", rec.id, rec.workflow_path);
            Err(2)
        }
    }
}

/// A stored run, its workflow loaded again, and its secrets resolved again.
fn prepare(registry: &Registry, store: &SharedStore, run: &str) -> Result<(RunRecord, Arc<Workflow>, Map<String, Value>), u8> {
    let rec = find(store, run)?;
    let wf = reload(registry, &rec)?;
    let secrets = secrets(&wf).map_err(|d| {
        diagnostics::print_all(&engine_core::SourceMap::default(), &d);
        2u8
    })?;
    Ok((rec, wf, secrets))
}

pub fn resume(registry: &Registry, store: &SharedStore, run: &str, concurrency: Option<usize>, mode: Option<OutputMode>) -> u8 {
    let (rec, wf, secrets) = match prepare(registry, store, run) {
        Ok(x) => x,
        Err(c) => return c,
    };
    if rec.status == "succeeded" {
        eprintln!("run {} already succeeded: nothing to resume", rec.id);
        return 0;
    }
    let inputs = rec.inputs.as_object().cloned().unwrap_or_default();
    drive(store, Session { wf, run_id: rec.id, inputs, secrets }, concurrency, mode, true)
}

pub fn destroy(registry: &Registry, store: &SharedStore, run: &str, mode: Option<OutputMode>) -> u8 {
    let (rec, wf, secret_values) = match prepare(registry, store, run) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let (_, events) = sink(mode.or(Some(OutputMode::Plain)));
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(c) => return c,
    };
    let store = store.clone();
    let code = rt.block_on(async move {
        let owner = lock_owner();
        if let Err(e) = lock(&store, &rec.id, &owner).await {
            eprintln!("error: {e}");
            return 2;
        }
        let resources: Vec<_> = store.resources(&rec.id).unwrap_or_default().into_iter().map(|(_, r)| r).collect();
        let outputs = finished_outputs(&store.steps(&rec.id).unwrap_or_default());
        let opts = options(&store, &rec.id, rec.inputs.as_object().cloned().unwrap_or_default(), secret_values, events);
        let d = engine_runtime::destroy(wf, resources, opts, Arc::new(outputs)).await;
        let _ = store.release_lock(&rec.id, &owner).await;
        println!("run {}: {} undone, {} kept, {} failed", rec.id, d.undone, d.kept, d.failed.len());
        for (r, e) in &d.failed {
            eprintln!("error: {} {} (step {}): {e}", r.kind, r.id.as_deref().unwrap_or(&r.key), r.step.step);
        }
        i32::from(!d.failed.is_empty()) as u8
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    code
}

fn when(ms: i64) -> String {
    let secs = ms / 1000;
    let ago = now_ms() / 1000 - secs;
    match ago {
        a if a < 60 => format!("{a}s ago"),
        a if a < 3600 => format!("{}m ago", a / 60),
        a if a < 86400 => format!("{}h ago", a / 3600),
        a => format!("{}d ago", a / 86400),
    }
}

pub fn runs(store: &SharedStore, limit: usize) -> u8 {
    let runs = match store.list_runs(limit) {
        Ok(r) => r,
        Err(e) => return report(&e),
    };
    println!("{:<22} {:<10} {:<24} {:<10} {}", "RUN", "STATUS", "WORKFLOW", "STARTED", "HELD BY");
    for r in runs {
        let held = match (&r.lock_owner, r.lock_expires_at_ms) {
            (Some(o), Some(t)) if t > now_ms() => o.clone(),
            _ => String::new(),
        };
        println!("{:<22} {:<10} {:<24} {:<10} {held}", r.id, r.status, r.workflow_name, when(r.created_at_ms));
    }
    0
}

fn report(e: &StateError) -> u8 {
    eprintln!("error: {e}");
    2
}

pub fn show(store: &SharedStore, run: &str, format: ShowFormat) -> u8 {
    let rec = match find(store, run) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let steps = store.steps(&rec.id).unwrap_or_default();
    let resources = store.resources(&rec.id).unwrap_or_default();
    match format {
        ShowFormat::Json => {
            let mut st = Map::new();
            for s in &steps {
                st.insert(
                    engine_runtime::instance_key(&s.step, s.index),
                    json!({"status": s.status, "attempts": s.attempts, "outputs": s.outputs, "error": s.error}),
                );
            }
            let res: Vec<Value> = resources
                .iter()
                .map(|(_, r)| json!({"kind": r.kind, "id": r.id.clone().unwrap_or_else(|| r.key.clone()), "key": r.key, "step": engine_runtime::instance_key(&r.step.step, r.step.index), "state": r.state}))
                .collect();
            let v = json!({
                "run_id": rec.id, "status": rec.status, "workflow": {"name": rec.workflow_name, "path": rec.workflow_path},
                "inputs": rec.inputs, "outputs": rec.outputs, "error": rec.error, "steps": st, "resources": res,
                "created_at_ms": rec.created_at_ms, "updated_at_ms": rec.updated_at_ms,
            });
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        ShowFormat::Plain => {
            println!("run {}  {}  ({})", rec.id, rec.status, rec.workflow_name);
            println!("file: {}", rec.workflow_path);
            if let Some(e) = &rec.error {
                println!("error: {e}");
            }
            println!("steps:");
            for s in &steps {
                let extra = s.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
                println!("  {:<28} {:<10} attempts {}{extra}", engine_runtime::instance_key(&s.step, s.index), s.status, s.attempts);
            }
            println!("resources:");
            if resources.is_empty() {
                println!("  none");
            }
            for (_, r) in &resources {
                println!("  {:<14} {:<40} {:?}  (step {})", r.kind, r.id.as_deref().unwrap_or(&r.key), r.state, engine_runtime::instance_key(&r.step.step, r.step.index));
            }
            if let Value::Object(o) = &rec.outputs {
                if !o.is_empty() {
                    println!("outputs:");
                    for (k, v) in o {
                        println!("  {k}: {v}");
                    }
                }
            }
        }
    }
    0
}

pub fn logs(store: &SharedStore, run: &str, step: Option<&str>, follow: bool) -> u8 {
    let rec = match find(store, run) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let mut after = 0;
    loop {
        let batch = match store.logs(&rec.id, step, after, 10_000) {
            Ok(b) => b,
            Err(e) => return report(&e),
        };
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        for l in &batch {
            let _ = writeln!(out, "{} | {}", engine_runtime::instance_key(&l.step, l.index), l.line);
            after = after.max(l.seq);
        }
        drop(out);
        if !follow {
            return 0;
        }
        if batch.is_empty() {
            let running = store.get_run(&rec.id).ok().flatten().is_some_and(|r| r.status == "running" && r.lock_expires_at_ms.is_some_and(|t| t > now_ms()));
            if !running {
                return 0;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
