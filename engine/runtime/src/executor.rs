//! The scheduler: one loop owns the state of every step and starts instances as
//! their dependencies finish; each instance (a step, or one element of a fan-out)
//! runs its attempts in its own task.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use engine_connector::{CancellationToken, ConnectorError, DynAction, LogStream, StepContext, StepSink};
use engine_core::{ErrorKind, Masker, ResourceRecord, StepRef};
use engine_expr::{Evaluator, StatusFlags};
use engine_spec::inputs::resolve_inputs;
use engine_spec::{StepPlan, Uses, Workflow};
use minijinja::value::Value as JValue;
use serde_json::{json, Map, Value};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::event::{Event, EventSink, RunStatus, StepStatus};

/// What a run needs besides the workflow.
#[derive(Clone)]
pub struct RunOptions {
    /// Run id.
    pub run_id: String,
    /// Checked input values.
    pub inputs: Map<String, Value>,
    /// Secret values by name.
    pub secrets: Map<String, Value>,
    /// The environment `env.X` reads.
    pub env: Map<String, Value>,
    /// Overrides the workflow's `concurrency`.
    pub concurrency: Option<usize>,
    /// Cancels the run.
    pub cancel: CancellationToken,
    /// Where events go.
    pub events: Arc<dyn EventSink>,
    /// Masks secrets in everything emitted.
    pub masker: Masker,
    /// Where state changes are recorded durably, before the engine acts on them.
    pub journal: Option<Arc<dyn Journal>>,
    /// Outputs of steps (`step`, `step[2]`, `parent/child`) that succeeded in an
    /// earlier attempt of this run: reused, not run again.
    pub prior: Arc<HashMap<String, Value>>,
    /// Resources recorded by earlier attempts of this run (for `on_failure: cleanup`).
    pub prior_resources: Vec<ResourceRecord>,
    /// Values pinned by earlier attempts of this run (an SSH host key first seen), by key.
    pub prior_pins: HashMap<String, String>,
}

/// A state change to record durably.
#[derive(Debug)]
pub enum Record<'a> {
    /// A step (or fan-out element) changed status; outputs are masked.
    Step {
        /// Step name (`parent/child` in a sub-workflow).
        step: &'a str,
        /// Fan-out index.
        index: Option<usize>,
        /// New status.
        status: StepStatus,
        /// Attempts so far.
        attempts: u32,
        /// Outputs (masked), when it succeeded.
        outputs: &'a Value,
        /// Error or reason (masked).
        error: Option<&'a str>,
    },
    /// A resource was intended, created or deleted.
    Resource(&'a ResourceRecord),
    /// A value trusted on first use was pinned for the run.
    Pin {
        /// What is pinned (`ssh-host-key:HOST:PORT`).
        key: &'a str,
        /// The value first seen.
        value: &'a str,
    },
}

