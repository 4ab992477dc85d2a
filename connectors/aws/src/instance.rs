//! `aws.instance.create` and `aws.instance.terminate`.
//!
//! ## What it does
//! `create` picks the instance type (`instance_type`, or `gpu: {type, count}` through seed 003's
//! table), the image (`ami: auto` = [`crate::ami::lookup`]), writes the GPU setup user data of
//! seed 001 (plus the step's own `user_data` after it), makes a security group with only
//! `open_ports` (none by default) unless `security_group_ids` is given, and launches one
//! instance with an encrypted gp3 root volume, tags `engine:run`/`engine:step`/`engine:key` and a
//! `ClientToken` derived from the step's idempotency key. It records the intent before
//! `RunInstances`, confirms the instance (and group) right after, then waits for `running` and
//! for both status checks to be `ok`, reporting progress.
//!
//! A retry or a resumed run adopts the live instance tagged with its key, or gets the same
//! instance back from EC2 through the `ClientToken`: never a second one.
//! ## Undo
//! Terminates the instance, waits for `terminated`, deletes the group it made (retrying
//! `DependencyViolation` briefly). Gone counts as done; a record without an id is found by tag.
//! ## Errors
//! `capacity` (`InsufficientInstanceCapacity`...), `quota` (`VcpuLimitExceeded`...), `invalid`,
//! `auth`, `transient`, `timeout`, `conflict` (`IdempotentParameterMismatch`).
//! ## Example
//! `uses: aws.instance.create` `with: {gpu: {type: nvidia-t4, count: 1}, volume_gb: 100}`

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, LogStream, ResourceRecord, StepContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::ami::{self, AmiLookupInput};
use crate::catalog::{self, GpuInstance};
use crate::client::{child, parse, text, Ec2, Params, Settings};
use crate::ops::{self, Ingress, TAG_KEY};
use crate::userdata::{self, GpuSetup};

/// The kind of resource `aws.instance.create` records.
pub const KIND: &str = "aws.instance";

/// GPUs asked by type and count.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuAsk {
    /// `nvidia-t4`, `nvidia-a10g`, `nvidia-v100`, `nvidia-a100`, `nvidia-l4`, `nvidia-l40s`, `nvidia-h100` (or `T4`...).
    #[serde(rename = "type")]
    pub gpu_type: String,
    /// GPUs (default 1).
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

/// Input of `aws.instance.create`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInput {
    /// Region (default: the connector's).
    #[serde(default)]
    pub region: Option<String>,
    /// Name tag (default `engine-STEP`).
    #[serde(default)]
    pub name: Option<String>,
    /// EC2 instance type; or give `gpu`.
    #[serde(default)]
    pub instance_type: Option<String>,
    /// GPU type and count, turned into an instance type (seed 003's table).
    #[serde(default)]
    pub gpu: Option<GpuAsk>,
    /// `auto` (default: newest Deep Learning AMI, else Ubuntu plus driver install) or an AMI id.
    #[serde(default = "auto")]
    pub ami: String,
    /// Generate the GPU setup user data (default: true for GPU instance types).
    #[serde(default)]
    pub gpu_setup: Option<bool>,
    /// Make `nvidia` Docker's default runtime (default true).
    #[serde(default = "yes")]
    pub docker_default_runtime: bool,
    /// User data of your own; runs after the generated GPU part.
    #[serde(default)]
    pub user_data: Option<String>,
    /// A spot instance.
    #[serde(default)]
    pub spot: bool,
    /// Highest spot price, USD per hour (default: the on-demand price).
    #[serde(default)]
    pub max_price: Option<f64>,
    /// Root volume size, GiB (encrypted gp3).
    #[serde(default = "default_volume")]
    pub volume_gb: u32,
    /// KMS key for the root volume (default: the account's EBS key).
    #[serde(default)]
    pub kms_key_id: Option<String>,
    /// IAM instance profile, by name or ARN.
    #[serde(default)]
    pub iam_instance_profile: Option<String>,
    /// Security groups to use; when absent one is made with only `open_ports`.
    #[serde(default)]
    pub security_group_ids: Option<Vec<String>>,
    /// TCP ports to open in the group made for the instance (none by default).
    #[serde(default)]
    pub open_ports: Vec<u16>,
    /// Sources allowed to reach `open_ports` (default `0.0.0.0/0`).
    #[serde(default)]
    pub ingress_cidrs: Vec<String>,
    /// Subnet.
    #[serde(default)]
    pub subnet_id: Option<String>,
    /// EC2 key pair for SSH.
    #[serde(default)]
    pub key_name: Option<String>,
    /// Availability zone.
    #[serde(default)]
    pub availability_zone: Option<String>,
    /// Tags of your own.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// `status_ok` (default: running and both status checks ok), `running`, or `none`.
    #[serde(default = "default_wait")]
    pub wait_for: String,
    /// Seconds to wait (default 900).
    #[serde(default = "default_timeout")]
    pub timeout: u64,
}

