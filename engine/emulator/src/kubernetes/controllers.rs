//! What runs behind the API server, one tick at a time: namespace
//! termination, garbage collection (ownerReferences, foreground deletion),
//! the Job, Deployment, ReplicaSet and DaemonSet controllers, the scheduler
//! (nvidia.com/gpu, nodeSelector, node affinity, taints, RuntimeClass
//! scheduling) and a kubelet that runs pods to completion.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::meta::{self, meta_str, obj_mut, Kind, LabelSelector};
use super::store::{count, kind, PodRun, State, WriteOpts};

const CONTROLLER: &str = "kube-controller-manager";

fn owner_ref(kind: &Kind, obj: &Value) -> Value {
    json!({"apiVersion": kind.api_version(), "kind": kind.kind, "name": meta_str(obj, "name"),
        "uid": meta_str(obj, "uid"), "controller": true, "blockOwnerDeletion": true})
}

fn controlled_by(obj: &Value, uid: &str) -> bool {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|r| r.iter().any(|r| r["uid"] == uid && r["controller"] == true))
}

fn terminating(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some()
}

fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or("Pending")
}

fn pod_ready(pod: &Value) -> bool {
    phase(pod) == "Running" && !terminating(pod)
}

/// Sets a condition, keeping lastTransitionTime when the status is unchanged.
fn set_condition(status: &mut Value, ctype: &str, value: &str, reason: &str, message: &str, probe: bool) {
    let now = meta::now_rfc3339();
    if !status.is_object() {
        *status = json!({});
    }
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    let list = status["conditions"].as_array_mut().unwrap_or_else(|| unreachable!());
    let mut cond = json!({"type": ctype, "status": value});
    if !reason.is_empty() {
        cond["reason"] = json!(reason);
    }
    if !message.is_empty() {
        cond["message"] = json!(message);
    }
    if probe {
        cond["lastProbeTime"] = json!(now);
    }
    match list.iter_mut().find(|c| c["type"] == ctype) {
        Some(c) => {
            let since = if c["status"] == value { c["lastTransitionTime"].clone() } else { json!(now) };
            if probe && c["status"] == value && c["reason"] == cond["reason"] {
                return;
            }
            cond["lastTransitionTime"] = since;
            if !probe {
                if let Some(u) = c.get("lastUpdateTime") {
                    if c["status"] == value && c["reason"] == cond["reason"] {
                        cond["lastUpdateTime"] = u.clone();
                    } else {
                        cond["lastUpdateTime"] = json!(now);
                    }
                }
            }
            *c = cond;
        }
        None => {
            cond["lastTransitionTime"] = json!(now);
            list.push(cond);
        }
    }
}

fn has_condition(obj: &Value, ctype: &str) -> bool {
    obj["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == ctype && c["status"] == "True"))
}

/// FNV-1a over the template, as a 10-character name-safe hash.
fn template_hash(template: &Value) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in template.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..10)
        .map(|i| ALPHABET[((h >> (i * 6)) % ALPHABET.len() as u64) as usize] as char)
        .collect()
}

/// The pod's GPU request (init containers: the largest; app containers: the sum).
#[must_use]
pub fn pod_gpus(pod: &Value) -> u64 {
    let sum = |list: &str| -> Vec<u64> {
        pod["spec"][list]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let r = &c["resources"];
                count(r["requests"].get("nvidia.com/gpu").or_else(|| r["limits"].get("nvidia.com/gpu")).unwrap_or(&Value::Null))
            })
            .collect()
    };
    let app: u64 = sum("containers").iter().sum();
    let init = sum("initContainers").into_iter().max().unwrap_or(0);
    app.max(init)
}

fn tolerates(tolerations: &[Value], taint: &Value) -> bool {
    tolerations.iter().any(|t| {
        let op = t["operator"].as_str().unwrap_or("Equal");
        let key_ok = match t["key"].as_str() {
            None | Some("") => op == "Exists",
            Some(k) => Some(k) == taint["key"].as_str(),
        };
        let value_ok = op == "Exists" || t["value"].as_str().unwrap_or_default() == taint["value"].as_str().unwrap_or_default();
        let effect_ok = t["effect"].as_str().is_none_or(|e| e.is_empty() || Some(e) == taint["effect"].as_str());
        key_ok && value_ok && effect_ok
    })
}

fn env_of(pod: &Value, name: &str) -> Option<String> {
    pod["spec"]["containers"].as_array()?.iter().find_map(|c| {
        c["env"].as_array()?.iter().find(|e| e["name"] == name).and_then(|e| e["value"].as_str().map(str::to_owned))
    })
}

fn knob(pod: &Value, annotation: &str, env: &str) -> Option<String> {
    pod.pointer(&format!("/metadata/annotations/{}", annotation.replace('/', "~1")))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| env_of(pod, env))
}

