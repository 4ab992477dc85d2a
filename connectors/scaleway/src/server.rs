//! `scaleway.server.create` and `scaleway.server.delete`.
//!
//! ## What it does
//! `create` runs seed 002's validated sequence, reporting its stages:
//!
//! | % | stage | what |
//! |---|---|---|
//! | 0 | `REQUEST_CREATE` | inputs checked; the image picked (`image:`, `SCW_INSTANCE_IMAGE`, else seed 000's table resolved through the Marketplace API); the type checked against the zone's products (a type the zone lacks is `invalid`, naming the zones that have it) |
//! | 20 | `PROVIDER_CREATE` | intent recorded, then `POST /servers` with the image only (no `volumes`: Scaleway makes a 20 GB SBS boot volume from the image's snapshot), `dynamic_ip_required: true`, `boot_type: local`, tags `engine:run=…`, `engine:step=…`, `engine:key=…`; the server is confirmed at once |
//! | 25 | `PROVIDER_VOLUME_RESIZE` | the boot volume grown to `root_volume_gb` through the Block API, waiting until the resize is over, before the first start |
//! | 30 | `PROVIDER_START` | `poweron`, then wait for `running` |
//! | 40 | `PROVIDER_GET_IP` | the public IPv4 |
//! | 45 | `PROVIDER_SECURITY_GROUP` | `open_ports` opened in the server's security group (only the missing rules are added; each is first tagged on the server as `engine:port=N`, so undo removes exactly those) |
//! | 50 | `WORKER_SSH_ACCESSIBLE` | with `wait_ssh: true`, TCP port 22 answers |
//! | 100 | `ready` | |
//!
//! A retry or a resumed run finds the server tagged with its key and carries on from where it
//! is (volume already grown, already running...): never a second server.
//! ## Undo
//! Removes the rules it added, powers the server off, deletes it, its block volumes and the
//! flexible IP it allocated (`flexible_ip: true`). Gone counts as done; a record whose create was
//! never confirmed is found by its tag.
//! ## Errors
//! `capacity` (out of stock at create or poweron: the server is cleaned up), `quota`, `invalid`
//! (bad inputs, type not offered in the zone, no image), `auth`, `transient`, `timeout`, `conflict`.
//! ## Example
//! `uses: scaleway.server.create` `with: {zone: fr-par-2, commercial_type: L4-1-24G, open_ports: [22, 8000, 8080], wait_ssh: true}`

use std::time::{Duration, Instant};

use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, ErrorKind, LogStream, ResourceRecord, StepContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::catalog;
use crate::client::Scw;
use crate::ops::{self, AddedRule, Cleanup, GpuInfo, TAG_KEY, TAG_PORT};

/// The kind of resource `scaleway.server.create` records.
pub const KIND: &str = "scaleway.server";
/// The smallest root volume seed 002 accepts (Docker, vLLM, models, logs).
pub const MIN_ROOT_GB: u64 = 150;

/// Input of `scaleway.server.create`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInput {
    /// Zone (default: the connector's).
    #[serde(default)]
    pub zone: Option<String>,
    /// Commercial type (`L4-1-24G`, `H100-1-80G`, `DEV1-M`).
    #[serde(alias = "instance_type")]
    pub commercial_type: String,
    /// Server name (default `engine-STEP`).
    #[serde(default)]
    pub name: Option<String>,
    /// Image id or marketplace label; default `SCW_INSTANCE_IMAGE`, else seed 000's pick for the type.
    #[serde(default)]
    pub image: Option<String>,
    /// Size of the boot block volume, GB (default 200, at least 150).
    #[serde(default = "default_root")]
    pub root_volume_gb: u64,
    /// TCP ports to open in the server's security group (default `[22]`).
    #[serde(default = "default_ports")]
    pub open_ports: Vec<u16>,
    /// Source of the opened ports (default `0.0.0.0/0`).
    #[serde(default = "default_range")]
    pub ip_range: String,
    /// A security group for the server (default: the project's default group).
    #[serde(default)]
    pub security_group_id: Option<String>,
    /// Allocate a flexible IP for the server (released by undo) instead of a dynamic one.
    #[serde(default)]
    pub flexible_ip: bool,
    /// Wait until TCP port 22 of the public IP answers.
    #[serde(default)]
    pub wait_ssh: bool,
    /// Seconds to wait for SSH (default 180).
    #[serde(default = "default_ssh_timeout")]
    pub ssh_timeout: u64,
    /// Seconds to wait for each transition (default 900).
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    /// Tags of your own.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Project (default: the connector's).
    #[serde(default)]
    pub project_id: Option<String>,
}

