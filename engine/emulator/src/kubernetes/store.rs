//! The object store: every object by kind, namespace and name, one
//! resourceVersion counter, the event log watches read, and the write paths
//! (create, update, patches, server-side apply, delete) with defaulting,
//! validation and managedFields.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use serde_json::{json, Map, Value};

use super::meta::{self, meta_str, obj_mut, ApiError, Kind, KINDS};
use super::ssa;

/// How many watch events are kept; older resourceVersions answer 410.
const EVENT_LOG: usize = 20_000;

/// One watch event.
#[derive(Debug, Clone)]
pub struct Event {
    /// The resourceVersion it made.
    pub rv: u64,
    /// Its kind.
    pub kind: &'static Kind,
    /// `ADDED`, `MODIFIED`, `DELETED`.
    pub kind_of_event: &'static str,
    /// The object as it was then.
    pub object: Value,
}

/// Per-pod emulated runtime timings.
#[derive(Debug, Clone)]
pub struct PodRun {
    /// When it was bound to a node.
    pub bound: Instant,
    /// When its container started.
    pub started: Option<Instant>,
}

type Key = (&'static str, &'static str, String, String);

fn key(kind: &Kind, ns: &str, name: &str) -> Key {
    (kind.group, kind.plural, ns.to_owned(), name.to_owned())
}

/// Everything the emulated cluster holds.
pub struct State {
    pub(super) objects: BTreeMap<Key, Value>,
    pub(super) rv: u64,
    events: VecDeque<Event>,
    pub(super) pods: HashMap<String, PodRun>,
    pub(super) time_scale: f64,
    notify: tokio::sync::watch::Sender<u64>,
    pub(super) next_ip: u32,
    /// When each terminating namespace was first seen so (its contents go after a scaled 2 s).
    pub(super) ns_since: HashMap<String, Instant>,
}

/// A write's options.
#[derive(Debug, Clone, Default)]
pub struct WriteOpts {
    /// `fieldManager`.
    pub manager: String,
    /// `force` (apply only).
    pub force: bool,
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `status` for the status subresource.
    pub subresource: Option<String>,
}

/// Whether a string is a DNS-1123 subdomain.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

