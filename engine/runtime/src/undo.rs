//! Undoing what a run created: `engine destroy`, and `on_failure: cleanup`.
//!
//! Resources are undone in reverse dependency order: the steps deepest in the DAG
//! first; the resources of independent steps at the same depth in parallel; the
//! resources of one step one by one, newest first. Transient errors are retried;
//! a resource already gone counts as undone.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use engine_connector::{ConnectorError, DynAction};
use engine_core::{ErrorKind, ResourceRecord, ResourceState, StepRef};
use engine_expr::Evaluator;
use engine_spec::{CleanupPlan, StepPlan, Uses, Workflow};
use minijinja::value::Value as JValue;
use serde_json::{json, Map, Value};
use tokio::task::JoinSet;

use crate::event::Event;
use crate::executor::{action_context, Record, RunOptions};

/// What `destroy` did.
#[derive(Debug, Default)]
pub struct DestroyResult {
    /// Resources undone (or found already gone).
    pub undone: usize,
    /// Resources left on purpose (`cleanup: never`).
    pub kept: usize,
    /// Resources that could not be undone, with why.
    pub failed: Vec<(ResourceRecord, String)>,
}

/// Attempts per resource for transient errors.
const UNDO_ATTEMPTS: u32 = 4;

/// The plan of a step by its run name (`a`, `a[2]`, `parent/child`, `parent[1]/child[0]`).
fn find_step<'w>(wf: &'w Workflow, name: &str) -> Option<&'w StepPlan> {
    let mut parts = name.split('/');
    let first = parts.next()?;
    let mut plan = wf.step(first.split('[').next()?)?;
    for p in parts {
        let Uses::Workflow(sub) = &plan.uses else { return None };
        let id = p.split('[').next()?;
        let sub: &'w Workflow = sub;
        plan = sub.step(id)?;
    }
    Some(plan)
}

fn depths(wf: &Workflow) -> Vec<usize> {
    let mut d = vec![0; wf.steps.len()];
    for &i in &wf.order {
        d[i] = wf.steps[i].deps.iter().map(|&x| d[x] + 1).max().unwrap_or(0);
    }
    d
}

/// Undo `resources` (those not yet deleted), reporting each as an event and
/// recording each deletion in the journal.
pub async fn destroy(wf: Arc<Workflow>, resources: Vec<ResourceRecord>, opts: RunOptions, outputs: Arc<Map<String, Value>>) -> DestroyResult {
    let depth = depths(&wf);
    // depth -> step -> records (newest first)
    let mut groups: BTreeMap<usize, BTreeMap<String, Vec<ResourceRecord>>> = BTreeMap::new();
    let mut result = DestroyResult::default();
    for r in resources.into_iter().rev().filter(|r| r.state != ResourceState::Deleted) {
        let top = r.step.step.split('/').next().unwrap_or_default().split('[').next().unwrap_or_default().to_string();
        let dep = wf.index.get(&top).map_or(0, |&i| depth[i]);
        groups.entry(dep).or_default().entry(r.step.step.clone()).or_default().push(r);
    }
    let shared = Arc::new((wf, opts, outputs, Evaluator::new()));
    for (_, steps) in groups.into_iter().rev() {
        let mut set = JoinSet::new();
        for (_, recs) in steps {
            let shared = shared.clone();
            set.spawn(async move {
                let mut out = Vec::new();
                for r in recs {
                    let res = undo_one(&shared.0, &shared.1, &shared.2, &shared.3, &r).await;
                    out.push((r, res));
                }
                out
            });
        }
        while let Some(j) = set.join_next().await {
            for (r, res) in j.unwrap_or_default() {
                match res {
                    Ok(true) => result.undone += 1,
                    Ok(false) => result.kept += 1,
                    Err(e) => result.failed.push((r, e)),
                }
            }
        }
    }
    result
}

fn emit(opts: &RunOptions, r: &ResourceRecord, status: &'static str, error: Option<String>) {
    opts.events.emit(Event::ResourceUndo {
        run_id: opts.run_id.clone(),
        step: r.step.step.clone(),
        index: r.step.index,
        kind: r.kind.clone(),
        id: r.id.clone().unwrap_or_else(|| r.key.clone()),
        status,
        error,
    });
}

