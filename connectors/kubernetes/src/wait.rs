//! `kubernetes.wait` (polling) and `kubernetes.logs`.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, StepContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::apply::get_object;
use crate::client::{connect, default_api_version, poll_delay, DurationSpec};
use crate::job::{job_pods, pod_logs};

/// Input of `kubernetes.wait`: one of `condition`, `jsonpath` + `value`, `delete: true`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitInput {
    /// Kind (`Job`, `Pod`, `Deployment`...).
    pub kind: String,
    /// Name.
    pub name: String,
    /// apiVersion (default from the kind).
    #[serde(default)]
    pub api_version: Option<String>,
    /// Namespace (default: the connector's).
    #[serde(default)]
    pub namespace: Option<String>,
    /// A status condition type that must be `True` (`Complete`, `Ready`, `Available`).
    #[serde(default)]
    pub condition: Option<String>,
    /// A JSONPath such as `{.status.phase}` or `.status.conditions[0].type`.
    #[serde(default)]
    pub jsonpath: Option<String>,
    /// The value the JSONPath must have.
    #[serde(default)]
    pub value: Option<String>,
    /// Wait until the object is gone.
    #[serde(default)]
    pub delete: bool,
    /// How long (default 5m).
    #[serde(default)]
    pub timeout: Option<DurationSpec>,
}

/// Output of `kubernetes.wait`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WaitOutput {
    /// What was waited for.
    pub waited_for: String,
    /// The object at the end (null when deleted).
    pub object: Value,
    /// Seconds waited.
    pub elapsed_s: f64,
}

/// `kubernetes.wait`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wait;

/// Evaluates a simple JSONPath (`{.a.b[0].c}`, `.a.b`, `{.metadata.labels.app\.kubernetes\.io/name}`).
#[must_use]
pub fn jsonpath<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let p = path.trim();
    let p = p.strip_prefix('{').and_then(|s| s.strip_suffix('}')).unwrap_or(p);
    let p = p.strip_prefix('$').unwrap_or(p);
    let mut segs: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut chars = p.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '.' => {
                if !cur.is_empty() {
                    segs.push(std::mem::take(&mut cur));
                }
            }
            '[' => {
                if !cur.is_empty() {
                    segs.push(std::mem::take(&mut cur));
                }
                let idx: String = chars.by_ref().take_while(|c| *c != ']').collect();
                segs.push(format!("[{}", idx.trim_matches(|c| c == '\'' || c == '"')));
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        segs.push(cur);
    }
    let mut at = v;
    for s in &segs {
        at = match s.strip_prefix('[') {
            Some(i) => match i.parse::<usize>() {
                Ok(n) => at.get(n)?,
                Err(_) => at.get(i)?,
            },
            None => at.get(s.as_str())?,
        };
    }
    Some(at)
}

/// A value as `kubectl -o jsonpath` prints it.
#[must_use]
pub fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether `obj` has condition `t` with status `True` (case-insensitive type, as kubectl).
#[must_use]
pub fn has_condition(obj: &Value, t: &str) -> bool {
    obj.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|cs| {
        cs.iter().any(|c| c.get("type").and_then(Value::as_str).is_some_and(|x| x.eq_ignore_ascii_case(t)) && c.get("status").and_then(Value::as_str) == Some("True"))
    })
}

#[async_trait]
impl Action for Wait {
    const ID: &'static str = "kubernetes.wait";
    const DESCRIPTION: &'static str = "wait for a condition, a JSONPath value, or deletion of an object";
    type Input = WaitInput;
    type Output = WaitOutput;

    fn validate(&self, input: &WaitInput) -> Result<(), ConnectorError> {
        let n = usize::from(input.condition.is_some()) + usize::from(input.jsonpath.is_some()) + usize::from(input.delete);
        if n != 1 {
            return Err(ConnectorError::invalid("give exactly one of `condition:`, `jsonpath:` (with `value:`) or `delete: true`"));
        }
        if input.jsonpath.is_some() && input.value.is_none() {
            return Err(ConnectorError::invalid("`jsonpath:` needs `value:`"));
        }
        if let Some(t) = &input.timeout {
            t.get()?;
        }
        Ok(())
    }