/// Durable storage of a run's state changes.
#[async_trait]
pub trait Journal: Send + Sync {
    /// Store a change; returns once it is committed.
    ///
    /// # Errors
    /// When it cannot be stored: the engine then stops the step.
    async fn record(&self, record: Record<'_>) -> Result<(), String>;
    /// Queue a line a step printed (already masked); not awaited.
    fn log(&self, step: &str, index: Option<usize>, stream: &'static str, line: &str);
}

/// The key of a step instance in [`RunOptions::prior`].
#[must_use]
pub fn instance_key(step: &str, index: Option<usize>) -> String {
    match index {
        Some(i) => format!("{step}[{i}]"),
        None => step.to_string(),
    }
}

/// The result of one step.
#[derive(Debug, Clone)]
pub struct StepResult {
    /// Final status.
    pub status: StepStatus,
    /// Attempts made (the last instance's, for a fan-out the most of any).
    pub attempts: u32,
    /// Outputs (a list for a fan-out).
    pub outputs: Value,
    /// Error or skip reason.
    pub error: Option<String>,
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// How it ended.
    pub status: RunStatus,
    /// Workflow outputs (unmasked: mask before printing).
    pub outputs: Value,
    /// Steps by id, in file order.
    pub steps: Vec<(String, StepResult)>,
    /// Resources recorded.
    pub resources: Vec<ResourceRecord>,
    /// Why it failed.
    pub error: Option<String>,
}

struct Shared {
    opts: RunOptions,
    eval: Evaluator,
    validators: Mutex<HashMap<&'static str, Arc<jsonschema::Validator>>>,
    resources: Mutex<Vec<ResourceRecord>>,
    /// The run's pins; held across the journal write so two steps pinning one key agree.
    pins: tokio::sync::Mutex<HashMap<String, String>>,
}

impl Shared {
    fn emit(&self, e: Event) {
        self.opts.events.emit(e);
    }
    async fn journal(&self, r: Record<'_>) -> Result<(), ConnectorError> {
        match &self.opts.journal {
            Some(j) => j.record(r).await.map_err(|e| ConnectorError::invalid(format!("cannot record the run state: {e}"))),
            None => Ok(()),
        }
    }
    /// Record a resource durably, then in the run's own list.
    async fn record_resource(&self, record: &ResourceRecord) -> Result<(), ConnectorError> {
        self.journal(Record::Resource(record)).await?;
        engine_core::resource::upsert(&mut self.resources.lock().expect("resource lock"), record.clone());
        Ok(())
    }

    async fn journal_step(&self, step: &str, index: Option<usize>, status: StepStatus, attempts: u32, outputs: &Value, error: Option<&str>) {
        let outputs = self.opts.masker.mask_json(outputs);
        let error = error.map(|e| self.mask(e));
        if let Err(e) = self.journal(Record::Step { step, index, status, attempts, outputs: &outputs, error: error.as_deref() }).await {
            // The state store is gone: say so loudly; the run cannot be resumed past this point.
            tracing::error!(error = %e.message, "Cannot record the run state.");
        }
    }
    fn mask(&self, s: &str) -> String {
        self.opts.masker.mask(s)
    }
}

struct Sink {
    shared: Arc<Shared>,
}

#[async_trait]
impl StepSink for Sink {
    fn progress(&self, step: &StepRef, attempt: u32, stage: &str, percent: Option<u8>) {
        self.shared.emit(Event::StepProgress {
            run_id: self.shared.opts.run_id.clone(),
            step: step.step.clone(),
            index: step.index,
            attempt,
            stage: self.shared.mask(stage),
            percent,
        });
    }
    fn log(&self, step: &StepRef, stream: LogStream, line: &str) {
        let line = self.shared.mask(line);
        if let Some(j) = &self.shared.opts.journal {
            j.log(&step.step, step.index, stream.as_str(), &line);
        }
        self.shared.emit(Event::StepLog { run_id: self.shared.opts.run_id.clone(), step: step.step.clone(), index: step.index, stream: stream.as_str(), line });
    }
    async fn record(&self, record: &ResourceRecord) -> Result<(), ConnectorError> {
        self.shared.record_resource(record).await
    }
    async fn pin(&self, key: &str, value: &str) -> Result<String, ConnectorError> {
        let mut pins = self.shared.pins.lock().await;
        if let Some(v) = pins.get(key) {
            return Ok(v.clone());
        }
        self.shared.journal(Record::Pin { key, value }).await?;
        pins.insert(key.to_string(), value.to_string());
        Ok(value.to_string())
    }
}

/// Run a workflow to its end.
pub async fn run(workflow: Arc<Workflow>, opts: RunOptions) -> RunResult {
    let pins = tokio::sync::Mutex::new(opts.prior_pins.clone());
    let shared = Arc::new(Shared { opts, eval: Evaluator::new(), validators: Mutex::new(HashMap::new()), resources: Mutex::new(Vec::new()), pins });
    let run_id = shared.opts.run_id.clone();
    shared.emit(Event::RunStarted { run_id: run_id.clone(), workflow: workflow.name.clone(), file: workflow.path.display().to_string() });
    let inputs = shared.opts.inputs.clone();
    let mut result = execute(workflow.clone(), inputs, String::new(), shared.clone(), shared.opts.cancel.clone()).await;
    // Every resource of the run: earlier attempts' records, updated by this one's.
    let mut resources = shared.opts.prior_resources.clone();
    for r in shared.resources.lock().expect("resource lock").iter() {
        engine_core::resource::upsert(&mut resources, r.clone());
    }
    result.resources = resources;
    if result.status != RunStatus::Succeeded && workflow.on_failure == engine_spec::model::OnFailure::Cleanup && !result.resources.is_empty() {
        // `on_failure: cleanup`: undo what the run created before reporting the end.
        // A fresh token: the run's own may be cancelled (Ctrl-C), the cleanup must run.
        let mut opts = shared.opts.clone();
        opts.cancel = CancellationToken::new();
        let mut outputs: Map<String, Value> = shared.opts.prior.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (id, s) in &result.steps {
            if s.status == StepStatus::Succeeded {
                outputs.insert(id.clone(), s.outputs.clone());
                if let Value::Array(items) = &s.outputs {
                    for (i, v) in items.iter().enumerate() {
                        outputs.insert(instance_key(id, Some(i)), v.clone());
                    }
                }
            }
        }
        let d = crate::undo::destroy(workflow, result.resources.clone(), opts, Arc::new(outputs)).await;
        let note = if d.failed.is_empty() {
            format!("on_failure: cleanup undid {} resource(s)", d.undone)
        } else {
            format!("on_failure: cleanup could not undo {} resource(s); run `engine destroy {run_id}`", d.failed.len())
        };
        result.error = Some(match result.error.take() {
            Some(e) => format!("{e}; {note}"),
            None => note,
        });
    }
    shared.emit(Event::RunFinished {
        run_id,
        status: result.status,
        outputs: shared.opts.masker.mask_json(&result.outputs),
        error: result.error.as_deref().map(|e| shared.mask(e)),
    });
    result
}

/// One unit of work: a step, or one element of its fan-out.
struct Instance {
    step: usize,
    index: Option<usize>,
    item: Value,
}

struct StepState {
    status: StepStatus,
    /// Failed with `continue_on_error`: counts as success for dependents.
    tolerated: bool,
    outputs: Vec<Value>,
    done: usize,
    total: usize,
    failed: usize,
    cancelled: usize,
    attempts: u32,
    error: Option<String>,
    started: Option<Instant>,
}

struct Outcome {
    step: usize,
    index: Option<usize>,
    result: Result<Value, ConnectorError>,
    attempts: u32,
}

#[allow(clippy::too_many_lines)]
fn execute(wf: Arc<Workflow>, inputs: Map<String, Value>, prefix: String, shared: Arc<Shared>, cancel: CancellationToken) -> std::pin::Pin<Box<dyn std::future::Future<Output = RunResult> + Send>> {
    Box::pin(async move {
        let n = wf.steps.len();
        let limit = shared.opts.concurrency.filter(|_| prefix.is_empty()).or(wf.concurrency).unwrap_or(usize::MAX).max(1);
        let mut states: Vec<StepState> = (0..n)
            .map(|_| StepState { status: StepStatus::Pending, tolerated: false, outputs: Vec::new(), done: 0, total: 0, failed: 0, cancelled: 0, attempts: 0, error: None, started: None })
            .collect();
        let base = base_context(&wf, &inputs, &shared);
        let run_id = shared.opts.run_id.clone();
        let name = |i: usize| format!("{prefix}{}", wf.steps[i].id);
        for i in 0..n {
            shared.emit(Event::Step { run_id: run_id.clone(), step: name(i), index: None, status: StepStatus::Pending, attempt: 0, reason: None, error: None, kind: None, duration_ms: None });
        }
        let mut queue: VecDeque<Instance> = VecDeque::new();
        let mut tasks: JoinSet<Outcome> = JoinSet::new();
        let mut running = 0usize;
        let mut step_ctx_cache: HashMap<usize, JValue> = HashMap::new();
        let mut cancelled_seen = false;

        loop {
            // Start every step whose dependencies are over.
            let mut progressed = true;
            while progressed {
                progressed = false;
                for &i in &wf.order {
                    if states[i].status != StepStatus::Pending || states[i].total > 0 {
                        continue;
                    }
                    let step = &wf.steps[i];
                    if !step.deps.iter().all(|&d| states[d].status.is_terminal()) {
                        continue;
                    }
                    progressed = true;
                    let ok = |d: usize| states[d].status == StepStatus::Succeeded || states[d].tolerated;
                    let flags = StatusFlags {
                        success: step.deps.iter().all(|&d| ok(d)),
                        failure: step.deps.iter().any(|&d| states[d].status == StepStatus::Failed && !states[d].tolerated),
                        cancelled: cancel.is_cancelled(),
                    };
                    let decision = decide(&wf, step, &states, flags, &base, &shared);
                    if matches!(decision, Decision::Run(_)) {
                        if let Some(v) = shared.opts.prior.get(&name(i)) {
                            // Finished in an earlier attempt of this run: reuse, do not run again.
                            states[i].status = StepStatus::Succeeded;
                            states[i].outputs = match (step.for_each.is_some(), v) {
                                (true, Value::Array(a)) => a.clone(),
                                _ => vec![v.clone()],
                            };
                            shared.emit(step_event(&run_id, name(i), None, StepStatus::Succeeded, 0, Some("reused from an earlier attempt of this run".into()), None));
                            continue;
                        }
                    }
                    match decision {
                        Decision::Run(ctx) => match expand(step, &ctx, &shared) {
                            Ok(items) => {
                                states[i].total = items.len().max(1);
                                states[i].started = Some(Instant::now());
                                if step.for_each.is_some() && items.is_empty() {
                                    shared.journal_step(&name(i), None, StepStatus::Succeeded, 0, &Value::Array(Vec::new()), None).await;
                                    states[i].status = StepStatus::Succeeded;
                                    states[i].total = 0;
                                    shared.emit(step_event(&run_id, name(i), None, StepStatus::Succeeded, 0, Some("for_each is empty".into()), None));
                                    continue;
                                }
                                states[i].outputs = vec![Value::Null; items.len().max(1)];
                                if step.for_each.is_some() {
                                    for (k, item) in items.into_iter().enumerate() {
                                        queue.push_back(Instance { step: i, index: Some(k), item });
                                    }
                                } else {
                                    queue.push_back(Instance { step: i, index: None, item: Value::Null });
                                }
                            }
                            Err(e) => {
                                let msg = shared.mask(&format!("for_each: {e}"));
                                shared.journal_step(&name(i), None, StepStatus::Failed, 0, &Value::Null, Some(&msg)).await;
                                finish(&mut states[i], step, StepStatus::Failed, Some(msg.clone()));
                                shared.emit(Event::Step { run_id: run_id.clone(), step: name(i), index: None, status: StepStatus::Failed, attempt: 0, reason: None, error: Some(msg), kind: Some(ErrorKind::Invalid), duration_ms: None });
                            }
                        },
                        Decision::Skip(reason) => {
                            let status = if cancel.is_cancelled() { StepStatus::Cancelled } else { StepStatus::Skipped };
                            shared.journal_step(&name(i), None, status, 0, &Value::Null, Some(&reason)).await;
                            finish(&mut states[i], step, status, Some(reason.clone()));
                            shared.emit(step_event(&run_id, name(i), None, status, 0, Some(reason), None));
                        }
                        Decision::Fail(msg) => {
                            let msg = shared.mask(&msg);
                            shared.journal_step(&name(i), None, StepStatus::Failed, 0, &Value::Null, Some(&msg)).await;
                            finish(&mut states[i], step, StepStatus::Failed, Some(msg.clone()));
                            shared.emit(Event::Step { run_id: run_id.clone(), step: name(i), index: None, status: StepStatus::Failed, attempt: 0, reason: None, error: Some(msg), kind: Some(ErrorKind::Invalid), duration_ms: None });
                        }
                    }
                }
            }

            if cancel.is_cancelled() && !cancelled_seen {
                cancelled_seen = true;
                // Nothing new starts; queued instances are cancelled.
                while let Some(inst) = queue.pop_front() {
                    let st = &mut states[inst.step];
                    st.done += 1;
                    st.cancelled += 1;
                    if st.done == st.total {
                        finish(st, &wf.steps[inst.step], StepStatus::Cancelled, Some("run cancelled".into()));
                        shared.emit(step_event(&run_id, name(inst.step), None, StepStatus::Cancelled, 0, Some("run cancelled".into()), None));
                    }
                }
            }

            // Launch what the concurrency limit allows.
            while running < limit && !cancel.is_cancelled() {
                let Some(inst) = queue.pop_front() else { break };
                let step = &wf.steps[inst.step];
                if states[inst.step].status == StepStatus::Pending {
                    states[inst.step].status = StepStatus::Running;
                }
                // A step's context is built once (its dependencies are over and stay so);
                // each element only adds `item` and `index` on top.
                let step_ctx = step_ctx_cache.entry(inst.step).or_insert_with(|| JValue::from_serialize(step_context(&wf, step, &states, &base))).clone();
                let ctx = match inst.index {
                    Some(i) => minijinja::context! { item => JValue::from_serialize(&inst.item), index => i, ..step_ctx },
                    None => step_ctx,
                };
                running += 1;
                let reuse = shared.opts.prior.get(&instance_key(&name(inst.step), inst.index)).cloned();
                let job = Job { wf: wf.clone(), step: inst.step, index: inst.index, item: inst.item, ctx, shared: shared.clone(), cancel: cancel.child_token(), prefix: prefix.clone(), reuse };
                tasks.spawn(job.run());
            }

            if running == 0 && queue.is_empty() {
                if states.iter().all(|s| s.status.is_terminal()) {
                    break;
                }
                // Only steps whose dependencies can never finish remain (cannot happen in a DAG).
                if !progressed {
                    for (i, s) in states.iter_mut().enumerate() {
                        if !s.status.is_terminal() {
                            s.status = StepStatus::Skipped;
                            s.error = Some("unreachable".into());
                            shared.emit(step_event(&run_id, name(i), None, StepStatus::Skipped, 0, Some("unreachable".into()), None));
                        }
                    }
                    break;
                }
                continue;
            }

            let joined = tokio::select! {
                j = tasks.join_next(), if running > 0 => j,
                () = cancel.cancelled(), if !cancelled_seen => continue,
            };
            let Some(joined) = joined else { continue };
            running -= 1;
            let out = match joined {
                Ok(o) => o,
                Err(e) => {
                    // A panic in an action: fail the run loudly rather than hang.
                    return RunResult { status: RunStatus::Failed, outputs: Value::Null, steps: Vec::new(), resources: Vec::new(), error: Some(format!("internal error: a step task panicked: {e}")) };
                }
            };
            let step = &wf.steps[out.step];
            let st = &mut states[out.step];
            st.done += 1;
            st.attempts = st.attempts.max(out.attempts);
            let slot = out.index.unwrap_or(0);
            match out.result {
                Ok(v) => st.outputs[slot] = v,
                Err(e) if e.kind == ErrorKind::Cancelled => {
                    st.cancelled += 1;
                    st.error.get_or_insert_with(|| shared.mask(&e.message));
                }
                Err(e) => {
                    st.failed += 1;
                    if st.error.is_none() || step.for_each.is_none() {
                        st.error = Some(match out.index {
                            Some(k) => shared.mask(&format!("[{k}] {}", e.message)),
                            None => shared.mask(&e.message),
                        });
                    }
                }
            }
            if st.done == st.total {
                let status = if st.failed > 0 {
                    StepStatus::Failed
                } else if st.cancelled > 0 {
                    StepStatus::Cancelled
                } else {
                    StepStatus::Succeeded
                };
                let err = st.error.clone();
                finish(st, step, status, err);
                // Fan-out steps report their aggregate status once all elements ended.
                if step.for_each.is_some() {
                    let agg = if status == StepStatus::Succeeded { Value::Array(st.outputs.clone()) } else { Value::Null };
                    let (attempts, error) = (st.attempts, st.error.clone());
                    shared.journal_step(&name(out.step), None, status, attempts, &agg, error.as_deref()).await;
                    let st = &mut states[out.step];
                    let duration_ms = st.started.map(|s| u64::try_from(s.elapsed().as_millis()).unwrap_or(u64::MAX));
                    let (reason, error) = if status == StepStatus::Failed { (None, st.error.clone()) } else { (None, None) };
                    shared.emit(Event::Step { run_id: run_id.clone(), step: name(out.step), index: None, status, attempt: st.attempts, reason, error, kind: None, duration_ms });
                }
            }
        }

        let failed = wf.steps.iter().zip(&states).find(|(_, s)| s.status == StepStatus::Failed && !s.tolerated);
        let any_cancelled = cancel.is_cancelled() || states.iter().any(|s| s.status == StepStatus::Cancelled);
        let mut error = failed.map(|(p, s)| format!("step `{prefix}{}` failed: {}", p.id, s.error.clone().unwrap_or_default()));
        let mut status = if any_cancelled {
            RunStatus::Cancelled
        } else if failed.is_some() {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        };
        let mut outputs = Value::Object(Map::new());
        if status == RunStatus::Succeeded && !wf.outputs.is_empty() {
            let ctx = outputs_context(&wf, &states, &base);
            match shared.eval.render(&Value::Object(wf.outputs.clone().into_iter().collect()), &ctx) {
                Ok(v) => outputs = v,
                Err(e) => {
                    status = RunStatus::Failed;
                    error = Some(shared.mask(&format!("workflow outputs: {e}")));
                }
            }
        }
        let steps = wf
            .steps
            .iter()
            .zip(states)
            .map(|(p, s)| {
                let outputs = if p.for_each.is_some() { Value::Array(s.outputs) } else { s.outputs.into_iter().next().unwrap_or(Value::Null) };
                (p.id.clone(), StepResult { status: s.status, attempts: s.attempts, outputs, error: s.error })
            })
            .collect();
        RunResult { status, outputs, steps, resources: Vec::new(), error }
    })
}

fn finish(st: &mut StepState, step: &StepPlan, status: StepStatus, error: Option<String>) {
    st.status = status;
    st.tolerated = status == StepStatus::Failed && step.continue_on_error;
    if error.is_some() {
        st.error = error;
    }
}

fn step_event(run_id: &str, step: String, index: Option<usize>, status: StepStatus, attempt: u32, reason: Option<String>, duration_ms: Option<u64>) -> Event {
    Event::Step { run_id: run_id.to_string(), step, index, status, attempt, reason, error: None, kind: None, duration_ms }
}

enum Decision {
    Run(Map<String, Value>),
    Skip(String),
    Fail(String),
}

fn decide(wf: &Workflow, step: &StepPlan, states: &[StepState], flags: StatusFlags, base: &Map<String, Value>, shared: &Shared) -> Decision {
    let ctx = step_context(wf, step, states, base);
    if !flags.success && !step.status_fn {
        // The first dependency that did not succeed explains the skip.
        let why = step
            .deps
            .iter()
            .map(|&d| (&wf.steps[d].id, &states[d]))
            .find(|(_, s)| !(s.status == StepStatus::Succeeded || s.tolerated))
            .map_or_else(|| "a dependency did not succeed".to_string(), |(id, s)| format!("dependency `{id}` {}", s.status.as_str()));
        return Decision::Skip(why);
    }
    if flags.cancelled && !step.status_fn {
        return Decision::Skip("run cancelled".into());
    }
    if let Some(cond) = &step.condition {
        let jctx = JValue::from_serialize(&ctx);
        match shared.eval.condition(cond, &jctx, flags) {
            Ok(true) => {}
            Ok(false) => return Decision::Skip("`if` is false".into()),
            Err(e) => return Decision::Fail(format!("`if`: {e}")),
        }
    }
    Decision::Run(ctx)
}

fn expand(step: &StepPlan, ctx: &Map<String, Value>, shared: &Shared) -> Result<Vec<Value>, String> {
    let Some(fe) = &step.for_each else { return Ok(vec![Value::Null]) };
    let v = match fe {
        Value::String(s) => shared.eval.render_str(s, &JValue::from_serialize(ctx)).map_err(|e| e.message)?,
        other => other.clone(),
    };
    match v {
        Value::Array(a) => Ok(a),
        Value::Number(n) => match n.as_u64() {
            Some(k) => Ok((0..k).map(Value::from).collect()),
            None => Err(format!("expected a list or a count, found the number {n}")),
        },
        other => Err(format!("expected a list or a count, found {}", engine_spec::schemacheck::describe(&other))),
    }
}

fn base_context(wf: &Workflow, inputs: &Map<String, Value>, shared: &Shared) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("inputs".into(), Value::Object(inputs.clone()));
    m.insert("secrets".into(), Value::Object(shared.opts.secrets.clone()));
    m.insert("env".into(), Value::Object(shared.opts.env.clone()));
    m.insert("run".into(), json!({"id": shared.opts.run_id, "name": wf.name}));
    m.insert("workflow".into(), json!({"dir": wf.dir.display().to_string()}));
    m
}

fn step_entry(plan: &StepPlan, s: &StepState) -> Value {
    let outputs = if plan.for_each.is_some() { Value::Array(s.outputs.clone()) } else { s.outputs.first().cloned().unwrap_or(Value::Null) };
    json!({"outputs": outputs, "status": s.status.as_str()})
}

/// The context of a step: the base plus its dependencies' outputs and status.
fn step_context(wf: &Workflow, step: &StepPlan, states: &[StepState], base: &Map<String, Value>) -> Map<String, Value> {
    let mut ctx = base.clone();
    let steps: Map<String, Value> = step.deps.iter().map(|&d| (wf.steps[d].id.clone(), step_entry(&wf.steps[d], &states[d]))).collect();
    ctx.insert("steps".into(), Value::Object(steps));
    ctx
}

fn outputs_context(wf: &Workflow, states: &[StepState], base: &Map<String, Value>) -> JValue {
    let mut ctx = base.clone();
    let steps: Map<String, Value> = wf.steps.iter().zip(states).map(|(p, s)| (p.id.clone(), step_entry(p, s))).collect();
    ctx.insert("steps".into(), Value::Object(steps));
    JValue::from_serialize(&ctx)
}

struct Job {
    wf: Arc<Workflow>,
    step: usize,
    index: Option<usize>,
    item: Value,
    reuse: Option<Value>,
    ctx: JValue,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    prefix: String,
}

impl Job {
    fn plan(&self) -> &StepPlan {
        &self.wf.steps[self.step]
    }

