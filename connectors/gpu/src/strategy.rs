//! Ranking GPUs for a workload: the selection strategy of seed 004, shared by
//! `gpu.select` (which explains) and `gpu.allocate` (which then holds).
//!
//! ## Strategy
//! 1. **Hard requirements** rule a GPU out, with the reason: not among `gpus`, MIG mode
//!    on (its MIG devices, not the whole GPU, are what CUDA sees), held by an exclusive
//!    allocation, held by a shared allocation when an exclusive one is asked, or less
//!    free memory than `min_memory` (total memory when free memory is not reported).
//! 2. **Score** each remaining GPU from 0 to 100, a weighted sum of five parts, each
//!    from 0 to 1:
//!    - `memory`: free memory relative to the eligible GPU with the most free memory;
//!    - `utilization`: `1 - utilisation / 100` (0.5 when not reported);
//!    - `model`: 1 for a GPU whose name contains the first of `preferred_models`,
//!      falling by equal steps down the list, 0 for none (0.5 for all when no
//!      preference is given);
//!    - `power`: the headroom `1 - draw / limit` (0.5 when not reported);
//!    - `workload`: how well the GPU fits the workload type: `training` (and `ml`)
//!      favour large and fast GPUs (total memory and maximum SM clock relative to the
//!      largest and fastest eligible one); `inference` favours the smaller and more frugal ones (the
//!      reverse of total memory and power limit), keeping big GPUs for training;
//!      `rendering` favours boards with graphics brands (GeForce, Quadro, NVIDIA RTX);
//!      `general` is neutral (0.5).
//!
//!    The weights depend on the workload type (see [`Weights::for_workload`]). A GPU
//!    already shared by other shared allocations loses 10 points per sharer.
//! 3. The highest scores win; ties go to the lower index.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::gpus::GpuRef;
use crate::ledger::{Allocation, Mode};
use crate::smi::GpuInfo;

/// The kind of work the GPUs are for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// Model training: large, fast GPUs.
    Training,
    /// Machine learning in general; the same as `training`.
    Ml,
    /// Serving models: enough memory, frugal GPUs; large ones stay free for training.
    Inference,
    /// Graphics and rendering: boards with graphics brands.
    Rendering,
    /// No preference beyond memory, load and power.
    #[default]
    General,
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Training => "training",
            Self::Ml => "ml",
            Self::Inference => "inference",
            Self::Rendering => "rendering",
            Self::General => "general",
        })
    }
}

/// What is asked for.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// How many GPUs.
    pub count: usize,
    /// Free memory each GPU needs, MiB.
    pub min_memory_mib: Option<u64>,
    /// Exclusive (true) or shared.
    pub exclusive: bool,
    /// Model names or parts of them, most wanted first (case-insensitive).
    pub preferred_models: Vec<String>,
    /// Workload type.
    pub workload: Workload,
    /// Only these GPUs.
    pub gpus: Option<Vec<GpuRef>>,
    /// Allocations of this key are the asker's own and do not rule GPUs out.
    pub own_key: Option<String>,
}

/// The weight of each part of the score (they add up to 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, JsonSchema)]
pub struct Weights {
    /// Free memory.
    pub memory: f64,
    /// Idleness.
    pub utilization: f64,
    /// Preferred models.
    pub model: f64,
    /// Power headroom.
    pub power: f64,
    /// Fit to the workload type.
    pub workload: f64,
}

impl Weights {
    /// The weights used for `w`.
    #[must_use]
    pub fn for_workload(w: Workload) -> Self {
        match w {
            Workload::Training | Workload::Ml => Self { memory: 0.30, utilization: 0.25, model: 0.15, power: 0.05, workload: 0.25 },
            Workload::Inference => Self { memory: 0.10, utilization: 0.30, model: 0.15, power: 0.15, workload: 0.30 },
            Workload::Rendering => Self { memory: 0.20, utilization: 0.25, model: 0.15, power: 0.10, workload: 0.30 },
            Workload::General => Self { memory: 0.35, utilization: 0.30, model: 0.15, power: 0.10, workload: 0.10 },
        }
    }
}

/// The parts of a GPU's score, each from 0 to 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, JsonSchema)]
pub struct Breakdown {
    /// Free memory relative to the GPU with the most.
    pub memory: f64,
    /// `1 - utilisation`.
    pub utilization: f64,
    /// Position of the first matching preferred model.
    pub model: f64,
    /// Power headroom.
    pub power: f64,
    /// Fit to the workload type.
    pub workload: f64,
}

/// One GPU as the ranking saw it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Candidate {
    /// nvidia-smi index.
    pub index: usize,
    /// UUID.
    pub uuid: Option<String>,
    /// Model.
    pub name: Option<String>,
    /// Whether the GPU may be chosen.
    pub eligible: bool,
    /// Why not, when it may not.
    pub excluded_because: Option<String>,
    /// Score from 0 to 100 (0 when not eligible).
    pub score: f64,
    /// The parts of the score.
    pub breakdown: Breakdown,
    /// Free memory, MiB.
    pub memory_free_mib: Option<u64>,
    /// Total memory, MiB.
    pub memory_total_mib: Option<u64>,
    /// GPU utilisation, percent.
    pub utilization_percent: Option<u32>,
    /// Power draw, W.
    pub power_draw_w: Option<f64>,
    /// Power limit, W.
    pub power_limit_w: Option<f64>,
    /// The preferred model it matched.
    pub matched_model: Option<String>,
    /// Shared allocations already holding it.
    pub shared_by: usize,
}

