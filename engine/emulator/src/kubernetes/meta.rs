//! The API's vocabulary: the kinds served, discovery documents, `Status`
//! errors, timestamps, label and field selectors.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

/// One served resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// API group, `""` for the core group.
    pub group: &'static str,
    /// Version within the group.
    pub version: &'static str,
    /// The URL's plural.
    pub plural: &'static str,
    /// Singular name.
    pub singular: &'static str,
    /// `kind`.
    pub kind: &'static str,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// `kubectl` short names.
    pub short: &'static [&'static str],
    /// Has a `status` subresource (main-resource writes keep the old status).
    pub has_status: bool,
}

impl Kind {
    /// `v1` or `apps/v1`.
    #[must_use]
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `Job.batch`, `Pod`: how error messages name the kind.
    #[must_use]
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_owned()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// `jobs.batch`, `pods`: how NotFound messages name the resource.
    #[must_use]
    pub fn resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

#[allow(clippy::too_many_arguments)]
const fn k(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    has_status: bool,
) -> Kind {
    Kind {
        group,
        version,
        plural,
        singular,
        kind,
        namespaced,
        short,
        has_status,
    }
}

/// Every kind served.
pub const KINDS: &[Kind] = &[
    k("", "v1", "namespaces", "namespace", "Namespace", false, &["ns"], true),
    k("", "v1", "nodes", "node", "Node", false, &["no"], true),
    k("", "v1", "pods", "pod", "Pod", true, &["po"], true),
    k("", "v1", "services", "service", "Service", true, &["svc"], true),
    k("", "v1", "configmaps", "configmap", "ConfigMap", true, &["cm"], false),
    k("", "v1", "secrets", "secret", "Secret", true, &[], false),
    k("", "v1", "events", "event", "Event", true, &["ev"], false),
    k("apps", "v1", "deployments", "deployment", "Deployment", true, &["deploy"], true),
    k("apps", "v1", "replicasets", "replicaset", "ReplicaSet", true, &["rs"], true),
    k("apps", "v1", "daemonsets", "daemonset", "DaemonSet", true, &["ds"], true),
    k("batch", "v1", "jobs", "job", "Job", true, &[], true),
    k("node.k8s.io", "v1", "runtimeclasses", "runtimeclass", "RuntimeClass", false, &[], false),
];

/// The kind served at `group`/`version`/`plural`.
#[must_use]
pub fn kind_by_plural(group: &str, version: &str, plural: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
}

/// The kind named `kind` in `apiVersion`.
#[must_use]
pub fn kind_by_name(api_version: &str, kind: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .find(|k| k.api_version() == api_version && k.kind == kind)
}

/// `GET /version`.
#[must_use]
pub fn version() -> Value {
    json!({
        "major": "1", "minor": "32", "gitVersion": "v1.32.0-engine-emulator",
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.23.4", "compiler": "gc",
        "platform": "linux/amd64"
    })
}

/// `GET /api`.
#[must_use]
pub fn api_versions(host: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}]})
}

fn groups() -> Vec<&'static str> {
    let mut out: Vec<&str> = Vec::new();
    for k in KINDS {
        if !k.group.is_empty() && !out.contains(&k.group) {
            out.push(k.group);
        }
    }
    out
}

fn group_doc(group: &str) -> Value {
    let gv = format!("{group}/v1");
    json!({"name": group, "versions": [{"groupVersion": gv, "version": "v1"}],
        "preferredVersion": {"groupVersion": gv, "version": "v1"}})
}

