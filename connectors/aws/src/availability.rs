//! `aws.availability`: where an instance type is offered, its spot prices, and alternatives.
//!
//! ## What it does
//! `DescribeInstanceTypeOfferings` (location type `availability-zone`) for the asked type and its
//! alternatives, and `DescribeSpotPriceHistory` (Linux/UNIX, latest per zone) when `spot` is on.
//! When the type is not offered in the asked zone (or anywhere in the region) it lists
//! alternatives, best first: the same type in another zone, the next sizes of the family, the
//! next GPU classes with as many GPUs, each with the zones that offer it. Offerings say where a
//! type exists, not that there is stock right now: `InsufficientInstanceCapacity` at launch is
//! still possible (kind `capacity`, for the step's `fallback`).
//! ## Undo
//! Nothing to undo.
//! ## Errors
//! With `require: true`, `capacity` when the type is not offered where asked (naming the
//! alternatives); EC2's errors otherwise.
//! ## Example
//! `uses: aws.availability` `with: {gpu: {type: nvidia-a10g, count: 1}, availability_zone: us-east-1a}`

use std::collections::BTreeMap;

use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, StepContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::catalog;
use crate::client::{items, parse, text, Ec2, Params};
use crate::instance::GpuAsk;

/// Input of `aws.availability`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AvailabilityInput {
    /// Region (default: the connector's).
    #[serde(default)]
    pub region: Option<String>,
    /// Instance type; or give `gpu`.
    #[serde(default)]
    pub instance_type: Option<String>,
    /// GPU type and count (seed 003's table).
    #[serde(default)]
    pub gpu: Option<GpuAsk>,
    /// The zone you want it in.
    #[serde(default)]
    pub availability_zone: Option<String>,
    /// Read spot prices too (default true).
    #[serde(default = "yes")]
    pub spot: bool,
    /// Fail with `capacity` when it is not offered where asked (default false: answer `available: false`).
    #[serde(default)]
    pub require: bool,
}

fn yes() -> bool {
    true
}

/// A spot price.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SpotPrice {
    /// Zone.
    pub zone: String,
    /// USD per hour.
    pub price: f64,
    /// When EC2 set it.
    pub timestamp: String,
}

/// An alternative.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Alternative {
    /// Instance type.
    pub instance_type: String,
    /// `same type, another zone`, `next size`, `next GPU class`.
    pub reason: String,
    /// Zones that offer it.
    pub zones: Vec<String>,
    /// `nvidia-...`.
    pub gpu_type: Option<String>,
    /// GPUs.
    pub gpu_count: Option<u32>,
    /// On-demand USD/h (table).
    pub on_demand_hourly: Option<f64>,
}

/// Output of `aws.availability`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct AvailabilityOutput {
    /// The type asked.
    pub instance_type: String,
    /// Region.
    pub region: String,
    /// Offered where asked (the zone, or anywhere in the region).
    pub available: bool,
    /// Zones of the region that offer it.
    pub zones: Vec<String>,
    /// The zone asked.
    pub availability_zone: Option<String>,
    /// Latest spot price per zone (EC2's; emulators answer dummies).
    pub spot_prices: Vec<SpotPrice>,
    /// Alternatives when it is not available (best first).
    pub alternatives: Vec<Alternative>,
    /// What "available" means here.
    pub note: String,
}

/// `aws.availability`.
#[derive(Debug, Clone, Default)]
pub struct Availability;

fn asked_type(instance_type: Option<&String>, gpu: Option<&GpuAsk>) -> Result<String, ConnectorError> {
    match (instance_type, gpu) {
        (Some(t), None) => Ok(t.clone()),
        (None, Some(g)) => Ok(catalog::select(&g.gpu_type, g.count)?.instance_type.to_string()),
        (Some(_), Some(_)) => Err(ConnectorError::invalid("give `instance_type` or `gpu`, not both")),
        (None, None) => Err(ConnectorError::invalid("give `instance_type` or `gpu: {type, count}`")),
    }
}

/// Zones offering each of `types` in the client's region.
///
/// # Errors
/// EC2's errors.
pub async fn offerings(ec2: &Ec2, cx: &StepContext, types: &[String]) -> Result<BTreeMap<String, Vec<String>>, ConnectorError> {
    let mut out: BTreeMap<String, Vec<String>> = types.iter().map(|t| (t.clone(), Vec::new())).collect();
    let mut token: Option<String> = None;
    loop {
        let mut p = Params::new();
        p.set("LocationType", "availability-zone").filters(&[("instance-type", types.to_vec())]);
        if let Some(t) = &token {
            p.set("NextToken", t);
        }
        let xml = ec2.call(cx, "DescribeInstanceTypeOfferings", &p.0).await?;
        let doc = parse("DescribeInstanceTypeOfferings", &xml)?;
        for o in items(doc.root_element(), "instanceTypeOfferingSet") {
            if let (Some(t), Some(z)) = (text(o, "instanceType"), text(o, "location")) {
                out.entry(t).or_default().push(z);
            }
        }
        token = text(doc.root_element(), "nextToken");
        if token.is_none() {
            break;
        }
    }
    for z in out.values_mut() {
        z.sort();
        z.dedup();
    }
    Ok(out)
}

