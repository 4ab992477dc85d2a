//! Connecting: settings, kubeconfig resolution, the kube-rs client, discovery, and the
//! classification of API errors into the engine's kinds.
//!
//! ## Settings (`connectors: kubernetes:`)
//! | key | meaning |
//! |---|---|
//! | `kubeconfig` | a kubeconfig file, relative to the workflow's directory |
//! | `context` | the kubeconfig context (default: its `current-context`) |
//! | `namespace` | the default namespace (default: the context's, else `default`) |
//! | `endpoint` | overrides the cluster's server URL (an emulator, a proxy) |
//!
//! Without `kubeconfig`: `KUBECONFIG` (one or more paths, merged as kubectl does), else
//! `~/.kube/config`, else the in-cluster config when running in a pod
//! (`KUBERNETES_SERVICE_HOST` and the service account token).

use std::path::{Path, PathBuf};
use std::time::Duration;

use engine_connector::{ConnectorError, StepContext};
use kube::api::{Api, DynamicObject};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{ApiCapabilities, Scope};
use kube::{Client, Config};
use serde::Deserialize;

/// The field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "engine";

/// The `connectors: kubernetes:` block.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Kubeconfig file, relative to the workflow directory.
    #[serde(default)]
    pub kubeconfig: Option<String>,
    /// Context name.
    #[serde(default)]
    pub context: Option<String>,
    /// Default namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Server URL override.
    #[serde(default)]
    pub endpoint: Option<String>,
}

impl Settings {
    /// The settings of a step (`null` is all defaults).
    ///
    /// # Errors
    /// `invalid` for unknown keys or wrong types.
    pub fn from_value(v: &serde_json::Value) -> Result<Self, ConnectorError> {
        if v.is_null() {
            return Ok(Self::default());
        }
        serde_json::from_value(v.clone()).map_err(|e| ConnectorError::invalid(format!("connectors.kubernetes settings: {e}")))
    }
}

/// Where the client configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// One kubeconfig file (settings, or `~/.kube/config`).
    File(PathBuf),
    /// `KUBECONFIG`: one or more files, merged.
    Env(String),
    /// The pod's service account.
    InCluster,
}

/// Picks the configuration source (pure, for tests): `settings.kubeconfig` (relative to
/// `workflow_dir`), `KUBECONFIG`, `~/.kube/config` if it exists, the in-cluster config when
/// `KUBERNETES_SERVICE_HOST` is set.
///
/// # Errors
/// `invalid` when nothing is found, naming what was tried.
pub fn pick_source(settings: &Settings, workflow_dir: &Path, env_kubeconfig: Option<&str>, home: Option<&Path>, in_cluster: bool) -> Result<Source, ConnectorError> {
    if let Some(k) = settings.kubeconfig.as_deref().filter(|k| !k.is_empty()) {
        let p = Path::new(k);
        let p = if let Some(rest) = k.strip_prefix("~/") { home.map_or_else(|| p.to_path_buf(), |h| h.join(rest)) } else if p.is_absolute() { p.to_path_buf() } else { workflow_dir.join(p) };
        if !p.exists() {
            return Err(ConnectorError::invalid(format!("connectors.kubernetes.kubeconfig: {} does not exist", p.display())));
        }
        return Ok(Source::File(p));
    }
    if let Some(e) = env_kubeconfig.filter(|e| !e.is_empty()) {
        return Ok(Source::Env(e.to_string()));
    }
    if let Some(h) = home {
        let p = h.join(".kube").join("config");
        if p.exists() {
            return Ok(Source::File(p));
        }
    }
    if in_cluster {
        return Ok(Source::InCluster);
    }
    Err(ConnectorError::invalid(
        "no Kubernetes configuration: set connectors.kubernetes.kubeconfig, KUBECONFIG, or ~/.kube/config (or run in a pod)",
    ))
}

/// A connected client.
#[derive(Clone)]
pub struct Kube {
    /// The kube-rs client.
    pub client: Client,
    /// The default namespace.
    pub namespace: String,
    /// The context used, if a kubeconfig was.
    pub context: Option<String>,
}

impl std::fmt::Debug for Kube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kube").field("namespace", &self.namespace).field("context", &self.context).finish_non_exhaustive()
    }
}

fn read_kubeconfig(source: &Source) -> Result<Kubeconfig, ConnectorError> {
    let bad = |e: kube::config::KubeconfigError| ConnectorError::invalid(format!("kubeconfig: {e}"));
    match source {
        Source::File(p) => Kubeconfig::read_from(p).map_err(bad),
        Source::Env(list) => {
            let mut merged: Option<Kubeconfig> = None;
            for p in std::env::split_paths(list).filter(|p| !p.as_os_str().is_empty()) {
                if !p.exists() {
                    continue;
                }
                let k = Kubeconfig::read_from(&p).map_err(bad)?;
                merged = Some(match merged {
                    None => k,
                    Some(m) => m.merge(k).map_err(bad)?,
                });
            }
            merged.ok_or_else(|| ConnectorError::invalid(format!("KUBECONFIG={list}: none of its files exists")))
        }
        Source::InCluster => Err(ConnectorError::invalid("in-cluster configuration has no kubeconfig")),
    }
}

