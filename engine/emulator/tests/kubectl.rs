//! Fidelity of the Kubernetes emulator, judged by a third party: the real
//! `kubectl` (server-side apply, get, wait, logs, delete) against the
//! kubeconfig the emulator writes. Without `kubectl`: `skipped: ...`, or a
//! failure naming it when `ENGINE_REQUIRE_PEERS=1`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use engine_emulator::kubernetes::{self, Config, NodeSpec};

const MANIFEST: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
  namespace: demo
data:
  key: one
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: demo
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
---
apiVersion: batch/v1
kind: Job
metadata:
  name: train
  namespace: demo
spec:
  template:
    spec:
      restartPolicy: Never
      nodeSelector: {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}
      tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
      containers:
      - name: main
        image: cuda:12
        command: ["sh", "-c", "echo hello; nvidia-smi -L; echo done"]
        resources:
          limits: {nvidia.com/gpu: 2}
"#;

const CONFLICT: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  namespace: demo\ndata:\n  key: two\n";

const TOO_BIG: &str = r#"apiVersion: batch/v1
kind: Job
metadata:
  name: huge
  namespace: demo
spec:
  template:
    spec:
      restartPolicy: Never
      tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
      containers:
      - name: main
        image: cuda:12
        resources:
          limits: {nvidia.com/gpu: 8}
"#;

fn kubectl_available() -> bool {
    Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success())
}

struct Kubectl {
    kubeconfig: PathBuf,
    dir: PathBuf,
}

impl Kubectl {
    async fn run(&self, args: &[&str]) -> (bool, String, String) {
        let mut cmd = Command::new("kubectl");
        cmd.args(args).env("KUBECONFIG", &self.kubeconfig).current_dir(&self.dir);
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .expect("join")
            .expect("run kubectl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    async fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args).await;
        assert!(ok, "kubectl {args:?} failed:\n{out}\n{err}");
        out
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, text).expect("write manifest");
        p.display().to_string()
    }
}

