//! Server-side apply: field sets (`managedFields[].fieldsV1`), ownership,
//! conflicts and the merge of an applied configuration into the live object.
//!
//! A field set is the set of owned paths; a path element is `f:name` for a
//! map field or `k:{"name":"x"}` for an item of an associative list.
//! Associative lists are the ones Kubernetes declares with merge keys
//! (containers, env, ports, volumes, ...); every other list is atomic.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// Owned paths.
pub type FieldSet = BTreeSet<Vec<String>>;

/// The merge keys of an associative list named `field`, if it is one.
fn list_keys(field: &str, item: &Value) -> Option<Vec<&'static str>> {
    match field {
        "containers" | "initContainers" | "ephemeralContainers" | "env" | "volumes"
        | "imagePullSecrets" | "hostAliases" => Some(vec!["name"]),
        "volumeMounts" => Some(vec!["mountPath"]),
        "conditions" => Some(vec!["type"]),
        "ownerReferences" => Some(vec!["uid"]),
        "ports" if item.get("containerPort").is_some() => Some(vec!["containerPort", "protocol"]),
        "ports" if item.get("port").is_some() => Some(vec!["port", "protocol"]),
        _ => None,
    }
}

fn item_key(field: &str, item: &Value) -> Option<String> {
    let keys = list_keys(field, item)?;
    let mut m = Map::new();
    for k in keys {
        match item.get(k) {
            Some(v) => {
                m.insert(k.to_owned(), v.clone());
            }
            None if k == "protocol" => {
                m.insert(k.to_owned(), Value::String("TCP".to_owned()));
            }
            None => return None,
        }
    }
    Some(format!("k:{}", Value::Object(m)))
}

fn keyed_list(field: &str, items: &[Value]) -> bool {
    !items.is_empty() && items.iter().all(|i| item_key(field, i).is_some())
}

/// The paths `config` sets (ignoring identity metadata and `status` when `top`).
#[must_use]
pub fn fieldset_of(config: &Value, skip_status: bool) -> FieldSet {
    let mut out = FieldSet::new();
    if let Some(map) = config.as_object() {
        for (key, v) in map {
            match key.as_str() {
                "apiVersion" | "kind" => {}
                "status" if skip_status => {}
                "metadata" => {
                    if let Some(m) = v.as_object() {
                        for (mk, mv) in m {
                            if matches!(mk.as_str(), "labels" | "annotations" | "finalizers" | "ownerReferences") {
                                walk(&mut out, &mut vec!["f:metadata".to_owned()], mk, mv);
                            }
                        }
                    }
                }
                _ => walk(&mut out, &mut Vec::new(), key, v),
            }
        }
    }
    out
}

fn walk(out: &mut FieldSet, path: &mut Vec<String>, key: &str, v: &Value) {
    path.push(format!("f:{key}"));
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                walk(out, path, k, child);
            }
        }
        Value::Array(items) if keyed_list(key, items) => {
            for item in items {
                let Some(ik) = item_key(key, item) else { continue };
                path.push(ik);
                out.insert(path.clone());
                if let Some(m) = item.as_object() {
                    for (k, child) in m {
                        walk(out, path, k, child);
                    }
                }
                path.pop();
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
    path.pop();
}

/// The `fieldsV1` tree of a set.
#[must_use]
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for el in path {
            let entry = cur
                .entry(el.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            cur = match entry.as_object_mut() {
                Some(m) => m,
                None => break,
            };
        }
    }
    // A node that is owned and has children gets ".".
    fn mark(node: &mut Map<String, Value>, prefix: &mut Vec<String>, set: &FieldSet) {
        for (k, v) in node.iter_mut() {
            prefix.push(k.clone());
            if let Some(m) = v.as_object_mut() {
                if !m.is_empty() {
                    if set.contains(prefix) {
                        m.insert(".".to_owned(), Value::Object(Map::new()));
                    }
                    mark(m, prefix, set);
                }
            }
            prefix.pop();
        }
    }
    mark(&mut root, &mut Vec::new(), set);
    Value::Object(root)
}

