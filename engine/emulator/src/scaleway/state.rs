//! The emulated account: servers, volumes, IPs and security groups, their
//! state machines, and their JSON in the real API's shapes.
//!
//! Time is explicit: every operation takes `now` (time since the emulator
//! started) and [`State::advance`] applies the transitions that are due, so
//! the unit tests drive the state machine with a fake clock.
//!
//! # State machines (durations at `time_scale` 1.0)
//! - server: `stopped` -poweron-> `starting` (30 s) -> `running`;
//!   `running` -poweroff-> `stopping` (15 s) -> `stopped`;
//!   `running` -reboot-> `starting` (30 s) -> `running`;
//!   `running` -terminate-> `stopping` (15 s) -> gone, with its volumes and
//!   dynamic IP (a flexible IP is detached and kept).
//!   A dynamic IP (`dynamic_ip_required`) is given when the server reaches
//!   `running` and released when it stops.
//! - SBS volume: `creating` (2 s) -> `available`; attached: `in_use`;
//!   grow: `updating` (5 s) -> `in_use` or `available`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use super::catalog::{self, ZoneImage};
use super::error::ApiError;
use super::Stock;

/// How long each transition takes at `time_scale` 1.0.
pub mod durations {
    use std::time::Duration;
    /// `starting` -> `running`.
    pub const BOOT: Duration = Duration::from_secs(30);
    /// `stopping` -> `stopped` (or gone, for terminate).
    pub const STOP: Duration = Duration::from_secs(15);
    /// SBS `creating` -> `available`.
    pub const VOLUME_CREATE: Duration = Duration::from_secs(2);
    /// SBS `updating` -> back.
    pub const VOLUME_RESIZE: Duration = Duration::from_secs(5);
}

const GB: u64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerPending {
    Running,
    Stopped,
    Terminated,
}

#[derive(Debug, Clone)]
struct DynamicIp {
    id: String,
    address: String,
    ipam_id: String,
}

#[derive(Debug, Clone)]
struct Server {
    id: String,
    zone: String,
    name: String,
    project: String,
    commercial_type: String,
    image: Option<String>,
    /// Slot ("0", "1"...) -> volume id.
    volumes: BTreeMap<String, String>,
    tags: Vec<String>,
    state: &'static str,
    state_detail: String,
    protected: bool,
    dynamic_ip_required: bool,
    routed_ip_enabled: bool,
    enable_ipv6: bool,
    boot_type: String,
    security_group: String,
    mac_address: String,
    created: SystemTime,
    modified: SystemTime,
    dynamic_ip: Option<DynamicIp>,
    pending: Option<(ServerPending, Duration)>,
    user_data: BTreeMap<String, Vec<u8>>,
    seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VolumeKind {
    Local,
    Sbs,
}

#[derive(Debug, Clone)]
struct Volume {
    id: String,
    zone: String,
    name: String,
    kind: VolumeKind,
    size: u64,
    project: String,
    tags: Vec<String>,
    server: Option<String>,
    status: &'static str,
    /// Transition to the resting status at that time.
    pending: Option<Duration>,
    created: SystemTime,
    updated: SystemTime,
    parent_snapshot_id: Option<String>,
    last_detached_at: Option<SystemTime>,
    reference_id: String,
    reference_created: SystemTime,
    perf_iops: u64,
    seq: u64,
}

#[derive(Debug, Clone)]
struct Ip {
    id: String,
    zone: String,
    address: String,
    ip_type: String,
    project: String,
    tags: Vec<String>,
    server: Option<String>,
    reverse: Option<String>,
    ipam_id: String,
    seq: u64,
}

#[derive(Debug, Clone)]
struct Rule {
    id: String,
    protocol: String,
    direction: String,
    action: String,
    ip_range: String,
    dest_port_from: Option<u64>,
    dest_port_to: Option<u64>,
    position: u64,
    editable: bool,
}

#[derive(Debug, Clone)]
struct SecurityGroup {
    id: String,
    zone: String,
    project: String,
    name: String,
    description: String,
    project_default: bool,
    stateful: bool,
    inbound_default_policy: String,
    outbound_default_policy: String,
    enable_default_security: bool,
    tags: Vec<String>,
    rules: Vec<Rule>,
    created: SystemTime,
    modified: SystemTime,
    seq: u64,
}

/// The whole emulated account.
#[derive(Debug)]
pub struct State {
    time_scale: f64,
    project: String,
    servers: BTreeMap<String, Server>,
    volumes: BTreeMap<String, Volume>,
    ips: BTreeMap<String, Ip>,
    groups: BTreeMap<String, SecurityGroup>,
    stock: HashMap<(String, String), Stock>,
    ip_map: BTreeMap<String, SocketAddr>,
    images: Vec<ZoneImage>,
    seq: u64,
    next_ip: u32,
    ip_pool: Option<IpPool>,
}

/// Where public IPv4 addresses come from when a test wants them reachable:
/// `count` addresses from `first` (say `127.0.0.10`, 4: `127.0.0.10`..`127.0.0.13`,
/// all loopback on Linux), the lowest one not held by an IP or a server
/// first. When every one is taken, addresses come from the default range again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPool {
    /// The first address.
    pub first: std::net::Ipv4Addr,
    /// How many addresses.
    pub count: u32,
}

impl IpPool {
    /// Parses `FIRST-LAST` (`127.0.0.10-127.0.0.13`) or `FIRST/COUNT` (`127.0.0.10/4`).
    ///
    /// # Errors
    /// A message saying what is wrong.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let bad = || format!("expected FIRST-LAST or FIRST/COUNT IPv4 addresses, got {text:?}");
        if let Some((a, b)) = text.split_once('-') {
            let first: std::net::Ipv4Addr = a.trim().parse().map_err(|_| bad())?;
            let last: std::net::Ipv4Addr = b.trim().parse().map_err(|_| bad())?;
            let (f, l) = (u32::from(first), u32::from(last));
            if l < f {
                return Err(format!("{last} comes before {first}"));
            }
            return Ok(Self {
                first,
                count: l - f + 1,
            });
        }
        if let Some((a, n)) = text.split_once('/') {
            let first: std::net::Ipv4Addr = a.trim().parse().map_err(|_| bad())?;
            let count: u32 = n.trim().parse().map_err(|_| bad())?;
            if count == 0 || u32::from(first).checked_add(count - 1).is_none() {
                return Err(bad());
            }
            return Ok(Self { first, count });
        }
        Err(bad())
    }

    /// Every address of the pool, in order.
    pub fn addresses(self) -> impl Iterator<Item = std::net::Ipv4Addr> {
        let f = u32::from(self.first);
        (0..self.count).map(move |i| std::net::Ipv4Addr::from(f + i))
    }
}

/// A successful answer: status, body, and the total for list endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// JSON body (`None`: empty body).
    pub body: Option<Value>,
    /// `X-Total-Count` for list endpoints.
    pub total: Option<usize>,
}

impl Reply {
    fn ok(body: Value) -> Self {
        Self {
            status: 200,
            body: Some(body),
            total: None,
        }
    }
    fn created(body: Value) -> Self {
        Self {
            status: 201,
            body: Some(body),
            total: None,
        }
    }
    fn no_content() -> Self {
        Self {
            status: 204,
            body: None,
            total: None,
        }
    }
}

type Result<T> = std::result::Result<T, ApiError>;

/// Paging of a list: 1-based `page`, `per_page` items (capped at 100).
#[derive(Debug, Clone, Copy)]
pub struct Page {
    /// 1-based page number.
    pub page: usize,
    /// Items per page.
    pub per_page: usize,
}

impl Default for Page {
    fn default() -> Self {
        Self {
            page: 1,
            per_page: 50,
        }
    }
}

impl Page {
    /// Takes this page of `items`; returns it with the total.
    #[must_use]
    pub fn slice<T>(self, items: Vec<T>) -> (Vec<T>, usize) {
        let total = items.len();
        let per_page = self.per_page.clamp(1, 100);
        let start = (self.page.max(1) - 1).saturating_mul(per_page);
        (
            items.into_iter().skip(start).take(per_page).collect(),
            total,
        )
    }
}

fn str_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// An id field given as `"id"` or `{"id": "..."}`.
fn id_field(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

fn random_uuid() -> String {
    catalog::format_uuid(rand::random::<u128>())
}

/// RFC 3339 with microseconds; `zulu` picks `Z` (Block API) over `+00:00` (Instance API).
#[must_use]
pub fn rfc3339(t: SystemTime, zulu: bool) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Howard Hinnant's civil_from_days.
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let tz = if zulu { "Z" } else { "+00:00" };
    format!(
        "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{:06}{tz}",
        d.subsec_micros()
    )
}

fn date(t: SystemTime) -> Value {
    Value::String(rfc3339(t, false))
}

fn zdate(t: SystemTime) -> Value {
    Value::String(rfc3339(t, true))
}