    async fn run(&self, input: WaitInput, cx: &StepContext) -> Result<WaitOutput, ConnectorError> {
        let k = connect(cx, None).await?;
        let ns = input.namespace.clone().unwrap_or_else(|| k.namespace.clone());
        let av = input.api_version.clone().unwrap_or_else(|| default_api_version(&input.kind).to_string());
        let limit = input.timeout.as_ref().map(DurationSpec::get).transpose()?.unwrap_or(Duration::from_secs(300));
        let what = match (&input.condition, &input.jsonpath) {
            (Some(c), _) => format!("condition={c}"),
            (_, Some(j)) => format!("jsonpath={j}={}", input.value.as_deref().unwrap_or_default()),
            _ => "delete".to_string(),
        };
        let label = format!("{} {ns}/{}", input.kind, input.name);
        cx.progress(&format!("wait for {label} {what}"), Some(0));
        let start = Instant::now();
        let mut n = 0;
        let mut last = String::new();
        loop {
            let obj = get_object(&k, &av, &input.kind, Some(&ns), &input.name).await?;
            let done = match (&obj, &input.condition, &input.jsonpath) {
                (None, _, _) if input.delete => true,
                (None, _, _) => {
                    last = "not found".into();
                    false
                }
                (Some(_), _, _) if input.delete => false,
                (Some(o), Some(c), _) => has_condition(o, c),
                (Some(o), _, Some(j)) => {
                    last = jsonpath(o, j).map(as_text).unwrap_or_default();
                    Some(last.as_str()) == input.value.as_deref()
                }
                _ => false,
            };
            if done {
                cx.progress("done", Some(100));
                return Ok(WaitOutput { waited_for: what, object: obj.unwrap_or(Value::Null), elapsed_s: start.elapsed().as_secs_f64() });
            }
            if start.elapsed() > limit {
                let seen = if last.is_empty() { String::new() } else { format!(" (last seen: {last})") };
                return Err(ConnectorError::timeout(format!("timed out after {}s waiting for {label} {what}{seen}", limit.as_secs())));
            }
            cx.sleep(poll_delay(n)).await?;
            n += 1;
        }
    }
}

/// Input of `kubernetes.logs`: `pod` or `job`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogsInput {
    /// A pod.
    #[serde(default)]
    pub pod: Option<String>,
    /// A Job (all its pods).
    #[serde(default)]
    pub job: Option<String>,
    /// Namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Container (default: the pod's only one).
    #[serde(default)]
    pub container: Option<String>,
    /// Last N lines.
    #[serde(default)]
    pub tail: Option<i64>,
}

/// One pod's log.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PodLog {
    /// Pod.
    pub pod: String,
    /// Its log.
    pub logs: String,
}

/// Output of `kubernetes.logs`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LogsOutput {
    /// All logs, pod after pod.
    pub logs: String,
    /// Per pod.
    pub pods: Vec<PodLog>,
}

/// `kubernetes.logs`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Logs;

#[async_trait]
impl Action for Logs {
    const ID: &'static str = "kubernetes.logs";
    const DESCRIPTION: &'static str = "the log of a pod, or of a Job's pods";
    type Input = LogsInput;
    type Output = LogsOutput;

    fn validate(&self, input: &LogsInput) -> Result<(), ConnectorError> {
        if input.pod.is_some() == input.job.is_some() {
            return Err(ConnectorError::invalid("give `pod:` or `job:`"));
        }
        Ok(())
    }

    async fn run(&self, input: LogsInput, cx: &StepContext) -> Result<LogsOutput, ConnectorError> {
        let k = connect(cx, None).await?;
        let ns = input.namespace.clone().unwrap_or_else(|| k.namespace.clone());
        let names: Vec<String> = match (&input.pod, &input.job) {
            (Some(p), _) => vec![p.clone()],
            (_, Some(j)) => {
                if get_object(&k, "batch/v1", "Job", Some(&ns), j).await?.is_none() {
                    return Err(ConnectorError::not_found(format!("job {ns}/{j} not found")));
                }
                job_pods(&k, &ns, j, None).await?.into_iter().filter_map(|p| p.metadata.name).collect()
            }
            _ => Vec::new(),
        };
        let mut pods = Vec::new();
        for p in names {
            let logs = pod_logs(&k, &ns, &p, input.container.as_deref(), input.tail).await?;
            pods.push(PodLog { pod: p, logs });
        }
        let logs = pods.iter().map(|p| p.logs.as_str()).collect::<Vec<_>>().join("");
        Ok(LogsOutput { logs, pods })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn jsonpath_subset() {
        let o = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}, "metadata": {"labels": {"app.kubernetes.io/name": "x"}}});
        assert_eq!(jsonpath(&o, "{.status.phase}"), Some(&json!("Running")));
        assert_eq!(jsonpath(&o, ".status.conditions[0].type"), Some(&json!("Ready")));
        assert_eq!(jsonpath(&o, r"{.metadata.labels.app\.kubernetes\.io/name}"), Some(&json!("x")));
        assert_eq!(jsonpath(&o, "{.status.nope}"), None);
        assert!(has_condition(&o, "ready"));
        assert!(!has_condition(&o, "Complete"));
    }

    #[test]
    fn wait_needs_exactly_one_target() {
        let i = |v: Value| -> WaitInput { serde_json::from_value(v).unwrap() };
        assert!(Wait.validate(&i(json!({"kind": "Job", "name": "j", "condition": "Complete"}))).is_ok());
        assert!(Wait.validate(&i(json!({"kind": "Job", "name": "j"}))).is_err());
        assert!(Wait.validate(&i(json!({"kind": "Job", "name": "j", "jsonpath": "{.status.phase}"}))).is_err());
        assert!(Wait.validate(&i(json!({"kind": "Job", "name": "j", "delete": true, "condition": "Complete"}))).is_err());
    }
}