/// The latest Linux/UNIX spot price per zone of `instance_type`.
///
/// # Errors
/// EC2's errors.
pub async fn spot_prices(ec2: &Ec2, cx: &StepContext, instance_type: &str) -> Result<Vec<SpotPrice>, ConnectorError> {
    let mut p = Params::new();
    p.set("InstanceType.1", instance_type).set("ProductDescription.1", "Linux/UNIX").set("StartTime", rfc3339_now()).set("MaxResults", "100");
    let xml = ec2.call(cx, "DescribeSpotPriceHistory", &p.0).await?;
    let doc = parse("DescribeSpotPriceHistory", &xml)?;
    let mut latest: BTreeMap<String, SpotPrice> = BTreeMap::new();
    for i in items(doc.root_element(), "spotPriceHistorySet") {
        if text(i, "instanceType").as_deref().is_some_and(|t| t != instance_type) {
            continue;
        }
        let Some(price) = text(i, "spotPrice").and_then(|p| p.parse::<f64>().ok()) else { continue };
        let zone = text(i, "availabilityZone").unwrap_or_default();
        let timestamp = text(i, "timestamp").unwrap_or_default();
        let newer = latest.get(&zone).is_none_or(|old| old.timestamp < timestamp);
        if newer {
            latest.insert(zone.clone(), SpotPrice { zone, price, timestamp });
        }
    }
    Ok(latest.into_values().collect())
}

/// Now, as `2025-06-15T12:00:00Z`.
#[must_use]
pub fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// A Unix time as RFC 3339 UTC.
#[must_use]
pub fn rfc3339(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, (rem % 3600) / 60, rem % 60)
}

#[async_trait]
impl Action for Availability {
    const ID: &'static str = "aws.availability";
    const DESCRIPTION: &'static str = "zones that offer an instance type, spot prices, and alternatives when it is not offered";
    type Input = AvailabilityInput;
    type Output = AvailabilityOutput;

    fn validate(&self, input: &Self::Input) -> Result<(), ConnectorError> {
        asked_type(input.instance_type.as_ref(), input.gpu.as_ref()).map(|_| ())
    }

    async fn run(&self, input: Self::Input, cx: &StepContext) -> Result<Self::Output, ConnectorError> {
        let ec2 = Ec2::for_step(cx, input.region.as_deref())?;
        let asked = asked_type(input.instance_type.as_ref(), input.gpu.as_ref())?;
        let alts = catalog::alternatives(&asked);
        let mut types = vec![asked.clone()];
        types.extend(alts.iter().map(|(g, _)| g.instance_type.to_string()));
        cx.progress("reading instance type offerings", Some(20));
        let offered = offerings(&ec2, cx, &types).await?;
        let zones = offered.get(&asked).cloned().unwrap_or_default();
        let available = match &input.availability_zone {
            Some(z) => zones.contains(z),
            None => !zones.is_empty(),
        };
        let spot = if input.spot {
            cx.progress("reading spot prices", Some(60));
            spot_prices(&ec2, cx, &asked).await?
        } else {
            Vec::new()
        };
        let mut alternatives = Vec::new();
        if !available {
            if input.availability_zone.is_some() && !zones.is_empty() {
                let g = catalog::by_type(&asked);
                alternatives.push(Alternative {
                    instance_type: asked.clone(),
                    reason: "same type, another zone".into(),
                    zones: zones.clone(),
                    gpu_type: g.map(|g| format!("nvidia-{}", g.gpu_type)),
                    gpu_count: g.map(|g| g.gpu_count),
                    on_demand_hourly: g.map(|g| g.on_demand),
                });
            }
            // Offered in the asked zone first, then elsewhere in the region.
            let mut others: Vec<(bool, Alternative)> = Vec::new();
            for (g, reason) in &alts {
                let z = offered.get(g.instance_type).cloned().unwrap_or_default();
                if z.is_empty() {
                    continue;
                }
                let in_zone = input.availability_zone.as_ref().is_none_or(|asked_zone| z.contains(asked_zone));
                others.push((
                    in_zone,
                    Alternative {
                        instance_type: g.instance_type.into(),
                        reason: (*reason).into(),
                        zones: z,
                        gpu_type: Some(format!("nvidia-{}", g.gpu_type)),
                        gpu_count: Some(g.gpu_count),
                        on_demand_hourly: Some(g.on_demand),
                    },
                ));
            }
            others.sort_by_key(|(in_zone, _)| !*in_zone);
            alternatives.extend(others.into_iter().map(|(_, a)| a));
            if input.require {
                let where_ = input.availability_zone.clone().unwrap_or_else(|| ec2.region().to_string());
                let alt: Vec<String> = alternatives.iter().map(|a| format!("{} ({}: {})", a.instance_type, a.reason, a.zones.join(" "))).collect();
                return Err(ConnectorError::capacity(format!(
                    "{asked} is not offered in {where_}; alternatives: {}",
                    if alt.is_empty() { "none found".to_string() } else { alt.join(", ") }
                )));
            }
        }
        cx.progress("done", Some(100));
        Ok(AvailabilityOutput {
            instance_type: asked,
            region: ec2.region().to_string(),
            available,
            zones,
            availability_zone: input.availability_zone,
            spot_prices: spot,
            alternatives,
            note: "offered = the type exists in the zone (DescribeInstanceTypeOfferings); stock is only known at launch (InsufficientInstanceCapacity)".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_718_454_645), "2024-06-15T12:30:45Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
