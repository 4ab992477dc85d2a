//! The verbs.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use engine_connector::Registry;
use engine_core::diagnostics::{code, explain};
use engine_core::{Diagnostic, SourceMap};
use engine_expr::{is_template, Evaluator};
use engine_runtime::EventSink;
use engine_spec::inputs::resolve_inputs;
use engine_spec::yaml::LocMap;
use engine_spec::{Loader, Uses, Workflow};
use engine_expr::JValue;
use serde_json::{Map, Value};

use crate::cli::{Cli, Command, DiagFormat, GraphFormat, OutputMode};
use crate::{diagnostics, durable, output, registry};

/// Run a command; the exit code.
pub fn dispatch(cli: Cli) -> u8 {
    let registry = registry::builtin();
    let state = cli.state;
    match cli.command {
        Command::Run { file, inputs, inputs_file, concurrency, output } => run(&registry, state.as_deref(), &file, &inputs, inputs_file.as_deref(), concurrency, output),
        Command::Runs { limit } => durable::with_store(state.as_deref(), |s| durable::runs(s, limit)),
        Command::Show { run, output } => durable::with_store(state.as_deref(), |s| durable::show(s, &run, output)),
        Command::Logs { run, step, follow } => durable::with_store(state.as_deref(), |s| durable::logs(s, &run, step.as_deref(), follow)),
        Command::Resume { run, concurrency, output } => durable::with_store(state.as_deref(), |s| durable::resume(&registry, s, &run, concurrency, output)),
        Command::Destroy { run, output } => durable::with_store(state.as_deref(), |s| durable::destroy(&registry, s, &run, output)),
        Command::Validate { files, format } => validate(&registry, &files, format),
        Command::Plan { file, inputs, inputs_file } => plan(&registry, &file, &inputs, inputs_file.as_deref()),
        Command::Graph { file, format } => graph(&registry, &file, format),
        Command::Connectors { name } => connectors(&registry, name.as_deref()),
        Command::Schema => {
            println!("{}", serde_json::to_string_pretty(&engine_spec::model::workflow_schema()).unwrap_or_default());
            0
        }
        Command::Explain { code } => match explain(&code) {
            Some((_, _, body)) => {
                print!("{body}");
                0
            }
            None => {
                eprintln!("error: unknown code `{code}`; codes look like WF0101");
                2
            }
        },
    }
}

fn load(registry: &Registry, file: &Path) -> Result<(Arc<Workflow>, SourceMap), u8> {
    let mut loader = Loader::with_resolver(registry, &registry::Plugins);
    let wf = loader.load(file);
    if loader.has_errors() || wf.is_none() {
        diagnostics::print_all(&loader.sources, &loader.diags);
        return Err(2);
    }
    Ok((wf.expect("checked above"), loader.sources))
}

fn validate(registry: &Registry, files: &[PathBuf], format: DiagFormat) -> u8 {
    let mut loader = Loader::with_resolver(registry, &registry::Plugins);
    let mut ok = true;
    let mut summaries = Vec::new();
    for f in files {
        let before = loader.diags.len();
        let wf = loader.load(f);
        let errs = loader.diags[before..].iter().any(Diagnostic::is_error);
        ok &= !errs && wf.is_some();
        if let (Some(w), false) = (wf, errs) {
            summaries.push(format!("{}: ok ({} step{})", f.display(), w.steps.len(), if w.steps.len() == 1 { "" } else { "s" }));
        }
    }
    match format {
        DiagFormat::Json => println!("{}", diagnostics::to_json(&loader.sources, &loader.diags)),
        DiagFormat::Text => {
            diagnostics::print_all(&loader.sources, &loader.diags);
            for s in summaries {
                eprintln!("{s}");
            }
        }
    }
    if ok {
        0
    } else {
        2
    }
}