fn default_root() -> u64 {
    200
}
fn default_ports() -> Vec<u16> {
    vec![22]
}
fn default_range() -> String {
    "0.0.0.0/0".into()
}
fn default_ssh_timeout() -> u64 {
    180
}
fn default_timeout() -> u64 {
    900
}

/// Output of `scaleway.server.create`: the common server outputs plus Scaleway's own.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CreateOutput {
    /// Server id.
    pub id: String,
    /// Server name.
    pub name: String,
    /// `scaleway`.
    pub provider: String,
    /// Zone.
    pub zone: String,
    /// Commercial type.
    pub instance_type: String,
    /// Public IPv4.
    pub public_ip: Option<String>,
    /// Private IPv4, if any.
    pub private_ip: Option<String>,
    /// Image id.
    pub image: String,
    /// GPUs (null for a CPU type).
    pub gpu: Option<GpuInfo>,
    /// € per hour (the zone's products endpoint, else the dated table).
    pub hourly_price: Option<f64>,
    /// Login user (`root` on Scaleway images).
    pub ssh_user: String,
    /// The boot block volume.
    pub volume_id: String,
    /// Its size, GB.
    pub root_volume_gb: u64,
    /// The server's security group.
    pub security_group_id: Option<String>,
    /// Rules this step added to it.
    pub rules_added: Vec<AddedRule>,
    /// Flexible IP allocated for the server, if any.
    pub ip_id: Option<String>,
    /// State at the end (`running`).
    pub state: String,
    /// True when an earlier attempt's server was adopted.
    pub adopted: bool,
}

/// `scaleway.server.create`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerCreate;

fn validate_create(input: &CreateInput) -> Result<(), ConnectorError> {
    if input.commercial_type.trim().is_empty() {
        return Err(ConnectorError::invalid("commercial_type is empty"));
    }
    if input.root_volume_gb < MIN_ROOT_GB {
        return Err(ConnectorError::invalid(format!(
            "root_volume_gb is {} GB; at least {MIN_ROOT_GB} GB is needed (Docker, NVIDIA runtime, vLLM, models and logs; seed 002), the default is 200",
            input.root_volume_gb
        )));
    }
    if input.root_volume_gb > 10_000 {
        return Err(ConnectorError::invalid(format!("root_volume_gb {} is more than a block volume holds (10000 GB)", input.root_volume_gb)));
    }
    if input.open_ports.contains(&0) {
        return Err(ConnectorError::invalid("open_ports: 0 is not a port"));
    }
    if !input.ip_range.contains('/') {
        return Err(ConnectorError::invalid(format!("ip_range {:?} is not a CIDR (like 0.0.0.0/0)", input.ip_range)));
    }
    if let Some(bad) = input.tags.iter().find(|t| t.starts_with("engine:")) {
        return Err(ConnectorError::invalid(format!("tag {bad:?}: the `engine:` prefix is reserved")));
    }
    if let Some(n) = &input.name {
        if n.is_empty() || n.len() > 63 {
            return Err(ConnectorError::invalid("name must have 1 to 63 characters"));
        }
    }
    Ok(())
}

/// The `POST /servers` body (pure, for tests): the image only, no `volumes`.
#[must_use]
pub fn create_body(name: &str, commercial_type: &str, project: &str, image: &str, tags: &[String], security_group: Option<&str>, flexible_ip: Option<&str>) -> Value {
    let mut b = json!({
        "name": name,
        "commercial_type": commercial_type,
        "project": project,
        "image": image,
        "tags": tags,
        "dynamic_ip_required": flexible_ip.is_none(),
        "boot_type": "local",
    });
    if let Some(g) = security_group {
        b["security_group"] = json!(g);
    }
    if let Some(ip) = flexible_ip {
        b["public_ips"] = json!([ip]);
    }
    b
}

fn sanitize_name(s: &str) -> String {
    let n: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '-' }).collect();
    n.chars().take(63).collect()
}

