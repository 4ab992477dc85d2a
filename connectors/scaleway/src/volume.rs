//! `scaleway.volume.resize` and `scaleway.security_group.ensure_ports`.
//!
//! ## What it does
//! `volume.resize` grows a Block API volume (`PATCH /block/v1/zones/ZONE/volumes/ID` with the
//! size in bytes) and waits until the resize is over; it never shrinks. `security_group.ensure_ports`
//! adds an inbound TCP accept rule for each port no rule opens yet, and records the rules it
//! added as a resource.
//! ## Undo
//! `volume.resize`: none (a volume cannot shrink). `ensure_ports`: deletes exactly the rules it added.
//! ## Errors
//! `invalid` (shrink, bad port), `not_found`, `timeout`, `auth`, `transient`.
//! ## Example
//! `uses: scaleway.security_group.ensure_ports` `with: {zone: fr-par-2, security_group_id: ..., ports: [22, 8000, 8080]}`

use std::time::Duration;

use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, ResourceRecord, StepContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::client::Scw;
use crate::ops::{self, AddedRule};

/// Input of `scaleway.volume.resize`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResizeInput {
    /// Zone (default: the connector's).
    #[serde(default)]
    pub zone: Option<String>,
    /// Block volume id.
    pub volume_id: String,
    /// New size, GB (grow only).
    pub size_gb: u64,
    /// Seconds to wait for the resize (default 600).
    #[serde(default = "default_resize_timeout")]
    pub timeout: u64,
}

fn default_resize_timeout() -> u64 {
    600
}

/// Output of `scaleway.volume.resize`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ResizeOutput {
    /// Volume id.
    pub volume_id: String,
    /// Size before, GB.
    pub previous_size_gb: u64,
    /// Size now, GB.
    pub size_gb: u64,
    /// Status now (`available` or `in_use`).
    pub status: String,
    /// Whether it grew (false when it already had the size).
    pub resized: bool,
}

/// `scaleway.volume.resize`.
#[derive(Debug, Clone, Copy, Default)]
pub struct VolumeResize;

#[async_trait]
impl Action for VolumeResize {
    const ID: &'static str = "scaleway.volume.resize";
    const DESCRIPTION: &'static str = "grow a block volume and wait until the resize is over (never shrinks)";
    type Input = ResizeInput;
    type Output = ResizeOutput;

    fn validate(&self, input: &Self::Input) -> Result<(), ConnectorError> {
        if input.size_gb == 0 || input.size_gb > 10_000 {
            return Err(ConnectorError::invalid(format!("size_gb {} is out of range (1 to 10000)", input.size_gb)));
        }
        Ok(())
    }

    async fn run(&self, input: Self::Input, cx: &StepContext) -> Result<Self::Output, ConnectorError> {
        let scw = Scw::for_step(cx, input.zone.as_deref())?;
        cx.progress("resizing", Some(10));
        let (before, v) = ops::resize_volume(&scw, cx, &input.volume_id, input.size_gb, Duration::from_secs(input.timeout)).await?;
        cx.progress("resized", Some(100));
        let size_gb = ops::size_gb(&v);
        Ok(ResizeOutput { volume_id: input.volume_id, previous_size_gb: before, size_gb, status: ops::str_of(&v, "status"), resized: size_gb > before })
    }
}

/// The kind of resource `scaleway.security_group.ensure_ports` records.
pub const RULES_KIND: &str = "scaleway.security_group_rules";

/// Input of `scaleway.security_group.ensure_ports`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnsurePortsInput {
    /// Zone (default: the connector's).
    #[serde(default)]
    pub zone: Option<String>,
    /// Security group id; or give `server_id` to use the server's group.
    #[serde(default)]
    pub security_group_id: Option<String>,
    /// A server whose security group to use.
    #[serde(default)]
    pub server_id: Option<String>,
    /// TCP ports to open.
    pub ports: Vec<u16>,
    /// Source (default `0.0.0.0/0`).
    #[serde(default = "default_range")]
    pub ip_range: String,
}

fn default_range() -> String {
    "0.0.0.0/0".into()
}

/// Output of `scaleway.security_group.ensure_ports`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct EnsurePortsOutput {
    /// The group.
    pub security_group_id: String,
    /// Rules added by this step.
    pub added: Vec<AddedRule>,
    /// Ports that were open already.
    pub already_open: Vec<u16>,
}

