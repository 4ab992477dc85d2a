//! EC2 operations the actions share: instances (describe, find by key, wait, terminate) and
//! security groups (get-or-create by name, ingress, delete). Each is one or a few
//! [`Ec2::call`]s and a parse of the XML answer.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use engine_connector::{ConnectorError, ErrorKind, LogStream, StepContext};
use sha2::{Digest, Sha256};

use crate::client::{child, items, parse, text, Ec2, Params};
use crate::error::Error;

/// The tag that carries the step's idempotency key.
pub const TAG_KEY: &str = "engine:key";
/// The tag with the run id.
pub const TAG_RUN: &str = "engine:run";
/// The tag with the step id.
pub const TAG_STEP: &str = "engine:step";
/// How often a wait asks again.
pub const POLL: Duration = Duration::from_secs(2);

/// An instance as `DescribeInstances` / `RunInstances` describe it.
#[derive(Debug, Clone, Default)]
pub struct Instance {
    /// `i-...`.
    pub id: String,
    /// `pending`, `running`, `shutting-down`, `terminated`, `stopping`, `stopped`.
    pub state: String,
    /// Instance type.
    pub instance_type: String,
    /// Availability zone.
    pub availability_zone: String,
    /// Public IPv4, if any.
    pub public_ip: Option<String>,
    /// Private IPv4.
    pub private_ip: Option<String>,
    /// AMI.
    pub image_id: String,
    /// `spot` for spot instances.
    pub lifecycle: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Security group ids.
    pub security_groups: Vec<String>,
}

fn parse_instance(n: roxmltree::Node<'_, '_>) -> Instance {
    Instance {
        id: text(n, "instanceId").unwrap_or_default(),
        state: child(n, "instanceState").and_then(|s| text(s, "name")).unwrap_or_default(),
        instance_type: text(n, "instanceType").unwrap_or_default(),
        availability_zone: child(n, "placement").and_then(|p| text(p, "availabilityZone")).unwrap_or_default(),
        public_ip: text(n, "ipAddress"),
        private_ip: text(n, "privateIpAddress"),
        image_id: text(n, "imageId").unwrap_or_default(),
        lifecycle: text(n, "instanceLifecycle"),
        tags: tags_of(n),
        security_groups: items(n, "groupSet").into_iter().filter_map(|g| text(g, "groupId")).collect(),
    }
}

/// The `tagSet` of a node.
#[must_use]
pub fn tags_of(n: roxmltree::Node<'_, '_>) -> BTreeMap<String, String> {
    items(n, "tagSet").into_iter().filter_map(|t| Some((text(t, "key")?, text(t, "value").unwrap_or_default()))).collect()
}

/// Instances from a `RunInstances` or `DescribeInstances` answer.
///
/// # Errors
/// [`Error::Parse`] when the answer is not XML.
pub fn parse_instances(action: &str, xml: &str) -> Result<Vec<Instance>, Error> {
    let doc = parse(action, xml)?;
    let root = doc.root_element();
    let mut out = Vec::new();
    if action == "RunInstances" {
        out.extend(items(root, "instancesSet").into_iter().map(parse_instance));
    } else {
        for r in items(root, "reservationSet") {
            out.extend(items(r, "instancesSet").into_iter().map(parse_instance));
        }
    }
    Ok(out)
}

/// `DescribeInstances` with ids and filters.
///
/// # Errors
/// EC2's error, classified.
pub async fn describe_instances(ec2: &Ec2, cx: &StepContext, ids: &[String], filters: &[(&str, Vec<String>)]) -> Result<Vec<Instance>, Error> {
    let mut p = Params::new();
    p.list("InstanceId", ids).filters(filters);
    let xml = ec2.call(cx, "DescribeInstances", &p.0).await?;
    parse_instances("DescribeInstances", &xml)
}

