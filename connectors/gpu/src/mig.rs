//! `gpu.mig`: Multi-Instance GPU mode and instances.
//!
//! ## What it does
//! - `operation: status` (default): per GPU, whether MIG is supported, its current and
//!   pending mode and its MIG devices (from `nvidia-smi -q -x`), and for GPUs in MIG
//!   mode the GPU instances (`nvidia-smi mig -lgi`) and the instance profiles with how
//!   many more fit (`nvidia-smi mig -lgip`).
//! - `enable` / `disable`: `nvidia-smi -i GPU -mig 1|0`. The new mode is *pending* until
//!   the GPU is reset (`gpu.reset`) or the machine reboots when the GPU is in use; the
//!   output says which.
//! - `create`: `nvidia-smi mig -i GPU -cgi PROFILES -C`, GPU instances with their default
//!   compute instance, from profile names (`1g.10gb`) or ids (`19`). The instances are a
//!   resource (`gpu.mig_instance`) recorded in the ledger under the step's key: a retry
//!   adopts them instead of creating more.
//! - `destroy`: `nvidia-smi mig -i GPU -gi ID -dci` then `-dgi` for each id in
//!   `gpu_instance_ids` (or every instance with `all: true`). Instances already gone
//!   count as destroyed.
//!
//! Every operation but `status` needs root on the machine.
//!
//! ## Undo
//! `create`'s undo destroys the GPU instances it made (compute instances first); gone
//! already counts as done. On a remote host, undo reconnects with the host's recorded
//! `host`, `port`, `user`, `private_key_file` and `known_hosts` and the `ssh:` settings;
//! secrets given inline in the step are not recorded, so give them in the settings.
//!
//! ## Errors
//! A GPU without MIG (anything before Ampere data-centre boards): `invalid`. Not enough
//! free slices for the profiles: `capacity`. Not root: `auth`. Others as `gpu.list`.
//!
//! ## Example
//! ```yaml
//! slices:
//!   uses: gpu.mig
//!   with: { operation: create, gpu: 0, profiles: [3g.40gb, 3g.40gb] }
//! ```

use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, LogStream, ResourceRecord, StepContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::client::{smi_failure, Smi};
use crate::common::host_label;
use crate::exec::HostInput;
use crate::gpus::{describe, pick, GpuRef};
use crate::ledger::{Ledger, MigRecord};
use crate::smi::{GpuInfo, MigDevice};

/// The kind of resource `gpu.mig` with `operation: create` records.
pub const MIG_KIND: &str = "gpu.mig_instance";

/// What `gpu.mig` does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MigOperation {
    /// Report MIG mode, devices, instances and profiles.
    #[default]
    Status,
    /// Turn MIG mode on.
    Enable,
    /// Turn MIG mode off.
    Disable,
    /// Create GPU instances (with their default compute instance).
    Create,
    /// Destroy GPU instances (and their compute instances).
    Destroy,
}

/// Input of `gpu.mig`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MigInput {
    /// Remote host, over SSH (default: this machine).
    #[serde(default)]
    pub host: Option<HostInput>,
    /// What to do (default `status`).
    #[serde(default)]
    pub operation: MigOperation,
    /// The GPU (index, UUID or PCI bus id); every GPU for `status` when left out.
    #[serde(default)]
    pub gpu: Option<GpuRef>,
    /// For `create`: GPU instance profiles, by name (`1g.10gb`, `3g.40gb`) or id (`19`).
    #[serde(default)]
    pub profiles: Vec<String>,
    /// For `destroy`: the GPU instance ids.
    #[serde(default)]
    pub gpu_instance_ids: Vec<u32>,
    /// For `destroy`: every GPU instance of the GPU.
    #[serde(default)]
    pub all: bool,
}

/// A GPU instance (`nvidia-smi mig -lgi`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GpuInstance {
    /// GPU index.
    pub gpu: usize,
    /// Profile name (`MIG 1g.10gb`).
    pub profile: String,
    /// Profile id.
    pub profile_id: u32,
    /// GPU instance id.
    pub id: u32,
    /// Placement (`start:size` in memory slices).
    pub placement: String,
}

