//! Checking a document against a JSON Schema and turning every error into a
//! located diagnostic with a stable code.

use std::collections::BTreeSet;

use engine_core::diagnostics::code;
use engine_core::{Code, Diagnostic, Span};
use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::ValidationError;
use serde_json::Value;

use crate::model::{DURATION_PATTERN, STEP_ID_PATTERN};
use crate::yaml::{pointer_escape, LocMap};

/// A compiled schema.
pub struct SchemaChecker {
    schema: Value,
    validator: jsonschema::Validator,
    /// Whether this is an action's input (codes become WF0121).
    action: Option<String>,
}

/// Where the checked value sits in its file.
pub struct Target<'a> {
    /// JSON pointer of the value in the file's document.
    pub base: &'a str,
    /// Locations of the file's document.
    pub locs: &'a LocMap,
    /// Fallback span.
    pub span: Span,
}

impl SchemaChecker {
    /// Compile a schema.
    ///
    /// # Panics
    /// When the schema itself is invalid (a bug in the types it came from).
    #[must_use]
    pub fn new(schema: Value, action: Option<String>) -> Self {
        let validator = compile(&schema).expect("generated schemas are valid");
        Self { schema, validator, action }
    }

    /// Check `instance`, push a diagnostic per problem, and return the pointers
    /// (relative to the instance) of the values that failed.
    pub fn check(&self, instance: &Value, target: &Target<'_>, skip: &dyn Fn(&str) -> bool, diags: &mut Vec<Diagnostic>) -> BTreeSet<String> {
        let mut bad = BTreeSet::new();
        for err in self.validator.iter_errors(instance) {
            self.map(&err, instance, target, skip, diags, &mut bad);
        }
        self.check_integers(instance, &mut String::new(), target, skip, diags, &mut bad);
        bad
    }