/// The lines a container "prints": `emulator/logs` (annotation) or
/// `EMULATOR_LOGS` (env), else the `echo`s of a `sh -c` script (and
/// `nvidia-smi -L`), else the command line itself.
#[must_use]
pub fn pod_logs(pod: &Value, container: Option<&str>, gpu_product: &str) -> String {
    if let Some(l) = knob(pod, "emulator/logs", "EMULATOR_LOGS") {
        return if l.ends_with('\n') { l } else { format!("{l}\n") };
    }
    let cs = pod["spec"]["containers"].as_array().cloned().unwrap_or_default();
    let c = container
        .and_then(|n| cs.iter().find(|c| c["name"] == n))
        .or_else(|| cs.first())
        .cloned()
        .unwrap_or(Value::Null);
    let words: Vec<String> = c["command"].as_array().into_iter().flatten()
        .chain(c["args"].as_array().into_iter().flatten())
        .filter_map(|w| w.as_str().map(str::to_owned))
        .collect();
    let script = match words.as_slice() {
        [sh, flag, script, ..] if (sh.ends_with("sh")) && flag.starts_with('-') && flag.contains('c') => Some(script.clone()),
        [flag, script, ..] if flag == "-c" => Some(script.clone()),
        _ => None,
    };
    let gpus = pod_gpus(pod);
    let mut out = String::new();
    let uid = meta_str(pod, "uid").to_owned();
    let smi = |out: &mut String| {
        for i in 0..gpus {
            out.push_str(&format!("GPU {i}: {gpu_product} (UUID: GPU-{}-{i:04})\n", &uid[..uid.len().min(18)]));
        }
    };
    match script {
        Some(script) => {
            for stmt in script.split(['\n', ';']).flat_map(|s| s.split("&&")) {
                let stmt = stmt.trim();
                if let Some(rest) = stmt.strip_prefix("echo ") {
                    let rest = rest.trim();
                    let text = rest.strip_prefix('"').and_then(|r| r.strip_suffix('"'))
                        .or_else(|| rest.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')))
                        .unwrap_or(rest);
                    out.push_str(text);
                    out.push('\n');
                } else if stmt.starts_with("nvidia-smi") {
                    smi(&mut out);
                }
            }
        }
        None if words.first().is_some_and(|w| w.ends_with("nvidia-smi")) => smi(&mut out),
        None if words.first().is_some_and(|w| w == "echo") => {
            out.push_str(&words[1..].join(" "));
            out.push('\n');
        }
        None if !words.is_empty() => {
            out.push_str(&words.join(" "));
            out.push('\n');
        }
        None => {}
    }
    out
}

impl State {
    fn scaled(&self, secs: f64) -> Duration {
        Duration::from_secs_f64((secs * self.time_scale).max(0.0))
    }

    /// Records (or counts again) an Event about `obj`.
    pub(super) fn record_event(&mut self, involved: &Kind, obj: &Value, etype: &str, reason: &str, message: &str) {
        let ns = match meta_str(obj, "namespace") {
            "" => "default".to_owned(),
            n => n.to_owned(),
        };
        let uid = meta_str(obj, "uid").to_owned();
        let ek = kind("Event");
        let existing = self
            .list(ek, Some(&ns))
            .find(|e| e["involvedObject"]["uid"] == uid && e["reason"] == reason && e["message"] == message)
            .cloned();
        let now = meta::now_rfc3339();
        match existing {
            Some(mut e) => {
                e["count"] = json!(e["count"].as_u64().unwrap_or(1) + 1);
                e["lastTimestamp"] = json!(now);
                self.put(ek, e);
            }
            None => {
                let name = format!("{}.{:x}", meta_str(obj, "name"), rand::random::<u64>() & 0xffff_ffff_ffff);
                let e = json!({"apiVersion": "v1", "kind": "Event",
                    "metadata": {"name": name, "namespace": ns, "uid": meta::uuid(), "creationTimestamp": now},
                    "involvedObject": {"apiVersion": involved.api_version(), "kind": involved.kind,
                        "name": meta_str(obj, "name"), "namespace": meta_str(obj, "namespace"), "uid": uid,
                        "resourceVersion": meta_str(obj, "resourceVersion")},
                    "reason": reason, "message": message, "type": etype, "count": 1,
                    "firstTimestamp": now, "lastTimestamp": now,
                    "source": {"component": if reason.contains("Schedul") { "default-scheduler" } else { "emulator" }},
                    "reportingComponent": "", "reportingInstance": ""});
                self.commit(ek, e, "ADDED");
            }
        }
    }

    /// One pass of every controller.
    pub fn reconcile(&mut self, now: Instant) {
        self.namespaces(now);
        self.garbage_collect();
        self.jobs();
        self.deployments();
        self.replica_sets();
        self.daemon_sets();
        self.schedule(now);
        self.kubelet(now);
        self.workload_status();
    }

    fn namespaces(&mut self, now: Instant) {
        let nk = kind("Namespace");
        let dying: Vec<Value> = self.list(nk, None).filter(|n| terminating(n)).cloned().collect();
        self.ns_since.retain(|n, _| dying.iter().any(|d| meta_str(d, "name") == n));
        for ns in dying {
            let name = meta_str(&ns, "name").to_owned();
            let since = *self.ns_since.entry(name.clone()).or_insert(now);
            if now.duration_since(since) < self.scaled(2.0) {
                continue;
            }
            let contents: Vec<(&'static Kind, String)> = self
                .objects
                .iter()
                .filter(|((_, _, n, _), _)| *n == name)
                .filter_map(|((g, p, _, obj_name), _)| {
                    meta::KINDS.iter().find(|k| k.group == *g && k.plural == *p).map(|k| (k, obj_name.clone()))
                })
                .collect();
            if contents.is_empty() {
                let finalizers = ns.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
                if !finalizers {
                    self.commit(nk, ns, "DELETED");
                }
                continue;
            }
            for (k, n) in contents {
                if self.get(k, &name, &n).is_some_and(|o| !terminating(o)) {
                    let _ = self.delete(k, &name, &n, Some("Background"), false);
                }
            }
        }
    }

    fn garbage_collect(&mut self) {
        let uids: BTreeSet<String> = self.objects.values().map(|o| meta_str(o, "uid").to_owned()).collect();
        let all: Vec<Value> = self.objects.values().cloned().collect();
        for obj in all {
            let k = match meta::kind_by_name(obj["apiVersion"].as_str().unwrap_or_default(), obj["kind"].as_str().unwrap_or_default()) {
                Some(k) => k,
                None => continue,
            };
            let refs = obj.pointer("/metadata/ownerReferences").and_then(Value::as_array).cloned().unwrap_or_default();
            // Dependents of a foreground-deleting owner go first.
            let owner_fg = refs.iter().any(|r| {
                let uid = r["uid"].as_str().unwrap_or_default();
                self.objects.values().any(|o| meta_str(o, "uid") == uid && terminating(o)
                    && o.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| f.contains(&json!("foregroundDeletion"))))
            });
            let orphaned = !refs.is_empty() && refs.iter().all(|r| !uids.contains(r["uid"].as_str().unwrap_or_default()));
            if (orphaned || owner_fg) && !terminating(&obj) {
                let policy = if owner_fg { "Foreground" } else { "Background" };
                let _ = self.delete(k, meta_str(&obj, "namespace"), meta_str(&obj, "name"), Some(policy), false);
                continue;
            }
            if terminating(&obj) {
                let fins = obj.pointer("/metadata/finalizers").and_then(Value::as_array).cloned().unwrap_or_default();
                if fins.contains(&json!("foregroundDeletion")) && self.dependents(meta_str(&obj, "uid")).is_empty() {
                    let rest: Vec<Value> = fins.into_iter().filter(|f| f != "foregroundDeletion").collect();
                    let mut o = obj.clone();
                    if rest.is_empty() {
                        self.commit(k, o, "DELETED");
                    } else {
                        o["metadata"]["finalizers"] = json!(rest);
                        self.put(k, o);
                    }
                }
            }
        }
    }

    fn create_pod_for(&mut self, owner_kind: &'static Kind, owner: &Value, template: &Value, name: String, extra_labels: &Value, node: Option<&str>) {
        let ns = meta_str(owner, "namespace").to_owned();
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": template["metadata"].clone(), "spec": template["spec"].clone()});
        if !pod["metadata"].is_object() {
            pod["metadata"] = json!({});
        }
        pod["metadata"]["name"] = json!(name);
        pod["metadata"]["ownerReferences"] = json!([owner_ref(owner_kind, owner)]);
        for (k, v) in extra_labels.as_object().into_iter().flatten() {
            obj_mut(&mut pod["metadata"], "labels").insert(k.clone(), v.clone());
        }
        if let Some(n) = node {
            pod["spec"]["nodeName"] = json!(n);
        }
        let opts = WriteOpts { manager: CONTROLLER.to_owned(), ..WriteOpts::default() };
        match self.create(kind("Pod"), &ns, pod, &opts) {
            Ok(p) => {
                let msg = format!("Created pod: {}", meta_str(&p, "name"));
                self.record_event(owner_kind, owner, "Normal", "SuccessfulCreate", &msg);
            }
            Err(e) => {
                let msg = format!("Error creating: {}", e.message);
                self.record_event(owner_kind, owner, "Warning", "FailedCreate", &msg);
            }
        }
    }

    fn owned_pods(&self, uid: &str) -> Vec<Value> {
        self.list(kind("Pod"), None).filter(|p| controlled_by(p, uid)).cloned().collect()
    }

    fn jobs(&mut self) {
        let jk = kind("Job");
        let jobs: Vec<Value> = self.list(jk, None).cloned().collect();
        for mut job in jobs {
            if terminating(&job) || has_condition(&job, "Complete") || has_condition(&job, "Failed") {
                continue;
            }
            let uid = meta_str(&job, "uid").to_owned();
            let pods = self.owned_pods(&uid);
            let active = pods.iter().filter(|p| matches!(phase(p), "Pending" | "Running") && !terminating(p)).count() as u64;
            let ready = pods.iter().filter(|p| pod_ready(p)).count() as u64;
            let succeeded = pods.iter().filter(|p| phase(p) == "Succeeded").count() as u64;
            let failed = pods.iter().filter(|p| phase(p) == "Failed").count() as u64;
            let completions = job["spec"]["completions"].as_u64().unwrap_or(1);
            let parallelism = job["spec"]["parallelism"].as_u64().unwrap_or(1);
            let backoff = job["spec"]["backoffLimit"].as_u64().unwrap_or(6);
            let suspended = job["spec"]["suspend"] == true;
            let mut status = job["status"].clone();
            if !status.is_object() {
                status = json!({});
            }
            if status.get("startTime").is_none() && !suspended {
                status["startTime"] = json!(meta::now_rfc3339());
            }
            status["active"] = json!(active);
            status["ready"] = json!(ready);
            status["terminating"] = json!(0);
            status["uncountedTerminatedPods"] = json!({});
            if succeeded > 0 {
                status["succeeded"] = json!(succeeded);
            }
            if failed > 0 {
                status["failed"] = json!(failed);
            }
            if succeeded >= completions {
                set_condition(&mut status, "SuccessCriteriaMet", "True", "CompletionsReached", "Reached expected number of succeeded pods", true);
                set_condition(&mut status, "Complete", "True", "CompletionsReached", "Reached expected number of succeeded pods", true);
                status["completionTime"] = json!(meta::now_rfc3339());
                status["active"] = json!(0);
                self.record_event(jk, &job, "Normal", "Completed", "Job completed");
            } else if failed > backoff {
                set_condition(&mut status, "FailureTarget", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit", true);
                set_condition(&mut status, "Failed", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit", true);
                status["active"] = json!(0);
                for p in pods.iter().filter(|p| matches!(phase(p), "Pending" | "Running")) {
                    let _ = self.delete(kind("Pod"), meta_str(p, "namespace"), meta_str(p, "name"), Some("Background"), false);
                }
                self.record_event(jk, &job, "Warning", "BackoffLimitExceeded", "Job has reached the specified backoff limit");
            } else if !suspended {
                let want = parallelism.min(completions.saturating_sub(succeeded));
                let template = job["spec"]["template"].clone();
                for _ in active..want {
                    let name = format!("{}-{}", meta_str(&job, "name"), meta::random_suffix(5));
                    let labels = template["metadata"]["labels"].clone();
                    self.create_pod_for(jk, &job, &template, name, &labels, None);
                }
                let pods = self.owned_pods(&uid);
                status["active"] = json!(pods.iter().filter(|p| matches!(phase(p), "Pending" | "Running")).count());
            }
            job["status"] = status;
            self.put(jk, job);
        }
    }

    fn deployments(&mut self) {
        let dk = kind("Deployment");
        let rk = kind("ReplicaSet");
        let deps: Vec<Value> = self.list(dk, None).filter(|d| !terminating(d)).cloned().collect();
        for d in deps {
            let uid = meta_str(&d, "uid").to_owned();
            let ns = meta_str(&d, "namespace").to_owned();
            let hash = template_hash(&d["spec"]["template"]);
            let rs_name = format!("{}-{hash}", meta_str(&d, "name"));
            let replicas = d["spec"]["replicas"].as_u64().unwrap_or(1);
            let owned: Vec<Value> = self.list(rk, Some(&ns)).filter(|r| controlled_by(r, &uid)).cloned().collect();
            let revision = owned.len() + usize::from(!owned.iter().any(|r| meta_str(r, "name") == rs_name));
            for r in &owned {
                if meta_str(r, "name") != rs_name && r["spec"]["replicas"] != 0 {
                    let mut r = r.clone();
                    r["spec"]["replicas"] = json!(0);
                    self.put(rk, r);
                }
            }
            match self.get(rk, &ns, &rs_name).cloned() {
                Some(mut r) => {
                    if r["spec"]["replicas"] != replicas {
                        r["spec"]["replicas"] = json!(replicas);
                        self.put(rk, r);
                    }
                }
                None => {
                    let mut template = d["spec"]["template"].clone();
                    obj_mut(obj_mut_v(&mut template, "metadata"), "labels").insert("pod-template-hash".to_owned(), json!(hash));
                    let mut selector = d["spec"]["selector"].clone();
                    obj_mut(&mut selector, "matchLabels").insert("pod-template-hash".to_owned(), json!(hash));
                    let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "metadata": {"name": rs_name, "labels": template["metadata"]["labels"].clone(),
                            "annotations": {"deployment.kubernetes.io/desired-replicas": replicas.to_string(),
                                "deployment.kubernetes.io/max-replicas": (replicas + replicas.div_ceil(4)).to_string(),
                                "deployment.kubernetes.io/revision": revision.to_string()},
                            "ownerReferences": [owner_ref(dk, &d)]},
                        "spec": {"replicas": replicas, "selector": selector, "template": template}});
                    let opts = WriteOpts { manager: CONTROLLER.to_owned(), ..WriteOpts::default() };
                    if self.create(rk, &ns, rs, &opts).is_ok() {
                        self.record_event(dk, &d, "Normal", "ScalingReplicaSet", &format!("Scaled up replica set {rs_name} from 0 to {replicas}"));
                    }
                }
            }
        }
    }

    fn replica_sets(&mut self) {
        let rk = kind("ReplicaSet");
        let sets: Vec<Value> = self.list(rk, None).filter(|r| !terminating(r)).cloned().collect();
        for rs in sets {
            let uid = meta_str(&rs, "uid").to_owned();
            let want = rs["spec"]["replicas"].as_u64().unwrap_or(1);
            let mut pods: Vec<Value> = self.owned_pods(&uid).into_iter().filter(|p| !terminating(p) && matches!(phase(p), "Pending" | "Running")).collect();
            let have = pods.len() as u64;
            for _ in have..want {
                let name = format!("{}-{}", meta_str(&rs, "name"), meta::random_suffix(5));
                let template = rs["spec"]["template"].clone();
                self.create_pod_for(rk, &rs, &template, name, &json!({}), None);
            }
            if have > want {
                pods.sort_by_key(|p| std::cmp::Reverse(meta_str(p, "creationTimestamp").to_owned()));
                for p in pods.iter().take((have - want) as usize) {
                    let _ = self.delete(kind("Pod"), meta_str(p, "namespace"), meta_str(p, "name"), Some("Background"), false);
                }
            }
        }
    }

    fn eligible_for_ds(node: &Value, spec: &Value) -> bool {
        let sel = &spec["nodeSelector"];
        let labels = &node["metadata"]["labels"];
        let selector_ok = sel.as_object().into_iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
        let tols = spec["tolerations"].as_array().cloned().unwrap_or_default();
        let taints_ok = node["spec"]["taints"].as_array().into_iter().flatten()
            .filter(|t| matches!(t["effect"].as_str(), Some("NoSchedule" | "NoExecute")))
            .all(|t| tolerates(&tols, t));
        selector_ok && taints_ok && node_affinity_ok(spec, node)
    }

    fn daemon_sets(&mut self) {
        let dk = kind("DaemonSet");
        let nodes: Vec<Value> = self.list(kind("Node"), None).cloned().collect();
        let sets: Vec<Value> = self.list(dk, None).filter(|d| !terminating(d)).cloned().collect();
        for ds in sets {
            let uid = meta_str(&ds, "uid").to_owned();
            let pods: Vec<Value> = self.owned_pods(&uid).into_iter().filter(|p| !terminating(p)).collect();
            let template = ds["spec"]["template"].clone();
            let hash = template_hash(&template);
            let mut desired = 0;
            for node in &nodes {
                if !Self::eligible_for_ds(node, &template["spec"]) {
                    continue;
                }
                desired += 1;
                let node_name = meta_str(node, "name");
                if !pods.iter().any(|p| p["spec"]["nodeName"] == node_name) {
                    let name = format!("{}-{}", meta_str(&ds, "name"), meta::random_suffix(5));
                    let labels = json!({"controller-revision-hash": hash, "pod-template-generation": ds["metadata"]["generation"].as_u64().unwrap_or(1).to_string()});
                    self.create_pod_for(dk, &ds, &template, name, &labels, Some(node_name));
                }
            }
            let pods: Vec<Value> = self.owned_pods(&uid).into_iter().filter(|p| !terminating(p)).collect();
            let ready = pods.iter().filter(|p| pod_ready(p)).count();
            let mut ds = ds;
            let gen = ds["metadata"]["generation"].clone();
            ds["status"] = json!({"currentNumberScheduled": pods.len(), "desiredNumberScheduled": desired,
                "numberMisscheduled": 0, "numberReady": ready, "numberAvailable": ready,
                "updatedNumberScheduled": pods.len(), "observedGeneration": gen});
            if ready < desired {
                ds["status"]["numberUnavailable"] = json!(desired - ready);
                ds["status"]["numberAvailable"] = json!(ready);
            }
            self.put(dk, ds);
        }
    }

    fn workload_status(&mut self) {
        let rk = kind("ReplicaSet");
        let sets: Vec<Value> = self.list(rk, None).cloned().collect();
        for mut rs in sets {
            let pods: Vec<Value> = self.owned_pods(meta_str(&rs, "uid")).into_iter().filter(|p| !terminating(p) && matches!(phase(p), "Pending" | "Running")).collect();
            let ready = pods.iter().filter(|p| pod_ready(p)).count();
            let mut st = json!({"replicas": pods.len(), "fullyLabeledReplicas": pods.len(), "observedGeneration": rs["metadata"]["generation"].clone()});
            if ready > 0 {
                st["readyReplicas"] = json!(ready);
                st["availableReplicas"] = json!(ready);
            }
            rs["status"] = st;
            self.put(rk, rs);
        }
        let dk = kind("Deployment");
        let deps: Vec<Value> = self.list(dk, None).cloned().collect();
        for mut d in deps {
            let uid = meta_str(&d, "uid").to_owned();
            let ns = meta_str(&d, "namespace").to_owned();
            let new_rs = format!("{}-{}", meta_str(&d, "name"), template_hash(&d["spec"]["template"]));
            let mut total = 0;
            let mut ready = 0;
            let mut updated = 0;
            for r in self.list(rk, Some(&ns)).filter(|r| controlled_by(r, &uid)) {
                let n = r["status"]["replicas"].as_u64().unwrap_or(0);
                total += n;
                ready += r["status"]["readyReplicas"].as_u64().unwrap_or(0);
                if meta_str(r, "name") == new_rs {
                    updated = n;
                }
            }
            let desired = d["spec"]["replicas"].as_u64().unwrap_or(1);
            let mut st = d["status"].clone();
            if !st.is_object() {
                st = json!({});
            }
            st["observedGeneration"] = d["metadata"]["generation"].clone();
            st["replicas"] = json!(total);
            st["updatedReplicas"] = json!(updated);
            for (k, v) in [("readyReplicas", ready), ("availableReplicas", ready), ("unavailableReplicas", total.saturating_sub(ready))] {
                if v > 0 {
                    st[k] = json!(v);
                } else if let Some(m) = st.as_object_mut() {
                    m.remove(k);
                }
            }
            let min_available = desired - desired / 4;
            if ready >= min_available {
                set_condition(&mut st, "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.", false);
            } else {
                set_condition(&mut st, "Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.", false);
            }
            if updated == desired && ready >= desired && total == desired {
                set_condition(&mut st, "Progressing", "True", "NewReplicaSetAvailable", &format!("ReplicaSet \"{new_rs}\" has successfully progressed."), false);
            } else {
                set_condition(&mut st, "Progressing", "True", "ReplicaSetUpdated", &format!("ReplicaSet \"{new_rs}\" is progressing."), false);
            }
            for c in st["conditions"].as_array_mut().into_iter().flatten() {
                if c.get("lastUpdateTime").is_none() {
                    c["lastUpdateTime"] = c["lastTransitionTime"].clone();
                }
            }
            d["status"] = st;
            self.put(dk, d);
        }
    }

    fn schedule(&mut self, now: Instant) {
        let pk = kind("Pod");
        let nodes: Vec<Value> = self.list(kind("Node"), None).cloned().collect();
        let pending: Vec<Value> = self
            .list(pk, None)
            .filter(|p| p["spec"]["nodeName"].as_str().is_none_or(str::is_empty) && phase(p) == "Pending" && !terminating(p))
            .cloned()
            .collect();
        if pending.is_empty() {
            return;
        }
        let mut used: BTreeMap<String, u64> = BTreeMap::new();
        for p in self.list(pk, None) {
            if let Some(n) = p["spec"]["nodeName"].as_str() {
                if !matches!(phase(p), "Succeeded" | "Failed") {
                    *used.entry(n.to_owned()).or_default() += pod_gpus(p);
                }
            }
        }
        for mut pod in pending {
            let mut spec = pod["spec"].clone();
            if let Some(rc) = spec["runtimeClassName"].as_str().and_then(|n| self.get(kind("RuntimeClass"), "", n)) {
                let sched = rc["scheduling"].clone();
                for (k, v) in sched["nodeSelector"].as_object().into_iter().flatten() {
                    obj_mut(&mut spec, "nodeSelector").insert(k.clone(), v.clone());
                }
                let mut tols = spec["tolerations"].as_array().cloned().unwrap_or_default();
                tols.extend(sched["tolerations"].as_array().cloned().unwrap_or_default());
                spec["tolerations"] = json!(tols);
            }
            let need = pod_gpus(&pod);
            let tols = spec["tolerations"].as_array().cloned().unwrap_or_default();
            let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
            let mut best: Option<(u64, String)> = None;
            for node in &nodes {
                let name = meta_str(node, "name").to_owned();
                let labels = &node["metadata"]["labels"];
                let untolerated = node["spec"]["taints"].as_array().into_iter().flatten()
                    .filter(|t| matches!(t["effect"].as_str(), Some("NoSchedule" | "NoExecute")))
                    .find(|t| !tolerates(&tols, t));
                let reason = if node["spec"]["unschedulable"] == true {
                    Some("node(s) were unschedulable".to_owned())
                } else if let Some(t) = untolerated {
                    Some(format!("node(s) had untolerated taint {{{}: {}}}", t["key"].as_str().unwrap_or_default(), t["value"].as_str().unwrap_or_default()))
                } else if !spec["nodeSelector"].as_object().into_iter().flatten().all(|(k, v)| labels.get(k) == Some(v)) || !node_affinity_ok(&spec, node) {
                    Some("node(s) didn't match Pod's node affinity/selector".to_owned())
                } else {
                    let alloc = count(node["status"]["allocatable"].get("nvidia.com/gpu").unwrap_or(&Value::Null));
                    let free = alloc.saturating_sub(used.get(&name).copied().unwrap_or(0));
                    if need > free {
                        Some("Insufficient nvidia.com/gpu".to_owned())
                    } else {
                        if best.as_ref().is_none_or(|(f, _)| free > *f) {
                            best = Some((free, name.clone()));
                        }
                        None
                    }
                };
                if let Some(r) = reason {
                    *reasons.entry(r).or_default() += 1;
                }
            }
            match best {
                Some((_, node)) => {
                    *used.entry(node.clone()).or_default() += need;
                    pod["spec"]["nodeName"] = json!(node);
                    set_condition(obj_mut_v(&mut pod, "status"), "PodScheduled", "True", "", "", true);
                    if let Some(c) = pod["status"]["conditions"].as_array_mut() {
                        for c in c {
                            c["lastProbeTime"] = Value::Null;
                        }
                    }
                    self.pods.insert(meta_str(&pod, "uid").to_owned(), PodRun { bound: now, started: None });
                    let msg = format!("Successfully assigned {}/{} to {node}", meta_str(&pod, "namespace"), meta_str(&pod, "name"));
                    let pod = self.put(pk, pod);
                    self.record_event(pk, &pod, "Normal", "Scheduled", &msg);
                }
                None => {
                    let n = nodes.len();
                    let mut parts: Vec<String> = reasons.iter().map(|(r, c)| format!("{c} {r}")).collect();
                    parts.sort();
                    let insufficient = reasons.keys().filter(|r| r.starts_with("Insufficient")).map(|r| reasons[r]).sum::<usize>();
                    let mut pre = Vec::new();
                    if insufficient > 0 {
                        pre.push(format!("{insufficient} No preemption victims found for incoming pod"));
                    }
                    if n > insufficient {
                        pre.push(format!("{} Preemption is not helpful for scheduling", n - insufficient));
                    }
                    let message = if n == 0 {
                        "no nodes available to schedule pods".to_owned()
                    } else {
                        format!("0/{n} nodes are available: {}. preemption: 0/{n} nodes are available: {}.", parts.join(", "), pre.join(", "))
                    };
                    let before = pod.clone();
                    set_condition(obj_mut_v(&mut pod, "status"), "PodScheduled", "False", "Unschedulable", &message, true);
                    if pod["status"]["conditions"] != before["status"]["conditions"] {
                        let pod = self.put(pk, pod);
                        self.record_event(pk, &pod, "Warning", "FailedScheduling", &message);
                    }
                }
            }
        }
    }

    fn kubelet(&mut self, now: Instant) {
        let pk = kind("Pod");
        let pods: Vec<Value> = self
            .list(pk, None)
            .filter(|p| p["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty()) && matches!(phase(p), "Pending" | "Running"))
            .cloned()
            .collect();
        for mut pod in pods {
            let uid = meta_str(&pod, "uid").to_owned();
            let run = self.pods.entry(uid.clone()).or_insert(PodRun { bound: now, started: None }).clone();
            let node_name = pod["spec"]["nodeName"].as_str().unwrap_or_default().to_owned();
            let Some(node) = self.get(kind("Node"), "", &node_name).cloned() else { continue };
            let host_ip = node["status"]["addresses"][0]["address"].clone();
            let containers = pod["spec"]["containers"].as_array().cloned().unwrap_or_default();
            let ts = meta::now_rfc3339();
            match (phase(&pod).to_owned().as_str(), run.started) {
                ("Pending", _) => {
                    if pod["status"]["startTime"].is_null() {
                        pod["status"]["startTime"] = json!(ts);
                        pod["status"]["hostIP"] = host_ip.clone();
                        pod["status"]["hostIPs"] = json!([{"ip": host_ip}]);
                        let waiting: Vec<Value> = containers.iter().map(|c| json!({"name": c["name"], "image": c["image"], "imageID": "",
                            "ready": false, "restartCount": 0, "started": false,
                            "state": {"waiting": {"reason": "ContainerCreating"}}, "lastState": {}})).collect();
                        pod["status"]["containerStatuses"] = json!(waiting);
                        for (t, s) in [("PodReadyToStartContainers", "False"), ("Initialized", "True"), ("Ready", "False"), ("ContainersReady", "False")] {
                            set_condition(obj_mut_v(&mut pod, "status"), t, s, "", "", true);
                        }
                        clear_probe(&mut pod);
                        self.put(pk, pod);
                        continue;
                    }
                    if now.duration_since(run.bound) < self.scaled(1.0) {
                        continue;
                    }
                    let ip = format!("10.244.{}.{}", (rand::random::<u8>() % 250) + 1, (rand::random::<u8>() % 250) + 2);
                    pod["status"]["phase"] = json!("Running");
                    pod["status"]["podIP"] = json!(ip);
                    pod["status"]["podIPs"] = json!([{"ip": ip}]);
                    let running: Vec<Value> = containers.iter().map(|c| json!({"name": c["name"], "image": c["image"],
                        "imageID": format!("{}@sha256:{:064x}", c["image"].as_str().unwrap_or_default(), 0),
                        "containerID": format!("containerd://{:032x}{:032x}", rand::random::<u128>(), rand::random::<u128>()),
                        "ready": true, "restartCount": 0, "started": true,
                        "state": {"running": {"startedAt": ts}}, "lastState": {}})).collect();
                    pod["status"]["containerStatuses"] = json!(running);
                    for t in ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady"] {
                        set_condition(obj_mut_v(&mut pod, "status"), t, "True", "", "", true);
                    }
                    clear_probe(&mut pod);
                    if let Some(r) = self.pods.get_mut(&uid) {
                        r.started = Some(now);
                    }
                    let pod = self.put(pk, pod);
                    let msg = format!("Started container {}", containers.first().and_then(|c| c["name"].as_str()).unwrap_or_default());
                    self.record_event(pk, &pod, "Normal", "Started", &msg);
                }
                ("Running", Some(started)) => {
                    if pod["spec"]["restartPolicy"] == "Always" {
                        continue;
                    }
                    let secs = knob(&pod, "emulator/run-seconds", "EMULATOR_RUN_SECONDS").and_then(|s| s.parse::<f64>().ok()).unwrap_or(2.0);
                    if now.duration_since(started) < self.scaled(secs) {
                        continue;
                    }
                    let code = knob(&pod, "emulator/exit-code", "EMULATOR_EXIT_CODE").and_then(|s| s.parse::<i64>().ok()).unwrap_or(0);
                    pod["status"]["phase"] = json!(if code == 0 { "Succeeded" } else { "Failed" });
                    let started_at = pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"].clone();
                    if let Some(cs) = pod["status"]["containerStatuses"].as_array_mut() {
                        for c in cs {
                            let id = c["containerID"].clone();
                            c["ready"] = json!(false);
                            c["started"] = json!(false);
                            c["state"] = json!({"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                                "startedAt": started_at, "finishedAt": ts, "containerID": id}});
                        }
                    }
                    for t in ["PodReadyToStartContainers", "Ready", "ContainersReady"] {
                        let reason = if t == "PodReadyToStartContainers" { "" } else { "PodCompleted" };
                        set_condition(obj_mut_v(&mut pod, "status"), t, "False", reason, "", true);
                    }
                    clear_probe(&mut pod);
                    self.put(pk, pod);
                }
                _ => {}
            }
        }
    }
}

fn clear_probe(pod: &mut Value) {
    if let Some(cs) = pod["status"]["conditions"].as_array_mut() {
        for c in cs {
            c["lastProbeTime"] = Value::Null;
        }
    }
}

fn obj_mut_v<'a>(v: &'a mut Value, key: &str) -> &'a mut Value {
    obj_mut(v, key);
    &mut v[key]
}

/// `requiredDuringSchedulingIgnoredDuringExecution` node affinity (terms ORed).
fn node_affinity_ok(spec: &Value, node: &Value) -> bool {
    let Some(terms) = spec.pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms").and_then(Value::as_array) else {
        return true;
    };
    let labels = &node["metadata"]["labels"];
    terms.iter().any(|t| {
        let fields_ok = t["matchFields"].as_array().into_iter().flatten().all(|f| {
            let name = meta_str(node, "name");
            let vals: Vec<&str> = f["values"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            match f["operator"].as_str() {
                Some("NotIn") => !vals.contains(&name),
                _ => vals.contains(&name),
            }
        });
        LabelSelector::from_object(&json!({"matchExpressions": t["matchExpressions"].clone()})).matches(labels) && fields_ok
    })
}
