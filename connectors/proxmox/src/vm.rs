//! `proxmox.vm.create` (a resource, with undo), `vm.start`, `vm.stop`, `vm.delete`, `task.wait`.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, ErrorKind, LogStream, ResourceRecord, ResourceState, StepContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::client::{uri_encode, Pve, DEFAULT_TASK_TIMEOUT_SECS};
use crate::gpu::{self, GpuPassthrough};

/// The resource kind of a VM.
pub const KIND: &str = "proxmox.vm";

fn task_limit(secs: Option<u64>) -> Duration {
    Duration::from_secs(secs.unwrap_or(DEFAULT_TASK_TIMEOUT_SECS))
}

/// The PVE tag that marks the VM of one idempotency key (`engine-` + 16 hex digits; PVE tags
/// allow no `/`).
#[must_use]
pub fn key_tag(key: &str) -> String {
    // FNV-1a, 64 bits: stable across builds and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("engine-{h:016x}")
}

fn marker(key: &str) -> String {
    format!("engine-key: {key}")
}

/// Whether a VM config is the one made for `key` (its tag or its description says so).
fn is_ours(cfg: &Value, key: &str) -> bool {
    let tag = key_tag(key);
    let tags = cfg.get("tags").and_then(Value::as_str).unwrap_or("");
    tags.split([';', ',', ' ']).any(|t| t == tag) || cfg.get("description").and_then(Value::as_str).is_some_and(|d| d.lines().any(|l| l.trim() == marker(key)))
}

/// `proxmox.vm.create` input.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInput {
    /// VM name (default `engine-<vmid>`).
    #[serde(default)]
    pub name: Option<String>,
    /// Node (default: the block's `node`, else the first online node).
    #[serde(default)]
    pub node: Option<String>,
    /// VM id (default: the cluster's next free id, chosen once per step and kept across retries).
    #[serde(default)]
    pub vmid: Option<u64>,
    /// Template (or VM) id to full-clone; without it a new VM is created.
    #[serde(default)]
    pub clone: Option<u64>,
    /// Target storage of the clone's disks, or of a new VM's disk (default `local-lvm` for a new VM).
    #[serde(default)]
    pub storage: Option<String>,
    /// vCPU cores.
    #[serde(default)]
    pub cores: Option<u32>,
    /// Memory, MiB.
    #[serde(default)]
    pub memory: Option<u64>,
    /// Boot disk size in GiB: grows the clone's `scsi0` (never shrinks), or sizes a new VM's disk (default 32).
    #[serde(default)]
    pub disk_gb: Option<u64>,
    /// Disk to grow (default `scsi0`).
    #[serde(default)]
    pub disk: Option<String>,
    /// Bridge of `net0` (`vmbr0`), virtio.
    #[serde(default)]
    pub bridge: Option<String>,
    /// Cloud-init user.
    #[serde(default)]
    pub ciuser: Option<String>,
    /// SSH public keys for cloud-init.
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    /// Cloud-init `ipconfig0` (`ip=dhcp`, `ip=10.0.0.5/24,gw=10.0.0.1`).
    #[serde(default)]
    pub ipconfig0: Option<String>,
    /// GPU passthrough.
    #[serde(default)]
    pub gpu: Option<GpuPassthrough>,
    /// Start the VM.
    #[serde(default)]
    pub start: bool,
    /// Wait for the guest agent to report an IPv4 (needs `start`).
    #[serde(default)]
    pub wait_ip: bool,
    /// Limit of the IP wait, seconds (default 300).
    #[serde(default)]
    pub ip_timeout_secs: Option<u64>,
    /// Limit of each task (clone, resize, start), seconds (default 1800).
    #[serde(default)]
    pub task_timeout_secs: Option<u64>,
}

