//! Evaluation on minijinja, with the filters and functions of the workflow format.

use std::collections::HashSet;

use minijinja::value::Value as JValue;
use minijinja::{Environment, Error as JError, ErrorKind as JErrorKind, State, UndefinedBehavior};
use serde_json::Value;

use crate::scan::{scan, Part};

/// An expression that failed to parse or evaluate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalError {
    /// What went wrong, in words.
    pub message: String,
    /// Byte range inside the expression source, when minijinja knows it.
    pub range: Option<std::ops::Range<usize>>,
    /// Whether the error is an unknown filter or function (checked statically).
    pub unknown_callable: bool,
}

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for EvalError {}

impl EvalError {
    fn from_jinja(e: &JError) -> Self {
        let mut message = match e.detail() {
            Some(d) => format!("{}: {d}", kind_text(e.kind())),
            None => kind_text(e.kind()).to_string(),
        };
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            message.push_str(&format!(": {s}"));
            source = s.source();
        }
        Self {
            message,
            range: e.range(),
            unknown_callable: matches!(e.kind(), JErrorKind::UnknownFilter | JErrorKind::UnknownFunction | JErrorKind::UnknownTest),
        }
    }

    fn msg(message: impl Into<String>) -> Self {
        Self { message: message.into(), range: None, unknown_callable: false }
    }
}

fn kind_text(kind: JErrorKind) -> &'static str {
    match kind {
        JErrorKind::SyntaxError => "syntax error",
        JErrorKind::UndefinedError => "undefined value",
        JErrorKind::UnknownFilter => "unknown filter",
        JErrorKind::UnknownFunction => "unknown function",
        JErrorKind::UnknownTest => "unknown test",
        JErrorKind::InvalidOperation => "invalid operation",
        JErrorKind::MissingArgument => "missing argument",
        JErrorKind::TooManyArguments => "too many arguments",
        JErrorKind::BadSerialization => "value cannot be serialized",
        _ => "expression error",
    }
}

/// What `success()`, `failure()` and `cancelled()` answer for a step's `if`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusFlags {
    /// Every dependency succeeded (skipped ones count as not succeeded).
    pub success: bool,
    /// Some dependency failed.
    pub failure: bool,
    /// The run is being cancelled.
    pub cancelled: bool,
}

const BUILTIN_FILTERS: &[&str] = &[
    "safe", "escape", "e", "lower", "upper", "title", "capitalize", "replace", "length", "count", "dictsort", "items",
    "reverse", "trim", "join", "split", "lines", "default", "d", "round", "abs", "int", "float", "attr", "first",
    "last", "min", "max", "sort", "list", "string", "bool", "batch", "slice", "sum", "indent", "select", "reject",
    "selectattr", "rejectattr", "map", "groupby", "unique", "chain", "zip", "pprint", "format", "tojson", "urlencode",
];
const CUSTOM_FILTERS: &[&str] = &["shell_quote", "fromjson"];

const STATUS_VAR: &str = "__engine_status";

/// Evaluates expressions. Cheap to share: build one per process.
pub struct Evaluator {
    env: Environment<'static>,
}

impl Default for Evaluator {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Evaluator")
    }
}

fn status_flag(state: &State<'_, '_>, name: &str) -> bool {
    state
        .lookup(STATUS_VAR)
        .and_then(|v| v.get_attr(name).ok())
        .is_some_and(|v| v.is_true())
}

