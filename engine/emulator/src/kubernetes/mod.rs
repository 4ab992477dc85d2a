//! An emulator of the Kubernetes API server (plus the controllers, scheduler
//! and kubelet behind it) for the `kubernetes` connector: no kube-apiserver
//! can run here. It is checked by a third party, the real `kubectl`
//! (`engine/emulator/tests/kubectl.rs`).
//!
//! Served: `/version`, discovery (`/api`, `/api/v1`, `/apis`, `/apis/{g}`,
//! `/apis/{g}/{v}`; the aggregated-discovery media types are answered with
//! the legacy documents as `application/json`, which clients accept as the
//! fallback), `/openapi/v3` lists each kind's paths with the query parameters
//! kubectl probes (so it validates server-side; no schemas), `/openapi/v2`
//! answers 404. For Namespace, Node, Pod, Service, ConfigMap,
//! Secret, Event, Deployment, ReplicaSet, DaemonSet, Job and RuntimeClass:
//! get, list (labelSelector, fieldSelector), watch (`?watch=true`, JSON lines
//! from a resourceVersion), create, update, patch (merge, strategic merge
//! approximated, JSON patch, server-side apply with managedFields and
//! conflicts), delete (finalizers, propagationPolicy Foreground, Background,
//! Orphan), deletecollection, the `status` subresources and `pods/log`.
//!
//! Pods run by annotations or env of their first container:
//! `emulator/run-seconds` / `EMULATOR_RUN_SECONDS` (default 2, times
//! [`Config::time_scale`]), `emulator/exit-code` / `EMULATOR_EXIT_CODE`
//! (default 0), `emulator/logs` / `EMULATOR_LOGS` (else the `echo`s of a
//! `sh -c` script, `nvidia-smi -L` lines, or the command line).
//!
//! A request with an `Authorization` header needs `Bearer <Config::token>`;
//! one without is anonymous and allowed (client-go sends no token over plain
//! HTTP).

pub mod controllers;
pub mod meta;
pub mod ssa;
pub mod store;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::http::{parse_query, percent_decode, Req};
use meta::{ApiError, FieldSelector, Kind, LabelSelector};
use store::{kind, State, WriteOpts};

/// A node of the emulated cluster.
#[derive(Debug, Clone, Default)]
pub struct NodeSpec {
    /// Node name.
    pub name: String,
    /// `nvidia.com/gpu` capacity and allocatable (0: the resource is absent).
    pub gpus: u32,
    /// Labels besides the `kubernetes.io/*` ones every node gets.
    pub labels: BTreeMap<String, String>,
    /// Taints: (key, value, effect).
    pub taints: Vec<(String, String, String)>,
}

impl NodeSpec {
    /// `name:gpus` (the CLI's form); GPU nodes get the GPU feature discovery
    /// labels (`nvidia.com/gpu.present`, `.count`, `.product` = H100).
    ///
    /// # Errors
    /// A message when the text is not `name:gpus`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, gpus) = text.split_once(':').unwrap_or((text, "0"));
        let gpus: u32 = gpus.parse().map_err(|_| format!("bad GPU count in {text:?}: expected name:gpus"))?;
        let mut labels = BTreeMap::new();
        if gpus > 0 {
            labels.insert("nvidia.com/gpu.present".to_owned(), "true".to_owned());
            labels.insert("nvidia.com/gpu.count".to_owned(), gpus.to_string());
            labels.insert("nvidia.com/gpu.product".to_owned(), "NVIDIA-H100-80GB-HBM3".to_owned());
        }
        Ok(Self { name: name.to_owned(), gpus, labels, taints: Vec::new() })
    }
}

/// How the emulator behaves.
#[derive(Debug, Clone)]
pub struct Config {
    /// The cluster's nodes.
    pub nodes: Vec<NodeSpec>,
    /// The accepted bearer token.
    pub token: String,
    /// Multiplies pod start (1 s) and run durations; 0 = next tick.
    pub time_scale: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nodes: vec![NodeSpec::parse("gpu-a:4").unwrap_or_default(), NodeSpec::parse("cpu-a:0").unwrap_or_default()],
            token: "emulator-token".to_owned(),
            time_scale: 1.0,
        }
    }
}