/// Connects with the step's settings; `context` overrides the settings' context (undo uses
/// the context the object was applied with).
///
/// # Errors
/// `invalid` for a missing or bad configuration (unknown context...), `auth` for credentials
/// that cannot be loaded.
pub async fn connect(cx: &StepContext, context: Option<&str>) -> Result<Kube, ConnectorError> {
    let settings = Settings::from_value(&cx.settings)?;
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let source = pick_source(&settings, &cx.workflow_dir, std::env::var("KUBECONFIG").ok().as_deref(), home.as_deref(), std::env::var_os("KUBERNETES_SERVICE_HOST").is_some())?;
    let ctx = context.map(str::to_string).or_else(|| settings.context.clone());
    let mut config = match &source {
        Source::InCluster => Config::incluster().map_err(|e| ConnectorError::invalid(format!("in-cluster configuration: {e}")))?,
        other => {
            let kc = read_kubeconfig(other)?;
            if let Some(c) = &ctx {
                if !kc.contexts.iter().any(|n| &n.name == c) {
                    let known: Vec<&str> = kc.contexts.iter().map(|n| n.name.as_str()).collect();
                    return Err(ConnectorError::invalid(format!("kubeconfig has no context {c:?} (it has: {})", known.join(", "))));
                }
            }
            let opts = KubeConfigOptions { context: ctx.clone(), cluster: None, user: None };
            Config::from_custom_kubeconfig(kc, &opts).await.map_err(|e| match e {
                kube::config::KubeconfigError::LoadClientCertificate(_) | kube::config::KubeconfigError::LoadClientKey(_) => ConnectorError::auth(format!("kubeconfig credentials: {e}")),
                other => ConnectorError::invalid(format!("kubeconfig: {other}")),
            })?
        }
    };
    if let Some(ep) = settings.endpoint.as_deref().filter(|e| !e.is_empty()) {
        config.cluster_url = ep.parse().map_err(|e| ConnectorError::invalid(format!("connectors.kubernetes.endpoint {ep:?}: {e}")))?;
    }
    // The engine's retry policy decides about transient errors (429, 503...), not the client.
    config.default_retry = false;
    config.read_timeout = Some(Duration::from_secs(120));
    let namespace = settings.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| classify("connecting to the cluster", e))?;
    Ok(Kube { client, namespace, context: ctx })
}

/// Classifies a kube-rs error; `what` says what was being done.
#[must_use]
pub fn classify(what: &str, e: kube::Error) -> ConnectorError {
    match e {
        kube::Error::Api(s) => classify_status(what, &s),
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => ConnectorError::transient(format!("{what}: {e}")).with_source(e),
        kube::Error::Auth(_) => ConnectorError::auth(format!("{what}: {e}")).with_source(e),
        kube::Error::Discovery(_) => ConnectorError::invalid(format!("{what}: {e}")).with_source(e),
        other => ConnectorError::invalid(format!("{what}: {other}")).with_source(other),
    }
}

/// Classifies an API `Status` (401/403 `auth`, 404 `not_found`, 409 `conflict`, 400/422
/// `invalid`, 429 `transient` with its `retryAfterSeconds`, 5xx `transient`); the API's
/// message is kept.
#[must_use]
pub fn classify_status(what: &str, s: &kube::core::Status) -> ConnectorError {
    let msg = format!("{what}: {} ({} {})", s.message, s.code, if s.reason.is_empty() { "-" } else { &s.reason });
    match s.code {
        401 | 403 => ConnectorError::auth(msg),
        404 | 410 => ConnectorError::not_found(msg),
        409 => ConnectorError::conflict(msg),
        400 | 422 => ConnectorError::invalid(msg),
        429 => {
            let secs = s.details.as_ref().map_or(0, |d| d.retry_after_seconds);
            ConnectorError::transient(msg).retry_after(Duration::from_secs(u64::from(secs.max(1))))
        }
        500..=599 => ConnectorError::transient(msg),
        _ => ConnectorError::invalid(msg),
    }
}

/// `apiVersion` → (group, version).
#[must_use]
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

/// The default `apiVersion` of the kinds the actions name without one.
#[must_use]
pub fn default_api_version(kind: &str) -> &'static str {
    match kind {
        "Job" | "CronJob" => "batch/v1",
        "Deployment" | "DaemonSet" | "StatefulSet" | "ReplicaSet" => "apps/v1",
        "RuntimeClass" => "node.k8s.io/v1",
        _ => "v1",
    }
}