/// `GET /apis`.
#[must_use]
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = groups().into_iter().map(group_doc).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/{group}`, if served.
#[must_use]
pub fn api_group(group: &str) -> Option<Value> {
    groups().contains(&group).then(|| {
        let mut doc = group_doc(group);
        doc["kind"] = json!("APIGroup");
        doc["apiVersion"] = json!("v1");
        doc
    })
}

/// `GET /api/v1` or `/apis/{group}/{version}`, if served.
#[must_use]
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let kinds: Vec<&Kind> = KINDS
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .collect();
    if kinds.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for k in &kinds {
        let verbs = if k.kind == "Event" || k.kind == "Node" || k.kind == "Namespace" {
            json!(["create", "delete", "get", "list", "patch", "update", "watch"])
        } else {
            json!(["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"])
        };
        let mut r = json!({"name": k.plural, "singularName": k.singular, "namespaced": k.namespaced,
            "kind": k.kind, "verbs": verbs});
        if !k.short.is_empty() {
            r["shortNames"] = json!(k.short);
        }
        if matches!(k.kind, "Pod" | "Deployment" | "DaemonSet" | "Job" | "Service" | "ReplicaSet") {
            r["categories"] = json!(["all"]);
        }
        resources.push(r);
        if k.has_status {
            resources.push(json!({"name": format!("{}/status", k.plural), "singularName": "",
                "namespaced": k.namespaced, "kind": k.kind, "verbs": ["get", "patch", "update"]}));
        }
        if k.kind == "Pod" {
            resources.push(json!({"name": "pods/log", "singularName": "", "namespaced": true,
                "kind": "Pod", "verbs": ["get"]}));
        }
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
}

/// A `Status` failure, shaped exactly as the API server shapes it.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP code.
    pub code: u16,
    /// `NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, ...
    pub reason: &'static str,
    /// Human message.
    pub message: String,
    /// `details`, if any.
    pub details: Option<Value>,
}

impl ApiError {
    /// The `Status` body.
    #[must_use]
    pub fn status(&self) -> Value {
        let mut v = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code});
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }

    /// 404 `pods "x" not found`.
    #[must_use]
    pub fn not_found(kind: &Kind, name: &str) -> Self {
        Self {
            code: 404,
            reason: "NotFound",
            message: format!("{} \"{name}\" not found", kind.resource()),
            details: Some(json!({"name": name, "group": kind.group, "kind": kind.plural})),
        }
    }

    /// 409 `pods "x" already exists`.
    #[must_use]
    pub fn already_exists(kind: &Kind, name: &str) -> Self {
        Self {
            code: 409,
            reason: "AlreadyExists",
            message: format!("{} \"{name}\" already exists", kind.resource()),
            details: Some(json!({"name": name, "group": kind.group, "kind": kind.plural})),
        }
    }

    /// 409 optimistic-concurrency conflict.
    #[must_use]
    pub fn stale(kind: &Kind, name: &str) -> Self {
        Self {
            code: 409,
            reason: "Conflict",
            message: format!("Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again", kind.resource()),
            details: Some(json!({"name": name, "group": kind.group, "kind": kind.plural})),
        }
    }

    /// 422 `Job.batch "x" is invalid: field: message`; `causes` are (reason, field, message).
    #[must_use]
    pub fn invalid(kind: &Kind, name: &str, causes: &[(&str, String, String)]) -> Self {
        let text: Vec<String> = causes.iter().map(|(_, f, m)| format!("{f}: {m}")).collect();
        let message = if text.len() == 1 {
            format!("{} \"{name}\" is invalid: {}", kind.qualified(), text[0])
        } else {
            format!("{} \"{name}\" is invalid: [{}]", kind.qualified(), text.join(", "))
        };
        let causes: Vec<Value> = causes
            .iter()
            .map(|(r, f, m)| json!({"reason": r, "message": m, "field": f}))
            .collect();
        Self {
            code: 422,
            reason: "Invalid",
            message,
            details: Some(json!({"name": name, "group": kind.group, "kind": kind.kind, "causes": causes})),
        }
    }

    /// 400 `BadRequest`.
    #[must_use]
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            code: 400,
            reason: "BadRequest",
            message: message.into(),
            details: None,
        }
    }

    /// 403 `Forbidden`.
    #[must_use]
    pub fn forbidden(kind: &Kind, name: &str, why: &str) -> Self {
        Self {
            code: 403,
            reason: "Forbidden",
            message: format!("{} \"{name}\" is forbidden: {why}", kind.resource()),
            details: Some(json!({"name": name, "group": kind.group, "kind": kind.plural})),
        }
    }

    /// 404 for an unknown path.
    #[must_use]
    pub fn no_route() -> Self {
        Self {
            code: 404,
            reason: "NotFound",
            message: "the server could not find the requested resource".to_owned(),
            details: Some(json!({})),
        }
    }

    /// 405.
    #[must_use]
    pub fn method_not_allowed(method: &str) -> Self {
        Self {
            code: 405,
            reason: "MethodNotAllowed",
            message: format!("the server does not allow this method on the requested resource ({method})"),
            details: Some(json!({})),
        }
    }

    /// 401.
    #[must_use]
    pub fn unauthorized() -> Self {
        Self {
            code: 401,
            reason: "Unauthorized",
            message: "Unauthorized".to_owned(),
            details: None,
        }
    }
}