/// `-i k=v` pairs and the `--inputs` file, resolved against the declarations.
fn inputs(wf: &Workflow, sources: &mut SourceMap, pairs: &[String], file: Option<&Path>) -> Result<Map<String, Value>, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut cli = Vec::new();
    for p in pairs {
        match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => cli.push((k.to_string(), v.to_string())),
            _ => diags.push(Diagnostic::unlocated(code::INPUT_TYPE, format!("`-i {p}`: write `-i name=value`"))),
        }
    }
    let mut given = Map::new();
    if let Some(f) = file {
        match std::fs::read_to_string(f) {
            Err(e) => diags.push(Diagnostic::unlocated(code::IO, format!("cannot read inputs file `{}`: {e}", f.display()))),
            Ok(text) => {
                let id = sources.add(f, text);
                let (node, d) = engine_spec::yaml::parse(sources.get(id), id);
                diags.extend(d);
                if let Some(n) = node {
                    match n.to_json(&mut String::new(), None, &mut LocMap::default()) {
                        Value::Object(m) => given = m,
                        Value::Null => {}
                        _ => diags.push(Diagnostic::error(code::NOT_A_MAPPING, "an inputs file must be a mapping of input names to values", n.span)),
                    }
                }
            }
        }
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    resolve_inputs(&wf.inputs, &given, &cli)
}

/// Every workflow of the tree, the importer before what it imports, each once.
fn workflow_tree(wf: &Workflow) -> Vec<&Workflow> {
    let mut out: Vec<&Workflow> = vec![wf];
    let mut i = 0;
    while i < out.len() {
        for s in &out[i].steps {
            if let engine_spec::plan::Uses::Workflow(sub) = &s.uses {
                if !out.iter().any(|w| w.path == sub.path) {
                    out.push(sub);
                }
            }
        }
        i += 1;
    }
    out
}

/// The secrets the workflow and its sub-workflows declare, resolved; one scope for the whole
/// run, where the importer's declaration of a name wins over a sub-workflow's.
pub(crate) fn secrets(wf: &Workflow) -> Result<Map<String, Value>, Vec<Diagnostic>> {
    let mut out = Map::new();
    let mut diags = Vec::new();
    let declared = workflow_tree(wf).into_iter().flat_map(|w| w.secrets.iter().map(move |(name, src)| (w, name, src)));
    let mut seen = std::collections::HashSet::new();
    for (wf, name, src) in declared {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(var) = &src.env {
            match std::env::var(var) {
                Ok(v) => {
                    out.insert(name.clone(), Value::String(v));
                }
                Err(_) => diags.push(Diagnostic::unlocated(code::SECRET_UNAVAILABLE, format!("secret `{name}`: environment variable `{var}` is not set")).help(format!("export {var}=... before running"))),
            }
        } else if let Some(file) = &src.file {
            let path = expand_home(file, &wf.dir);
            match std::fs::read_to_string(&path) {
                Ok(v) => {
                    let v = v.strip_suffix('\n').map(|s| s.strip_suffix('\r').unwrap_or(s)).unwrap_or(&v).to_string();
                    out.insert(name.clone(), Value::String(v));
                }
                Err(e) => diags.push(Diagnostic::unlocated(code::SECRET_UNAVAILABLE, format!("secret `{name}`: cannot read `{}`: {e}", path.display()))),
            }
        }
    }
    if diags.is_empty() {
        Ok(out)
    } else {
        Err(diags)
    }
}

fn expand_home(p: &str, dir: &Path) -> PathBuf {
    if let Some(rest) = p.strip_prefix("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    dir.join(p)
}

/// A run id: UTC date and time, then 4 random hex digits (`20261123-201530-a1b2`).
pub(crate) fn new_run_id() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let salt = (now.subsec_nanos() ^ std::process::id().rotate_left(16)) & 0xffff;
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}-{salt:04x}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Load a workflow and resolve its inputs; what went wrong is printed, exit 2.
fn load_with_inputs(registry: &Registry, file: &Path, pairs: &[String], inputs_file: Option<&Path>) -> Result<(Arc<Workflow>, SourceMap, Map<String, Value>), u8> {
    let (wf, mut sources) = load(registry, file)?;
    match inputs(&wf, &mut sources, pairs, inputs_file) {
        Ok(v) => Ok((wf, sources, v)),
        Err(d) => {
            diagnostics::print_all(&sources, &d);
            Err(2)
        }
    }
}