/// A GPU instance profile (`nvidia-smi mig -lgip`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InstanceProfile {
    /// GPU index.
    pub gpu: usize,
    /// Name (`MIG 1g.10gb`).
    pub name: String,
    /// Profile id.
    pub id: u32,
    /// How many more instances of it fit now.
    pub free: Option<u32>,
    /// How many fit on an empty GPU.
    pub total: Option<u32>,
    /// Memory, GiB.
    pub memory_gib: Option<f64>,
}

/// One GPU's MIG state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MigGpu {
    /// nvidia-smi index.
    pub index: usize,
    /// UUID.
    pub uuid: Option<String>,
    /// Model.
    pub name: Option<String>,
    /// Whether the GPU has MIG at all.
    pub supported: bool,
    /// MIG mode now.
    pub current: Option<bool>,
    /// MIG mode after the next reset.
    pub pending: Option<bool>,
    /// Whether a reset is needed for the pending mode to apply.
    pub reset_needed: bool,
    /// MIG devices (GPU instance + compute instance pairs).
    pub devices: Vec<MigDevice>,
    /// GPU instances (MIG mode only; `null` when nvidia-smi could not list them).
    pub gpu_instances: Option<Vec<GpuInstance>>,
    /// Instance profiles (MIG mode only; `null` when nvidia-smi could not list them).
    pub profiles: Option<Vec<InstanceProfile>>,
}

/// Output of `gpu.mig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MigOutput {
    /// Where the GPUs are.
    pub host: String,
    /// What was done.
    pub operation: MigOperation,
    /// The GPUs' MIG state after the operation.
    pub gpus: Vec<MigGpu>,
    /// GPU instance ids created (`create`).
    pub created: Vec<u32>,
    /// GPU instance ids destroyed (`destroy`).
    pub destroyed: Vec<u32>,
    /// Whether `create` adopted instances this step made before.
    pub adopted: bool,
    /// What nvidia-smi said.
    pub messages: Vec<String>,
}

/// Rows of an nvidia-smi box table (`|   0  MIG 1g.5gb  19  7  0:1  |`), as words, that
/// start with a GPU index.
fn table_rows(text: &str) -> Vec<Vec<&str>> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix('|').and_then(|l| l.strip_suffix('|')))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.first().is_some_and(|f| f.parse::<usize>().is_ok()))
        .collect()
}

/// Parse `nvidia-smi mig -lgi`.
#[must_use]
pub fn parse_lgi(text: &str) -> Vec<GpuInstance> {
    table_rows(text)
        .into_iter()
        .filter(|w| w.len() >= 5)
        .filter_map(|w| {
            let n = w.len();
            Some(GpuInstance { gpu: w[0].parse().ok()?, profile: w[1..n - 3].join(" "), profile_id: w[n - 3].parse().ok()?, id: w[n - 2].parse().ok()?, placement: w[n - 1].to_string() })
        })
        .collect()
}

/// Parse `nvidia-smi mig -lgip` (continuation rows, which do not start with an index
/// followed by `MIG`, are skipped).
#[must_use]
pub fn parse_lgip(text: &str) -> Vec<InstanceProfile> {
    table_rows(text)
        .into_iter()
        .filter(|w| w.len() >= 6 && w[1] == "MIG")
        .filter_map(|w| {
            let (free, total) = w[4].split_once('/').map_or((None, None), |(f, t)| (f.parse().ok(), t.parse().ok()));
            Some(InstanceProfile { gpu: w[0].parse().ok()?, name: format!("MIG {}", w[2]), id: w[3].parse().ok()?, free, total, memory_gib: w[5].parse().ok() })
        })
        .collect()
}

