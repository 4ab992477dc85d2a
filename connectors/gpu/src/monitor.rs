//! `gpu.monitor`.
//!
//! ## What it does
//! Samples the GPUs every `interval` for `duration` (`"30s"`, `"500ms"`, `"5m"`; the
//! first sample at once, the last at `duration`), each sample one
//! `nvidia-smi --query-gpu=... --format=csv,noheader,nounits`, and returns the samples
//! plus insights per GPU: average and peak utilisation, memory, temperature and power,
//! the clock event (throttle) reasons seen and in how many samples, and notes for
//! people (idle, saturated, memory nearly full, hot, power-capped, throttled). The
//! throttle reasons come from `clocks_event_reasons.active` (drivers 535 and later) or
//! `clocks_throttle_reasons.active` (before), decoded from NVML's bit mask.
//!
//! The waits are cancellable: a cancelled step stops at once. Progress is reported
//! after every sample.
//!
//! ## Undo
//! Nothing is created.
//!
//! ## Errors
//! As `gpu.list`; `interval` zero or longer than `duration`, or more than 100000
//! samples: `invalid`.
//!
//! ## Example
//! ```yaml
//! watch:
//!   uses: gpu.monitor
//!   with: { duration: 5m, interval: 10s }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, StepContext};
use engine_core::duration::DurationStr;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::client::{is_unknown_field, CsvRow, Smi};
use crate::exec::HostInput;
use crate::gpus::GpuRef;
use crate::smi::GpuInfo;

/// Most samples one step may take.
const MAX_SAMPLES: u128 = 100_000;

/// NVML's clock event reason bits (`nvmlClocksEventReason*`), named as in the XML report.
const REASON_BITS: &[(u64, &str)] = &[
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks_setting"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal_slowdown"),
    (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"),
    (0x100, "display_clocks_setting"),
];

/// The names of the bits set in a reasons mask (`0x0000000000000005`).
#[must_use]
pub fn decode_reasons(mask: &str) -> Option<Vec<String>> {
    let m = mask.trim();
    let bits = u64::from_str_radix(m.strip_prefix("0x").or_else(|| m.strip_prefix("0X"))?, 16).ok()?;
    let mut names: Vec<String> = REASON_BITS.iter().filter(|(b, _)| bits & b != 0).map(|(_, n)| (*n).to_string()).collect();
    let known: u64 = REASON_BITS.iter().map(|(b, _)| b).sum();
    if bits & !known != 0 {
        names.push(format!("other_0x{:x}", bits & !known));
    }
    Some(names)
}

fn default_duration() -> DurationStr {
    DurationStr::literal("10s")
}

fn default_interval() -> DurationStr {
    DurationStr::literal("1s")
}

/// Input of `gpu.monitor`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MonitorInput {
    /// Remote host to read over SSH (default: this machine).
    #[serde(default)]
    pub host: Option<HostInput>,
    /// Only these GPUs (index, UUID or PCI bus id).
    #[serde(default)]
    pub gpus: Option<Vec<GpuRef>>,
    /// How long to sample (default `10s`).
    #[serde(default = "default_duration")]
    pub duration: DurationStr,
    /// Time between samples (default `1s`).
    #[serde(default = "default_interval")]
    pub interval: DurationStr,
}

/// One GPU in one sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GpuSample {
    /// nvidia-smi index.
    pub index: usize,
    /// UUID.
    pub uuid: Option<String>,
    /// GPU utilisation, percent.
    pub utilization_percent: Option<u32>,
    /// Memory controller utilisation, percent.
    pub memory_utilization_percent: Option<u32>,
    /// Memory used, MiB.
    pub memory_used_mib: Option<u64>,
    /// Memory total, MiB.
    pub memory_total_mib: Option<u64>,
    /// Temperature, °C.
    pub temperature_c: Option<i32>,
    /// Power draw, W.
    pub power_draw_w: Option<f64>,
    /// Power limit, W.
    pub power_limit_w: Option<f64>,
    /// SM clock, MHz.
    pub sm_clock_mhz: Option<u32>,
    /// Active clock event (throttle) reasons; `null` when the driver does not say.
    pub throttle_reasons: Option<Vec<String>>,
}