struct Shared {
    config: Config,
    state: Mutex<State>,
    rv: watch::Receiver<u64>,
    host: String,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running emulator; dropping it stops it.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("base_url", &self.base_url).finish_non_exhaustive()
    }
}

fn node_object(spec: &NodeSpec, index: usize) -> Value {
    let mut labels = serde_json::Map::new();
    for (k, v) in [("kubernetes.io/hostname", spec.name.as_str()), ("kubernetes.io/os", "linux"), ("kubernetes.io/arch", "amd64"),
        ("beta.kubernetes.io/os", "linux"), ("beta.kubernetes.io/arch", "amd64")] {
        labels.insert(k.to_owned(), json!(v));
    }
    for (k, v) in &spec.labels {
        labels.insert(k.clone(), json!(v));
    }
    let taints: Vec<Value> = spec.taints.iter().map(|(k, v, e)| {
        let mut t = json!({"key": k, "effect": e});
        if !v.is_empty() {
            t["value"] = json!(v);
        }
        t
    }).collect();
    let mut capacity = json!({"cpu": "16", "memory": "131900060Ki", "ephemeral-storage": "507904000Ki", "pods": "110", "hugepages-1Gi": "0", "hugepages-2Mi": "0"});
    if spec.gpus > 0 {
        capacity["nvidia.com/gpu"] = json!(spec.gpus.to_string());
    }
    let mut allocatable = capacity.clone();
    allocatable["memory"] = json!("131797660Ki");
    let ip = format!("10.0.0.{}", index + 10);
    let now = meta::now_rfc3339();
    let mut node = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": spec.name, "labels": labels, "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
        "spec": {"podCIDR": format!("10.244.{index}.0/24"), "podCIDRs": [format!("10.244.{index}.0/24")]},
        "status": {"capacity": capacity, "allocatable": allocatable,
            "conditions": [
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory", "message": "kubelet has sufficient memory available", "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure", "message": "kubelet has no disk pressure", "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID", "message": "kubelet has sufficient PID available", "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": spec.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {"machineID": meta::uuid().replace('-', ""), "systemUUID": meta::uuid(), "bootID": meta::uuid(),
                "kernelVersion": "6.8.0-emulator", "osImage": "Ubuntu 24.04.1 LTS", "containerRuntimeVersion": "containerd://1.7.24",
                "kubeletVersion": "v1.32.0", "kubeProxyVersion": "v1.32.0", "operatingSystem": "linux", "architecture": "amd64"}}});
    if !taints.is_empty() {
        node["spec"]["taints"] = json!(taints);
    }
    node
}

/// Starts the emulator on `addr` (port 0 picks a free one) on the current
/// tokio runtime; the controllers tick every 20 ms.
///
/// # Errors
/// The bind error.
pub async fn start(addr: SocketAddr, config: Config) -> io::Result<Server> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let (tx, rx) = watch::channel(0u64);
    let mut state = State::new(config.time_scale, tx);
    for (i, n) in config.nodes.iter().enumerate() {
        let opts = WriteOpts { manager: "kubelet".to_owned(), ..WriteOpts::default() };
        state
            .create(kind("Node"), "", node_object(n, i), &opts)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.message))?;
    }
    let shared = Arc::new(Shared { config, state: Mutex::new(state), rv: rx, host: local.to_string() });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let task = tokio::spawn(run(listener, Arc::clone(&shared), shutdown_rx));
    Ok(Server { base_url: format!("http://{local}"), shared, shutdown, task: Some(task) })
}