/// The undo payload.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct UndoPayload {
    zone: String,
    #[serde(default)]
    server_id: Option<String>,
    #[serde(default)]
    volume_id: Option<String>,
    #[serde(default)]
    ip_ids: Vec<String>,
    #[serde(default)]
    security_group_id: Option<String>,
    #[serde(default)]
    rules: Vec<AddedRule>,
    #[serde(default)]
    ip_range: Option<String>,
}

impl UndoPayload {
    fn value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// Checks that the zone offers the type; else `invalid` naming the zones that do.
async fn check_offered(scw: &Scw, cx: &StepContext, commercial_type: &str) -> Result<Option<Value>, ConnectorError> {
    let products = ops::products(scw, cx).await?;
    if let Some(p) = products.get(commercial_type) {
        return Ok(Some(p.clone()));
    }
    let zones = ops::zones_offering(scw, cx, commercial_type, scw.zone()).await;
    let what = if catalog::is_gpu(commercial_type) { "GPU type" } else { "commercial type" };
    Err(ConnectorError::invalid(if zones.is_empty() {
        format!("{what} {commercial_type} is not offered in {} nor in any other zone checked ({}): check the name (scaleway.prices lists the types)", scw.zone(), catalog::ZONES.join(", "))
    } else {
        format!("{what} {commercial_type} is not offered in {}; zones that have it: {}", scw.zone(), zones.join(", "))
    }))
}

/// The image to create with: `image:`, `SCW_INSTANCE_IMAGE`, else seed 000's table; an id
/// is used as is, a label is resolved through the marketplace.
async fn pick_image(scw: &Scw, cx: &StepContext, input: &CreateInput) -> Result<String, ConnectorError> {
    let env_image = std::env::var("SCW_INSTANCE_IMAGE").ok().filter(|s| !s.is_empty());
    let asked = input.image.clone().or(env_image).unwrap_or_else(|| catalog::image_for(&input.commercial_type).to_string());
    if ops::is_uuid(&asked) {
        return Ok(asked);
    }
    let (img, _) = ops::resolve_image(scw, cx, &asked, Some(&input.commercial_type)).await?;
    Ok(img.id)
}

/// Waits until TCP `addr` accepts a connection.
async fn wait_tcp(cx: &StepContext, addr: &str, timeout: Duration) -> Result<(), ConnectorError> {
    let start = Instant::now();
    let mut n = 0;
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr)).await;
        if let Ok(Ok(_)) = attempt {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(ConnectorError::timeout(format!(
                "SSH on {addr} did not answer within {}s: check that the security group opens port 22, that the server is running and that its public IP is routable",
                timeout.as_secs()
            )));
        }
        cx.sleep(ops::poll_delay(n)).await?;
        n += 1;
    }
}

/// Waits until the server has a public IPv4.
async fn wait_ip(scw: &Scw, cx: &StepContext, id: &str, timeout: Duration) -> Result<(String, Value), ConnectorError> {
    let start = Instant::now();
    let mut n = 0;
    loop {
        let s = ops::get_server(scw, cx, id).await?.ok_or_else(|| ConnectorError::not_found(format!("server {id} disappeared while waiting for its public IP")))?;
        if let Some(ip) = ops::public_ipv4(&s) {
            return Ok((ip, s));
        }
        if start.elapsed() > timeout {
            return Err(ConnectorError::timeout(format!("server {id} has no public IPv4 after {}s", timeout.as_secs())));
        }
        cx.sleep(ops::poll_delay(n)).await?;
        n += 1;
    }
}

#[async_trait]
impl Action for ServerCreate {
    const ID: &'static str = "scaleway.server.create";
    const DESCRIPTION: &'static str = "create a (GPU) server the seed-002 way: image only, grow the SBS boot volume before the first start, start, public IP, open ports, SSH";
    const RESOURCE: Option<&'static str> = Some(KIND);
    type Input = CreateInput;
    type Output = CreateOutput;

    fn validate(&self, input: &Self::Input) -> Result<(), ConnectorError> {
        validate_create(input)
    }