fn ratio(v: Option<f64>, max: f64) -> Option<f64> {
    v.filter(|_| max > 0.0).map(|v| (v / max).clamp(0.0, 1.0))
}

#[allow(clippy::cast_precision_loss)]
fn f(v: Option<u64>) -> Option<f64> {
    v.map(|v| v as f64)
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Free memory, or total memory when free memory is not reported.
fn usable_mib(g: &GpuInfo) -> Option<u64> {
    g.fb_memory.free_mib.or(g.fb_memory.total_mib)
}

fn graphics_board(g: &GpuInfo) -> bool {
    let brand = g.product_brand.as_deref().unwrap_or_default().to_ascii_lowercase();
    let name = g.product_name.as_deref().unwrap_or_default().to_ascii_lowercase();
    ["geforce", "quadro", "rtx", "titan"].iter().any(|b| brand.contains(b) || name.contains(b))
}

/// Rank `gpus` for `req`, given the live allocations on their machine. Eligible GPUs
/// come first, best first; then the others, by index.
#[must_use]
pub fn rank(gpus: &[GpuInfo], allocations: &[&Allocation], req: &Request) -> Vec<Candidate> {
    let weights = Weights::for_workload(req.workload);
    let holders = |g: &GpuInfo| -> Vec<&Allocation> {
        allocations.iter().copied().filter(|a| Some(&a.key) != req.own_key.as_ref() && a.gpus.iter().any(|h| h.is(g.index, g.uuid.as_deref()))).collect()
    };
    let exclusion = |g: &GpuInfo| -> Option<String> {
        if let Some(refs) = &req.gpus {
            if !refs.is_empty() && !refs.iter().any(|r| r.matches(g)) {
                return Some("not among the `gpus` asked for".into());
            }
        }
        if g.mig.current == Some(true) {
            return Some("MIG mode is on: CUDA sees its MIG devices, not the whole GPU".into());
        }
        let held = holders(g);
        if let Some(a) = held.iter().find(|a| a.mode == Mode::Exclusive) {
            return Some(format!("held exclusively by allocation {} ({})", a.id, a.key));
        }
        if req.exclusive {
            if let Some(a) = held.first() {
                return Some(format!("shared by allocation {} ({}), and an exclusive GPU is asked", a.id, a.key));
            }
        }
        if let Some(min) = req.min_memory_mib {
            match usable_mib(g) {
                Some(have) if have < min => {
                    let what = if g.fb_memory.free_mib.is_some() { "free" } else { "in total" };
                    return Some(format!("{have} MiB {what}, {min} MiB asked"));
                }
                None => return Some("its memory is not reported".into()),
                Some(_) => {}
            }
        }
        None
    };

    // Relative parts compare the GPUs that may be chosen, not those ruled out.
    let eligible: Vec<&GpuInfo> = gpus.iter().filter(|g| exclusion(g).is_none()).collect();
    let max_free = eligible.iter().filter_map(|g| f(usable_mib(g))).fold(0.0, f64::max);
    let max_total = eligible.iter().filter_map(|g| f(g.fb_memory.total_mib)).fold(0.0, f64::max);
    let max_sm = eligible.iter().filter_map(|g| g.max_clocks.sm_mhz.map(f64::from)).fold(0.0, f64::max);
    let max_limit = eligible.iter().filter_map(|g| g.power.limit_w).fold(0.0, f64::max);
    let prefs: Vec<String> = req.preferred_models.iter().map(|m| m.trim().to_ascii_lowercase()).filter(|m| !m.is_empty()).collect();

    let mut out: Vec<Candidate> = gpus
        .iter()
        .map(|g| {
            let excluded = exclusion(g);
            let name_lc = g.product_name.as_deref().unwrap_or_default().to_ascii_lowercase();
            let matched = prefs.iter().position(|p| name_lc.contains(p.as_str()));
            #[allow(clippy::cast_precision_loss)]
            let model = match (prefs.is_empty(), matched) {
                (true, _) => 0.5,
                (false, Some(i)) => 1.0 - i as f64 / prefs.len() as f64,
                (false, None) => 0.0,
            };
            let memory = ratio(f(usable_mib(g)), max_free).unwrap_or(0.0);
            let utilization = g.utilization.gpu_percent.map_or(0.5, |u| 1.0 - f64::from(u.min(100)) / 100.0);
            let power = match (g.power.draw_w, g.power.limit_w) {
                (Some(d), Some(l)) if l > 0.0 => (1.0 - d / l).clamp(0.0, 1.0),
                _ => 0.5,
            };
            let size = ratio(f(g.fb_memory.total_mib), max_total);
            let speed = ratio(g.max_clocks.sm_mhz.map(f64::from), max_sm);
            let frugal = ratio(g.power.limit_w, max_limit).map(|r| 1.0 - r);
            let workload = match req.workload {
                Workload::Training | Workload::Ml => 0.6 * size.unwrap_or(0.5) + 0.4 * speed.unwrap_or(0.5),
                // Smaller and more frugal is better: big GPUs stay free for training.
                Workload::Inference => 0.5 * size.map_or(0.5, |s| 1.0 - s) + 0.5 * frugal.unwrap_or(0.5),
                Workload::Rendering => {
                    if graphics_board(g) {
                        1.0
                    } else {
                        0.3
                    }
                }
                Workload::General => 0.5,
            };
            let breakdown = Breakdown { memory: round3(memory), utilization: round3(utilization), model: round3(model), power: round3(power), workload: round3(workload) };
            let shared_by = holders(g).len();
            #[allow(clippy::cast_precision_loss)]
            let score = if excluded.is_some() {
                0.0
            } else {
                let s = 100.0
                    * (weights.memory * memory + weights.utilization * utilization + weights.model * model + weights.power * power + weights.workload * workload)
                    - 10.0 * shared_by as f64;
                round1(s.max(0.0))
            };
            Candidate {
                index: g.index,
                uuid: g.uuid.clone(),
                name: g.product_name.clone(),
                eligible: excluded.is_none(),
                excluded_because: excluded,
                score,
                breakdown,
                memory_free_mib: g.fb_memory.free_mib,
                memory_total_mib: g.fb_memory.total_mib,
                utilization_percent: g.utilization.gpu_percent,
                power_draw_w: g.power.draw_w,
                power_limit_w: g.power.limit_w,
                matched_model: matched.map(|i| req.preferred_models.iter().filter(|m| !m.trim().is_empty()).nth(i).cloned().unwrap_or_default()),
                shared_by,
            }
        })
        .collect();
    out.sort_by(|a, b| b.eligible.cmp(&a.eligible).then(b.score.total_cmp(&a.score)).then(a.index.cmp(&b.index)));
    out
}

/// A sentence on why `chosen` won, for people.
#[must_use]
pub fn reason(chosen: &[&Candidate], all: &[Candidate], req: &Request) -> String {
    let mut parts = Vec::new();
    for c in chosen {
        let mut why = Vec::new();
        if let Some(free) = c.memory_free_mib {
            why.push(format!("{:.1} GiB free", mib_to_gib(free)));
        }
        if let Some(u) = c.utilization_percent {
            why.push(format!("{u}% busy"));
        }
        if let Some(m) = &c.matched_model {
            why.push(format!("matches preferred model `{m}`"));
        }
        if let (Some(d), Some(l)) = (c.power_draw_w, c.power_limit_w) {
            why.push(format!("{d:.0} W of {l:.0} W"));
        }
        if c.shared_by > 0 {
            why.push(format!("already shared by {}", c.shared_by));
        }
        parts.push(format!("GPU {} ({}) scored {:.1}: {}", c.index, c.name.as_deref().unwrap_or("unknown model"), c.score, why.join(", ")));
    }
    let ruled_out = all.iter().filter(|c| !c.eligible).count();
    let mut s = format!(
        "picked {} of {} GPUs for a {} {} workload{}: {}",
        chosen.len(),
        all.len(),
        if req.exclusive { "exclusive" } else { "shared" },
        req.workload,
        req.min_memory_mib.map(|m| format!(" needing {m} MiB free")).unwrap_or_default(),
        parts.join("; ")
    );
    if ruled_out > 0 {
        let list: Vec<String> = all.iter().filter(|c| !c.eligible).map(|c| format!("GPU {}: {}", c.index, c.excluded_because.as_deref().unwrap_or("?"))).collect();
        s.push_str(&format!("; ruled out {}", list.join("; ")));
    }
    s
}

#[allow(clippy::cast_precision_loss)]
fn mib_to_gib(mib: u64) -> f64 {
    mib as f64 / 1024.0
}

/// Take the `req.count` best eligible candidates.
///
/// # Errors
/// A `capacity` message naming why each GPU was ruled out, when too few are eligible.
pub fn take<'a>(ranked: &'a [Candidate], req: &Request, target: &str) -> Result<Vec<&'a Candidate>, String> {
    let eligible: Vec<&Candidate> = ranked.iter().filter(|c| c.eligible).collect();
    if eligible.len() < req.count {
        let why: Vec<String> = ranked.iter().filter(|c| !c.eligible).map(|c| format!("GPU {}: {}", c.index, c.excluded_because.as_deref().unwrap_or("?"))).collect();
        return Err(format!(
            "{} {} GPU{} asked on {target}, {} available{}",
            req.count,
            if req.exclusive { "exclusive" } else { "shared" },
            if req.count == 1 { "" } else { "s" },
            eligible.len(),
            if why.is_empty() { String::new() } else { format!(" ({})", why.join("; ")) }
        ));
    }
    Ok(eligible.into_iter().take(req.count).collect())
}