impl Server {
    /// Writes a kubeconfig (cluster `emulator`, token user, current context,
    /// namespace `default`) to `path`.
    ///
    /// # Errors
    /// The write error.
    pub fn kubeconfig(&self, path: &Path) -> io::Result<()> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: emulator\n  cluster:\n    server: {}\ncontexts:\n- name: emulator\n  context:\n    cluster: emulator\n    user: emulator\n    namespace: default\ncurrent-context: emulator\nusers:\n- name: emulator\n  user:\n    token: {}\npreferences: {{}}\n",
            self.base_url, self.shared.config.token
        );
        std::fs::write(path, text)
    }

    /// Sets a node's `nvidia.com/gpu` capacity and allocatable (a device
    /// plugin coming or going); unknown nodes are ignored.
    pub fn set_node_gpus(&self, node: &str, n: u32) {
        let mut st = self.shared.state();
        if let Some(mut obj) = st.get(kind("Node"), "", node).cloned() {
            obj["status"]["capacity"]["nvidia.com/gpu"] = json!(n.to_string());
            obj["status"]["allocatable"]["nvidia.com/gpu"] = json!(n.to_string());
            obj["metadata"]["labels"]["nvidia.com/gpu.count"] = json!(n.to_string());
            st.put(kind("Node"), obj);
        }
    }

    /// Every object by `group/plural` (core: `plural`) and the resourceVersion.
    #[must_use]
    pub fn snapshot(&self) -> Value {
        self.shared.state().snapshot()
    }

    /// Stops serving and waits until the port is closed.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