    /// What JSON Schema leaves to the deserializer: a number written with a
    /// fraction (`2.0`) is an integer to JSON Schema but not to serde, and the
    /// range of a fixed-size integer is only a `format` (`uint32`), which
    /// validators do not check. Both are reported here, at the value, so that
    /// deserializing what passed never fails.
    fn check_integers(&self, v: &Value, path: &mut String, target: &Target<'_>, skip: &dyn Fn(&str) -> bool, diags: &mut Vec<Diagnostic>, bad: &mut BTreeSet<String>) {
        match v {
            Value::Number(n) => {
                // Fast path: a small non-negative integer fits every integer format.
                if n.as_u64().is_some_and(|u| u <= 127) {
                    return;
                }
                // A value inside one already reported is left alone.
                if bad.iter().any(|b| path.strip_prefix(b.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))) || skip(path) {
                    return;
                }
                let Some(schema) = self.subschema(path).and_then(|s| self.integer_schema(s)) else { return };
                let at = Self::span(target, path, false);
                if !(n.is_i64() || n.is_u64()) {
                    let mut d = Diagnostic::error(self.code(code::WRONG_TYPE), format!("expected an integer, found {} {}", describe(v), self.context(path)), at);
                    if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 1e15) {
                        d = d.help(format!("write it without a fraction: `{f:.0}`"));
                    }
                    diags.push(d);
                    bad.insert(path.clone());
                    return;
                }
                let Some((min, max)) = schema.get("format").and_then(Value::as_str).and_then(integer_range) else { return };
                let too_small = n.as_i64().is_some_and(|i| i128::from(i) < min);
                let too_large = n.as_u64().is_some_and(|u| i128::from(u) > max);
                if too_small {
                    diags.push(Diagnostic::error(self.code(code::OUT_OF_RANGE), format!("{} is too small {}: the minimum is {min}", show(v), self.context(path)), at));
                    bad.insert(path.clone());
                } else if too_large {
                    diags.push(Diagnostic::error(self.code(code::OUT_OF_RANGE), format!("{} is too large {}: the maximum is {max}", show(v), self.context(path)), at));
                    bad.insert(path.clone());
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("/{i}"));
                    self.check_integers(x, path, target, skip, diags, bad);
                    path.truncate(len);
                }
            }
            Value::Object(o) => {
                for (k, x) in o {
                    let len = path.len();
                    path.push('/');
                    path.push_str(&pointer_escape(k));
                    self.check_integers(x, path, target, skip, diags, bad);
                    path.truncate(len);
                }
            }
            _ => {}
        }
    }

    /// The schema a number at a place with this schema is checked against, when
    /// every alternative there that takes numbers takes integers only.
    fn integer_schema<'a>(&'a self, s: &'a Value) -> Option<&'a Value> {
        let branches: Vec<&Value> = match s.get("anyOf").or_else(|| s.get("oneOf")).and_then(Value::as_array) {
            Some(b) => b.iter().map(|x| self.resolve(x)).collect(),
            None => vec![s],
        };
        let takes = |b: &Value, t: &str| match b.get("type") {
            Some(Value::String(x)) => x == t,
            Some(Value::Array(xs)) => xs.iter().any(|x| x == t),
            _ => false,
        };
        let numeric: Vec<&Value> = branches.into_iter().filter(|b| takes(b, "integer") || takes(b, "number")).collect();
        match numeric.as_slice() {
            [] => None,
            all if all.iter().all(|b| !takes(b, "number")) => Some(all[0]),
            _ => None,
        }
    }

    fn code(&self, c: Code) -> Code {
        if self.action.is_some() {
            code::BAD_ACTION_INPUT
        } else {
            c
        }
    }

    fn span(target: &Target<'_>, path: &str, key: bool) -> Span {
        let mut p = format!("{}{path}", target.base);
        loop {
            if let Some(l) = target.locs.get(&p) {
                return if key { l.key.unwrap_or(l.value) } else { l.value };
            }
            match p.rfind('/') {
                Some(i) => p.truncate(i),
                None => return target.span,
            }
        }
    }

    fn context(&self, path: &str) -> String {
        let segs: Vec<&str> = path.split('/').skip(1).collect();
        if let Some(a) = &self.action {
            return if segs.is_empty() { format!("in the input of `{a}`") } else { format!("in the input of `{a}` at `{}`", segs.join(".")) };
        }
        match segs.as_slice() {
            [] => "at the top level".into(),
            ["steps", id] => format!("in step `{id}`"),
            ["steps", id, rest @ ..] => format!("in `{}` of step `{id}`", rest.join(".")),
            ["inputs", id, ..] => format!("in input `{id}`"),
            ["secrets", id, ..] => format!("in secret `{id}`"),
            other => format!("in `{}`", other.join(".")),
        }
    }

    #[allow(clippy::too_many_lines)]
    fn map(&self, err: &ValidationError<'_>, instance: &Value, target: &Target<'_>, skip: &dyn Fn(&str) -> bool, diags: &mut Vec<Diagnostic>, bad: &mut BTreeSet<String>) {
        let path = err.instance_path.as_str().to_string();
        if skip(&path) {
            // Reported elsewhere (or checked later): not here, but still unusable.
            bad.insert(path);
            return;
        }
        let value = instance.pointer(&path).unwrap_or(&Value::Null);
        let at = Self::span(target, &path, false);
        let mut mark_bad = |p: &str| {
            bad.insert(p.to_string());
        };
        match &err.kind {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                let allowed = self.allowed_keys(&path);
                for k in unexpected {
                    let kp = format!("{path}/{}", pointer_escape(k));
                    let mut d = Diagnostic::error(self.code(code::UNKNOWN_KEY), format!("unknown key `{k}` {}", self.context(&path)), Self::span(target, &kp, true))
                        .label("not accepted here");
                    if let Some(s) = did_you_mean(k, allowed.iter().map(String::as_str)) {
                        d = d.help(format!("did you mean `{s}`?"));
                    }
                    if !allowed.is_empty() {
                        d = d.help(format!("accepted keys: {}", allowed.join(", ")));
                    }
                    diags.push(d);
                    mark_bad(&kp);
                }
            }
            ValidationErrorKind::Required { property } => {
                let p = property.as_str().unwrap_or_default();
                diags.push(
                    Diagnostic::error(self.code(code::MISSING_KEY), format!("missing required key `{p}` {}", self.context(&path)), Self::span(target, &path, true))
                        .label(format!("`{p}` is required here")),
                );
                mark_bad(&path);
            }
            ValidationErrorKind::Type { kind } => {
                let expected = match kind {
                    TypeKind::Single(t) => type_name(&format!("{t}")),
                    TypeKind::Multiple(ts) => {
                        let v: Vec<String> = ts.iter().map(|t| type_name(&format!("{t}"))).collect();
                        v.join(" or ")
                    }
                };
                let is_duration = self.subschema(&path).and_then(|s| s.get("pattern")).and_then(Value::as_str) == Some(DURATION_PATTERN);
                if is_duration {
                    diags.push(
                        Diagnostic::error(self.code(code::BAD_DURATION), format!("invalid duration {} {}", show(value), self.context(&path)), at)
                            .help(format!("write a number and a unit (ms, s, m, h, d): `{}s`, `15m`, `1h30m`", value.as_u64().unwrap_or(90))),
                    );
                } else {
                    diags.push(Diagnostic::error(self.code(code::WRONG_TYPE), format!("expected {expected}, found {} {}", describe(value), self.context(&path)), at));
                }
                mark_bad(&path);
            }
            ValidationErrorKind::Pattern { pattern } => {
                let (c, msg) = if pattern == DURATION_PATTERN {
                    (code::BAD_DURATION, format!("invalid duration {} {}", show(value), self.context(&path)))
                } else {
                    (code::INVALID_VALUE, format!("{} does not match the pattern `{pattern}` {}", show(value), self.context(&path)))
                };
                let mut d = Diagnostic::error(self.code(c), msg, at);
                if pattern == DURATION_PATTERN {
                    d = d.help("write a number and a unit (ms, s, m, h, d): `90s`, `15m`, `1h30m`");
                }
                diags.push(d);
                mark_bad(&path);
            }
            ValidationErrorKind::PropertyNames { error } => {
                // One error per bad key: the inner error's instance is the key.
                if let Some(k) = error.instance.as_str() {
                    let kp = format!("{path}/{}", pointer_escape(k));
                    let mut help = "step ids start with a lowercase letter and hold only a-z, 0-9, `_` and `-`".to_string();
                    if let Some(s) = step_id_suggestion(k) {
                        help.push_str(&format!("; for example `{s}`"));
                    }
                    diags.push(
                        Diagnostic::error(code::BAD_STEP_ID, format!("invalid step id `{k}`"), Self::span(target, &kp, true))
                            .label("step ids match [a-z][a-z0-9_-]*")
                            .help(help),
                    );
                    mark_bad(&kp);
                }
            }
            ValidationErrorKind::Enum { options } => {
                let options: Vec<Value> = options.as_array().cloned().unwrap_or_default();
                diags.push(self.not_allowed(value, &options, &[], &path, at));
                mark_bad(&path);
            }
            ValidationErrorKind::Constant { expected_value } => {
                let c = if path == "/version" && self.action.is_none() { code::BAD_VERSION } else { code::NOT_ALLOWED };
                diags.push(Diagnostic::error(self.code(c), format!("{} is not supported {}: expected {expected_value}", show(value), self.context(&path)), at));
                mark_bad(&path);
            }
            ValidationErrorKind::Minimum { limit } | ValidationErrorKind::ExclusiveMinimum { limit } => {
                diags.push(Diagnostic::error(self.code(code::OUT_OF_RANGE), format!("{} is too small {}: the minimum is {limit}", show(value), self.context(&path)), at));
                mark_bad(&path);
            }
            ValidationErrorKind::Maximum { limit } | ValidationErrorKind::ExclusiveMaximum { limit } => {
                diags.push(Diagnostic::error(self.code(code::OUT_OF_RANGE), format!("{} is too large {}: the maximum is {limit}", show(value), self.context(&path)), at));
                mark_bad(&path);
            }
            ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
                // Pick the branch whose type matched the value and report its errors;
                // if none matched, say which types would have.
                // An enum (`oneOf` of `const`s, one per documented variant), maybe
                // beside branches of other types: say which values are accepted.
                let (mut consts, mut others) = (Vec::new(), Vec::new());
                if enum_alternatives(context, &path, &mut consts, &mut others) && !consts.is_empty() {
                    diags.push(self.not_allowed(value, &consts, &others, &path, at));
                    mark_bad(&path);
                    return;
                }
                let matching: Vec<&Vec<ValidationError<'static>>> = context.iter().filter(|errs| !type_mismatch(errs, &path)).collect();
                if let [branch] = matching.as_slice() {
                    for e in branch.iter() {
                        self.map(e, instance, target, skip, diags, bad);
                    }
                } else {
                    let mut expected: Vec<String> = Vec::new();
                    expected_types(context, &path, &mut expected);
                    let msg = if expected.is_empty() {
                        format!("invalid value {} {}", show(value), self.context(&path))
                    } else {
                        format!("expected {}, found {} {}", expected.join(" or "), describe(value), self.context(&path))
                    };
                    diags.push(Diagnostic::error(self.code(code::WRONG_TYPE), msg, at));
                    mark_bad(&path);
                }
            }
            _ => {
                diags.push(Diagnostic::error(self.code(code::INVALID_VALUE), format!("{err} {}", self.context(&path)), at));
                mark_bad(&path);
            }
        }
    }

    /// WF0106: `value` is none of `options` (nor of the types in `others`).
    fn not_allowed(&self, value: &Value, options: &[Value], others: &[String], path: &str, at: Span) -> Diagnostic {
        let mut accepted: Vec<String> = options.iter().map(show).collect();
        accepted.extend(others.iter().cloned());
        let list = match accepted.as_slice() {
            [rest @ .., last] if !others.is_empty() && !rest.is_empty() => format!("{}, or {last}", rest.join(", ")),
            all => all.join(", "),
        };
        let mut d = Diagnostic::error(self.code(code::NOT_ALLOWED), format!("{} is not allowed {}", show(value), self.context(path)), at).help(format!("expected one of: {list}"));
        if let Some(s) = value.as_str().and_then(|v| did_you_mean(v, options.iter().filter_map(Value::as_str))) {
            d = d.help(format!("did you mean `{s}`?"));
        }
        d
    }

    fn resolve<'a>(&'a self, s: &'a Value) -> &'a Value {
        let mut s = s;
        for _ in 0..16 {
            match s.get("$ref").and_then(Value::as_str) {
                Some(r) => match r.strip_prefix('#').and_then(|p| self.schema.pointer(p)) {
                    Some(t) => s = t,
                    None => return s,
                },
                None => return s,
            }
        }
        s
    }

    /// The keys a mapping at `path` (relative to the instance) accepts.
    #[must_use]
    pub fn allowed_keys(&self, path: &str) -> Vec<String> {
        let Some(cur) = self.subschema(path) else { return Vec::new() };
        let candidates: Vec<&Value> = match cur.get("anyOf").and_then(Value::as_array) {
            Some(b) => b.iter().map(|x| self.resolve(x)).collect(),
            None => vec![cur],
        };
        candidates
            .iter()
            .filter_map(|c| c.get("properties").and_then(Value::as_object))
            .flat_map(|p| p.keys().cloned())
            .collect()
    }

    /// The schema that applies at `path` (relative to the instance), `$ref`s resolved.
    fn subschema(&self, path: &str) -> Option<&Value> {
        let mut cur = self.resolve(&self.schema);
        for seg in path.split('/').skip(1) {
            let seg = seg.replace("~1", "/").replace("~0", "~");
            let candidates: Vec<&Value> = match cur.get("anyOf").and_then(Value::as_array) {
                Some(b) => b.iter().map(|x| self.resolve(x)).collect(),
                None => vec![cur],
            };
            let next = candidates.iter().find_map(|c| {
                c.get("properties")
                    .and_then(|p| p.get(&seg))
                    .or_else(|| c.get("additionalProperties").filter(|a| a.is_object()))
                    .or_else(|| c.get("items").filter(|_| seg.parse::<usize>().is_ok()))
            });
            cur = self.resolve(next?);
        }
        Some(cur)
    }
}