fn auto() -> String {
    "auto".into()
}
fn yes() -> bool {
    true
}
fn default_volume() -> u32 {
    100
}
fn default_wait() -> String {
    "status_ok".into()
}
fn default_timeout() -> u64 {
    900
}

/// GPUs of a server (the common outputs).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct GpuInfo {
    /// `NVIDIA T4`.
    pub model: String,
    /// GPUs.
    pub count: u32,
    /// Memory of one GPU, GiB.
    pub memory_gb: u32,
}

/// Output of `aws.instance.create`: the common server outputs plus EC2's own.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CreateOutput {
    /// Instance id.
    pub id: String,
    /// Name tag.
    pub name: String,
    /// `aws`.
    pub provider: String,
    /// Availability zone.
    pub zone: String,
    /// Region.
    pub region: String,
    /// Instance type.
    pub instance_type: String,
    /// Public IPv4, if any.
    pub public_ip: Option<String>,
    /// Private IPv4.
    pub private_ip: Option<String>,
    /// AMI id.
    pub image: String,
    /// GPUs (null for a type the catalogue does not know).
    pub gpu: Option<GpuInfo>,
    /// USD per hour: the table's on-demand price, or `max_price`/typical spot for spot.
    pub hourly_price: Option<f64>,
    /// Login user.
    pub ssh_user: String,
    /// Instance id.
    pub instance_id: String,
    /// Availability zone.
    pub availability_zone: String,
    /// A spot instance.
    pub spot: bool,
    /// `nvidia-t4`...
    pub gpu_type: Option<String>,
    /// GPUs.
    pub gpu_count: u32,
    /// The group made for the instance (or the first one given).
    pub security_group_id: Option<String>,
    /// True when no Deep Learning AMI was found and the driver is installed by user data.
    pub ami_fallback: bool,
    /// True when an earlier attempt's instance was adopted.
    pub adopted: bool,
    /// EC2 state at the end (`running`).
    pub state: String,
}

/// `aws.instance.create`.
#[derive(Debug, Clone, Default)]
pub struct InstanceCreate;

fn resolve_type(input: &CreateInput) -> Result<(String, Option<&'static GpuInstance>), ConnectorError> {
    match (&input.instance_type, &input.gpu) {
        (Some(_), Some(_)) => Err(ConnectorError::invalid("give `instance_type` or `gpu`, not both")),
        (None, None) => Err(ConnectorError::invalid("give `instance_type` or `gpu: {type, count}`")),
        (Some(t), None) => Ok((t.clone(), catalog::by_type(t))),
        (None, Some(g)) => {
            let c = catalog::select(&g.gpu_type, g.count)?;
            Ok((c.instance_type.to_string(), Some(c)))
        }
    }
}

