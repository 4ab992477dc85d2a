//! `kubernetes.job`: a (GPU) Job from a few keys, run to completion.
//!
//! The Job (`batch/v1`, `restartPolicy: Never`, `backoffLimit` 0 by default) is built from
//! `image`, `command`, `args`, `env`, `gpus` (→ `resources.limits["nvidia.com/gpu"]`, seed
//! 004), `node_selector`, `tolerations`, `runtime_class`, and server-side applied as a
//! `kubernetes.object` resource (recorded first; undo deletes it). The action then waits for
//! the Job to complete and returns `succeeded`, the container's `exit_code` (from the pod's
//! terminated state) and its `logs`. A failed Job is `transient` (like a failed shell
//! command), unless `allow_failure: true`, which returns the outputs instead.
//!
//! A pod that stays `Pending` with `PodScheduled=False`, reason `Unschedulable` (the
//! scheduler says `0/N nodes are available: N Insufficient nvidia.com/gpu.`) for longer than
//! `schedule_timeout` (default 2m) fails with kind `capacity` and the scheduler's message; the
//! Job is deleted first, so a `fallback:` to another node pool leaves nothing behind.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, LogStream, ResourceRecord, StepContext};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::apply::{apply_recorded, delete_object, undo_object, KIND};
use crate::client::{classify, connect, poll_delay, DurationSpec, Kube};

/// The GPU resource of the NVIDIA device plugin.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// A toleration.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Toleration {
    /// Taint key (`nvidia.com/gpu`).
    #[serde(default)]
    pub key: Option<String>,
    /// `Exists` or `Equal` (default `Equal` with a value, else `Exists`).
    #[serde(default)]
    pub operator: Option<String>,
    /// Taint value.
    #[serde(default)]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule`, `NoExecute`.
    #[serde(default)]
    pub effect: Option<String>,
    /// For `NoExecute`.
    #[serde(default, rename = "tolerationSeconds", alias = "toleration_seconds")]
    pub toleration_seconds: Option<i64>,
}

/// A command: a list of arguments, or one string run with `sh -c`.
#[derive(Debug, Clone, Deserialize, JsonSchema, PartialEq)]
#[serde(untagged)]
pub enum Command {
    /// `["python", "train.py"]`.
    Argv(Vec<String>),
    /// `nvidia-smi && python train.py` (run with `sh -c`).
    Shell(String),
}

/// Input of `kubernetes.job`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobInput {
    /// Container image.
    pub image: String,
    /// Command (entrypoint); a string runs with `sh -c`.
    #[serde(default)]
    pub command: Option<Command>,
    /// Arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// GPUs (`resources.limits["nvidia.com/gpu"]`).
    #[serde(default)]
    pub gpus: u32,
    /// Labels of the pod (and the Job).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations of the pod.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// CPU request/limit (`"4"`, `"500m"`).
    #[serde(default)]
    pub cpu: Option<String>,
    /// Memory request/limit (`"16Gi"`).
    #[serde(default)]
    pub memory: Option<String>,
    /// Node labels the pod must run on (`nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3`).
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations (GPU nodes are often tainted `nvidia.com/gpu:NoSchedule`).
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    /// RuntimeClass (`nvidia`).
    #[serde(default)]
    pub runtime_class: Option<String>,
    /// Namespace (default: the connector's).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Job name (default `engine-STEP-HASH`, stable across retries).
    #[serde(default)]
    pub name: Option<String>,
    /// `backoffLimit` (default 0: one pod).
    #[serde(default)]
    pub backoff_limit: i32,
    /// `ttlSecondsAfterFinished`.
    #[serde(default)]
    pub ttl: Option<i32>,
    /// How long a pod may stay unschedulable before `capacity` (default 2m).
    #[serde(default)]
    pub schedule_timeout: Option<DurationSpec>,
    /// How long to wait for completion (default 1h).
    #[serde(default)]
    pub timeout: Option<DurationSpec>,
    /// Lines of log to return (default all).
    #[serde(default)]
    pub tail: Option<i64>,
    /// Return the outputs of a failed Job instead of failing the step.
    #[serde(default)]
    pub allow_failure: bool,
}