fn run(registry: &Registry, state: Option<&Path>, file: &Path, pairs: &[String], inputs_file: Option<&Path>, concurrency: Option<usize>, mode: Option<OutputMode>) -> u8 {
    let (wf, sources, values) = match load_with_inputs(registry, file, pairs, inputs_file) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let secret_values = match secrets(&wf) {
        Ok(s) => s,
        Err(d) => {
            diagnostics::print_all(&sources, &d);
            return 2;
        }
    };
    if concurrency == Some(0) {
        eprintln!("error: --concurrency must be at least 1");
        return 2;
    }
    durable::with_store(state, |store| {
        let run = durable::Session { wf: wf.clone(), run_id: new_run_id(), inputs: values.clone(), secrets: secret_values.clone() };
        durable::drive(store, run, concurrency, mode, false)
    })
}

/// The sink for an output mode (`None`: tty on a terminal, else plain).
pub(crate) fn sink(mode: Option<OutputMode>) -> (OutputMode, Arc<dyn EventSink>) {
    let mode = mode.unwrap_or(if std::io::stderr().is_terminal() { OutputMode::Tty } else { OutputMode::Plain });
    let sink: Arc<dyn EventSink> = match mode {
        OutputMode::Json => Arc::new(output::JsonSink::new()),
        OutputMode::Plain => Arc::new(output::PlainSink::new()),
        OutputMode::Tty => Arc::new(output::TtySink::new()),
    };
    (mode, sink)
}

/// Render a template for `plan`: values that depend on steps are shown as
/// `(known after step X)`, secrets as `(sensitive)`.
fn plan_value(eval: &Evaluator, v: &Value, ctx: &JValue, wf: &Workflow) -> Value {
    match v {
        Value::String(s) if is_template(s) => {
            let mut after: Vec<String> = Vec::new();
            let mut sensitive = false;
            let mut per_item = false;
            for part in engine_expr::scan(s).unwrap_or_default() {
                if let engine_expr::Part::Expr(e) = part {
                    for r in eval.references(&e.src) {
                        let segs: Vec<&str> = r.split('.').collect();
                        match segs[0] {
                            "steps" => {
                                if let Some(id) = segs.get(1) {
                                    let id = (*id).to_string();
                                    if !after.contains(&id) && wf.index.contains_key(&id) {
                                        after.push(id);
                                    }
                                }
                            }
                            "secrets" => sensitive = true,
                            "item" | "index" => per_item = true,
                            _ => {}
                        }
                    }
                }
            }
            if !after.is_empty() {
                let owned: Vec<String> = after.iter().map(|s| format!("`{s}`")).collect();
                return Value::String(format!("(known after {})", owned.join(", ")));
            }
            if sensitive {
                return Value::String("(sensitive)".into());
            }
            if per_item {
                return Value::String(format!("(per element: {s})"));
            }
            eval.render_str(s, ctx).unwrap_or_else(|e| Value::String(format!("(error: {e})")))
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| plan_value(eval, x, ctx, wf)).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, x)| (k.clone(), plan_value(eval, x, ctx, wf))).collect()),
        other => other.clone(),
    }
}