/// One sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Sample {
    /// Milliseconds since the first sample.
    pub at_ms: u64,
    /// The GPUs.
    pub gpus: Vec<GpuSample>,
}

/// What the samples say about one GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GpuInsight {
    /// nvidia-smi index.
    pub index: usize,
    /// UUID.
    pub uuid: Option<String>,
    /// Model.
    pub name: Option<String>,
    /// Samples of this GPU.
    pub samples: usize,
    /// Average GPU utilisation, percent.
    pub utilization_avg_percent: Option<f64>,
    /// Peak GPU utilisation, percent.
    pub utilization_max_percent: Option<u32>,
    /// Average memory used, MiB.
    pub memory_used_avg_mib: Option<f64>,
    /// Peak memory used, MiB.
    pub memory_used_max_mib: Option<u64>,
    /// Peak memory used, percent of total.
    pub memory_used_max_percent: Option<f64>,
    /// Average temperature, °C.
    pub temperature_avg_c: Option<f64>,
    /// Peak temperature, °C.
    pub temperature_max_c: Option<i32>,
    /// Average power draw, W.
    pub power_avg_w: Option<f64>,
    /// Peak power draw, W.
    pub power_max_w: Option<f64>,
    /// Power limit, W (the last reported).
    pub power_limit_w: Option<f64>,
    /// Throttle reasons seen, with the number of samples each was active in.
    pub throttle_reasons: BTreeMap<String, usize>,
    /// Notes for people.
    pub notes: Vec<String>,
}

/// What the samples say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Insights {
    /// Per GPU.
    pub gpus: Vec<GpuInsight>,
    /// Every GPU's notes.
    pub notes: Vec<String>,
    /// One line.
    pub summary: String,
}

/// Output of `gpu.monitor`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MonitorOutput {
    /// Where the GPUs are.
    pub host: String,
    /// Milliseconds from the first sample to the last.
    pub elapsed_ms: u64,
    /// The samples, oldest first.
    pub samples: Vec<Sample>,
    /// What they say.
    pub insights: Insights,
}

const BASE_FIELDS: &[&str] = &[
    "index",
    "uuid",
    "utilization.gpu",
    "utilization.memory",
    "memory.used",
    "memory.total",
    "temperature.gpu",
    "power.draw",
    "power.limit",
    "clocks.sm",
];
const REASON_FIELDS: &[&str] = &["clocks_event_reasons.active", "clocks_throttle_reasons.active"];

fn sample_gpu(r: &CsvRow, reasons_field: Option<&str>) -> Option<GpuSample> {
    Some(GpuSample {
        index: r.num("index")?,
        uuid: r.get("uuid").map(str::to_owned),
        utilization_percent: r.num("utilization.gpu"),
        memory_utilization_percent: r.num("utilization.memory"),
        memory_used_mib: r.num("memory.used"),
        memory_total_mib: r.num("memory.total"),
        temperature_c: r.num("temperature.gpu"),
        power_draw_w: r.float("power.draw"),
        power_limit_w: r.float("power.limit"),
        sm_clock_mhz: r.num("clocks.sm"),
        throttle_reasons: reasons_field.and_then(|f| r.get(f)).and_then(decode_reasons),
    })
}

#[allow(clippy::cast_precision_loss)]
fn avg<I: Iterator<Item = f64>>(it: I) -> Option<f64> {
    let (sum, n) = it.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| (sum / n as f64 * 10.0).round() / 10.0)
}

