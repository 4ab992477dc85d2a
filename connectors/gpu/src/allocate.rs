//! `gpu.allocate`, `gpu.deallocate` and `gpu.select`.
//!
//! ## What they do
//! `gpu.select` ranks the GPUs for a request (count, free memory, exclusive or shared,
//! preferred models, workload type) by the strategy of [`crate::strategy`] and explains
//! the choice: a score breakdown per GPU and a sentence. It holds nothing.
//!
//! `gpu.allocate` makes the same choice and holds the GPUs in the allocation ledger
//! ([`crate::ledger`]): an exclusive allocation is never given a GPU that another
//! allocation holds; a shared one may share a GPU with other shared allocations only.
//! It returns the GPUs with `CUDA_VISIBLE_DEVICES` / `NVIDIA_VISIBLE_DEVICES` values
//! (UUIDs, which stay right whatever `CUDA_DEVICE_ORDER` is) for the steps that run the
//! workload. The allocation is keyed by the step's idempotency key: a retry or a resumed
//! run gets the allocation it already has (`adopted: true`), never a second one. With
//! `ttl`, the allocation stops counting after that long even if nobody releases it.
//!
//! `gpu.deallocate` releases an allocation by `allocation_id` or by the allocating step's
//! `key`; releasing what is already gone succeeds with `released: false`.
//!
//! ## Undo
//! `gpu.allocate`'s undo releases the allocation (by id, or by the step's key when the
//! allocation was never confirmed); an allocation already released counts as undone.
//!
//! ## Errors
//! Too few GPUs free for the request: `capacity` (so `fallback` applies), naming why each
//! GPU was ruled out. nvidia-smi failures as `gpu.list`. A ledger that cannot be read or
//! written: `invalid` (corrupt, permissions) or `transient`.
//!
//! ## Example
//! ```yaml
//! gpus:
//!   uses: gpu.allocate
//!   with: { count: 2, min_memory_gb: 20, workload: training, preferred_models: [H100, A100] }
//! train:
//!   uses: container.run
//!   needs: [gpus]
//!   with:
//!     image: trainer:latest
//!     env: { CUDA_VISIBLE_DEVICES: "${{ steps.gpus.outputs.cuda_visible_devices }}" }
//! ```

use std::collections::BTreeMap;

use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, LogStream, ResourceRecord, StepContext};
use engine_core::duration::DurationStr;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::client::Smi;
use crate::common::{host_label, min_memory_mib};
use crate::exec::HostInput;
use crate::gpus::GpuRef;
use crate::ledger::{allocation_id, now, Allocation, HeldGpu, Ledger, Mode};
use crate::strategy::{rank, reason, take, Candidate, Request, Weights, Workload};

/// The kind of resource `gpu.allocate` records.
pub const ALLOCATION_KIND: &str = "gpu.allocation";

/// Most GPUs one request may ask for.
const MAX_COUNT: u32 = 256;

fn one() -> u32 {
    1
}

fn exclusive() -> Mode {
    Mode::Exclusive
}

/// Input of `gpu.allocate`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AllocateInput {
    /// Remote host whose GPUs to allocate, over SSH (default: this machine).
    #[serde(default)]
    pub host: Option<HostInput>,
    /// How many GPUs (default 1).
    #[serde(default = "one")]
    pub count: u32,
    /// Free memory each GPU needs, GiB.
    #[serde(default)]
    pub min_memory_gb: Option<f64>,
    /// Free memory each GPU needs, MiB.
    #[serde(default)]
    pub min_memory_mb: Option<u64>,
    /// `exclusive` (default: nobody else gets the GPUs) or `shared` (other shared
    /// allocations may hold them too).
    #[serde(default = "exclusive")]
    pub mode: Mode,
    /// Model names or parts of them, most wanted first (`[H100, A100]`).
    #[serde(default)]
    pub preferred_models: Vec<String>,
    /// What the GPUs are for; steers the choice (default `general`).
    #[serde(default)]
    pub workload: Workload,
    /// Choose only among these GPUs (index, UUID or PCI bus id).
    #[serde(default)]
    pub gpus: Option<Vec<GpuRef>>,
    /// Release the allocation by itself after this long (`12h`); default: held until
    /// released.
    #[serde(default)]
    pub ttl: Option<DurationStr>,
}

/// One allocated or selected GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChosenGpu {
    /// nvidia-smi index.
    pub index: usize,
    /// UUID.
    pub uuid: Option<String>,
    /// Model.
    pub name: Option<String>,
}