/// A resolved API resource: what discovery says about `apiVersion`/`kind`.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The API resource.
    pub ar: ApiResource,
    /// Whether it lives in namespaces.
    pub namespaced: bool,
}

/// Maps `apiVersion`/`kind` to its resource through discovery.
///
/// # Errors
/// `invalid` when the cluster serves no such kind; connection errors.
pub async fn resolve(k: &Kube, api_version: &str, kind: &str) -> Result<Resolved, ConnectorError> {
    let (g, v) = split_api_version(api_version);
    let gvk = GroupVersionKind::gvk(g, v, kind);
    match kube::discovery::pinned_kind(&k.client, &gvk).await {
        Ok((ar, caps)) => Ok(Resolved { ar, namespaced: is_namespaced(&caps) }),
        Err(kube::Error::Api(s)) if s.code == 404 => Err(ConnectorError::invalid(format!("the cluster serves no {api_version} (for kind {kind}): {}", s.message))),
        Err(kube::Error::Discovery(e)) => Err(ConnectorError::invalid(format!("the cluster serves no kind {kind} in {api_version}: {e}"))),
        Err(e) => Err(classify(&format!("discovering {api_version} {kind}"), e)),
    }
}

fn is_namespaced(caps: &ApiCapabilities) -> bool {
    matches!(caps.scope, Scope::Namespaced)
}

/// The dynamic API of a resolved resource, in `ns` when namespaced.
#[must_use]
pub fn dyn_api(k: &Kube, r: &Resolved, ns: &str) -> Api<DynamicObject> {
    if r.namespaced {
        Api::namespaced_with(k.client.clone(), ns, &r.ar)
    } else {
        Api::all_with(k.client.clone(), &r.ar)
    }
}

/// The delay before poll number `n`: 100 ms doubling, then every 2 s.
#[must_use]
pub fn poll_delay(n: u32) -> Duration {
    Duration::from_millis((100u64 << n.min(5)).min(2000))
}

/// A duration from seconds or a string (`90`, `"90s"`, `"2m"`, `"1h"`, `"500ms"`).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema, PartialEq)]
#[serde(untagged)]
pub enum DurationSpec {
    /// Seconds.
    Seconds(f64),
    /// `500ms`, `30s`, `2m`, `1h`.
    Text(String),
}

impl DurationSpec {
    /// The duration.
    ///
    /// # Errors
    /// `invalid` for an unreadable duration.
    pub fn get(&self) -> Result<Duration, ConnectorError> {
        match self {
            Self::Seconds(s) if s.is_finite() && *s >= 0.0 => Ok(Duration::from_secs_f64(*s)),
            Self::Seconds(s) => Err(ConnectorError::invalid(format!("duration {s} is not a number of seconds"))),
            Self::Text(t) => parse_duration(t),
        }
    }
}