async fn run(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let _ = started;
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tick.tick() => shared.state().reconcile(Instant::now()),
            accepted = listener.accept() => if let Ok((stream, _)) = accepted {
                let _ = stream.set_nodelay(true);
                let io = TokioIo::new(stream);
                let sh = Arc::clone(&shared);
                let stop = shutdown.clone();
                let service = service_fn(move |req| serve(Arc::clone(&sh), stop.clone(), req));
                connections.spawn(async move {
                    let _ = http1::Builder::new().timer(TokioTimer::new()).serve_connection(io, service).await;
                });
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

/// A response body: whole, or streamed from a channel (watch, log follow).
enum Out {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl Body for Out {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Out::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Out::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }
}

enum Reply {
    Json(u16, Value),
    Text(u16, String),
    Watch(WatchSpec),
}

struct WatchSpec {
    kind: &'static Kind,
    ns: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    initial: Vec<Value>,
    from: u64,
    timeout: Option<Duration>,
}

async fn serve(shared: Arc<Shared>, stop: watch::Receiver<bool>, req: Request<Incoming>) -> Result<Response<Out>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let path = parts.uri.path().to_owned();
    let req = Req {
        method: parts.method.as_str().to_owned(),
        segments: path.split('/').filter(|s| !s.is_empty()).map(percent_decode).collect(),
        path,
        query: parts.uri.query().map(parse_query).unwrap_or_default(),
        headers: parts.headers.iter().filter_map(|(k, v)| Some((k.as_str().to_ascii_lowercase(), v.to_str().ok()?.to_owned()))).collect(),
        body,
    };
    tracing::debug!(method = %req.method, path = %req.path, query = ?req.query, "kubernetes emulator request");
    let reply = match handle(&shared, &req) {
        Ok(r) => r,
        Err(e) => Reply::Json(e.code, e.status()),
    };
    let (status, ctype, body) = match reply {
        Reply::Json(s, v) => (s, "application/json", Out::Full(Some(Bytes::from(v.to_string())))),
        Reply::Text(s, t) => (s, "text/plain", Out::Full(Some(Bytes::from(t)))),
        Reply::Watch(spec) => {
            let (tx, rx) = mpsc::channel(64);
            tokio::spawn(stream_watch(Arc::clone(&shared), spec, tx, stop));
            (200, "application/json", Out::Stream(rx))
        }
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(ctype));
    Ok(resp)
}

fn event_line(kind_of_event: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind_of_event, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

async fn stream_watch(shared: Arc<Shared>, spec: WatchSpec, tx: mpsc::Sender<Bytes>, mut stop: watch::Receiver<bool>) {
    for obj in &spec.initial {
        if tx.send(event_line("ADDED", obj)).await.is_err() {
            return;
        }
    }
    let deadline = spec.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut cursor = spec.from;
    let mut rv = shared.rv.clone();
    loop {
        let batch = shared.state().events_after(cursor);
        let Some(events) = batch else {
            let gone = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {cursor}"), "reason": "Expired", "code": 410});
            let _ = tx.send(event_line("ERROR", &gone)).await;
            return;
        };
        for e in events {
            cursor = e.rv;
            if e.kind != spec.kind {
                continue;
            }
            let ns = meta::meta_str(&e.object, "namespace");
            if spec.ns.as_deref().is_some_and(|want| want != ns) {
                continue;
            }
            if !spec.labels.matches(&e.object["metadata"]["labels"]) || !spec.fields.matches(&e.object) {
                continue;
            }
            if tx.send(event_line(e.kind_of_event, &e.object)).await.is_err() {
                return;
            }
        }
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = rv.changed() => if changed.is_err() { return },
            () = sleep => return,
            _ = stop.changed() => return,
            () = tx.closed() => return,
        }
    }
}

/// A wrong token is refused; no Authorization header is anonymous and
/// allowed, because kubectl (client-go) sends no bearer token to an
/// `http://` server.
fn authorized(shared: &Shared, req: &Req) -> bool {
    match req.header("authorization") {
        None => true,
        Some(h) => h.strip_prefix("Bearer ").is_some_and(|t| t.trim() == shared.config.token),
    }
}

fn handle(shared: &Shared, req: &Req) -> Result<Reply, ApiError> {
    if !authorized(shared, req) {
        return Err(ApiError::unauthorized());
    }
    let segs: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let get = req.method == "GET";
    let found = |v: Option<Value>| v.map(|v| Reply::Json(200, v)).ok_or_else(ApiError::no_route);
    match segs.as_slice() {
        ["version"] if get => Ok(Reply::Json(200, meta::version())),
        ["healthz" | "readyz" | "livez"] if get => Ok(Reply::Text(200, "ok".to_owned())),
        ["api"] if get => Ok(Reply::Json(200, meta::api_versions(&shared.host))),
        ["apis"] if get => Ok(Reply::Json(200, meta::api_group_list())),
        ["api", "v1"] if get => found(meta::resource_list("", "v1")),
        ["apis", g] if get => found(meta::api_group(g)),
        ["apis", g, v] if get => found(meta::resource_list(g, v)),
        ["openapi", "v3"] if get => Ok(Reply::Json(200, meta::openapi_v3_root())),
        ["openapi", "v3", "api", "v1"] if get => found(meta::openapi_v3_doc("", "v1")),
        ["openapi", "v3", "apis", g, v] if get => found(meta::openapi_v3_doc(g, v)),
        ["api", "v1", rest @ ..] => resource(shared, req, "", "v1", rest),
        ["apis", g, v, rest @ ..] => resource(shared, req, g, v, rest),
        _ => Err(ApiError::no_route()),
    }
}

fn resource(shared: &Shared, req: &Req, group: &str, version: &str, rest: &[&str]) -> Result<Reply, ApiError> {
    // namespaces/{ns}/{plural}[/{name}[/{sub}]] or {plural}[/{name}[/{sub}]]
    let (ns, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..] if kind_by(group, version, plural).is_some_and(|k| k.namespaced) => (Some(*ns), {
            let mut v = vec![*plural];
            v.extend_from_slice(tail);
            v
        }),
        other => (None, other.to_vec()),
    };
    let Some((plural, tail)) = rest.split_first() else { return Err(ApiError::no_route()) };
    let kind = kind_by(group, version, plural).ok_or_else(ApiError::no_route)?;
    let ns_str = ns.unwrap_or("");
    if kind.namespaced && ns.is_none() && !tail.is_empty() {
        return Err(ApiError::no_route());
    }
    let dry_run = req.params("dryRun").iter().any(|d| d == "All");
    let manager = req
        .param("fieldManager")
        .map(str::to_owned)
        .unwrap_or_else(|| default_manager(req));
    let opts = |sub: Option<&str>| WriteOpts {
        manager: manager.clone(),
        force: req.param("force") == Some("true"),
        dry_run,
        subresource: sub.map(str::to_owned),
    };
    let m = req.method.as_str();
    match tail {
        [] => match m {
            "GET" => list_or_watch(shared, req, kind, ns),
            "POST" => {
                let body = parse_body(req)?;
                let mut st = shared.state();
                if kind.namespaced && ns.is_none() {
                    return Err(ApiError::method_not_allowed(m));
                }
                let obj = st.create(kind, ns_str, body, &opts(None))?;
                Ok(Reply::Json(201, obj))
            }
            "DELETE" => {
                let labels = LabelSelector::parse(req.param("labelSelector").unwrap_or_default()).map_err(ApiError::bad_request)?;
                let mut st = shared.state();
                let names: Vec<(String, String)> = st
                    .list(kind, ns)
                    .filter(|o| labels.matches(&o["metadata"]["labels"]))
                    .map(|o| (meta::meta_str(o, "namespace").to_owned(), meta::meta_str(o, "name").to_owned()))
                    .collect();
                let policy = policy(req);
                let mut items = Vec::new();
                for (n, name) in names {
                    if let Ok((_, o)) = st.delete(kind, &n, &name, policy.as_deref(), dry_run) {
                        items.push(o);
                    }
                }
                let rv = st.resource_version().to_string();
                Ok(Reply::Json(200, json!({"kind": format!("{}List", kind.kind), "apiVersion": kind.api_version(), "metadata": {"resourceVersion": rv}, "items": items})))
            }
            _ => Err(ApiError::method_not_allowed(m)),
        },
        [name] => {
            let mut st = shared.state();
            match m {
                "GET" => st.get(kind, ns_str, name).cloned().map(|o| Reply::Json(200, o)).ok_or_else(|| ApiError::not_found(kind, name)),
                "PUT" => Ok(Reply::Json(200, st.update(kind, ns_str, name, parse_body(req)?, &opts(None))?)),
                "PATCH" => {
                    let exists = st.get(kind, ns_str, name).is_some();
                    let obj = st.patch(kind, ns_str, name, req.header("content-type").unwrap_or_default(), &req.body, &opts(None))?;
                    Ok(Reply::Json(if exists { 200 } else { 201 }, obj))
                }
                "DELETE" => {
                    let (code, obj) = st.delete(kind, ns_str, name, policy(req).as_deref(), dry_run)?;
                    Ok(Reply::Json(code, obj))
                }
                _ => Err(ApiError::method_not_allowed(m)),
            }
        }
        [name, "status"] if kind.has_status => {
            let mut st = shared.state();
            match m {
                "GET" => st.get(kind, ns_str, name).cloned().map(|o| Reply::Json(200, o)).ok_or_else(|| ApiError::not_found(kind, name)),
                "PUT" => Ok(Reply::Json(200, st.update(kind, ns_str, name, parse_body(req)?, &opts(Some("status")))?)),
                "PATCH" => {
                    let ct = req.header("content-type").unwrap_or_default();
                    if ct.starts_with("application/apply-patch") {
                        return Err(ApiError::bad_request("server-side apply of the status subresource is not emulated"));
                    }
                    Ok(Reply::Json(200, st.patch(kind, ns_str, name, ct, &req.body, &opts(Some("status")))?))
                }
                _ => Err(ApiError::method_not_allowed(m)),
            }
        }
        [name, "log"] if kind.kind == "Pod" && m == "GET" => {
            let st = shared.state();
            let pod = st.get(kind, ns_str, name).cloned().ok_or_else(|| ApiError::not_found(kind, name))?;
            let container = req.param("container");
            let names: Vec<String> = pod["spec"]["containers"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str().map(str::to_owned)).collect();
            if container.is_none() && names.len() > 1 {
                return Err(ApiError::bad_request(format!("a container name must be specified for pod {name}, choose one of: [{}]", names.join(" "))));
            }
            if let Some(c) = container {
                if !names.iter().any(|n| n == c) {
                    return Err(ApiError::bad_request(format!("container {c} is not valid for pod {name}")));
                }
            }
            let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
            if phase == "Pending" {
                let c = container.map_or_else(|| names.first().cloned().unwrap_or_default(), str::to_owned);
                let why = pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"].as_str().unwrap_or("ContainerCreating");
                return Err(ApiError::bad_request(format!("container \"{c}\" in pod \"{name}\" is waiting to start: {why}")));
            }
            let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
            let product = st.get(store::kind("Node"), "", node)
                .and_then(|n| n["metadata"]["labels"]["nvidia.com/gpu.product"].as_str().map(|p| p.replace('-', " ")))
                .unwrap_or_else(|| "NVIDIA GPU".to_owned());
            let mut text = controllers::pod_logs(&pod, container, &product);
            if let Some(n) = req.param("tailLines").and_then(|t| t.parse::<usize>().ok()) {
                let lines: Vec<&str> = text.lines().collect();
                let start = lines.len().saturating_sub(n);
                text = lines[start..].iter().map(|l| format!("{l}\n")).collect();
            }
            if req.param("timestamps") == Some("true") {
                let ts = pod["status"]["startTime"].as_str().unwrap_or_default().replace('Z', ".000000000Z");
                text = text.lines().map(|l| format!("{ts} {l}\n")).collect();
            }
            Ok(Reply::Text(200, text))
        }
        _ => Err(ApiError::no_route()),
    }
}