/// Output of `kubernetes.job`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct JobOutput {
    /// Job name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Job uid.
    pub uid: Option<String>,
    /// Whether the Job completed.
    pub succeeded: bool,
    /// Exit code of the container (pod terminated state).
    pub exit_code: Option<i32>,
    /// The container's log.
    pub logs: String,
    /// The pod that ran last.
    pub pod: Option<String>,
    /// Its node.
    pub node: Option<String>,
    /// Seconds from creation to the end.
    pub duration_s: f64,
}

/// `kubernetes.job`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Job;

fn short_hash(s: &str) -> String {
    // FNV-1a, 32 bits: a stable suffix, no crypto needed.
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

/// A DNS-1123 label from anything.
#[must_use]
pub fn dns_label(s: &str, max: usize) -> String {
    let mut out: String = s.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    let mut out: String = out.trim_matches('-').chars().take(max).collect();
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// The default Job name: `engine-STEP-HASH` (hash of the idempotency key), ≤ 52 characters so
/// that pod names stay valid.
#[must_use]
pub fn default_name(cx: &StepContext) -> String {
    format!("engine-{}-{}", dns_label(&cx.step.step, 34), short_hash(&cx.idempotency_key()))
}

/// The Job manifest (pure, for tests).
#[must_use]
pub fn manifest(input: &JobInput, name: &str, ns: &str, key: &str) -> Value {
    let mut c = json!({"name": "main", "image": input.image});
    match &input.command {
        Some(Command::Argv(a)) => c["command"] = json!(a),
        Some(Command::Shell(s)) => c["command"] = json!(["sh", "-c", s]),
        None => {}
    }
    if !input.args.is_empty() {
        c["args"] = json!(input.args);
    }
    if !input.env.is_empty() {
        c["env"] = Value::Array(input.env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect());
    }
    let mut limits = serde_json::Map::new();
    if input.gpus > 0 {
        limits.insert(GPU_RESOURCE.into(), json!(input.gpus.to_string()));
    }
    if let Some(cpu) = &input.cpu {
        limits.insert("cpu".into(), json!(cpu));
    }
    if let Some(m) = &input.memory {
        limits.insert("memory".into(), json!(m));
    }
    if !limits.is_empty() {
        // GPUs are limits only (requests default to them); cpu/memory get equal requests.
        let requests: serde_json::Map<String, Value> = limits.iter().filter(|(k, _)| k.as_str() != GPU_RESOURCE).map(|(k, v)| (k.clone(), v.clone())).collect();
        c["resources"] = json!({"limits": limits});
        if !requests.is_empty() {
            c["resources"]["requests"] = Value::Object(requests);
        }
    }
    let mut pod = json!({"restartPolicy": "Never", "containers": [c]});
    if !input.node_selector.is_empty() {
        pod["nodeSelector"] = json!(input.node_selector);
    }
    if !input.tolerations.is_empty() {
        pod["tolerations"] = Value::Array(
            input
                .tolerations
                .iter()
                .map(|t| {
                    let mut o = serde_json::to_value(t).unwrap_or(Value::Null);
                    if let Some(m) = o.as_object_mut() {
                        m.retain(|_, v| !v.is_null());
                        if !m.contains_key("operator") {
                            m.insert("operator".into(), json!(if t.value.is_some() { "Equal" } else { "Exists" }));
                        }
                    }
                    o
                })
                .collect(),
        );
    }
    if let Some(rc) = &input.runtime_class {
        pod["runtimeClassName"] = json!(rc);
    }
    let mut labels = json!(input.labels);
    labels["app.kubernetes.io/managed-by"] = json!("engine");
    labels["engine/key"] = json!(short_hash(key));
    let mut tmeta = json!({"labels": labels});
    if !input.annotations.is_empty() {
        tmeta["annotations"] = json!(input.annotations);
    }
    let mut spec = json!({"backoffLimit": input.backoff_limit, "template": {"metadata": tmeta, "spec": pod}});
    if let Some(ttl) = input.ttl {
        spec["ttlSecondsAfterFinished"] = json!(ttl);
    }
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": {"engine/key": key}},
        "spec": spec,
    })
}

