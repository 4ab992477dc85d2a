//! Input values: parsing `-i name=value`, reading `--inputs file.yaml`, and
//! checking every value against its declaration before anything runs.

use engine_core::diagnostics::code;
use engine_core::Diagnostic;
use indexmap::IndexMap;
use serde_json::{Map, Value};

use crate::model::{InputSpec, InputType};
use crate::schemacheck::{describe, did_you_mean};

/// Check one value against its declaration.
///
/// # Errors
/// A message saying what is wrong.
pub fn check_value(name: &str, spec: &InputSpec, v: &Value) -> Result<(), String> {
    if let Some(t) = spec.ty {
        let ok = match t {
            InputType::String => v.is_string(),
            InputType::Integer => v.is_i64() || v.is_u64(),
            InputType::Number => v.is_number(),
            InputType::Boolean => v.is_boolean(),
            InputType::Array => v.is_array(),
            InputType::Object => v.is_object(),
        };
        if !ok {
            return Err(format!("`{name}` must be of type {}, found {}", t.as_str(), describe(v)));
        }
    }
    if let Some(allowed) = &spec.allowed {
        if !allowed.contains(v) {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            return Err(format!("`{name}` must be one of {}, found {v}", list.join(", ")));
        }
    }
    if let Some(n) = v.as_f64() {
        if let Some(min) = spec.minimum {
            if n < min {
                return Err(format!("`{name}` must be at least {min}, found {v}"));
            }
        }
        if let Some(max) = spec.maximum {
            if n > max {
                return Err(format!("`{name}` must be at most {max}, found {v}"));
            }
        }
    }
    if let (Some(p), Some(s)) = (&spec.pattern, v.as_str()) {
        if let Ok(re) = regex::Regex::new(p) {
            if !re.is_match(s) {
                return Err(format!("`{name}` must match the pattern `{p}`, found {v}"));
            }
        }
    }
    Ok(())
}

/// Read a `-i name=value` text as the declared type.
///
/// # Errors
/// When it cannot be read as that type.
pub fn parse_cli_value(spec: Option<&InputSpec>, text: &str) -> Result<Value, String> {
    let ty = spec.and_then(|s| s.ty);
    match ty {
        Some(InputType::String) | None => Ok(Value::String(text.to_string())),
        Some(InputType::Integer) => text.trim().parse::<i64>().map(Value::from).map_err(|_| format!("`{text}` is not an integer")),
        Some(InputType::Number) => text
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("`{text}` is not a number")),
        Some(InputType::Boolean) => match text.trim() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!("`{text}` is not a boolean: write `true` or `false`")),
        },
        Some(t @ (InputType::Array | InputType::Object)) => {
            let v: Value = serde_json::from_str(text).map_err(|e| format!("`{text}` is not JSON: {e}"))?;
            if (t == InputType::Array && v.is_array()) || (t == InputType::Object && v.is_object()) {
                Ok(v)
            } else {
                Err(format!("`{text}` is not {}", if t == InputType::Array { "a JSON list" } else { "a JSON object" }))
            }
        }
    }
}

/// Resolve the values of every input: given values over defaults, all checked.
///
/// `given` are already-typed values (from an inputs file or a parent workflow);
/// `cli` are `-i name=value` texts, read as the declared types and applied last.
///
/// # Errors
/// Every problem found, as diagnostics.
pub fn resolve_inputs(specs: &IndexMap<String, InputSpec>, given: &Map<String, Value>, cli: &[(String, String)]) -> Result<Map<String, Value>, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut values = Map::new();
    let names: Vec<&str> = specs.keys().map(String::as_str).collect();
    let unknown = |k: &str| {
        let mut d = Diagnostic::unlocated(code::INPUT_UNKNOWN, format!("unknown input `{k}`"));
        if let Some(s) = did_you_mean(k, names.iter().copied()) {
            d = d.help(format!("did you mean `{s}`?"));
        }
        d.help(format!("declared inputs: {}", if names.is_empty() { "none".into() } else { names.join(", ") }))
    };
    for (k, v) in given {
        if specs.contains_key(k) {
            values.insert(k.clone(), v.clone());
        } else {
            diags.push(unknown(k));
        }
    }
    for (k, text) in cli {
        match specs.get(k) {
            None => diags.push(unknown(k)),
            Some(spec) => match parse_cli_value(Some(spec), text) {
                Ok(v) => {
                    values.insert(k.clone(), v);
                }
                Err(m) => diags.push(Diagnostic::unlocated(code::INPUT_TYPE, format!("input `{k}`: {m}"))),
            },
        }
    }
    for (k, spec) in specs {
        match values.get(k) {
            Some(v) => {
                if let Err(m) = check_value(k, spec, v) {
                    let c = if m.contains("must be of type") { code::INPUT_TYPE } else { code::INPUT_CONSTRAINT };
                    diags.push(Diagnostic::unlocated(c, m));
                }
            }
            None => match &spec.default {
                Some(d) => {
                    values.insert(k.clone(), d.clone());
                }
                None if spec.required == Some(false) => {
                    values.insert(k.clone(), Value::Null);
                }
                None => {
                    let mut d = Diagnostic::unlocated(code::INPUT_MISSING, format!("required input `{k}` is missing"));
                    if let Some(desc) = &spec.description {
                        d = d.help(format!("`{k}`: {desc}"));
                    }
                    diags.push(d.help(format!("pass it with `-i {k}=VALUE` or in an `--inputs` file")));
                }
            },
        }
    }
    // Keep declaration order.
    let mut ordered = Map::new();
    for k in specs.keys() {
        if let Some(v) = values.remove(k) {
            ordered.insert(k.clone(), v);
        }
    }
    if diags.is_empty() {
        Ok(ordered)
    } else {
        Err(diags)
    }
}
