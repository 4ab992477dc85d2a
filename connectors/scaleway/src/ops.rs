//! Calls shared by the actions: products and availability, marketplace images, servers by
//! tag, server actions and state waits, Block API resize, security group rules, IPs, and the
//! cleanup that `server.delete` and undo share.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use engine_connector::{ConnectorError, ErrorKind, LogStream, StepContext};
use serde::{Deserialize, Serialize};
use schemars::JsonSchema;
use serde_json::{json, Value};

use crate::catalog;
use crate::client::Scw;
use crate::error::Error;

/// Tag prefix holding the step's idempotency key.
pub const TAG_KEY: &str = "engine:key=";
/// Tag prefix holding the run id.
pub const TAG_RUN: &str = "engine:run=";
/// Tag prefix holding the step id.
pub const TAG_STEP: &str = "engine:step=";
/// Tag prefix marking a port whose security group rule this step added (`engine:port=8000`).
pub const TAG_PORT: &str = "engine:port=";
/// Bytes in a GB as Scaleway counts them.
pub const GB: u64 = 1_000_000_000;

/// The engine's tags for what a step creates.
#[must_use]
pub fn engine_tags(cx: &StepContext) -> Vec<String> {
    vec![format!("{TAG_RUN}{}", cx.run_id), format!("{TAG_STEP}{}", cx.step.step), format!("{TAG_KEY}{}", cx.idempotency_key())]
}

/// GPUs of a server (the common outputs).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct GpuInfo {
    /// `NVIDIA L4`.
    pub model: String,
    /// GPUs.
    pub count: u32,
    /// Memory of one GPU, GiB (the API gives bytes).
    pub memory_gb: u32,
}

/// One commercial type as the products endpoint describes it.
#[derive(Debug, Clone)]
pub struct Product {
    /// € per hour.
    pub hourly_price: Option<f64>,
    /// GPUs, if any.
    pub gpu: Option<GpuInfo>,
    /// vCPUs.
    pub ncpus: Option<u64>,
    /// RAM, bytes.
    pub ram: Option<u64>,
}

/// Parses one `ServerType` of `GET /products/servers`.
#[must_use]
pub fn parse_product(name: &str, v: &Value) -> Product {
    #[allow(clippy::cast_possible_truncation)]
    let count = v.get("gpu").and_then(Value::as_u64).unwrap_or(0) as u32;
    let info = v.get("gpu_info").filter(|i| i.is_object());
    let gpu = (count > 0).then(|| {
        let table = catalog::by_type(name);
        let model = info
            .and_then(|i| {
                let m = i.get("gpu_manufacturer").and_then(Value::as_str).unwrap_or_default();
                let n = i.get("gpu_name").and_then(Value::as_str).unwrap_or_default();
                (!n.is_empty()).then(|| if m.is_empty() { n.to_string() } else { format!("{m} {n}") })
            })
            .or_else(|| table.map(|t| t.model.to_string()))
            .unwrap_or_else(|| "unknown".into());
        #[allow(clippy::cast_possible_truncation)]
        let memory_gb = info.and_then(|i| i.get("gpu_memory")).and_then(Value::as_u64).map(|b| ((b + (1 << 29)) >> 30) as u32).or_else(|| table.map(|t| t.memory_gb)).unwrap_or(0);
        GpuInfo { model, count, memory_gb }
    });
    Product { hourly_price: v.get("hourly_price").and_then(Value::as_f64), gpu, ncpus: v.get("ncpus").and_then(Value::as_u64), ram: v.get("ram").and_then(Value::as_u64) }
}

/// Every commercial type the zone offers (`GET /products/servers`, all pages).
///
/// # Errors
/// Classified API errors.
pub async fn products(scw: &Scw, cx: &StepContext) -> Result<BTreeMap<String, Value>, ConnectorError> {
    let mut out = BTreeMap::new();
    for page in 1..=20u32 {
        let v = scw.get(cx, &scw.instance("/products/servers"), &[("per_page", "100".into()), ("page", page.to_string())]).await?;
        let servers = v.get("servers").and_then(Value::as_object).cloned().unwrap_or_default();
        let n = servers.len();
        out.extend(servers);
        let total = v.get("total_count").and_then(Value::as_u64).unwrap_or(0);
        if n == 0 || out.len() as u64 >= total {
            break;
        }
    }
    Ok(out)
}