/// The GPU instance ids in `Successfully created GPU instance ID  2 on GPU  0 ...` lines.
#[must_use]
pub fn parse_created(text: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Successfully created GPU instance ID"))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

fn mig_gpu(g: &GpuInfo, instances: Option<&Vec<GpuInstance>>, profiles: Option<&Vec<InstanceProfile>>) -> MigGpu {
    MigGpu {
        index: g.index,
        uuid: g.uuid.clone(),
        name: g.product_name.clone(),
        supported: g.mig.current.is_some() || g.mig.pending.is_some(),
        current: g.mig.current,
        pending: g.mig.pending,
        reset_needed: g.mig.current.is_some() && g.mig.pending.is_some() && g.mig.current != g.mig.pending,
        devices: g.mig.devices.clone(),
        gpu_instances: instances.map(|v| v.iter().filter(|i| i.gpu == g.index).cloned().collect()),
        profiles: profiles.map(|v| v.iter().filter(|p| p.gpu == g.index).cloned().collect()),
    }
}

/// The MIG state of `gpus` (all when `None`), with instances and profiles for GPUs in
/// MIG mode.
async fn status(smi: &Smi, cx: &StepContext, only: Option<&GpuRef>) -> Result<Vec<MigGpu>, ConnectorError> {
    let report = smi.report().await?;
    let gpus = pick(&report, only.map(std::slice::from_ref), smi.target())?;
    let any_mig = gpus.iter().any(|g| g.mig.current == Some(true));
    let (mut instances, mut profiles) = (None, None);
    if any_mig {
        let list = |args: &'static [&'static str]| async move {
            let out = smi.run_unchecked(args).await?;
            if out.success() {
                Ok::<_, ConnectorError>(Some(out.stdout))
            } else {
                cx.log(LogStream::Stderr, &format!("`nvidia-smi {}` failed with exit {}: {}", args.join(" "), out.status, out.text(300)));
                Ok(None)
            }
        };
        instances = list(&["mig", "-lgi"]).await?.map(|t| parse_lgi(&t));
        profiles = list(&["mig", "-lgip"]).await?.map(|t| parse_lgip(&t));
    }
    Ok(gpus.iter().map(|g| mig_gpu(g, instances.as_ref(), profiles.as_ref())).collect())
}

/// The one GPU `r` names, which must support MIG.
async fn mig_capable(smi: &Smi, r: &GpuRef) -> Result<GpuInfo, ConnectorError> {
    let report = smi.report().await?;
    let g = pick(&report, Some(std::slice::from_ref(r)), smi.target())?.into_iter().next().cloned().unwrap_or_default();
    if g.mig.current.is_none() && g.mig.pending.is_none() {
        return Err(ConnectorError::invalid(format!("{} on {} does not support MIG (A100, A30, H100, H200 and later data-centre GPUs do)", describe(&g), smi.target())));
    }
    Ok(g)
}

fn mig_error(smi: &Smi, args: &[&str], out: &crate::exec::Output) -> ConnectorError {
    let said = out.text(600);
    if said.contains("Insufficient Resources") || said.contains("No space") {
        return ConnectorError::capacity(format!("`nvidia-smi {}` on {}: not enough free MIG slices: {said}", args.join(" "), smi.target()));
    }
    smi_failure(&smi.settings.nvidia_smi, smi.target(), args, out)
}

/// Destroy GPU instances `ids` on GPU `index` (every instance with `None`), compute
/// instances first. Instances already gone count as destroyed. Returns nvidia-smi's lines.
async fn destroy(smi: &Smi, index: usize, ids: Option<&[u32]>) -> Result<Vec<String>, ConnectorError> {
    let idx = index.to_string();
    let targets: Vec<Option<String>> = match ids {
        None => vec![None],
        Some(ids) => ids.iter().map(|i| Some(i.to_string())).collect(),
    };
    let mut said = Vec::new();
    for gi in targets {
        for op in ["-dci", "-dgi"] {
            let mut args = vec!["mig", "-i", idx.as_str()];
            if let Some(gi) = &gi {
                args.extend(["-gi", gi.as_str()]);
            }
            args.push(op);
            let out = smi.run_unchecked(&args).await?;
            let text = out.text(600);
            let lower = text.to_ascii_lowercase();
            let gone = lower.contains("not found") || lower.contains("no gpu instance") || lower.contains("no compute instance");
            if !out.success() && !gone {
                return Err(mig_error(smi, &args, &out));
            }
            if !text.is_empty() {
                said.push(text);
            }
        }
    }
    Ok(said)
}