    fn name(&self) -> String {
        format!("{}{}", self.prefix, self.plan().id)
    }

    fn event(&self, status: StepStatus, attempt: u32, error: Option<&ConnectorError>, duration: Option<Duration>) -> Event {
        Event::Step {
            run_id: self.shared.opts.run_id.clone(),
            step: self.name(),
            index: self.index,
            status,
            attempt,
            reason: None,
            error: error.map(|e| self.shared.mask(&e.message)),
            kind: error.map(|e| e.kind),
            duration_ms: duration.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    async fn run(self) -> Outcome {
        if let Some(v) = self.reuse.clone() {
            self.shared.emit(Event::Step {
                run_id: self.shared.opts.run_id.clone(),
                step: self.name(),
                index: self.index,
                status: StepStatus::Succeeded,
                attempt: 0,
                reason: Some("reused from an earlier attempt of this run".into()),
                error: None,
                kind: None,
                duration_ms: None,
            });
            return Outcome { step: self.step, index: self.index, result: Ok(v), attempts: 0 };
        }
        let started = Instant::now();
        if let engine_spec::CleanupPlan::Step { .. } = &self.plan().cleanup {
            // The step's own undo is a resource, recorded before the step may create anything.
            let key = match self.index {
                Some(i) => format!("{}/{}/{i}", self.shared.opts.run_id, self.name()),
                None => format!("{}/{}", self.shared.opts.run_id, self.name()),
            };
            let rec = ResourceRecord {
                kind: "cleanup".into(),
                id: Some(key.clone()),
                key,
                state: engine_core::ResourceState::Created,
                undo: json!({"item": self.shared.opts.masker.mask_json(&self.item), "index": self.index}),
                step: StepRef { step: self.name(), index: self.index },
            };
            if let Err(e) = self.shared.record_resource(&rec).await {
                return Outcome { step: self.step, index: self.index, result: Err(e), attempts: 0 };
            }
        }
        let (result, attempts) = self.attempts().await;
        let status = match &result {
            Ok(_) => StepStatus::Succeeded,
            Err(e) if e.kind == ErrorKind::Cancelled => StepStatus::Cancelled,
            Err(_) => StepStatus::Failed,
        };
        let plan = self.plan();
        let (outputs, error) = match &result {
            Ok(v) => (v.clone(), None),
            Err(e) => (Value::Null, Some(e.message.clone())),
        };
        self.shared.journal_step(&self.name(), self.index, status, attempts, &outputs, error.as_deref()).await;
        // A single step reports its end here; a fan-out element too (with its index).
        if plan.for_each.is_none() || self.index.is_some() {
            self.shared.emit(self.event(status, attempts, result.as_ref().err(), Some(started.elapsed())));
        }
        Outcome { step: self.step, index: self.index, result, attempts }
    }

    /// Every alternative (the step itself, then each fallback), each with its retries.
    async fn attempts(&self) -> (Result<Value, ConnectorError>, u32) {
        let plan = self.plan();
        let mut total = 0;
        let mut alternatives: Vec<(Option<usize>, Uses, &Value)> = vec![(None, plan.uses.clone(), &plan.with)];
        for (i, f) in plan.fallback.iter().enumerate() {
            let uses = f.action.clone().map_or_else(|| plan.uses.clone(), Uses::Action);
            alternatives.push((Some(i), uses, &f.with));
        }
        let mut last = ConnectorError::invalid("no alternative ran");
        // Why each alternative before the one that ran was given up (kept in the outputs, so
        // `engine show` and later steps see it, not only the event stream).
        let mut reasons: Vec<Value> = Vec::new();
        for (fallback_index, uses, with) in alternatives {
            if let Some(fi) = fallback_index {
                let reason = self.shared.mask(&format!("{}: {}", last.kind.as_str(), last.message));
                self.shared.emit(Event::StepFallback {
                    run_id: self.shared.opts.run_id.clone(),
                    step: self.name(),
                    index: self.index,
                    fallback_index: fi,
                    error: self.shared.mask(&last.message),
                });
                reasons.push(Value::String(reason));
            }
            match self.with_retries(&uses, with, &mut total).await {
                Ok(mut v) => {
                    if !plan.fallback.is_empty() {
                        if let Value::Object(o) = &mut v {
                            o.insert("fallback_index".into(), fallback_index.map_or(Value::Null, Value::from));
                            o.insert("fallback_reasons".into(), Value::Array(reasons));
                        }
                    }
                    return (Ok(v), total);
                }
                Err(e) if matches!(e.kind, ErrorKind::Capacity | ErrorKind::Quota) => last = e,
                Err(e) => return (Err(e), total),
            }
        }
        (Err(last), total)
    }

    async fn with_retries(&self, uses: &Uses, with: &Value, total: &mut u32) -> Result<Value, ConnectorError> {
        let plan = self.plan();
        let policy = &plan.retry;
        let mut attempt = 0;
        loop {
            attempt += 1;
            *total += 1;
            self.shared.journal_step(&self.name(), self.index, StepStatus::Running, *total, &Value::Null, None).await;
            self.shared.emit(self.event(StepStatus::Running, *total, None, None));
            let result = self.once(uses, with, *total).await;
            let e = match result {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if self.cancel.is_cancelled() {
                return Err(ConnectorError::cancelled(format!("cancelled: {}", e.message)));
            }
            if attempt >= policy.attempts || !policy.on.matches(e.kind) {
                return Err(e);
            }
            let mut delay = e.retry_after.unwrap_or_else(|| policy.delay_before(attempt + 1));
            if policy.jitter && e.retry_after.is_none() {
                delay = delay.mul_f64(rand::random_range(0.5..=1.0));
            }
            self.shared.emit(Event::StepRetry {
                run_id: self.shared.opts.run_id.clone(),
                step: self.name(),
                index: self.index,
                attempt: *total,
                delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                error: self.shared.mask(&e.message),
                kind: e.kind,
            });
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.cancel.cancelled() => return Err(ConnectorError::cancelled("cancelled while waiting to retry")),
            }
        }
    }

    async fn once(&self, uses: &Uses, with: &Value, attempt: u32) -> Result<Value, ConnectorError> {
        let plan = self.plan();
        let input = self.shared.eval.render(with, &self.ctx).map_err(|e| ConnectorError::invalid(format!("in `with`: {e}")))?;
        let fut = async {
            match uses {
                Uses::Action(a) => {
                    self.check_input(a, &input)?;
                    let step = StepRef { step: self.name(), index: self.index };
                    let sink = Arc::new(Sink { shared: self.shared.clone() });
                    let cx = action_context(&self.wf, &self.shared.opts, &self.shared.eval, a.as_ref(), step, attempt, self.cancel.clone(), sink, &self.ctx)?;
                    a.run_value(input, &cx).await
                }
                Uses::Workflow(sub) => self.sub_workflow(sub, input).await,
            }
        };
        match plan.timeout {
            Some(t) => match tokio::time::timeout(t, fut).await {
                Ok(r) => r,
                Err(_) => Err(ConnectorError::timeout(format!("attempt {attempt} timed out after {}", humanize(t)))),
            },
            None => fut.await,
        }
    }

    fn check_input(&self, a: &Arc<dyn DynAction>, input: &Value) -> Result<(), ConnectorError> {
        let validator = {
            let mut v = self.shared.validators.lock().expect("validator lock");
            match v.get(a.id()) {
                Some(x) => x.clone(),
                None => {
                    let compiled = Arc::new(engine_spec::schemacheck::compile(&a.input_schema()).map_err(|e| ConnectorError::invalid(format!("bad schema for {}: {e}", a.id())))?);
                    v.insert(a.id(), compiled.clone());
                    compiled
                }
            }
        };
        let errors: Vec<String> = validator.iter_errors(input).map(|e| {
            let path = e.instance_path.as_str().trim_start_matches('/').replace('/', ".");
            if path.is_empty() { e.to_string() } else { format!("{path}: {e}") }
        }).collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConnectorError::invalid(format!("the rendered input of `{}` is invalid: {}", a.id(), errors.join("; "))))
        }
    }

