//! `aws.security_group.create`: a security group with the given TCP ports open to the given
//! sources, and nothing else inbound.
//!
//! ## What it does
//! Gets or creates the group `name` (tagged `engine:run`/`engine:step`/`engine:key`; a group of
//! that name with another key is a `conflict`), in `vpc_id` or the default VPC, and authorizes
//! `ports` from `cidrs`.
//! ## Undo
//! Deletes the group, retrying `DependencyViolation` for two minutes; gone counts as done.
//! ## Errors
//! `conflict`, `quota` (`SecurityGroupLimitExceeded`), `invalid`, `auth`, `transient`.
//! ## Example
//! `uses: aws.security_group.create` `with: {name: web, ports: [443]}`

use std::time::Duration;

use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, ResourceRecord, StepContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::client::Ec2;
use crate::ops::{self, Ingress};

/// The kind of resource `aws.security_group.create` records.
pub const KIND: &str = "aws.security_group";

/// Input of `aws.security_group.create`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SgCreateInput {
    /// Region (default: the connector's).
    #[serde(default)]
    pub region: Option<String>,
    /// Group name (default `engine-` and a hash of the step's key).
    #[serde(default)]
    pub name: Option<String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// VPC (default: the region's default VPC).
    #[serde(default)]
    pub vpc_id: Option<String>,
    /// TCP ports to open (none by default).
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Sources allowed (default `0.0.0.0/0`).
    #[serde(default)]
    pub cidrs: Vec<String>,
}

/// Output of `aws.security_group.create`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SgCreateOutput {
    /// `sg-...`.
    pub security_group_id: String,
    /// The name.
    pub name: String,
    /// Region.
    pub region: String,
    /// Ports open.
    pub ports: Vec<u16>,
    /// True when an earlier attempt's group was adopted.
    pub adopted: bool,
}

/// `aws.security_group.create`.
#[derive(Debug, Clone, Default)]
pub struct SecurityGroupCreate;

#[async_trait]
impl Action for SecurityGroupCreate {
    const ID: &'static str = "aws.security_group.create";
    const DESCRIPTION: &'static str = "a security group with only the given TCP ports open";
    const RESOURCE: Option<&'static str> = Some(KIND);
    type Input = SgCreateInput;
    type Output = SgCreateOutput;

    fn validate(&self, input: &Self::Input) -> Result<(), ConnectorError> {
        if input.ports.contains(&0) {
            return Err(ConnectorError::invalid("port 0 is not a port"));
        }
        if let Some(c) = input.cidrs.iter().find(|c| !c.contains('/')) {
            return Err(ConnectorError::invalid(format!("cidrs: {c:?} is not a CIDR (like 203.0.113.0/24)")));
        }
        if let Some(n) = &input.name {
            if n.is_empty() || n.len() > 255 || n.starts_with("sg-") {
                return Err(ConnectorError::invalid(format!("invalid security group name {n:?}: 1 to 255 characters, not starting with sg-")));
            }
        }
        Ok(())
    }

    async fn run(&self, input: Self::Input, cx: &StepContext) -> Result<Self::Output, ConnectorError> {
        let ec2 = Ec2::for_step(cx, input.region.as_deref())?;
        let key = cx.idempotency_key();
        let name = input.name.clone().unwrap_or_else(|| format!("engine-{}", ops::key_hash(&key)));
        let rec = cx.intend(KIND, &key).await?;
        let description = input.description.clone().unwrap_or_else(|| format!("engine {key}"));
        let (id, created) =
            ops::ensure_group(&ec2, cx, &name, &description, input.vpc_id.as_deref(), &ops::engine_tags(cx), &Ingress { ports: input.ports.clone(), cidrs: input.cidrs.clone() }).await?;
        cx.confirm(rec, id.clone(), json!({"region": ec2.region(), "name": name, "vpc_id": input.vpc_id})).await?;
        Ok(SgCreateOutput { security_group_id: id, name, region: ec2.region().to_string(), ports: input.ports, adopted: !created })
    }

    async fn undo(&self, record: &ResourceRecord, cx: &StepContext) -> Result<(), ConnectorError> {
        let ec2 = Ec2::for_step(cx, record.undo.get("region").and_then(Value::as_str))?;
        let id = match &record.id {
            Some(id) => Some(id.clone()),
            None => ops::find_groups_by_key(&ec2, cx, &record.key).await?.into_iter().next(),
        };
        let Some(id) = id else { return Err(ConnectorError::not_found(format!("no security group of {}", record.key))) };
        if ops::delete_group(&ec2, cx, &id, Duration::from_secs(120)).await? {
            Ok(())
        } else {
            Err(ConnectorError::not_found(format!("security group {id} is already gone")))
        }
    }
}