/// `gpu.mig`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mig;

#[async_trait]
impl Action for Mig {
    const ID: &'static str = "gpu.mig";
    const DESCRIPTION: &'static str = "MIG: status, enable/disable mode, create/destroy GPU instances (create is undone by destroy)";
    const RESOURCE: Option<&'static str> = Some(MIG_KIND);
    type Input = MigInput;
    type Output = MigOutput;

    fn validate(&self, input: &MigInput) -> Result<(), ConnectorError> {
        let op = input.operation;
        if op != MigOperation::Status && input.gpu.is_none() {
            return Err(ConnectorError::invalid("`gpu` is needed for every operation but `status`"));
        }
        if op == MigOperation::Create {
            if input.profiles.is_empty() {
                return Err(ConnectorError::invalid("`create` needs `profiles` (names like `1g.10gb` or ids like `19`)"));
            }
            if let Some(p) = input.profiles.iter().find(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+'))) {
                return Err(ConnectorError::invalid(format!("`{p}` is not a MIG profile name or id")));
            }
        } else if !input.profiles.is_empty() {
            return Err(ConnectorError::invalid("`profiles` is for `operation: create`"));
        }
        if op == MigOperation::Destroy {
            if input.gpu_instance_ids.is_empty() != input.all {
                return Err(ConnectorError::invalid("`destroy` needs `gpu_instance_ids` or `all: true` (one of them)"));
            }
        } else if !input.gpu_instance_ids.is_empty() || input.all {
            return Err(ConnectorError::invalid("`gpu_instance_ids` and `all` are for `operation: destroy`"));
        }
        Ok(())
    }