fn unknown(what: &str, id: &str) -> ApiError {
    if what.is_empty() {
        ApiError::UnknownResource(format!("\"{id}\" not found"))
    } else {
        ApiError::UnknownResource(format!("{what} \"{id}\" not found"))
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::InvalidRequest {
        message: message.into(),
        fields: None,
    }
}

fn invalid_field(field: &str, message: impl Into<String>) -> ApiError {
    let mut fields = Map::new();
    fields.insert(field.to_owned(), json!([message.into()]));
    ApiError::InvalidRequest {
        message: "Validation Error".to_owned(),
        fields: Some(Value::Object(fields)),
    }
}

impl State {
    /// A fresh account for `project`, durations multiplied by `time_scale`.
    #[must_use]
    pub fn new(project: &str, time_scale: f64) -> Self {
        Self {
            time_scale: if time_scale.is_finite() {
                time_scale.max(0.0)
            } else {
                1.0
            },
            project: project.to_owned(),
            servers: BTreeMap::new(),
            volumes: BTreeMap::new(),
            ips: BTreeMap::new(),
            groups: BTreeMap::new(),
            stock: HashMap::new(),
            ip_map: BTreeMap::new(),
            images: catalog::images(),
            seq: 0,
            next_ip: 0,
            ip_pool: None,
        }
    }

    /// Public IPv4 addresses come from `pool` from now on (`None`: the
    /// default range); kept across [`reset`](State::reset).
    pub fn set_ip_pool(&mut self, pool: Option<IpPool>) {
        self.ip_pool = pool;
    }

    /// Forgets every resource, stock setting and IP mapping.
    pub fn reset(&mut self) {
        let pool = self.ip_pool;
        *self = Self::new(&self.project.clone(), self.time_scale);
        self.ip_pool = pool;
    }

    fn scaled(&self, d: Duration) -> Duration {
        d.mul_f64(self.time_scale)
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn new_address(&mut self) -> String {
        if let Some(pool) = self.ip_pool {
            let taken = |a: &str| {
                self.ips.values().any(|ip| ip.address == a)
                    || self
                        .servers
                        .values()
                        .any(|s| s.dynamic_ip.as_ref().is_some_and(|d| d.address == a))
            };
            if let Some(a) = pool.addresses().map(|a| a.to_string()).find(|a| !taken(a)) {
                return a;
            }
        }
        self.next_ip += 1;
        let n = self.next_ip;
        // 51.158.0.0/15 is one of Scaleway's public ranges.
        format!(
            "51.{}.{}.{}",
            158 + (n >> 16) % 2,
            (n >> 8) & 0xff,
            (n & 0xff).max(1)
        )
    }

    /// Sets the stock of a type in a zone.
    pub fn set_stock(&mut self, zone: &str, commercial_type: &str, stock: Stock) {
        self.stock
            .insert((zone.to_owned(), commercial_type.to_owned()), stock);
    }

    fn stock_of(&self, zone: &str, commercial_type: &str) -> Stock {
        self.stock
            .get(&(zone.to_owned(), commercial_type.to_owned()))
            .copied()
            .unwrap_or(Stock::Available)
    }

    /// Maps a public IP (or `*`, every IP) to a reachable address.
    pub fn map_public_ip(&mut self, public_ip: &str, reach_at: SocketAddr) {
        self.ip_map.insert(public_ip.to_owned(), reach_at);
    }

    /// Where `public_ip` is reachable, if mapped (`*` is the fallback).
    #[must_use]
    pub fn ip_mapping(&self, public_ip: &str) -> Option<SocketAddr> {
        self.ip_map
            .get(public_ip)
            .or_else(|| self.ip_map.get("*"))
            .copied()
    }

    /// Applies every transition due at `now`, oldest first.
    pub fn advance(&mut self, now: Duration) {
        loop {
            let server_due = self
                .servers
                .values()
                .filter_map(|s| s.pending.map(|(_, at)| (at, s.id.clone())))
                .filter(|(at, _)| *at <= now)
                .min();
            let volume_due = self
                .volumes
                .values()
                .filter_map(|v| v.pending.map(|at| (at, v.id.clone())))
                .filter(|(at, _)| *at <= now)
                .min();
            match (server_due, volume_due) {
                (Some(s), Some(v)) if v.0 < s.0 => self.finish_volume(&v.1),
                (Some(s), _) => self.finish_server(&s.1),
                (None, Some(v)) => self.finish_volume(&v.1),
                (None, None) => break,
            }
        }
    }

    fn finish_volume(&mut self, id: &str) {
        if let Some(v) = self.volumes.get_mut(id) {
            v.pending = None;
            v.status = if v.server.is_some() {
                "in_use"
            } else {
                "available"
            };
            v.updated = SystemTime::now();
        }
    }

    fn finish_server(&mut self, id: &str) {
        let Some(server) = self.servers.get_mut(id) else {
            return;
        };
        let Some((target, _)) = server.pending.take() else {
            return;
        };
        server.modified = SystemTime::now();
        match target {
            ServerPending::Running => {
                server.state = "running";
                server.state_detail = "booted".to_owned();
                let needs_ip = server.dynamic_ip_required && server.dynamic_ip.is_none();
                let has_flexible = self.ips.values().any(|ip| ip.server.as_deref() == Some(id));
                if needs_ip && !has_flexible {
                    let address = self.new_address();
                    if let Some(server) = self.servers.get_mut(id) {
                        server.dynamic_ip = Some(DynamicIp {
                            id: random_uuid(),
                            address,
                            ipam_id: random_uuid(),
                        });
                    }
                }
            }
            ServerPending::Stopped => {
                server.state = "stopped";
                server.state_detail = String::new();
                server.dynamic_ip = None;
            }
            ServerPending::Terminated => {
                let server = server.clone();
                self.remove_server(&server, true);
            }
        }
    }

    /// Drops a server: local volumes go with it; SBS volumes are deleted
    /// (`terminate`) or detached (`DELETE`); flexible IPs are detached.
    fn remove_server(&mut self, server: &Server, delete_block: bool) {
        let now = SystemTime::now();
        for vid in server.volumes.values() {
            let Some(v) = self.volumes.get_mut(vid) else {
                continue;
            };
            if v.kind == VolumeKind::Local || delete_block {
                self.volumes.remove(vid);
            } else {
                v.server = None;
                v.status = if v.pending.is_some() {
                    v.status
                } else {
                    "available"
                };
                v.last_detached_at = Some(now);
                v.updated = now;
            }
        }
        for ip in self.ips.values_mut() {
            if ip.server.as_deref() == Some(server.id.as_str()) {
                ip.server = None;
            }
        }
        self.servers.remove(&server.id);
    }

    // ----- security groups -------------------------------------------------

    /// The project's default group in `zone`, made on first use.
    fn default_group(&mut self, zone: &str, project: &str) -> String {
        if let Some(g) = self
            .groups
            .values()
            .find(|g| g.zone == zone && g.project == project && g.project_default)
        {
            return g.id.clone();
        }
        let now = SystemTime::now();
        // Scaleway's default groups block outbound SMTP with rules nobody can edit.
        let rules = [25, 465, 587]
            .iter()
            .enumerate()
            .map(|(i, port)| Rule {
                id: random_uuid(),
                protocol: "TCP".to_owned(),
                direction: "outbound".to_owned(),
                action: "drop".to_owned(),
                ip_range: "0.0.0.0/0".to_owned(),
                dest_port_from: Some(*port),
                dest_port_to: None,
                position: i as u64 + 1,
                editable: false,
            })
            .collect();
        let seq = self.next_seq();
        let group = SecurityGroup {
            id: random_uuid(),
            zone: zone.to_owned(),
            project: project.to_owned(),
            name: "Default security group".to_owned(),
            description: "Auto generated security group.".to_owned(),
            project_default: true,
            stateful: true,
            inbound_default_policy: "accept".to_owned(),
            outbound_default_policy: "accept".to_owned(),
            enable_default_security: true,
            tags: Vec::new(),
            rules,
            created: now,
            modified: now,
            seq,
        };
        let id = group.id.clone();
        self.groups.insert(id.clone(), group);
        id
    }

    fn group_json(&self, g: &SecurityGroup) -> Value {
        let servers: Vec<Value> = self
            .servers
            .values()
            .filter(|s| s.security_group == g.id)
            .map(|s| json!({"id": s.id, "name": s.name}))
            .collect();
        json!({
            "id": g.id,
            "creation_date": date(g.created),
            "modification_date": date(g.modified),
            "name": g.name,
            "description": g.description,
            "organization": g.project,
            "project": g.project,
            "tags": g.tags,
            "organization_default": false,
            "project_default": g.project_default,
            "servers": servers,
            "stateful": g.stateful,
            "state": "available",
            "inbound_default_policy": g.inbound_default_policy,
            "outbound_default_policy": g.outbound_default_policy,
            "enable_default_security": g.enable_default_security,
            "zone": g.zone,
        })
    }

    fn rule_json(zone: &str, r: &Rule) -> Value {
        json!({
            "id": r.id,
            "protocol": r.protocol,
            "direction": r.direction,
            "ip_range": r.ip_range,
            "dest_port_from": r.dest_port_from,
            "dest_port_to": r.dest_port_to,
            "position": r.position,
            "editable": r.editable,
            "action": r.action,
            "zone": zone,
        })
    }

    fn group(&self, zone: &str, id: &str) -> Result<&SecurityGroup> {
        self.groups
            .get(id)
            .filter(|g| g.zone == zone)
            .ok_or_else(|| unknown("Security group", id))
    }

    /// `GET .../security_groups`.
    pub fn list_groups(&mut self, zone: &str, filters: &ListFilters, page: Page) -> Reply {
        let project = filters
            .project
            .clone()
            .unwrap_or_else(|| self.project.clone());
        self.default_group(zone, &project);
        let mut groups: Vec<&SecurityGroup> = self
            .groups
            .values()
            .filter(|g| g.zone == zone && filters.matches_project(&g.project))
            .filter(|g| {
                filters
                    .name
                    .as_ref()
                    .is_none_or(|n| g.name.contains(n.as_str()))
            })
            .filter(|g| filters.tags.iter().all(|t| g.tags.contains(t)))
            .filter(|g| {
                filters
                    .project_default
                    .is_none_or(|d| g.project_default == d)
            })
            .collect();
        groups.sort_by_key(|g| std::cmp::Reverse(g.seq));
        let (items, total) = page.slice(groups);
        let items: Vec<Value> = items.into_iter().map(|g| self.group_json(g)).collect();
        Reply {
            status: 200,
            body: Some(json!({"security_groups": items})),
            total: Some(total),
        }
    }

    /// `POST .../security_groups`.
    ///
    /// # Errors
    /// `invalid_request_error` without a name.
    pub fn create_group(&mut self, zone: &str, body: &Value) -> Result<Reply> {
        let name = body
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| invalid_field("name", "required field"))?;
        let project = body
            .get("project")
            .and_then(Value::as_str)
            .map_or_else(|| self.project.clone(), str::to_owned);
        let now = SystemTime::now();
        let seq = self.next_seq();
        let s = |k: &str, d: &str| body.get(k).and_then(Value::as_str).unwrap_or(d).to_owned();
        let group = SecurityGroup {
            id: random_uuid(),
            zone: zone.to_owned(),
            project,
            name: name.to_owned(),
            description: s("description", ""),
            project_default: body
                .get("project_default")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            stateful: body
                .get("stateful")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            inbound_default_policy: s("inbound_default_policy", "accept"),
            outbound_default_policy: s("outbound_default_policy", "accept"),
            enable_default_security: body
                .get("enable_default_security")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            tags: str_list(body.get("tags")),
            rules: Vec::new(),
            created: now,
            modified: now,
            seq,
        };
        let json = self.group_json(&group);
        self.groups.insert(group.id.clone(), group);
        Ok(Reply::created(json!({"security_group": json})))
    }

    /// `GET .../security_groups/{id}`.
    ///
    /// # Errors
    /// `unknown_resource`.
    pub fn get_group(&self, zone: &str, id: &str) -> Result<Reply> {
        let g = self.group(zone, id)?;
        Ok(Reply::ok(json!({"security_group": self.group_json(g)})))
    }

    /// `PATCH .../security_groups/{id}`.
    ///
    /// # Errors
    /// `unknown_resource`.
    pub fn update_group(&mut self, zone: &str, id: &str, body: &Value) -> Result<Reply> {
        self.group(zone, id)?;
        let g = self
            .groups
            .get_mut(id)
            .ok_or_else(|| unknown("Security group", id))?;
        for (key, slot) in [
            ("name", &mut g.name),
            ("description", &mut g.description),
            ("inbound_default_policy", &mut g.inbound_default_policy),
            ("outbound_default_policy", &mut g.outbound_default_policy),
        ] {
            if let Some(v) = body.get(key).and_then(Value::as_str) {
                *slot = v.to_owned();
            }
        }
        if let Some(v) = body.get("stateful").and_then(Value::as_bool) {
            g.stateful = v;
        }
        if let Some(v) = body.get("enable_default_security").and_then(Value::as_bool) {
            g.enable_default_security = v;
        }
        if body.get("tags").is_some_and(Value::is_array) {
            g.tags = str_list(body.get("tags"));
        }
        g.modified = SystemTime::now();
        let g = g.clone();
        Ok(Reply::ok(json!({"security_group": self.group_json(&g)})))
    }

    /// `DELETE .../security_groups/{id}`: refused while servers use it.
    ///
    /// # Errors
    /// `unknown_resource`; `invalid_request_error` while in use.
    pub fn delete_group(&mut self, zone: &str, id: &str) -> Result<Reply> {
        self.group(zone, id)?;
        if self.servers.values().any(|s| s.security_group == id) {
            return Err(invalid("group is in use. you cannot delete it."));
        }
        self.groups.remove(id);
        Ok(Reply::no_content())
    }

    /// `GET .../security_groups/{id}/rules`.
    ///
    /// # Errors
    /// `unknown_resource`.
    pub fn list_rules(&self, zone: &str, id: &str, page: Page) -> Result<Reply> {
        let g = self.group(zone, id)?;
        let mut rules: Vec<&Rule> = g.rules.iter().collect();
        rules.sort_by_key(|r| (r.direction.clone(), r.position));
        let (items, total) = page.slice(rules);
        let items: Vec<Value> = items
            .into_iter()
            .map(|r| Self::rule_json(zone, r))
            .collect();
        Ok(Reply {
            status: 200,
            body: Some(json!({"rules": items})),
            total: Some(total),
        })
    }

    /// `POST .../security_groups/{id}/rules`.
    ///
    /// # Errors
    /// `unknown_resource`; `invalid_request_error` for a bad protocol,
    /// direction, action or port range.
    pub fn create_rule(&mut self, zone: &str, id: &str, body: &Value) -> Result<Reply> {
        self.group(zone, id)?;
        let s = |k: &str, d: &str| body.get(k).and_then(Value::as_str).unwrap_or(d).to_owned();
        // Answered upper-case as the Go SDK's enum (`"TCP"`) and the Terraform
        // provider have it; the Python SDK 2.12 sends lower-case, so both are taken.
        let protocol = s("protocol", "TCP").to_ascii_uppercase();
        let direction = s("direction", "inbound");
        let action = s("action", "accept");
        if !matches!(protocol.as_str(), "TCP" | "UDP" | "ICMP" | "ANY") {
            return Err(invalid_field(
                "protocol",
                format!("\"{protocol}\" is not a valid protocol"),
            ));
        }
        if !matches!(direction.as_str(), "inbound" | "outbound") {
            return Err(invalid_field(
                "direction",
                format!("\"{direction}\" is not a valid direction"),
            ));
        }
        if !matches!(action.as_str(), "accept" | "drop") {
            return Err(invalid_field(
                "action",
                format!("\"{action}\" is not a valid action"),
            ));
        }
        let port = |k: &str| body.get(k).and_then(Value::as_u64);
        let (from, to) = (port("dest_port_from"), port("dest_port_to"));
        if let Some(p) = from.into_iter().chain(to).find(|p| *p == 0 || *p > 65_535) {
            return Err(invalid_field(
                "dest_port_from",
                format!("port {p} is out of range 1-65535"),
            ));
        }
        if let (Some(f), Some(t)) = (from, to) {
            if t < f {
                return Err(invalid_field(
                    "dest_port_to",
                    "dest_port_to must be greater than dest_port_from",
                ));
            }
        }
        let g = self
            .groups
            .get_mut(id)
            .ok_or_else(|| unknown("Security group", id))?;
        let position = body
            .get("position")
            .and_then(Value::as_u64)
            .filter(|p| *p > 0)
            .unwrap_or_else(|| {
                g.rules
                    .iter()
                    .filter(|r| r.direction == direction)
                    .map(|r| r.position)
                    .max()
                    .unwrap_or(0)
                    + 1
            });
        let rule = Rule {
            id: random_uuid(),
            protocol,
            direction,
            action,
            ip_range: s("ip_range", "0.0.0.0/0"),
            dest_port_from: from,
            dest_port_to: if to == from { None } else { to },
            position,
            editable: true,
        };
        let json = Self::rule_json(zone, &rule);
        g.rules.push(rule);
        g.modified = SystemTime::now();
        Ok(Reply::created(json!({"rule": json})))
    }

    /// `GET .../security_groups/{id}/rules/{rule}`.
    ///
    /// # Errors
    /// `unknown_resource`.
    pub fn get_rule(&self, zone: &str, id: &str, rule: &str) -> Result<Reply> {
        let g = self.group(zone, id)?;
        let r = g
            .rules
            .iter()
            .find(|r| r.id == rule)
            .ok_or_else(|| unknown("Security group rule", rule))?;
        Ok(Reply::ok(json!({"rule": Self::rule_json(zone, r)})))
    }

    /// `DELETE .../security_groups/{id}/rules/{rule}`.
    ///
    /// # Errors
    /// `unknown_resource`; `invalid_request_error` for a rule that is not editable.
    pub fn delete_rule(&mut self, zone: &str, id: &str, rule: &str) -> Result<Reply> {
        self.group(zone, id)?;
        let g = self
            .groups
            .get_mut(id)
            .ok_or_else(|| unknown("Security group", id))?;
        let index = g
            .rules
            .iter()
            .position(|r| r.id == rule)
            .ok_or_else(|| unknown("Security group rule", rule))?;
        if !g.rules[index].editable {
            return Err(invalid("this rule is not editable"));
        }
        g.rules.remove(index);
        g.modified = SystemTime::now();
        Ok(Reply::no_content())
    }

    // ----- IPs -------------------------------------------------------------

    fn ip_json(&self, ip: &Ip) -> Value {
        let server = ip
            .server
            .as_ref()
            .and_then(|id| self.servers.get(id))
            .map(|s| json!({"id": s.id, "name": s.name}));
        let routed_v6 = ip.ip_type == "routed_ipv6";
        json!({
            "id": ip.id,
            "address": if routed_v6 { Value::Null } else { Value::String(ip.address.clone()) },
            "prefix": if routed_v6 { ip.address.clone() } else { format!("{}/32", ip.address) },
            "reverse": ip.reverse,
            "server": server,
            "organization": ip.project,
            "project": ip.project,
            "zone": ip.zone,
            "type": ip.ip_type,
            "state": if ip.server.is_some() { "attached" } else { "detached" },
            "tags": ip.tags,
            "ipam_id": ip.ipam_id,
        })
    }

    fn find_ip(&self, zone: &str, id_or_address: &str) -> Result<&Ip> {
        self.ips
            .values()
            .find(|ip| ip.zone == zone && (ip.id == id_or_address || ip.address == id_or_address))
            .ok_or_else(|| unknown("", id_or_address))
    }

    /// `GET .../ips`.
    pub fn list_ips(&self, zone: &str, filters: &ListFilters, page: Page) -> Reply {
        let mut ips: Vec<&Ip> = self
            .ips
            .values()
            .filter(|ip| ip.zone == zone && filters.matches_project(&ip.project))
            .filter(|ip| filters.tags.iter().all(|t| ip.tags.contains(t)))
            .filter(|ip| filters.ip_type.as_ref().is_none_or(|t| &ip.ip_type == t))
            .collect();
        ips.sort_by_key(|ip| std::cmp::Reverse(ip.seq));
        let (items, total) = page.slice(ips);
        let items: Vec<Value> = items.into_iter().map(|ip| self.ip_json(ip)).collect();
        Reply {
            status: 200,
            body: Some(json!({"ips": items})),
            total: Some(total),
        }
    }

    /// `POST .../ips`, optionally attached to `server` at once.
    ///
    /// # Errors
    /// `invalid_request_error` for an unknown type; `unknown_resource` for the server.
    pub fn create_ip(&mut self, zone: &str, body: &Value) -> Result<Reply> {
        let ip_type = body
            .get("type")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty() && *t != "unknown_iptype")
            .unwrap_or("routed_ipv4")
            .to_owned();
        if !matches!(ip_type.as_str(), "routed_ipv4" | "routed_ipv6") {
            return Err(invalid_field(
                "type",
                format!("\"{ip_type}\" is not a valid ip type"),
            ));
        }
        let server = id_field(body.get("server"));
        if let Some(sid) = &server {
            self.server(zone, sid)?;
        }
        let address = if ip_type == "routed_ipv6" {
            self.next_ip += 1;
            format!("2001:bc8:710:{:x}::/64", 0x1000 + self.next_ip)
        } else {
            self.new_address()
        };
        let seq = self.next_seq();
        let ip = Ip {
            id: random_uuid(),
            zone: zone.to_owned(),
            address,
            ip_type,
            project: body
                .get("project")
                .and_then(Value::as_str)
                .map_or_else(|| self.project.clone(), str::to_owned),
            tags: str_list(body.get("tags")),
            server: server.clone(),
            reverse: None,
            ipam_id: random_uuid(),
            seq,
        };
        let id = ip.id.clone();
        self.ips.insert(id.clone(), ip);
        if let Some(sid) = server {
            self.on_flexible_attached(&sid);
        }
        let json = self.ip_json(&self.ips[&id]);
        Ok(Reply::created(json!({"ip": json})))
    }

    /// A flexible IP replaces the server's dynamic one.
    fn on_flexible_attached(&mut self, server: &str) {
        if let Some(s) = self.servers.get_mut(server) {
            s.dynamic_ip = None;
            s.modified = SystemTime::now();
        }
    }

    /// `GET .../ips/{id}` (id or address).
    ///
    /// # Errors
    /// `unknown_resource`.
    pub fn get_ip(&self, zone: &str, id: &str) -> Result<Reply> {
        let ip = self.find_ip(zone, id)?;
        Ok(Reply::ok(json!({"ip": self.ip_json(ip)})))
    }

    /// `PATCH .../ips/{id}`: `server` (id, or null to detach), `tags`, `reverse`.
    ///
    /// # Errors
    /// `unknown_resource` for the IP or the server.
    pub fn update_ip(&mut self, zone: &str, id: &str, body: &Value) -> Result<Reply> {
        let ip_id = self.find_ip(zone, id)?.id.clone();
        let mut attach = None;
        match body.get("server") {
            Some(Value::Null) => {
                if let Some(ip) = self.ips.get_mut(&ip_id) {
                    ip.server = None;
                }
            }
            Some(v) => {
                let sid =
                    id_field(Some(v)).ok_or_else(|| invalid_field("server", "invalid server"))?;
                self.server(zone, &sid)?;
                attach = Some(sid);
            }
            None => {}
        }
        let ip = self.ips.get_mut(&ip_id).ok_or_else(|| unknown("", id))?;
        if let Some(sid) = &attach {
            ip.server = Some(sid.clone());
        }
        if body.get("tags").is_some_and(Value::is_array) {
            ip.tags = str_list(body.get("tags"));
        }
        match body.get("reverse") {
            Some(Value::String(r)) => ip.reverse = Some(r.clone()).filter(|r| !r.is_empty()),
            Some(Value::Null) => ip.reverse = None,
            _ => {}
        }
        if let Some(sid) = attach {
            self.on_flexible_attached(&sid);
        }
        Ok(Reply::ok(json!({"ip": self.ip_json(&self.ips[&ip_id])})))
    }

    /// `DELETE .../ips/{id}` (detaches it first, as the real API does).
    ///
    /// # Errors
    /// `unknown_resource`.
    pub fn delete_ip(&mut self, zone: &str, id: &str) -> Result<Reply> {
        let ip_id = self.find_ip(zone, id)?.id.clone();
        self.ips.remove(&ip_id);
        Ok(Reply::no_content())
    }

    // ----- volumes -----------------------------------------------------------

    fn server_volume_json(&self, v: &Volume, boot: bool) -> Value {
        match v.kind {
            VolumeKind::Sbs => {
                json!({"boot": boot, "volume_type": "sbs_volume", "id": v.id, "zone": v.zone})
            }
            VolumeKind::Local => {
                let server = v
                    .server
                    .as_ref()
                    .and_then(|id| self.servers.get(id))
                    .map(|s| json!({"id": s.id, "name": s.name}));
                json!({
                    "boot": boot,
                    "id": v.id,
                    "name": v.name,
                    "volume_type": "l_ssd",
                    "export_uri": null,
                    "organization": v.project,
                    "project": v.project,
                    "server": server,
                    "size": v.size,
                    "state": "available",
                    "creation_date": date(v.created),
                    "modification_date": date(v.updated),
                    "tags": v.tags,
                    "zone": v.zone,
                })
            }
        }
    }

    fn block_json(v: &Volume) -> Value {
        let references: Vec<Value> = v
            .server
            .iter()
            .map(|sid| {
                json!({
                    "id": v.reference_id,
                    "product_resource_type": "instance_server",
                    "product_resource_id": sid,
                    "created_at": zdate(v.reference_created),
                    "type": "exclusive",
                    "status": "attached",
                })
            })
            .collect();
        json!({
            "id": v.id,
            "name": v.name,
            "type": format!("sbs_{}k", v.perf_iops / 1000),
            "size": v.size,
            "project_id": v.project,
            "created_at": zdate(v.created),
            "updated_at": zdate(v.updated),
            "references": references,
            "parent_snapshot_id": v.parent_snapshot_id,
            "status": v.status,
            "tags": v.tags,
            "specs": {"perf_iops": v.perf_iops, "class": "sbs"},
            "last_detached_at": v.last_detached_at.map(zdate),
            "zone": v.zone,
        })
    }

    fn block_volume(&self, zone: &str, id: &str) -> Result<&Volume> {
        self.volumes
            .get(id)
            .filter(|v| v.zone == zone && v.kind == VolumeKind::Sbs)
            .ok_or_else(|| ApiError::NotFound {
                resource: "volume".to_owned(),
                id: id.to_owned(),
            })
    }

    #[allow(clippy::too_many_arguments)]
    fn new_volume(
        &mut self,
        zone: &str,
        name: &str,
        kind: VolumeKind,
        size: u64,
        project: &str,
        server: Option<&str>,
        parent: Option<String>,
        status: &'static str,
    ) -> String {
        let now = SystemTime::now();
        let seq = self.next_seq();
        let v = Volume {
            id: random_uuid(),
            zone: zone.to_owned(),
            name: name.to_owned(),
            kind,
            size,
            project: project.to_owned(),
            tags: Vec::new(),
            server: server.map(str::to_owned),
            status,
            pending: None,
            created: now,
            updated: now,
            parent_snapshot_id: parent,
            last_detached_at: None,
            reference_id: random_uuid(),
            reference_created: now,
            perf_iops: 5000,
            seq,
        };
        let id = v.id.clone();
        self.volumes.insert(id.clone(), v);
        id
    }

    /// `GET /block/.../volumes`.
    pub fn list_block_volumes(&self, zone: &str, filters: &ListFilters, page: Page) -> Reply {
        let mut vols: Vec<&Volume> = self
            .volumes
            .values()
            .filter(|v| v.zone == zone && v.kind == VolumeKind::Sbs)
            .filter(|v| filters.project.as_ref().is_none_or(|p| &v.project == p))
            .filter(|v| {
                filters
                    .name
                    .as_ref()
                    .is_none_or(|n| v.name.contains(n.as_str()))
            })
            .filter(|v| filters.tags.iter().all(|t| v.tags.contains(t)))
            .filter(|v| {
                filters
                    .product_resource_id
                    .as_ref()
                    .is_none_or(|s| v.server.as_ref() == Some(s))
            })
            .collect();
        vols.sort_by_key(|v| v.seq);
        let (items, total) = page.slice(vols);
        let items: Vec<Value> = items.into_iter().map(Self::block_json).collect();
        Reply {
            status: 200,
            body: Some(json!({"volumes": items, "total_count": total})),
            total: None,
        }
    }

    /// `POST /block/.../volumes` (`from_empty` or `from_snapshot`).
    ///
    /// # Errors
    /// `invalid_arguments` without a size source.
    pub fn create_block_volume(
        &mut self,
        zone: &str,
        body: &Value,
        now: Duration,
    ) -> Result<Reply> {
        let (size, parent) = if let Some(e) = body.get("from_empty").filter(|v| v.is_object()) {
            (e.get("size").and_then(Value::as_u64).unwrap_or(0), None)
        } else if let Some(s) = body.get("from_snapshot").filter(|v| v.is_object()) {
            let snap = s
                .get("snapshot_id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            (
                s.get("size").and_then(Value::as_u64).unwrap_or(20 * GB),
                Some(snap),
            )
        } else {
            return Err(ApiError::InvalidArguments {
                argument: "from_empty".to_owned(),
                help: "one of from_empty, from_snapshot must be set".to_owned(),
            });
        };
        if size < GB {
            return Err(ApiError::InvalidArguments {
                argument: "size".to_owned(),
                help: "size must be at least 1 GB".to_owned(),
            });
        }
        let name = body
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map_or_else(|| format!("vol-{}", &random_uuid()[..8]), str::to_owned);
        let project = body
            .get("project_id")
            .and_then(Value::as_str)
            .map_or_else(|| self.project.clone(), str::to_owned);
        let id = self.new_volume(
            zone,
            &name,
            VolumeKind::Sbs,
            size,
            &project,
            None,
            parent,
            "creating",
        );
        let due = now + self.scaled(durations::VOLUME_CREATE);
        if let Some(v) = self.volumes.get_mut(&id) {
            v.tags = str_list(body.get("tags"));
            if let Some(iops) = body
                .get("perf_iops")
                .and_then(Value::as_u64)
                .filter(|i| *i > 0)
            {
                v.perf_iops = iops;
            }
            v.pending = Some(due);
        }
        Ok(Reply::ok(Self::block_json(&self.volumes[&id])))
    }

    /// `GET /block/.../volumes/{id}`.
    ///
    /// # Errors
    /// `not_found`.
    pub fn get_block_volume(&self, zone: &str, id: &str) -> Result<Reply> {
        Ok(Reply::ok(Self::block_json(self.block_volume(zone, id)?)))
    }

    /// `PATCH /block/.../volumes/{id}`: `name`, `tags`, `perf_iops`, and
    /// `size` (grow only; the volume goes `updating` for a while).
    ///
    /// # Errors
    /// `not_found`; `transient_state` while `creating`/`updating`;
    /// `invalid_arguments` for a shrink.
    pub fn update_block_volume(
        &mut self,
        zone: &str,
        id: &str,
        body: &Value,
        now: Duration,
    ) -> Result<Reply> {
        let v = self.block_volume(zone, id)?;
        let new_size = body.get("size").and_then(Value::as_u64).filter(|s| *s > 0);
        if new_size.is_some() && v.pending.is_some() {
            return Err(ApiError::TransientState {
                resource: "volume".to_owned(),
                id: id.to_owned(),
                state: v.status.to_owned(),
            });
        }
        if let Some(size) = new_size {
            if size < v.size {
                return Err(ApiError::InvalidArguments {
                    argument: "size".to_owned(),
                    help: format!(
                        "volume size can only be increased (current size is {} bytes)",
                        v.size
                    ),
                });
            }
        }
        let due = now + self.scaled(durations::VOLUME_RESIZE);
        let v = self.volumes.get_mut(id).ok_or_else(|| ApiError::NotFound {
            resource: "volume".to_owned(),
            id: id.to_owned(),
        })?;
        if let Some(name) = body
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            v.name = name.to_owned();
        }
        if body.get("tags").is_some_and(Value::is_array) {
            v.tags = str_list(body.get("tags"));
        }
        if let Some(iops) = body
            .get("perf_iops")
            .and_then(Value::as_u64)
            .filter(|i| *i > 0)
        {
            v.perf_iops = iops;
        }
        if let Some(size) = new_size.filter(|s| *s > v.size) {
            v.size = size;
            v.status = "updating";
            v.pending = Some(due);
        }
        v.updated = SystemTime::now();
        Ok(Reply::ok(Self::block_json(v)))
    }

    /// `DELETE /block/.../volumes/{id}`: refused while attached.
    ///
    /// # Errors
    /// `not_found`; `precondition_failed` (`resource_still_in_use`) while
    /// attached; `transient_state` while `creating`/`updating`.
    pub fn delete_block_volume(&mut self, zone: &str, id: &str) -> Result<Reply> {
        let v = self.block_volume(zone, id)?;
        if v.server.is_some() {
            return Err(ApiError::PreconditionFailed {
                precondition: "resource_still_in_use".to_owned(),
                help: "volume is still attached to a server".to_owned(),
            });
        }
        if v.pending.is_some() {
            return Err(ApiError::TransientState {
                resource: "volume".to_owned(),
                id: id.to_owned(),
                state: v.status.to_owned(),
            });
        }
        self.volumes.remove(id);
        Ok(Reply::no_content())
    }

    // ----- images ------------------------------------------------------------

    fn image_json(&self, img: &ZoneImage) -> Value {
        let created = UNIX_EPOCH + Duration::from_secs(1_738_590_000);
        json!({
            "id": img.id,
            "name": img.label.name,
            "organization": catalog::PUBLIC_IMAGES_ORGANIZATION,
            "project": catalog::PUBLIC_IMAGES_ORGANIZATION,
            "root_volume": {"id": img.root_id, "name": img.label.name, "volume_type": img.root_volume_type(), "size": img.root_size},
            "extra_volumes": {},
            "public": true,
            "arch": "x86_64",
            "creation_date": date(created),
            "modification_date": date(created),
            "default_bootscript": null,
            "from_server": "",
            "state": "available",
            "tags": [],
            "zone": img.zone,
        })
    }

    /// `GET .../images` (public images; `name`, `arch`, `public` filters).
    pub fn list_images(
        &self,
        zone: &str,
        name: Option<&str>,
        arch: Option<&str>,
        public: Option<bool>,
        page: Page,
    ) -> Reply {
        let imgs: Vec<&ZoneImage> = self
            .images
            .iter()
            .filter(|i| i.zone == zone)
            .filter(|i| {
                name.is_none_or(|n| i.label.name.to_lowercase().contains(&n.to_lowercase()))
            })
            .filter(|_| arch.is_none_or(|a| a == "x86_64"))
            .filter(|_| public != Some(false))
            .collect();
        let (items, total) = page.slice(imgs);
        let items: Vec<Value> = items.into_iter().map(|i| self.image_json(i)).collect();
        Reply {
            status: 200,
            body: Some(json!({"images": items})),
            total: Some(total),
        }
    }

    /// `GET .../images/{id}`.
    ///
    /// # Errors
    /// `unknown_resource`.
    pub fn get_image(&self, zone: &str, id: &str) -> Result<Reply> {
        let img = self
            .images
            .iter()
            .find(|i| i.zone == zone && i.id == id)
            .ok_or_else(|| unknown("", id))?;
        Ok(Reply::ok(json!({"image": self.image_json(img)})))
    }

    /// The public images, for the marketplace.
    #[must_use]
    pub fn zone_images(&self) -> &[ZoneImage] {
        &self.images
    }

    // ----- products ------------------------------------------------------------

    /// `GET .../products/servers/availability`.
    pub fn availability(&self, zone: &str, page: Page) -> Reply {
        let types: Vec<_> = catalog::COMMERCIAL_TYPES
            .iter()
            .filter(|t| t.in_zone(zone))
            .collect();
        let (items, total) = page.slice(types);
        let servers: Map<String, Value> = items
            .into_iter()
            .map(|t| {
                (
                    t.name.to_owned(),
                    json!({"availability": self.stock_of(zone, t.name).as_str()}),
                )
            })
            .collect();
        Reply {
            status: 200,
            body: Some(json!({"servers": servers})),
            total: Some(total),
        }
    }

    // ----- servers -------------------------------------------------------------

    fn server(&self, zone: &str, id: &str) -> Result<&Server> {
        self.servers
            .get(id)
            .filter(|s| s.zone == zone)
            .ok_or_else(|| unknown("", id))
    }

    fn server_ip_json(
        id: &str,
        address: &str,
        ipam_id: &str,
        dynamic: bool,
        tags: &[String],
    ) -> Value {
        json!({
            "id": id,
            "address": address,
            "gateway": "62.210.0.1",
            "netmask": "32",
            "family": "inet",
            "dynamic": dynamic,
            "provisioning_mode": "dhcp",
            "tags": tags,
            "state": "attached",
            "ipam_id": ipam_id,
        })
    }

    fn allowed_actions(state: &str) -> Vec<&'static str> {
        match state {
            "stopped" => vec!["poweron", "backup"],
            "running" => vec![
                "poweroff",
                "terminate",
                "reboot",
                "stop_in_place",
                "backup",
                "enable_routed_ip",
            ],
            _ => vec![],
        }
    }

    fn server_json(&self, s: &Server) -> Value {
        let image = s
            .image
            .as_ref()
            .and_then(|id| self.images.iter().find(|i| &i.id == id && i.zone == s.zone))
            .map(|i| self.image_json(i));
        let volumes: Map<String, Value> = s
            .volumes
            .iter()
            .filter_map(|(slot, vid)| {
                let v = self.volumes.get(vid)?;
                Some((slot.clone(), self.server_volume_json(v, false)))
            })
            .collect();
        let mut public_ips: Vec<Value> = self
            .ips
            .values()
            .filter(|ip| ip.server.as_deref() == Some(s.id.as_str()) && ip.ip_type == "routed_ipv4")
            .map(|ip| Self::server_ip_json(&ip.id, &ip.address, &ip.ipam_id, false, &ip.tags))
            .collect();
        if let Some(d) = &s.dynamic_ip {
            public_ips.push(Self::server_ip_json(
                &d.id,
                &d.address,
                &d.ipam_id,
                true,
                &[],
            ));
        }
        let group = self
            .groups
            .get(&s.security_group)
            .map(|g| json!({"id": g.id, "name": g.name}));
        let ct = catalog::commercial_type(&s.commercial_type);
        let location = (s.state == "running" || s.state == "stopping").then(|| {
            json!({"cluster_id": "12", "hypervisor_id": "1402", "node_id": "7", "platform_id": "14", "zone_id": s.zone})
        });
        json!({
            "id": s.id,
            "name": s.name,
            "arch": "x86_64",
            "commercial_type": s.commercial_type,
            "boot_type": s.boot_type,
            "organization": s.project,
            "project": s.project,
            "hostname": s.name,
            "image": image,
            "volumes": volumes,
            "tags": s.tags,
            "state": s.state,
            "protected": s.protected,
            "state_detail": s.state_detail,
            "public_ip": public_ips.first().cloned(),
            "public_ips": public_ips,
            "mac_address": s.mac_address,
            "routed_ip_enabled": s.routed_ip_enabled,
            "ipv6": null,
            "extra_networks": [],
            "dynamic_ip_required": s.dynamic_ip_required,
            "enable_ipv6": s.enable_ipv6,
            "private_ip": null,
            "creation_date": date(s.created),
            "modification_date": date(s.modified),
            "bootscript": null,
            "security_group": group,
            "location": location,
            "maintenances": [],
            "allowed_actions": Self::allowed_actions(s.state),
            "placement_group": null,
            "private_nics": [],
            "zone": s.zone,
            "filesystems": [],
            "end_of_service": ct.is_none(),
        })
    }

    /// `GET .../servers`: filters `tags` (all must match), `name` (substring),
    /// `commercial_type`, `state`, `project`/`organization`, `servers` (ids);
    /// newest first.
    pub fn list_servers(&self, zone: &str, filters: &ListFilters, page: Page) -> Reply {
        let mut servers: Vec<&Server> = self
            .servers
            .values()
            .filter(|s| s.zone == zone && filters.matches_project(&s.project))
            .filter(|s| filters.tags.iter().all(|t| s.tags.contains(t)))
            .filter(|s| {
                filters
                    .name
                    .as_ref()
                    .is_none_or(|n| s.name.contains(n.as_str()))
            })
            .filter(|s| {
                filters
                    .commercial_type
                    .as_ref()
                    .is_none_or(|c| &s.commercial_type == c)
            })
            .filter(|s| filters.state.as_ref().is_none_or(|st| s.state == st))
            .filter(|s| filters.ids.is_empty() || filters.ids.contains(&s.id))
            .collect();
        servers.sort_by_key(|s| std::cmp::Reverse(s.seq));
        if filters.order_ascending {
            servers.reverse();
        }
        let (items, total) = page.slice(servers);
        let items: Vec<Value> = items.into_iter().map(|s| self.server_json(s)).collect();
        Reply {
            status: 200,
            body: Some(json!({"servers": items})),
            total: Some(total),
        }
    }

    /// `GET .../servers/{id}`.
    ///
    /// # Errors
    /// `unknown_resource`.
    pub fn get_server(&self, zone: &str, id: &str) -> Result<Reply> {
        Ok(Reply::ok(
            json!({"server": self.server_json(self.server(zone, id)?)}),
        ))
    }

    /// `POST .../servers`. See the module docs for the volumes it makes.
    ///
    /// # Errors
    /// `invalid_request_error` (unknown type or type not in the zone, local
    /// volumes on a type without local storage, bad local size), 404
    /// `unknown_resource` (image, security group, IP), 412 `out_of_stock`.
    pub fn create_server(&mut self, zone: &str, body: &Value) -> Result<Reply> {
        let type_name = body
            .get("commercial_type")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| invalid_field("commercial_type", "required field"))?;
        let ct = catalog::commercial_type(type_name).ok_or_else(|| {
            invalid_field(
                "commercial_type",
                format!("\"{type_name}\" is not a valid commercial type"),
            )
        })?;
        if !ct.in_zone(zone) {
            let zones = ct.zones.join(", ");
            return Err(invalid_field("commercial_type", format!("commercial type {type_name} is not available in zone {zone} (available in: {zones})")));
        }
        let project = body
            .get("project")
            .or_else(|| body.get("organization"))
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
            .map_or_else(|| self.project.clone(), str::to_owned);
        let image = match body
            .get("image")
            .and_then(Value::as_str)
            .filter(|i| !i.is_empty())
        {
            Some(id) => Some(
                self.images
                    .iter()
                    .find(|i| i.zone == zone && i.id == id)
                    .cloned()
                    .ok_or_else(|| unknown("", id))?,
            ),
            None => None,
        };
        let group = match id_field(body.get("security_group")) {
            Some(gid) => {
                self.group(zone, &gid)?;
                gid
            }
            None => self.default_group(zone, &project),
        };
        let mut flexible: Vec<String> = Vec::new();
        for ip_ref in id_field(body.get("public_ip"))
            .into_iter()
            .chain(str_list(body.get("public_ips")))
        {
            let ip = self.find_ip(zone, &ip_ref)?;
            if ip.server.is_some() {
                return Err(invalid_field(
                    "public_ip",
                    format!("ip {ip_ref} is already attached to a server"),
                ));
            }
            flexible.push(ip.id.clone());
        }
        // Volumes: what the request asks, or the image's root alone.
        let mut templates: BTreeMap<String, (String, u64, Option<String>)> = BTreeMap::new();
        if let Some(vols) = body.get("volumes").and_then(Value::as_object) {
            for (slot, t) in vols {
                let vt = t
                    .get("volume_type")
                    .and_then(Value::as_str)
                    .unwrap_or("l_ssd")
                    .to_owned();
                let size = t.get("size").and_then(Value::as_u64).unwrap_or(0);
                let name = t.get("name").and_then(Value::as_str).map(str::to_owned);
                if t.get("id").and_then(Value::as_str).is_some() {
                    return Err(invalid_field(
                        "volumes",
                        "attaching existing volumes at creation is not supported by this emulator",
                    ));
                }
                templates.insert(slot.clone(), (vt, size, name));
            }
        }
        if let Some(img) = &image {
            let root_type = if img.root_volume_type() == "l_ssd" {
                "l_ssd"
            } else {
                "sbs_volume"
            };
            let entry = templates
                .entry("0".to_owned())
                .or_insert_with(|| (root_type.to_owned(), 0, None));
            if entry.1 == 0 {
                // The real API fills the type's whole local storage (20 GB on
                // DEV1-S in the SDK's cassettes) or copies the SBS snapshot's
                // size (20 GB, seed 002).
                entry.1 = if entry.0 == "l_ssd" {
                    ct.local_max
                } else {
                    img.root_size
                };
            }
        }
        for (slot, (vt, size, _)) in &templates {
            match vt.as_str() {
                "l_ssd" => {
                    if !ct.takes_local_volumes() {
                        return Err(invalid_field("volumes", format!("commercial type {type_name} does not support local volumes (l_ssd): the total size of local-volume(s) must be equal to 0 GB")));
                    }
                }
                "sbs_volume" | "b_ssd" => {
                    if *size != 0 && *size < GB {
                        return Err(invalid_field(
                            "volumes",
                            format!("volume {slot}: size must be at least 1 GB"),
                        ));
                    }
                }
                other => {
                    return Err(invalid_field(
                        "volumes",
                        format!("volume {slot}: volume type \"{other}\" is not supported"),
                    ))
                }
            }
        }
        let local_total: u64 = templates
            .values()
            .filter(|(vt, _, _)| vt == "l_ssd")
            .map(|(_, s, _)| *s)
            .sum();
        if local_total > ct.local_max {
            return Err(invalid(format!(
                "The total size of local-volume(s) must be between 0 GB and {} GB for {type_name}",
                ct.local_max / GB
            )));
        }
        if self.stock_of(zone, type_name) == Stock::Shortage {
            return Err(ApiError::OutOfStock);
        }
        let now = SystemTime::now();
        let seq = self.next_seq();
        let id = random_uuid();
        let name = body
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map_or_else(|| format!("scw-{}", &id[..8]), str::to_owned);
        let mut volumes = BTreeMap::new();
        for (slot, (vt, size, vname)) in templates {
            let from_image = slot == "0" && image.is_some();
            let vname = vname.unwrap_or_else(|| {
                if from_image {
                    image
                        .as_ref()
                        .map(|i| i.label.name.to_owned())
                        .unwrap_or_default()
                } else {
                    format!("{name}-vol-{slot}")
                }
            });
            let (kind, size, status) = if vt == "l_ssd" {
                (VolumeKind::Local, size, "in_use")
            } else {
                (
                    VolumeKind::Sbs,
                    if size == 0 { 20 * GB } else { size },
                    "in_use",
                )
            };
            let parent = if from_image {
                image.as_ref().map(|i| i.root_id.clone())
            } else {
                None
            };
            let vid = self.new_volume(
                zone,
                &vname,
                kind,
                size,
                &project,
                Some(&id),
                parent.filter(|_| kind == VolumeKind::Sbs),
                status,
            );
            volumes.insert(slot, vid);
        }
        let mac = rand::random::<u32>();
        let server = Server {
            id: id.clone(),
            zone: zone.to_owned(),
            name,
            project,
            commercial_type: type_name.to_owned(),
            image: image.map(|i| i.id),
            volumes,
            tags: str_list(body.get("tags")),
            state: "stopped",
            state_detail: String::new(),
            protected: body
                .get("protected")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            dynamic_ip_required: body
                .get("dynamic_ip_required")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            routed_ip_enabled: body
                .get("routed_ip_enabled")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            enable_ipv6: body
                .get("enable_ipv6")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            boot_type: body
                .get("boot_type")
                .and_then(Value::as_str)
                .unwrap_or("local")
                .to_owned(),
            security_group: group,
            mac_address: format!(
                "de:00:00:{:02x}:{:02x}:{:02x}",
                (mac >> 16) & 0xff,
                (mac >> 8) & 0xff,
                mac & 0xff
            ),
            created: now,
            modified: now,
            dynamic_ip: None,
            pending: None,
            user_data: BTreeMap::new(),
            seq,
        };
        self.servers.insert(id.clone(), server);
        for ip in flexible {
            if let Some(ip) = self.ips.get_mut(&ip) {
                ip.server = Some(id.clone());
            }
        }
        Ok(Reply::created(
            json!({"server": self.server_json(&self.servers[&id])}),
        ))
    }

    /// `PATCH .../servers/{id}`: `name`, `tags`, `protected`,
    /// `dynamic_ip_required`, `routed_ip_enabled`, `enable_ipv6`,
    /// `security_group`, `boot_type`, `commercial_type` (stopped only).
    ///
    /// # Errors
    /// `unknown_resource`; `invalid_request_error` for a type change while
    /// not stopped or to a type not in the zone.
    pub fn update_server(&mut self, zone: &str, id: &str, body: &Value) -> Result<Reply> {
        let current = self.server(zone, id)?.clone();
        let group = match id_field(body.get("security_group")) {
            Some(gid) => Some(self.group(zone, &gid)?.id.clone()),
            None => None,
        };
        if let Some(t) = body
            .get("commercial_type")
            .and_then(Value::as_str)
            .filter(|t| *t != current.commercial_type)
        {
            if current.state != "stopped" {
                return Err(invalid(
                    "server must be stopped to change the commercial type",
                ));
            }
            let ct = catalog::commercial_type(t)
                .filter(|c| c.in_zone(zone))
                .ok_or_else(|| {
                    invalid_field(
                        "commercial_type",
                        format!("commercial type {t} is not available in zone {zone}"),
                    )
                })?;
            let has_local = current.volumes.values().any(|v| {
                self.volumes
                    .get(v)
                    .is_some_and(|v| v.kind == VolumeKind::Local)
            });
            if has_local && !ct.takes_local_volumes() {
                return Err(invalid_field(
                    "commercial_type",
                    format!("commercial type {t} does not support local volumes (l_ssd)"),
                ));
            }
        }
        let s = self.servers.get_mut(id).ok_or_else(|| unknown("", id))?;
        if let Some(v) = body
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            s.name = v.to_owned();
        }
        if body.get("tags").is_some_and(Value::is_array) {
            s.tags = str_list(body.get("tags"));
        }
        for (key, slot) in [
            ("protected", &mut s.protected),
            ("dynamic_ip_required", &mut s.dynamic_ip_required),
            ("routed_ip_enabled", &mut s.routed_ip_enabled),
            ("enable_ipv6", &mut s.enable_ipv6),
        ] {
            if let Some(v) = body.get(key).and_then(Value::as_bool) {
                *slot = v;
            }
        }
        if let Some(v) = body.get("boot_type").and_then(Value::as_str) {
            s.boot_type = v.to_owned();
        }
        if let Some(v) = body.get("commercial_type").and_then(Value::as_str) {
            s.commercial_type = v.to_owned();
        }
        if let Some(g) = group {
            s.security_group = g;
        }
        s.modified = SystemTime::now();
        Ok(Reply::ok(
            json!({"server": self.server_json(&self.servers[id])}),
        ))
    }

    /// `DELETE .../servers/{id}`: only a stopped, unprotected server. Local
    /// volumes go with it; SBS volumes are detached and stay (`available`).
    ///
    /// # Errors
    /// `unknown_resource`; `invalid_request_error` when not stopped or protected.
    pub fn delete_server(&mut self, zone: &str, id: &str) -> Result<Reply> {
        let s = self.server(zone, id)?.clone();
        if s.state != "stopped" {
            return Err(invalid("instance should be powered off."));
        }
        if s.protected {
            return Err(invalid(
                "server is protected: disable protection before deleting it",
            ));
        }
        self.remove_server(&s, false);
        Ok(Reply::no_content())
    }

    /// `POST .../servers/{id}/action`: `poweron`, `poweroff`, `reboot`,
    /// `terminate` (also `stop_in_place`, treated as `poweroff`). Answers
    /// 202 with a task.
    ///
    /// # Errors
    /// `unknown_resource`; `invalid_request_error` for an action the state
    /// does not allow, an unknown action, or a poweron while an attached
    /// volume is `updating`/`creating`; `out_of_stock` for a poweron while
    /// the type is in `shortage`.
    pub fn server_action(
        &mut self,
        zone: &str,
        id: &str,
        body: &Value,
        now: Duration,
    ) -> Result<Reply> {
        let action = body
            .get("action")
            .and_then(Value::as_str)
            .unwrap_or("poweron")
            .to_owned();
        let s = self.server(zone, id)?.clone();
        let (target, duration, next_state) = match action.as_str() {
            "poweron" => {
                if s.state != "stopped" {
                    return Err(invalid(format!(
                        "server should be stopped to be powered on (current state: {})",
                        s.state
                    )));
                }
                if let Some(v) = s
                    .volumes
                    .values()
                    .filter_map(|v| self.volumes.get(v))
                    .find(|v| v.pending.is_some())
                {
                    return Err(invalid(format!(
                        "volume {} is in a transient state: {}",
                        v.id, v.status
                    )));
                }
                if self.stock_of(zone, &s.commercial_type) == Stock::Shortage {
                    return Err(ApiError::OutOfStock);
                }
                (ServerPending::Running, durations::BOOT, "starting")
            }
            "poweroff" | "stop_in_place" => {
                if s.state != "running" {
                    return Err(invalid(format!(
                        "server should be running (current state: {})",
                        s.state
                    )));
                }
                (ServerPending::Stopped, durations::STOP, "stopping")
            }
            "reboot" => {
                if s.state != "running" {
                    return Err(invalid(format!(
                        "server should be running (current state: {})",
                        s.state
                    )));
                }
                (ServerPending::Running, durations::BOOT, "starting")
            }
            "terminate" => {
                if s.state != "running" {
                    return Err(invalid(format!(
                        "server should be running (current state: {})",
                        s.state
                    )));
                }
                if s.protected {
                    return Err(invalid(
                        "server is protected: disable protection before terminating it",
                    ));
                }
                (ServerPending::Terminated, durations::STOP, "stopping")
            }
            other => {
                return Err(invalid_field(
                    "action",
                    format!("\"{other}\" is not a valid action"),
                ))
            }
        };
        let due = now + self.scaled(duration);
        let srv = self.servers.get_mut(id).ok_or_else(|| unknown("", id))?;
        srv.state = next_state;
        srv.state_detail = if next_state == "starting" {
            "provisioning node".to_owned()
        } else {
            String::new()
        };
        srv.pending = Some((target, due));
        srv.modified = SystemTime::now();
        let started = SystemTime::now();
        let description = match action.as_str() {
            "poweron" => "server_batch_poweron",
            "poweroff" | "stop_in_place" => "server_poweroff",
            "reboot" => "server_reboot",
            _ => "server_terminate",
        };
        let task = json!({
            "id": random_uuid(),
            "description": description,
            "status": "pending",
            "href_from": format!("/servers/{id}/action"),
            "href_result": format!("/servers/{id}"),
            "started_at": date(started),
            "terminated_at": null,
            "progress": 0,
            "zone": zone,
        });
        Ok(Reply {
            status: 202,
            body: Some(json!({"task": task})),
            total: None,
        })
    }

    /// `POST .../servers/{id}/attach-volume` (an SBS volume).
    ///
    /// # Errors
    /// `unknown_resource`; `invalid_request_error` when the volume is in use.
    pub fn attach_volume(&mut self, zone: &str, id: &str, body: &Value) -> Result<Reply> {
        self.server(zone, id)?;
        let vid = body
            .get("volume_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let v = self
            .volumes
            .get(&vid)
            .filter(|v| v.zone == zone)
            .ok_or_else(|| unknown("", &vid))?;
        if v.server.is_some() {
            return Err(invalid(format!(
                "volume {vid} is already attached to a server"
            )));
        }
        let now = SystemTime::now();
        let s = self.servers.get_mut(id).ok_or_else(|| unknown("", id))?;
        let slot = (0..)
            .map(|i: u32| i.to_string())
            .find(|k| !s.volumes.contains_key(k))
            .unwrap_or_default();
        s.volumes.insert(slot, vid.clone());
        if let Some(v) = self.volumes.get_mut(&vid) {
            v.server = Some(id.to_owned());
            v.reference_id = random_uuid();
            v.reference_created = now;
            v.updated = now;
            if v.pending.is_none() {
                v.status = "in_use";
            }
        }
        Ok(Reply::ok(
            json!({"server": self.server_json(&self.servers[id])}),
        ))
    }

    /// `POST .../servers/{id}/detach-volume`.
    ///
    /// # Errors
    /// `unknown_resource`; `invalid_request_error` for a volume of another server.
    pub fn detach_volume(&mut self, zone: &str, id: &str, body: &Value) -> Result<Reply> {
        self.server(zone, id)?;
        let vid = body
            .get("volume_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let s = self.servers.get_mut(id).ok_or_else(|| unknown("", id))?;
        let slot = s
            .volumes
            .iter()
            .find(|(_, v)| **v == vid)
            .map(|(k, _)| k.clone())
            .ok_or_else(|| invalid(format!("volume {vid} is not attached to this server")))?;
        s.volumes.remove(&slot);
        let now = SystemTime::now();
        if let Some(v) = self.volumes.get_mut(&vid) {
            if v.kind == VolumeKind::Local {
                self.volumes.remove(&vid);
            } else {
                v.server = None;
                v.last_detached_at = Some(now);
                v.updated = now;
                if v.pending.is_none() {
                    v.status = "available";
                }
            }
        }
        Ok(Reply::ok(
            json!({"server": self.server_json(&self.servers[id])}),
        ))
    }

    /// `GET .../servers/{id}/user_data`.
    ///
    /// # Errors
    /// `unknown_resource`.
    pub fn list_user_data(&self, zone: &str, id: &str) -> Result<Reply> {
        let s = self.server(zone, id)?;
        Ok(Reply::ok(
            json!({"user_data": s.user_data.keys().collect::<Vec<_>>()}),
        ))
    }

    /// `GET .../servers/{id}/user_data/{key}`: the raw content.
    ///
    /// # Errors
    /// `unknown_resource` for the server or the key.
    pub fn get_user_data(&self, zone: &str, id: &str, key: &str) -> Result<Vec<u8>> {
        let s = self.server(zone, id)?;
        s.user_data
            .get(key)
            .cloned()
            .ok_or_else(|| unknown("", key))
    }

    /// `PATCH .../servers/{id}/user_data/{key}`.
    ///
    /// # Errors
    /// `unknown_resource`.
    pub fn set_user_data(
        &mut self,
        zone: &str,
        id: &str,
        key: &str,
        content: &[u8],
    ) -> Result<Reply> {
        self.server(zone, id)?;
        if let Some(s) = self.servers.get_mut(id) {
            s.user_data.insert(key.to_owned(), content.to_vec());
        }
        Ok(Reply::no_content())
    }

    /// `DELETE .../servers/{id}/user_data/{key}`.
    ///
    /// # Errors
    /// `unknown_resource`.
    pub fn delete_user_data(&mut self, zone: &str, id: &str, key: &str) -> Result<Reply> {
        self.server(zone, id)?;
        let s = self.servers.get_mut(id).ok_or_else(|| unknown("", id))?;
        s.user_data.remove(key).ok_or_else(|| unknown("", key))?;
        Ok(Reply::no_content())
    }

    /// Everything, for test assertions.
    #[must_use]
    pub fn snapshot(&self) -> Value {
        let servers: Vec<Value> = self.servers.values().map(|s| self.server_json(s)).collect();
        let volumes: Vec<Value> = self
            .volumes
            .values()
            .filter(|v| v.kind == VolumeKind::Sbs)
            .map(Self::block_json)
            .collect();
        let local: Vec<Value> = self
            .volumes
            .values()
            .filter(|v| v.kind == VolumeKind::Local)
            .map(|v| self.server_volume_json(v, false))
            .collect();
        let ips: Vec<Value> = self.ips.values().map(|ip| self.ip_json(ip)).collect();
        let groups: Vec<Value> = self
            .groups
            .values()
            .map(|g| {
                let mut j = self.group_json(g);
                j["rules"] = g
                    .rules
                    .iter()
                    .map(|r| Self::rule_json(&g.zone, r))
                    .collect();
                j
            })
            .collect();
        let stock: Vec<Value> = self
            .stock
            .iter()
            .map(
                |((zone, ct), s)| json!({"zone": zone, "commercial_type": ct, "stock": s.as_str()}),
            )
            .collect();
        let ip_map: Map<String, Value> = self
            .ip_map
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.to_string())))
            .collect();
        json!({
            "servers": servers,
            "volumes": volumes,
            "local_volumes": local,
            "ips": ips,
            "security_groups": groups,
            "stock": stock,
            "ip_map": ip_map,
        })
    }
}

/// Filters shared by the list endpoints (each uses the ones it knows).
#[derive(Debug, Clone, Default)]
pub struct ListFilters {
    /// `project` / `project_id`.
    pub project: Option<String>,
    /// `organization` / `organization_id`.
    pub organization: Option<String>,
    /// `name` (substring).
    pub name: Option<String>,
    /// `tags` (every one must be present).
    pub tags: Vec<String>,
    /// `commercial_type`.
    pub commercial_type: Option<String>,
    /// `state`.
    pub state: Option<String>,
    /// `servers` (ids).
    pub ids: Vec<String>,
    /// `order=creation_date_asc`.
    pub order_ascending: bool,
    /// `type` of IPs.
    pub ip_type: Option<String>,
    /// `project_default` of security groups.
    pub project_default: Option<bool>,
    /// `product_resource_id` of block volumes.
    pub product_resource_id: Option<String>,
}

impl ListFilters {
    fn matches_project(&self, project: &str) -> bool {
        self.project.as_ref().is_none_or(|p| p == project)
            && self.organization.as_ref().is_none_or(|o| o == project)
    }
}

#[cfg(test)]
mod tests;