fn validate_create(input: &CreateInput) -> Result<(), ConnectorError> {
    resolve_type(input)?;
    if input.ami != "auto" && !input.ami.starts_with("ami-") {
        return Err(ConnectorError::invalid(format!("ami must be `auto` or an AMI id (ami-...), not {:?}", input.ami)));
    }
    if !matches!(input.wait_for.as_str(), "status_ok" | "running" | "none") {
        return Err(ConnectorError::invalid(format!("wait_for must be status_ok, running or none, not {:?}", input.wait_for)));
    }
    if input.max_price.is_some() && !input.spot {
        return Err(ConnectorError::invalid("max_price needs spot: true"));
    }
    if input.max_price.is_some_and(|p| p <= 0.0) {
        return Err(ConnectorError::invalid("max_price must be positive"));
    }
    if !(1..=16384).contains(&input.volume_gb) {
        return Err(ConnectorError::invalid(format!("volume_gb must be between 1 and 16384 (gp3), not {}", input.volume_gb)));
    }
    if input.security_group_ids.is_some() && !input.open_ports.is_empty() {
        return Err(ConnectorError::invalid("open_ports applies to the group made for the instance; with security_group_ids, open ports in those groups (aws.security_group.create)"));
    }
    if input.open_ports.contains(&0) {
        return Err(ConnectorError::invalid("port 0 is not a port"));
    }
    for c in &input.ingress_cidrs {
        if !c.contains('/') {
            return Err(ConnectorError::invalid(format!("ingress_cidrs: {c:?} is not a CIDR (like 203.0.113.0/24)")));
        }
    }
    if let Some(u) = &input.user_data {
        if u.len() > userdata::MAX_USER_DATA {
            return Err(ConnectorError::invalid(format!("user_data is {} bytes; EC2 accepts at most {}", u.len(), userdata::MAX_USER_DATA)));
        }
    }
    for k in input.tags.keys() {
        if k.starts_with("engine:") || k.starts_with("aws:") {
            return Err(ConnectorError::invalid(format!("tag {k:?}: the `engine:` and `aws:` prefixes are reserved")));
        }
    }
    Ok(())
}

/// The `RunInstances` parameters (pure, for tests).
#[allow(clippy::too_many_arguments)]
#[must_use]
pub fn run_params(input: &CreateInput, instance_type: &str, image_id: &str, root_device: &str, user_data: Option<&str>, groups: &[String], tags: &[(String, String)], token: &str) -> Params {
    let mut p = Params::new();
    p.set("ImageId", image_id).set("InstanceType", instance_type).set("MinCount", "1").set("MaxCount", "1").set("ClientToken", token);
    p.set("BlockDeviceMapping.1.DeviceName", root_device)
        .set("BlockDeviceMapping.1.Ebs.VolumeSize", input.volume_gb.to_string())
        .set("BlockDeviceMapping.1.Ebs.VolumeType", "gp3")
        .set("BlockDeviceMapping.1.Ebs.Encrypted", "true")
        .set("BlockDeviceMapping.1.Ebs.DeleteOnTermination", "true");
    if let Some(k) = &input.kms_key_id {
        p.set("BlockDeviceMapping.1.Ebs.KmsKeyId", k);
    }
    if let Some(u) = user_data {
        p.set("UserData", userdata::encode(u));
    }
    p.list("SecurityGroupId", groups);
    if let Some(s) = &input.subnet_id {
        p.set("SubnetId", s);
    }
    if let Some(k) = &input.key_name {
        p.set("KeyName", k);
    }
    if let Some(z) = &input.availability_zone {
        p.set("Placement.AvailabilityZone", z);
    }
    if let Some(profile) = &input.iam_instance_profile {
        if profile.starts_with("arn:") {
            p.set("IamInstanceProfile.Arn", profile);
        } else {
            p.set("IamInstanceProfile.Name", profile);
        }
    }
    if input.spot {
        p.set("InstanceMarketOptions.MarketType", "spot")
            .set("InstanceMarketOptions.SpotOptions.SpotInstanceType", "one-time")
            .set("InstanceMarketOptions.SpotOptions.InstanceInterruptionBehavior", "terminate");
        if let Some(m) = input.max_price {
            p.set("InstanceMarketOptions.SpotOptions.MaxPrice", format!("{m}"));
        }
    }
    ops::tag_specs(&mut p, &["instance", "volume"], tags);
    p
}

/// The name of the group made for an instance of key `key`.
#[must_use]
pub fn group_name(key: &str) -> String {
    format!("engine-{}", ops::key_hash(key))
}