    /// From the dated table of GPU types (`scaleway.prices` reads the live ones).
    fn price(&self, input: &Self::Input) -> Option<engine_connector::Price> {
        let t = crate::catalog::by_type(&input.commercial_type)?;
        Some(engine_connector::Price { per_hour: t.hourly_eur, currency: "EUR".into(), source: format!("Scaleway list price, table of {}", crate::catalog::PRICES_DATE) })
    }

    #[allow(clippy::too_many_lines)]
    async fn run(&self, input: Self::Input, cx: &StepContext) -> Result<Self::Output, ConnectorError> {
        let scw = Scw::for_step(cx, input.zone.as_deref())?;
        let timeout = Duration::from_secs(input.timeout);
        let key = cx.idempotency_key();
        let key_tag = format!("{TAG_KEY}{key}");
        let ct = input.commercial_type.clone();
        let name = sanitize_name(&input.name.clone().unwrap_or_else(|| format!("engine-{}", cx.step.step)));
        cx.progress("REQUEST_CREATE", Some(0));

        // Intent first: nothing is made before it is stored.
        let rec = cx.intend(KIND, &key).await?;
        let mut undo = UndoPayload { zone: scw.zone().to_string(), ip_range: Some(input.ip_range.clone()), ..UndoPayload::default() };
        let existing = ops::servers_by_tag(&scw, cx, &key_tag).await?;
        let our_ips: Vec<String> = if input.flexible_ip { ops::ips_by_tag(&scw, cx, &key_tag).await?.iter().map(|i| ops::str_of(i, "id")).collect() } else { Vec::new() };
        undo.ip_ids.clone_from(&our_ips);
        let (server, adopted, product) = if let Some(s) = existing.into_iter().next() {
            cx.log(LogStream::Stdout, &format!("adopting server {} ({}), made by an earlier attempt of this step", ops::str_of(&s, "id"), ops::str_of(&s, "state")));
            let product = ops::products(&scw, cx).await.ok().and_then(|p| p.get(&ct).cloned());
            (s, true, product)
        } else {
            let product = check_offered(&scw, cx, &ct).await?;
            let image = pick_image(&scw, cx, &input).await?;
            let project = input.project_id.clone().or_else(|| scw.target.project.clone()).ok_or_else(|| {
                ConnectorError::invalid("no Scaleway project: set `project_id` on the step or in `connectors: scaleway:`, or SCW_DEFAULT_PROJECT_ID, or default_project_id in the scw config file")
            })?;
            let ip = if input.flexible_ip {
                if let Some(ip) = our_ips.first() {
                    Some(ip.clone())
                } else {
                    let v = scw.post(cx, &scw.instance("/ips"), &json!({"project": project, "tags": ops::engine_tags(cx), "type": "routed_ipv4"})).await?;
                    let id = v.get("ip").map(|i| ops::str_of(i, "id")).unwrap_or_default();
                    undo.ip_ids.push(id.clone());
                    Some(id)
                }
            } else {
                None
            };
            let mut tags = ops::engine_tags(cx);
            tags.extend(input.tags.iter().cloned());
            let body = create_body(&name, &ct, &project, &image, &tags, input.security_group_id.as_deref(), ip.as_deref());
            match scw.post(cx, &scw.instance("/servers"), &body).await {
                Ok(v) => (v.get("server").cloned().ok_or_else(|| ConnectorError::transient("POST /servers: no server in the answer"))?, false, product),
                Err(e) => {
                    let err: ConnectorError = e.into();
                    for ip in &undo.ip_ids {
                        if let Err(de) = scw.delete(cx, &scw.instance(&format!("/ips/{ip}"))).await {
                            cx.log(LogStream::Stderr, &format!("failed to release flexible IP {ip} after the failed create: {de}"));
                        }
                    }
                    return Err(err);
                }
            }
        };
        let id = ops::str_of(&server, "id");
        undo.server_id = Some(id.clone());
        let mut rec = cx.confirm(rec, id.clone(), undo.value()).await?;
        cx.progress("PROVIDER_CREATE", Some(20));

        // The boot volume Scaleway made from the image's snapshot (20 GB), grown before the first start.
        let (volume_id, volume_type) = ops::boot_volume(&server).ok_or_else(|| ConnectorError::transient(format!("server {id} has no boot volume yet")))?;
        if volume_type != "sbs_volume" {
            return Err(ConnectorError::invalid(format!(
                "server {id} boots from a {volume_type} volume, which the Block API cannot grow: use an image whose root volume is an sbs_snapshot (seed 002)"
            )));
        }
        undo.volume_id = Some(volume_id.clone());
        rec = cx.confirm(rec, id.clone(), undo.value()).await?;
        let (before, vol) = ops::resize_volume(&scw, cx, &volume_id, input.root_volume_gb, timeout).await?;
        let root_gb = ops::size_gb(&vol);
        if before < root_gb {
            cx.log(LogStream::Stdout, &format!("boot volume {volume_id} grown from {before} GB to {root_gb} GB"));
        }
        cx.progress("PROVIDER_VOLUME_RESIZE", Some(25));

        // Start.
        let mut state = ops::str_of(&server, "state");
        if let Some(s) = ops::get_server(&scw, cx, &id).await? {
            state = ops::str_of(&s, "state");
        }
        if state == "stopping" {
            ops::wait_server(&scw, cx, &id, "stopped", timeout).await?;
            state = "stopped".into();
        }
        if matches!(state.as_str(), "stopped" | "stopped in place" | "stopped_in_place") {
            if let Err(e) = ops::server_action(&scw, cx, &id, "poweron").await {
                let err: ConnectorError = e.into();
                if err.kind == ErrorKind::Capacity {
                    // Leave nothing behind: the fallback goes elsewhere.
                    match ops::cleanup(&scw, cx, &id, std::slice::from_ref(&volume_id), true, &undo.ip_ids, timeout).await {
                        Ok(_) => cx.log(LogStream::Stderr, &format!("{ct} is out of stock in {}; server {id} and its volume deleted", scw.zone())),
                        Err(ce) => cx.log(LogStream::Stderr, &format!("failed to delete server {id} after the out-of-stock start: {ce}")),
                    }
                }
                return Err(err);
            }
        }
        ops::wait_server(&scw, cx, &id, "running", timeout).await?;
        cx.progress("PROVIDER_START", Some(30));

        let (public_ip, server) = wait_ip(&scw, cx, &id, timeout).await?;
        cx.progress("PROVIDER_GET_IP", Some(40));

        // Ports: only the missing rules are added; each port is tagged on the server first.
        let group = ops::server_group(&server).or_else(|| input.security_group_id.clone());
        let ours: Vec<u16> = ops::tags_of(&server).iter().filter_map(|t| t.strip_prefix(TAG_PORT)).filter_map(|p| p.parse().ok()).collect();
        let mut added: Vec<AddedRule> = Vec::new();
        if let (Some(g), false) = (&group, input.open_ports.is_empty()) {
            let existing = ops::rules(&scw, cx, g).await?;
            let missing = ops::missing_ports(&existing, &input.open_ports, &input.ip_range);
            if !missing.is_empty() {
                let mut tags = ops::tags_of(&server);
                tags.extend(missing.iter().filter(|p| !ours.contains(p)).map(|p| format!("{TAG_PORT}{p}")));
                scw.patch(cx, &scw.instance(&format!("/servers/{id}")), &json!({ "tags": tags })).await?;
                added = ops::add_rules(&scw, cx, g, &missing, &input.ip_range).await?;
            }
            // Rules an earlier attempt added (tagged) and that are still there count as ours.
            for r in &existing {
                let rid = ops::str_of(r, "id");
                if let Some(p) = ours.iter().find(|p| ops::rule_opens(r, **p, &input.ip_range) && r.get("dest_port_from").and_then(Value::as_u64) == Some(u64::from(**p))) {
                    if !added.iter().any(|a| a.port == *p) {
                        added.push(AddedRule { port: *p, id: rid });
                    }
                }
            }
            added.sort_by_key(|a| a.port);
            undo.security_group_id.clone_from(&group);
            undo.rules.clone_from(&added);
            rec = cx.confirm(rec, id.clone(), undo.value()).await?;
        }
        let _ = rec;
        cx.progress("PROVIDER_SECURITY_GROUP", Some(45));

        if input.wait_ssh {
            let settings = crate::client::Settings::from_context(cx)?;
            let addr = settings.ip_map.get(&public_ip).or_else(|| settings.ip_map.get("*")).cloned().unwrap_or_else(|| format!("{public_ip}:22"));
            wait_tcp(cx, &addr, Duration::from_secs(input.ssh_timeout)).await?;
            cx.progress("WORKER_SSH_ACCESSIBLE", Some(50));
        }
        cx.progress("ready", Some(100));

        let live = product.as_ref().map(|p| ops::parse_product(&ct, p));
        let table = catalog::by_type(&ct);
        let gpu = live.as_ref().and_then(|p| p.gpu.clone()).or_else(|| table.map(|t| GpuInfo { model: t.model.into(), count: t.count, memory_gb: t.memory_gb }));
        let hourly_price = live.as_ref().and_then(|p| p.hourly_price).or_else(|| table.map(|t| t.hourly_eur));
        let image = server.get("image").map(|i| ops::str_of(i, "id")).filter(|s| !s.is_empty()).unwrap_or_default();
        Ok(CreateOutput {
            id: id.clone(),
            name: ops::str_of(&server, "name"),
            provider: "scaleway".into(),
            zone: scw.zone().to_string(),
            instance_type: ops::str_of(&server, "commercial_type"),
            public_ip: Some(public_ip),
            private_ip: ops::private_ip(&server),
            image,
            gpu,
            hourly_price,
            ssh_user: "root".into(),
            volume_id,
            root_volume_gb: root_gb,
            security_group_id: group,
            rules_added: added,
            ip_id: undo.ip_ids.first().cloned(),
            state: ops::str_of(&server, "state"),
            adopted,
        })
    }

