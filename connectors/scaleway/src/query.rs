//! `scaleway.availability`, `scaleway.prices` and `scaleway.images`: the read-only actions.
//!
//! ## What it does
//! `availability` reads `GET /instance/v1/zones/ZONE/products/servers/availability` and says,
//! for each type asked, `available`, `scarce`, `shortage` or `not_offered`, plus the first type
//! (in the order given) that can be had now. `prices` reads the zone's products (`hourly_price`,
//! GPUs) and falls back to the dated table of [`crate::catalog`] without credentials or on a
//! type the zone does not list. `images` applies seed 000's table (GPU types get `gpu-os-12`,
//! others `ubuntu_jammy`) and resolves it to the zone's `instance_sbs` image through the
//! Marketplace API (`GET /marketplace/v2/local-images?image_label=...`).
//! ## Undo
//! Nothing to undo.
//! ## Errors
//! `auth`, `invalid` (bad zone, no image), `transient`.
//! ## Example
//! `uses: scaleway.availability` `with: {zone: fr-par-2, types: [H100-1-80G, L40S-1-48G, L4-1-24G]}`

use std::collections::BTreeMap;

use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, StepContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::catalog;
use crate::client::Scw;
use crate::ops::{self, GpuInfo, LocalImage};

/// Input of `scaleway.availability`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AvailabilityInput {
    /// Zone (default: the connector's).
    #[serde(default)]
    pub zone: Option<String>,
    /// Commercial types, in order of preference.
    pub types: Vec<String>,
}

/// Output of `scaleway.availability`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct AvailabilityOutput {
    /// Zone.
    pub zone: String,
    /// Stock per type asked: `available`, `scarce`, `shortage`, or `not_offered`.
    pub stock: BTreeMap<String, String>,
    /// The first type of `types` that is `available` or `scarce`, if any.
    pub first_available: Option<String>,
    /// The types of `types` that are `available` or `scarce`, in the order given.
    pub available: Vec<String>,
}

/// `scaleway.availability`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Availability;

#[async_trait]
impl Action for Availability {
    const ID: &'static str = "scaleway.availability";
    const DESCRIPTION: &'static str = "stock of commercial types in a zone (available/scarce/shortage) and the first one that can be had";
    type Input = AvailabilityInput;
    type Output = AvailabilityOutput;

    fn validate(&self, input: &Self::Input) -> Result<(), ConnectorError> {
        if input.types.is_empty() {
            return Err(ConnectorError::invalid("types: give at least one commercial type"));
        }
        Ok(())
    }

    async fn run(&self, input: Self::Input, cx: &StepContext) -> Result<Self::Output, ConnectorError> {
        let scw = Scw::for_step(cx, input.zone.as_deref())?;
        let all = ops::availability(&scw, cx).await?;
        let stock: BTreeMap<String, String> = input.types.iter().map(|t| (t.clone(), all.get(t).cloned().unwrap_or_else(|| "not_offered".into()))).collect();
        let available: Vec<String> = input.types.iter().filter(|t| matches!(stock.get(*t).map(String::as_str), Some("available" | "scarce"))).cloned().collect();
        Ok(AvailabilityOutput { zone: scw.zone().to_string(), first_available: available.first().cloned(), stock, available })
    }
}

/// Input of `scaleway.prices`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PricesInput {
    /// Zone (default: the connector's).
    #[serde(default)]
    pub zone: Option<String>,
    /// Commercial types (default: every GPU type the zone offers, or the table's without credentials).
    #[serde(default)]
    pub types: Option<Vec<String>>,
}

/// The price of one type.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Price {
    /// € per hour (null when neither the API nor the table knows the type).
    pub hourly_price: Option<f64>,
    /// GPUs (null for a CPU type).
    pub gpu: Option<GpuInfo>,
    /// vCPUs, when the API said.
    pub ncpus: Option<u64>,
    /// `live` (the zone's products endpoint) or `table` (the dated table).
    pub source: String,
}

/// Output of `scaleway.prices`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PricesOutput {
    /// Zone.
    pub zone: String,
    /// `EUR`.
    pub currency: String,
    /// Price per type.
    pub prices: BTreeMap<String, Price>,
    /// The date of the table, for rows whose source is `table`.
    pub table_date: String,
    /// Why live prices could not be read, if they could not.
    pub live_error: Option<String>,
}

/// `scaleway.prices`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Prices;