/// Quantity as an integer count (`"2"`, `2`); GPUs are whole numbers.
#[must_use]
pub fn count(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().unwrap_or(0),
        Value::String(s) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

impl State {
    /// An empty cluster with the system namespaces.
    #[must_use]
    pub fn new(time_scale: f64, notify: tokio::sync::watch::Sender<u64>) -> Self {
        let mut s = Self {
            objects: BTreeMap::new(),
            rv: 1,
            events: VecDeque::new(),
            pods: HashMap::new(),
            time_scale,
            notify,
            next_ip: 10,
            ns_since: HashMap::new(),
        };
        let ns = kind("Namespace");
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            let _ = s.create(ns, "", obj, &WriteOpts { manager: "kube-apiserver".to_owned(), ..WriteOpts::default() });
        }
        s
    }

    /// The current resourceVersion.
    #[must_use]
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Stores `obj` (new resourceVersion, event, wake watchers).
    pub(super) fn commit(&mut self, kind: &'static Kind, mut obj: Value, event: &'static str) -> Value {
        self.rv += 1;
        let ns = meta_str(&obj, "namespace").to_owned();
        let name = meta_str(&obj, "name").to_owned();
        obj_mut(&mut obj, "metadata").insert("resourceVersion".to_owned(), json!(self.rv.to_string()));
        if event == "DELETED" {
            self.objects.remove(&key(kind, &ns, &name));
            if kind.kind == "Pod" {
                self.pods.remove(meta_str(&obj, "uid"));
            }
        } else {
            self.objects.insert(key(kind, &ns, &name), obj.clone());
        }
        self.events.push_back(Event {
            rv: self.rv,
            kind,
            kind_of_event: event,
            object: obj.clone(),
        });
        while self.events.len() > EVENT_LOG {
            self.events.pop_front();
        }
        let _ = self.notify.send(self.rv);
        obj
    }

    /// Stores `obj` if it differs from what is stored (controllers' writes).
    pub(super) fn put(&mut self, kind: &'static Kind, obj: Value) -> Value {
        let ns = meta_str(&obj, "namespace").to_owned();
        let name = meta_str(&obj, "name").to_owned();
        if let Some(old) = self.objects.get(&key(kind, &ns, &name)) {
            let mut a = old.clone();
            let mut b = obj.clone();
            obj_mut(&mut a, "metadata").remove("resourceVersion");
            obj_mut(&mut b, "metadata").remove("resourceVersion");
            if a == b {
                return old.clone();
            }
            return self.commit(kind, obj, "MODIFIED");
        }
        self.commit(kind, obj, "ADDED")
    }

    /// Events after `rv` (`None`: too old, 410).
    #[must_use]
    pub fn events_after(&self, rv: u64) -> Option<Vec<Event>> {
        if let Some(first) = self.events.front() {
            if rv + 1 < first.rv && rv < self.rv {
                return None;
            }
        }
        Some(self.events.iter().filter(|e| e.rv > rv).cloned().collect())
    }

    /// One object.
    #[must_use]
    pub fn get(&self, kind: &Kind, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(&key(kind, ns, name))
    }

    /// Objects of `kind` in `ns` (`None`: every namespace).
    pub fn list<'a>(&'a self, kind: &'a Kind, ns: Option<&'a str>) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects
            .iter()
            .filter(move |((g, p, n, _), _)| *g == kind.group && *p == kind.plural && ns.is_none_or(|ns| ns == n))
            .map(|(_, v)| v)
    }

    /// Every object, by `group/plural`.
    #[must_use]
    pub fn snapshot(&self) -> Value {
        let mut out = Map::new();
        for ((g, p, _, _), v) in &self.objects {
            let k = if g.is_empty() { (*p).to_owned() } else { format!("{g}/{p}") };
            if let Some(arr) = out.entry(k).or_insert_with(|| json!([])).as_array_mut() {
                arr.push(v.clone());
            }
        }
        json!({"resourceVersion": self.rv.to_string(), "objects": out})
    }

    fn check_identity(kind: &Kind, ns: &str, name: Option<&str>, body: &Value) -> Result<(), ApiError> {
        let av = body["apiVersion"].as_str().unwrap_or_default();
        let k = body["kind"].as_str().unwrap_or_default();
        if (!av.is_empty() && av != kind.api_version()) || (!k.is_empty() && k != kind.kind) {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                kind.api_version()
            )));
        }
        let body_ns = meta_str(body, "namespace");
        if kind.namespaced && !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        if let Some(name) = name {
            let body_name = meta_str(body, "name");
            if !body_name.is_empty() && body_name != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                )));
            }
        }
        Ok(())
    }

    fn require_namespace(&self, kind: &Kind, ns: &str, name: &str) -> Result<(), ApiError> {
        if !kind.namespaced {
            return Ok(());
        }
        match self.get(self::kind("Namespace"), "", ns) {
            None => Err(ApiError::not_found(self::kind("Namespace"), ns)),
            Some(n) if n.pointer("/metadata/deletionTimestamp").is_some() => Err(ApiError::forbidden(
                kind,
                name,
                &format!("unable to create new content in namespace {ns} because it is being terminated"),
            )),
            Some(_) => Ok(()),
        }
    }

    /// `POST`: creates an object.
    ///
    /// # Errors
    /// AlreadyExists, Invalid, NotFound (namespace), Forbidden.
    pub fn create(&mut self, kind: &'static Kind, ns: &str, body: Value, opts: &WriteOpts) -> Result<Value, ApiError> {
        self.create_with(kind, ns, body, opts, None)
    }

    fn create_with(&mut self, kind: &'static Kind, ns: &str, mut body: Value, opts: &WriteOpts, managed: Option<Value>) -> Result<Value, ApiError> {
        Self::check_identity(kind, ns, None, &body)?;
        let mut name = meta_str(&body, "name").to_owned();
        if name.is_empty() {
            let prefix = meta_str(&body, "generateName").to_owned();
            if prefix.is_empty() {
                return Err(ApiError::invalid(kind, "", &[("FieldValueRequired", "metadata.name".to_owned(),
                    "Required value: name or generateName is required".to_owned())]));
            }
            name = format!("{prefix}{}", meta::random_suffix(5));
        }
        self.require_namespace(kind, ns, &name)?;
        if self.get(kind, if kind.namespaced { ns } else { "" }, &name).is_some() {
            return Err(ApiError::already_exists(kind, &name));
        }
        body["apiVersion"] = json!(kind.api_version());
        body["kind"] = json!(kind.kind);
        {
            let m = obj_mut(&mut body, "metadata");
            m.insert("name".to_owned(), json!(name));
            if kind.namespaced {
                m.insert("namespace".to_owned(), json!(ns));
            } else {
                m.remove("namespace");
            }
            for k in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"] {
                m.remove(k);
            }
            m.insert("uid".to_owned(), json!(meta::uuid()));
            m.insert("creationTimestamp".to_owned(), json!(meta::now_rfc3339()));
            if has_generation(kind) {
                m.insert("generation".to_owned(), json!(1));
            }
        }
        if kind.has_status && kind.kind != "Node" {
            if let Some(m) = body.as_object_mut() {
                m.remove("status");
            }
        }
        self.default_and_validate(kind, &mut body, None)?;
        if let Some(managed) = managed {
            body["metadata"]["managedFields"] = managed;
        } else if !opts.manager.is_empty() {
            ssa::record_update(None, &mut body, &opts.manager, None, &meta::now_rfc3339());
        }
        if opts.dry_run {
            return Ok(body);
        }
        Ok(self.commit(kind, body, "ADDED"))
    }

    /// Defaults and validates `obj` (old: the stored object on updates).
    fn default_and_validate(&mut self, kind: &'static Kind, obj: &mut Value, old: Option<&Value>) -> Result<(), ApiError> {
        let name = meta_str(obj, "name").to_owned();
        let mut causes: Vec<(&str, String, String)> = Vec::new();
        if !valid_name(&name) {
            causes.push(("FieldValueInvalid", "metadata.name".to_owned(), format!(
                "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")));
        }
        match kind.kind {
            "Namespace" => {
                obj_mut(obj, "metadata");
                obj_mut(&mut obj["metadata"], "labels").insert("kubernetes.io/metadata.name".to_owned(), json!(name));
                obj_mut(obj, "spec").entry("finalizers").or_insert(json!(["kubernetes"]));
                if old.is_none() {
                    obj_mut(obj, "status").insert("phase".to_owned(), json!("Active"));
                }
            }
            "Pod" => {
                default_pod_spec(obj_mut(obj, "spec"));
                validate_pod_spec(&obj["spec"], "spec", &mut causes);
                if old.is_none() {
                    obj_mut(obj, "status").insert("phase".to_owned(), json!("Pending"));
                    obj["status"]["qosClass"] = json!("BestEffort");
                }
            }
            "Job" => {
                let uid = meta_str(obj, "uid").to_owned();
                let spec = obj_mut(obj, "spec");
                for (k, v) in [("completions", json!(1)), ("parallelism", json!(1)), ("backoffLimit", json!(6)),
                    ("completionMode", json!("NonIndexed")), ("suspend", json!(false)),
                    ("podReplacementPolicy", json!("TerminatedOrFailed")), ("manualSelector", json!(false))] {
                    spec.entry(k).or_insert(v);
                }
                if old.is_none() {
                    let labels = json!({"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
                        "controller-uid": uid, "job-name": name});
                    spec.insert("selector".to_owned(), json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}));
                    let tmpl = spec.entry("template").or_insert(json!({}));
                    let tl = obj_mut(obj_mut_value(tmpl, "metadata"), "labels");
                    for (k, v) in labels.as_object().into_iter().flatten() {
                        tl.insert(k.clone(), v.clone());
                    }
                } else if let Some(o) = old {
                    spec.insert("selector".to_owned(), o["spec"]["selector"].clone());
                    if o["spec"]["template"] != obj["spec"]["template"] {
                        causes.push(("FieldValueInvalid", "spec.template".to_owned(), "Invalid value: field is immutable".to_owned()));
                    }
                }
                default_pod_spec(obj_mut(obj_mut_value(obj_mut_value(obj, "spec"), "template"), "spec"));
                let rp = obj["spec"]["template"]["spec"]["restartPolicy"].as_str().unwrap_or_default();
                if rp != "Never" && rp != "OnFailure" {
                    causes.push(("FieldValueNotSupported", "spec.template.spec.restartPolicy".to_owned(),
                        format!("Unsupported value: \"{rp}\": supported values: \"OnFailure\", \"Never\"")));
                }
                validate_pod_spec(&obj["spec"]["template"]["spec"], "spec.template.spec", &mut causes);
            }
            "Deployment" | "DaemonSet" | "ReplicaSet" => {
                let spec = obj_mut(obj, "spec");
                if kind.kind != "DaemonSet" {
                    spec.entry("replicas").or_insert(json!(1));
                }
                spec.entry("revisionHistoryLimit").or_insert(json!(10));
                if kind.kind == "Deployment" {
                    spec.entry("progressDeadlineSeconds").or_insert(json!(600));
                    spec.entry("strategy").or_insert(json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}));
                }
                if kind.kind == "DaemonSet" {
                    spec.entry("updateStrategy").or_insert(json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}));
                }
                default_pod_spec(obj_mut(obj_mut_value(obj_mut_value(obj, "spec"), "template"), "spec"));
                let sel = meta::LabelSelector::from_object(&obj["spec"]["selector"]);
                if obj["spec"]["selector"].is_null() {
                    causes.push(("FieldValueRequired", "spec.selector".to_owned(), "Required value".to_owned()));
                } else if sel.is_empty() || !sel.matches(&obj["spec"]["template"]["metadata"]["labels"]) {
                    causes.push(("FieldValueInvalid", "spec.template.metadata.labels".to_owned(),
                        format!("Invalid value: {}: `selector` does not match template `labels`", obj["spec"]["template"]["metadata"]["labels"])));
                }
                if let Some(o) = old {
                    if o["spec"]["selector"] != obj["spec"]["selector"] {
                        causes.push(("FieldValueInvalid", "spec.selector".to_owned(), format!("Invalid value: {}: field is immutable", obj["spec"]["selector"])));
                    }
                }
                validate_pod_spec(&obj["spec"]["template"]["spec"], "spec.template.spec", &mut causes);
            }
            "Service" => {
                let assigned = old.map(|o| o["spec"]["clusterIP"].clone());
                let ip = match assigned {
                    Some(Value::String(ip)) => ip,
                    _ => {
                        self.next_ip += 1;
                        format!("10.96.{}.{}", self.next_ip / 250, self.next_ip % 250 + 1)
                    }
                };
                let spec = obj_mut(obj, "spec");
                spec.entry("type").or_insert(json!("ClusterIP"));
                spec.entry("sessionAffinity").or_insert(json!("None"));
                if spec.get("clusterIP").and_then(Value::as_str) != Some("None") {
                    spec.insert("clusterIP".to_owned(), json!(ip));
                    spec.insert("clusterIPs".to_owned(), json!([ip]));
                }
                if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports {
                        let port = p["port"].clone();
                        if let Some(pm) = p.as_object_mut() {
                            pm.entry("protocol").or_insert(json!("TCP"));
                            pm.entry("targetPort").or_insert(port);
                        }
                    }
                }
                if old.is_none() {
                    obj["status"] = json!({"loadBalancer": {}});
                }
            }
            "Secret" => {
                let m = obj.as_object_mut().unwrap_or_else(|| unreachable!());
                m.entry("type").or_insert(json!("Opaque"));
                if let Some(Value::Object(sd)) = m.remove("stringData") {
                    let data = m.entry("data").or_insert(json!({}));
                    for (k, v) in sd {
                        data[k] = json!(meta::base64(v.as_str().unwrap_or_default().as_bytes()));
                    }
                }
            }
            "RuntimeClass" if obj["handler"].as_str().is_none_or(str::is_empty) => {
                causes.push(("FieldValueRequired", "handler".to_owned(), "Required value".to_owned()));
            }
            _ => {}
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid(kind, &name, &causes));
        }
        if kind.kind == "Pod" && old.is_none() {
            if let Some(rc) = obj["spec"]["runtimeClassName"].as_str() {
                if self.get(self::kind("RuntimeClass"), "", rc).is_none() {
                    return Err(ApiError::forbidden(kind, &name, &format!("pod rejected: RuntimeClass \"{rc}\" not found")));
                }
            }
            set_qos(obj);
        }
        Ok(())
    }

    fn stored(&self, kind: &Kind, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.get(kind, if kind.namespaced { ns } else { "" }, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(kind, name))
    }

    /// Finishes an update of `old` into `new`: identity, status handling,
    /// generation, managedFields; stores unless a dry run.
    fn finish_update(&mut self, kind: &'static Kind, old: &Value, mut new: Value, opts: &WriteOpts, apply: bool) -> Result<Value, ApiError> {
        let name = meta_str(old, "name").to_owned();
        new["apiVersion"] = json!(kind.api_version());
        new["kind"] = json!(kind.kind);
        {
            let om = old["metadata"].clone();
            let m = obj_mut(&mut new, "metadata");
            for k in ["name", "namespace", "uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"] {
                match om.get(k) {
                    Some(v) => m.insert(k.to_owned(), v.clone()),
                    None => m.remove(k),
                };
            }
        }
        let status_only = opts.subresource.as_deref() == Some("status");
        if kind.has_status {
            if status_only {
                let status = new.get("status").cloned();
                let mut keep = old.clone();
                match status {
                    Some(s) => keep["status"] = s,
                    None => {
                        if let Some(m) = keep.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                keep["metadata"]["managedFields"] = new["metadata"]["managedFields"].clone();
                new = keep;
            } else if let Some(m) = new.as_object_mut() {
                match old.get("status") {
                    Some(s) => m.insert("status".to_owned(), s.clone()),
                    None => m.remove("status"),
                };
            }
        }
        if !status_only {
            self.default_and_validate(kind, &mut new, Some(old))?;
        }
        if has_generation(kind) && old.get("spec") != new.get("spec") {
            let g = old["metadata"]["generation"].as_u64().unwrap_or(1) + 1;
            new["metadata"]["generation"] = json!(g);
        }
        if !apply {
            ssa::record_update(Some(old), &mut new, &opts.manager, opts.subresource.as_deref(), &meta::now_rfc3339());
        }
        let mut a = old.clone();
        let mut b = new.clone();
        obj_mut(&mut a, "metadata").remove("managedFields");
        obj_mut(&mut b, "metadata").remove("managedFields");
        obj_mut(&mut b, "metadata").remove("resourceVersion");
        obj_mut(&mut a, "metadata").remove("resourceVersion");
        if a == b || opts.dry_run {
            if a == b {
                return Ok(old.clone());
            }
            return Ok(new);
        }
        let removes = new.pointer("/metadata/deletionTimestamp").is_some()
            && new.pointer("/metadata/finalizers").and_then(Value::as_array).is_none_or(Vec::is_empty);
        let _ = name;
        if removes {
            return Ok(self.commit(kind, new, "DELETED"));
        }
        Ok(self.commit(kind, new, "MODIFIED"))
    }

    /// `PUT`.
    ///
    /// # Errors
    /// NotFound, Conflict (stale resourceVersion), Invalid.
    pub fn update(&mut self, kind: &'static Kind, ns: &str, name: &str, body: Value, opts: &WriteOpts) -> Result<Value, ApiError> {
        Self::check_identity(kind, ns, Some(name), &body)?;
        let old = self.stored(kind, ns, name)?;
        let want = meta_str(&body, "resourceVersion");
        if !want.is_empty() && want != meta_str(&old, "resourceVersion") {
            return Err(ApiError::stale(kind, name));
        }
        self.finish_update(kind, &old, body, opts, false)
    }

    /// `PATCH`: merge, strategic merge (approximated: associative lists merge
    /// by key), JSON patch, or server-side apply.
    ///
    /// # Errors
    /// NotFound, Conflict, Invalid, BadRequest, 415.
    pub fn patch(&mut self, kind: &'static Kind, ns: &str, name: &str, content_type: &str, body: &[u8], opts: &WriteOpts) -> Result<Value, ApiError> {
        let ct = content_type.split(';').next().unwrap_or_default().trim();
        if ct == "application/apply-patch+yaml" || ct == "application/apply-patch+cbor" {
            let config: Value = serde_norway::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
            return self.apply(kind, ns, name, config, opts);
        }
        let old = self.stored(kind, ns, name)?;
        let patch: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
        let mut new = old.clone();
        match ct {
            "application/merge-patch+json" => json_merge(&mut new, &patch),
            "application/strategic-merge-patch+json" => ssa::merge(&mut new, &patch, ""),
            "application/json-patch+json" => json_patch(&mut new, &patch)?,
            other => {
                return Err(ApiError {
                    code: 415,
                    reason: "UnsupportedMediaType",
                    message: format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other})"),
                    details: None,
                })
            }
        }
        let want = meta_str(&patch, "resourceVersion");
        if !want.is_empty() && want != meta_str(&old, "resourceVersion") {
            return Err(ApiError::stale(kind, name));
        }
        self.finish_update(kind, &old, new, opts, false)
    }

    /// Server-side apply (creates when absent).
    ///
    /// # Errors
    /// Conflict (409 with the field paths), Invalid, BadRequest.
    pub fn apply(&mut self, kind: &'static Kind, ns: &str, name: &str, config: Value, opts: &WriteOpts) -> Result<Value, ApiError> {
        if opts.manager.is_empty() {
            return Err(ApiError::bad_request("PATCH, application/apply-patch+yaml requests must have a fieldManager"));
        }
        Self::check_identity(kind, ns, Some(name), &config)?;
        if config["apiVersion"].as_str().is_none() || config["kind"].as_str().is_none() {
            return Err(ApiError::bad_request("invalid object type: apiVersion and kind must be set"));
        }
        let live = self.get(kind, if kind.namespaced { ns } else { "" }, name).cloned();
        let now = meta::now_rfc3339();
        let mut config = config;
        obj_mut(&mut config, "metadata").insert("name".to_owned(), json!(name));
        let merged = ssa::apply(live.as_ref(), &config, &opts.manager, opts.force, &now).map_err(|conflicts| {
            let causes: Vec<Value> = conflicts
                .iter()
                .map(|c| json!({"reason": "FieldManagerConflict",
                    "message": format!("conflict with \"{}\" using {}", c.manager, c.api_version),
                    "field": ssa::path_string(&c.path)}))
                .collect();
            ApiError {
                code: 409,
                reason: "Conflict",
                message: ssa::conflict_message(&conflicts),
                details: Some(json!({"name": name, "group": kind.group, "kind": kind.plural, "causes": causes})),
            }
        })?;
        match live {
            None => {
                let managed = merged["metadata"]["managedFields"].clone();
                self.create_with(kind, ns, merged, opts, Some(managed))
            }
            Some(old) => self.finish_update(kind, &old, merged, opts, true),
        }
    }

    /// `DELETE`: finalizers, `propagationPolicy` (Foreground keeps the owner
    /// until its dependents are gone; Background and Orphan remove it now).
    ///
    /// # Errors
    /// NotFound.
    pub fn delete(&mut self, kind: &'static Kind, ns: &str, name: &str, policy: Option<&str>, dry_run: bool) -> Result<(u16, Value), ApiError> {
        let mut obj = self.stored(kind, ns, name)?;
        if dry_run {
            return Ok((200, obj));
        }
        let policy = policy.unwrap_or(if kind.kind == "Job" { "Orphan" } else { "Background" });
        let uid = meta_str(&obj, "uid").to_owned();
        if policy == "Orphan" {
            self.orphan_dependents(&uid);
        }
        let mut finalizers: Vec<Value> = obj.pointer("/metadata/finalizers").and_then(Value::as_array).cloned().unwrap_or_default();
        if policy == "Foreground" && self.has_dependents(&uid) && !finalizers.contains(&json!("foregroundDeletion")) {
            finalizers.push(json!("foregroundDeletion"));
        }
        if kind.kind == "Namespace" {
            // Contents go first; the namespace goes when empty (controllers tick).
            obj["status"]["phase"] = json!("Terminating");
            finalizers.push(json!("emulator/namespace-contents"));
        }
        if finalizers.is_empty() {
            let gone = self.commit(kind, obj, "DELETED");
            return Ok((200, gone));
        }
        if obj.pointer("/metadata/deletionTimestamp").is_none() {
            obj["metadata"]["deletionTimestamp"] = json!(meta::now_rfc3339());
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        }
        let shown: Vec<Value> = finalizers.iter().filter(|f| *f != "emulator/namespace-contents").cloned().collect();
        if shown.is_empty() {
            obj_mut(&mut obj, "metadata").remove("finalizers");
        } else {
            obj["metadata"]["finalizers"] = json!(shown);
        }
        if kind.kind == "Namespace" {
            obj["metadata"]["annotations"]["emulator/terminating"] = json!("true");
        }
        let kept = self.commit(kind, obj, "MODIFIED");
        Ok((202, kept))
    }

    /// Objects whose ownerReferences name `uid`.
    pub(super) fn dependents(&self, uid: &str) -> Vec<(&'static Kind, Value)> {
        let mut out = Vec::new();
        for ((g, p, _, _), v) in &self.objects {
            let owned = v.pointer("/metadata/ownerReferences").and_then(Value::as_array)
                .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid));
            if owned {
                if let Some(k) = KINDS.iter().find(|k| k.group == *g && k.plural == *p) {
                    out.push((k, v.clone()));
                }
            }
        }
        out
    }

    fn has_dependents(&self, uid: &str) -> bool {
        !self.dependents(uid).is_empty()
    }

    fn orphan_dependents(&mut self, uid: &str) {
        for (k, mut d) in self.dependents(uid) {
            if let Some(refs) = d.pointer_mut("/metadata/ownerReferences").and_then(Value::as_array_mut) {
                refs.retain(|r| r["uid"] != uid);
                if refs.is_empty() {
                    obj_mut(&mut d, "metadata").remove("ownerReferences");
                }
            }
            self.put(k, d);
        }
    }
}

