//! `aws.cost.estimate`: on-demand and spot cost of instances for some hours.
//!
//! ## What it does
//! On-demand from the crate's dated table ([`crate::catalog`], us-east-1 list prices,
//! approximate); spot from `DescribeSpotPriceHistory` (the lowest latest price of the region's
//! zones) when `live` is on and the API answers, else the table's typical spot. The output says
//! which (`spot_source: live | table`) and the table's date. Times `count` × `hours`.
//! ## Undo
//! Nothing to undo.
//! ## Errors
//! `invalid` for a type the table does not know or a bad count/hours. A failed live lookup is
//! not an error: the table is used and `notes` says why.
//! ## Example
//! `uses: aws.cost.estimate` `with: {gpu: {type: nvidia-t4, count: 1}, hours: 730, spot: true}`

use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, StepContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::availability::spot_prices;
use crate::catalog::{self, round3, PRICE_TABLE_DATE, SPOT_FACTOR};
use crate::client::Ec2;
use crate::instance::GpuAsk;

/// Input of `aws.cost.estimate`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CostInput {
    /// Region (default: the connector's; the table is us-east-1's).
    #[serde(default)]
    pub region: Option<String>,
    /// Instance type; or give `gpu`.
    #[serde(default)]
    pub instance_type: Option<String>,
    /// GPU type and count.
    #[serde(default)]
    pub gpu: Option<GpuAsk>,
    /// Instances (default 1).
    #[serde(default = "one")]
    pub count: u32,
    /// Hours (default 1; 730 is a month).
    #[serde(default = "one_f")]
    pub hours: f64,
    /// Price it as spot (`hourly_price`/`total` then use the spot figure).
    #[serde(default)]
    pub spot: bool,
    /// Ask EC2 for live spot prices (default true).
    #[serde(default = "yes")]
    pub live: bool,
}

fn one() -> u32 {
    1
}
fn one_f() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}

/// Output of `aws.cost.estimate`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CostOutput {
    /// Instance type.
    pub instance_type: String,
    /// Region.
    pub region: Option<String>,
    /// Instances.
    pub count: u32,
    /// Hours.
    pub hours: f64,
    /// On-demand USD/h of one instance.
    pub on_demand_hourly: f64,
    /// Spot USD/h of one instance.
    pub spot_hourly: f64,
    /// `table` (always, for on-demand).
    pub on_demand_source: String,
    /// `live` (DescribeSpotPriceHistory) or `table`.
    pub spot_source: String,
    /// On-demand total.
    pub total_on_demand: f64,
    /// Spot total.
    pub total_spot: f64,
    /// Spot saving, percent of on-demand.
    pub spot_savings_percent: f64,
    /// USD/h of one instance as asked (spot or on-demand).
    pub hourly_price: f64,
    /// Total as asked.
    pub total: f64,
    /// `USD`.
    pub currency: String,
    /// Date of the price table.
    pub price_date: String,
    /// True: list prices change; the table is approximate.
    pub approximate: bool,
    /// Where the figures come from, and caveats.
    pub notes: Vec<String>,
}

/// `aws.cost.estimate`.
#[derive(Debug, Clone, Default)]
pub struct CostEstimate;

fn resolve(input: &CostInput) -> Result<&'static catalog::GpuInstance, ConnectorError> {
    let t = match (&input.instance_type, &input.gpu) {
        (Some(t), None) => t.clone(),
        (None, Some(g)) => catalog::select(&g.gpu_type, g.count)?.instance_type.to_string(),
        (Some(_), Some(_)) => return Err(ConnectorError::invalid("give `instance_type` or `gpu`, not both")),
        (None, None) => return Err(ConnectorError::invalid("give `instance_type` or `gpu: {type, count}`")),
    };
    catalog::by_type(&t).ok_or_else(|| ConnectorError::invalid(format!("no price for {t:?}: the table covers the GPU types of aws.gpu_types")))
}

#[async_trait]
impl Action for CostEstimate {
    const ID: &'static str = "aws.cost.estimate";
    const DESCRIPTION: &'static str = "on-demand and spot cost of GPU instances (dated table, live spot prices where the API answers)";
    type Input = CostInput;
    type Output = CostOutput;

    fn validate(&self, input: &Self::Input) -> Result<(), ConnectorError> {
        resolve(input)?;
        if input.count == 0 || !(input.hours > 0.0 && input.hours.is_finite()) {
            return Err(ConnectorError::invalid("count and hours must be positive"));
        }
        Ok(())
    }

    async fn run(&self, input: Self::Input, cx: &StepContext) -> Result<Self::Output, ConnectorError> {
        let g = resolve(&input)?;
        let mut notes = vec![format!("on-demand: list price for Linux in us-east-1 from the table of {PRICE_TABLE_DATE}, approximate")];
        let mut spot_hourly = catalog::typical_spot(g);
        let mut spot_source = "table";
        let mut region = input.region.clone();
        if input.live {
            match Ec2::for_step(cx, input.region.as_deref()) {
                Ok(ec2) if ec2.has_credentials() => {
                    region = Some(ec2.region().to_string());
                    match spot_prices(&ec2, cx, g.instance_type).await {
                        Ok(p) => match p.iter().map(|s| s.price).filter(|p| *p > 0.0).min_by(f64::total_cmp) {
                            Some(min) => {
                                spot_hourly = min;
                                spot_source = "live";
                                notes.push(format!("spot: lowest latest price of {} zone(s) in {} (DescribeSpotPriceHistory)", p.len(), ec2.region()));
                            }
                            None => notes.push(format!("spot: EC2 returned no usable spot price for {} in {}; using the table", g.instance_type, ec2.region())),
                        },
                        Err(e) => notes.push(format!("spot: live prices unavailable ({}); using the table", e.message)),
                    }
                }
                Ok(_) => notes.push("spot: no AWS credentials; using the table".into()),
                Err(e) => notes.push(format!("spot: {}; using the table", e.message)),
            }
        }
        if spot_source == "table" {
            notes.push(format!("spot: typical price, estimated at {:.0}% of on-demand", SPOT_FACTOR * 100.0));
        }
        if region.as_deref().is_some_and(|r| r != "us-east-1") {
            notes.push("on-demand prices in other regions differ from us-east-1's".into());
        }
        let n = f64::from(input.count) * input.hours;
        let (total_on_demand, total_spot) = (round3(g.on_demand * n), round3(spot_hourly * n));
        let savings = if g.on_demand > 0.0 { ((1.0 - spot_hourly / g.on_demand) * 1000.0).round() / 10.0 } else { 0.0 };
        Ok(CostOutput {
            instance_type: g.instance_type.into(),
            region,
            count: input.count,
            hours: input.hours,
            on_demand_hourly: g.on_demand,
            spot_hourly,
            on_demand_source: "table".into(),
            spot_source: spot_source.into(),
            total_on_demand,
            total_spot,
            spot_savings_percent: savings,
            hourly_price: if input.spot { spot_hourly } else { g.on_demand },
            total: if input.spot { total_spot } else { total_on_demand },
            currency: "USD".into(),
            price_date: PRICE_TABLE_DATE.into(),
            approximate: true,
            notes,
        })
    }
}