async fn subnet_vpc(ec2: &Ec2, cx: &StepContext, subnet: &str) -> Result<String, ConnectorError> {
    let mut p = Params::new();
    p.set("SubnetId.1", subnet);
    let xml = ec2.call(cx, "DescribeSubnets", &p.0).await?;
    let doc = parse("DescribeSubnets", &xml)?;
    crate::client::items(doc.root_element(), "subnetSet").into_iter().find_map(|s| text(s, "vpcId")).ok_or_else(|| ConnectorError::invalid(format!("subnet {subnet} not found")))
}

#[async_trait]
impl Action for InstanceCreate {
    const ID: &'static str = "aws.instance.create";
    const DESCRIPTION: &'static str = "launch an EC2 (GPU) instance: Deep Learning AMI, GPU setup user data, encrypted gp3, spot, own security group; waits until it runs";
    const RESOURCE: Option<&'static str> = Some(KIND);
    type Input = CreateInput;
    type Output = CreateOutput;

    fn validate(&self, input: &Self::Input) -> Result<(), ConnectorError> {
        validate_create(input)
    }

    /// From the dated table: on-demand, or for spot the `max_price` asked, else the typical
    /// spot discount. Types outside the GPU catalogue have no price here.
    fn price(&self, input: &Self::Input) -> Option<engine_connector::Price> {
        let (_, gpu) = resolve_type(input).ok()?;
        let g = gpu?;
        let (per_hour, what) = match (input.spot, input.max_price) {
            (false, _) => (g.on_demand, "on-demand list price"),
            (true, Some(max)) => (max, "spot, at most max_price"),
            (true, None) => (catalog::typical_spot(g), "typical spot price"),
        };
        Some(engine_connector::Price { per_hour, currency: "USD".into(), source: format!("AWS {what}, us-east-1, table of {}", catalog::PRICE_TABLE_DATE) })
    }