fn obj_mut_value<'a>(v: &'a mut Value, key: &str) -> &'a mut Value {
    obj_mut(v, key);
    &mut v[key]
}

fn has_generation(kind: &Kind) -> bool {
    matches!(kind.group, "apps" | "batch")
}

/// The kind named `name` (core or not).
#[must_use]
pub fn kind(name: &str) -> &'static Kind {
    KINDS.iter().find(|k| k.kind == name).unwrap_or(&KINDS[0])
}

fn default_pod_spec(spec: &mut Map<String, Value>) {
    spec.entry("restartPolicy").or_insert(json!("Always"));
    spec.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
    spec.entry("schedulerName").or_insert(json!("default-scheduler"));
    spec.entry("terminationGracePeriodSeconds").or_insert(json!(30));
    spec.entry("securityContext").or_insert(json!({}));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                let Some(cm) = c.as_object_mut() else { continue };
                let image = cm.get("image").and_then(Value::as_str).unwrap_or_default().to_owned();
                let tag_latest = image.rsplit('/').next().is_none_or(|last| !last.contains(':') || last.ends_with(":latest"));
                cm.entry("imagePullPolicy").or_insert(json!(if tag_latest { "Always" } else { "IfNotPresent" }));
                cm.entry("terminationMessagePath").or_insert(json!("/dev/termination-log"));
                cm.entry("terminationMessagePolicy").or_insert(json!("File"));
                let res = cm.entry("resources").or_insert(json!({}));
                if let Some(limits) = res.get("limits").cloned().and_then(|l| l.as_object().cloned()) {
                    let req = obj_mut(res, "requests");
                    for (k, v) in limits {
                        req.entry(k).or_insert(v);
                    }
                }
            }
        }
    }
}