/// Output of `gpu.allocate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AllocateOutput {
    /// Allocation id, for `gpu.deallocate`.
    pub allocation_id: String,
    /// Whether this step held the allocation already (a retry or a resumed run).
    pub adopted: bool,
    /// Where the GPUs are.
    pub host: String,
    /// Exclusive or shared.
    pub mode: Mode,
    /// The GPUs.
    pub gpus: Vec<ChosenGpu>,
    /// Their indices.
    pub indices: Vec<usize>,
    /// Their UUIDs.
    pub uuids: Vec<String>,
    /// Value for `CUDA_VISIBLE_DEVICES` (UUIDs, or indices when a UUID is unknown).
    pub cuda_visible_devices: String,
    /// Value for `NVIDIA_VISIBLE_DEVICES` (the NVIDIA container runtime).
    pub nvidia_visible_devices: String,
    /// Both variables, ready for a container's or a command's `env`.
    pub env: BTreeMap<String, String>,
    /// Why these GPUs.
    pub reason: String,
    /// When the allocation stops counting (seconds since the Unix epoch), with `ttl`.
    pub expires_at: Option<u64>,
}

/// The `CUDA_VISIBLE_DEVICES` value for `gpus`: UUIDs when all are known, else indices.
#[must_use]
pub fn visible_devices(gpus: &[ChosenGpu]) -> String {
    if gpus.iter().all(|g| g.uuid.is_some()) {
        gpus.iter().filter_map(|g| g.uuid.clone()).collect::<Vec<_>>().join(",")
    } else {
        gpus.iter().map(|g| g.index.to_string()).collect::<Vec<_>>().join(",")
    }
}

fn output_of(a: &Allocation, adopted: bool, reason: String) -> AllocateOutput {
    let gpus: Vec<ChosenGpu> = a.gpus.iter().map(|g| ChosenGpu { index: g.index, uuid: g.uuid.clone(), name: g.name.clone() }).collect();
    let visible = visible_devices(&gpus);
    AllocateOutput {
        allocation_id: a.id.clone(),
        adopted,
        host: a.host.clone(),
        mode: a.mode,
        indices: gpus.iter().map(|g| g.index).collect(),
        uuids: gpus.iter().filter_map(|g| g.uuid.clone()).collect(),
        env: BTreeMap::from([("CUDA_VISIBLE_DEVICES".to_string(), visible.clone()), ("NVIDIA_VISIBLE_DEVICES".to_string(), visible.clone())]),
        cuda_visible_devices: visible.clone(),
        nvidia_visible_devices: visible,
        gpus,
        reason,
        expires_at: a.expires_at,
    }
}

fn check_count(count: u32) -> Result<(), ConnectorError> {
    if count == 0 || count > MAX_COUNT {
        return Err(ConnectorError::invalid(format!("`count` must be from 1 to {MAX_COUNT}, not {count}")));
    }
    Ok(())
}

/// `gpu.allocate`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allocate;

#[async_trait]
impl Action for Allocate {
    const ID: &'static str = "gpu.allocate";
    const DESCRIPTION: &'static str = "hold GPUs (exclusive or shared) in a ledger that outlives the run; destroy releases them";
    const RESOURCE: Option<&'static str> = Some(ALLOCATION_KIND);
    type Input = AllocateInput;
    type Output = AllocateOutput;

    fn validate(&self, input: &AllocateInput) -> Result<(), ConnectorError> {
        check_count(input.count)?;
        min_memory_mib(input.min_memory_gb, input.min_memory_mb)?;
        if input.ttl.as_ref().is_some_and(|t| t.get().is_zero()) {
            return Err(ConnectorError::invalid("`ttl` must be longer than 0"));
        }
        Ok(())
    }

