//! The connector against the project's Kubernetes API emulator (`engine_emulator::kubernetes`),
//! reached through a kubeconfig it writes, exactly as a user's cluster would be.

use std::collections::BTreeMap;

use connector_kubernetes::{Apply, Delete, DevicePlugin, GpuNodes, Job, Logs, Wait, DEVICE_PLUGIN_VERSION, OBJECT_KIND};
use engine_connector::harness::Harness;
use engine_connector::ErrorKind;
use engine_emulator::kubernetes::{self as kemu, Config, NodeSpec, Server};
use serde_json::json;

struct Env {
    server: Server,
    _dir: tempfile::TempDir,
    kubeconfig: std::path::PathBuf,
}

fn node(name: &str, gpus: u32, product: Option<&str>) -> NodeSpec {
    let mut labels = BTreeMap::new();
    if let Some(p) = product {
        labels.insert("nvidia.com/gpu.product".to_string(), p.to_string());
        labels.insert("nvidia.com/gpu.count".to_string(), gpus.to_string());
        labels.insert("nvidia.com/gpu.memory".to_string(), "81559".to_string());
    }
    labels.insert("pool".to_string(), name.to_string());
    NodeSpec { name: name.into(), gpus, labels, taints: Vec::new() }
}

async fn start(nodes: Vec<NodeSpec>) -> Env {
    let server = kemu::start("127.0.0.1:0".parse().unwrap(), Config { nodes, token: "t0ken".into(), time_scale: 0.05 }).await.expect("emulator starts");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.kubeconfig(&kubeconfig).expect("kubeconfig written");
    Env { server, _dir: dir, kubeconfig }
}

impl Env {
    /// The emulator's objects without Events (which, as in Kubernetes, outlive what they are about).
    fn live(&self) -> String {
        let mut snap = self.server.snapshot();
        if let Some(o) = snap.get_mut("objects").and_then(serde_json::Value::as_object_mut) {
            o.retain(|k, _| !k.ends_with("events"));
        }
        snap.to_string()
    }

    fn harness(&self, step: &str) -> Harness {
        let mut h = Harness::new(step);
        h.settings = json!({"kubeconfig": self.kubeconfig.to_string_lossy(), "namespace": "default"});
        h
    }
}

const STACK: &str = r"
apiVersion: v1
kind: Namespace
metadata:
  name: kt-stack
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: kt-config
  namespace: kt-stack
data:
  model: llama
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: kt-web
  namespace: kt-stack
