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
        let validator = jsonschema::validator_for(&schema).expect("generated schemas are valid");
        Self { schema, validator, action }
    }

    /// Check `instance`, push a diagnostic per problem, and return the pointers
    /// (relative to the instance) of the values that failed.
    pub fn check(&self, instance: &Value, target: &Target<'_>, skip: &dyn Fn(&str) -> bool, diags: &mut Vec<Diagnostic>) -> BTreeSet<String> {
        let mut bad = BTreeSet::new();
        for err in self.validator.iter_errors(instance) {
            self.map(&err, instance, target, skip, diags, &mut bad);
        }
        bad
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
            ValidationErrorKind::PropertyNames { .. } => {
                let re = regex::Regex::new(STEP_ID_PATTERN).expect("valid pattern");
                if let Some(obj) = value.as_object() {
                    for k in obj.keys().filter(|k| !re.is_match(k)) {
                        let kp = format!("{path}/{}", pointer_escape(k));
                        let suggestion = k.to_lowercase().replace(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'), "-");
                        diags.push(
                            Diagnostic::error(code::BAD_STEP_ID, format!("invalid step id `{k}`"), Self::span(target, &kp, true))
                                .label("step ids match [a-z][a-z0-9_-]*")
                                .help(format!("step ids start with a lowercase letter and hold only a-z, 0-9, `_` and `-`; for example `{}`", suggestion.trim_start_matches(|c: char| !c.is_ascii_lowercase()))),
                        );
                        mark_bad(&kp);
                    }
                }
            }
            ValidationErrorKind::Enum { options } => {
                let opts: Vec<String> = options.as_array().map(|a| a.iter().map(show).collect()).unwrap_or_default();
                let mut d = Diagnostic::error(self.code(code::NOT_ALLOWED), format!("{} is not allowed {}", show(value), self.context(&path)), at)
                    .help(format!("expected one of: {}", opts.join(", ")));
                if let Some(s) = value.as_str().and_then(|v| did_you_mean(v, options.as_array().into_iter().flatten().filter_map(Value::as_str))) {
                    d = d.help(format!("did you mean `{s}`?"));
                }
                diags.push(d);
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
                let same_place_type = |errs: &Vec<ValidationError<'static>>| {
                    errs.iter().any(|e| e.instance_path.as_str() == path && matches!(e.kind, ValidationErrorKind::Type { .. }))
                };
                let matching: Vec<&Vec<ValidationError<'static>>> = context.iter().filter(|errs| !same_place_type(errs)).collect();
                if let [branch] = matching.as_slice() {
                    for e in branch.iter() {
                        self.map(e, instance, target, skip, diags, bad);
                    }
                } else {
                    let mut expected: Vec<String> = Vec::new();
                    for errs in context {
                        for e in errs {
                            if e.instance_path.as_str() == path {
                                if let ValidationErrorKind::Type { kind: TypeKind::Single(t) } = &e.kind {
                                    let n = type_name(&format!("{t}"));
                                    if !expected.contains(&n) {
                                        expected.push(n);
                                    }
                                }
                            }
                        }
                    }
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