/// Parses `500ms`, `30s`, `2m`, `1h`, `1m30s`, or bare seconds.
///
/// # Errors
/// `invalid` for anything else.
pub fn parse_duration(t: &str) -> Result<Duration, ConnectorError> {
    let bad = || ConnectorError::invalid(format!("duration {t:?}: use seconds or 500ms / 30s / 2m / 1h"));
    let t = t.trim();
    if let Ok(s) = t.parse::<f64>() {
        return DurationSpec::Seconds(s).get();
    }
    let mut total = 0.0f64;
    let mut num = String::new();
    let mut chars = t.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let n: f64 = num.parse().map_err(|_| bad())?;
        num.clear();
        let unit = match c {
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                0.001
            }
            'h' => 3600.0,
            'm' => 60.0,
            's' => 1.0,
            _ => return Err(bad()),
        };
        total += n * unit;
        any = true;
    }
    if !num.is_empty() || !any {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine_connector::ErrorKind;
    use serde_json::json;

    const KUBECONFIG: &str = "apiVersion: v1\nkind: Config\ncurrent-context: a\nclusters:\n- name: c\n  cluster: {server: 'http://127.0.0.1:1'}\ncontexts:\n- name: a\n  context: {cluster: c, user: u, namespace: team-a}\n- name: b\n  context: {cluster: c, user: u}\nusers:\n- name: u\n  user: {token: secret}\n";

    #[test]
    fn source_order_settings_env_home_incluster() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kc.yaml"), KUBECONFIG).unwrap();
        let with = Settings { kubeconfig: Some("kc.yaml".into()), ..Settings::default() };
        assert_eq!(pick_source(&with, dir.path(), Some("/env/kc"), None, true).unwrap(), Source::File(dir.path().join("kc.yaml")));
        let missing = Settings { kubeconfig: Some("nope.yaml".into()), ..Settings::default() };
        let e = pick_source(&missing, dir.path(), None, None, false).unwrap_err();
        assert!(e.kind == ErrorKind::Invalid && e.message.contains("nope.yaml"), "{e}");
        let none = Settings::default();
        assert_eq!(pick_source(&none, dir.path(), Some("/env/kc"), None, true).unwrap(), Source::Env("/env/kc".into()));
        let home = tempfile::tempdir().unwrap();
        assert_eq!(pick_source(&none, dir.path(), None, Some(home.path()), true).unwrap(), Source::InCluster);
        std::fs::create_dir(home.path().join(".kube")).unwrap();
        std::fs::write(home.path().join(".kube/config"), KUBECONFIG).unwrap();
        assert_eq!(pick_source(&none, dir.path(), None, Some(home.path()), true).unwrap(), Source::File(home.path().join(".kube/config")));
        let e = pick_source(&none, dir.path(), None, None, false).unwrap_err();
        assert!(e.message.contains("KUBECONFIG"), "{e}");
        assert!(Settings::from_value(&json!({"kubeconfig": "x", "bogus": 1})).is_err());
        assert_eq!(Settings::from_value(&serde_json::Value::Null).unwrap(), Settings::default());
    }

    #[tokio::test]
    async fn connect_uses_context_namespace_and_settings() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kc.yaml"), KUBECONFIG).unwrap();
        let mut cx = StepContext::detached("s");
        cx.workflow_dir = dir.path().to_path_buf();
        cx.settings = json!({"kubeconfig": "kc.yaml"});
        let k = connect(&cx, None).await.unwrap();
        assert_eq!(k.namespace, "team-a");
        let k = connect(&cx, Some("b")).await.unwrap();
        assert_eq!((k.namespace.as_str(), k.context.as_deref()), ("default", Some("b")));
        cx.settings = json!({"kubeconfig": "kc.yaml", "context": "b", "namespace": "ml"});
        assert_eq!(connect(&cx, None).await.unwrap().namespace, "ml");
        cx.settings = json!({"kubeconfig": "kc.yaml", "context": "zz"});
        let e = connect(&cx, None).await.unwrap_err();
        assert!(e.kind == ErrorKind::Invalid && e.message.contains("no context \"zz\"") && e.message.contains("a, b"), "{e}");
    }

    fn status(v: serde_json::Value) -> kube::core::Status {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn api_statuses_map_to_kinds_and_keep_the_message() {
        let conflict = status(json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 409, "reason": "Conflict",
            "message": "Apply failed with 1 conflict: conflict with \"kubectl\" using v1: .data.key",
            "details": {"causes": [{"reason": "FieldManagerConflict", "message": "conflict with \"kubectl\" using v1", "field": ".data.key"}]}}));
        let e = classify_status("applying ConfigMap x", &conflict);
        assert_eq!(e.kind, ErrorKind::Conflict);
        assert!(e.message.contains("conflict with \"kubectl\"") && e.message.contains(".data.key"), "{e}");
        let invalid = status(json!({"code": 422, "reason": "Invalid", "message": "Job.batch \"j\" is invalid: spec.template.spec.containers[0].image: Required value", "status": "Failure"}));
        let e = classify_status("applying", &invalid);
        assert!(e.kind == ErrorKind::Invalid && e.message.contains("Required value"), "{e}");
        assert_eq!(classify_status("x", &status(json!({"code": 400, "reason": "BadRequest", "message": "m"}))).kind, ErrorKind::Invalid);
        assert_eq!(classify_status("x", &status(json!({"code": 401, "reason": "Unauthorized", "message": "m"}))).kind, ErrorKind::Auth);
        assert_eq!(classify_status("x", &status(json!({"code": 403, "reason": "Forbidden", "message": "m"}))).kind, ErrorKind::Auth);
        assert_eq!(classify_status("x", &status(json!({"code": 404, "reason": "NotFound", "message": "m"}))).kind, ErrorKind::NotFound);
        assert_eq!(classify_status("x", &status(json!({"code": 503, "reason": "ServiceUnavailable", "message": "m"}))).kind, ErrorKind::Transient);
        let tmr = classify_status("x", &status(json!({"code": 429, "reason": "TooManyRequests", "message": "slow down", "details": {"retryAfterSeconds": 7}})));
        assert_eq!((tmr.kind, tmr.retry_after), (ErrorKind::Transient, Some(Duration::from_secs(7))));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert!(parse_duration("soon").is_err() && parse_duration("5").is_ok() && parse_duration("5x").is_err() && parse_duration("").is_err());
        assert_eq!(DurationSpec::Seconds(1.5).get().unwrap(), Duration::from_millis(1500));
        assert_eq!(split_api_version("apps/v1"), ("apps", "v1"));
        assert_eq!(split_api_version("v1"), ("", "v1"));
        assert_eq!(default_api_version("Job"), "batch/v1");
    }
}