fn plan(registry: &Registry, file: &Path, pairs: &[String], inputs_file: Option<&Path>) -> u8 {
    let (wf, _, values) = match load_with_inputs(registry, file, pairs, inputs_file) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let eval = Evaluator::new();
    let env: Map<String, Value> = std::env::vars().map(|(k, v)| (k, Value::String(v))).collect();
    let ctx = JValue::from_serialize(serde_json::json!({"inputs": values, "env": env, "run": {"id": "(new)", "name": wf.name}, "workflow": {"dir": wf.dir.display().to_string()}}));
    let mut out = String::new();
    out.push_str(&format!("workflow: {}\n", wf.name));
    if let Some(d) = &wf.description {
        out.push_str(&format!("  {d}\n"));
    }
    if !values.is_empty() {
        out.push_str("inputs:\n");
        for (k, v) in &values {
            out.push_str(&format!("  {k}: {v}\n"));
        }
    }
    out.push_str(&format!("steps ({}, in execution order):\n", wf.steps.len()));
    let mut resources = Vec::new();
    // Hourly cost by currency, and whether every billed resource had a known price.
    let mut hourly: std::collections::BTreeMap<String, f64> = std::collections::BTreeMap::new();
    let mut unpriced = 0usize;
    for (n, &i) in wf.order.iter().enumerate() {
        let s = &wf.steps[i];
        out.push_str(&format!("{:>3}. {}  {}", n + 1, s.id, s.uses_text));
        if let Some(d) = &s.description {
            out.push_str(&format!("  # {d}"));
        }
        out.push('\n');
        if !s.deps.is_empty() {
            let deps: Vec<&str> = s.deps.iter().map(|&d| wf.steps[d].id.as_str()).collect();
            out.push_str(&format!("       after: {}\n", deps.join(", ")));
        }
        if let Some(c) = &s.condition {
            out.push_str(&format!("       if: {}\n", match c { Value::String(x) => x.clone(), o => o.to_string() }));
        }
        let count = match &s.for_each {
            None => Some(1),
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::Array(a)) => Some(a.len() as u64),
            Some(Value::String(x)) => match plan_value(&eval, &Value::String(x.clone()), &ctx, &wf) {
                Value::Array(a) => Some(a.len() as u64),
                _ => None,
            },
            Some(_) => None,
        };
        if s.for_each.is_some() {
            out.push_str(&format!("       for_each: {}\n", count.map_or_else(|| "(known at run time)".to_string(), |c| format!("{c} elements"))));
        }
        let rendered = plan_value(&eval, &s.with, &ctx, &wf);
        if let Value::Object(o) = &rendered {
            for (k, v) in o {
                let shown = match v {
                    // A multi-line value is shown as an indented block.
                    Value::String(x) if x.contains('\n') => format!("|\n{}", x.trim_end().lines().map(|l| format!("         {l}")).collect::<Vec<_>>().join("\n")),
                    Value::String(x) => x.clone(),
                    o => o.to_string(),
                };
                out.push_str(&format!("       {k}: {shown}\n"));
            }
        }
        if let Uses::Action(a) = &s.uses {
            if let Some(kind) = a.resource_kind() {
                let mut line = format!("  {} × {kind} (step {})", count.map_or_else(|| "n".to_string(), |c| c.to_string()), s.id);
                match (a.price_value(&rendered), count) {
                    (Some(p), Some(c)) => {
                        line.push_str(&format!(": {} {}/h each, {} {}/h in all ({})", money(p.per_hour), p.currency, money(p.per_hour * c as f64), p.currency, p.source));
                        *hourly.entry(p.currency).or_default() += p.per_hour * c as f64;
                    }
                    (Some(p), None) => {
                        line.push_str(&format!(": {} {}/h each ({})", money(p.per_hour), p.currency, p.source));
                        unpriced += 1;
                    }
                    (None, _) => {}
                }
                resources.push(line);
            }
        }
    }
    out.push_str("resources it would create:\n");
    if resources.is_empty() {
        out.push_str("  none\n");
    } else {
        for r in resources {
            out.push_str(&r);
            out.push('\n');
        }
    }
    if !hourly.is_empty() {
        let total: Vec<String> = hourly.iter().map(|(c, v)| format!("{} {c}/h", money(*v))).collect();
        let more = if unpriced > 0 { " (plus resources whose number or price is known only at run time)" } else { "" };
        out.push_str(&format!("estimated cost: {}{more}\n", total.join(" + ")));
    }
    print!("{out}");
    0
}

