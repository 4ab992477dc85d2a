//! Loading a workflow file and checking everything that needs no network.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use engine_connector::{DynAction, Registry};
use engine_core::diagnostics::code;
use engine_core::{Diagnostic, SourceMap, Span};
use engine_expr::{is_template, scan, Evaluator, Part};
use indexmap::IndexMap;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::Deserialize;
use serde_json::Value;

use crate::inputs::check_value;
use crate::model::{self, Cleanup, CleanupMode, Condition, Duration, ForEach, RetryPreset, WorkflowFile, With};
use crate::plan::{CleanupPlan, FallbackPlan, RetryOn, RetryPolicy, StepPlan, Uses, Workflow};
use crate::schemacheck::{did_you_mean, SchemaChecker, Target};
use crate::yaml::{self, pointer_escape, LocMap, NodeKind};

/// Names an expression may start with.
const SCOPE: &[&str] = &["inputs", "secrets", "env", "steps", "item", "index", "run", "workflow"];
/// Functions callable in expressions (they show up as names too).
const FUNCTIONS: &[&str] = &["range", "success", "failure", "always", "cancelled", "dict", "namespace", "lipsum", "cycler", "joiner", "debug"];
const STATUS_FUNCTIONS: &[&str] = &["success", "failure", "always", "cancelled"];

/// Loads and checks workflow files, collecting every diagnostic.
/// Finds connectors that are not built in (out-of-process plugins).
pub trait ConnectorResolver {
    /// The actions of connector `name`, from `path` when the workflow declares one (already
    /// made absolute), else from wherever plugins are found. `Ok(None)`: there is none.
    ///
    /// # Errors
    /// A plugin was found but cannot be used (it does not start, or describes itself badly).
    fn resolve(&self, name: &str, path: Option<&Path>) -> Result<Option<Vec<Arc<dyn DynAction>>>, String>;
}

pub struct Loader<'r> {
    registry: &'r Registry,
    resolver: Option<&'r dyn ConnectorResolver>,
    /// Plugin connectors resolved so far, by name (`None`: looked for, none found).
    plugins: HashMap<String, Option<Vec<Arc<dyn DynAction>>>>,
    /// Every file read so far.
    pub sources: SourceMap,
    /// Every problem found so far.
    pub diags: Vec<Diagnostic>,
    workflow_checker: SchemaChecker,
    action_checkers: HashMap<&'static str, SchemaChecker>,
    /// Top-level output names of each action, by id (`None`: free-form output).
    action_outputs: HashMap<&'static str, Option<Vec<String>>>,
    cache: HashMap<PathBuf, Option<Arc<Workflow>>>,
    stack: Vec<PathBuf>,
    eval: Evaluator,
}

/// A resolved `uses` during checking.
enum Resolved {
    Action(Arc<dyn DynAction>),
    Workflow(Arc<Workflow>),
}

/// What an expression may see.
#[derive(Clone, Copy)]
struct Scope<'a> {
    step: Option<&'a str>,
    in_loop: bool,
    steps_allowed: bool,
    self_allowed: bool,
}

struct FileCx<'a> {
    locs: &'a LocMap,
    step_ids: &'a [String],
    step_set: &'a HashSet<&'a str>,
    fan_out: &'a HashSet<String>,
    outputs: &'a HashMap<String, Option<Vec<String>>>,
    inputs: &'a IndexMap<String, model::InputSpec>,
    secrets: &'a IndexMap<String, model::SecretSource>,
}

impl<'r> Loader<'r> {
    /// A loader that resolves actions in `registry`.
    #[must_use]
    pub fn new(registry: &'r Registry) -> Self {
        Self {
            registry,
            resolver: None,
            plugins: HashMap::new(),
            sources: SourceMap::default(),
            diags: Vec::new(),
            workflow_checker: SchemaChecker::new(model::workflow_schema(), None),
            action_checkers: HashMap::new(),
            action_outputs: HashMap::new(),
            cache: HashMap::new(),
            stack: Vec::new(),
            eval: Evaluator::new(),
        }
    }

    /// A loader that also finds plugin connectors through `resolver`.
    #[must_use]
    pub fn with_resolver(registry: &'r Registry, resolver: &'r dyn ConnectorResolver) -> Self {
        let mut l = Self::new(registry);
        l.resolver = Some(resolver);
        l
    }

    /// A plugin connector's actions, looked up (and described) once.
    fn plugin(&mut self, name: &str, path: Option<&Path>, span: Span) -> Option<Vec<Arc<dyn DynAction>>> {
        if let Some(found) = self.plugins.get(name) {
            if path.is_none() || found.is_some() {
                return found.clone();
            }
        }
        let resolver = self.resolver?;
        let found = match resolver.resolve(name, path) {
            Ok(f) => f,
            Err(e) => {
                self.err(Diagnostic::error(code::UNKNOWN_ACTION, format!("connector `{name}` cannot be used: {e}"), span).help("see docs/connector-protocol.md"));
                Some(Vec::new())
            }
        };
        self.plugins.insert(name.to_string(), found.clone());
        found
    }

    /// Whether an error was found.
    #[must_use]
    pub fn has_errors(&self) -> bool {
        self.diags.iter().any(Diagnostic::is_error)
    }

    /// Load a file. `None` when it has errors (see [`Loader::diags`]).
    pub fn load(&mut self, path: &Path) -> Option<Arc<Workflow>> {
        match std::fs::read_to_string(path) {
            Ok(text) => self.load_str(path, text),
            Err(e) => {
                self.diags.push(Diagnostic::unlocated(code::IO, format!("cannot read `{}`: {e}", path.display())));
                None
            }
        }
    }

    /// Load text as if read from `path`.
    pub fn load_str(&mut self, path: &Path, text: String) -> Option<Arc<Workflow>> {
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        if let Some(w) = self.cache.get(&key) {
            return w.clone();
        }
        self.stack.push(key.clone());
        let before = self.diags.iter().filter(|d| d.is_error()).count();
        let w = self.check_file(path, text);
        self.stack.pop();
        let ok = self.diags.iter().filter(|d| d.is_error()).count() == before;
        let w = if ok { w.map(Arc::new) } else { None };
        self.cache.insert(key, w.clone());
        w
    }