    async fn undo(&self, record: &ResourceRecord, cx: &StepContext) -> Result<(), ConnectorError> {
        let p: UndoPayload = serde_json::from_value(record.undo.clone()).unwrap_or_default();
        let zone = (!p.zone.is_empty()).then_some(p.zone.as_str());
        let scw = Scw::for_step(cx, zone)?;
        let key_tag = format!("{TAG_KEY}{}", record.key);
        let timeout = Duration::from_secs(900);
        let mut servers: Vec<String> = record.id.iter().cloned().collect();
        for s in ops::servers_by_tag(&scw, cx, &key_tag).await? {
            let sid = ops::str_of(&s, "id");
            if !servers.contains(&sid) {
                servers.push(sid);
            }
        }
        let mut ips = p.ip_ids.clone();
        for ip in ops::ips_by_tag(&scw, cx, &key_tag).await? {
            let iid = ops::str_of(&ip, "id");
            if !ips.contains(&iid) {
                ips.push(iid);
            }
        }
        let mut total = Cleanup::default();
        if let Some(g) = &p.security_group_id {
            let ids: Vec<String> = p.rules.iter().map(|r| r.id.clone()).filter(|i| !i.is_empty()).collect();
            let ports: Vec<u16> = p.rules.iter().filter(|r| r.id.is_empty()).map(|r| r.port).collect();
            total.rules += ops::delete_rules(&scw, cx, g, &ids, &ports, p.ip_range.as_deref().unwrap_or("0.0.0.0/0")).await?;
        }
        let volumes: Vec<String> = p.volume_id.iter().cloned().collect();
        if servers.is_empty() {
            servers.push(String::new());
        }
        for (i, sid) in servers.iter().enumerate() {
            let ips_now: &[String] = if i == 0 { &ips } else { &[] };
            let c = if sid.is_empty() {
                ops::cleanup_orphans(&scw, cx, &volumes, ips_now, timeout).await?
            } else {
                ops::cleanup(&scw, cx, sid, &volumes, true, ips_now, timeout).await?
            };
            total.servers.extend(c.servers);
            total.volumes.extend(c.volumes);
            total.ips.extend(c.ips);
            total.rules += c.rules;
        }
        if total.is_empty() {
            return Err(ConnectorError::not_found(format!("nothing left of {}: no server, volume, IP or rule", record.key)));
        }
        Ok(())
    }
}

