//! `kubernetes.apply` and `kubernetes.delete`, and the object operations they share with
//! the other actions (server-side apply, foreground delete and the wait until gone).
//!
//! ## `kubernetes.apply`
//! Server-side apply (field manager `engine`, `force: true` to take over fields another
//! manager owns) of one or many manifests: `manifest:` (object or list), `yaml:`
//! (multi-document string), `file:` (relative to the workflow directory). Discovery maps each
//! `apiVersion`/`kind` to its resource. Each object is a resource of kind `kubernetes.object`,
//! recorded (with its undo payload: apiVersion, kind, namespace, name, context) *before* it is
//! applied; applying again (a retry, a resume) is idempotent: the same objects are patched.
//! Undo deletes with `propagationPolicy: Foreground` and waits until the object is gone (the
//! engine undoes a step's resources in reverse order). A conflict with another field manager
//! is `conflict`, naming the manager and the fields.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, ErrorKind, ResourceRecord, ResourceState, StepContext};
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::client::{self, classify, connect, dyn_api, poll_delay, resolve, DurationSpec, Kube, FIELD_MANAGER};
use crate::manifest;

/// The kind of resource each applied object is recorded as.
pub const KIND: &str = "kubernetes.object";
/// How long undo waits for an object to be gone.
pub const UNDO_TIMEOUT: Duration = Duration::from_secs(600);

/// An object as the actions return it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// `apps/v1`.
    pub api_version: String,
    /// `Deployment`.
    pub kind: String,
    /// Namespace (null for cluster-scoped kinds).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// `metadata.uid`.
    #[serde(default)]
    pub uid: Option<String>,
    /// `metadata.resourceVersion`.
    #[serde(default)]
    pub resource_version: Option<String>,
}

/// The undo payload of a `kubernetes.object`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UndoPayload {
    /// apiVersion.
    pub api_version: String,
    /// kind.
    pub kind: String,
    /// Namespace, if namespaced.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// The kubeconfig context it was applied with.
    #[serde(default)]
    pub context: Option<String>,
}

/// Applies one object (server-side apply). The namespace of a namespaced object is
/// `metadata.namespace`, else `default_ns`, and is written into the object.
///
/// # Errors
/// Classified API errors; a conflict names the other manager and its fields.
pub async fn apply_one(k: &Kube, obj: &Value, default_ns: &str, force: bool) -> Result<(ObjectRef, Value), ConnectorError> {
    let (av, kind, name) = (manifest::api_version_of(obj).to_string(), manifest::kind_of(obj).to_string(), manifest::name_of(obj).to_string());
    let r = resolve(k, &av, &kind).await?;
    let mut body = obj.clone();
    let ns = if r.namespaced {
        let ns = manifest::namespace_of(obj).unwrap_or(default_ns).to_string();
        body["metadata"]["namespace"] = json!(ns);
        Some(ns)
    } else {
        if let Some(m) = body.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("namespace");
        }
        None
    };
    let api = dyn_api(k, &r, ns.as_deref().unwrap_or(default_ns));
    let mut pp = PatchParams::apply(FIELD_MANAGER);
    if force {
        pp = pp.force();
    }
    let what = format!("applying {kind} {}{name}", ns.as_deref().map(|n| format!("{n}/")).unwrap_or_default());
    let out: DynamicObject = api.patch(&name, &pp, &Patch::Apply(&body)).await.map_err(|e| {
        let mut ce = classify(&what, e);
        if ce.kind == ErrorKind::Conflict {
            ce.message.push_str(" (another field manager owns these fields; set `force: true` to take them over)");
        }
        ce
    })?;
    let r = ObjectRef { api_version: av, kind, namespace: ns, name, uid: out.metadata.uid.clone(), resource_version: out.metadata.resource_version.clone() };
    let v = serde_json::to_value(&out).unwrap_or(Value::Null);
    Ok((r, v))
}

/// Gets an object; `None` when it does not exist.
///
/// # Errors
/// Classified API errors other than not-found.
pub async fn get_object(k: &Kube, api_version: &str, kind: &str, ns: Option<&str>, name: &str) -> Result<Option<Value>, ConnectorError> {
    let r = resolve(k, api_version, kind).await?;
    let api = dyn_api(k, &r, ns.unwrap_or(&k.namespace));
    match api.get_opt(name).await {
        Ok(o) => Ok(o.map(|o| serde_json::to_value(o).unwrap_or(Value::Null))),
        Err(e) => Err(classify(&format!("reading {kind} {name}"), e)),
    }
}