fn kind_by(group: &str, version: &str, plural: &str) -> Option<&'static Kind> {
    meta::kind_by_plural(group, version, plural)
}

fn default_manager(req: &Req) -> String {
    req.header("user-agent")
        .map(|ua| ua.split('/').next().unwrap_or(ua).to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn policy(req: &Req) -> Option<String> {
    req.param("propagationPolicy").map(str::to_owned).or_else(|| {
        req.json().ok().and_then(|b| {
            b["propagationPolicy"].as_str().map(str::to_owned).or_else(|| match b["orphanDependents"].as_bool() {
                Some(true) => Some("Orphan".to_owned()),
                Some(false) => Some("Background".to_owned()),
                None => None,
            })
        })
    })
}

fn parse_body(req: &Req) -> Result<Value, ApiError> {
    let ct = req.header("content-type").unwrap_or("application/json");
    if ct.contains("yaml") {
        return serde_norway::from_slice(&req.body).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")));
    }
    req.json().map_err(|e| ApiError::bad_request(format!("error decoding JSON body: {e}")))
}

fn list_or_watch(shared: &Shared, req: &Req, kind: &'static Kind, ns: Option<&str>) -> Result<Reply, ApiError> {
    let labels = LabelSelector::parse(req.param("labelSelector").unwrap_or_default()).map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(req.param("fieldSelector").unwrap_or_default(), kind).map_err(ApiError::bad_request)?;
    let st = shared.state();
    let items: Vec<Value> = st
        .list(kind, ns)
        .filter(|o| labels.matches(&o["metadata"]["labels"]) && fields.matches(o))
        .cloned()
        .collect();
    let rv = st.resource_version();
    let watching = matches!(req.param("watch"), Some("true" | "1"));
    if watching {
        let from_param = req.param("resourceVersion").and_then(|r| r.parse::<u64>().ok()).filter(|r| *r > 0);
        let (initial, from) = match from_param {
            Some(r) => (Vec::new(), r),
            None => (items, rv),
        };
        let timeout = req.param("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()).map(Duration::from_secs);
        return Ok(Reply::Watch(WatchSpec { kind, ns: ns.map(str::to_owned), labels, fields, initial, from, timeout }));
    }
    let mut list = json!({"kind": format!("{}List", kind.kind), "apiVersion": kind.api_version(),
        "metadata": {"resourceVersion": rv.to_string()}, "items": items});
    if let Some(limit) = req.param("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0) {
        // One page is everything: no continue token, as when nothing is left.
        let _ = limit;
        list["metadata"]["remainingItemCount"] = Value::Null;
        if let Some(m) = list["metadata"].as_object_mut() {
            m.remove("remainingItemCount");
        }
    }
    Ok(Reply::Json(200, list))
}