/// GPUs of a server.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct GpuInfo {
    /// Device name (from the node's PCI list or the mapping's description).
    pub model: String,
    /// Passed-through devices.
    pub count: u32,
    /// Memory of one GPU, GiB: Proxmox does not say.
    pub memory_gb: Option<u32>,
}

/// `proxmox.vm.create` output: the common server outputs plus `vmid`, `node`, `hostpci`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CreateOutput {
    /// The vmid, as a string.
    pub id: String,
    /// VM name.
    pub name: String,
    /// `proxmox`.
    pub provider: String,
    /// The node.
    pub zone: String,
    /// `4c-8g`.
    pub instance_type: String,
    /// A global address the guest agent reported.
    pub public_ip: Option<String>,
    /// The first non-loopback IPv4 (guest agent, else a static `ipconfig0`).
    pub private_ip: Option<String>,
    /// Template name (or `vmid:N`), null for a new VM.
    pub image: Option<String>,
    /// Passed-through GPUs.
    pub gpu: Option<GpuInfo>,
    /// Always null: no price for an own cluster.
    pub hourly_price: Option<f64>,
    /// Cloud-init user (`root` when none is set).
    pub ssh_user: String,
    /// VM id.
    pub vmid: u64,
    /// Node.
    pub node: String,
    /// `hostpciN` values set.
    pub hostpci: Vec<String>,
    /// An earlier attempt's VM was adopted.
    pub adopted: bool,
}

/// `proxmox.vm.create`.
#[derive(Debug, Clone, Copy, Default)]
pub struct VmCreate;

fn num(v: Option<&Value>) -> Option<u64> {
    v.and_then(|x| x.as_u64().or_else(|| x.as_str().and_then(|s| s.parse().ok())))
}

/// Wait until the VM's config holds no `lock` (a clone, a migration an earlier attempt
/// started), within `limit`.
async fn wait_unlocked(pve: &Pve, cx: &StepContext, node: &str, vmid: u64, mut cfg: Value, limit: Duration) -> Result<(), ConnectorError> {
    let start = tokio::time::Instant::now();
    while let Some(lock) = cfg.get("lock").and_then(Value::as_str).map(str::to_string) {
        if start.elapsed() >= limit {
            return Err(ConnectorError::timeout(format!("VM {vmid} on {node} is still locked ({lock}) after {}s", limit.as_secs())));
        }
        cx.progress(&format!("waiting for VM {vmid}'s {lock} to finish, {:.1}s", start.elapsed().as_secs_f64()), None);
        cx.sleep(Duration::from_millis(500)).await?;
        cfg = config_of(pve, node, vmid).await?.ok_or_else(|| ConnectorError::not_found(format!("VM {vmid} on {node} went away while locked ({lock})")))?;
    }
    Ok(())
}