/// The insights of `samples`; `names` gives the model of each index.
#[must_use]
#[allow(clippy::cast_precision_loss)]
pub fn insights(samples: &[Sample], names: &BTreeMap<usize, String>) -> Insights {
    let mut by_gpu: BTreeMap<usize, Vec<&GpuSample>> = BTreeMap::new();
    for s in samples {
        for g in &s.gpus {
            by_gpu.entry(g.index).or_default().push(g);
        }
    }
    let mut gpus = Vec::new();
    for (index, ss) in by_gpu {
        let mut throttle: BTreeMap<String, usize> = BTreeMap::new();
        for s in &ss {
            for r in s.throttle_reasons.iter().flatten() {
                *throttle.entry(r.clone()).or_default() += 1;
            }
        }
        let util_avg = avg(ss.iter().filter_map(|s| s.utilization_percent.map(f64::from)));
        let mem_peak_pct = ss
            .iter()
            .filter_map(|s| match (s.memory_used_mib, s.memory_total_mib) {
                (Some(u), Some(t)) if t > 0 => Some((u as f64 * 1000.0 / t as f64).round() / 10.0),
                _ => None,
            })
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
        let power_avg = avg(ss.iter().filter_map(|s| s.power_draw_w));
        let power_limit = ss.iter().rev().find_map(|s| s.power_limit_w);
        let mut g = GpuInsight {
            index,
            uuid: ss.iter().find_map(|s| s.uuid.clone()),
            name: names.get(&index).cloned(),
            samples: ss.len(),
            utilization_avg_percent: util_avg,
            utilization_max_percent: ss.iter().filter_map(|s| s.utilization_percent).max(),
            memory_used_avg_mib: avg(ss.iter().filter_map(|s| s.memory_used_mib.map(|m| m as f64))),
            memory_used_max_mib: ss.iter().filter_map(|s| s.memory_used_mib).max(),
            memory_used_max_percent: mem_peak_pct,
            temperature_avg_c: avg(ss.iter().filter_map(|s| s.temperature_c.map(f64::from))),
            temperature_max_c: ss.iter().filter_map(|s| s.temperature_c).max(),
            power_avg_w: power_avg,
            power_max_w: ss.iter().filter_map(|s| s.power_draw_w).fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v)))),
            power_limit_w: power_limit,
            throttle_reasons: throttle,
            notes: Vec::new(),
        };
        let who = format!("GPU {index}");
        if let Some(u) = g.utilization_avg_percent {
            if u < 10.0 {
                g.notes.push(format!("{who} was mostly idle (average utilisation {u}%)"));
            } else if u >= 90.0 {
                g.notes.push(format!("{who} was saturated (average utilisation {u}%)"));
            }
        }
        if let Some(p) = g.memory_used_max_percent.filter(|p| *p >= 95.0) {
            g.notes.push(format!("{who} memory was nearly full (peak {p}% of {} MiB)", ss.iter().find_map(|s| s.memory_total_mib).unwrap_or_default()));
        }
        if let Some(t) = g.temperature_max_c.filter(|t| *t >= 85) {
            g.notes.push(format!("{who} ran hot (peak {t} °C)"));
        }
        if let (Some(a), Some(l)) = (power_avg, power_limit) {
            if l > 0.0 && a >= 0.95 * l {
                g.notes.push(format!("{who} ran at its power limit (average {a} W of {l} W)"));
            }
        }
        for (reason, n) in &g.throttle_reasons {
            if reason != "gpu_idle" {
                g.notes.push(format!("{who} clocks were held back by {reason} in {n} of {} samples", g.samples));
            }
        }
        gpus.push(g);
    }
    let notes: Vec<String> = gpus.iter().flat_map(|g| g.notes.iter().cloned()).collect();
    let n = samples.len();
    let summary = if gpus.is_empty() {
        format!("{n} samples, no GPU")
    } else {
        let per: Vec<String> = gpus
            .iter()
            .map(|g| {
                format!(
                    "GPU {}: {} avg / {} max utilisation, {} MiB peak memory, {} peak",
                    g.index,
                    g.utilization_avg_percent.map_or("n/a".into(), |v| format!("{v}%")),
                    g.utilization_max_percent.map_or("n/a".into(), |v| format!("{v}%")),
                    g.memory_used_max_mib.map_or("n/a".into(), |v| v.to_string()),
                    g.temperature_max_c.map_or("n/a".into(), |v| format!("{v} °C")),
                )
            })
            .collect();
        format!("{n} samples of {} GPUs; {}", gpus.len(), per.join("; "))
    };
    Insights { gpus, notes, summary }
}