/// A set back from its `fieldsV1` tree.
#[must_use]
pub fn from_fields_v1(tree: &Value) -> FieldSet {
    fn go(out: &mut FieldSet, path: &mut Vec<String>, node: &Value) {
        let Some(m) = node.as_object() else { return };
        if (m.is_empty() || m.contains_key(".")) && !path.is_empty() {
            out.insert(path.clone());
        }
        for (k, v) in m {
            if k == "." {
                continue;
            }
            path.push(k.clone());
            go(out, path, v);
            path.pop();
        }
    }
    let mut out = FieldSet::new();
    go(&mut out, &mut Vec::new(), tree);
    out
}

/// The value at `path` in `obj`.
#[must_use]
pub fn lookup<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    let mut last_field = "";
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            cur = cur.get(f)?;
            last_field = f;
        } else {
            cur = cur
                .as_array()?
                .iter()
                .find(|i| item_key(last_field, i).as_deref() == Some(el.as_str()))?;
        }
    }
    Some(cur)
}

/// Removes the value at `path` from `obj`.
fn remove(obj: &mut Value, path: &[String]) {
    let Some((last, parent_path)) = path.split_last() else { return };
    let mut cur = obj;
    let mut last_field = String::new();
    for el in parent_path {
        let next = if let Some(f) = el.strip_prefix("f:") {
            last_field = f.to_owned();
            cur.get_mut(f)
        } else {
            let lf = last_field.clone();
            cur.as_array_mut()
                .and_then(|a| a.iter_mut().find(|i| item_key(&lf, i).as_deref() == Some(el.as_str())))
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(a) = cur.as_array_mut() {
        a.retain(|i| item_key(&last_field, i).as_deref() != Some(last.as_str()));
    }
}

/// `.spec.containers[name="main"].image`: how conflicts name a path.
#[must_use]
pub fn path_string(path: &[String]) -> String {
    let mut out = String::new();
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            let inner: Vec<String> = serde_json::from_str::<Map<String, Value>>(k)
                .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            out.push_str(&format!("[{}]", inner.join(",")));
        }
    }
    out
}

/// Deep-merges `config` into `live`: maps field by field, associative lists
/// item by item, everything else replaced.
pub fn merge(live: &mut Value, config: &Value, field: &str) {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) => {
            for (k, cv) in c {
                if cv.is_null() {
                    l.remove(k);
                    continue;
                }
                match l.get_mut(k) {
                    Some(lv) => merge(lv, cv, k),
                    None => {
                        l.insert(k.clone(), cv.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(c)) if keyed_list(field, c) && keyed_list(field, l) => {
            for ci in c {
                let key = item_key(field, ci);
                match l.iter_mut().find(|li| item_key(field, li) == key) {
                    Some(li) => merge(li, ci, ""),
                    None => l.push(ci.clone()),
                }
            }
        }
        (l, c) => *l = c.clone(),
    }
}

/// Whether any path in `set` is `path` or lies under it.
fn owns_under(set: &FieldSet, path: &[String]) -> bool {
    set.range(path.to_vec()..)
        .next()
        .is_some_and(|p| p.starts_with(path))
}

/// One conflict: the path and the manager that owns it.
#[derive(Debug, Clone)]
pub struct Conflict {
    /// The owner.
    pub manager: String,
    /// Its apiVersion.
    pub api_version: String,
    /// The path.
    pub path: Vec<String>,
}

/// A manager's entry.
#[derive(Debug, Clone)]
pub struct Managed {
    /// `fieldManager`.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// The object's apiVersion when it was written.
    pub api_version: String,
    /// RFC 3339.
    pub time: String,
    /// `status` for subresource writes.
    pub subresource: Option<String>,
    /// The owned paths.
    pub fields: FieldSet,
}

/// The managers recorded in `obj.metadata.managedFields`.
#[must_use]
pub fn managers_of(obj: &Value) -> Vec<Managed> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| Managed {
            manager: e["manager"].as_str().unwrap_or_default().to_owned(),
            operation: e["operation"].as_str().unwrap_or("Update").to_owned(),
            api_version: e["apiVersion"].as_str().unwrap_or_default().to_owned(),
            time: e["time"].as_str().unwrap_or_default().to_owned(),
            subresource: e["subresource"].as_str().map(str::to_owned),
            fields: from_fields_v1(&e["fieldsV1"]),
        })
        .collect()
}