fn validate_pod_spec(spec: &Value, at: &str, causes: &mut Vec<(&str, String, String)>) {
    let containers = spec["containers"].as_array().cloned().unwrap_or_default();
    if containers.is_empty() {
        causes.push(("FieldValueRequired", format!("{at}.containers"), "Required value".to_owned()));
    }
    for (i, c) in containers.iter().enumerate() {
        if c["name"].as_str().is_none_or(str::is_empty) {
            causes.push(("FieldValueRequired", format!("{at}.containers[{i}].name"), "Required value".to_owned()));
        }
        if c["image"].as_str().is_none_or(str::is_empty) {
            causes.push(("FieldValueRequired", format!("{at}.containers[{i}].image"), "Required value".to_owned()));
        }
        let limits = &c["resources"]["limits"];
        let requests = &c["resources"]["requests"];
        if let Some(req) = requests.get("nvidia.com/gpu") {
            match limits.get("nvidia.com/gpu") {
                None => causes.push(("FieldValueRequired", format!("{at}.containers[{i}].resources.limits"),
                    "Required value: Limit must be set for non overcommitable resources".to_owned())),
                Some(l) if count(l) != count(req) => causes.push(("FieldValueInvalid", format!("{at}.containers[{i}].resources.requests"),
                    format!("Invalid value: \"{}\": must be equal to nvidia.com/gpu limit of {}", count(req), count(l)))),
                Some(_) => {}
            }
        }
    }
}

