//! `aws.gpu_types`: the GPU instance catalogue (seed 001) and the
//! `gpu_type × gpu_count → instance type` table (seed 003).
//!
//! ## What it does
//! Lists every GPU instance type the connector knows with its GPU model, count, GPU memory,
//! vCPUs, RAM and table prices; with `gpu_type` (and `gpu_count`) or `instance_type`, narrows the
//! list and returns the `selected` type. Pure: no credentials, no network.
//! ## Undo
//! Nothing to undo.
//! ## Errors
//! `invalid` (also at `engine validate`) for an unknown GPU type, a count no size offers, or an
//! instance type outside the catalogue, listing what is valid.
//! ## Example
//! `uses: aws.gpu_types` `with: {gpu_type: nvidia-v100, gpu_count: 4}` → `selected.instance_type: p3.8xlarge`

use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, StepContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::catalog::{self, GpuInstance, TableRow, PRICE_TABLE_DATE};

/// Input of `aws.gpu_types`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuTypesInput {
    /// Only this GPU type (`nvidia-t4`, `T4`...).
    #[serde(default)]
    pub gpu_type: Option<String>,
    /// With `gpu_type`: select the instance type for this many GPUs.
    #[serde(default)]
    pub gpu_count: Option<u32>,
    /// Only this instance type.
    #[serde(default)]
    pub instance_type: Option<String>,
}

/// One GPU instance type.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct GpuTypeInfo {
    /// `g5.xlarge`.
    pub instance_type: String,
    /// `g5`.
    pub family: String,
    /// `nvidia-a10g`.
    pub gpu_type: String,
    /// `NVIDIA A10G`.
    pub gpu_model: String,
    /// GPUs.
    pub gpu_count: u32,
    /// Memory of one GPU, GiB.
    pub gpu_memory_gb: u32,
    /// All GPUs' memory, GiB.
    pub total_gpu_memory_gb: u32,
    /// vCPUs.
    pub vcpu: u32,
    /// RAM, GiB.
    pub memory_gb: u32,
    /// On-demand USD/h, us-east-1, approximate (see `price_date`).
    pub on_demand_hourly: f64,
    /// Typical spot USD/h (an estimate).
    pub spot_hourly_typical: f64,
}

impl From<&GpuInstance> for GpuTypeInfo {
    fn from(g: &GpuInstance) -> Self {
        Self {
            instance_type: g.instance_type.into(),
            family: catalog::family(g.instance_type).into(),
            gpu_type: format!("nvidia-{}", g.gpu_type),
            gpu_model: g.gpu_model.into(),
            gpu_count: g.gpu_count,
            gpu_memory_gb: g.gpu_memory_gb,
            total_gpu_memory_gb: g.gpu_memory_gb * g.gpu_count,
            vcpu: g.vcpu,
            memory_gb: g.memory_gb,
            on_demand_hourly: g.on_demand,
            spot_hourly_typical: catalog::typical_spot(g),
        }
    }
}

/// Output of `aws.gpu_types`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct GpuTypesOutput {
    /// The types (all, or those asked).
    pub types: Vec<GpuTypeInfo>,
    /// Seed 003's table: `gpu_type × gpu_count → instance_type`.
    pub table: Vec<TableRow>,
    /// The type for `gpu_type` + `gpu_count`, or `instance_type`.
    pub selected: Option<GpuTypeInfo>,
    /// Date of the price table.
    pub price_date: String,
}

/// `aws.gpu_types`.
#[derive(Debug, Clone, Default)]
pub struct GpuTypes;

fn answer(input: &GpuTypesInput) -> Result<GpuTypesOutput, ConnectorError> {
    let mut types: Vec<&GpuInstance> = catalog::CATALOGUE.iter().collect();
    let mut selected = None;
    if let Some(t) = &input.instance_type {
        let g = catalog::by_type(t).ok_or_else(|| {
            let all: Vec<&str> = catalog::CATALOGUE.iter().map(|g| g.instance_type).collect();
            ConnectorError::invalid(format!("{t:?} is not a GPU instance type this connector knows: valid types are {}", all.join(", ")))
        })?;
        types.retain(|x| x.instance_type == g.instance_type);
        selected = Some(g);
    }
    if let Some(gt) = &input.gpu_type {
        let canon = catalog::canonical_gpu(gt).map_or_else(|| catalog::select(gt, 1).map(|_| ""), Ok)?;
        types.retain(|x| x.gpu_type == canon);
        if let Some(c) = input.gpu_count {
            selected = Some(catalog::select(gt, c)?);
        }
    } else if input.gpu_count.is_some() {
        return Err(ConnectorError::invalid("gpu_count needs gpu_type"));
    }
    Ok(GpuTypesOutput { types: types.into_iter().map(GpuTypeInfo::from).collect(), table: catalog::table(), selected: selected.map(GpuTypeInfo::from), price_date: PRICE_TABLE_DATE.into() })
}

#[async_trait]
impl Action for GpuTypes {
    const ID: &'static str = "aws.gpu_types";
    const DESCRIPTION: &'static str = "EC2 GPU instance types with their GPUs, and the gpu_type x gpu_count -> instance type table";
    type Input = GpuTypesInput;
    type Output = GpuTypesOutput;

    fn validate(&self, input: &Self::Input) -> Result<(), ConnectorError> {
        answer(input).map(|_| ())
    }

    async fn run(&self, input: Self::Input, _cx: &StepContext) -> Result<Self::Output, ConnectorError> {
        answer(&input)
    }
}