/// Stock per commercial type (`GET /products/servers/availability`): `available`, `scarce`, `shortage`.
///
/// # Errors
/// Classified API errors.
pub async fn availability(scw: &Scw, cx: &StepContext) -> Result<BTreeMap<String, String>, ConnectorError> {
    let mut out = BTreeMap::new();
    for page in 1..=20u32 {
        let v = scw.get(cx, &scw.instance("/products/servers/availability"), &[("per_page", "100".into()), ("page", page.to_string())]).await?;
        let servers = v.get("servers").and_then(Value::as_object).cloned().unwrap_or_default();
        let n = servers.len();
        for (k, a) in servers {
            out.insert(k, a.get("availability").and_then(Value::as_str).unwrap_or("unknown").to_string());
        }
        let total = v.get("total_count").and_then(Value::as_u64).unwrap_or(0);
        if n == 0 || out.len() as u64 >= total {
            break;
        }
    }
    Ok(out)
}

/// The zones among [`catalog::ZONES`] (other than `except`) whose products include `commercial_type`;
/// zones that cannot be asked are skipped.
pub async fn zones_offering(scw: &Scw, cx: &StepContext, commercial_type: &str, except: &str) -> Vec<String> {
    let mut out = Vec::new();
    for z in catalog::ZONES.iter().filter(|z| **z != except) {
        if let Ok(p) = products(&scw.in_zone(z), cx).await {
            if p.contains_key(commercial_type) {
                out.push((*z).to_string());
            }
        }
    }
    out
}

/// One marketplace local image.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct LocalImage {
    /// Image id to create servers with.
    pub id: String,
    /// Marketplace label.
    pub label: String,
    /// Zone.
    pub zone: String,
    /// `instance_sbs` or `instance_local`.
    #[serde(rename = "type")]
    pub image_type: String,
    /// `x86_64` or `arm64`.
    pub arch: String,
    /// Commercial types it runs on.
    pub compatible_commercial_types: Vec<String>,
}

/// The `instance_sbs` local images of `label` in the zone (`GET /marketplace/v2/local-images`).
///
/// # Errors
/// Classified API errors.
pub async fn local_images(scw: &Scw, cx: &StepContext, label: &str) -> Result<Vec<LocalImage>, ConnectorError> {
    let v = scw
        .get(cx, "/marketplace/v2/local-images", &[("image_label", label.to_string()), ("zone", scw.zone().to_string()), ("type", "instance_sbs".into()), ("page_size", "100".into())])
        .await?;
    let list = v.get("local_images").and_then(Value::as_array).cloned().unwrap_or_default();
    Ok(list
        .iter()
        .map(|i| LocalImage {
            id: str_of(i, "id"),
            label: i.get("label").and_then(Value::as_str).unwrap_or(label).to_string(),
            zone: i.get("zone").and_then(Value::as_str).unwrap_or(scw.zone()).to_string(),
            image_type: str_of(i, "type"),
            arch: str_of(i, "arch"),
            compatible_commercial_types: i.get("compatible_commercial_types").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect()).unwrap_or_default(),
        })
        .filter(|i| !i.id.is_empty() && (i.image_type.is_empty() || i.image_type == "instance_sbs"))
        .collect())
}

/// Resolves a seed-000 image name (or any marketplace label) to the zone's image for the type.
///
/// # Errors
/// `invalid` naming what was tried when nothing fits; API errors.
pub async fn resolve_image(scw: &Scw, cx: &StepContext, image: &str, commercial_type: Option<&str>) -> Result<(LocalImage, Vec<LocalImage>), ConnectorError> {
    let mut tried = Vec::new();
    for label in catalog::label_candidates(image) {
        let all = local_images(scw, cx, &label).await?;
        let fits: Vec<LocalImage> = all.iter().filter(|i| commercial_type.is_none_or(|t| i.compatible_commercial_types.is_empty() || i.compatible_commercial_types.iter().any(|c| c == t))).cloned().collect();
        if let Some(first) = fits.first() {
            return Ok((first.clone(), all));
        }
        tried.push(if all.is_empty() { format!("`{label}`: no instance_sbs image") } else { format!("`{label}`: no image compatible with {}", commercial_type.unwrap_or("?")) });
    }
    Err(ConnectorError::invalid(format!(
        "could not get image '{}/{image}'{}: {}; give `image:` (an image id) or set SCW_INSTANCE_IMAGE",
        scw.zone(),
        commercial_type.map(|t| format!(" for commercial type {t}")).unwrap_or_default(),
        tried.join("; ")
    )))
}