    #[allow(clippy::too_many_lines)]
    async fn run(&self, input: Self::Input, cx: &StepContext) -> Result<Self::Output, ConnectorError> {
        let ec2 = Ec2::for_step(cx, input.region.as_deref())?;
        let settings = Settings::from_context(cx)?;
        let (instance_type, gpu) = resolve_type(&input)?;
        let key = cx.idempotency_key();
        let name = input.name.clone().unwrap_or_else(|| format!("engine-{}", cx.step.step));

        // The image.
        cx.progress("choosing the image", Some(5));
        // Graviton GPU instances (g5g) are arm64; every other GPU family is x86_64.
        let arch = if catalog::family(&instance_type) == "g5g" { "arm64" } else { "x86_64" };
        let (image, fallback) = if input.ami == "auto" {
            let l = ami::lookup(
                &ec2,
                cx,
                &AmiLookupInput { region: None, architecture: arch.into(), name_patterns: None, owners: None, fallback: true, fallback_name_patterns: None, cache: true },
                settings.ami_cache_file.as_deref(),
            )
            .await?;
            let fb = l.fallback;
            (l, fb)
        } else {
            (ami::describe_one(&ec2, cx, &input.ami).await?, false)
        };

        // The user data.
        let gpu_setup = input.gpu_setup.unwrap_or(gpu.is_some());
        // A Deep Learning AMI ships the driver and CUDA; any other image gets them installed.
        let needs_driver = fallback || !image.name.to_ascii_lowercase().contains("deep learning");
        let generated = gpu_setup.then(|| userdata::gpu_script(GpuSetup { install_driver: needs_driver, install_cuda: needs_driver, default_runtime: input.docker_default_runtime }));
        let user_data = userdata::compose(generated, input.user_data.as_deref())?;

        let mut tags = vec![("Name".to_string(), name.clone())];
        tags.extend(ops::engine_tags(cx));
        tags.extend(input.tags.iter().map(|(k, v)| (k.clone(), v.clone())));

        // Intent first: nothing is made before it is stored.
        let rec = cx.intend(KIND, &key).await?;
        cx.progress("looking for an instance of an earlier attempt", Some(10));
        let existing = ops::find_by_key(&ec2, cx, &key).await?;
        let gname = group_name(&key);
        let (inst, group_id, group_created, adopted) = if let Some(inst) = existing.into_iter().next() {
            cx.log(LogStream::Stdout, &format!("adopting instance {} ({}), made by an earlier attempt of this step", inst.id, inst.state));
            let made = ops::find_group(&ec2, cx, &gname, None).await?.filter(|(_, t)| t.get(TAG_KEY) == Some(&key)).map(|(id, _)| id);
            let group = made.clone().or_else(|| inst.security_groups.first().cloned());
            (inst, group, made.is_some(), true)
        } else {
            let (groups, group_id, created) = if let Some(ids) = &input.security_group_ids {
                (ids.clone(), ids.first().cloned(), false)
            } else {
                cx.progress("security group", Some(15));
                let vpc = match &input.subnet_id {
                    Some(s) => Some(subnet_vpc(&ec2, cx, s).await?),
                    None => None,
                };
                let (id, created) = ops::ensure_group(
                    &ec2,
                    cx,
                    &gname,
                    &format!("engine {key}: {}", if input.open_ports.is_empty() { "no inbound ports".to_string() } else { format!("tcp {:?}", input.open_ports) }),
                    vpc.as_deref(),
                    &ops::engine_tags(cx),
                    &Ingress { ports: input.open_ports.clone(), cidrs: input.ingress_cidrs.clone() },
                )
                .await?;
                (vec![id.clone()], Some(id), created)
            };
            cx.progress(&format!("launching {instance_type}"), Some(20));
            let params = run_params(&input, &instance_type, &image.image_id, &image.root_device_name, user_data.as_deref(), &groups, &tags, &ops::client_token(&key));
            let xml = match ec2.call(cx, "RunInstances", &params.0).await {
                Ok(x) => x,
                Err(e) => {
                    // Leave no group of ours behind when nothing was launched.
                    let err: ConnectorError = e.into();
                    // Say in the step's log why (a fallback or a retry follows, or not).
                    let zone = input.availability_zone.as_deref().map(|z| format!(" in {z}")).unwrap_or_default();
                    cx.log(LogStream::Stderr, &format!("launching {instance_type}{zone} failed ({}): {}", err.kind, err.message));
                    if created {
                        if let Some(g) = &group_id {
                            if let Err(de) = ops::delete_group(&ec2, cx, g, Duration::from_secs(10)).await {
                                cx.log(LogStream::Stderr, &format!("failed to delete security group {g} after the failed launch: {de}"));
                            }
                        }
                    }
                    return Err(err);
                }
            };
            let inst = ops::parse_instances("RunInstances", &xml)?.into_iter().next().ok_or_else(|| ConnectorError::transient("RunInstances: no instance in the answer"))?;
            (inst, group_id, created, false)
        };
        let rec = cx
            .confirm(rec, inst.id.clone(), json!({"region": ec2.region(), "instance_id": inst.id, "security_group_id": if group_created { group_id.clone() } else { None }}))
            .await?;
        let _ = rec;
        if inst.state == "terminated" || inst.state == "shutting-down" {
            return Err(ConnectorError::conflict(format!("instance {} of this step is {} (EC2 returned it for the same ClientToken); destroy the run and run again", inst.id, inst.state)));
        }

        let timeout = Duration::from_secs(input.timeout);
        let inst = match input.wait_for.as_str() {
            "none" => inst,
            want => {
                let running = ops::wait_state(&ec2, cx, &inst.id, "running", timeout, (30, 70)).await?;
                if want == "status_ok" {
                    ops::wait_status_ok(&ec2, cx, &inst.id, timeout, (70, 95)).await?;
                }
                running
            }
        };
        cx.progress("ready", Some(100));
        let spot = inst.lifecycle.as_deref() == Some("spot") || (input.spot && adopted && inst.lifecycle.is_none());
        let hourly_price = gpu.map(|g| if input.spot { input.max_price.unwrap_or_else(|| catalog::typical_spot(g)) } else { g.on_demand });
        let catalogue = catalog::by_type(&inst.instance_type).or(gpu);
        Ok(CreateOutput {
            id: inst.id.clone(),
            name,
            provider: "aws".into(),
            zone: inst.availability_zone.clone(),
            region: ec2.region().to_string(),
            instance_type: inst.instance_type.clone(),
            public_ip: inst.public_ip.clone(),
            private_ip: inst.private_ip.clone(),
            image: inst.image_id.clone(),
            gpu: catalogue.map(|g| GpuInfo { model: g.gpu_model.into(), count: g.gpu_count, memory_gb: g.gpu_memory_gb }),
            hourly_price,
            ssh_user: image.ssh_user.clone(),
            instance_id: inst.id.clone(),
            availability_zone: inst.availability_zone.clone(),
            spot,
            gpu_type: catalogue.map(|g| format!("nvidia-{}", g.gpu_type)),
            gpu_count: catalogue.map_or(0, |g| g.gpu_count),
            security_group_id: group_id,
            ami_fallback: fallback,
            adopted,
            state: inst.state,
        })
    }