    async fn run(&self, input: MigInput, cx: &StepContext) -> Result<MigOutput, ConnectorError> {
        let smi = Smi::new(cx, input.host.as_ref()).await?;
        let mut out = MigOutput { host: smi.target().to_string(), operation: input.operation, gpus: Vec::new(), created: Vec::new(), destroyed: Vec::new(), adopted: false, messages: Vec::new() };
        match (input.operation, input.gpu.as_ref()) {
            (MigOperation::Status, gpu) => {
                out.gpus = status(&smi, cx, gpu).await?;
                return Ok(out);
            }
            (_, None) => return Err(ConnectorError::invalid("`gpu` is needed for every operation but `status`")),
            (MigOperation::Enable | MigOperation::Disable, Some(r)) => {
                let g = mig_capable(&smi, r).await?;
                let idx = g.index.to_string();
                let args = ["-i", idx.as_str(), "-mig", if input.operation == MigOperation::Enable { "1" } else { "0" }];
                let o = smi.run_unchecked(&args).await?;
                if !o.success() {
                    return Err(mig_error(&smi, &args, &o));
                }
                out.messages.push(o.text(600));
            }
            (MigOperation::Create, Some(r)) => {
                let g = mig_capable(&smi, r).await?;
                if g.mig.current != Some(true) {
                    return Err(ConnectorError::invalid(format!(
                        "MIG mode is off on {} ({}): enable it first (`operation: enable`, then `gpu.reset` if it stays pending)",
                        describe(&g),
                        smi.target()
                    )));
                }
                let ledger = Ledger::for_context(cx)?;
                let key = cx.idempotency_key();
                let host = host_label(cx, input.host.as_ref());
                let rec = cx.intend(MIG_KIND, &key).await?;
                let mine = ledger.read()?.mig.into_iter().find(|m| m.key == key && m.host == host);
                if let Some(m) = mine {
                    out.adopted = true;
                    out.created.clone_from(&m.gpu_instance_ids);
                } else {
                    let idx = g.index.to_string();
                    let profiles = input.profiles.join(",");
                    let args = ["mig", "-i", idx.as_str(), "-cgi", profiles.as_str(), "-C"];
                    let o = smi.run_unchecked(&args).await?;
                    let created = parse_created(&o.stdout);
                    // Record what exists, even after a partial failure, so undo finds it.
                    if !created.is_empty() {
                        let m = MigRecord {
                            key: key.clone(),
                            host: host.clone(),
                            gpu_index: g.index,
                            gpu_uuid: g.uuid.clone(),
                            gpu_instance_ids: created.clone(),
                            ssh: input.host.as_ref().map_or(Value::Null, HostInput::to_record),
                        };
                        ledger.update(|s| {
                            s.mig.retain(|x| !(x.key == key && x.host == host));
                            s.mig.push(m);
                            Ok(((), true))
                        })?;
                    }
                    if !o.success() {
                        return Err(mig_error(&smi, &args, &o));
                    }
                    out.messages.push(o.text(2000));
                    out.created = created;
                }
                let id = format!("{}:{}", g.uuid.as_deref().unwrap_or(&g.index.to_string()), out.created.iter().map(u32::to_string).collect::<Vec<_>>().join(","));
                let ssh = input.host.as_ref().map_or(Value::Null, HostInput::to_record);
                cx.confirm(rec, id, json!({ "host": host, "ssh": ssh, "gpu_index": g.index, "gpu_uuid": g.uuid, "gpu_instance_ids": out.created })).await?;
            }
            (MigOperation::Destroy, Some(r)) => {
                let g = mig_capable(&smi, r).await?;
                let ids = (!input.all).then_some(input.gpu_instance_ids.as_slice());
                out.messages = destroy(&smi, g.index, ids).await?;
                out.destroyed = ids.map(<[u32]>::to_vec).unwrap_or_default();
                let host = host_label(cx, input.host.as_ref());
                let destroyed = out.destroyed.clone();
                Ledger::for_context(cx)?.update(|s| {
                    let before = s.mig.len();
                    for m in &mut s.mig {
                        if m.host == host && m.gpu_uuid == g.uuid {
                            m.gpu_instance_ids.retain(|i| !input.all && !destroyed.contains(i));
                        }
                    }
                    s.mig.retain(|m| !m.gpu_instance_ids.is_empty());
                    let changed = s.mig.len() != before || !destroyed.is_empty() || input.all;
                    Ok(((), changed))
                })?;
            }
        }
        for m in &out.messages {
            cx.log(LogStream::Stdout, m);
        }
        out.gpus = status(&smi, cx, input.gpu.as_ref()).await?;
        Ok(out)
    }