/// Input of `scaleway.server.delete`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteInput {
    /// Zone (default: the connector's).
    #[serde(default)]
    pub zone: Option<String>,
    /// Server id.
    pub server_id: String,
    /// Delete its block volumes too (default true).
    #[serde(default = "yes")]
    pub delete_volumes: bool,
    /// Release its flexible IPs too (default false; dynamic IPs go with the server anyway).
    #[serde(default)]
    pub delete_ips: bool,
    /// Seconds to wait (default 900).
    #[serde(default = "default_timeout")]
    pub timeout: u64,
}

fn yes() -> bool {
    true
}

/// Output of `scaleway.server.delete`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DeleteOutput {
    /// What was removed.
    pub deleted: Cleanup,
    /// True when the server was already gone.
    pub already_gone: bool,
}

/// `scaleway.server.delete`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerDelete;

#[async_trait]
impl Action for ServerDelete {
    const ID: &'static str = "scaleway.server.delete";
    const DESCRIPTION: &'static str = "power off and delete a server, its block volumes and optionally its flexible IPs; gone counts as done";
    type Input = DeleteInput;
    type Output = DeleteOutput;

    fn validate(&self, input: &Self::Input) -> Result<(), ConnectorError> {
        if !ops::is_uuid(&input.server_id) {
            return Err(ConnectorError::invalid(format!("{:?} is not a server id (a UUID)", input.server_id)));
        }
        Ok(())
    }