/// `scaleway.security_group.ensure_ports`.
#[derive(Debug, Clone, Copy, Default)]
pub struct EnsurePorts;

#[async_trait]
impl Action for EnsurePorts {
    const ID: &'static str = "scaleway.security_group.ensure_ports";
    const DESCRIPTION: &'static str = "open TCP ports in a security group, adding only the missing rules (undo removes those)";
    const RESOURCE: Option<&'static str> = Some(RULES_KIND);
    type Input = EnsurePortsInput;
    type Output = EnsurePortsOutput;

    fn validate(&self, input: &Self::Input) -> Result<(), ConnectorError> {
        if input.security_group_id.is_none() == input.server_id.is_none() {
            return Err(ConnectorError::invalid("give security_group_id or server_id (one of them)"));
        }
        if input.ports.is_empty() || input.ports.contains(&0) {
            return Err(ConnectorError::invalid("ports: give one or more TCP ports (1-65535)"));
        }
        if !input.ip_range.contains('/') {
            return Err(ConnectorError::invalid(format!("ip_range {:?} is not a CIDR", input.ip_range)));
        }
        Ok(())
    }

    async fn run(&self, input: Self::Input, cx: &StepContext) -> Result<Self::Output, ConnectorError> {
        let scw = Scw::for_step(cx, input.zone.as_deref())?;
        let group = match (&input.security_group_id, &input.server_id) {
            (Some(g), _) => g.clone(),
            (None, Some(s)) => {
                let server = ops::get_server(&scw, cx, s).await?.ok_or_else(|| ConnectorError::not_found(format!("server {s} not found in {}", scw.zone())))?;
                ops::server_group(&server).ok_or_else(|| ConnectorError::invalid(format!("server {s} has no security group")))?
            }
            (None, None) => return Err(ConnectorError::invalid("give security_group_id or server_id")),
        };
        let existing = ops::rules(&scw, cx, &group).await?;
        let missing = ops::missing_ports(&existing, &input.ports, &input.ip_range);
        let mut already_open: Vec<u16> = input.ports.iter().copied().filter(|p| !missing.contains(p)).collect();
        already_open.sort_unstable();
        already_open.dedup();
        let mut added = Vec::new();
        if !missing.is_empty() {
            let key = cx.idempotency_key();
            let rec = cx.intend(RULES_KIND, &key).await?;
            // Recorded before the rules exist: by port, so undo finds them even if the ids never come back.
            let pending: Vec<AddedRule> = missing.iter().map(|p| AddedRule { port: *p, id: String::new() }).collect();
            let rec = cx.confirm(rec, group.clone(), json!({"zone": scw.zone(), "security_group_id": group, "ip_range": input.ip_range, "rules": pending})).await?;
            added = ops::add_rules(&scw, cx, &group, &missing, &input.ip_range).await?;
            cx.confirm(rec, group.clone(), json!({"zone": scw.zone(), "security_group_id": group, "ip_range": input.ip_range, "rules": added})).await?;
        }
        cx.progress("ports open", Some(100));
        Ok(EnsurePortsOutput { security_group_id: group, added, already_open })
    }

    async fn undo(&self, record: &ResourceRecord, cx: &StepContext) -> Result<(), ConnectorError> {
        let zone = record.undo.get("zone").and_then(Value::as_str);
        let Some(group) = record.undo.get("security_group_id").and_then(Value::as_str) else {
            return Err(ConnectorError::not_found(format!("no rule was added by {}", record.key)));
        };
        let scw = Scw::for_step(cx, zone)?;
        let rules: Vec<AddedRule> = record.undo.get("rules").cloned().and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default();
        let ids: Vec<String> = rules.iter().map(|r| r.id.clone()).filter(|i| !i.is_empty()).collect();
        let ports: Vec<u16> = rules.iter().filter(|r| r.id.is_empty()).map(|r| r.port).collect();
        let range = record.undo.get("ip_range").and_then(Value::as_str).unwrap_or("0.0.0.0/0");
        let n = ops::delete_rules(&scw, cx, group, &ids, &ports, range).await?;
        if n == 0 {
            return Err(ConnectorError::not_found(format!("the rules {} added to {group} are gone", record.key)));
        }
        Ok(())
    }
}