/// Writes `managers` into `obj.metadata.managedFields` (dropping empty ones).
pub fn set_managers(obj: &mut Value, managers: &[Managed]) {
    let entries: Vec<Value> = managers
        .iter()
        .filter(|m| !m.fields.is_empty())
        .map(|m| {
            let mut e = serde_json::json!({"manager": m.manager, "operation": m.operation,
                "apiVersion": m.api_version, "time": m.time, "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&m.fields)});
            if let Some(s) = &m.subresource {
                e["subresource"] = Value::String(s.clone());
            }
            e
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if entries.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".to_owned(), Value::Array(entries));
        }
    }
}

/// Applies `config` as `manager` to `live` (None: the object is new).
/// Returns the new object (managedFields updated) or the conflicts.
///
/// # Errors
/// The conflicts when `force` is false and another manager owns a field
/// `config` sets to a different value.
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, Vec<Conflict>> {
    let api_version = config["apiVersion"].as_str().unwrap_or_default().to_owned();
    let new_set = fieldset_of(config, true);
    let mut managers = live.map(managers_of).unwrap_or_default();
    let mut obj = live.cloned().unwrap_or_else(|| Value::Object(Map::new()));
    let mut conflicts = Vec::new();
    for m in &managers {
        if m.operation == "Apply" && m.manager == manager || m.subresource.is_some() {
            continue;
        }
        for path in new_set.intersection(&m.fields) {
            let ours = lookup(config, path);
            let theirs = lookup(&obj, path);
            let leaf = ours.is_none_or(|v| !v.is_object() || v.as_object().is_some_and(Map::is_empty));
            if leaf && ours != theirs {
                conflicts.push(Conflict {
                    manager: m.manager.clone(),
                    api_version: m.api_version.clone(),
                    path: path.clone(),
                });
            }
        }
    }
    if !conflicts.is_empty() {
        if !force {
            return Err(conflicts);
        }
        for c in &conflicts {
            for m in &mut managers {
                if m.manager == c.manager {
                    m.fields.remove(&c.path);
                }
            }
        }
    }
    // Fields this manager stops applying and nobody else owns are removed.
    let previous = managers
        .iter()
        .find(|m| m.operation == "Apply" && m.manager == manager)
        .map(|m| m.fields.clone())
        .unwrap_or_default();
    for path in previous.difference(&new_set) {
        let others = managers
            .iter()
            .filter(|m| !(m.operation == "Apply" && m.manager == manager))
            .any(|m| owns_under(&m.fields, path));
        if !others && !owns_under(&new_set, path) {
            remove(&mut obj, path);
        }
    }
    merge(&mut obj, config, "");
    managers.retain(|m| !(m.operation == "Apply" && m.manager == manager));
    managers.push(Managed {
        manager: manager.to_owned(),
        operation: "Apply".to_owned(),
        api_version,
        time: now.to_owned(),
        subresource: None,
        fields: new_set,
    });
    set_managers(&mut obj, &managers);
    Ok(obj)
}

/// Records an `Update` by `manager` that turned `old` into `new` (in place):
/// the manager takes the changed fields from everyone else.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: Option<&str>,
    now: &str,
) {
    let mut managers = old.map(managers_of).unwrap_or_default();
    let old_set = old.map(|o| fieldset_of(o, subresource.is_none())).unwrap_or_default();
    let new_full = if subresource == Some("status") {
        let mut v = Map::new();
        if let Some(s) = new.get("status") {
            v.insert("status".to_owned(), s.clone());
        }
        fieldset_of(&Value::Object(v), false)
    } else {
        fieldset_of(new, true)
    };
    let changed: FieldSet = new_full
        .iter()
        .filter(|p| {
            !old_set.contains(*p)
                || old.and_then(|o| lookup(o, p)) != lookup(new, p)
        })
        .cloned()
        .collect();
    if changed.is_empty() && old.is_some() {
        set_managers(new, &managers);
        return;
    }
    for m in &mut managers {
        for p in &changed {
            m.fields.remove(p);
        }
    }
    let api_version = new["apiVersion"].as_str().unwrap_or_default().to_owned();
    match managers.iter_mut().find(|m| {
        m.operation == "Update" && m.manager == manager && m.subresource.as_deref() == subresource
    }) {
        Some(m) => {
            m.fields.extend(changed);
            m.time = now.to_owned();
        }
        None => managers.push(Managed {
            manager: manager.to_owned(),
            operation: "Update".to_owned(),
            api_version,
            time: now.to_owned(),
            subresource: subresource.map(str::to_owned),
            fields: changed,
        }),
    }
    set_managers(new, &managers);
}

/// The conflict message the API server returns.
#[must_use]
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    let n = conflicts.len();
    let mut by_manager: Vec<(String, String, Vec<String>)> = Vec::new();
    for c in conflicts {
        let p = path_string(&c.path);
        match by_manager.iter_mut().find(|(m, _, _)| *m == c.manager) {
            Some((_, _, ps)) => ps.push(p),
            None => by_manager.push((c.manager.clone(), c.api_version.clone(), vec![p])),
        }
    }
    let plural = if n == 1 { "conflict" } else { "conflicts" };
    let mut parts = Vec::new();
    for (m, v, ps) in &by_manager {
        if ps.len() == 1 {
            parts.push(format!("conflict with \"{m}\" using {v}: {}", ps[0]));
        } else {
            let lines: Vec<String> = ps.iter().map(|p| format!("- {p}")).collect();
            parts.push(format!("conflicts with \"{m}\" using {v}:\n{}", lines.join("\n")));
        }
    }
    format!("Apply failed with {n} {plural}: {}", parts.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn apply_conflicts_and_force() {
        let a = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"x": "1"}},
            "data": {"k": "a", "only-a": "1"}});
        let live = apply(None, &a, "a", false, "t").unwrap();
        let fv1 = &live["metadata"]["managedFields"][0]["fieldsV1"];
        assert_eq!(fv1["f:data"]["f:k"], json!({}));
        assert_eq!(from_fields_v1(fv1), fieldset_of(&a, true));
        let b = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "b"}});
        let err = apply(Some(&live), &b, "b", false, "t").unwrap_err();
        assert_eq!(conflict_message(&err), "Apply failed with 1 conflict: conflict with \"a\" using v1: .data.k");
        let same = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "a"}});
        assert!(apply(Some(&live), &same, "b", false, "t").is_ok());
        let forced = apply(Some(&live), &b, "b", true, "t").unwrap();
        assert_eq!(forced["data"]["k"], "b");
        // a drops only-a: it goes; k now belongs to b and stays.
        let a2 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}});
        let after = apply(Some(&forced), &a2, "a", false, "t").unwrap();
        assert_eq!(after["data"], json!({"k": "b"}));
    }

    #[test]
    fn containers_are_keyed() {
        let c = json!({"spec": {"containers": [{"name": "m", "image": "x"}]}});
        let set = fieldset_of(&c, true);
        let tree = to_fields_v1(&set);
        assert_eq!(tree["f:spec"]["f:containers"]["k:{\"name\":\"m\"}"]["."], json!({}));
        assert_eq!(from_fields_v1(&tree), set);
    }
}