    async fn undo(&self, record: &ResourceRecord, cx: &StepContext) -> Result<(), ConnectorError> {
        let region = record.undo.get("region").and_then(Value::as_str);
        let ec2 = Ec2::for_step(cx, region)?;
        let mut ids: Vec<String> = record.id.iter().cloned().collect();
        if ids.is_empty() {
            ids = ops::find_by_key(&ec2, cx, &record.key).await?.into_iter().map(|i| i.id).collect();
        }
        let terminated = ops::terminate_and_wait(&ec2, cx, &ids, Duration::from_secs(900)).await?;
        let group = match record.undo.get("security_group_id").and_then(Value::as_str) {
            Some(g) => Some(g.to_string()),
            None => ops::find_groups_by_key(&ec2, cx, &record.key).await?.into_iter().next(),
        };
        let mut deleted_group = false;
        if let Some(g) = group {
            deleted_group = ops::delete_group(&ec2, cx, &g, Duration::from_secs(120)).await?;
        }
        if terminated.is_empty() && !deleted_group {
            return Err(ConnectorError::not_found(format!("nothing left of {}: no live instance, no security group", record.key)));
        }
        Ok(())
    }
}

/// Input of `aws.instance.terminate`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TerminateInput {
    /// Region (default: the connector's).
    #[serde(default)]
    pub region: Option<String>,
    /// One instance id.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// Several instance ids.
    #[serde(default)]
    pub instance_ids: Vec<String>,
    /// Wait until they are `terminated` (default true).
    #[serde(default = "yes")]
    pub wait: bool,
    /// A security group to delete once they are gone.
    #[serde(default)]
    pub delete_security_group: Option<String>,
    /// Seconds to wait (default 900).
    #[serde(default = "default_timeout")]
    pub timeout: u64,
}

/// Output of `aws.instance.terminate`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TerminateOutput {
    /// Instances that were live and are now terminated (or terminating, without `wait`).
    pub terminated: Vec<String>,
    /// Instances that were already gone.
    pub already_gone: Vec<String>,
    /// Whether the group was deleted.
    pub security_group_deleted: bool,
}

/// `aws.instance.terminate`.
#[derive(Debug, Clone, Default)]
pub struct InstanceTerminate;

#[async_trait]
impl Action for InstanceTerminate {
    const ID: &'static str = "aws.instance.terminate";
    const DESCRIPTION: &'static str = "terminate EC2 instances, wait until they are gone, optionally delete a security group";
    type Input = TerminateInput;
    type Output = TerminateOutput;

    fn validate(&self, input: &Self::Input) -> Result<(), ConnectorError> {
        if input.instance_id.is_none() && input.instance_ids.is_empty() {
            return Err(ConnectorError::invalid("give instance_id or instance_ids"));
        }
        if let Some(bad) = input.instance_id.iter().chain(&input.instance_ids).find(|i| !i.starts_with("i-")) {
            return Err(ConnectorError::invalid(format!("{bad:?} is not an instance id (i-...)")));
        }
        Ok(())
    }