/// Undo one resource: `Ok(true)` undone, `Ok(false)` kept on purpose.
async fn undo_one(wf: &Workflow, opts: &RunOptions, outputs: &Map<String, Value>, eval: &Evaluator, r: &ResourceRecord) -> Result<bool, String> {
    let Some(plan) = find_step(wf, &r.step.step) else {
        let e = format!("step `{}` is no longer in the workflow file; cannot undo {} `{}`", r.step.step, r.kind, r.id.as_deref().unwrap_or(&r.key));
        emit(opts, r, "failed", Some(e.clone()));
        return Err(e);
    };
    // Inputs, secrets, env, the run's step outputs, and `item`/`index`: for a cleanup
    // step's `with` and for the connector's settings alike.
    let ctx = cleanup_context(wf, opts, outputs, r);
    let (action, input): (Arc<dyn DynAction>, Option<Value>) = match (&plan.cleanup, r.kind.as_str()) {
        (CleanupPlan::Never, _) => {
            emit(opts, r, "kept", Some("cleanup: never".into()));
            return Ok(false);
        }
        (CleanupPlan::Step { action, with }, "cleanup") => {
            match eval.render(with, &ctx) {
                Ok(v) => (action.clone(), Some(v)),
                Err(e) => {
                    let e = opts.masker.mask(&format!("cleanup of `{}`: {e}", r.step.step));
                    emit(opts, r, "failed", Some(e.clone()));
                    return Err(e);
                }
            }
        }
        (_, "cleanup") => {
            // The workflow no longer has a cleanup step for it: nothing to run.
            emit(opts, r, "deleted", Some("the step has no cleanup step any more".into()));
            return Ok(true);
        }
        _ => {
            let candidates = std::iter::once(match &plan.uses {
                Uses::Action(a) => Some(a.clone()),
                Uses::Workflow(_) => None,
            })
            .chain(plan.fallback.iter().map(|f| f.action.clone()))
            .flatten();
            let Some(a) = candidates.into_iter().find(|a| a.resource_kind() == Some(r.kind.as_str())) else {
                let e = format!("no action of step `{}` undoes resources of kind `{}`", r.step.step, r.kind);
                emit(opts, r, "failed", Some(e.clone()));
                return Err(e);
            };
            (a, None)
        }
    };
    emit(opts, r, "deleting", None);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let step = StepRef { step: r.step.step.clone(), index: r.step.index };
        let res: Result<(), ConnectorError> = match action_context(wf, opts, eval, action.as_ref(), step, attempt, opts.cancel.child_token(), Arc::new(engine_connector::NullSink), &ctx) {
            Err(e) => Err(e),
            Ok(cx) => match &input {
                Some(v) => action.run_value(v.clone(), &cx).await.map(|_| ()),
                None => action.undo_value(r, &cx).await,
            },
        };
        match res {
            Ok(()) => break,
            Err(e) if e.kind == ErrorKind::NotFound => break,
            Err(e) if e.kind == ErrorKind::Transient && attempt < UNDO_ATTEMPTS && !opts.cancel.is_cancelled() => {
                let d = e.retry_after.unwrap_or(Duration::from_millis(500 * (1 << attempt)));
                tokio::time::sleep(d).await;
            }
            Err(e) => {
                let msg = opts.masker.mask(&e.message);
                emit(opts, r, "failed", Some(msg.clone()));
                return Err(msg);
            }
        }
    }
    let mut done = r.clone();
    done.state = ResourceState::Deleted;
    if let Some(j) = &opts.journal {
        j.record(Record::Resource(&done)).await.map_err(|e| format!("undone, but cannot record it: {e}"))?;
    }
    emit(opts, r, "deleted", None);
    Ok(true)
}

fn cleanup_context(wf: &Workflow, opts: &RunOptions, outputs: &Map<String, Value>, r: &ResourceRecord) -> JValue {
    let mut steps = Map::new();
    for s in &wf.steps {
        let out = outputs.get(&s.id).cloned().unwrap_or(Value::Null);
        steps.insert(s.id.clone(), json!({"outputs": out}));
    }
    // Inside a sub-workflow, its own steps are in scope too.
    if let Some((parent, _)) = r.step.step.rsplit_once('/') {
        let prefix = format!("{parent}/");
        for (k, v) in outputs {
            if let Some(child) = k.strip_prefix(&prefix) {
                if !child.contains('/') && !child.contains('[') {
                    steps.insert(child.to_string(), json!({"outputs": v}));
                }
            }
        }
    }
    let own = crate::executor::instance_key(&r.step.step, r.step.index);
    let own_id = r.step.step.rsplit('/').next().unwrap_or_default().split('[').next().unwrap_or_default().to_string();
    if let Some(v) = outputs.get(&own) {
        steps.insert(own_id, json!({"outputs": v}));
    }
    let mut ctx: HashMap<&str, Value> = HashMap::new();
    ctx.insert("inputs", Value::Object(opts.inputs.clone()));
    ctx.insert("secrets", Value::Object(opts.secrets.clone()));
    ctx.insert("env", Value::Object(opts.env.clone()));
    ctx.insert("run", json!({"id": opts.run_id, "name": wf.name}));
    ctx.insert("workflow", json!({"dir": wf.dir.display().to_string()}));
    ctx.insert("steps", Value::Object(steps));
    if let Some(i) = r.step.index {
        ctx.insert("index", Value::from(i));
        ctx.insert("item", r.undo.get("item").cloned().unwrap_or(Value::Null));
    }
    JValue::from_serialize(&ctx)
}