/// Live instances (not terminated or shutting down) tagged with `key`.
///
/// # Errors
/// EC2's error, classified.
pub async fn find_by_key(ec2: &Ec2, cx: &StepContext, key: &str) -> Result<Vec<Instance>, Error> {
    let states = ["pending", "running", "stopping", "stopped"].map(String::from).to_vec();
    describe_instances(ec2, cx, &[], &[(&format!("tag:{TAG_KEY}"), vec![key.to_string()]), ("instance-state-name", states)]).await
}

/// A `ClientToken` for a key: at most 64 ASCII characters, the same for every attempt.
#[must_use]
pub fn client_token(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A short stable name part for a key.
#[must_use]
pub fn key_hash(key: &str) -> String {
    client_token(key)[..16].to_string()
}

/// Waits until `id` is in `want`, reporting progress from `from` to `to` percent. A transient
/// error while polling is logged and polled again.
///
/// # Errors
/// `timeout`, `cancelled`, or EC2's non-transient error; `conflict` when the instance reaches a
/// state it will never leave for `want` (terminated while waiting for running).
pub async fn wait_state(ec2: &Ec2, cx: &StepContext, id: &str, want: &str, timeout: Duration, (from, to): (u8, u8)) -> Result<Instance, ConnectorError> {
    let start = Instant::now();
    loop {
        match describe_instances(ec2, cx, &[id.to_string()], &[]).await {
            Ok(list) => {
                let Some(inst) = list.into_iter().next() else {
                    if want == "terminated" {
                        return Ok(Instance { id: id.to_string(), state: "terminated".into(), ..Instance::default() });
                    }
                    return Err(ConnectorError::not_found(format!("instance {id} is not known to EC2")));
                };
                if inst.state == want {
                    return Ok(inst);
                }
                if want == "running" && matches!(inst.state.as_str(), "terminated" | "shutting-down" | "stopped" | "stopping") {
                    return Err(ConnectorError::conflict(format!("instance {id} is {} while waiting for it to run (spot interruption, or terminated by someone else?)", inst.state)));
                }
                cx.progress(&format!("waiting for {id} to be {want} (now {})", inst.state), Some(progress_between(from, to, start.elapsed(), timeout)));
            }
            Err(e) if e.code() == Some("InvalidInstanceID.NotFound") && want == "terminated" => {
                return Ok(Instance { id: id.to_string(), state: "terminated".into(), ..Instance::default() });
            }
            Err(e) if e.kind() == ErrorKind::Transient => cx.log(LogStream::Stderr, &format!("{e}; asking again")),
            Err(e) => return Err(e.into()),
        }
        if start.elapsed() >= timeout {
            return Err(ConnectorError::timeout(format!("instance {id} was not {want} after {}s", timeout.as_secs())));
        }
        cx.sleep(POLL).await?;
    }
}

/// Waits until both status checks of `id` are `ok` (`DescribeInstanceStatus`).
///
/// # Errors
/// As [`wait_state`].
pub async fn wait_status_ok(ec2: &Ec2, cx: &StepContext, id: &str, timeout: Duration, (from, to): (u8, u8)) -> Result<(), ConnectorError> {
    let start = Instant::now();
    loop {
        let mut p = Params::new();
        p.set("InstanceId.1", id).set("IncludeAllInstances", "true");
        match ec2.call(cx, "DescribeInstanceStatus", &p.0).await {
            Ok(xml) => {
                let doc = parse("DescribeInstanceStatus", &xml)?;
                let st = items(doc.root_element(), "instanceStatusSet").into_iter().next();
                let system = st.and_then(|s| child(s, "systemStatus")).and_then(|s| text(s, "status")).unwrap_or_default();
                let instance = st.and_then(|s| child(s, "instanceStatus")).and_then(|s| text(s, "status")).unwrap_or_default();
                if system == "ok" && instance == "ok" {
                    return Ok(());
                }
                if system == "impaired" || instance == "impaired" {
                    return Err(ConnectorError::transient(format!("instance {id} failed its status checks (system {system}, instance {instance})")));
                }
                cx.progress(&format!("waiting for the status checks of {id} (system {system}, instance {instance})"), Some(progress_between(from, to, start.elapsed(), timeout)));
            }
            Err(e) if e.kind() == ErrorKind::Transient => cx.log(LogStream::Stderr, &format!("{e}; asking again")),
            Err(e) => return Err(e.into()),
        }
        if start.elapsed() >= timeout {
            return Err(ConnectorError::timeout(format!("status checks of instance {id} were not ok after {}s", timeout.as_secs())));
        }
        cx.sleep(POLL).await?;
    }
}

fn progress_between(from: u8, to: u8, elapsed: Duration, timeout: Duration) -> u8 {
    let frac = (elapsed.as_secs_f64() / timeout.as_secs_f64().max(1.0)).min(1.0);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let p = f64::from(from) + f64::from(to.saturating_sub(from)) * frac;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    {
        p as u8
    }
}

/// Terminates instances (already gone ones are fine) and waits until they are `terminated`.
///
/// # Errors
/// EC2's error, `timeout`, `cancelled`.
pub async fn terminate_and_wait(ec2: &Ec2, cx: &StepContext, ids: &[String], timeout: Duration) -> Result<Vec<String>, ConnectorError> {
    // One call per id: EC2 refuses a whole batch when one id is unknown. Terminating a
    // terminated instance succeeds, and its answer says what it was before.
    let mut live = Vec::new();
    for id in ids {
        cx.progress(&format!("terminating {id}"), Some(10));
        let mut p = Params::new();
        p.set("InstanceId.1", id);
        match ec2.call(cx, "TerminateInstances", &p.0).await {
            Ok(xml) => {
                let doc = parse("TerminateInstances", &xml)?;
                let was = items(doc.root_element(), "instancesSet").into_iter().find_map(|i| child(i, "previousState").and_then(|s| text(s, "name")));
                if was.as_deref() != Some("terminated") {
                    live.push(id.clone());
                }
            }
            Err(e) if e.code() == Some("InvalidInstanceID.NotFound") || e.code() == Some("InvalidInstanceID.Malformed") => {}
            Err(e) => return Err(e.into()),
        }
    }
    for id in &live {
        wait_state(ec2, cx, id, "terminated", timeout, (20, 80)).await?;
    }
    Ok(live)
}

/// The id of the security group called `name` (in `vpc_id` when given).
///
/// # Errors
/// EC2's error, classified.
pub async fn find_group(ec2: &Ec2, cx: &StepContext, name: &str, vpc_id: Option<&str>) -> Result<Option<(String, BTreeMap<String, String>)>, Error> {
    let mut filters = vec![("group-name", vec![name.to_string()])];
    if let Some(v) = vpc_id {
        filters.push(("vpc-id", vec![v.to_string()]));
    }
    let mut p = Params::new();
    p.filters(&filters);
    let xml = ec2.call(cx, "DescribeSecurityGroups", &p.0).await?;
    let doc = parse("DescribeSecurityGroups", &xml)?;
    Ok(items(doc.root_element(), "securityGroupInfo").into_iter().find_map(|g| Some((text(g, "groupId")?, tags_of(g)))))
}

/// The ids of the security groups tagged with `key`.
///
/// # Errors
/// EC2's error, classified.
pub async fn find_groups_by_key(ec2: &Ec2, cx: &StepContext, key: &str) -> Result<Vec<String>, Error> {
    let mut p = Params::new();
    p.filters(&[(&format!("tag:{TAG_KEY}"), vec![key.to_string()])]);
    let xml = ec2.call(cx, "DescribeSecurityGroups", &p.0).await?;
    let doc = parse("DescribeSecurityGroups", &xml)?;
    Ok(items(doc.root_element(), "securityGroupInfo").into_iter().filter_map(|g| text(g, "groupId")).collect())
}

/// Ingress rules of a group.
#[derive(Debug, Clone, Default)]
pub struct Ingress {
    /// TCP ports.
    pub ports: Vec<u16>,
    /// Source CIDRs (IPv4).
    pub cidrs: Vec<String>,
}

/// Gets or creates the group `name` with `tags` and exactly the ingress asked (a group found
/// that carries a different key is a `conflict`). Returns `(id, created)`.
///
/// # Errors
/// EC2's error, classified.
pub async fn ensure_group(
    ec2: &Ec2,
    cx: &StepContext,
    name: &str,
    description: &str,
    vpc_id: Option<&str>,
    tags: &[(String, String)],
    ingress: &Ingress,
) -> Result<(String, bool), ConnectorError> {
    let key = tags.iter().find(|(k, _)| k == TAG_KEY).map(|(_, v)| v.as_str());
    if let Some((id, found_tags)) = find_group(ec2, cx, name, vpc_id).await? {
        if key.is_some() && found_tags.get(TAG_KEY).map(String::as_str) != key {
            return Err(ConnectorError::conflict(format!(
                "a security group named {name} ({id}) exists but was not made by this step (its {TAG_KEY} tag is {:?}); pick another name",
                found_tags.get(TAG_KEY)
            )));
        }
        cx.log(LogStream::Stdout, &format!("adopting security group {name} ({id}), made by an earlier attempt of this step"));
        authorize(ec2, cx, &id, ingress).await?;
        return Ok((id, false));
    }
    let mut p = Params::new();
    p.set("GroupName", name).set("GroupDescription", description);
    if let Some(v) = vpc_id {
        p.set("VpcId", v);
    }
    p.set("TagSpecification.1.ResourceType", "security-group");
    for (i, (k, v)) in tags.iter().enumerate() {
        p.set(format!("TagSpecification.1.Tag.{}.Key", i + 1), k).set(format!("TagSpecification.1.Tag.{}.Value", i + 1), v);
    }
    let id = match ec2.call(cx, "CreateSecurityGroup", &p.0).await {
        Ok(xml) => {
            let doc = parse("CreateSecurityGroup", &xml)?;
            text(doc.root_element(), "groupId").ok_or_else(|| ConnectorError::transient("CreateSecurityGroup: no groupId in the answer"))?
        }
        // Made concurrently by another attempt: adopt it.
        Err(e) if e.code() == Some("InvalidGroup.Duplicate") => find_group(ec2, cx, name, vpc_id).await?.map(|(id, _)| id).ok_or_else(|| ConnectorError::from(e))?,
        Err(e) => return Err(e.into()),
    };
    authorize(ec2, cx, &id, ingress).await?;
    Ok((id, true))
}

async fn authorize(ec2: &Ec2, cx: &StepContext, id: &str, ingress: &Ingress) -> Result<(), ConnectorError> {
    if ingress.ports.is_empty() {
        return Ok(());
    }
    let cidrs = if ingress.cidrs.is_empty() { vec!["0.0.0.0/0".to_string()] } else { ingress.cidrs.clone() };
    let mut p = Params::new();
    p.set("GroupId", id);
    for (i, port) in ingress.ports.iter().enumerate() {
        let n = i + 1;
        p.set(format!("IpPermissions.{n}.IpProtocol"), "tcp").set(format!("IpPermissions.{n}.FromPort"), port.to_string()).set(format!("IpPermissions.{n}.ToPort"), port.to_string());
        for (j, c) in cidrs.iter().enumerate() {
            p.set(format!("IpPermissions.{n}.IpRanges.{}.CidrIp", j + 1), c);
        }
    }
    match ec2.call(cx, "AuthorizeSecurityGroupIngress", &p.0).await {
        Ok(_) => Ok(()),
        // Adopted group: the rules are there already.
        Err(e) if e.code() == Some("InvalidPermission.Duplicate") => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The TCP ports open to the world (or any CIDR) on a group, from `DescribeSecurityGroups`.
///
/// # Errors
/// EC2's error, classified.
pub async fn group_ingress_ports(ec2: &Ec2, cx: &StepContext, id: &str) -> Result<Vec<u16>, Error> {
    let mut p = Params::new();
    p.set("GroupId.1", id);
    let xml = ec2.call(cx, "DescribeSecurityGroups", &p.0).await?;
    let doc = parse("DescribeSecurityGroups", &xml)?;
    let mut ports: Vec<u16> = items(doc.root_element(), "securityGroupInfo")
        .into_iter()
        .flat_map(|g| items(g, "ipPermissions"))
        .filter_map(|perm| text(perm, "fromPort").and_then(|p| p.parse().ok()))
        .collect();
    ports.sort_unstable();
    Ok(ports)
}

/// Deletes a group, retrying `DependencyViolation` (an instance that still holds it is being
/// terminated) for up to `patience`. A group already gone is fine.
///
/// # Errors
/// EC2's error, classified.
pub async fn delete_group(ec2: &Ec2, cx: &StepContext, id: &str, patience: Duration) -> Result<bool, ConnectorError> {
    let start = Instant::now();
    loop {
        let mut p = Params::new();
        p.set("GroupId", id);
        match ec2.call(cx, "DeleteSecurityGroup", &p.0).await {
            Ok(_) => return Ok(true),
            Err(e) if e.code() == Some("InvalidGroup.NotFound") || e.code() == Some("InvalidGroupId.NotFound") => return Ok(false),
            Err(e) if (e.code() == Some("DependencyViolation") || e.kind() == ErrorKind::Transient) && start.elapsed() < patience => {
                cx.log(LogStream::Stderr, &format!("{e}; trying again"));
                cx.sleep(POLL).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Tags as `TagSpecification` parameters for the given resource types.
pub fn tag_specs(p: &mut Params, types: &[&str], tags: &[(String, String)]) {
    for (n, ty) in types.iter().enumerate() {
        let n = n + 1;
        p.set(format!("TagSpecification.{n}.ResourceType"), *ty);
        for (i, (k, v)) in tags.iter().enumerate() {
            p.set(format!("TagSpecification.{n}.Tag.{}.Key", i + 1), k).set(format!("TagSpecification.{n}.Tag.{}.Value", i + 1), v);
        }
    }
}

/// The engine's tags for a step: run, step and key.
#[must_use]
pub fn engine_tags(cx: &StepContext) -> Vec<(String, String)> {
    vec![(TAG_RUN.into(), cx.run_id.clone()), (TAG_STEP.into(), cx.step.step.clone()), (TAG_KEY.into(), cx.idempotency_key())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_run_instances_answer() {
        let xml = r#"<RunInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><reservationId>r-1</reservationId>
          <instancesSet><item><instanceId>i-0abc</instanceId><imageId>ami-1</imageId><instanceState><code>0</code><name>pending</name></instanceState>
          <privateIpAddress>10.0.0.5</privateIpAddress><instanceType>g5.xlarge</instanceType><placement><availabilityZone>us-east-1a</availabilityZone></placement>
          <instanceLifecycle>spot</instanceLifecycle><groupSet><item><groupId>sg-1</groupId></item></groupSet>
          <tagSet><item><key>engine:key</key><value>r/s</value></item></tagSet></item></instancesSet></RunInstancesResponse>"#;
        let i = parse_instances("RunInstances", xml).unwrap().remove(0);
        assert_eq!((i.id.as_str(), i.state.as_str(), i.availability_zone.as_str()), ("i-0abc", "pending", "us-east-1a"));
        assert_eq!(i.lifecycle.as_deref(), Some("spot"));
        assert_eq!(i.security_groups, ["sg-1"]);
        assert_eq!(i.tags.get("engine:key").map(String::as_str), Some("r/s"));
        assert_eq!(i.public_ip, None);
    }

    #[test]
    fn client_token_is_short_ascii_and_stable() {
        let t = client_token(&"run/step/".repeat(40));
        assert_eq!(t.len(), 64);
        assert!(t.is_ascii());
        assert_eq!(t, client_token(&"run/step/".repeat(40)));
        assert_ne!(client_token("a/b"), client_token("a/c"));
    }
}