/// Now as RFC 3339 with second precision, `2025-01-02T03:04:05Z`.
#[must_use]
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_rfc3339(secs)
}

/// Seconds since the epoch as RFC 3339.
#[must_use]
pub fn format_rfc3339(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// A random UUID v4.
#[must_use]
pub fn uuid() -> String {
    let n = rand::random::<u128>();
    let n = (n & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let h = format!("{n:032x}");
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// `n` random characters as the API server's name generator uses.
#[must_use]
pub fn random_suffix(n: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..n)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector (`a=b,c!=d,e in (x,y),!f`).
#[derive(Debug, Clone, Default)]
pub struct LabelSelector(Vec<Req>);

impl LabelSelector {
    /// Parses the query-string form.
    ///
    /// # Errors
    /// A message when the text is not a selector.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut depth = 0;
        let mut cur = String::new();
        for c in text.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(std::mem::take(&mut cur));
                    continue;
                }
                _ => {}
            }
            cur.push(c);
        }
        parts.push(cur);
        let mut reqs = Vec::new();
        for p in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
            let set = |rest: &str| -> Result<Vec<String>, String> {
                let rest = rest.trim();
                let inner = rest
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| format!("unable to parse requirement: {p}"))?;
                Ok(inner.split(',').map(|s| s.trim().to_owned()).collect())
            };
            if let Some(key) = p.strip_prefix('!') {
                reqs.push(Req::NotExists(key.trim().to_owned()));
            } else if let Some((key, v)) = p.split_once("!=") {
                reqs.push(Req::Ne(key.trim().to_owned(), v.trim().to_owned()));
            } else if let Some((key, v)) = p.split_once("==") {
                reqs.push(Req::Eq(key.trim().to_owned(), v.trim().to_owned()));
            } else if let Some((key, v)) = p.split_once('=') {
                reqs.push(Req::Eq(key.trim().to_owned(), v.trim().to_owned()));
            } else if let Some((key, rest)) = p.split_once(" notin ") {
                reqs.push(Req::NotIn(key.trim().to_owned(), set(rest)?));
            } else if let Some((key, rest)) = p.split_once(" in ") {
                reqs.push(Req::In(key.trim().to_owned(), set(rest)?));
            } else if p.contains(char::is_whitespace) {
                return Err(format!("unable to parse requirement: {p}"));
            } else {
                reqs.push(Req::Exists(p.to_owned()));
            }
        }
        Ok(Self(reqs))
    }

    /// From a `LabelSelector` object (`matchLabels`, `matchExpressions`).
    #[must_use]
    pub fn from_object(sel: &Value) -> Self {
        let mut reqs = Vec::new();
        if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in m {
                reqs.push(Req::Eq(k.clone(), v.as_str().unwrap_or_default().to_owned()));
            }
        }
        for e in sel
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = e["key"].as_str().unwrap_or_default().to_owned();
            let values: Vec<String> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            reqs.push(match e["operator"].as_str().unwrap_or_default() {
                "In" => Req::In(key, values),
                "NotIn" => Req::NotIn(key, values),
                "DoesNotExist" => Req::NotExists(key),
                _ => Req::Exists(key),
            });
        }
        Self(reqs)
    }

    /// Whether `labels` (an object or null) match.
    #[must_use]
    pub fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::Ne(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }

    /// Whether it selects nothing in particular (everything).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A parsed field selector: (path, equal?, value).