/// Whether a branch of an `anyOf`/`oneOf` failed on the type of the value at
/// `path` (directly, or in every branch of a nested `anyOf`/`oneOf`).
fn type_mismatch(errs: &[ValidationError<'static>], path: &str) -> bool {
    errs.iter().any(|e| {
        e.instance_path.as_str() == path
            && match &e.kind {
                ValidationErrorKind::Type { .. } => true,
                ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => context.iter().all(|b| type_mismatch(b, path)),
                _ => false,
            }
    })
}

/// The names of the types the branches of an `anyOf`/`oneOf` (nested ones
/// flattened) expect at `path`.
fn expected_types(context: &[Vec<ValidationError<'static>>], path: &str, out: &mut Vec<String>) {
    for e in context.iter().flatten().filter(|e| e.instance_path.as_str() == path) {
        match &e.kind {
            ValidationErrorKind::Type { kind: TypeKind::Single(t) } => {
                let n = type_name(&format!("{t}"));
                if !out.contains(&n) {
                    out.push(n);
                }
            }
            ValidationErrorKind::AnyOf { context: inner } | ValidationErrorKind::OneOfNotValid { context: inner } => expected_types(inner, path, out),
            _ => {}
        }
    }
}

/// Whether every branch of an `anyOf`/`oneOf` (nested ones flattened) is either a
/// `const` the value at `path` is not, or a type it does not have. Fills `consts`
/// with the constants and `others` with the names of the types.
fn enum_alternatives(context: &[Vec<ValidationError<'static>>], path: &str, consts: &mut Vec<Value>, others: &mut Vec<String>) -> bool {
    for errs in context {
        let here = |e: &ValidationError<'static>| e.instance_path.as_str() == path;
        if type_mismatch(errs, path) {
            expected_types(std::slice::from_ref(errs), path, others);
        } else if !errs.is_empty() && errs.iter().all(|e| here(e) && matches!(e.kind, ValidationErrorKind::Constant { .. })) {
            for e in errs {
                if let ValidationErrorKind::Constant { expected_value } = &e.kind {
                    if !consts.contains(expected_value) {
                        consts.push(expected_value.clone());
                    }
                }
            }
        } else if let [e] = errs.as_slice() {
            match &e.kind {
                ValidationErrorKind::AnyOf { context: inner } | ValidationErrorKind::OneOfNotValid { context: inner } if here(e) => {
                    if !enum_alternatives(inner, path, consts, others) {
                        return false;
                    }
                }
                _ => return false,
            }
        } else {
            return false;
        }
    }
    true
}

/// A valid step id close to `id`, if there is a sensible one.
fn step_id_suggestion(id: &str) -> Option<String> {
    let s = id.to_lowercase().replace(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'), "-");
    let s = s.trim_start_matches(['-', '_']);
    let s = if s.starts_with(|c: char| c.is_ascii_digit()) { format!("step-{s}") } else { s.to_string() };
    let re = regex::Regex::new(STEP_ID_PATTERN).expect("valid pattern");
    (re.is_match(&s) && s != id).then_some(s)
}

/// The range of a fixed-size integer `format` (as schemars writes them).
fn integer_range(format: &str) -> Option<(i128, i128)> {
    Some(match format {
        "uint8" => (0, u8::MAX.into()),
        "uint16" => (0, u16::MAX.into()),
        "uint32" => (0, u32::MAX.into()),
        "uint64" | "uint" => (0, u64::MAX.into()),
        "int8" => (i8::MIN.into(), i8::MAX.into()),
        "int16" => (i16::MIN.into(), i16::MAX.into()),
        "int32" => (i32::MIN.into(), i32::MAX.into()),
        "int64" | "int" => (i64::MIN.into(), i64::MAX.into()),
        _ => return None,
    })
}

/// Compile a schema for our own checks.
///
/// The published schemas declare draft 2020-12, but they use only keywords that
/// draft 7 has, and `$ref`s that are plain JSON pointers. Compiling them as draft 7
/// gives the same verdicts while sparing the check of the schema against the
/// 2020-12 meta-schema, whose dynamic references cost ~80 ms at every start.
///
/// # Errors
/// When the schema is not valid.
pub fn compile(schema: &Value) -> Result<jsonschema::Validator, ValidationError<'static>> {
    jsonschema::options().with_draft(jsonschema::Draft::Draft7).build(schema)
}

fn type_name(t: &str) -> String {
    match t {
        "object" => "a mapping".into(),
        "array" => "a list".into(),
        "string" => "a string".into(),
        "integer" => "an integer".into(),
        "number" => "a number".into(),
        "boolean" => "a boolean (true or false)".into(),
        "null" => "nothing".into(),
        other => other.into(),
    }
}

/// "a string", "a list"... for a value.
#[must_use]
pub fn describe(v: &Value) -> String {
    match v {
        Value::Null => "an empty value".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(n) if n.is_f64() => format!("the number {n}"),
        Value::Number(n) => format!("the integer {n}"),
        Value::String(s) => format!("the string {}", show(&Value::String(s.clone()))),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) if s.chars().count() > 40 => format!("`{}…`", s.chars().take(40).collect::<String>()),
        Value::String(s) => format!("`{s}`"),
        other => {
            let t = other.to_string();
            if t.len() > 40 {
                format!("`{}…`", &t[..t.floor_char_boundary(40)])
            } else {
                format!("`{t}`")
            }
        }
    }
}

/// The closest candidate within a small edit distance.
#[must_use]
pub fn did_you_mean<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4) && *d < c.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_id_suggestions() {
        assert_eq!(step_id_suggestion("Build").as_deref(), Some("build"));
        assert_eq!(step_id_suggestion("build app").as_deref(), Some("build-app"));
        assert_eq!(step_id_suggestion("1st").as_deref(), Some("step-1st"));
        assert_eq!(step_id_suggestion("_x").as_deref(), Some("x"));
        assert_eq!(step_id_suggestion("é"), None);
        assert_eq!(step_id_suggestion("-"), None);
    }

    #[test]
    fn integer_ranges() {
        assert_eq!(integer_range("uint32"), Some((0, 4_294_967_295)));
        assert_eq!(integer_range("int8"), Some((-128, 127)));
        assert_eq!(integer_range("double"), None);
    }
}
