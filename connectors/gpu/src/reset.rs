//! `gpu.reset`.
//!
//! ## What it does
//! Resets one GPU with `nvidia-smi -r -i INDEX` (clears its state after a fault such as
//! a double-bit ECC error, or applies a pending MIG mode). Before that it refuses while
//! compute processes run on the GPU, or while another step's allocation in the ledger
//! holds it, unless `force: true`. nvidia-smi needs root for a reset, and refuses itself
//! while any process (a display server too) uses the GPU.
//!
//! ## Undo
//! Nothing is created.
//!
//! ## Errors
//! Processes or allocations on the GPU without `force`, or nvidia-smi saying the GPU is
//! in use: `conflict`. Not root: `auth`. Not supported (most consumer boards): `invalid`.
//! Other failures as `gpu.list`.
//!
//! ## Example
//! ```yaml
//! reset:
//!   uses: gpu.reset
//!   with: { gpu: 0 }
//! ```

use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, LogStream, StepContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::client::{smi_failure, Smi};
use crate::common::{allocations_or_warn, host_label};
use crate::exec::HostInput;
use crate::gpus::{describe, pick, GpuRef};
use crate::processes::compute_processes;

/// Input of `gpu.reset`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetInput {
    /// Remote host, over SSH (default: this machine).
    #[serde(default)]
    pub host: Option<HostInput>,
    /// The GPU to reset (index, UUID or PCI bus id).
    pub gpu: GpuRef,
    /// Reset even while compute processes run on it or an allocation holds it.
    #[serde(default)]
    pub force: bool,
}

/// Output of `gpu.reset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ResetOutput {
    /// Where the GPU is.
    pub host: String,
    /// nvidia-smi index of the GPU reset.
    pub index: usize,
    /// Its UUID.
    pub uuid: Option<String>,
    /// Compute processes that were running when it was reset (with `force`).
    pub killed_processes: Vec<u32>,
    /// What nvidia-smi said.
    pub message: String,
}

/// `gpu.reset`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reset;

#[async_trait]
impl Action for Reset {
    const ID: &'static str = "gpu.reset";
    const DESCRIPTION: &'static str = "reset a GPU (nvidia-smi -r); refuses while processes or allocations use it unless force";
    type Input = ResetInput;
    type Output = ResetOutput;

    async fn run(&self, input: ResetInput, cx: &StepContext) -> Result<ResetOutput, ConnectorError> {
        let smi = Smi::new(cx, input.host.as_ref()).await?;
        let report = smi.report().await?;
        let gpu = pick(&report, Some(std::slice::from_ref(&input.gpu)), smi.target())?.into_iter().next().cloned().unwrap_or_default();
        let index = gpu.index.to_string();
        let processes = compute_processes(&smi, Some(&[GpuRef::Id(gpu.uuid.clone().unwrap_or_else(|| index.clone()))])).await?;
        if !processes.is_empty() && !input.force {
            let list: Vec<String> = processes.iter().map(|p| format!("{} {}", p.pid.map_or("?".into(), |p| p.to_string()), p.name.as_deref().unwrap_or("?"))).collect();
            return Err(ConnectorError::conflict(format!(
                "{} on {} runs {} compute process{} ({}): stop {} first, or pass `force: true`",
                describe(&gpu),
                smi.target(),
                processes.len(),
                if processes.len() == 1 { "" } else { "es" },
                list.join(", "),
                if processes.len() == 1 { "it" } else { "them" }
            )));
        }
        let own = cx.idempotency_key();
        let held: Vec<String> = allocations_or_warn(cx, &host_label(cx, input.host.as_ref()))
            .into_iter()
            .filter(|a| a.key != own && a.gpus.iter().any(|h| h.is(gpu.index, gpu.uuid.as_deref())))
            .map(|a| format!("{} ({}, {})", a.id, a.key, a.mode))
            .collect();
        if !held.is_empty() && !input.force {
            return Err(ConnectorError::conflict(format!("{} on {} is allocated to {}: release it first, or pass `force: true`", describe(&gpu), smi.target(), held.join(", "))));
        }
        cx.progress("reset", Some(50));
        let args = ["-r", "-i", index.as_str()];
        let out = smi.run_unchecked(&args).await?;
        if !out.success() {
            let said = out.text(600);
            if said.to_ascii_lowercase().contains("in use by another") || said.to_ascii_lowercase().contains("currently in use") {
                return Err(ConnectorError::conflict(format!("nvidia-smi refused to reset {} on {}: the GPU is in use: {said}", describe(&gpu), smi.target())));
            }
            return Err(smi_failure(&smi.settings.nvidia_smi, smi.target(), &args, &out));
        }
        let message = out.text(600);
        cx.log(LogStream::Stdout, &message);
        cx.progress("reset", Some(100));
        Ok(ResetOutput { host: smi.target().to_string(), index: gpu.index, uuid: gpu.uuid, killed_processes: processes.iter().filter_map(|p| p.pid).collect(), message })
    }
}