    /// Destroy the GPU instances `create` made; found by the key in the ledger when the
    /// record holds no payload.
    async fn undo(&self, record: &ResourceRecord, cx: &StepContext) -> Result<(), ConnectorError> {
        let ledger = Ledger::for_context(cx)?;
        let from_ledger = ledger.read()?.mig.into_iter().find(|m| m.key == record.key);
        let (ssh, index, uuid, ids) = match (record.undo.get("gpu_instance_ids").and_then(Value::as_array), &from_ledger) {
            (Some(ids), _) => (
                record.undo.get("ssh").cloned().unwrap_or(Value::Null),
                record.undo.get("gpu_index").and_then(Value::as_u64).and_then(|i| usize::try_from(i).ok()).unwrap_or_default(),
                record.undo.get("gpu_uuid").and_then(Value::as_str).map(str::to_owned),
                ids.iter().filter_map(Value::as_u64).filter_map(|i| u32::try_from(i).ok()).collect::<Vec<_>>(),
            ),
            (None, Some(m)) => (m.ssh.clone(), m.gpu_index, m.gpu_uuid.clone(), m.gpu_instance_ids.clone()),
            (None, None) => return Err(ConnectorError::not_found(format!("no MIG instances of `{}` in the ledger", record.key))),
        };
        if ids.is_empty() {
            return Err(ConnectorError::not_found(format!("`{}` created no MIG instance", record.key)));
        }
        let host_input = HostInput::from_record(&ssh)?;
        let smi = Smi::new(cx, host_input.as_ref()).await?;
        // Find the GPU by UUID: its index may have changed since.
        let report = smi.report().await?;
        let index = uuid.as_ref().and_then(|u| report.gpus.iter().find(|g| g.uuid.as_ref() == Some(u)).map(|g| g.index)).unwrap_or(index);
        for line in destroy(&smi, index, Some(&ids)).await? {
            cx.log(LogStream::Stdout, &line);
        }
        ledger.update(|s| {
            s.mig.retain(|m| m.key != record.key);
            Ok(((), true))
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LGI: &str = "\
+-------------------------------------------------------+
| GPU instances:                                        |
| GPU   Name             Profile  Instance   Placement  |
|                          ID       ID       Start:Size |
|=======================================================|
|   0  MIG 1g.10gb         19        9          2:1     |
+-------------------------------------------------------+
|   0  MIG 3g.40gb          9        2          4:4     |
+-------------------------------------------------------+
";

    const LGIP: &str = "\
+-----------------------------------------------------------------------------+
| GPU instance profiles:                                                      |
| GPU   Name             ID    Instances   Memory     P2P    SM    DEC   ENC  |
|                              Free/Total   GiB              CE    JPEG  OFA  |
|=============================================================================|
|   0  MIG 1g.10gb       19     6/7        9.75       No     16     1     0   |
|                                                             1     1     0   |
+-----------------------------------------------------------------------------+
|   0  MIG 3g.40gb        9     1/2        39.25      No     60     3     0   |
|                                                             3     3     0   |
+-----------------------------------------------------------------------------+
";

    #[test]
    fn instance_tables_are_read() {
        let gi = parse_lgi(LGI);
        assert_eq!(gi.len(), 2);
        assert_eq!(gi[0], GpuInstance { gpu: 0, profile: "MIG 1g.10gb".into(), profile_id: 19, id: 9, placement: "2:1".into() });
        assert_eq!(gi[1].id, 2);
        let p = parse_lgip(LGIP);
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].name.as_str(), p[0].id, p[0].free, p[0].total, p[0].memory_gib), ("MIG 1g.10gb", 19, Some(6), Some(7), Some(9.75)));
        assert_eq!((p[1].id, p[1].free), (9, Some(1)));
        assert!(parse_lgi("No MIG-enabled devices found.").is_empty());
    }

    #[test]
    fn created_ids_are_read() {
        let text = "Successfully created GPU instance ID  2 on GPU  0 using profile MIG 3g.40gb (ID  9)\n\
                    Successfully created compute instance ID  0 on GPU  0 GPU instance ID  2 using profile MIG 3g.40gb (ID  2)\n\
                    Successfully created GPU instance ID  1 on GPU  0 using profile MIG 3g.40gb (ID  9)\n";
        assert_eq!(parse_created(text), [2, 1]);
    }

    #[test]
    fn inputs_are_checked() {
        let v = |j: Value| Mig.validate(&serde_json::from_value::<MigInput>(j).unwrap());
        assert!(v(json!({})).is_ok());
        assert!(v(json!({"operation": "enable"})).is_err());
        assert!(v(json!({"operation": "create", "gpu": 0})).is_err());
        assert!(v(json!({"operation": "create", "gpu": 0, "profiles": ["1g.10gb", "19"]})).is_ok());
        assert!(v(json!({"operation": "create", "gpu": 0, "profiles": ["1g; rm -rf /"]})).is_err());
        assert!(v(json!({"operation": "destroy", "gpu": 0})).is_err());
        assert!(v(json!({"operation": "destroy", "gpu": 0, "all": true, "gpu_instance_ids": [1]})).is_err());
        assert!(v(json!({"operation": "destroy", "gpu": 0, "gpu_instance_ids": [1]})).is_ok());
        assert!(v(json!({"operation": "status", "all": true})).is_err());
    }
}