    async fn run(&self, input: AllocateInput, cx: &StepContext) -> Result<AllocateOutput, ConnectorError> {
        let smi = Smi::new(cx, input.host.as_ref()).await?;
        let ledger = Ledger::for_context(cx)?;
        cx.progress("inspect", Some(10));
        let report = smi.report().await?;
        let key = cx.idempotency_key();
        let host = host_label(cx, input.host.as_ref());
        let id = allocation_id(&host, &key);
        let req = Request {
            count: input.count as usize,
            min_memory_mib: min_memory_mib(input.min_memory_gb, input.min_memory_mb)?,
            exclusive: input.mode == Mode::Exclusive,
            preferred_models: input.preferred_models.clone(),
            workload: input.workload,
            gpus: input.gpus.clone(),
            own_key: Some(key.clone()),
        };
        let target = smi.target().to_string();

        // The intent first: if the engine dies after the ledger write, undo finds the
        // allocation by the key.
        let rec = cx.intend(ALLOCATION_KIND, &key).await?;
        cx.progress("allocate", Some(50));
        let (allocation, adopted, why) = ledger.update(|state| {
            let t = now();
            let purged = state.purge_expired(t) > 0;
            if let Some(a) = state.allocations.iter().find(|a| a.key == key && a.host == host) {
                return Ok(((a.clone(), true, "this step allocated these GPUs already; adopted its allocation".to_string()), purged));
            }
            let live: Vec<&Allocation> = state.live_on(&host, t).collect();
            let ranked = rank(&report.gpus, &live, &req);
            let chosen = take(&ranked, &req, &target).map_err(ConnectorError::capacity)?;
            let why = reason(&chosen, &ranked, &req);
            let a = Allocation {
                id: id.clone(),
                key: key.clone(),
                host: host.clone(),
                mode: input.mode,
                gpus: chosen.iter().map(|c| HeldGpu { index: c.index, uuid: c.uuid.clone(), name: c.name.clone() }).collect(),
                workload: Some(input.workload.to_string()),
                created_at: t,
                expires_at: input.ttl.as_ref().map(|d| t.saturating_add(d.get().as_secs().max(1))),
            };
            state.allocations.push(a.clone());
            Ok(((a, false, why), true))
        })?;
        cx.log(LogStream::Stdout, &format!("{} {} ({}) on {}: {}", if adopted { "adopted" } else { "allocated" }, allocation.id, allocation.mode, allocation.host, why));
        cx.progress("confirm", Some(90));
        cx.confirm(rec, allocation.id.clone(), json!({ "allocation_id": allocation.id, "host": allocation.host })).await?;
        cx.progress("allocated", Some(100));
        Ok(output_of(&allocation, adopted, why))
    }

    /// Release the allocation: by the id in the record, else by the step's key.
    async fn undo(&self, record: &ResourceRecord, cx: &StepContext) -> Result<(), ConnectorError> {
        let id = record.undo.get("allocation_id").and_then(Value::as_str).map(str::to_owned).or_else(|| record.id.clone());
        let released = release(cx, id.as_deref(), Some(&record.key), None)?;
        if released.is_empty() {
            return Err(ConnectorError::not_found(format!("no gpu allocation of `{}` in the ledger", record.key)));
        }
        Ok(())
    }
}

/// Remove the allocations with `id`, or else those of `key` (on `host` when given).
fn release(cx: &StepContext, id: Option<&str>, key: Option<&str>, host: Option<&str>) -> Result<Vec<Allocation>, ConnectorError> {
    let ledger = Ledger::for_context(cx)?;
    let removed = ledger.update(|state| {
        let (gone, kept): (Vec<Allocation>, Vec<Allocation>) = std::mem::take(&mut state.allocations).into_iter().partition(|a| match id {
            Some(id) => a.id == id,
            None => key.is_some_and(|k| a.key == k) && host.is_none_or(|h| a.host == h),
        });
        state.allocations = kept;
        let changed = !gone.is_empty();
        Ok((gone, changed))
    })?;
    for a in &removed {
        cx.log(LogStream::Stdout, &format!("released {} ({} on {})", a.id, a.key, a.host));
    }
    Ok(removed)
}

/// Input of `gpu.deallocate`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeallocateInput {
    /// The allocation to release (`gpu.allocate`'s `allocation_id` output).
    #[serde(default)]
    pub allocation_id: Option<String>,
    /// Or the idempotency key of the step that allocated (`RUN/STEP[/INDEX]`).
    #[serde(default)]
    pub key: Option<String>,
    /// With `key`: the host it allocated on (default: this machine).
    #[serde(default)]
    pub host: Option<HostInput>,
}

/// Output of `gpu.deallocate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeallocateOutput {
    /// Whether an allocation was released (false: it was gone already).
    pub released: bool,
    /// The allocations released.
    pub allocation_ids: Vec<String>,
    /// The GPUs they held.
    pub gpus: Vec<HeldGpu>,
}

/// `gpu.deallocate`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Deallocate;