#[derive(Debug, Clone, Default)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses `metadata.name=x,status.phase!=Running`.
    ///
    /// # Errors
    /// A message for a field this kind cannot be selected by.
    pub fn parse(text: &str, kind: &Kind) -> Result<Self, String> {
        let mut out = Vec::new();
        for p in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, eq, value) = if let Some((f, v)) = p.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = p.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = p.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!("invalid selector: '{p}'; can't understand '{p}'"));
            };
            let allowed = matches!(field, "metadata.name" | "metadata.namespace")
                || (kind.kind == "Pod"
                    && matches!(field, "status.phase" | "spec.nodeName" | "spec.restartPolicy" | "spec.schedulerName" | "status.podIP"))
                || (kind.kind == "Event" && field.starts_with("involvedObject."))
                || (kind.kind == "Secret" && field == "type")
                || (kind.kind == "Node" && field == "spec.unschedulable")
                || (kind.kind == "Job" && field == "status.successful");
            if !allowed {
                return Err(format!(
                    "\"{field}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
                ));
            }
            out.push((field.to_owned(), eq, value.to_owned()));
        }
        Ok(Self(out))
    }

    /// Whether `obj` matches.
    #[must_use]
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(path, eq, want)| {
            let mut cur = obj;
            for part in path.split('.') {
                cur = cur.get(part).unwrap_or(&Value::Null);
            }
            let have = match cur {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (have == *want) == *eq
        })
    }
}

/// `obj.metadata.<field>` as a string.
#[must_use]
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Ensures `obj[key]` is an object and returns it.
pub fn obj_mut<'a>(obj: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let map = obj.as_object_mut().unwrap_or_else(|| unreachable!());
    let entry = map
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut().unwrap_or_else(|| unreachable!())
}

/// Standard base64 (for Secret `stringData`).
#[must_use]
pub fn base64(data: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 { T[(n >> 6) as usize & 63] as char } else { '=' });
        out.push(if chunk.len() > 2 { T[n as usize & 63] as char } else { '=' });
    }
    out
}

/// `GET /openapi/v3`: one document per group-version.
#[must_use]
pub fn openapi_v3_root() -> Value {
    let mut paths = Map::new();
    let mut gvs: Vec<String> = Vec::new();
    for k in KINDS {
        let p = if k.group.is_empty() { "api/v1".to_owned() } else { format!("apis/{}/{}", k.group, k.version) };
        if !gvs.contains(&p) {
            gvs.push(p);
        }
    }
    for p in gvs {
        paths.insert(p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=0000000000000000")}));
    }
    json!({"paths": paths})
}

/// `GET /openapi/v3/{api/v1 | apis/g/v}`: the paths of each kind with the
/// query parameters kubectl probes (`fieldValidation`, `fieldManager`,
/// `dryRun`, `force`), so that it validates server-side. No schemas.
#[must_use]
pub fn openapi_v3_doc(group: &str, version: &str) -> Option<Value> {
    let kinds: Vec<&Kind> = KINDS.iter().filter(|k| k.group == group && k.version == version).collect();
    if kinds.is_empty() {
        return None;
    }
    let prefix = if group.is_empty() { "/api/v1".to_owned() } else { format!("/apis/{group}/{version}") };
    let q = |n: &str| json!({"name": n, "in": "query", "schema": {"type": "string"}, "uniqueItems": true});
    let mut paths = Map::new();
    for k in kinds {
        let gvk = json!({"group": k.group, "version": k.version, "kind": k.kind});
        let base = if k.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", k.plural)
        } else {
            format!("{prefix}/{}", k.plural)
        };
        let op = |action: &str, params: Vec<Value>| json!({"operationId": format!("{action}{}", k.kind),
            "parameters": params, "responses": {"200": {"description": "OK"}},
            "x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk});
        let write = || vec![q("dryRun"), q("fieldManager"), q("fieldValidation")];
        let mut patch_params = write();
        patch_params.push(q("force"));
        paths.insert(base.clone(), json!({"get": op("list", vec![q("labelSelector"), q("fieldSelector"), q("watch"), q("resourceVersion")]),
            "post": op("post", write())}));
        paths.insert(format!("{base}/{{name}}"), json!({"get": op("get", vec![]), "put": op("put", write()),
            "patch": op("patch", patch_params), "delete": op("delete", vec![q("dryRun"), q("propagationPolicy")])}));
    }
    Some(json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0"}, "paths": paths,
        "components": {"schemas": {}}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times_and_selectors() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        let s = LabelSelector::parse("app=a,tier in (x, y),!gone").unwrap();
        assert!(s.matches(&json!({"app": "a", "tier": "y"})));
        assert!(!s.matches(&json!({"app": "a", "tier": "z"})));
        assert_eq!(base64(b"hello"), "aGVsbG8=");
        assert_eq!(uuid().len(), 36);
    }
}