async fn config_of(pve: &Pve, node: &str, vmid: u64) -> Result<Option<Value>, ConnectorError> {
    match pve.get(&format!("/nodes/{node}/qemu/{vmid}/config"), &[]).await {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn instance_type(cfg: &Value) -> String {
    let cores = num(cfg.get("cores")).unwrap_or(1) * num(cfg.get("sockets")).unwrap_or(1);
    let mem = num(cfg.get("memory")).unwrap_or(512);
    if mem.is_multiple_of(1024) {
        format!("{cores}c-{}g", mem / 1024)
    } else {
        format!("{cores}c-{:.1}g", mem as f64 / 1024.0)
    }
}

/// The first non-loopback IPv4 of `network-get-interfaces`.
fn agent_ipv4(data: &Value) -> Option<String> {
    let list = data.get("result").unwrap_or(data);
    list.as_array()?
        .iter()
        .flat_map(|i| i.get("ip-addresses").and_then(Value::as_array).cloned().unwrap_or_default())
        .filter(|a| a.get("ip-address-type").and_then(Value::as_str) == Some("ipv4"))
        .filter_map(|a| a.get("ip-address").and_then(Value::as_str).map(String::from))
        .find(|ip| !ip.starts_with("127.") && !ip.starts_with("169.254."))
}

fn is_private(ip: &str) -> bool {
    ip.parse::<std::net::Ipv4Addr>().is_ok_and(|a| a.is_private() || a.is_loopback() || a.is_link_local() || a.octets()[0] == 100 && (64..128).contains(&a.octets()[1]) || a.is_documentation())
}

fn static_ip(ipconfig: &str) -> Option<String> {
    ipconfig.split(',').find_map(|p| p.strip_prefix("ip=")).filter(|v| *v != "dhcp").map(|v| v.split('/').next().unwrap_or(v).to_string())
}

#[async_trait]
impl Action for VmCreate {
    const ID: &'static str = "proxmox.vm.create";
    const DESCRIPTION: &'static str = "Full-clone a template (or create) a VM with cloud-init and GPU passthrough, start it, wait for its IP";
    const RESOURCE: Option<&'static str> = Some(KIND);
    type Input = CreateInput;
    type Output = CreateOutput;

    fn validate(&self, i: &CreateInput) -> Result<(), ConnectorError> {
        if let Some(g) = &i.gpu {
            g.validate()?;
        }
        if i.wait_ip && !i.start {
            return Err(ConnectorError::invalid("`wait_ip: true` needs `start: true`"));
        }
        if i.vmid.is_some_and(|v| !(100..=999_999_999).contains(&v)) {
            return Err(ConnectorError::invalid("`vmid` must be between 100 and 999999999"));
        }
        Ok(())
    }

    async fn run(&self, i: CreateInput, cx: &StepContext) -> Result<CreateOutput, ConnectorError> {
        let pve = Pve::from_context(cx).await?;
        let node = pve.node(i.node.as_deref()).await?;
        let key = cx.idempotency_key();
        let limit = task_limit(i.task_timeout_secs);
        // The vmid, chosen once for the step: a retry or a resume finds the same one.
        let vmid = match i.vmid {
            Some(v) => v,
            None => {
                let next = num(Some(&pve.get("/cluster/nextid", &[]).await?)).ok_or_else(|| ConnectorError::transient("/cluster/nextid gave no id"))?;
                let pinned = cx.pin(&format!("proxmox.vm.vmid/{key}"), &next.to_string()).await?;
                pinned.parse().map_err(|_| ConnectorError::invalid(format!("pinned vmid `{pinned}` is not a number")))?
            }
        };
        let name = i.name.clone().unwrap_or_else(|| format!("engine-{vmid}"));
        let gpu_model = match &i.gpu {
            Some(g) => {
                cx.progress("checking GPU devices", Some(5));
                gpu::check_free(&pve, &node, g, vmid).await?
            }
            None => None,
        };
        let undo = json!({"node": node, "vmid": vmid, "key": key});
        let rec = ResourceRecord { kind: KIND.into(), key: key.clone(), id: None, state: ResourceState::Intended, undo: undo.clone(), step: cx.step.clone() };
        cx.record(&rec).await?;
        let description = marker(&key);
        let (adopted, image) = match config_of(&pve, &node, vmid).await? {
            Some(cfg) if is_ours(&cfg, &key) => {
                cx.log(LogStream::Stdout, &format!("adopting VM {vmid} on {node}, made by an earlier attempt of this step"));
                // An attempt killed while its clone ran left the clone going: wait for its lock
                // to clear before configuring the VM (PVE refuses with "VM is locked (clone)").
                wait_unlocked(&pve, cx, &node, vmid, cfg, task_limit(i.task_timeout_secs)).await?;
                (true, None)
            }
            Some(cfg) => {
                let other = cfg.get("name").and_then(Value::as_str).unwrap_or("?");
                return Err(ConnectorError::conflict(format!("vmid {vmid} on {node} is already used by VM `{other}`, not made by this step")));
            }
            None => (false, None),
        };
        let mut image = image;
        if let Some(src) = i.clone {
            let tpl = pve.get(&format!("/nodes/{node}/qemu/{src}/config"), &[]).await?;
            image = Some(tpl.get("name").and_then(Value::as_str).map_or_else(|| format!("vmid:{src}"), String::from));
            if !adopted {
                cx.progress("cloning", Some(10));
                let mut form = vec![("newid", vmid.to_string()), ("name", name.clone()), ("full", "1".into()), ("description", description.clone())];
                if let Some(s) = &i.storage {
                    form.push(("storage", s.clone()));
                }
                let upid = pve.post(&format!("/nodes/{node}/qemu/{src}/clone"), &form).await?;
                pve.wait_if_task(cx, &upid, limit).await?;
            }
        } else if !adopted {
            cx.progress("creating", Some(10));
            let storage = i.storage.clone().unwrap_or_else(|| "local-lvm".into());
            let form = vec![
                ("vmid", vmid.to_string()),
                ("name", name.clone()),
                ("description", description.clone()),
                ("tags", key_tag(&key)),
                ("scsihw", "virtio-scsi-pci".into()),
                ("scsi0", format!("{storage}:{}", i.disk_gb.unwrap_or(32))),
                ("ide2", format!("{storage}:cloudinit")),
                ("agent", "1".into()),
                ("ostype", "l26".into()),
            ];
            let upid = pve.post(&format!("/nodes/{node}/qemu"), &form).await?;
            pve.wait_if_task(cx, &upid, limit).await?;
        }
        cx.confirm(rec, vmid.to_string(), undo).await?;

        cx.progress("configuring", Some(50));
        let mut form: Vec<(&str, String)> = vec![("tags", key_tag(&key))];
        if let Some(c) = i.cores {
            form.push(("cores", c.to_string()));
        }
        if let Some(m) = i.memory {
            form.push(("memory", m.to_string()));
        }
        if let Some(b) = &i.bridge {
            form.push(("net0", format!("virtio,bridge={b}")));
        }
        if let Some(u) = &i.ciuser {
            form.push(("ciuser", u.clone()));
        }
        if !i.ssh_keys.is_empty() {
            form.push(("sshkeys", uri_encode(&(i.ssh_keys.iter().map(|k| k.trim()).collect::<Vec<_>>().join("\n") + "\n"))));
        }
        if let Some(ip) = &i.ipconfig0 {
            form.push(("ipconfig0", ip.clone()));
        }
        let hostpci = i.gpu.as_ref().map(GpuPassthrough::hostpci).unwrap_or_default();
        let current = config_of(&pve, &node, vmid).await?.unwrap_or(Value::Null);
        if i.gpu.as_ref().is_some_and(|g| g.pcie) && current.get("machine").is_none() {
            form.push(("machine", "q35".into()));
        }
        for (k, v) in &hostpci {
            form.push((k.as_str(), v.clone()));
        }
        let upid = pve.post(&format!("/nodes/{node}/qemu/{vmid}/config"), &form).await?;
        pve.wait_if_task(cx, &upid, limit).await?;

        if let (Some(gb), Some(_)) = (i.disk_gb, i.clone) {
            cx.progress("resizing disk", Some(60));
            let disk = i.disk.clone().unwrap_or_else(|| "scsi0".into());
            let cfg = config_of(&pve, &node, vmid).await?.unwrap_or(Value::Null);
            let cur = cfg.get(&disk).and_then(Value::as_str).and_then(|d| d.split(',').find_map(|p| p.strip_prefix("size="))).map(String::from);
            let cur_gb = cur.as_deref().and_then(size_gb);
            if cur_gb.is_none_or(|c| c < gb as f64) {
                let upid = pve.put(&format!("/nodes/{node}/qemu/{vmid}/resize"), &[("disk", disk), ("size", format!("{gb}G"))]).await?;
                pve.wait_if_task(cx, &upid, limit).await?;
            }
        }
        if i.start {
            cx.progress("starting", Some(75));
            start(&pve, cx, &node, vmid, limit).await?;
        }
        let cfg = config_of(&pve, &node, vmid).await?.ok_or_else(|| ConnectorError::not_found(format!("VM {vmid} vanished from node {node}")))?;
        let mut ip = None;
        if i.wait_ip {
            cx.progress("waiting for the guest agent's IP", Some(90));
            ip = Some(wait_ip(&pve, cx, &node, vmid, Duration::from_secs(i.ip_timeout_secs.unwrap_or(300))).await?);
        }
        let private_ip = ip.clone().or_else(|| cfg.get("ipconfig0").and_then(Value::as_str).and_then(static_ip));
        let public_ip = ip.filter(|a| !is_private(a));
        let hostpci_set: Vec<String> = cfg
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.starts_with("hostpci"))
            .filter_map(|(_, v)| v.as_str().map(String::from))
            .collect();
        cx.progress("done", Some(100));
        Ok(CreateOutput {
            id: vmid.to_string(),
            name: cfg.get("name").and_then(Value::as_str).unwrap_or(&name).to_string(),
            provider: "proxmox".into(),
            zone: node.clone(),
            instance_type: instance_type(&cfg),
            public_ip,
            private_ip,
            image,
            gpu: (!hostpci_set.is_empty()).then(|| GpuInfo {
                model: gpu_model.unwrap_or_else(|| "unknown".into()),
                count: u32::try_from(hostpci_set.len()).unwrap_or(u32::MAX),
                memory_gb: None,
            }),
            hourly_price: None,
            ssh_user: cfg.get("ciuser").and_then(Value::as_str).unwrap_or("root").to_string(),
            vmid,
            node,
            hostpci: hostpci_set,
            adopted,
        })
    }

    async fn undo(&self, record: &ResourceRecord, cx: &StepContext) -> Result<(), ConnectorError> {
        let node = record.undo.get("node").and_then(Value::as_str);
        let vmid = num(record.undo.get("vmid")).or_else(|| record.id.as_deref().and_then(|s| s.parse().ok()));
        let (Some(node), Some(vmid)) = (node, vmid) else {
            // The intent was stored before any vmid was: nothing was made.
            return Ok(());
        };
        let key = record.undo.get("key").and_then(Value::as_str).unwrap_or(&record.key);
        let pve = Pve::from_context(cx).await?;
        let Some(cfg) = config_of(&pve, node, vmid).await? else { return Ok(()) };
        if !is_ours(&cfg, key) {
            cx.log(LogStream::Stderr, &format!("VM {vmid} on {node} was not made by this step (no tag {}): left alone", key_tag(key)));
            return Ok(());
        }
        destroy(&pve, cx, node, vmid, task_limit(None)).await
    }
}

fn size_gb(s: &str) -> Option<f64> {
    let (n, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "T" => n * 1024.0,
        "G" | "" => n,
        "M" => n / 1024.0,
        "K" => n / 1024.0 / 1024.0,
        _ => return None,
    })
}