/// Deletes an object with `propagationPolicy: Foreground` and, with `wait`, waits until it is
/// gone. Returns whether it existed.
///
/// # Errors
/// `timeout`, `cancelled`, classified API errors.
pub async fn delete_object(k: &Kube, cx: &StepContext, api_version: &str, kind: &str, ns: Option<&str>, name: &str, wait: Option<Duration>) -> Result<bool, ConnectorError> {
    let r = resolve(k, api_version, kind).await?;
    let ns = if r.namespaced { Some(ns.unwrap_or(&k.namespace)) } else { None };
    let api = dyn_api(k, &r, ns.unwrap_or(&k.namespace));
    let label = format!("{kind} {}{name}", ns.map(|n| format!("{n}/")).unwrap_or_default());
    let existed = match api.delete(name, &DeleteParams::foreground()).await {
        Ok(_) => true,
        Err(kube::Error::Api(s)) if s.code == 404 => false,
        Err(e) => return Err(classify(&format!("deleting {label}"), e)),
    };
    if let (true, Some(limit)) = (existed, wait) {
        let start = Instant::now();
        let mut n = 0;
        loop {
            match api.get_opt(name).await {
                Ok(None) => break,
                Ok(Some(_)) => {}
                Err(e) => return Err(classify(&format!("waiting for {label} to be deleted"), e)),
            }
            if start.elapsed() > limit {
                return Err(ConnectorError::timeout(format!("{label} still exists {}s after its deletion", limit.as_secs())));
            }
            cx.sleep(poll_delay(n)).await?;
            n += 1;
        }
    }
    Ok(existed)
}

/// Input of `kubernetes.apply`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyInput {
    /// An object, or a list of objects.
    #[serde(default)]
    pub manifest: Option<Value>,
    /// One or more YAML documents (`---` separated).
    #[serde(default)]
    pub yaml: Option<String>,
    /// A YAML (or `.json`) file, relative to the workflow directory.
    #[serde(default)]
    pub file: Option<String>,
    /// Namespace of namespaced objects that name none (default: the connector's).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Take over fields owned by another field manager.
    #[serde(default)]
    pub force: bool,
}

/// Output of `kubernetes.apply`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ApplyOutput {
    /// The applied objects, in order.
    pub objects: Vec<ObjectRef>,
    /// How many.
    pub count: usize,
}

/// `kubernetes.apply`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Apply;

/// The resource key of an object applied by a step.
#[must_use]
pub fn object_key(cx: &StepContext, p: &UndoPayload) -> String {
    format!("{}/{}/{}/{}/{}", cx.idempotency_key(), p.api_version, p.kind, p.namespace.as_deref().unwrap_or("-"), p.name)
}

/// Applies objects, each recorded before it is applied.
///
/// # Errors
/// As [`apply_one`].
pub async fn apply_recorded(k: &Kube, cx: &StepContext, objs: &[Value], default_ns: &str, force: bool) -> Result<Vec<ObjectRef>, ConnectorError> {
    let mut out = Vec::new();
    let total = objs.len();
    for (i, obj) in objs.iter().enumerate() {
        let r = resolve(k, manifest::api_version_of(obj), manifest::kind_of(obj)).await?;
        let ns = r.namespaced.then(|| manifest::namespace_of(obj).unwrap_or(default_ns).to_string());
        let payload = UndoPayload { api_version: manifest::api_version_of(obj).into(), kind: manifest::kind_of(obj).into(), namespace: ns, name: manifest::name_of(obj).into(), context: k.context.clone() };
        let rec = ResourceRecord { kind: KIND.into(), key: object_key(cx, &payload), id: None, state: ResourceState::Intended, undo: json!(payload), step: cx.step.clone() };
        cx.record(&rec).await?;
        #[allow(clippy::cast_possible_truncation)]
        cx.progress(&format!("apply {} {}", payload.kind, payload.name), Some(((i * 100) / total.max(1)) as u8));
        let (obj_ref, _) = apply_one(k, obj, default_ns, force).await?;
        let id = obj_ref.uid.clone().unwrap_or_else(|| payload.name.clone());
        cx.confirm(rec, id, json!(payload)).await?;
        out.push(obj_ref);
    }
    Ok(out)
}

/// Undo of a `kubernetes.object`: delete (foreground), wait until gone; gone is done.
///
/// # Errors
/// Classified API errors, `timeout`.
pub async fn undo_object(record: &ResourceRecord, cx: &StepContext) -> Result<(), ConnectorError> {
    let p: UndoPayload = serde_json::from_value(record.undo.clone()).map_err(|e| ConnectorError::invalid(format!("undo payload of {} {}: {e}", record.kind, record.key)))?;
    if p.name.is_empty() {
        return Ok(());
    }
    let k = connect(cx, p.context.as_deref()).await?;
    delete_object(&k, cx, &p.api_version, &p.kind, p.namespace.as_deref(), &p.name, Some(UNDO_TIMEOUT)).await?;
    Ok(())
}

#[async_trait]
impl Action for Apply {
    const ID: &'static str = "kubernetes.apply";
    const DESCRIPTION: &'static str = "server-side apply of manifests (inline, YAML documents, file); each object a resource";
    const RESOURCE: Option<&'static str> = Some(KIND);
    type Input = ApplyInput;
    type Output = ApplyOutput;