    async fn run(&self, input: Self::Input, cx: &StepContext) -> Result<Self::Output, ConnectorError> {
        let scw = Scw::for_step(cx, input.zone.as_deref())?;
        let ips: Vec<String> = if input.delete_ips {
            match ops::get_server(&scw, cx, &input.server_id).await? {
                Some(s) => s.get("public_ips").and_then(Value::as_array).map(|a| a.iter().filter(|i| i.get("dynamic").and_then(Value::as_bool) != Some(true)).map(|i| ops::str_of(i, "id")).collect()).unwrap_or_default(),
                None => Vec::new(),
            }
        } else {
            Vec::new()
        };
        cx.progress("deleting", Some(10));
        let deleted = ops::cleanup(&scw, cx, &input.server_id, &[], input.delete_volumes, &ips, Duration::from_secs(input.timeout)).await?;
        cx.progress("deleted", Some(100));
        Ok(DeleteOutput { already_gone: deleted.servers.is_empty(), deleted })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(v: Value) -> CreateInput {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn validation() {
        let i = input(json!({"commercial_type": "L4-1-24G"}));
        assert_eq!(i.root_volume_gb, 200);
        assert_eq!(i.open_ports, vec![22]);
        assert!(validate_create(&i).is_ok());
        let e = validate_create(&input(json!({"commercial_type": "L4-1-24G", "root_volume_gb": 100}))).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert!(e.message.contains("at least 150 GB"), "{}", e.message);
        assert!(validate_create(&input(json!({"commercial_type": "L4-1-24G", "root_volume_gb": 150}))).is_ok());
        assert!(validate_create(&input(json!({"commercial_type": "L4-1-24G", "tags": ["engine:key=x"]}))).is_err());
        assert!(validate_create(&input(json!({"commercial_type": "L4-1-24G", "open_ports": [0]}))).is_err());
        assert!(validate_create(&input(json!({"commercial_type": "L4-1-24G", "ip_range": "any"}))).is_err());
        assert!(serde_json::from_value::<CreateInput>(json!({"commercial_type": "L4-1-24G", "volumes": {}})).is_err());
        assert_eq!(input(json!({"instance_type": "DEV1-S"})).commercial_type, "DEV1-S");
    }

    #[test]
    fn create_body_has_the_image_only() {
        let b = create_body("n", "L4-1-24G", "p", "5c3d28db-33ce-4997-8572-f49506339283", &["engine:key=r/s".into()], None, None);
        assert!(b.get("volumes").is_none());
        assert_eq!(b["dynamic_ip_required"], true);
        assert_eq!(b["boot_type"], "local");
        assert_eq!(b["image"], "5c3d28db-33ce-4997-8572-f49506339283");
        assert!(b.get("public_ips").is_none() && b.get("security_group").is_none());
        let b = create_body("n", "L4-1-24G", "p", "i", &[], Some("sg"), Some("ip"));
        assert_eq!(b["dynamic_ip_required"], false);
        assert_eq!(b["public_ips"], json!(["ip"]));
        assert_eq!(b["security_group"], "sg");
    }

    #[test]
    fn names() {
        assert_eq!(sanitize_name("engine-gpu_box/1"), "engine-gpu-box-1");
    }
}