    async fn sub_workflow(&self, sub: &Arc<Workflow>, input: Value) -> Result<Value, ConnectorError> {
        let given = match input {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            other => return Err(ConnectorError::invalid(format!("the inputs of a sub-workflow must be a mapping, found {other}"))),
        };
        let inputs = resolve_inputs(&sub.inputs, &given, &[]).map_err(|d| {
            ConnectorError::invalid(format!("inputs of `{}`: {}", sub.path.display(), d.iter().map(|x| x.message.clone()).collect::<Vec<_>>().join("; ")))
        })?;
        let prefix = match self.index {
            Some(i) => format!("{}[{i}]/", self.name()),
            None => format!("{}/", self.name()),
        };
        let r = execute(sub.clone(), inputs, prefix, self.shared.clone(), self.cancel.clone()).await;
        match r.status {
            RunStatus::Succeeded => Ok(r.outputs),
            RunStatus::Cancelled => Err(ConnectorError::cancelled("sub-workflow cancelled")),
            RunStatus::Failed => Err(ConnectorError::new(ErrorKind::Invalid, r.error.unwrap_or_else(|| "sub-workflow failed".into()))),
        }
    }
}

/// The context an action runs (or undoes) in: run id and name, step, attempt, the
/// workflow's directory, the masker, and its connector's settings rendered in `ctx`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn action_context(
    wf: &Workflow,
    opts: &RunOptions,
    eval: &Evaluator,
    action: &dyn DynAction,
    step: StepRef,
    attempt: u32,
    cancel: CancellationToken,
    sink: Arc<dyn StepSink>,
    ctx: &JValue,
) -> Result<StepContext, ConnectorError> {
    let mut cx = StepContext::new(opts.run_id.clone(), step, cancel, sink);
    cx.attempt = attempt;
    cx.run_name.clone_from(&wf.name);
    cx.workflow_dir = wf.dir.clone();
    cx.masker = opts.masker.clone();
    let connector = action.id().split('.').next().unwrap_or_default();
    if let Some(settings) = wf.connectors.get(connector) {
        cx.settings = eval.render(settings, ctx).map_err(|e| ConnectorError::invalid(format!("in `connectors.{connector}`: {e}")))?;
    }
    Ok(cx)
}

fn humanize(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 != 0 || ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{}s", ms / 1000)
    }
}