/// `gpu.monitor`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Monitor;

impl Monitor {
    fn plan(input: &MonitorInput) -> Result<(Duration, u64), ConnectorError> {
        let (d, i) = (input.duration.get(), input.interval.get());
        if i.is_zero() {
            return Err(ConnectorError::invalid("`interval` must be longer than 0"));
        }
        if i > d && !d.is_zero() {
            return Err(ConnectorError::invalid(format!("`interval` ({}) is longer than `duration` ({})", input.interval, input.duration)));
        }
        let n = d.as_nanos() / i.as_nanos() + 1;
        if n > MAX_SAMPLES {
            return Err(ConnectorError::invalid(format!("{n} samples asked ({} every {}): at most {MAX_SAMPLES}", input.duration, input.interval)));
        }
        Ok((i, u64::try_from(n).unwrap_or(1)))
    }
}

#[async_trait]
impl Action for Monitor {
    const ID: &'static str = "gpu.monitor";
    const DESCRIPTION: &'static str = "sample GPUs for a duration; samples plus insights (utilisation, memory, temperature, throttling)";
    type Input = MonitorInput;
    type Output = MonitorOutput;

    fn validate(&self, input: &MonitorInput) -> Result<(), ConnectorError> {
        Self::plan(input).map(drop)
    }