async fn status(pve: &Pve, node: &str, vmid: u64) -> Result<String, ConnectorError> {
    let st = pve.get(&format!("/nodes/{node}/qemu/{vmid}/status/current"), &[]).await?;
    Ok(st.get("status").and_then(Value::as_str).unwrap_or("unknown").to_string())
}

async fn start(pve: &Pve, cx: &StepContext, node: &str, vmid: u64, limit: Duration) -> Result<(), ConnectorError> {
    if status(pve, node, vmid).await? == "running" {
        return Ok(());
    }
    let upid = pve.post(&format!("/nodes/{node}/qemu/{vmid}/status/start"), &[]).await?;
    pve.wait_if_task(cx, &upid, limit).await
}

async fn stop(pve: &Pve, cx: &StepContext, node: &str, vmid: u64, limit: Duration) -> Result<(), ConnectorError> {
    if status(pve, node, vmid).await? == "stopped" {
        return Ok(());
    }
    let upid = pve.post(&format!("/nodes/{node}/qemu/{vmid}/status/stop"), &[("skiplock", "1".into())]).await?;
    pve.wait_if_task(cx, &upid, limit).await
}

/// Stop (hard) and delete a VM with its disks; gone already is done.
async fn destroy(pve: &Pve, cx: &StepContext, node: &str, vmid: u64, limit: Duration) -> Result<(), ConnectorError> {
    let gone = |e: &ConnectorError| e.kind == ErrorKind::NotFound;
    match stop(pve, cx, node, vmid, limit).await {
        Err(e) if gone(&e) => return Ok(()),
        r => r?,
    }
    let q = [("purge", "1".to_string()), ("destroy-unreferenced-disks", "1".to_string())];
    match pve.delete(&format!("/nodes/{node}/qemu/{vmid}"), &q).await {
        Ok(upid) => match pve.wait_if_task(cx, &upid, limit).await {
            Err(e) if gone(&e) => Ok(()),
            r => r,
        },
        Err(e) if gone(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn wait_ip(pve: &Pve, cx: &StepContext, node: &str, vmid: u64, limit: Duration) -> Result<String, ConnectorError> {
    let start = Instant::now();
    loop {
        let last;
        match pve.get(&format!("/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces"), &[]).await {
            Ok(d) => match agent_ipv4(&d) {
                Some(ip) => return Ok(ip),
                None => last = "the agent reports no IPv4 yet".into(),
            },
            Err(e) if matches!(e.kind, ErrorKind::Auth | ErrorKind::NotFound) => return Err(e),
            Err(e) => last = e.message,
        }
        if start.elapsed() >= limit {
            return Err(ConnectorError::timeout(format!("VM {vmid}: no IPv4 from the guest agent within {}s ({last}); is qemu-guest-agent installed and `agent: 1` set?", limit.as_secs())));
        }
        cx.sleep(Duration::from_secs(2)).await?;
    }
}

/// Input of `vm.start`, `vm.stop`, `vm.delete`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmRef {
    /// VM id.
    pub vmid: u64,
    /// Node (default: the block's `node`, else the first online node).
    #[serde(default)]
    pub node: Option<String>,
    /// Limit of the task, seconds (default 1800).
    #[serde(default)]
    pub task_timeout_secs: Option<u64>,
}

/// Output of `vm.start`, `vm.stop`, `vm.delete`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct VmState {
    /// VM id.
    pub vmid: u64,
    /// Node.
    pub node: String,
    /// `running`, `stopped`, or `deleted`.
    pub status: String,
    /// For `vm.delete`: whether the VM existed.
    pub existed: bool,
}

/// `proxmox.vm.start`.
#[derive(Debug, Clone, Copy, Default)]
pub struct VmStart;
/// `proxmox.vm.stop`.
#[derive(Debug, Clone, Copy, Default)]
pub struct VmStop;
/// `proxmox.vm.delete`.
#[derive(Debug, Clone, Copy, Default)]
pub struct VmDelete;

#[async_trait]
impl Action for VmStart {
    const ID: &'static str = "proxmox.vm.start";
    const DESCRIPTION: &'static str = "Start a VM and wait for the task";
    type Input = VmRef;
    type Output = VmState;
    async fn run(&self, i: VmRef, cx: &StepContext) -> Result<VmState, ConnectorError> {
        let pve = Pve::from_context(cx).await?;
        let node = pve.node(i.node.as_deref()).await?;
        start(&pve, cx, &node, i.vmid, task_limit(i.task_timeout_secs)).await?;
        Ok(VmState { vmid: i.vmid, status: status(&pve, &node, i.vmid).await?, node, existed: true })
    }
}

#[async_trait]
impl Action for VmStop {
    const ID: &'static str = "proxmox.vm.stop";
    const DESCRIPTION: &'static str = "Stop a VM (hard stop) and wait for the task";
    type Input = VmRef;
    type Output = VmState;
    async fn run(&self, i: VmRef, cx: &StepContext) -> Result<VmState, ConnectorError> {
        let pve = Pve::from_context(cx).await?;
        let node = pve.node(i.node.as_deref()).await?;
        stop(&pve, cx, &node, i.vmid, task_limit(i.task_timeout_secs)).await?;
        Ok(VmState { vmid: i.vmid, status: status(&pve, &node, i.vmid).await?, node, existed: true })
    }
}

#[async_trait]
impl Action for VmDelete {
    const ID: &'static str = "proxmox.vm.delete";
    const DESCRIPTION: &'static str = "Stop and delete a VM with its disks (purge); a VM already gone is fine";
    type Input = VmRef;
    type Output = VmState;
    async fn run(&self, i: VmRef, cx: &StepContext) -> Result<VmState, ConnectorError> {
        let pve = Pve::from_context(cx).await?;
        let node = pve.node(i.node.as_deref()).await?;
        let existed = config_of(&pve, &node, i.vmid).await?.is_some();
        if existed {
            destroy(&pve, cx, &node, i.vmid, task_limit(i.task_timeout_secs)).await?;
        }
        Ok(VmState { vmid: i.vmid, node, status: "deleted".into(), existed })
    }
}

/// `proxmox.task.wait` input.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskWaitInput {
    /// `UPID:node:...`.
    pub upid: String,
    /// Limit, seconds (default 1800).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// `proxmox.task.wait` output.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TaskWaitOutput {
    /// The task.
    pub upid: String,
    /// `OK` or `WARNINGS: n`.
    pub exitstatus: String,
}