#[async_trait]
impl Action for Deallocate {
    const ID: &'static str = "gpu.deallocate";
    const DESCRIPTION: &'static str = "release a GPU allocation (by id or by the allocating step's key)";
    type Input = DeallocateInput;
    type Output = DeallocateOutput;

    fn validate(&self, input: &DeallocateInput) -> Result<(), ConnectorError> {
        match (&input.allocation_id, &input.key) {
            (Some(_), Some(_)) => Err(ConnectorError::invalid("give `allocation_id` or `key`, not both")),
            (None, None) => Err(ConnectorError::invalid("give `allocation_id` (from gpu.allocate's outputs) or the allocating step's `key`")),
            (Some(id), None) if id.trim().is_empty() => Err(ConnectorError::invalid("`allocation_id` is empty")),
            (None, Some(k)) if k.trim().is_empty() => Err(ConnectorError::invalid("`key` is empty")),
            _ => Ok(()),
        }
    }

    async fn run(&self, input: DeallocateInput, cx: &StepContext) -> Result<DeallocateOutput, ConnectorError> {
        let host = host_label(cx, input.host.as_ref());
        let removed = release(cx, input.allocation_id.as_deref(), input.key.as_deref(), Some(&host))?;
        if removed.is_empty() {
            cx.log(LogStream::Stdout, "no such allocation: released already");
        }
        Ok(DeallocateOutput {
            released: !removed.is_empty(),
            allocation_ids: removed.iter().map(|a| a.id.clone()).collect(),
            gpus: removed.into_iter().flat_map(|a| a.gpus).collect(),
        })
    }
}

/// Input of `gpu.select`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SelectInput {
    /// Remote host whose GPUs to rank, over SSH (default: this machine).
    #[serde(default)]
    pub host: Option<HostInput>,
    /// How many GPUs (default 1).
    #[serde(default = "one")]
    pub count: u32,
    /// Free memory each GPU needs, GiB.
    #[serde(default)]
    pub min_memory_gb: Option<f64>,
    /// Free memory each GPU needs, MiB.
    #[serde(default)]
    pub min_memory_mb: Option<u64>,
    /// Whether the GPUs are wanted `exclusive` (default; GPUs any allocation holds are
    /// ruled out) or `shared` (only exclusively held GPUs are ruled out).
    #[serde(default = "exclusive")]
    pub mode: Mode,
    /// Model names or parts of them, most wanted first.
    #[serde(default)]
    pub preferred_models: Vec<String>,
    /// What the GPUs are for (default `general`).
    #[serde(default)]
    pub workload: Workload,
    /// Choose only among these GPUs.
    #[serde(default)]
    pub gpus: Option<Vec<GpuRef>>,
}

/// Output of `gpu.select`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct SelectOutput {
    /// Where the GPUs are.
    pub host: String,
    /// The chosen GPUs, best first.
    pub selected: Vec<ChosenGpu>,
    /// Their indices.
    pub indices: Vec<usize>,
    /// Value for `CUDA_VISIBLE_DEVICES`.
    pub cuda_visible_devices: String,
    /// Why these GPUs.
    pub reason: String,
    /// The weights of the score's parts for this workload type.
    pub weights: Weights,
    /// Every GPU with its score breakdown, eligible ones first, best first.
    pub candidates: Vec<Candidate>,
}

/// `gpu.select`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Select;

#[async_trait]
impl Action for Select {
    const ID: &'static str = "gpu.select";
    const DESCRIPTION: &'static str = "rank GPUs for a workload (memory, load, models, power, workload type) and explain the choice";
    type Input = SelectInput;
    type Output = SelectOutput;

    fn validate(&self, input: &SelectInput) -> Result<(), ConnectorError> {
        check_count(input.count)?;
        min_memory_mib(input.min_memory_gb, input.min_memory_mb).map(drop)
    }

    async fn run(&self, input: SelectInput, cx: &StepContext) -> Result<SelectOutput, ConnectorError> {
        let smi = Smi::new(cx, input.host.as_ref()).await?;
        let report = smi.report().await?;
        let host = host_label(cx, input.host.as_ref());
        let allocations = Ledger::for_context(cx)?.read()?;
        let live: Vec<&Allocation> = allocations.live_on(&host, now()).collect();
        let req = Request {
            count: input.count as usize,
            min_memory_mib: min_memory_mib(input.min_memory_gb, input.min_memory_mb)?,
            exclusive: input.mode == Mode::Exclusive,
            preferred_models: input.preferred_models,
            workload: input.workload,
            gpus: input.gpus,
            own_key: None,
        };
        let ranked = rank(&report.gpus, &live, &req);
        let chosen = take(&ranked, &req, smi.target()).map_err(ConnectorError::capacity)?;
        let selected: Vec<ChosenGpu> = chosen.iter().map(|c| ChosenGpu { index: c.index, uuid: c.uuid.clone(), name: c.name.clone() }).collect();
        let why = reason(&chosen, &ranked, &req);
        Ok(SelectOutput {
            host: smi.target().to_string(),
            indices: selected.iter().map(|g| g.index).collect(),
            cuda_visible_devices: visible_devices(&selected),
            selected,
            reason: why,
            weights: Weights::for_workload(req.workload),
            candidates: ranked,
        })
    }
}