fn set_qos(pod: &mut Value) {
    let cs = pod["spec"]["containers"].as_array().cloned().unwrap_or_default();
    let any = cs.iter().any(|c| c["resources"]["limits"].as_object().is_some_and(|m| !m.is_empty())
        || c["resources"]["requests"].as_object().is_some_and(|m| !m.is_empty()));
    let guaranteed = !cs.is_empty() && cs.iter().all(|c| {
        let l = &c["resources"]["limits"];
        l.get("cpu").is_some() && l.get("memory").is_some() && c["resources"]["requests"] == *l
    });
    pod["status"]["qosClass"] = json!(if guaranteed { "Guaranteed" } else if any { "Burstable" } else { "BestEffort" });
}

/// RFC 7386 JSON merge patch.
pub fn json_merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().unwrap_or_else(|| unreachable!());
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    json_merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// RFC 6902 JSON patch (add, replace, remove, test).
fn json_patch(target: &mut Value, ops: &Value) -> Result<(), ApiError> {
    for op in ops.as_array().into_iter().flatten() {
        let path = op["path"].as_str().unwrap_or_default();
        let (parent, last) = path.rsplit_once('/').unwrap_or(("", path));
        let last = last.replace("~1", "/").replace("~0", "~");
        let fail = || ApiError {
            code: 422,
            reason: "Invalid",
            message: format!("the server rejected our request due to an error in our request: jsonpatch {} operation does not apply: doc is missing path: \"{path}\"", op["op"].as_str().unwrap_or_default()),
            details: None,
        };
        match op["op"].as_str().unwrap_or_default() {
            "test" => {
                if target.pointer(path) != Some(&op["value"]) {
                    return Err(ApiError { code: 422, reason: "Invalid", message: format!("the server rejected our request due to an error in our request: testing value {path} failed: test failed"), details: None });
                }
            }
            "remove" => {
                let p = target.pointer_mut(parent).ok_or_else(fail)?;
                match p {
                    Value::Object(m) => { m.remove(&last).ok_or_else(fail)?; }
                    Value::Array(a) => {
                        let i: usize = last.parse().map_err(|_| fail())?;
                        if i >= a.len() { return Err(fail()); }
                        a.remove(i);
                    }
                    _ => return Err(fail()),
                }
            }
            o @ ("add" | "replace") => {
                let v = op["value"].clone();
                let p = target.pointer_mut(parent).ok_or_else(fail)?;
                match p {
                    Value::Object(m) => {
                        if o == "replace" && !m.contains_key(&last) { return Err(fail()); }
                        m.insert(last, v);
                    }
                    Value::Array(a) => {
                        if last == "-" { a.push(v); } else {
                            let i: usize = last.parse().map_err(|_| fail())?;
                            if o == "replace" { *a.get_mut(i).ok_or_else(fail)? = v; }
                            else if i <= a.len() { a.insert(i, v); } else { return Err(fail()); }
                        }
                    }
                    _ => return Err(fail()),
                }
            }
            other => return Err(ApiError::bad_request(format!("unsupported JSON patch operation {other}"))),
        }
    }
    Ok(())
}