/// `proxmox.task.wait`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TaskWait;

#[async_trait]
impl Action for TaskWait {
    const ID: &'static str = "proxmox.task.wait";
    const DESCRIPTION: &'static str = "Wait for a Proxmox task (UPID); a failed task is an error with its log tail";
    type Input = TaskWaitInput;
    type Output = TaskWaitOutput;
    fn validate(&self, i: &TaskWaitInput) -> Result<(), ConnectorError> {
        crate::client::upid_node(&i.upid).map(|_| ()).ok_or_else(|| ConnectorError::invalid(format!("`{}` is not a Proxmox task id (UPID:node:...)", i.upid)))
    }
    async fn run(&self, i: TaskWaitInput, cx: &StepContext) -> Result<TaskWaitOutput, ConnectorError> {
        let pve = Pve::from_context(cx).await?;
        let exitstatus = pve.wait_task(cx, &i.upid, task_limit(i.timeout_secs)).await?;
        Ok(TaskWaitOutput { upid: i.upid, exitstatus })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(instance_type(&json!({"cores": 4, "memory": "8192"})), "4c-8g");
        assert_eq!(instance_type(&json!({"cores": 2, "memory": 1536})), "2c-1.5g");
        assert!(key_tag("run/step").starts_with("engine-") && key_tag("run/step").len() == 23);
        assert_ne!(key_tag("run/a"), key_tag("run/b"));
        assert!(is_ours(&json!({"tags": format!("x;{}", key_tag("r/s"))}), "r/s"));
        assert!(is_ours(&json!({"description": "engine-key: r/s\n"}), "r/s"));
        assert!(!is_ours(&json!({"description": "engine-key: r/t"}), "r/s"));
        assert_eq!(static_ip("ip=10.0.0.5/24,gw=10.0.0.1").as_deref(), Some("10.0.0.5"));
        assert_eq!(static_ip("ip=dhcp"), None);
        assert_eq!(size_gb("10G"), Some(10.0));
        assert!(is_private("192.0.2.10") && is_private("10.1.2.3") && !is_private("8.8.8.8"));
    }
}