fn table_price(t: &catalog::GpuType) -> Price {
    Price { hourly_price: Some(t.hourly_eur), gpu: Some(GpuInfo { model: t.model.into(), count: t.count, memory_gb: t.memory_gb }), ncpus: None, source: "table".into() }
}

#[async_trait]
impl Action for Prices {
    const ID: &'static str = "scaleway.prices";
    const DESCRIPTION: &'static str = "€/h of commercial types in a zone with their GPUs (live from the products endpoint, else a dated table)";
    type Input = PricesInput;
    type Output = PricesOutput;

    async fn run(&self, input: Self::Input, cx: &StepContext) -> Result<Self::Output, ConnectorError> {
        let scw = Scw::for_step(cx, input.zone.as_deref())?;
        let (live, live_error) = if scw.target.secret_key.is_some() {
            match ops::products(&scw, cx).await {
                Ok(p) => (Some(p), None),
                Err(e) if e.kind == engine_connector::ErrorKind::Transient => (None, Some(e.message)),
                Err(e) => return Err(e),
            }
        } else {
            (None, Some(scw.target.secret_source.clone()))
        };
        let types: Vec<String> = match (&input.types, &live) {
            (Some(t), _) => t.clone(),
            (None, Some(p)) => p.iter().filter(|(k, v)| catalog::is_gpu(k) || v.get("gpu").and_then(serde_json::Value::as_u64).unwrap_or(0) > 0).map(|(k, _)| k.clone()).collect(),
            (None, None) => catalog::PRICES.iter().map(|t| t.commercial_type.to_string()).collect(),
        };
        let mut prices = BTreeMap::new();
        for t in types {
            let p = match live.as_ref().and_then(|p| p.get(&t)) {
                Some(v) => {
                    let p = ops::parse_product(&t, v);
                    Price { hourly_price: p.hourly_price, gpu: p.gpu, ncpus: p.ncpus, source: "live".into() }
                }
                None => catalog::by_type(&t).map_or(Price { hourly_price: None, gpu: None, ncpus: None, source: "table".into() }, table_price),
            };
            prices.insert(t, p);
        }
        Ok(PricesOutput { zone: scw.zone().to_string(), currency: "EUR".into(), prices, table_date: catalog::PRICES_DATE.into(), live_error })
    }
}

/// Input of `scaleway.images`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImagesInput {
    /// Zone (default: the connector's).
    #[serde(default)]
    pub zone: Option<String>,
    /// The commercial type the image is for: picks the image by seed 000's table and keeps
    /// only images compatible with it.
    #[serde(default)]
    pub commercial_type: Option<String>,
    /// A marketplace label to resolve instead of the table's pick (`ubuntu_noble`).
    #[serde(default)]
    pub label: Option<String>,
}

/// Output of `scaleway.images`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ImagesOutput {
    /// Zone.
    pub zone: String,
    /// The image name asked or picked (`gpu-os-12`, `ubuntu_jammy`, or `label`).
    pub label: String,
    /// Whether the type is a GPU type (seed 000's regex).
    pub gpu: bool,
    /// The image id to create the server with.
    pub image_id: String,
    /// The chosen image.
    pub image: LocalImage,
    /// Every `instance_sbs` image of the label in the zone.
    pub candidates: Vec<LocalImage>,
}

/// `scaleway.images`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Images;

#[async_trait]
impl Action for Images {
    const ID: &'static str = "scaleway.images";
    const DESCRIPTION: &'static str = "the image for a commercial type (GPU OS for GPU types, seed 000) resolved to the zone's image id";
    type Input = ImagesInput;
    type Output = ImagesOutput;

    fn validate(&self, input: &Self::Input) -> Result<(), ConnectorError> {
        if input.commercial_type.is_none() && input.label.is_none() {
            return Err(ConnectorError::invalid("give commercial_type, label, or both"));
        }
        Ok(())
    }

    async fn run(&self, input: Self::Input, cx: &StepContext) -> Result<Self::Output, ConnectorError> {
        let scw = Scw::for_step(cx, input.zone.as_deref())?;
        let ct = input.commercial_type.as_deref();
        let label = input.label.clone().unwrap_or_else(|| catalog::image_for(ct.unwrap_or_default()).to_string());
        let (image, candidates) = ops::resolve_image(&scw, cx, &label, ct).await?;
        Ok(ImagesOutput { zone: scw.zone().to_string(), label, gpu: ct.is_some_and(catalog::is_gpu), image_id: image.id.clone(), image, candidates })
    }
}