fn graph(registry: &Registry, file: &Path, format: GraphFormat) -> u8 {
    let (wf, _) = match load(registry, file) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let mut out = String::new();
    match format {
        GraphFormat::Dot => {
            out.push_str(&format!("digraph {:?} {{\n  rankdir=LR;\n  node [shape=box];\n", wf.name));
            for s in &wf.steps {
                let fan = if s.for_each.is_some() { " ×n" } else { "" };
                out.push_str(&format!("  {:?} [label={:?}];\n", s.id, format!("{}{fan}\n{}", s.id, s.uses_text)));
            }
            for s in &wf.steps {
                for &d in &s.deps {
                    out.push_str(&format!("  {:?} -> {:?};\n", wf.steps[d].id, s.id));
                }
            }
            out.push_str("}\n");
        }
        GraphFormat::Mermaid => {
            out.push_str("flowchart LR\n");
            for s in &wf.steps {
                let fan = if s.for_each.is_some() { " ×n" } else { "" };
                out.push_str(&format!("  {}[\"{}{fan}<br/>{}\"]\n", s.id.replace('-', "_"), s.id, s.uses_text.replace('"', "'")));
            }
            for s in &wf.steps {
                for &d in &s.deps {
                    out.push_str(&format!("  {} --> {}\n", wf.steps[d].id.replace('-', "_"), s.id.replace('-', "_")));
                }
            }
        }
    }
    print!("{out}");
    0
}

fn connectors(registry: &Registry, name: Option<&str>) -> u8 {
    // Built-in connectors, then plugins on PATH (described only when listed).
    let mut plugins: Vec<engine_plugin::PluginConnector> = Vec::new();
    let mut broken: Vec<String> = Vec::new();
    for (n, path) in engine_plugin::find_on_path() {
        if registry.has_connector(&n) || name.is_some_and(|x| x != n && !x.starts_with(&format!("{n}."))) {
            continue;
        }
        match engine_plugin::describe_blocking(&n, &path) {
            Ok(c) => plugins.push(c),
            Err(e) => broken.push(e),
        }
    }
    let actions = |id: &str| -> Option<std::sync::Arc<dyn engine_connector::DynAction>> {
        registry.action(id).cloned().or_else(|| plugins.iter().flat_map(|p| p.actions.iter()).find(|a| a.id() == id).cloned())
    };
    match name {
        None => {
            for c in registry.connectors() {
                println!("{}: {}", c.name, c.description);
                for a in &c.actions {
                    let d = registry.action(a).map(|x| x.description()).unwrap_or_default();
                    println!("  {a}  {d}");
                }
            }
            for p in &plugins {
                println!("{}: {} (plugin: {})", p.name, p.description, p.path.display());
                for a in &p.actions {
                    println!("  {}  {}", a.id(), a.description());
                }
            }
            for b in &broken {
                eprintln!("warning: {b}");
            }
            0
        }
        Some(n) => {
            let mut ids: Vec<&str> = registry.action_ids().filter(|id| *id == n || id.starts_with(&format!("{n}."))).collect();
            ids.extend(plugins.iter().flat_map(|p| p.actions.iter()).map(|a| a.id()).filter(|id| *id == n || id.starts_with(&format!("{n}."))));
            if ids.is_empty() {
                for b in &broken {
                    eprintln!("error: {b}");
                }
                let names: Vec<&str> = registry.connectors().map(|c| c.name).collect();
                eprintln!("error: no connector or action `{n}`; connectors: {}", names.join(", "));
                return 2;
            }
            let mut all = Map::new();
            for id in ids {
                if let Some(a) = actions(id) {
                    all.insert(
                        id.to_string(),
                        serde_json::json!({"description": a.description(), "creates": a.resource_kind(), "input": a.input_schema(), "output": a.output_schema()}),
                    );
                }
            }
            println!("{}", serde_json::to_string_pretty(&Value::Object(all)).unwrap_or_default());
            0
        }
    }
}

/// A price as people read it: cents, or more digits below one cent.
fn money(v: f64) -> String {
    if v >= 0.01 || v == 0.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}