/// A string field, or empty.
#[must_use]
pub fn str_of(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or_default().to_string()
}

/// Whether `s` looks like a Scaleway UUID.
#[must_use]
pub fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5 && parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12]) && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// The servers carrying `tag` exactly.
///
/// # Errors
/// Classified API errors.
pub async fn servers_by_tag(scw: &Scw, cx: &StepContext, tag: &str) -> Result<Vec<Value>, ConnectorError> {
    let v = scw.get(cx, &scw.instance("/servers"), &[("tags", tag.to_string()), ("per_page", "100".into())]).await?;
    Ok(v.get("servers").and_then(Value::as_array).cloned().unwrap_or_default().into_iter().filter(|s| tags_of(s).iter().any(|t| t == tag)).collect())
}

/// A server's tags.
#[must_use]
pub fn tags_of(v: &Value) -> Vec<String> {
    v.get("tags").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect()).unwrap_or_default()
}

/// A server, or `None` when it is gone.
///
/// # Errors
/// Classified API errors other than not-found.
pub async fn get_server(scw: &Scw, cx: &StepContext, id: &str) -> Result<Option<Value>, ConnectorError> {
    match scw.get(cx, &scw.instance(&format!("/servers/{id}")), &[]).await {
        Ok(v) => Ok(v.get("server").cloned()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `POST /servers/ID/action`.
///
/// # Errors
/// Classified API errors (`capacity` for an out-of-stock poweron).
pub async fn server_action(scw: &Scw, cx: &StepContext, id: &str, action: &str) -> Result<(), Error> {
    scw.post(cx, &scw.instance(&format!("/servers/{id}/action")), &json!({ "action": action })).await.map(|_| ())
}

/// The delay before poll number `n`: short at first (fast emulators, quick transitions),
/// then every 5 s.
#[must_use]
pub fn poll_delay(n: u32) -> Duration {
    Duration::from_millis((100u64 << n.min(6)).min(5000))
}

/// Waits until the server is in state `want`; `None` when it is gone (for `want == "gone"`).
///
/// # Errors
/// `timeout`, `cancelled`, API errors; a server that is gone while waiting for another state is `not_found`.
pub async fn wait_server(scw: &Scw, cx: &StepContext, id: &str, want: &str, timeout: Duration) -> Result<Option<Value>, ConnectorError> {
    let start = Instant::now();
    let mut n = 0;
    loop {
        let s = get_server(scw, cx, id).await?;
        match (&s, want) {
            (None, "gone") => return Ok(None),
            (None, _) => return Err(ConnectorError::not_found(format!("server {id} disappeared while waiting for it to be {want}"))),
            (Some(v), w) if v.get("state").and_then(Value::as_str) == Some(w) => return Ok(s),
            _ => {}
        }
        if start.elapsed() > timeout {
            let state = s.as_ref().map(|v| str_of(v, "state")).unwrap_or_default();
            return Err(ConnectorError::timeout(format!("server {id} is still {state} after {}s, waiting for {want}", timeout.as_secs())));
        }
        cx.sleep(poll_delay(n)).await?;
        n += 1;
    }
}

/// The server's SBS boot volume: `(id, volume_type)` of the boot volume (volume `0`, or the one marked `boot`).
#[must_use]
pub fn boot_volume(server: &Value) -> Option<(String, String)> {
    let vols = server.get("volumes")?.as_object()?;
    let pick = vols.get("0").or_else(|| vols.values().find(|v| v.get("boot").and_then(Value::as_bool) == Some(true))).or_else(|| vols.values().find(|v| str_of(v, "volume_type") == "sbs_volume"))?;
    Some((str_of(pick, "id"), str_of(pick, "volume_type")))
}

/// All volumes attached to a server: `(id, volume_type)`.
#[must_use]
pub fn volumes_of(server: &Value) -> Vec<(String, String)> {
    server.get("volumes").and_then(Value::as_object).map(|m| m.values().map(|v| (str_of(v, "id"), str_of(v, "volume_type"))).filter(|(id, _)| !id.is_empty()).collect()).unwrap_or_default()
}

/// A Block API volume, or `None` when it is gone.
///
/// # Errors
/// Classified API errors other than not-found.
pub async fn get_volume(scw: &Scw, cx: &StepContext, id: &str) -> Result<Option<Value>, ConnectorError> {
    match scw.get(cx, &scw.block(&format!("/volumes/{id}")), &[]).await {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Size of a Block API volume in GB.
#[must_use]
pub fn size_gb(volume: &Value) -> u64 {
    volume.get("size").and_then(Value::as_u64).unwrap_or(0) / GB
}

/// Grows a Block API volume to `gb` and waits until the resize is over (status back to
/// `available` or `in_use` at the new size). Grow only.
///
/// # Errors
/// `invalid` to shrink, `not_found`, `timeout`, API errors.
pub async fn resize_volume(scw: &Scw, cx: &StepContext, id: &str, gb: u64, timeout: Duration) -> Result<(u64, Value), ConnectorError> {
    let v = get_volume(scw, cx, id).await?.ok_or_else(|| ConnectorError::not_found(format!("block volume {id} not found in {}", scw.zone())))?;
    let before = size_gb(&v);
    if gb < before {
        return Err(ConnectorError::invalid(format!("block volume {id} is {before} GB; a volume can only grow, not shrink to {gb} GB")));
    }
    if gb > before {
        scw.patch(cx, &scw.block(&format!("/volumes/{id}")), &json!({ "size": gb * GB })).await?;
    }
    let start = Instant::now();
    let mut n = 0;
    loop {
        let v = get_volume(scw, cx, id).await?.ok_or_else(|| ConnectorError::not_found(format!("block volume {id} disappeared during its resize")))?;
        let status = str_of(&v, "status");
        if size_gb(&v) >= gb && matches!(status.as_str(), "available" | "in_use") {
            return Ok((before, v));
        }
        if status == "error" {
            return Err(ConnectorError::transient(format!("block volume {id} went to status error while growing to {gb} GB")));
        }
        if start.elapsed() > timeout {
            return Err(ConnectorError::timeout(format!("block volume {id} is still {status} at {} GB after {}s (growing to {gb} GB)", size_gb(&v), timeout.as_secs())));
        }
        cx.sleep(poll_delay(n)).await?;
        n += 1;
    }
}

/// Deletes a Block API volume once it is detached; gone counts as done. Returns whether it deleted it.
///
/// # Errors
/// `timeout` when it stays attached, API errors.
pub async fn delete_volume(scw: &Scw, cx: &StepContext, id: &str, timeout: Duration) -> Result<bool, ConnectorError> {
    let start = Instant::now();
    let mut n = 0;
    loop {
        let Some(v) = get_volume(scw, cx, id).await? else { return Ok(false) };
        let status = str_of(&v, "status");
        if matches!(status.as_str(), "available" | "error") {
            return match scw.delete(cx, &scw.block(&format!("/volumes/{id}"))).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
                Err(e) if e.kind() == ErrorKind::Conflict && start.elapsed() < timeout => {
                    cx.sleep(poll_delay(n)).await?;
                    n += 1;
                    continue;
                }
                Err(e) => Err(e.into()),
            };
        }
        if matches!(status.as_str(), "deleting" | "deleted") {
            return Ok(true);
        }
        if start.elapsed() > timeout {
            return Err(ConnectorError::timeout(format!("block volume {id} is still {status} after {}s; cannot delete it", timeout.as_secs())));
        }
        cx.sleep(poll_delay(n)).await?;
        n += 1;
    }
}

/// Whether a rule opens TCP `port` inbound to `ip_range`.
#[must_use]
pub fn rule_opens(rule: &Value, port: u16, ip_range: &str) -> bool {
    let from = rule.get("dest_port_from").and_then(Value::as_u64);
    let to = rule.get("dest_port_to").and_then(Value::as_u64).or(from);
    str_of(rule, "protocol").eq_ignore_ascii_case("tcp")
        && str_of(rule, "direction") == "inbound"
        && str_of(rule, "action") == "accept"
        && (str_of(rule, "ip_range") == ip_range || (ip_range == "0.0.0.0/0" && str_of(rule, "ip_range") == "0.0.0.0/0"))
        && from.is_some_and(|f| f <= u64::from(port))
        && to.is_some_and(|t| t >= u64::from(port))
}

/// The rules of a security group.
///
/// # Errors
/// Classified API errors.
pub async fn rules(scw: &Scw, cx: &StepContext, group: &str) -> Result<Vec<Value>, ConnectorError> {
    let mut out = Vec::new();
    for page in 1..=20u32 {
        let v = scw.get(cx, &scw.instance(&format!("/security_groups/{group}/rules")), &[("per_page", "100".into()), ("page", page.to_string())]).await?;
        let list = v.get("rules").and_then(Value::as_array).cloned().unwrap_or_default();
        let n = list.len();
        out.extend(list);
        let total = v.get("total_count").and_then(Value::as_u64).unwrap_or(0);
        if n == 0 || out.len() as u64 >= total {
            break;
        }
    }
    Ok(out)
}

/// The ports of `ports` that no rule of `existing` opens.
#[must_use]
pub fn missing_ports(existing: &[Value], ports: &[u16], ip_range: &str) -> Vec<u16> {
    let mut out: Vec<u16> = ports.iter().copied().filter(|p| !existing.iter().any(|r| rule_opens(r, *p, ip_range))).collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// A rule this connector added.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct AddedRule {
    /// TCP port.
    pub port: u16,
    /// Rule id.
    pub id: String,
}

/// Adds an inbound TCP accept rule for each of `ports` (already known to be missing).
///
/// # Errors
/// Classified API errors.
pub async fn add_rules(scw: &Scw, cx: &StepContext, group: &str, ports: &[u16], ip_range: &str) -> Result<Vec<AddedRule>, ConnectorError> {
    let mut out = Vec::new();
    for p in ports {
        let body = json!({ "protocol": "TCP", "direction": "inbound", "action": "accept", "ip_range": ip_range, "dest_port_from": p, "editable": true });
        let v = scw.post(cx, &scw.instance(&format!("/security_groups/{group}/rules")), &body).await?;
        let id = v.get("rule").map(|r| str_of(r, "id")).unwrap_or_default();
        out.push(AddedRule { port: *p, id });
    }
    Ok(out)
}

/// Deletes rules by id, and for `ports` without a known id, the rule that opens that port
/// only (`dest_port_from == port`) to `ip_range`. Gone counts as done. Returns how many it deleted.
///
/// # Errors
/// Classified API errors.
pub async fn delete_rules(scw: &Scw, cx: &StepContext, group: &str, ids: &[String], ports: &[u16], ip_range: &str) -> Result<usize, ConnectorError> {
    let current = match rules(scw, cx, group).await {
        Ok(r) => r,
        Err(e) if e.kind == ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut targets: Vec<String> = ids.iter().filter(|id| current.iter().any(|r| &str_of(r, "id") == *id)).cloned().collect();
    for p in ports {
        if let Some(r) = current.iter().find(|r| {
            let id = str_of(r, "id");
            !targets.contains(&id) && rule_opens(r, *p, ip_range) && r.get("dest_port_from").and_then(Value::as_u64) == Some(u64::from(*p)) && r.get("dest_port_to").and_then(Value::as_u64).is_none_or(|t| t == u64::from(*p))
        }) {
            targets.push(str_of(r, "id"));
        }
    }
    let mut n = 0;
    for id in targets {
        match scw.delete(cx, &scw.instance(&format!("/security_groups/{group}/rules/{id}"))).await {
            Ok(_) => n += 1,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(n)
}

/// The flexible IPs carrying `tag`.
///
/// # Errors
/// Classified API errors.
pub async fn ips_by_tag(scw: &Scw, cx: &StepContext, tag: &str) -> Result<Vec<Value>, ConnectorError> {
    let v = scw.get(cx, &scw.instance("/ips"), &[("tags", tag.to_string()), ("per_page", "100".into())]).await?;
    Ok(v.get("ips").and_then(Value::as_array).cloned().unwrap_or_default().into_iter().filter(|s| tags_of(s).iter().any(|t| t == tag)).collect())
}

/// The server's first public IPv4 address.
#[must_use]
pub fn public_ipv4(server: &Value) -> Option<String> {
    let from_list = server.get("public_ips").and_then(Value::as_array).and_then(|a| a.iter().find(|i| str_of(i, "family") != "inet6").map(|i| str_of(i, "address")));
    from_list.or_else(|| server.get("public_ip").map(|i| str_of(i, "address"))).filter(|a| !a.is_empty())
}

/// The server's private IPv4, if it has one.
#[must_use]
pub fn private_ip(server: &Value) -> Option<String> {
    server.get("private_ip").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string)
}

/// What [`cleanup`] removed.
#[derive(Debug, Default, Clone, Serialize, JsonSchema)]
pub struct Cleanup {
    /// Servers deleted.
    pub servers: Vec<String>,
    /// Block volumes deleted.
    pub volumes: Vec<String>,
    /// Flexible IPs released.
    pub ips: Vec<String>,
    /// Security group rules deleted.
    pub rules: usize,
}

impl Cleanup {
    /// Whether nothing was there to remove.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty() && self.volumes.is_empty() && self.ips.is_empty() && self.rules == 0
    }
}

/// Stops (if needed) and deletes a server, then its block volumes (when `volumes`), the
/// rules it was tagged as having added (`engine:port=N`), and `ips`. Gone counts as done.
///
/// # Errors
/// `timeout`, `conflict` for a locked server, API errors.
pub async fn cleanup(scw: &Scw, cx: &StepContext, server_id: &str, extra_volumes: &[String], volumes: bool, ips: &[String], timeout: Duration) -> Result<Cleanup, ConnectorError> {
    let mut done = Cleanup::default();
    let mut vols: Vec<String> = extra_volumes.to_vec();
    if let Some(s) = get_server(scw, cx, server_id).await? {
        for (id, ty) in volumes_of(&s) {
            if (ty == "sbs_volume" || ty.is_empty()) && !vols.contains(&id) {
                vols.push(id);
            }
        }
        // Rules first: the tags that say which ones are ours live on the server.
        let ports: Vec<u16> = tags_of(&s).iter().filter_map(|t| t.strip_prefix(TAG_PORT)).filter_map(|p| p.parse().ok()).collect();
        let group = s.get("security_group").map(|g| str_of(g, "id")).unwrap_or_default();
        if !ports.is_empty() && !group.is_empty() {
            done.rules = delete_rules(scw, cx, &group, &[], &ports, "0.0.0.0/0").await?;
        }
        let mut state = str_of(&s, "state");
        if state == "locked" {
            return Err(ConnectorError::conflict(format!("server {server_id} is locked by Scaleway; it cannot be deleted now")));
        }
        if matches!(state.as_str(), "starting" | "stopping") {
            let settle = if state == "starting" { "running" } else { "stopped" };
            if wait_server(scw, cx, server_id, settle, timeout).await.is_ok() {
                state = settle.to_string();
            }
        }
        if state == "running" {
            match server_action(scw, cx, server_id, "poweroff").await {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
            wait_server(scw, cx, server_id, "stopped", timeout).await?;
        }
        match scw.delete(cx, &scw.instance(&format!("/servers/{server_id}"))).await {
            Ok(_) => done.servers.push(server_id.to_string()),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        wait_server(scw, cx, server_id, "gone", timeout).await?;
    }
    if volumes {
        for v in vols {
            if delete_volume(scw, cx, &v, timeout).await? {
                done.volumes.push(v);
            }
        }
    }
    for ip in ips {
        match scw.delete(cx, &scw.instance(&format!("/ips/{ip}"))).await {
            Ok(_) => done.ips.push(ip.clone()),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    if !done.is_empty() {
        cx.log(LogStream::Stdout, &format!("deleted server(s) {:?}, volume(s) {:?}, IP(s) {:?}, {} rule(s)", done.servers, done.volumes, done.ips, done.rules));
    }
    Ok(done)
}

/// The server's security group id.
#[must_use]
pub fn server_group(server: &Value) -> Option<String> {
    server.get("security_group").map(|g| str_of(g, "id")).filter(|s| !s.is_empty())
}

/// Deletes volumes and IPs left without a server (a create that failed half-way, or an
/// undo that was interrupted). Gone counts as done.
///
/// # Errors
/// `timeout`, API errors.
pub async fn cleanup_orphans(scw: &Scw, cx: &StepContext, volumes: &[String], ips: &[String], timeout: Duration) -> Result<Cleanup, ConnectorError> {
    let mut done = Cleanup::default();
    for v in volumes {
        if delete_volume(scw, cx, v, timeout).await? {
            done.volumes.push(v.clone());
        }
    }
    for ip in ips {
        match scw.delete(cx, &scw.instance(&format!("/ips/{ip}"))).await {
            Ok(_) => done.ips.push(ip.clone()),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_products_of_the_sdk_shape() {
        let v = json!({"hourly_price": 0.75, "monthly_price": 547.5, "ncpus": 8, "ram": 51_539_607_552u64, "arch": "x86_64", "gpu": 1,
            "gpu_info": {"gpu_manufacturer": "NVIDIA", "gpu_name": "L4", "gpu_memory": 25_769_803_776u64}});
        let p = parse_product("L4-1-24G", &v);
        assert_eq!(p.hourly_price, Some(0.75));
        assert_eq!(p.gpu, Some(GpuInfo { model: "NVIDIA L4".into(), count: 1, memory_gb: 24 }));
        let p = parse_product("DEV1-S", &json!({"hourly_price": 0.01, "gpu": 0}));
        assert!(p.gpu.is_none());
        let p = parse_product("H100-1-80G", &json!({"hourly_price": 2.73, "gpu": 1}));
        assert_eq!(p.gpu.unwrap().memory_gb, 80);
    }

    #[test]
    fn rules_and_missing_ports() {
        let existing = vec![
            json!({"id": "a", "protocol": "TCP", "direction": "inbound", "action": "accept", "ip_range": "0.0.0.0/0", "dest_port_from": 22, "dest_port_to": null}),
            json!({"id": "b", "protocol": "TCP", "direction": "inbound", "action": "accept", "ip_range": "0.0.0.0/0", "dest_port_from": 8000, "dest_port_to": 8010}),
            json!({"id": "c", "protocol": "TCP", "direction": "inbound", "action": "drop", "ip_range": "0.0.0.0/0", "dest_port_from": 8080}),
            json!({"id": "d", "protocol": "UDP", "direction": "inbound", "action": "accept", "ip_range": "0.0.0.0/0", "dest_port_from": 9000}),
        ];
        assert_eq!(missing_ports(&existing, &[22, 8000, 8005, 8080, 9000, 22], "0.0.0.0/0"), vec![8080, 9000]);
        assert_eq!(missing_ports(&existing, &[22], "10.0.0.0/8"), vec![22]);
    }

    #[test]
    fn server_parts() {
        let s = json!({"volumes": {"0": {"id": "v0", "volume_type": "sbs_volume", "boot": true}, "1": {"id": "v1", "volume_type": "sbs_volume"}},
            "public_ips": [{"address": "2001:db8::1", "family": "inet6"}, {"address": "51.15.0.1", "family": "inet"}], "private_ip": null});
        assert_eq!(boot_volume(&s), Some(("v0".into(), "sbs_volume".into())));
        assert_eq!(volumes_of(&s).len(), 2);
        assert_eq!(public_ipv4(&s).as_deref(), Some("51.15.0.1"));
        assert_eq!(private_ip(&s), None);
        assert_eq!(public_ipv4(&json!({"public_ip": {"address": "1.2.3.4"}})).as_deref(), Some("1.2.3.4"));
        assert!(is_uuid("5c3d28db-33ce-4997-8572-f49506339283"));
        assert!(!is_uuid("gpu-os-12"));
        assert_eq!(poll_delay(0), Duration::from_millis(100));
        assert_eq!(poll_delay(20), Duration::from_secs(5));
    }
}