    fn err(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    #[allow(clippy::too_many_lines)]
    fn check_file(&mut self, path: &Path, text: String) -> Option<Workflow> {
        let file = self.sources.add(path, text);
        let (node, diags) = yaml::parse(self.sources.get(file), file);
        let before_yaml = self.diags.len();
        self.diags.extend(diags);
        let node = node?;
        let whole = node.span;
        if !matches!(node.kind, NodeKind::Map(_)) {
            self.err(Diagnostic::error(code::NOT_A_MAPPING, "a workflow file must be a mapping with `version` and `steps`", whole).help("see `engine schema`, or start from a file in examples/"));
            return None;
        }
        let mut locs = LocMap::default();
        let json = node.to_json(&mut String::new(), None, &mut locs);
        drop(node);
        // A value the YAML reader already reported (`!!int lots`) is not reported
        // again by the schema check.
        let yaml_reported: Vec<Span> = self.diags[before_yaml..].iter().filter(|d| d.code == code::YAML_UNSUPPORTED).filter_map(|d| d.primary.as_ref().map(|p| p.span)).collect();
        let reported = |p: &str| locs.get(p).is_some_and(|l| yaml_reported.contains(&l.value));
        let bad = self.workflow_checker.check(&json, &Target { base: "", locs: &locs, span: whole }, &reported, &mut self.diags);

        // Keep checking what is sound: drop the steps and top-level fields that failed.
        let step_ids: Vec<String> = json.get("steps").and_then(Value::as_object).map(|o| o.keys().cloned().collect()).unwrap_or_default();
        // Only a document with errors needs a cleaned copy.
        let mut clean = if bad.is_empty() { Value::Null } else { json.clone() };
        // Inputs and secrets with an error: still declared (so that references to
        // them are not reported too), but not checked any further.
        let mut bad_decls: HashSet<(String, String)> = HashSet::new();
        for p in &bad {
            let segs: Vec<String> = p.split('/').skip(1).map(|s| s.replace("~1", "/").replace("~0", "~")).collect();
            let Some(obj) = clean.as_object_mut() else { break };
            match segs.as_slice() {
                [] => return None,
                [s, id, field, ..] if s == "steps" && field != "uses" => {
                    // Drop only the field in error, so the step's other checks still run.
                    if let Some(step) = obj.get_mut("steps").and_then(|v| v.get_mut(id.as_str())).and_then(Value::as_object_mut) {
                        step.shift_remove(field);
                    }
                }
                [s, id, ..] if s == "steps" => {
                    if let Some(steps) = obj.get_mut("steps").and_then(Value::as_object_mut) {
                        steps.shift_remove(id);
                    }
                }
                [s] if s == "steps" => {
                    obj.insert("steps".into(), Value::Object(serde_json::Map::new()));
                }
                [s, name, rest @ ..] if s == "inputs" || s == "secrets" => {
                    if let Some(entry) = obj.get_mut(s.as_str()).and_then(|v| v.get_mut(name.as_str())) {
                        match (rest.first(), entry.as_object_mut()) {
                            (Some(field), Some(e)) => {
                                e.shift_remove(field);
                            }
                            _ => *entry = Value::Object(serde_json::Map::new()),
                        }
                    }
                    bad_decls.insert((s.clone(), name.clone()));
                }
                [s, ..] if s == "version" => {
                    obj.insert("version".into(), Value::from(1));
                }
                [top, ..] => {
                    obj.shift_remove(top);
                }
            }
        }
        let doc = if bad.is_empty() { &json } else { &clean };
        let raw: WorkflowFile = match WorkflowFile::deserialize(doc) {
            Ok(w) => w,
            Err(e) => {
                // The schema check should have caught it: say where it is all the same.
                if bad.is_empty() {
                    let ptr = locate_deserialize_error::<WorkflowFile>(doc, &e.to_string());
                    self.err(Diagnostic::error(code::INVALID_VALUE, format!("invalid value: {e}"), loc(&locs, &ptr, whole)));
                }
                return None;
            }
        };
        if step_ids.is_empty() && json.get("steps").is_some_and(Value::is_object) {
            let s = locs.get("/steps").map_or(whole, |l| l.key.unwrap_or(l.value));
            self.err(Diagnostic::error(code::NO_STEPS, "the workflow has no steps", s).help("add at least one step under `steps:`"));
        }
        let dir = path.parent().map_or_else(|| PathBuf::from("."), |p| if p.as_os_str().is_empty() { PathBuf::from(".") } else { p.to_path_buf() });

        self.check_inputs(&raw, &locs, &bad_decls);
        self.check_secrets(&raw, &locs, &bad_decls);

        // Plugin connectors the workflow declares with a path, before any `uses` needs them.
        for (name, settings) in &raw.connectors {
            if self.registry.has_connector(name) {
                continue;
            }
            let ptr = format!("/connectors/{}", pointer_escape(name));
            let declared = settings.get("path").and_then(Value::as_str).map(|p| dir.join(p));
            let span = declared.as_ref().map_or_else(|| key_loc(&locs, &ptr, whole), |_| loc(&locs, &format!("{ptr}/path"), whole));
            self.plugin(name, declared.as_deref(), span);
        }

        // First pass: resolve every `uses`, so that output names are known.
        let mut resolved: HashMap<String, Resolved> = HashMap::new();
        let mut outputs: HashMap<String, Option<Vec<String>>> = HashMap::new();
        let mut fan_out: HashSet<String> = HashSet::new();
        for (id, step) in &raw.steps {
            let ptr = format!("/steps/{}/uses", pointer_escape(id));
            let span = loc(&locs, &ptr, whole);
            // A `for_each` in error is still one: no cascade about `item` or outputs.
            let has_for_each = step.for_each.is_some() || json.pointer(&format!("/steps/{}/for_each", pointer_escape(id))).is_some();
            if has_for_each {
                fan_out.insert(id.clone());
            }
            match self.resolve_uses(&step.uses, span, &dir) {
                Some(Resolved::Action(a)) => {
                    let declared = self
                        .action_outputs
                        .entry(a.id())
                        .or_insert_with(|| a.output_schema().get("properties").and_then(Value::as_object).map(|p| p.keys().cloned().collect()));
                    let names = declared.clone().map(|mut v| {
                        if !step.fallback.as_deref().unwrap_or_default().is_empty() {
                            v.push("fallback_index".into());
                            v.push("fallback_reasons".into());
                        }
                        v
                    });
                    outputs.insert(id.clone(), names);
                    resolved.insert(id.clone(), Resolved::Action(a));
                }
                Some(Resolved::Workflow(w)) => {
                    outputs.insert(id.clone(), Some(w.outputs.keys().cloned().collect()));
                    resolved.insert(id.clone(), Resolved::Workflow(w));
                }
                None => {
                    outputs.insert(id.clone(), None);
                }
            }
        }

        let step_set: HashSet<&str> = step_ids.iter().map(String::as_str).collect();
        let cx = FileCx { locs: &locs, step_ids: &step_ids, step_set: &step_set, fan_out: &fan_out, outputs: &outputs, inputs: &raw.inputs, secrets: &raw.secrets };

        // Connector settings: inputs, secrets and env only.
        let mut connectors = IndexMap::new();
        for (name, settings) in &raw.connectors {
            let ptr = format!("/connectors/{}", pointer_escape(name));
            if !self.registry.has_connector(name) && self.plugins.get(name).is_none_or(Option::is_none) {
                let names: Vec<&str> = self.registry.connectors().map(|c| c.name).collect();
                let mut d = Diagnostic::error(code::UNKNOWN_ACTION, format!("unknown connector `{name}` in `connectors`"), key_loc(&locs, &ptr, whole));
                if let Some(s) = did_you_mean(name, names.iter().copied()) {
                    d = d.help(format!("did you mean `{s}`?"));
                }
                self.err(d.help(format!("available connectors: {}", names.join(", "))));
            }
            let v = Value::Object(settings.clone());
            let scope = Scope { step: None, in_loop: false, steps_allowed: false, self_allowed: false };
            self.check_exprs(&v, &ptr, &cx, scope, false, &mut Vec::new());
            connectors.insert(name.clone(), v);
        }

        // Second pass: needs, expressions, inputs of actions.
        let defaults = raw.defaults.clone().unwrap_or_default();
        let mut plans: Vec<StepPlan> = Vec::new();
        let mut edges: Vec<(String, String, Span)> = Vec::new();
        for (id, step) in &raw.steps {
            let sp = format!("/steps/{}", pointer_escape(id));
            let key_span = key_loc(&locs, &sp, whole);
            let in_loop = fan_out.contains(id);
            let mut refs: Vec<(String, Span)> = Vec::new();
            if let Some(needs) = &step.needs {
                for (i, n) in needs.ids().into_iter().enumerate() {
                    let np = match needs {
                        model::Needs::One(_) => format!("{sp}/needs"),
                        model::Needs::Many(_) => format!("{sp}/needs/{i}"),
                    };
                    let span = loc(&locs, &np, whole);
                    if n == id {
                        self.err(Diagnostic::error(code::SELF_NEEDS, format!("step `{id}` lists itself in `needs`"), span));
                    } else if step_set.contains(n) {
                        refs.push((n.to_string(), span));
                    } else {
                        let mut d = Diagnostic::error(code::UNKNOWN_NEEDS, format!("step `{id}` needs `{n}`, which is not a step of this workflow"), span).label("unknown step");
                        if let Some(s) = did_you_mean(n, step_ids.iter().map(String::as_str)) {
                            d = d.help(format!("did you mean `{s}`?"));
                        }
                        self.err(d);
                    }
                }
            }
            let scope = Scope { step: Some(id), in_loop, steps_allowed: true, self_allowed: false };
            let with = match &step.with {
                None => Value::Object(serde_json::Map::new()),
                Some(With::Map(m)) => Value::Object(m.clone()),
                Some(With::Expr(s)) => {
                    if !is_single_expression(s) {
                        self.err(
                            Diagnostic::error(code::WRONG_TYPE, format!("`with` of step `{id}` must be a mapping or one `${{{{ }}}}` expression giving a mapping"), loc(&locs, &format!("{sp}/with"), whole))
                                .label("a string, not a mapping")
                                .help("write the action's input as keys and values: `with: { key: value }`"),
                        );
                    }
                    Value::String(s.clone())
                }
            };
            self.check_exprs(&with, &format!("{sp}/with"), &cx, scope, false, &mut refs);
            let mut status_fn = false;
            let condition = step.condition.as_ref().map(|c| match c {
                Condition::Bool(b) => Value::Bool(*b),
                Condition::Expr(s) => Value::String(s.clone()),
            });
            if let Some(Value::String(s)) = &condition {
                let src = engine_expr::condition_source_of(s);
                status_fn = STATUS_FUNCTIONS.iter().any(|f| self.eval.references(&src).contains(*f) || src.contains(&format!("{f}(")));
                self.check_exprs(&Value::String(s.clone()), &format!("{sp}/if"), &cx, scope, true, &mut refs);
            }
            let for_each = step.for_each.as_ref().map(|f| match f {
                ForEach::Count(n) => Value::from(*n),
                ForEach::List(l) => Value::Array(l.clone()),
                ForEach::Expr(s) => Value::String(s.clone()),
            });
            if let Some(fe) = &for_each {
                let fscope = Scope { in_loop: false, ..scope };
                if let Value::String(s) = fe {
                    if !is_template(s) {
                        self.err(Diagnostic::error(code::WRONG_TYPE, format!("`for_each` of step `{id}` must be a list, a number or a `${{{{ }}}}` expression"), loc(&locs, &format!("{sp}/for_each"), whole)));
                    }
                }
                self.check_exprs(fe, &format!("{sp}/for_each"), &cx, fscope, false, &mut refs);
            }
            let retry = merge_retry(defaults.retry.as_ref(), step.retry.as_ref());
            let timeout = step.timeout.as_ref().or(defaults.timeout.as_ref()).and_then(|d| Duration::parse(&d.0).ok());
            let continue_on_error = step.continue_on_error.or(defaults.continue_on_error).unwrap_or(false);

            // Fallback alternatives.
            let mut fallback = Vec::new();
            for (i, fb) in step.fallback.iter().flatten().enumerate() {
                let fp = format!("{sp}/fallback/{i}");
                let action = match &fb.uses {
                    Some(u) => {
                        let span = loc(&locs, &format!("{fp}/uses"), whole);
                        match self.registry.action(u) {
                            Some(a) => Some(a.clone()),
                            None => {
                                self.err(Diagnostic::error(code::BAD_CLEANUP, format!("unknown action `{u}` in `fallback` of step `{id}`"), span));
                                None
                            }
                        }
                    }
                    None => None,
                };
                let fwith = Value::Object(fb.with.clone().unwrap_or_default());
                self.check_exprs(&fwith, &format!("{fp}/with"), &cx, scope, false, &mut refs);
                let merged = match (&fb.uses, &with) {
                    (None, Value::Object(base)) => {
                        let mut m = base.clone();
                        for (k, v) in fb.with.clone().unwrap_or_default() {
                            m.insert(k, v);
                        }
                        Value::Object(m)
                    }
                    _ => fwith,
                };
                // Its own action's input, or (without `uses`) the step's; none when
                // its `uses` is unknown (already reported).
                let target_action = match (&fb.uses, resolved.get(id)) {
                    (Some(_), _) => action.clone(),
                    (None, Some(Resolved::Action(a))) => Some(a.clone()),
                    (None, _) => None,
                };
                if let Some(a) = &target_action {
                    self.check_known_keys(a, fb.with.as_ref(), &format!("{fp}/with"), &locs, whole);
                }
                fallback.push(FallbackPlan { action, with: merged });
            }

            // Cleanup.
            let cleanup = match &step.cleanup {
                None | Some(Cleanup::Mode(CleanupMode::Auto)) => CleanupPlan::Auto,
                Some(Cleanup::Mode(CleanupMode::Never)) => CleanupPlan::Never,
                Some(Cleanup::Step(c)) => {
                    let cp = format!("{sp}/cleanup");
                    let cwith = Value::Object(c.with.clone().unwrap_or_default());
                    let cscope = Scope { self_allowed: true, ..scope };
                    self.check_exprs(&cwith, &format!("{cp}/with"), &cx, cscope, false, &mut Vec::new());
                    match self.registry.action(&c.uses) {
                        Some(a) => {
                            let a = a.clone();
                            self.check_action_input(&a, &cwith, &format!("{cp}/with"), &locs, loc(&locs, &cp, whole));
                            CleanupPlan::Step { action: a, with: cwith }
                        }
                        None => {
                            self.err(Diagnostic::error(code::BAD_CLEANUP, format!("unknown action `{}` in `cleanup` of step `{id}`", c.uses), loc(&locs, &format!("{cp}/uses"), whole)).help("`engine connectors` lists the actions"));
                            CleanupPlan::Never
                        }
                    }
                }
            };

            // The action's (or sub-workflow's) input.
            let uses = match resolved.get(id) {
                Some(Resolved::Action(a)) => {
                    let a = a.clone();
                    self.check_action_input(&a, &with, &format!("{sp}/with"), &locs, key_span);
                    Some(Uses::Action(a))
                }
                Some(Resolved::Workflow(w)) => {
                    self.check_sub_inputs(w, &with, &sp, &locs, key_span);
                    Some(Uses::Workflow(w.clone()))
                }
                None => None,
            };
            for (dep, span) in &refs {
                edges.push((dep.clone(), id.clone(), *span));
            }
            if let Some(uses) = uses {
                plans.push(StepPlan {
                    id: id.clone(),
                    span: key_span,
                    uses_text: step.uses.clone(),
                    uses,
                    with,
                    deps: Vec::new(),
                    condition,
                    status_fn,
                    for_each,
                    retry,
                    timeout,
                    continue_on_error,
                    cleanup,
                    fallback,
                    description: step.description.clone(),
                });
            }
        }

        // Workflow outputs.
        for (name, v) in &raw.outputs {
            let scope = Scope { step: None, in_loop: false, steps_allowed: true, self_allowed: false };
            self.check_exprs(v, &format!("/outputs/{}", pointer_escape(name)), &cx, scope, false, &mut Vec::new());
        }

        // The graph, over every step id (even those that failed other checks).
        let mut graph: DiGraph<String, Span> = DiGraph::new();
        let nodes: HashMap<String, NodeIndex> = step_ids.iter().map(|id| (id.clone(), graph.add_node(id.clone()))).collect();
        let mut seen_edges = HashSet::new();
        for (from, to, span) in &edges {
            if seen_edges.insert((from.clone(), to.clone())) {
                graph.add_edge(nodes[from], nodes[to], *span);
            }
        }
        if !self.report_cycles(&graph, &step_ids, &locs, whole) {
            return None;
        }
        let index: HashMap<String, usize> = plans.iter().enumerate().map(|(i, p)| (p.id.clone(), i)).collect();
        for p in &mut plans {
            let n = nodes[&p.id];
            let mut deps: Vec<usize> = graph.neighbors_directed(n, petgraph::Direction::Incoming).filter_map(|d| index.get(&graph[d]).copied()).collect();
            deps.sort_unstable();
            deps.dedup();
            p.deps = deps;
        }
        let order: Vec<usize> = petgraph::algo::toposort(&graph, None)
            .map(|o| o.into_iter().filter_map(|n| index.get(&graph[n]).copied()).collect())
            .unwrap_or_default();

        let name = raw.name.clone().unwrap_or_else(|| path.file_stem().map_or_else(|| "workflow".into(), |s| s.to_string_lossy().into_owned()));
        // Sub-workflows use this file's connector settings where they have none of their own.
        let mut plans = plans;
        for p in &mut plans {
            if let Uses::Workflow(sub) = &p.uses {
                p.uses = Uses::Workflow(sub.inheriting(&connectors));
            }
        }
        Some(Workflow {
            file,
            path: path.to_path_buf(),
            dir,
            name,
            description: raw.description.clone(),
            inputs: raw.inputs.clone(),
            secrets: raw.secrets.clone(),
            connectors,
            concurrency: raw.concurrency.map(|c| c as usize),
            on_failure: raw.on_failure.unwrap_or_default(),
            steps: plans,
            index,
            outputs: raw.outputs.clone(),
            order,
        })
    }

    fn check_inputs(&mut self, raw: &WorkflowFile, locs: &LocMap, bad_decls: &HashSet<(String, String)>) {
        for (name, spec) in &raw.inputs {
            if bad_decls.contains(&("inputs".to_string(), name.clone())) {
                continue;
            }
            let ip = format!("/inputs/{}", pointer_escape(name));
            if let Some(p) = &spec.pattern {
                if let Err(e) = regex::Regex::new(p) {
                    self.err(Diagnostic::error(code::BAD_INPUT_SPEC, format!("the pattern of input `{name}` is not a valid regular expression"), loc(locs, &format!("{ip}/pattern"), Span::default())).help(e.to_string()));
                    continue;
                }
            }
            if let Some(d) = &spec.default {
                if let Err(m) = check_value(name, spec, d) {
                    self.err(Diagnostic::error(code::BAD_INPUT_SPEC, format!("the default of input `{name}` does not satisfy its own declaration: {m}"), loc(locs, &format!("{ip}/default"), Span::default())));
                }
            }
        }
    }

    fn check_secrets(&mut self, raw: &WorkflowFile, locs: &LocMap, bad_decls: &HashSet<(String, String)>) {
        for (name, s) in &raw.secrets {
            if bad_decls.contains(&("secrets".to_string(), name.clone())) {
                continue;
            }
            let sp = format!("/secrets/{}", pointer_escape(name));
            if s.env.is_some() == s.file.is_some() {
                self.err(Diagnostic::error(code::INVALID_VALUE, format!("secret `{name}` needs exactly one source: `env: VAR` or `file: PATH`"), key_loc(locs, &sp, Span::default())));
            }
        }
    }

    fn resolve_uses(&mut self, uses: &str, span: Span, dir: &Path) -> Option<Resolved> {
        let is_path = uses.starts_with("./") || uses.starts_with("../") || uses.starts_with('/') || uses.ends_with(".yaml") || uses.ends_with(".yml");
        if is_path {
            let p = dir.join(uses);
            let key = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
            if let Some(i) = self.stack.iter().position(|s| *s == key) {
                let chain: Vec<String> = self.stack[i..].iter().chain(std::iter::once(&key)).map(|p| p.file_name().map_or_else(String::new, |f| f.to_string_lossy().into_owned())).collect();
                self.err(Diagnostic::error(code::SUBWORKFLOW, format!("sub-workflow `{uses}` includes itself: {}", chain.join(" -> ")), span));
                return None;
            }
            let text = match std::fs::read_to_string(&p) {
                Ok(t) => t,
                Err(e) => {
                    self.err(Diagnostic::error(code::SUBWORKFLOW, format!("cannot read sub-workflow `{uses}`: {e}"), span).help(format!("paths are relative to the including file's directory (`{}`)", dir.display())));
                    return None;
                }
            };
            return match self.load_str(&p, text) {
                Some(w) => Some(Resolved::Workflow(w)),
                None => {
                    self.err(Diagnostic::error(code::SUBWORKFLOW, format!("sub-workflow `{uses}` has errors"), span).help("they are reported at their own location"));
                    None
                }
            };
        }
        if let Some(a) = self.registry.action(uses) {
            return Some(Resolved::Action(a.clone()));
        }
        let connector = uses.split('.').next().unwrap_or(uses);
        let plugin = if self.registry.has_connector(connector) || !uses.contains('.') { None } else { self.plugin(connector, None, span) };
        if let Some(actions) = &plugin {
            if let Some(a) = actions.iter().find(|a| a.id() == uses) {
                return Some(Resolved::Action(a.clone()));
            }
        }
        let d = if (self.registry.has_connector(connector) || plugin.is_some()) && uses.contains('.') {
            let actions: Vec<&str> = match &plugin {
                Some(p) => p.iter().map(|a| a.id()).collect(),
                None => self.registry.connectors().find(|c| c.name == connector).map(|c| c.actions.clone()).unwrap_or_default(),
            };
            let mut d = Diagnostic::error(code::UNKNOWN_ACTION, format!("connector `{connector}` has no action `{}`", &uses[connector.len() + 1..]), span);
            if let Some(s) = did_you_mean(uses, actions.iter().copied()) {
                d = d.help(format!("did you mean `{s}`?"));
            }
            d.help(format!("its actions: {}", actions.join(", ")))
        } else {
            let ids: Vec<&str> = self.registry.action_ids().collect();
            let names: Vec<&str> = self.registry.connectors().map(|c| c.name).collect();
            let mut d = Diagnostic::error(code::UNKNOWN_ACTION, format!("unknown action `{uses}`"), span);
            if let Some(s) = did_you_mean(uses, ids.iter().copied()) {
                d = d.help(format!("did you mean `{s}`?"));
            }
            d.help(format!("`uses` is `connector.action` or a path to a workflow file (`./x.yaml`); connectors: {}", names.join(", ")))
        };
        self.err(d);
        None
    }

    fn checker(&mut self, a: &Arc<dyn DynAction>) -> &SchemaChecker {
        self.action_checkers.entry(a.id()).or_insert_with(|| SchemaChecker::new(a.input_schema(), Some(a.id().to_string())))
    }

    fn check_action_input(&mut self, a: &Arc<dyn DynAction>, with: &Value, base: &str, locs: &LocMap, span: Span) {
        if with.is_string() {
            return;
        }
        let with_c = with.clone();
        let skip = move |p: &str| {
            // Skip errors on values that hold expressions (checked again once rendered).
            let mut cur = String::new();
            if with_c.pointer("").is_some_and(|v| v.as_str().is_some_and(is_template)) {
                return true;
            }
            for seg in p.split('/').skip(1) {
                cur.push('/');
                cur.push_str(seg);
                if with_c.pointer(&cur).is_some_and(|v| v.as_str().is_some_and(is_template)) {
                    return true;
                }
            }
            false
        };
        let mut diags = Vec::new();
        let bad = self.checker(a).check(with, &Target { base, locs, span }, &skip, &mut diags);
        let n = diags.len();
        self.diags.extend(diags);
        if n == 0 && bad.is_empty() && !contains_template(with) {
            if let Err(e) = a.validate_value(with) {
                self.err(Diagnostic::error(code::BAD_ACTION_INPUT, format!("invalid input for `{}`: {}", a.id(), e.message), loc(locs, base, span)));
            }
        }
    }

    fn check_known_keys(&mut self, a: &Arc<dyn DynAction>, with: Option<&serde_json::Map<String, Value>>, base: &str, locs: &LocMap, whole: Span) {
        let allowed = self.checker(a).allowed_keys("");
        for k in with.into_iter().flat_map(|m| m.keys()) {
            if !allowed.contains(k) {
                let mut d = Diagnostic::error(code::BAD_ACTION_INPUT, format!("unknown key `{k}` in the input of `{}`", a.id()), key_loc(locs, &format!("{base}/{}", pointer_escape(k)), whole));
                if let Some(s) = did_you_mean(k, allowed.iter().map(String::as_str)) {
                    d = d.help(format!("did you mean `{s}`?"));
                }
                self.err(d.help(format!("accepted keys: {}", allowed.join(", "))));
            }
        }
    }

    fn check_sub_inputs(&mut self, w: &Arc<Workflow>, with: &Value, sp: &str, locs: &LocMap, key_span: Span) {
        let Value::Object(m) = with else { return };
        for (k, v) in m {
            let kp = format!("{sp}/with/{}", pointer_escape(k));
            match w.inputs.get(k) {
                None => {
                    let names: Vec<&str> = w.inputs.keys().map(String::as_str).collect();
                    let mut d = Diagnostic::error(code::BAD_ACTION_INPUT, format!("sub-workflow `{}` has no input `{k}`", w.path.display()), key_loc(locs, &kp, key_span));
                    if let Some(s) = did_you_mean(k, names.iter().copied()) {
                        d = d.help(format!("did you mean `{s}`?"));
                    }
                    self.err(d.help(format!("its inputs: {}", if names.is_empty() { "none".to_string() } else { names.join(", ") })));
                }
                Some(spec) if !contains_template(v) => {
                    if let Err(e) = check_value(k, spec, v) {
                        self.err(Diagnostic::error(code::BAD_ACTION_INPUT, format!("input `{k}` of sub-workflow `{}`: {e}", w.path.display()), loc(locs, &kp, key_span)));
                    }
                }
                Some(_) => {}
            }
        }
        for (k, spec) in &w.inputs {
            if !m.contains_key(k) && spec.default.is_none() && spec.required != Some(false) {
                self.err(Diagnostic::error(code::BAD_ACTION_INPUT, format!("missing required input `{k}` of sub-workflow `{}`", w.path.display()), key_span));
            }
        }
    }

    fn check_exprs(&mut self, v: &Value, ptr: &str, cx: &FileCx<'_>, scope: Scope<'_>, condition: bool, refs: &mut Vec<(String, Span)>) {
        match v {
            Value::String(s) => {
                let vspan = loc(cx.locs, ptr, Span::default());
                if condition && !is_template(s) {
                    self.check_expr(s, vspan, cx, scope, refs);
                    return;
                }
                if !is_template(s) {
                    return;
                }
                match scan(s) {
                    Err(e) => {
                        // The n-th `${{` of the value is the n-th of its raw text (quoting
                        // changes offsets, not the order of the delimiters).
                        let nth = s[..e.offset].matches("${{").count();
                        let raw = self.sources.snippet(vspan);
                        let span = raw.match_indices("${{").nth(nth).map_or(vspan, |(at, _)| vspan.sub(at, 3));
                        self.err(Diagnostic::error(code::EXPR_SYNTAX, e.message, span));
                    }
                    Ok(parts) => {
                        let mut cursor = 0;
                        for p in parts {
                            if let Part::Expr(e) = p {
                                let span = match self.find_in(vspan, &e.src, cursor) {
                                    Some(sp) => {
                                        cursor = (sp.end - vspan.start) as usize;
                                        sp
                                    }
                                    None => vspan,
                                };
                                self.check_expr(&e.src, span, cx, scope, refs);
                            }
                        }
                    }
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    self.check_exprs(x, &format!("{ptr}/{i}"), cx, scope, false, refs);
                }
            }
            Value::Object(o) => {
                for (k, x) in o {
                    self.check_exprs(x, &format!("{ptr}/{}", pointer_escape(k)), cx, scope, false, refs);
                }
            }
            _ => {}
        }
    }

    /// The span of `needle` inside the raw text of `outer`, searching from `from`.
    fn find_in(&self, outer: Span, needle: &str, from: usize) -> Option<Span> {
        let raw = self.sources.snippet(outer);
        let at = raw.get(from..)?.find(needle)? + from;
        Some(outer.sub(at, needle.len()))
    }

    /// The span of a reference (`inputs.zone`) inside the raw text of `outer`,
    /// at a name boundary, in dotted or subscript form.
    fn find_ref_in(&self, outer: Span, reference: &str) -> Option<Span> {
        let r = engine_expr::find_reference(self.sources.snippet(outer), reference)?;
        Some(outer.sub(r.start, r.end - r.start))
    }

    #[allow(clippy::too_many_lines)]
    fn check_expr(&mut self, src: &str, span: Span, cx: &FileCx<'_>, scope: Scope<'_>, refs: &mut Vec<(String, Span)>) {
        if let Err(e) = self.eval.check(src) {
            let at = match &e.range {
                Some(r) if r.end <= src.len() && span.len() == src.len() => span.sub(r.start, (r.end - r.start).max(1)),
                _ => span,
            };
            let mut d = Diagnostic::error(code::EXPR_SYNTAX, format!("invalid expression: {}", e.message), at);
            if e.range.as_ref().and_then(|r| src.get(r.clone())).is_some_and(|t| !t.is_ascii()) {
                d = d.help("names in expressions hold only ASCII letters, digits and `_`; other text goes in quotes: `'région'`");
            }
            self.err(d.help("expressions use Jinja syntax: `${{ steps.a.outputs.x }}`, `${{ inputs.n + 1 }}`, `${{ x | default('y') }}`"));
            return;
        }
        let unknown_callables = self.eval.unknown_callables(src);
        for name in &unknown_callables {
            let at = self.find_ref_in(span, name).unwrap_or(span);
            self.err(Diagnostic::error(code::EXPR_UNKNOWN_FILTER, format!("unknown filter or function `{name}`"), at).help("filters: Jinja's built-ins plus `shell_quote` and `fromjson`; functions: `range`, `success`, `failure`, `always`"));
        }
        let mut names: Vec<String> = self.eval.references(src).into_iter().collect();
        names.sort();
        // Keep the longest chains only (`steps.a.outputs.x` covers `steps.a`).
        for r in &names {
            let segs: Vec<&str> = r.split('.').collect();
            // An unknown function is a name too: it is reported once, above.
            if segs.len() == 1 && unknown_callables.contains(r) {
                continue;
            }
            let at = self.find_ref_in(span, r).or_else(|| self.find_ref_in(span, segs[0])).unwrap_or(span);
            let root = segs[0];
            match root {
                "inputs" => {
                    if let Some(n) = segs.get(1) {
                        if !cx.inputs.contains_key(*n) {
                            let mut d = Diagnostic::error(code::EXPR_UNKNOWN_INPUT, format!("`inputs.{n}` is not declared"), at);
                            if let Some(s) = did_you_mean(n, cx.inputs.keys().map(String::as_str)) {
                                d = d.help(format!("did you mean `inputs.{s}`?"));
                            }
                            self.err(d.help("declare it under `inputs:`"));
                        }
                    }
                }
                "secrets" => {
                    if let Some(n) = segs.get(1) {
                        if !cx.secrets.contains_key(*n) {
                            let mut d = Diagnostic::error(code::EXPR_UNKNOWN_SECRET, format!("`secrets.{n}` is not declared"), at);
                            if let Some(s) = did_you_mean(n, cx.secrets.keys().map(String::as_str)) {
                                d = d.help(format!("did you mean `secrets.{s}`?"));
                            }
                            self.err(d.help("declare it under `secrets:` with `env:` or `file:`"));
                        }
                    }
                }
                "env" => {}
                "steps" => {
                    if !scope.steps_allowed {
                        self.err(Diagnostic::error(code::EXPR_UNKNOWN_NAME, "connector settings cannot refer to steps", at).help("they are resolved before any step runs; use inputs, secrets or env"));
                        continue;
                    }
                    let Some(id) = segs.get(1) else { continue };
                    if !cx.step_set.contains(id) {
                        let mut d = Diagnostic::error(code::EXPR_UNKNOWN_STEP, format!("`steps.{id}` refers to an unknown step"), at);
                        if let Some(s) = did_you_mean(id, cx.step_ids.iter().map(String::as_str)) {
                            d = d.help(format!("did you mean `steps.{s}`?"));
                        }
                        self.err(d);
                        continue;
                    }
                    if Some(*id) == scope.step && !scope.self_allowed {
                        self.err(Diagnostic::error(code::SELF_NEEDS, format!("step `{id}` refers to its own outputs"), at).help("a step cannot use its own outputs; split it in two"));
                        continue;
                    }
                    match segs.get(2) {
                        None | Some(&"outputs" | &"status") => {}
                        Some(other) => {
                            self.err(Diagnostic::error(code::EXPR_UNKNOWN_NAME, format!("`steps.{id}.{other}` does not exist"), at).help(format!("a step has `outputs` and `status`: `steps.{id}.outputs`")));
                            continue;
                        }
                    }
                    if segs.get(2) == Some(&"outputs") {
                        if let Some(out) = segs.get(3) {
                            if cx.fan_out.contains(*id) {
                                if out.parse::<usize>().is_err() {
                                    self.err(Diagnostic::error(code::EXPR_UNKNOWN_OUTPUT, format!("step `{id}` runs `for_each`: `steps.{id}.outputs` is a list, it has no `{out}`"), at)
                                        .help(format!("pick an element (`steps.{id}.outputs[0].{out}`) or map over them (`steps.{id}.outputs | map(attribute='{out}') | list`)")));
                                }
                            } else if let Some(Some(declared)) = cx.outputs.get(*id) {
                                if !declared.iter().any(|d| d == out) {
                                    let mut d = Diagnostic::error(code::EXPR_UNKNOWN_OUTPUT, format!("step `{id}` has no output `{out}`"), at);
                                    if let Some(s) = did_you_mean(out, declared.iter().map(String::as_str)) {
                                        d = d.help(format!("did you mean `{s}`?"));
                                    }
                                    self.err(d.help(format!("its outputs: {}", declared.join(", "))));
                                }
                            }
                        }
                    }
                    if Some(*id) != scope.step {
                        refs.push(((*id).to_string(), at));
                    }
                }
                "item" | "index" => {
                    if !scope.in_loop {
                        self.err(Diagnostic::error(code::EXPR_ITEM_OUTSIDE_LOOP, format!("`{root}` is only defined in a step with `for_each`"), at));
                    }
                }
                "run" => {
                    if let Some(n) = segs.get(1) {
                        if !matches!(*n, "id" | "name") {
                            self.err(Diagnostic::error(code::EXPR_UNKNOWN_NAME, format!("`run.{n}` does not exist"), at).help("`run` has `id` and `name`"));
                        }
                    }
                }
                "workflow" => {
                    if let Some(n) = segs.get(1) {
                        if *n != "dir" {
                            self.err(Diagnostic::error(code::EXPR_UNKNOWN_NAME, format!("`workflow.{n}` does not exist"), at).help("`workflow` has `dir`"));
                        }
                    }
                }
                f if FUNCTIONS.contains(&f) => {}
                other => {
                    let mut d = Diagnostic::error(code::EXPR_UNKNOWN_NAME, format!("unknown name `{other}` in expression"), at);
                    if let Some(s) = did_you_mean(other, SCOPE.iter().copied()) {
                        d = d.help(format!("did you mean `{s}`?"));
                    }
                    self.err(d.help(format!("in scope: {}", SCOPE.join(", "))));
                }
            }
        }
    }

    fn report_cycles(&mut self, graph: &DiGraph<String, Span>, step_ids: &[String], locs: &LocMap, whole: Span) -> bool {
        let mut ok = true;
        let pos: HashMap<&str, usize> = step_ids.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
        for scc in petgraph::algo::tarjan_scc(graph) {
            let is_cycle = scc.len() > 1 || graph.contains_edge(scc[0], scc[0]);
            if !is_cycle {
                continue;
            }
            ok = false;
            let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
            let start = *scc.iter().min_by_key(|n| pos.get(graph[**n].as_str()).copied().unwrap_or(usize::MAX)).unwrap_or(&scc[0]);
            // Walk "depends on" edges (incoming) inside the component back to the start.
            let chain = find_cycle(graph, start, &members);
            let names: Vec<&str> = chain.iter().map(|n| graph[*n].as_str()).collect();
            let first = &graph[start];
            let mut d = Diagnostic::error(code::CYCLE, format!("dependency cycle: {}", names.join(" -> ")), key_loc(locs, &format!("/steps/{}", pointer_escape(first)), whole))
                .label(format!("`{first}` waits for itself through this chain"));
            for w in chain.windows(2) {
                if let Some(e) = graph.find_edge(w[1], w[0]) {
                    d = d.secondary(graph[e], format!("`{}` depends on `{}` here", graph[w[0]], graph[w[1]]));
                }
            }
            self.err(d.help("break the loop: one of these steps must not need the next"));
        }
        ok
    }
}

fn find_cycle(graph: &DiGraph<String, Span>, start: NodeIndex, members: &BTreeSet<NodeIndex>) -> Vec<NodeIndex> {
    // BFS over "depends on" edges (edge dep -> step, so follow incoming) to find the
    // shortest way back to `start`.
    let mut prev: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(n) = queue.pop_front() {
        let mut deps: Vec<NodeIndex> = graph.neighbors_directed(n, petgraph::Direction::Incoming).filter(|d| members.contains(d)).collect();
        deps.sort();
        for d in deps {
            if d == start {
                let mut path = vec![start];
                let mut cur = n;
                while cur != start {
                    path.push(cur);
                    cur = prev[&cur];
                }
                let mut chain = vec![start];
                chain.extend(path.into_iter().skip(1).rev());
                chain.push(start);
                return chain;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(d) {
                e.insert(n);
                queue.push_back(d);
            }
        }
    }
    vec![start, start]
}

fn merge_retry(defaults: Option<&model::RetrySpec>, step: Option<&model::RetrySpec>) -> RetryPolicy {
    let mut p = RetryPolicy::default();
    for spec in [defaults, step].into_iter().flatten() {
        if let Some(a) = spec.attempts {
            p.attempts = a;
        }
        if let Some(d) = spec.delay.as_ref().and_then(|d| Duration::parse(&d.0).ok()) {
            p.delay = d;
        }
        if let Some(b) = spec.backoff {
            p.backoff = b;
        }
        if let Some(d) = spec.max_delay.as_ref().and_then(|d| Duration::parse(&d.0).ok()) {
            p.max_delay = d;
        }
        if let Some(j) = spec.jitter {
            p.jitter = j;
        }
        if let Some(on) = &spec.on {
            p.on = match on {
                model::RetryOn::Preset(RetryPreset::Transient) => RetryOn::Transient,
                model::RetryOn::Preset(RetryPreset::Any) => RetryOn::Any,
                model::RetryOn::Kinds(k) => RetryOn::Kinds(k.clone()),
            };
        }
    }
    p
}

/// Whether a string is exactly one `${{ }}` expression.
fn is_single_expression(s: &str) -> bool {
    matches!(scan(s).as_deref(), Ok([Part::Expr(_)]))
}

/// Where in `doc` deserializing it as `T` fails with `message`: the JSON pointer
/// of the deepest value that does. Found by deserializing prefixes of the
/// document: entries are read in order, so the first prefix that reproduces the
/// error ends with the culprit.
fn locate_deserialize_error<T: serde::de::DeserializeOwned>(doc: &Value, message: &str) -> String {
    let fails_the_same = |d: &Value| serde_json::from_value::<T>(d.clone()).err().is_some_and(|e| e.to_string() == message);
    let mut doc = doc.clone();
    let mut ptr = String::new();
    loop {
        let Some(node) = doc.pointer(&ptr).cloned() else { return ptr };
        let children: Vec<String> = match &node {
            Value::Object(o) => o.keys().map(|k| pointer_escape(k).into_owned()).collect(),
            Value::Array(a) => (0..a.len()).map(|i| i.to_string()).collect(),
            _ => return ptr,
        };
        let mut found = None;
        for i in 0..children.len() {
            let mut trial = doc.clone();
            match trial.pointer_mut(&ptr) {
                Some(Value::Object(o)) => {
                    let keep: Vec<String> = o.keys().take(i + 1).cloned().collect();
                    o.retain(|k, _| keep.contains(k));
                }
                Some(Value::Array(a)) => a.truncate(i + 1),
                _ => {}
            }
            if fails_the_same(&trial) {
                found = Some((i, trial));
                break;
            }
        }
        match found {
            Some((i, trial)) => {
                doc = trial;
                ptr = format!("{ptr}/{}", children[i]);
            }
            None => return ptr,
        }
    }
}

fn contains_template(v: &Value) -> bool {
    match v {
        Value::String(s) => is_template(s),
        Value::Array(a) => a.iter().any(contains_template),
        Value::Object(o) => o.values().any(contains_template),
        _ => false,
    }
}

fn loc(locs: &LocMap, ptr: &str, fallback: Span) -> Span {
    locs.get(ptr).map_or(fallback, |l| l.value)
}

fn key_loc(locs: &LocMap, ptr: &str, fallback: Span) -> Span {
    locs.get(ptr).map_or(fallback, |l| l.key.unwrap_or(l.value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn locate(doc: &Value) -> String {
        let e = serde_json::from_value::<WorkflowFile>(doc.clone()).expect_err("fails");
        locate_deserialize_error::<WorkflowFile>(doc, &e.to_string())
    }

    #[test]
    fn deserialize_errors_are_located_at_the_value() {
        let step = json!({"uses": "fake.run"});
        assert_eq!(locate(&json!({"version": 1, "concurrency": 2.0, "steps": {"a": step}})), "/concurrency");
        assert_eq!(locate(&json!({"version": 1.0, "steps": {"a": step}})), "/version");
        let doc = json!({"version": 1, "steps": {"a": step, "b": {"uses": "x", "retry": {"delay": "1s", "attempts": 2.0}}, "c": {"uses": "x", "retry": {"attempts": 3.0}}}});
        assert_eq!(locate(&doc), "/steps/b/retry/attempts");
        let doc = json!({"version": 1, "steps": {"a": {"uses": "x", "for_each": [1, 2]}, "b": {"uses": "x", "for_each": 2.0}}});
        assert_eq!(locate(&doc), "/steps/b/for_each");
        let doc = json!({"version": 1, "steps": {"a": {"uses": "x", "retry": {"on": ["capacity", "flaky"]}}}});
        assert_eq!(locate(&doc), "/steps/a/retry/on/1");
    }
}