spec:
  replicas: 1
  selector:
    matchLabels: {app: kt-web}
  template:
    metadata:
      labels: {app: kt-web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_multi_document_then_undo_in_reverse_leaves_nothing() {
    let env = start(vec![node("gpu-a", 2, Some("NVIDIA-H100-80GB-HBM3"))]).await;
    let h = env.harness("stack");
    let out = h.run(&Apply, json!({"yaml": STACK})).await.expect("apply");
    let kinds: Vec<&str> = out.objects.iter().map(|o| o.kind.as_str()).collect();
    assert_eq!(kinds, ["Namespace", "ConfigMap", "Deployment"]);
    assert_eq!(out.objects[0].namespace, None, "a Namespace is cluster-scoped");
    assert_eq!(out.objects[1].namespace.as_deref(), Some("kt-stack"));
    assert!(out.objects.iter().all(|o| o.uid.as_deref().is_some_and(|u| !u.is_empty()) && o.resource_version.is_some()));
    h.assert_intent_before_create();
    let created = h.created();
    assert_eq!(created.len(), 3);
    assert!(created.iter().all(|r| r.kind == OBJECT_KIND));
    assert_eq!(created[2].undo["kind"], "Deployment");
    assert_eq!(created[2].undo["namespace"], "kt-stack");

    // Applying again (a retry, a resume) patches the same objects.
    let again = h.run(&Apply, json!({"yaml": STACK})).await.expect("re-apply");
    let uids = |o: &connector_kubernetes::ApplyOutput| o.objects.iter().map(|x| x.uid.clone()).collect::<Vec<_>>();
    assert_eq!(uids(&again), uids(&out));
    assert_eq!(h.created().len(), 3, "no new resource for the same objects");
    assert!(env.live().contains("kt-config"));

    // Undo as the engine does: reverse order, each waits until gone.
    for r in h.created().iter().rev() {
        h.undo(&Apply, r).await.expect("undo");
    }
    let snap = env.live();
    for name in ["kt-stack", "kt-config", "kt-web"] {
        assert!(!snap.contains(name), "{name} is still in the emulator after undo: {snap}");
    }
    h.assert_undo_idempotent(&Apply).await;
    env.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_owned_by_another_manager_is_a_conflict_until_forced() {
    use kube::api::{Api, DynamicObject, Patch, PatchParams};
    let env = start(vec![node("cpu-a", 0, None)]).await;
    // Another manager (kubectl) owns .data.key.
    let kc = kube::config::Kubeconfig::read_from(&env.kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await.unwrap();
    let client = kube::Client::try_from(cfg).unwrap();
    let ar = kube::core::ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client, "default", &ar);
    let theirs = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared"}, "data": {"key": "theirs"}});
    api.patch("shared", &PatchParams::apply("kubectl"), &Patch::Apply(&theirs)).await.expect("kubectl applies");

    let h = env.harness("cfg");
    let ours = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared"}, "data": {"key": "ours"}});
    let e = h.run(&Apply, json!({"manifest": ours})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
    assert!(e.message.contains("kubectl") && e.message.contains("data"), "names the manager and the field: {e}");
    // The intent was recorded before the apply was sent.
    assert!(!h.recorded().records.is_empty());

    let ok = h.run(&Apply, json!({"manifest": ours, "force": true})).await.expect("forced");
    assert_eq!(ok.count, 1);
    let got = api.get("shared").await.unwrap();
    assert_eq!(got.data["data"]["key"], "ours");
    env.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_job_runs_to_completion_with_logs_and_exit_code() {
    let env = start(vec![node("gpu-a", 2, Some("NVIDIA-H100-80GB-HBM3"))]).await;
    let h = env.harness("train");
    let out = h
        .run(
            &Job,
            json!({"image": "nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04", "command": ["nvidia-smi"], "gpus": 1,
                   "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                   "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                   "annotations": {"emulator/logs": "GPU 0: NVIDIA H100 80GB HBM3\ndone"}}),
        )
        .await
        .expect("job");
    assert!(out.succeeded);
    assert_eq!(out.exit_code, Some(0));
    assert!(out.logs.contains("NVIDIA H100 80GB HBM3"), "{}", out.logs);
    assert_eq!(out.node.as_deref(), Some("gpu-a"));
    h.assert_intent_before_create();
    assert_eq!(h.created().len(), 1);
    assert!(h.recorded().logs.iter().any(|(_, l)| l.contains("H100")));

    // The job's logs again, and a wait on its Complete condition.
    let logs = h.run(&Logs, json!({"job": out.name})).await.expect("logs");
    assert!(logs.logs.contains("done") && logs.pods.len() == 1, "{logs:?}");
    h.run(&Wait, json!({"kind": "Job", "name": out.name, "condition": "Complete", "timeout": "10s"})).await.expect("complete");

    // Undo deletes the job; again is fine.
    h.assert_undo_idempotent(&Job).await;
    assert!(!env.live().contains(&out.name), "job and pod gone");
    env.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_reports_its_exit_code() {
    let env = start(vec![node("cpu-a", 0, None)]).await;
    let h = env.harness("fail");
    let input = json!({"image": "busybox", "command": "exit 3", "env": {"EMULATOR_EXIT_CODE": "3"}, "name": "kt-fail", "allow_failure": true});
    let out = h.run(&Job, input).await.expect("outputs of a failed job");
    assert!(!out.succeeded);
    assert_eq!(out.exit_code, Some(3));

    let h2 = env.harness("fail2");
    let e = h2.run(&Job, json!({"image": "busybox", "env": {"EMULATOR_EXIT_CODE": "7"}, "name": "kt-fail-2"})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(e.message.contains("exit code 7"), "{e}");
    env.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_short_of_gpus_is_capacity_and_is_deleted() {
    let env = start(vec![node("gpu-a", 1, Some("NVIDIA-L4")), node("gpu-b", 1, Some("NVIDIA-L4"))]).await;
    let h = env.harness("big");
    let started = std::time::Instant::now();
    let e = h.run(&Job, json!({"image": "x", "gpus": 4, "name": "kt-big", "schedule_timeout": "1s", "timeout": "60s"})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Capacity, "{e}");
    assert!(e.message.contains("Insufficient nvidia.com/gpu"), "the scheduler's message: {e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    let live = env.live();
    assert!(!live.contains("kt-big"), "the job and its pod are gone: {live}");
    // Undo of the record is still fine (gone is done).
    h.assert_undo_idempotent(&Job).await;

    // The fallback: a node pool that has the GPUs.
    env.server.set_node_gpus("gpu-b", 4);
    let out = h.run(&Job, json!({"image": "x", "gpus": 4, "name": "kt-big", "node_selector": {"pool": "gpu-b"}, "schedule_timeout": "5s"})).await.expect("fits on gpu-b");
    assert_eq!(out.node.as_deref(), Some("gpu-b"));
    env.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_nodes_count_free_gpus() {
    let mut tainted = node("gpu-a", 8, Some("NVIDIA-H100-80GB-HBM3"));
    tainted.taints.push(("nvidia.com/gpu".into(), "present".into(), "NoSchedule".into()));
    let env = start(vec![tainted, node("cpu-a", 0, None)]).await;
    let h = env.harness("nodes");
    let out = h.run(&GpuNodes, json!({})).await.expect("gpu_nodes");
    assert_eq!(out.nodes.len(), 1, "CPU nodes left out: {:?}", out.nodes);
    let n = &out.nodes[0];
    assert_eq!((n.name.as_str(), n.allocatable, n.free, n.ready), ("gpu-a", 8, 8, true));
    assert_eq!(n.product.as_deref(), Some("NVIDIA-H100-80GB-HBM3"));
    assert_eq!(n.count.as_deref(), Some("8"));
    assert_eq!(n.taints[0].key, "nvidia.com/gpu");
    // A pod bound to the node holding 3 GPUs.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "holder"}, "spec": {"nodeName": "gpu-a",
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
        "containers": [{"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "3"}}}]}});
    h.run(&Apply, json!({"manifest": pod})).await.expect("pod");
    let out = h.run(&GpuNodes, json!({"all": true})).await.expect("gpu_nodes");
    assert_eq!(out.nodes.len(), 2);
    let a = out.nodes.iter().find(|n| n.name == "gpu-a").unwrap();
    assert_eq!((a.used, a.free), (3, 5));
    assert_eq!(out.free_gpus, 5);
    env.server.set_node_gpus("gpu-a", 4);
    let out = h.run(&GpuNodes, json!({"min_free": 2})).await.expect("gpu_nodes");
    assert!(out.nodes.is_empty(), "4 - 3 = 1 free < 2: filtered out: {:?}", out.nodes);
    env.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_jsonpath_and_deletion_and_delete_by_kind() {
    let env = start(vec![node("cpu-a", 0, None)]).await;
    let h = env.harness("w");
    h.run(&Apply, json!({"manifest": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kt-w"}, "data": {"phase": "ready"}}})).await.unwrap();
    let out = h.run(&Wait, json!({"kind": "ConfigMap", "name": "kt-w", "jsonpath": "{.data.phase}", "value": "ready", "timeout": 5})).await.expect("jsonpath");
    assert_eq!(out.object["data"]["phase"], "ready");
    let e = h.run(&Wait, json!({"kind": "ConfigMap", "name": "kt-w", "jsonpath": "{.data.phase}", "value": "never", "timeout": "500ms"})).await.unwrap_err();
    assert!(e.kind == ErrorKind::Timeout && e.message.contains("last seen: ready"), "{e}");
    let d = h.run(&Delete, json!({"kind": "ConfigMap", "name": "kt-w"})).await.expect("delete");
    assert_eq!(d.deleted, 1);
    h.run(&Wait, json!({"kind": "ConfigMap", "name": "kt-w", "delete": true, "timeout": 5})).await.expect("gone");
    let d = h.run(&Delete, json!({"kind": "ConfigMap", "name": "kt-w"})).await.expect("delete again");
    assert_eq!(d.deleted, 0, "already gone is fine");
    let e = h.run(&Apply, json!({"manifest": {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid, "{e}");
    env.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_plugin_is_detected_and_installed() {
    let env = start(vec![node("gpu-a", 1, Some("NVIDIA-L4"))]).await;
    let h = env.harness("dp");
    let out = h.run(&DevicePlugin, json!({})).await.expect("detect");
    assert!(!out.present && !out.installed);
    let out = h.run(&DevicePlugin, json!({"install": true, "wait": false})).await.expect("install");
    assert!(out.present && out.installed, "{out:?}");
    assert_eq!(out.version.as_deref(), Some(DEVICE_PLUGIN_VERSION));
    assert_eq!(out.namespace, "kube-system");
    assert_eq!(h.created().len(), 1);
    let again = h.run(&DevicePlugin, json!({"install": true, "wait": false})).await.expect("already there");
    assert!(again.present && !again.installed);
    for r in h.created().iter().rev() {
        h.undo(&DevicePlugin, r).await.expect("undo");
    }
    assert!(!h.run(&DevicePlugin, json!({})).await.unwrap().present);
    // Installed and waited for: the emulator's DaemonSet controller reports its pods ready.
    let h2 = env.harness("dp2");
    let out = h2.run(&DevicePlugin, json!({"install": true, "timeout": "20s"})).await.expect("install and wait");
    assert!(out.running && out.ready >= 1 && out.ready == out.desired, "{out:?}");
    env.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_auth() {
    let env = start(vec![node("cpu-a", 0, None)]).await;
    let text = std::fs::read_to_string(&env.kubeconfig).unwrap().replace("t0ken", "wrong");
    std::fs::write(&env.kubeconfig, text).unwrap();
    let e = env.harness("a").run(&GpuNodes, json!({})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    env.server.shutdown().await;
}