fn gpu_node(name: &str, gpus: u32) -> NodeSpec {
    let mut labels = BTreeMap::new();
    labels.insert("nvidia.com/gpu.product".to_owned(), "NVIDIA-H100-80GB-HBM3".to_owned());
    NodeSpec {
        name: name.to_owned(),
        gpus,
        labels,
        taints: vec![("nvidia.com/gpu".to_owned(), "present".to_owned(), "NoSchedule".to_owned())],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drives_the_emulator() {
    if !kubectl_available() {
        assert!(
            std::env::var("ENGINE_REQUIRE_PEERS").as_deref() != Ok("1"),
            "kubectl_drives_the_emulator: the `kubectl` tool is missing"
        );
        println!("skipped: kubectl_drives_the_emulator: `kubectl` is not installed");
        return;
    }
    let config = Config {
        nodes: vec![gpu_node("gpu-a", 4), NodeSpec { name: "cpu-a".to_owned(), ..NodeSpec::default() }],
        token: "t0ken".to_owned(),
        time_scale: 0.2,
    };
    let server = kubernetes::start("127.0.0.1:0".parse().unwrap(), config).await.expect("start");
    let dir = std::env::temp_dir().join(format!("kubectl-fidelity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let k = Kubectl { kubeconfig: dir.join("kubeconfig"), dir: dir.clone() };
    server.kubeconfig(Path::new(&k.kubeconfig)).expect("kubeconfig");

    // Nodes with allocatable GPUs.
    let nodes: serde_json::Value = serde_json::from_str(&k.ok(&["get", "nodes", "-o", "json"]).await).unwrap();
    let gpu = nodes["items"].as_array().unwrap().iter().find(|n| n["metadata"]["name"] == "gpu-a").unwrap();
    assert_eq!(gpu["status"]["allocatable"]["nvidia.com/gpu"], "4");

    // Server-side apply of a multi-document manifest.
    let manifest = k.file("manifest.yaml", MANIFEST);
    let out = k.ok(&["apply", "--server-side", "-f", &manifest]).await;
    for line in ["namespace/demo serverside-applied", "configmap/cfg serverside-applied",
        "deployment.apps/web serverside-applied", "job.batch/train serverside-applied"] {
        assert!(out.contains(line), "{out}");
    }
    let cm: serde_json::Value = serde_json::from_str(
        &k.ok(&["get", "configmap", "cfg", "-n", "demo", "-o", "json", "--show-managed-fields"]).await,
    ).unwrap();
    assert_eq!(cm["data"]["key"], "one");
    let mf = &cm["metadata"]["managedFields"][0];
    assert_eq!(mf["manager"], "kubectl");
    assert_eq!(mf["operation"], "Apply");
    assert_eq!(mf["fieldsV1"]["f:data"]["f:key"], serde_json::json!({}));

    // A second manager conflicts, then wins with --force-conflicts.
    let other = k.file("conflict.yaml", CONFLICT);
    let (ok, _, err) = k.run(&["apply", "--server-side", "--field-manager=other", "-f", &other]).await;
    assert!(!ok && err.contains("conflict with \"kubectl\""), "{err}");
    k.ok(&["apply", "--server-side", "--field-manager=other", "--force-conflicts", "-f", &other]).await;
    assert_eq!(k.ok(&["get", "cm", "cfg", "-n", "demo", "-o", "jsonpath={.data.key}"]).await, "two");

    // The job runs on the GPU node to completion and has logs.
    k.ok(&["wait", "--for=condition=complete", "job/train", "-n", "demo", "--timeout=30s"]).await;
    let logs = k.ok(&["logs", "-n", "demo", "job/train"]).await;
    assert!(logs.starts_with("hello\nGPU 0: NVIDIA H100 80GB HBM3") && logs.ends_with("done\n"), "{logs}");
    let job: serde_json::Value = serde_json::from_str(&k.ok(&["get", "job", "train", "-n", "demo", "-o", "json"]).await).unwrap();
    assert_eq!(job["status"]["succeeded"], 1);

    // Deployment pods run.
    let pod = k.ok(&["get", "pods", "-n", "demo", "-l", "app=web", "-o", "jsonpath={.items[0].metadata.name}"]).await;
    k.ok(&["wait", "--for=jsonpath={.status.phase}=Running", &format!("pod/{pod}"), "-n", "demo", "--timeout=30s"]).await;
    k.ok(&["wait", "--for=condition=available", "deployment/web", "-n", "demo", "--timeout=30s"]).await;

    // More GPUs than exist: Pending, Unschedulable with the scheduler's wording.
    let huge = k.file("huge.yaml", TOO_BIG);
    k.ok(&["apply", "--server-side", "-f", &huge]).await;
    let mut reason = String::new();
    for _ in 0..100 {
        reason = k.ok(&["get", "pods", "-n", "demo", "-l", "job-name=huge", "-o",
            "jsonpath={.items[0].status.phase} {.items[0].status.conditions[0].reason}: {.items[0].status.conditions[0].message}"]).await;
        if reason.contains("Unschedulable") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(reason.starts_with("Pending Unschedulable: 0/2 nodes are available: 2 Insufficient nvidia.com/gpu. preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod."), "{reason}");

    // Delete everything and wait for it to be gone.
    k.ok(&["delete", "-f", &huge]).await;
    k.ok(&["delete", "--ignore-not-found", "-f", &manifest]).await;
    k.ok(&["wait", "--for=delete", "namespace/demo", "--timeout=30s"]).await;
    let (ok, _, err) = k.run(&["get", "cm", "cfg", "-n", "demo"]).await;
    assert!(!ok && err.contains("not found"), "{err}");
    let snapshot = server.snapshot();
    assert!(snapshot["objects"]["pods"].as_array().is_none_or(Vec::is_empty), "{snapshot}");
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