/// Quote a string for a POSIX shell: `'it'\''s'`.
#[must_use]
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b)) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Evaluator {
    /// An evaluator with strict undefined handling and the format's filters and functions.
    #[must_use]
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.add_filter("shell_quote", |v: JValue| -> String {
            match v.as_str() {
                Some(s) => shell_quote(s),
                None => shell_quote(&v.to_string()),
            }
        });
        env.add_filter("fromjson", |s: String| -> Result<JValue, JError> {
            let v: Value = serde_json::from_str(&s)
                .map_err(|e| JError::new(JErrorKind::InvalidOperation, format!("fromjson: {e}")))?;
            Ok(JValue::from_serialize(&v))
        });
        env.add_function("success", |state: &State<'_, '_>| status_flag(state, "success"));
        env.add_function("failure", |state: &State<'_, '_>| status_flag(state, "failure"));
        env.add_function("cancelled", |state: &State<'_, '_>| status_flag(state, "cancelled"));
        env.add_function("always", || true);
        Self { env }
    }

    /// Parse an expression without evaluating it.
    ///
    /// # Errors
    /// The syntax error, with its range inside `src`.
    pub fn check(&self, src: &str) -> Result<(), EvalError> {
        self.env.compile_expression(src).map(|_| ()).map_err(|e| {
            let mut e = EvalError::from_jinja(&e);
            // minijinja may point at the first byte of a multi-byte character:
            // widen the range to whole characters.
            if let Some(r) = &mut e.range {
                r.start = src.floor_char_boundary(r.start.min(src.len()));
                r.end = src.ceil_char_boundary(r.end.min(src.len()));
            }
            e
        })
    }

    /// Filters and functions an expression calls that do not exist, each once.
    #[must_use]
    pub fn unknown_callables(&self, src: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (name, is_filter) in callables(src) {
            let known = if is_filter {
                BUILTIN_FILTERS.contains(&name.as_str()) || CUSTOM_FILTERS.contains(&name.as_str())
            } else {
                self.env.globals().any(|(k, _)| k == name)
                    || matches!(name.as_str(), "range" | "dict" | "namespace" | "lipsum" | "cycler" | "joiner" | "debug")
            };
            if !known && !out.contains(&name) {
                out.push(name);
            }
        }
        out
    }

    /// Names an expression reads, with attribute chains (`steps.a.outputs.ip`).
    /// A subscript by a literal name counts as an attribute: `steps.a.outputs['ip']`
    /// gives `steps.a.outputs.ip` too.
    #[must_use]
    pub fn references(&self, src: &str) -> HashSet<String> {
        let normalized = subscripts_as_attributes(src);
        if normalized != src {
            if let Ok(e) = self.env.compile_expression(&normalized) {
                return e.undeclared_variables(true);
            }
        }
        match self.env.compile_expression(src) {
            Ok(e) => e.undeclared_variables(true),
            Err(_) => HashSet::new(),
        }
    }

    /// Evaluate one expression to a JSON value.
    ///
    /// # Errors
    /// A syntax error, an undefined name, a failing filter.
    pub fn eval(&self, src: &str, ctx: &JValue) -> Result<Value, EvalError> {
        let expr = self.env.compile_expression(src).map_err(|e| EvalError::from_jinja(&e))?;
        let v = expr.eval(ctx).map_err(|e| EvalError::from_jinja(&e))?;
        to_json(&v).map_err(|m| EvalError::msg(format!("`{src}`: {m}")))
    }

    /// Render a string: one whole expression keeps its type, otherwise interpolation.
    ///
    /// # Errors
    /// As [`Evaluator::eval`], or an unclosed `${{`.
    pub fn render_str(&self, s: &str, ctx: &JValue) -> Result<Value, EvalError> {
        if !crate::is_template(s) {
            return Ok(Value::String(s.to_string()));
        }
        let parts = scan(s).map_err(|e| EvalError::msg(e.message))?;
        if let [Part::Expr(e)] = parts.as_slice() {
            if s.trim() == s || s.trim().len() == s.len() {
                return self.eval(&e.src, ctx);
            }
        }
        let mut out = String::new();
        for p in parts {
            match p {
                Part::Lit(l) => out.push_str(&l),
                Part::Expr(e) => match self.eval(&e.src, ctx)? {
                    Value::String(s) => out.push_str(&s),
                    Value::Null => {}
                    other => out.push_str(&other.to_string()),
                },
            }
        }
        Ok(Value::String(out))
    }

    /// Render every string inside a JSON value.
    ///
    /// # Errors
    /// The first expression that fails, with the JSON path of its value.
    pub fn render(&self, v: &Value, ctx: &JValue) -> Result<Value, EvalError> {
        self.render_at(v, ctx, &mut String::new())
    }

    fn render_at(&self, v: &Value, ctx: &JValue, path: &mut String) -> Result<Value, EvalError> {
        Ok(match v {
            Value::String(s) if crate::is_template(s) => self.render_str(s, ctx).map_err(|mut e| {
                if !path.is_empty() {
                    e.message = format!("{path}: {}", e.message);
                }
                e
            })?,
            Value::Array(a) => {
                let mut out = Vec::with_capacity(a.len());
                for (i, x) in a.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    out.push(self.render_at(x, ctx, path)?);
                    path.truncate(len);
                }
                Value::Array(out)
            }
            Value::Object(o) => {
                let mut out = serde_json::Map::with_capacity(o.len());
                for (k, x) in o {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                    out.insert(k.clone(), self.render_at(x, ctx, path)?);
                    path.truncate(len);
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }

    /// Evaluate an `if`: a boolean, or a string holding an expression (with or
    /// without `${{ }}`), with the status functions answering from `flags`.
    ///
    /// # Errors
    /// As [`Evaluator::eval`].
    pub fn condition(&self, cond: &Value, ctx: &JValue, flags: StatusFlags) -> Result<bool, EvalError> {
        let src = match cond {
            Value::Bool(b) => return Ok(*b),
            Value::String(s) => condition_source(s),
            other => return Ok(truthy(other)),
        };
        let ctx = JValue::from_iter(
            ctx.try_iter()
                .into_iter()
                .flatten()
                .filter_map(|k| Some((k.as_str()?.to_string(), ctx.get_item(&k).ok()?)))
                .chain(std::iter::once((
                    STATUS_VAR.to_string(),
                    minijinja::context! { success => flags.success, failure => flags.failure, cancelled => flags.cancelled },
                ))),
        );
        let v = self.eval(&src, &ctx)?;
        Ok(truthy(&v))
    }
}

/// The expression of an `if`: `${{ x }}` and `x` mean the same.
#[must_use]
pub fn condition_source(s: &str) -> String {
    let t = s.trim();
    if let Ok(parts) = scan(t) {
        if let [Part::Expr(e)] = parts.as_slice() {
            return e.src.clone();
        }
    }
    t.to_string()
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn to_json(v: &JValue) -> Result<Value, String> {
    if v.is_undefined() {
        return Err("the expression is undefined".into());
    }
    serde_json::to_value(v).map_err(|e| e.to_string())
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The length of a subscript by a literal name at the start of `b` (`['x']`,
/// `[ "x" ]`), and the name, if `b` starts with one.
fn name_subscript(b: &[u8]) -> Option<(usize, &[u8])> {
    let mut i = 1;
    if b.first() != Some(&b'[') {
        return None;
    }
    while b.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    let q = *b.get(i).filter(|q| matches!(q, b'\'' | b'"'))?;
    i += 1;
    let start = i;
    if !b.get(i).copied().is_some_and(is_ident_start) {
        return None;
    }
    while b.get(i).copied().is_some_and(is_ident) {
        i += 1;
    }
    let name = &b[start..i];
    if b.get(i) != Some(&q) {
        return None;
    }
    i += 1;
    while b.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    (b.get(i) == Some(&b']')).then_some((i + 1, name))
}

/// `x['y']` and `x["y"]` rewritten as `x.y` (outside string literals), so that
/// static references see one form.
fn subscripts_as_attributes(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut quote: Option<u8> = None;
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        if let Some(next) = skip_quoted(b, i, &mut quote) {
            i = next;
            continue;
        }
        let c = b[i];
        if c == b'[' && i > 0 && (is_ident(b[i - 1]) || matches!(b[i - 1], b']' | b')')) {
            if let Some((len, name)) = name_subscript(&b[i..]) {
                out.push_str(&src[copied..i]);
                out.push('.');
                out.push_str(std::str::from_utf8(name).unwrap_or_default());
                i += len;
                copied = i;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&src[copied..]);
    out
}

/// Where a reference (`steps.a.outputs.ip`, as [`Evaluator::references`] gives
/// it) is written in `text`: the byte range of its first occurrence that starts
/// and ends on a name boundary (`inputs.zone` is not found in `inputs.zone_name`),
/// each segment after the first written `.x`, `['x']` or `["x"]`. Occurrences in
/// string literals are ignored when there is another.
#[must_use]
pub fn find_reference(text: &str, reference: &str) -> Option<std::ops::Range<usize>> {
    find_reference_in(text, reference, true).or_else(|| find_reference_in(text, reference, false))
}

fn find_reference_in(text: &str, reference: &str, skip_strings: bool) -> Option<std::ops::Range<usize>> {
    let b = text.as_bytes();
    let mut segs = reference.split('.');
    let first = segs.next()?.as_bytes();
    let rest: Vec<&[u8]> = segs.map(str::as_bytes).collect();
    if first.is_empty() {
        return None;
    }
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if let Some(q) = quote {
            if c == b'\\' {
                i += 1;
            } else if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        if skip_strings && (c == b'"' || c == b'\'') {
            quote = Some(c);
            i += 1;
            continue;
        }
        let boundary_before = i == 0 || !(is_ident(b[i - 1]) || b[i - 1] == b'.');
        if boundary_before && b[i..].starts_with(first) {
            let mut end = i + first.len();
            let mut ok = true;
            for seg in &rest {
                if !b.get(end).copied().is_some_and(|c| c == b'.' || c == b'[') {
                    ok = false;
                } else if b[end] == b'.' && b[end + 1..].starts_with(seg) && !b.get(end + 1 + seg.len()).copied().is_some_and(is_ident) {
                    end += 1 + seg.len();
                    continue;
                } else if let Some((len, _)) = name_subscript(&b[end..]).filter(|(_, n)| n == seg) {
                    end += len;
                    continue;
                } else {
                    ok = false;
                }
                break;
            }
            if ok && !b.get(end).copied().is_some_and(is_ident) {
                return Some(i..end);
            }
        }
        i += 1;
    }
    None
}

/// Filters (`| name`) and function calls (`name(`) in an expression, found lexically.
/// Steps over string literals in an expression: when `b[i]` opens a quoted string or
/// is inside one, the index to go on from; `None` when `b[i]` is expression code.
fn skip_quoted(b: &[u8], i: usize, quote: &mut Option<u8>) -> Option<usize> {
    let c = b[i];
    match *quote {
        Some(_) if c == b'\\' => Some(i + 2),
        Some(q) => {
            if c == q {
                *quote = None;
            }
            Some(i + 1)
        }
        None if c == b'"' || c == b'\'' => {
            *quote = Some(c);
            Some(i + 1)
        }
        None => None,
    }
}

fn callables(src: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let b = src.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < b.len() {
        if let Some(next) = skip_quoted(b, i, &mut quote) {
            i = next;
            continue;
        }
        let c = b[i];
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let name = &src[start..i];
            let before = src[..start].trim_end();
            let is_attr = before.ends_with('.');
            let is_filter = before.ends_with('|') && !before.ends_with("||");
            let is_test = before.ends_with(" is") || before.ends_with(" not") && before.trim_end_matches(" not").ends_with(" is");
            let after = src[i..].trim_start();
            if is_filter {
                out.push((name.to_string(), true));
            } else if !is_attr && !is_test && after.starts_with('(') {
                out.push((name.to_string(), false));
            }
            continue;
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> JValue {
        JValue::from_serialize(json!({
            "inputs": {"n": 3, "zone": "fr-par-2"},
            "steps": {"a": {"outputs": {"stdout": "0\n1\n2\n", "list": [{"ip": "1.2.3.4"}, {"ip": "5.6.7.8"}]}}},
            "item": "it's",
        }))
    }

    #[test]
    fn whole_expression_keeps_type() {
        let e = Evaluator::new();
        assert_eq!(e.render_str("${{ inputs.n }}", &ctx()).unwrap(), json!(3));
        assert_eq!(e.render_str("${{ range(inputs.n) }}", &ctx()).unwrap(), json!([0, 1, 2]));
        assert_eq!(
            e.render_str("${{ steps.a.outputs.list | map(attribute='ip') | list }}", &ctx()).unwrap(),
            json!(["1.2.3.4", "5.6.7.8"])
        );
        assert_eq!(e.render_str("${{ steps.a.outputs.stdout | trim | split }}", &ctx()).unwrap(), json!(["0", "1", "2"]));
    }

    #[test]
    fn interpolation_gives_strings() {
        let e = Evaluator::new();
        assert_eq!(e.render_str("n=${{ inputs.n }}", &ctx()).unwrap(), json!("n=3"));
        assert_eq!(e.render_str("echo ${{ item | shell_quote }}", &ctx()).unwrap(), json!(r"echo 'it'\''s'"));
        assert_eq!(e.render_str("${{ '{\"a\": 1}' | fromjson }}", &ctx()).unwrap(), json!({"a": 1}));
        assert_eq!(e.render_str("${{ inputs | tojson }}", &ctx()).unwrap(), json!(r#"{"n":3,"zone":"fr-par-2"}"#));
    }

    #[test]
    fn strict_undefined_is_an_error() {
        let e = Evaluator::new();
        let err = e.render_str("${{ steps.a.outputs.nope }}", &ctx()).unwrap_err();
        assert!(err.message.contains("undefined"), "{}", err.message);
        assert_eq!(e.render_str("${{ inputs.missing | default('x') }}", &ctx()).unwrap(), json!("x"));
    }

    #[test]
    fn references_are_nested_paths() {
        let e = Evaluator::new();
        let r = e.references("steps.a.outputs.ip ~ inputs.zone ~ item.x");
        assert!(r.contains("steps.a.outputs.ip"), "{r:?}");
        assert!(r.contains("inputs.zone"));
        assert!(r.contains("item.x"));
    }

    #[test]
    fn error_ranges_hold_whole_characters() {
        let e = Evaluator::new().check("inputs.région").unwrap_err();
        assert_eq!(e.range, Some(8..10));
    }

    #[test]
    fn subscripts_by_name_are_references() {
        let e = Evaluator::new();
        let r = e.references("steps.a.outputs['ip'] ~ inputs[\"zone\"] ~ steps.b.outputs[0].x ~ 'x[\\'y\\']'");
        assert!(r.contains("steps.a.outputs.ip"), "{r:?}");
        assert!(r.contains("inputs.zone"), "{r:?}");
        assert!(r.contains("steps.b.outputs"), "{r:?}");
        assert_eq!(subscripts_as_attributes("a[ 'b' ]['c'].d['e f'] ~ '[\\'g\\']' ~ ['h']"), "a.b.c.d['e f'] ~ '[\\'g\\']' ~ ['h']");
        // Not a name: left alone, and the expression still parses.
        assert_eq!(subscripts_as_attributes("x['1a'] ~ f()['k']"), "x['1a'] ~ f().k");
    }

    #[test]
    fn references_are_found_at_name_boundaries() {
        let src = "inputs.zone_name ~ '-' ~ inputs.zone";
        assert_eq!(find_reference(src, "inputs.zone"), Some(25..36));
        assert_eq!(find_reference(src, "inputs.zone_name"), Some(0..16));
        assert_eq!(find_reference("myinputs.x ~ a.inputs.x ~ inputs.x", "inputs.x"), Some(26..34));
        assert_eq!(find_reference("steps.a.outputs['nope'] | length", "steps.a.outputs.nope"), Some(0..23));
        assert_eq!(find_reference("steps.a.outputs[ \"ip\" ]", "steps.a.outputs.ip"), Some(0..23));
        assert_eq!(find_reference("'inputs.x' ~ inputs.x", "inputs.x"), Some(13..21));
        // Only in a string literal: found there all the same.
        assert_eq!(find_reference("\"${{ inputs.x }}\"", "inputs.x"), Some(5..13));
        assert_eq!(find_reference("é → inputs.région", "inputs.région"), Some(7..21));
        assert_eq!(find_reference("inputs.zones", "inputs.zone"), None);
        assert_eq!(find_reference("now()", "now"), Some(0..3));
    }

    #[test]
    fn conditions_and_status_functions() {
        let e = Evaluator::new();
        let f = StatusFlags { success: false, failure: true, cancelled: false };
        assert!(e.condition(&json!("${{ failure() }}"), &ctx(), f).unwrap());
        assert!(!e.condition(&json!("success()"), &ctx(), f).unwrap());
        assert!(e.condition(&json!("always() and inputs.n > 2"), &ctx(), f).unwrap());
        assert!(!e.condition(&json!(false), &ctx(), f).unwrap());
    }

    #[test]
    fn unknown_callables_are_found() {
        let e = Evaluator::new();
        assert_eq!(e.unknown_callables("x | nope | trim"), vec!["nope".to_string()]);
        assert_eq!(e.unknown_callables("foo(1) + range(2)|length"), vec!["foo".to_string()]);
        assert_eq!(e.unknown_callables("foo(1) ~ foo(2) | nope | nope"), vec!["foo".to_string(), "nope".to_string()]);
        assert!(e.unknown_callables("x is defined and 'a|b(' ").is_empty());
        assert!(e.unknown_callables("x.items()").is_empty());
    }

    #[test]
    fn shell_quote_cases() {
        assert_eq!(shell_quote("abc"), "abc");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }
}