    fn validate(&self, input: &ApplyInput) -> Result<(), ConnectorError> {
        if input.manifest.is_none() && input.yaml.is_none() && input.file.is_none() {
            return Err(ConnectorError::invalid("give `manifest:`, `yaml:` or `file:`"));
        }
        if input.file.is_none() {
            manifest::collect(input.manifest.as_ref(), input.yaml.as_deref(), None, std::path::Path::new("."))?;
        }
        Ok(())
    }

    async fn run(&self, input: ApplyInput, cx: &StepContext) -> Result<ApplyOutput, ConnectorError> {
        let objs = manifest::collect(input.manifest.as_ref(), input.yaml.as_deref(), input.file.as_deref(), &cx.workflow_dir)?;
        let k = connect(cx, None).await?;
        let ns = input.namespace.clone().unwrap_or_else(|| k.namespace.clone());
        let objects = apply_recorded(&k, cx, &objs, &ns, input.force).await?;
        cx.progress("applied", Some(100));
        Ok(ApplyOutput { count: objects.len(), objects })
    }

    async fn undo(&self, record: &ResourceRecord, cx: &StepContext) -> Result<(), ConnectorError> {
        undo_object(record, cx).await
    }
}

/// Input of `kubernetes.delete`: manifests, or `kind`/`name` (+ `api_version`, `namespace`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteInput {
    /// Objects to delete, as for `apply`.
    #[serde(default)]
    pub manifest: Option<Value>,
    /// YAML documents.
    #[serde(default)]
    pub yaml: Option<String>,
    /// A manifest file.
    #[serde(default)]
    pub file: Option<String>,
    /// Kind (`Job`).
    #[serde(default)]
    pub kind: Option<String>,
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// apiVersion (default from the kind: `batch/v1` for Job, `apps/v1` for Deployment...).
    #[serde(default)]
    pub api_version: Option<String>,
    /// Namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Wait until gone (default true).
    #[serde(default = "yes")]
    pub wait: bool,
    /// How long to wait (default 5m).
    #[serde(default)]
    pub timeout: Option<DurationSpec>,
}

fn yes() -> bool {
    true
}

/// Output of `kubernetes.delete`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DeleteOutput {
    /// The objects asked for.
    pub objects: Vec<ObjectRef>,
    /// How many existed (the others were already gone).
    pub deleted: usize,
}

/// `kubernetes.delete`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Delete;

#[async_trait]
impl Action for Delete {
    const ID: &'static str = "kubernetes.delete";
    const DESCRIPTION: &'static str = "delete objects (foreground) by manifest or kind/name, and wait until they are gone";
    type Input = DeleteInput;
    type Output = DeleteOutput;

    fn validate(&self, input: &DeleteInput) -> Result<(), ConnectorError> {
        let by_manifest = input.manifest.is_some() || input.yaml.is_some() || input.file.is_some();
        if by_manifest == (input.kind.is_some() || input.name.is_some()) {
            return Err(ConnectorError::invalid("give either manifests (`manifest:`, `yaml:`, `file:`) or `kind:` and `name:`"));
        }
        if !by_manifest && (input.kind.is_none() || input.name.is_none()) {
            return Err(ConnectorError::invalid("`kind:` and `name:` go together"));
        }
        if let Some(t) = &input.timeout {
            t.get()?;
        }
        Ok(())
    }

    async fn run(&self, input: DeleteInput, cx: &StepContext) -> Result<DeleteOutput, ConnectorError> {
        let k = connect(cx, None).await?;
        let ns = input.namespace.clone().unwrap_or_else(|| k.namespace.clone());
        let targets: Vec<(String, String, Option<String>, String)> = if let (Some(kind), Some(name)) = (&input.kind, &input.name) {
            let av = input.api_version.clone().unwrap_or_else(|| client::default_api_version(kind).to_string());
            vec![(av, kind.clone(), Some(ns.clone()), name.clone())]
        } else {
            let objs = manifest::collect(input.manifest.as_ref(), input.yaml.as_deref(), input.file.as_deref(), &cx.workflow_dir)?;
            objs.iter().map(|o| (manifest::api_version_of(o).into(), manifest::kind_of(o).into(), Some(manifest::namespace_of(o).unwrap_or(&ns).to_string()), manifest::name_of(o).into())).collect()
        };
        let limit = input.timeout.as_ref().map(DurationSpec::get).transpose()?.unwrap_or(Duration::from_secs(300));
        let mut objects = Vec::new();
        let mut deleted = 0;
        // Reverse order: what was applied last goes first.
        for (av, kind, ns, name) in targets.into_iter().rev() {
            let r = resolve(&k, &av, &kind).await?;
            let ns = if r.namespaced { ns } else { None };
            if delete_object(&k, cx, &av, &kind, ns.as_deref(), &name, input.wait.then_some(limit)).await? {
                deleted += 1;
            }
            objects.push(ObjectRef { api_version: av, kind, namespace: ns, name, uid: None, resource_version: None });
        }
        Ok(DeleteOutput { objects, deleted })
    }
}