    async fn run(&self, input: MonitorInput, cx: &StepContext) -> Result<MonitorOutput, ConnectorError> {
        let (interval, n) = Self::plan(&input)?;
        let smi = Smi::new(cx, input.host.as_ref()).await?;
        // Names, and the check that `gpus` names real GPUs, from one full report.
        let report = smi.report().await?;
        let wanted: Vec<&GpuInfo> = crate::gpus::pick(&report, input.gpus.as_deref(), smi.target())?;
        let names: BTreeMap<usize, String> = wanted.iter().filter_map(|g| Some((g.index, g.product_name.clone()?))).collect();
        let keep = |s: &GpuSample| wanted.iter().any(|g| match (g.uuid.as_deref(), s.uuid.as_deref()) {
            (Some(a), Some(b)) => a == b,
            _ => g.index == s.index,
        });

        let mut reasons: Option<usize> = Some(0);
        let start = Instant::now();
        let mut samples = Vec::new();
        cx.progress("sampling", Some(0));
        for k in 0..n {
            if k > 0 {
                let due = start + interval * u32::try_from(k).unwrap_or(u32::MAX);
                cx.sleep(due.saturating_duration_since(Instant::now())).await?;
            }
            let at_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
            let rows = loop {
                let mut fields: Vec<&str> = BASE_FIELDS.to_vec();
                if let Some(r) = reasons {
                    fields.push(REASON_FIELDS[r]);
                }
                match smi.query_gpu(&fields).await {
                    Ok(rows) => break rows,
                    // An older driver: try the older name, then go without reasons.
                    Err(e) if is_unknown_field(&e) && reasons.is_some() => {
                        reasons = reasons.and_then(|r| (r + 1 < REASON_FIELDS.len()).then_some(r + 1));
                    }
                    Err(e) => return Err(e),
                }
            };
            let field = reasons.map(|r| REASON_FIELDS[r]);
            let gpus: Vec<GpuSample> = rows.iter().filter_map(|r| sample_gpu(r, field)).filter(|s| keep(s)).collect();
            samples.push(Sample { at_ms, gpus });
            let pct = u8::try_from((k + 1) * 100 / n).unwrap_or(100);
            cx.progress("sampling", Some(pct));
        }
        let elapsed_ms = samples.last().map_or(0, |s| s.at_ms);
        let insights = insights(&samples, &names);
        Ok(MonitorOutput { host: smi.target().to_string(), elapsed_ms, samples, insights })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_masks_are_decoded() {
        assert_eq!(decode_reasons("0x0000000000000000"), Some(vec![]));
        assert_eq!(decode_reasons("0x0000000000000001"), Some(vec!["gpu_idle".to_string()]));
        assert_eq!(decode_reasons("0x0000000000000044"), Some(vec!["sw_power_cap".to_string(), "hw_thermal_slowdown".to_string()]));
        assert_eq!(decode_reasons("0x1000"), Some(vec!["other_0x1000".to_string()]));
        assert_eq!(decode_reasons("Not Active"), None);
    }

    #[test]
    fn plans_are_checked() {
        let input = |d: &str, i: &str| MonitorInput { host: None, gpus: None, duration: DurationStr::parse(d).unwrap(), interval: DurationStr::parse(i).unwrap() };
        assert_eq!(Monitor::plan(&input("10s", "1s")).unwrap().1, 11);
        assert_eq!(Monitor::plan(&input("0s", "1s")).unwrap().1, 1);
        assert_eq!(Monitor::plan(&input("1s", "300ms")).unwrap().1, 4);
        assert!(Monitor::plan(&input("1s", "0s")).is_err());
        assert!(Monitor::plan(&input("1s", "2s")).is_err());
        assert!(Monitor::plan(&input("2d", "1ms")).is_err());
    }

    #[test]
    fn insights_average_peak_and_note() {
        let g = |util: u32, mem: u64, temp: i32, power: f64, reasons: &[&str]| GpuSample {
            index: 0,
            uuid: Some("GPU-a".into()),
            utilization_percent: Some(util),
            memory_utilization_percent: None,
            memory_used_mib: Some(mem),
            memory_total_mib: Some(1000),
            temperature_c: Some(temp),
            power_draw_w: Some(power),
            power_limit_w: Some(100.0),
            sm_clock_mhz: None,
            throttle_reasons: Some(reasons.iter().map(|s| (*s).to_string()).collect()),
        };
        let samples = vec![
            Sample { at_ms: 0, gpus: vec![g(90, 500, 80, 96.0, &["sw_power_cap"])] },
            Sample { at_ms: 1000, gpus: vec![g(100, 960, 86, 99.0, &["sw_power_cap", "hw_thermal_slowdown"])] },
        ];
        let names = BTreeMap::from([(0, "NVIDIA A10G".to_string())]);
        let i = insights(&samples, &names);
        let g0 = &i.gpus[0];
        assert_eq!(g0.utilization_avg_percent, Some(95.0));
        assert_eq!(g0.utilization_max_percent, Some(100));
        assert_eq!(g0.memory_used_max_mib, Some(960));
        assert_eq!(g0.memory_used_max_percent, Some(96.0));
        assert_eq!(g0.temperature_max_c, Some(86));
        assert_eq!(g0.power_avg_w, Some(97.5));
        assert_eq!(g0.throttle_reasons, BTreeMap::from([("hw_thermal_slowdown".to_string(), 1), ("sw_power_cap".to_string(), 2)]));
        assert_eq!(g0.name.as_deref(), Some("NVIDIA A10G"));
        for want in ["saturated", "nearly full", "ran hot", "power limit", "sw_power_cap in 2 of 2"] {
            assert!(i.notes.iter().any(|n| n.contains(want)), "{want} not in {:?}", i.notes);
        }
        assert!(i.summary.starts_with("2 samples of 1 GPUs"), "{}", i.summary);
    }
}
