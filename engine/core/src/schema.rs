//! JSON Schemas generated from Rust types, as the engine publishes them.

use schemars::JsonSchema;
use serde_json::Value;

/// The draft 2020-12 schema of `T`, with `Option` fields accepting the value
/// type only (an absent key is how a workflow says "none"; `key: null` is a
/// type error, which catches a forgotten value).
#[must_use]
pub fn json_schema<T: JsonSchema>() -> Value {
    let mut v = serde_json::to_value(schemars::generate::SchemaSettings::draft2020_12().into_generator().into_root_schema_for::<T>())
        .unwrap_or(Value::Null);
    strip_null(&mut v);
    v
}

fn strip_null(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if let Some(Value::Array(types)) = o.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let t = types.remove(0);
                    o.insert("type".into(), t);
                }
            }
            let is_null = |s: &Value| s.get("type").is_some_and(|t| t == "null") && s.as_object().is_some_and(|o| o.len() == 1);
            if let Some(Value::Array(branches)) = o.get("anyOf") {
                if branches.len() == 2 && branches.iter().any(is_null) {
                    let keep = branches.iter().find(|b| !is_null(b)).cloned().unwrap_or(Value::Bool(true));
                    o.remove("anyOf");
                    if let Value::Object(k) = keep {
                        for (key, val) in k {
                            o.entry(key).or_insert(val);
                        }
                    }
                }
            }
            if let Some(Value::Array(branches)) = o.get_mut("enum") {
                branches.retain(|b| !b.is_null());
            }
            for (_, x) in o.iter_mut() {
                strip_null(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strip_null),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(JsonSchema)]
    #[allow(dead_code)]
    struct S {
        a: Option<u32>,
        b: Option<Inner>,
    }
    #[derive(JsonSchema)]
    #[allow(dead_code)]
    struct Inner {
        x: String,
    }

    #[test]
    fn options_lose_their_null() {
        let s = json_schema::<S>();
        assert_eq!(s["properties"]["a"]["type"], "integer");
        assert_eq!(s["properties"]["b"]["$ref"], "#/$defs/Inner");
    }
}
