//! Manifests: inline objects or lists, multi-document YAML strings, files; `List` kinds
//! flattened; every object checked for `apiVersion`, `kind` and `metadata.name`.

use std::path::Path;

use engine_connector::ConnectorError;
use serde::Deserialize;
use serde_json::Value;

/// Parses a multi-document YAML string into objects (empty documents skipped; `kind: List`
/// flattened).
///
/// # Errors
/// `invalid` naming the document that does not parse.
pub fn parse_yaml(text: &str) -> Result<Vec<Value>, ConnectorError> {
    let mut out = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let v = Value::deserialize(doc).map_err(|e| ConnectorError::invalid(format!("YAML document {}: {e}", i + 1)))?;
        push_value(&mut out, v)?;
    }
    Ok(out)
}

/// Adds an object, a list of objects, or a `kind: List`, to `out`.
///
/// # Errors
/// `invalid` for something that is not an object.
pub fn push_value(out: &mut Vec<Value>, v: Value) -> Result<(), ConnectorError> {
    match v {
        Value::Null => Ok(()),
        Value::Array(items) => items.into_iter().try_for_each(|i| push_value(out, i)),
        Value::Object(ref m) if m.get("kind").and_then(Value::as_str).is_some_and(|k| k == "List" || k.ends_with("List")) && m.get("items").is_some_and(Value::is_array) => {
            let items = m.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
            items.into_iter().try_for_each(|i| push_value(out, i))
        }
        Value::Object(_) => {
            out.push(v);
            Ok(())
        }
        other => Err(ConnectorError::invalid(format!("a manifest must be an object, not {other}"))),
    }
}

/// The objects of `manifest:` (object or list), `yaml:` (multi-document string) and `file:`
/// (relative to `dir`), in that order; at least one object, each valid.
///
/// # Errors
/// `invalid`.
pub fn collect(manifest: Option<&Value>, yaml: Option<&str>, file: Option<&str>, dir: &Path) -> Result<Vec<Value>, ConnectorError> {
    let mut out = Vec::new();
    if let Some(m) = manifest {
        push_value(&mut out, m.clone())?;
    }
    if let Some(y) = yaml {
        out.extend(parse_yaml(y)?);
    }
    if let Some(f) = file {
        let p = if Path::new(f).is_absolute() { Path::new(f).to_path_buf() } else { dir.join(f) };
        let text = std::fs::read_to_string(&p).map_err(|e| ConnectorError::invalid(format!("manifest file {}: {e}", p.display())))?;
        let objs = if p.extension().is_some_and(|e| e == "json") {
            let v: Value = serde_json::from_str(&text).map_err(|e| ConnectorError::invalid(format!("manifest file {}: {e}", p.display())))?;
            let mut o = Vec::new();
            push_value(&mut o, v)?;
            o
        } else {
            parse_yaml(&text).map_err(|e| ConnectorError::invalid(format!("manifest file {}: {}", p.display(), e.message)))?
        };
        out.extend(objs);
    }
    if out.is_empty() {
        return Err(ConnectorError::invalid("no manifest: give `manifest:` (an object or a list), `yaml:` (documents) or `file:`"));
    }
    for (i, o) in out.iter().enumerate() {
        check(o).map_err(|m| ConnectorError::invalid(format!("manifest {}: {m}", i + 1)))?;
    }
    Ok(out)
}

/// `apiVersion`, `kind`, `metadata.name` present.
///
/// # Errors
/// What is missing.
pub fn check(o: &Value) -> Result<(), String> {
    for k in ["apiVersion", "kind"] {
        if o.get(k).and_then(Value::as_str).is_none_or(str::is_empty) {
            return Err(format!("`{k}` is missing"));
        }
    }
    if name_of(o).is_empty() {
        return Err(format!("{} has no metadata.name", kind_of(o)));
    }
    Ok(())
}

/// `apiVersion`.
#[must_use]
pub fn api_version_of(o: &Value) -> &str {
    o.get("apiVersion").and_then(Value::as_str).unwrap_or_default()
}

/// `kind`.
#[must_use]
pub fn kind_of(o: &Value) -> &str {
    o.get("kind").and_then(Value::as_str).unwrap_or_default()
}

/// `metadata.name`.
#[must_use]
pub fn name_of(o: &Value) -> &str {
    o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
}

/// `metadata.namespace`, if set.
#[must_use]
pub fn namespace_of(o: &Value) -> Option<&str> {
    o.pointer("/metadata/namespace").and_then(Value::as_str).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn multi_document_yaml_with_empty_documents_and_lists() {
        let y = "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: c, namespace: a}\n  data: {k: v}\n";
        let objs = parse_yaml(y).unwrap();
        assert_eq!(objs.len(), 2);
        assert_eq!(kind_of(&objs[0]), "Namespace");
        assert_eq!(name_of(&objs[1]), "c");
        assert_eq!(namespace_of(&objs[1]), Some("a"));
        assert_eq!(objs[1]["data"]["k"], "v");
    }

    #[test]
    fn collect_inline_yaml_and_file_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.yaml"), "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n").unwrap();
        let inline = json!([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}]);
        let objs = collect(Some(&inline), Some("apiVersion: v1\nkind: Service\nmetadata: {name: b}\n"), Some("m.yaml"), dir.path()).unwrap();
        let names: Vec<&str> = objs.iter().map(name_of).collect();
        assert_eq!(names, ["a", "b", "s"]);
    }

    #[test]
    fn bad_manifests_are_invalid_and_say_why() {
        let e = collect(None, None, None, Path::new(".")).unwrap_err();
        assert_eq!(e.kind, engine_connector::ErrorKind::Invalid);
        let e = collect(Some(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {}})), None, None, Path::new(".")).unwrap_err();
        assert!(e.message.contains("Pod has no metadata.name"), "{}", e.message);
        let e = collect(Some(&json!({"kind": "Pod", "metadata": {"name": "x"}})), None, None, Path::new(".")).unwrap_err();
        assert!(e.message.contains("`apiVersion` is missing"), "{}", e.message);
        let e = collect(None, Some("a: [1, 2\n"), None, Path::new(".")).unwrap_err();
        assert!(e.message.contains("YAML document 1"), "{}", e.message);
        let e = collect(None, None, Some("nope.yaml"), Path::new("/nonexistent")).unwrap_err();
        assert!(e.message.contains("nope.yaml"), "{}", e.message);
        assert!(collect(Some(&json!("text")), None, None, Path::new(".")).is_err());
    }
}