/// The pods of a Job (label `job-name`, else owner references).
///
/// # Errors
/// Classified API errors.
pub async fn job_pods(k: &Kube, ns: &str, job: &str, uid: Option<&str>) -> Result<Vec<Pod>, ConnectorError> {
    let api: Api<Pod> = Api::namespaced(k.client.clone(), ns);
    let what = format!("listing the pods of job {ns}/{job}");
    let mut pods = api.list(&ListParams::default().labels(&format!("job-name={job}"))).await.map_err(|e| classify(&what, e))?.items;
    if pods.is_empty() {
        pods = api.list(&ListParams::default()).await.map_err(|e| classify(&what, e))?.items;
        pods.retain(|p| {
            p.metadata.owner_references.as_ref().is_some_and(|o| o.iter().any(|r| r.kind == "Job" && (r.name == job || uid.is_some_and(|u| r.uid == u))))
        });
    }
    pods.sort_by(|a, b| a.metadata.creation_timestamp.as_ref().map(|t| t.0).cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0)).then_with(|| a.metadata.name.cmp(&b.metadata.name)));
    Ok(pods)
}

/// The scheduler's message when the pod is Pending and unschedulable.
#[must_use]
pub fn unschedulable(p: &Pod) -> Option<String> {
    let st = p.status.as_ref()?;
    if st.phase.as_deref() != Some("Pending") {
        return None;
    }
    st.conditions.as_ref()?.iter().find(|c| c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable")).map(|c| c.message.clone().unwrap_or_else(|| "unschedulable".into()))
}

/// The exit code of the pod's (first terminated) container.
#[must_use]
pub fn exit_code(p: &Pod) -> Option<i32> {
    let cs = p.status.as_ref()?.container_statuses.as_ref()?;
    cs.iter().find_map(|c| c.state.as_ref()?.terminated.as_ref().map(|t| t.exit_code))
}

/// The log of a pod's container.
///
/// # Errors
/// Classified API errors.
pub async fn pod_logs(k: &Kube, ns: &str, pod: &str, container: Option<&str>, tail: Option<i64>) -> Result<String, ConnectorError> {
    let api: Api<Pod> = Api::namespaced(k.client.clone(), ns);
    let lp = LogParams { container: container.map(str::to_string), tail_lines: tail, ..LogParams::default() };
    api.logs(pod, &lp).await.map_err(|e| classify(&format!("reading the log of pod {ns}/{pod}"), e))
}

fn condition_true(job: &Value, t: &str) -> Option<String> {
    job.pointer("/status/conditions")?.as_array()?.iter().find(|c| c.get("type").and_then(Value::as_str) == Some(t) && c.get("status").and_then(Value::as_str) == Some("True")).map(|c| {
        let r = c.get("reason").and_then(Value::as_str).unwrap_or_default();
        let m = c.get("message").and_then(Value::as_str).unwrap_or_default();
        format!("{r} {m}").trim().to_string()
    })
}

#[async_trait]
impl Action for Job {
    const ID: &'static str = "kubernetes.job";
    const DESCRIPTION: &'static str = "run a (GPU) Job to completion and return its logs and exit code; unschedulable for lack of GPUs is `capacity`";
    const RESOURCE: Option<&'static str> = Some(KIND);
    type Input = JobInput;
    type Output = JobOutput;

    fn validate(&self, input: &JobInput) -> Result<(), ConnectorError> {
        if input.image.trim().is_empty() {
            return Err(ConnectorError::invalid("image is empty"));
        }
        if let Some(n) = &input.name {
            if n.is_empty() || n.len() > 63 || dns_label(n, 63) != *n {
                return Err(ConnectorError::invalid(format!("name {n:?} is not a DNS-1123 label (lowercase letters, digits, '-', at most 63)")));
            }
        }
        if input.backoff_limit < 0 {
            return Err(ConnectorError::invalid("backoff_limit must be 0 or more"));
        }
        for d in [&input.schedule_timeout, &input.timeout].into_iter().flatten() {
            d.get()?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_lines)]
    async fn run(&self, input: JobInput, cx: &StepContext) -> Result<JobOutput, ConnectorError> {
        let k = connect(cx, None).await?;
        let ns = input.namespace.clone().unwrap_or_else(|| k.namespace.clone());
        let name = input.name.clone().unwrap_or_else(|| default_name(cx));
        let sched_limit = input.schedule_timeout.as_ref().map(DurationSpec::get).transpose()?.unwrap_or(Duration::from_secs(120));
        let limit = input.timeout.as_ref().map(DurationSpec::get).transpose()?.unwrap_or(Duration::from_secs(3600));
        let m = manifest(&input, &name, &ns, &cx.idempotency_key());
        cx.progress("create job", Some(5));
        let objs = apply_recorded(&k, cx, &[m], &ns, false).await?;
        let uid = objs.first().and_then(|o| o.uid.clone());
        cx.progress("wait for job", Some(10));
        let start = Instant::now();
        let mut unsched_since: Option<Instant> = None;
        let mut n = 0;
        let (succeeded, pods) = loop {
            let job = crate::apply::get_object(&k, "batch/v1", "Job", Some(&ns), &name).await?.ok_or_else(|| ConnectorError::not_found(format!("job {ns}/{name} disappeared while running")))?;
            let pods = job_pods(&k, &ns, &name, uid.as_deref()).await?;
            let ok = job.pointer("/status/succeeded").and_then(Value::as_i64).unwrap_or(0) > 0 || condition_true(&job, "Complete").is_some();
            let failed = condition_true(&job, "Failed").is_some() || job.pointer("/status/failed").and_then(Value::as_i64).unwrap_or(0) > i64::from(input.backoff_limit);
            if ok || failed {
                break (ok, pods);
            }
            match pods.iter().find_map(unschedulable) {
                Some(msg) => {
                    let since = *unsched_since.get_or_insert_with(Instant::now);
                    cx.progress("pending: unschedulable", Some(10));
                    if since.elapsed() > sched_limit {
                        cx.log(LogStream::Stderr, &format!("job {ns}/{name}: {msg}; deleting it"));
                        delete_object(&k, cx, "batch/v1", "Job", Some(&ns), &name, Some(Duration::from_secs(120))).await?;
                        return Err(ConnectorError::capacity(format!(
                            "job {ns}/{name} could not be scheduled for {}s: {msg} (the job was deleted)",
                            sched_limit.as_secs()
                        )));
                    }
                }
                None => {
                    unsched_since = None;
                    if pods.iter().any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")) {
                        cx.progress("running", Some(50));
                    }
                }
            }
            if start.elapsed() > limit {
                return Err(ConnectorError::timeout(format!("job {ns}/{name} did not finish within {}s (it is left running; undo deletes it)", limit.as_secs())));
            }
            cx.sleep(poll_delay(n)).await?;
            n += 1;
        };
        let last = pods.last();
        let pod = last.and_then(|p| p.metadata.name.clone());
        let node = last.and_then(|p| p.spec.as_ref()?.node_name.clone());
        let code = last.and_then(exit_code);
        let logs = match &pod {
            Some(p) => pod_logs(&k, &ns, p, Some("main"), input.tail).await.unwrap_or_else(|e| format!("(no log: {})", e.message)),
            None => String::new(),
        };
        for line in logs.lines() {
            cx.log(LogStream::Stdout, line);
        }
        cx.progress("done", Some(100));
        let out = JobOutput { name: name.clone(), namespace: ns.clone(), uid, succeeded, exit_code: code, logs, pod, node, duration_s: start.elapsed().as_secs_f64() };
        if !succeeded && !input.allow_failure {
            let tail: Vec<&str> = out.logs.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect();
            return Err(ConnectorError::transient(format!(
                "job {ns}/{name} failed (exit code {}){}",
                code.map_or_else(|| "unknown".into(), |c| c.to_string()),
                if tail.is_empty() { String::new() } else { format!(": {}", tail.join(" | ")) }
            )));
        }
        Ok(out)
    }

    async fn undo(&self, record: &ResourceRecord, cx: &StepContext) -> Result<(), ConnectorError> {
        undo_object(record, cx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(v: Value) -> JobInput {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_manifest_carries_gpus_selector_tolerations_and_runtime_class() {
        let i = input(json!({
            "image": "nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04", "command": "nvidia-smi", "gpus": 2,
            "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            "tolerations": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}],
            "runtime_class": "nvidia", "env": {"A": "1"}, "ttl": 60, "memory": "8Gi",
            "labels": {"team": "ml"}, "annotations": {"note": "x"}
        }));
        let m = manifest(&i, "j", "ns", "run/step");
        let pod = &m["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], "2");
        assert_eq!(c["resources"]["requests"]["memory"], "8Gi");
        assert!(c["resources"]["requests"].get("nvidia.com/gpu").is_none());
        assert_eq!(c["command"], json!(["sh", "-c", "nvidia-smi"]));
        assert_eq!(c["env"], json!([{"name": "A", "value": "1"}]));
        assert_eq!(pod["nodeSelector"]["nvidia.com/gpu.product"], "NVIDIA-H100-80GB-HBM3");
        assert_eq!(pod["tolerations"], json!([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]));
        assert_eq!(pod["runtimeClassName"], "nvidia");
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(m["spec"]["backoffLimit"], 0);
        assert_eq!(m["spec"]["ttlSecondsAfterFinished"], 60);
        assert_eq!(m["metadata"]["namespace"], "ns");
        assert_eq!(m["spec"]["template"]["metadata"]["labels"]["team"], "ml");
        assert_eq!(m["metadata"]["labels"]["app.kubernetes.io/managed-by"], "engine");
        assert_eq!(m["spec"]["template"]["metadata"]["annotations"]["note"], "x");
        let cpu_only = manifest(&input(json!({"image": "busybox", "command": ["echo", "hi"]})), "j", "ns", "k");
        assert!(cpu_only["spec"]["template"]["spec"]["containers"][0].get("resources").is_none());
    }

    #[test]
    fn names_are_dns_labels() {
        assert_eq!(dns_label("Train_Model--GPU.", 63), "train-model-gpu");
        let cx = StepContext::detached("Train Step");
        let n = default_name(&cx);
        assert!(n.starts_with("engine-train-step-") && n.len() <= 52, "{n}");
        assert_eq!(n, default_name(&cx));
        assert!(Job.validate(&input(json!({"image": "x", "name": "Bad_Name"}))).is_err());
        assert!(Job.validate(&input(json!({"image": "x", "schedule_timeout": "soon"}))).is_err());
        assert!(Job.validate(&input(json!({"image": "x", "schedule_timeout": "2s"}))).is_ok());
    }

    #[test]
    fn unschedulable_and_exit_code_from_pod_status() {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."}]}
        }))
        .unwrap();
        assert_eq!(unschedulable(&p).as_deref(), Some("0/2 nodes are available: 2 Insufficient nvidia.com/gpu."));
        let done: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "status": {"phase": "Failed", "containerStatuses": [{"name": "main", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 3, "reason": "Error"}}}]}
        }))
        .unwrap();
        assert_eq!(unschedulable(&done), None);
        assert_eq!(exit_code(&done), Some(3));
    }
}
