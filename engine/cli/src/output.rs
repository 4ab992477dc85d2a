//! Progress renderers for `engine run`: live bars on a terminal, one line per
//! event (`plain`), or one JSON object per event on stdout (`json`).

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use engine_runtime::{Event, EventSink, StepStatus};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// JSON lines on stdout.
pub struct JsonSink {
    out: Mutex<std::io::BufWriter<std::io::Stdout>>,
}

impl JsonSink {
    pub fn new() -> Self {
        Self { out: Mutex::new(std::io::BufWriter::new(std::io::stdout())) }
    }
}

impl EventSink for JsonSink {
    fn emit(&self, event: Event) {
        let mut out = self.out.lock().expect("stdout lock");
        if let Ok(line) = serde_json::to_string(&event) {
            let _ = writeln!(out, "{line}");
        }
        // Other programs read this stream live: one flushed line per event.
        let _ = out.flush();
    }
}

fn label(step: &str, index: Option<usize>) -> String {
    match index {
        Some(i) => format!("{step}[{i}]"),
        None => step.to_string(),
    }
}

/// One line per event on stderr.
pub struct PlainSink {
    err: Mutex<std::io::Stderr>,
}

impl PlainSink {
    pub fn new() -> Self {
        Self { err: Mutex::new(std::io::stderr()) }
    }
}

/// The line `plain` prints for an event, if any.
pub fn plain_line(event: &Event) -> Option<String> {
    Some(match event {
        Event::RunStarted { run_id, workflow, .. } => format!("run {run_id} started: {workflow}"),
        Event::Step { step, index, status, attempt, reason, error, kind, duration_ms, .. } => {
            let mut s = format!("{} {}", label(step, *index), status.as_str());
            if *status == StepStatus::Running && *attempt > 1 {
                s.push_str(&format!(" (attempt {attempt})"));
            }
            if let Some(ms) = duration_ms {
                s.push_str(&format!(" in {}", human_ms(*ms)));
            }
            if let Some(r) = reason {
                s.push_str(&format!(": {r}"));
            }
            if let Some(e) = error {
                match kind {
                    Some(k) => s.push_str(&format!(": {k}: {e}")),
                    None => s.push_str(&format!(": {e}")),
                }
            }
            s
        }
        Event::StepRetry { step, index, attempt, delay_ms, error, kind, .. } => {
            format!("{} attempt {attempt} failed ({kind}: {error}); retrying in {}", label(step, *index), human_ms(*delay_ms))
        }
        Event::StepFallback { step, index, fallback_index, error, .. } => {
            format!("{} trying fallback {fallback_index} after: {error}", label(step, *index))
        }
        Event::StepProgress { step, index, stage, percent, .. } => match percent {
            Some(p) => format!("{} {stage} {p}%", label(step, *index)),
            None => format!("{} {stage}", label(step, *index)),
        },
        Event::StepLog { step, index, line, .. } => format!("{} | {line}", label(step, *index)),
        Event::ResourceUndo { step, index, kind, id, status, error, .. } => match error {
            Some(e) => format!("{} {kind} {id} {status}: {e}", label(step, *index)),
            None => format!("{} {kind} {id} {status}", label(step, *index)),
        },
        Event::RunFinished { run_id, status, error, .. } => match error {
            Some(e) => format!("run {run_id} {}: {e}", status.as_str()),
            None => format!("run {run_id} {}", status.as_str()),
        },
    })
}

fn human_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

impl EventSink for PlainSink {
    fn emit(&self, event: Event) {
        if let Event::Step { status: StepStatus::Pending, .. } = event {
            return;
        }
        if let Some(line) = plain_line(&event) {
            let mut e = self.err.lock().expect("stderr lock");
            let _ = writeln!(e, "{line}");
        }
    }
}

/// Live progress: one line per step, a bar for fan-outs.
pub struct TtySink {
    mp: MultiProgress,
    bars: Mutex<HashMap<String, (ProgressBar, u64)>>,
}

impl TtySink {
    pub fn new() -> Self {
        Self { mp: MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)), bars: Mutex::new(HashMap::new()) }
    }

    fn bar(&self, step: &str) -> ProgressBar {
        let mut bars = self.bars.lock().expect("bars lock");
        bars.entry(step.to_string())
            .or_insert_with(|| {
                let pb = self.mp.add(ProgressBar::new_spinner());
                pb.set_style(ProgressStyle::with_template("{spinner:.cyan} {prefix:.bold} {wide_msg}").expect("template"));
                pb.set_prefix(step.to_string());
                pb.enable_steady_tick(Duration::from_millis(120));
                (pb, 0)
            })
            .0
            .clone()
    }
}

impl EventSink for TtySink {
    fn emit(&self, event: Event) {
        match &event {
            Event::Step { step, index: None, status, attempt, reason, error, .. } => {
                let pb = self.bar(step);
                match status {
                    StepStatus::Pending => pb.set_message("pending"),
                    StepStatus::Running => pb.set_message(if *attempt > 1 { format!("running (attempt {attempt})") } else { "running".into() }),
                    other => {
                        let detail = reason.clone().or_else(|| error.clone()).map(|d| format!(": {d}")).unwrap_or_default();
                        let mark = match other {
                            StepStatus::Succeeded => "✔",
                            StepStatus::Failed => "✘",
                            _ => "•",
                        };
                        pb.set_style(ProgressStyle::with_template("{prefix:.bold} {wide_msg}").expect("template"));
                        pb.finish_with_message(format!("{mark} {}{detail}", other.as_str()));
                    }
                }
            }
            Event::Step { step, index: Some(_), status, .. } => {
                let pb = self.bar(step);
                if status.is_terminal() {
                    let mut bars = self.bars.lock().expect("bars lock");
                    if let Some((_, done)) = bars.get_mut(step) {
                        *done += 1;
                        pb.set_message(format!("running: {done} done"));
                    }
                }
            }
            Event::StepRetry { .. } | Event::StepFallback { .. } | Event::ResourceUndo { .. } | Event::StepLog { stream: "stderr", .. } => {
                if let Some(line) = plain_line(&event) {
                    let _ = self.mp.println(line);
                }
            }
            Event::StepProgress { step, stage, percent, .. } => {
                self.bar(step).set_message(match percent {
                    Some(p) => format!("{stage} {p}%"),
                    None => stage.clone(),
                });
            }
            Event::RunStarted { .. } | Event::StepLog { .. } => {}
            Event::RunFinished { .. } => {
                for (pb, _) in self.bars.lock().expect("bars lock").values() {
                    if !pb.is_finished() {
                        pb.finish();
                    }
                }
                if let Some(line) = plain_line(&event) {
                    let _ = self.mp.println(line);
                }
            }
        }
    }
}