    async fn run(&self, input: Self::Input, cx: &StepContext) -> Result<Self::Output, ConnectorError> {
        let ec2 = Ec2::for_step(cx, input.region.as_deref())?;
        let ids: Vec<String> = input.instance_id.iter().chain(&input.instance_ids).cloned().collect();
        let terminated = if input.wait {
            ops::terminate_and_wait(&ec2, cx, &ids, Duration::from_secs(input.timeout)).await?
        } else {
            let mut p = Params::new();
            p.list("InstanceId", &ids);
            let xml = ec2.call(cx, "TerminateInstances", &p.0).await?;
            let doc = parse("TerminateInstances", &xml)?;
            crate::client::items(doc.root_element(), "instancesSet")
                .into_iter()
                .filter(|i| child(*i, "previousState").and_then(|s| text(s, "name")).as_deref() != Some("terminated"))
                .filter_map(|i| text(i, "instanceId"))
                .collect()
        };
        let already_gone = ids.iter().filter(|i| !terminated.contains(i)).cloned().collect();
        let security_group_deleted = match &input.delete_security_group {
            Some(g) => ops::delete_group(&ec2, cx, g, Duration::from_secs(120)).await?,
            None => false,
        };
        cx.progress("terminated", Some(100));
        Ok(TerminateOutput { terminated, already_gone, security_group_deleted })
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
        assert!(validate_create(&input(json!({"gpu": {"type": "nvidia-t4", "count": 1}}))).is_ok());
        let e = validate_create(&input(json!({"gpu": {"type": "nvidia-a100", "count": 2}}))).unwrap_err();
        assert!(e.message.contains("valid gpu_count"), "{}", e.message);
        assert!(validate_create(&input(json!({}))).is_err());
        assert!(validate_create(&input(json!({"instance_type": "g5.xlarge", "gpu": {"type": "t4"}}))).is_err());
        assert!(validate_create(&input(json!({"instance_type": "g5.xlarge", "max_price": 1.0}))).is_err());
        assert!(validate_create(&input(json!({"instance_type": "g5.xlarge", "ami": "ubuntu"}))).is_err());
        assert!(validate_create(&input(json!({"instance_type": "g5.xlarge", "tags": {"engine:key": "x"}}))).is_err());
        assert!(serde_json::from_value::<CreateInput>(json!({"instance_type": "g5.xlarge", "bogus": 1})).is_err());
    }

    #[test]
    fn run_params_carry_everything() {
        let i = input(json!({"gpu": {"type": "a10g"}, "spot": true, "max_price": 0.5, "volume_gb": 200, "iam_instance_profile": "arn:aws:iam::1:instance-profile/x",
            "subnet_id": "subnet-1", "key_name": "k", "availability_zone": "us-east-1b"}));
        let p = run_params(&i, "g5.xlarge", "ami-1", "/dev/sda1", Some("#!/bin/bash"), &["sg-1".into()], &[("engine:key".into(), "r/s".into())], "tok");
        for (k, v) in [
            ("ClientToken", "tok"),
            ("BlockDeviceMapping.1.DeviceName", "/dev/sda1"),
            ("BlockDeviceMapping.1.Ebs.VolumeSize", "200"),
            ("BlockDeviceMapping.1.Ebs.VolumeType", "gp3"),
            ("BlockDeviceMapping.1.Ebs.Encrypted", "true"),
            ("InstanceMarketOptions.MarketType", "spot"),
            ("InstanceMarketOptions.SpotOptions.MaxPrice", "0.5"),
            ("IamInstanceProfile.Arn", "arn:aws:iam::1:instance-profile/x"),
            ("SecurityGroupId.1", "sg-1"),
            ("SubnetId", "subnet-1"),
            ("KeyName", "k"),
            ("Placement.AvailabilityZone", "us-east-1b"),
            ("TagSpecification.1.ResourceType", "instance"),
            ("TagSpecification.2.ResourceType", "volume"),
            ("TagSpecification.1.Tag.1.Key", "engine:key"),
            ("UserData", "IyEvYmluL2Jhc2g="),
        ] {
            assert_eq!(p.get(k), Some(v), "{k}");
        }
        let i = input(json!({"instance_type": "t3.micro", "iam_instance_profile": "gpu-role"}));
        let p = run_params(&i, "t3.micro", "ami-1", "/dev/xvda", None, &[], &[], "t");
        assert_eq!(p.get("IamInstanceProfile.Name"), Some("gpu-role"));
        assert_eq!(p.get("UserData"), None);
        assert_eq!(p.get("InstanceMarketOptions.MarketType"), None);
    }
}
