//! Run-semantics tests on the scriptable `fake` connector, on tokio's paused clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine_connector::fake::{FakeConnector, FakeLog};
use engine_connector::{CancellationToken, Registry};
use engine_core::Masker;
use engine_runtime::{run, Event, RunOptions, RunResult, RunStatus, StepStatus};
use serde_json::{json, Map, Value};

struct Harness {
    log: Arc<Mutex<FakeLog>>,
    events: Arc<Mutex<Vec<Event>>>,
    result: RunResult,
}

async fn run_yaml(yaml: &str) -> Harness {
    run_with(yaml, Map::new(), CancellationToken::new(), None).await
}

async fn run_with(yaml: &str, secrets: Map<String, Value>, cancel: CancellationToken, cancel_after: Option<Duration>) -> Harness {
    let dir = tempfile_dir();
    let fake = FakeConnector::default();
    let log = fake.log.clone();
    let mut registry = Registry::new();
    registry.register(&fake);
    for (name, text) in subfiles(yaml) {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let path = dir.join("main.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut loader = engine_spec::Loader::new(&registry);
    let wf = loader.load(&path).unwrap_or_else(|| panic!("invalid workflow: {:?}", loader.diags));
    let inputs = engine_spec::inputs::resolve_inputs(&wf.inputs, &Map::new(), &[]).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    let masker = Masker::new(secrets.values().filter_map(Value::as_str));
    let opts = RunOptions {
        run_id: "r1".into(),
        inputs,
        secrets,
        env: Map::new(),
        concurrency: None,
        cancel: cancel.clone(),
        events: Arc::new(move |e: Event| ev.lock().unwrap().push(e)),
        masker,
        journal: None,
        prior: Arc::default(),
        prior_resources: Vec::new(),
        prior_pins: std::collections::HashMap::new(),
    };
    if let Some(after) = cancel_after {
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            cancel.cancel();
        });
    }
    let result = run(wf, opts).await;
    Harness { log, events, result }
}

/// Extra files a test needs, written beside main.yaml: the text after a line
/// `#### name` up to the next such line.
fn subfiles(yaml: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in yaml.lines() {
        if let Some(name) = line.strip_prefix("#### ") {
            out.push((name.trim().to_string(), String::new()));
        } else if let Some(last) = out.last_mut() {
            last.1.push_str(line.strip_prefix("# ").unwrap_or(line));
            last.1.push('\n');
        }
    }
    out
}

fn tempfile_dir() -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!("engine-rt-{}-{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)));
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl Harness {
    fn step(&self, id: &str) -> &engine_runtime::StepResult {
        &self.result.steps.iter().find(|(s, _)| s == id).unwrap().1
    }
    fn order(&self) -> Vec<String> {
        self.log.lock().unwrap().events.clone()
    }
    fn pos(&self, e: &str) -> usize {
        self.order().iter().position(|x| x == e).unwrap_or_else(|| panic!("{e} not in {:?}", self.order()))
    }
    fn reason(&self, id: &str) -> Option<String> {
        self.events.lock().unwrap().iter().find_map(|e| match e {
            Event::Step { step, reason: Some(r), status: StepStatus::Skipped | StepStatus::Cancelled, .. } if step == id => Some(r.clone()),
            _ => None,
        })
    }
}

#[tokio::test(start_paused = true)]
async fn needs_and_implicit_edges_order_steps() {
    let h = run_yaml(
        r"
version: 1
steps:
  c: { uses: fake.run, with: { value: '${{ steps.b.outputs.value }}-c' } }
  b: { uses: fake.run, needs: [a], with: { value: b, sleep_ms: 5 } }
  a: { uses: fake.run, with: { value: a, sleep_ms: 10 } }
outputs:
  last: ${{ steps.c.outputs.value }}
",
    )
    .await;
    assert_eq!(h.result.status, RunStatus::Succeeded);
    assert!(h.pos("end a") < h.pos("start b"));
    assert!(h.pos("end b") < h.pos("start c"));
    assert_eq!(h.result.outputs, json!({"last": "b-c"}));
}

#[tokio::test(start_paused = true)]
async fn concurrency_caps_running_instances() {
    let h = run_yaml("version: 1\nconcurrency: 3\nsteps:\n  w: { uses: fake.run, for_each: 10, with: { sleep_ms: 100 } }\n").await;
    assert_eq!(h.result.status, RunStatus::Succeeded);
    assert_eq!(h.log.lock().unwrap().max_running, 3);
    let h = run_yaml("version: 1\nsteps:\n  w: { uses: fake.run, for_each: 10, with: { sleep_ms: 100 } }\n").await;
    assert_eq!(h.log.lock().unwrap().max_running, 10, "no limit by default");
}

#[tokio::test(start_paused = true)]
async fn if_false_skips_and_skips_propagate_unless_if_says_otherwise() {
    let h = run_yaml(
        r"
version: 1
inputs: { on: { type: boolean, default: false } }
steps:
  a: { uses: fake.run, if: '${{ inputs.on }}' }
  b: { uses: fake.run, needs: a }
  c: { uses: fake.run, needs: b, if: always() }
  d: { uses: fake.run }
",
    )
    .await;
    assert_eq!(h.result.status, RunStatus::Succeeded);
    assert_eq!(h.step("a").status, StepStatus::Skipped);
    assert_eq!(h.reason("a").unwrap(), "`if` is false");
    assert_eq!(h.step("b").status, StepStatus::Skipped);
    assert_eq!(h.reason("b").unwrap(), "dependency `a` skipped");
    assert_eq!(h.step("c").status, StepStatus::Succeeded);
    assert_eq!(h.step("d").status, StepStatus::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn failure_fails_the_run_skips_dependents_and_runs_failure_handlers() {
    let h = run_yaml(
        r"
version: 1
steps:
  bad: { uses: fake.run, with: { fail_times: 9, kind: invalid } }
  after: { uses: fake.run, needs: bad }
  on-fail: { uses: fake.run, needs: bad, if: failure() }
  on-ok: { uses: fake.run, needs: bad, if: success() }
  other: { uses: fake.run, with: { sleep_ms: 50 } }
",
    )
    .await;
    assert_eq!(h.result.status, RunStatus::Failed);
    assert!(h.result.error.as_ref().unwrap().contains("step `bad` failed"));
    assert_eq!(h.step("bad").status, StepStatus::Failed);
    assert_eq!(h.step("after").status, StepStatus::Skipped);
    assert_eq!(h.step("on-fail").status, StepStatus::Succeeded);
    assert_eq!(h.step("on-ok").status, StepStatus::Skipped);
    assert_eq!(h.step("other").status, StepStatus::Succeeded, "independent steps go on");
}

#[tokio::test(start_paused = true)]
async fn continue_on_error_lets_dependents_run() {
    let h = run_yaml(
        r"
version: 1
steps:
  flaky: { uses: fake.run, continue_on_error: true, with: { fail_times: 1, kind: invalid } }
  next: { uses: fake.run, needs: flaky }
",
    )
    .await;
    assert_eq!(h.result.status, RunStatus::Succeeded);
    assert_eq!(h.step("flaky").status, StepStatus::Failed);
    assert_eq!(h.step("next").status, StepStatus::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn for_each_outputs_keep_element_order() {
    let h = run_yaml(
        r"
version: 1
steps:
  fan:
    uses: fake.run
    for_each: [30, 20, 10, 0]
    with: { value: 'v${{ index }}-${{ item }}', sleep_ms: '${{ item }}' }
  count: { uses: fake.run, for_each: 3, with: { value: '${{ item }}' } }
  last: { uses: fake.run, for_each: '${{ steps.fan.outputs }}', with: { value: '${{ item.value }}!' } }
outputs:
  values: ${{ steps.last.outputs | map(attribute='value') | list }}
  counts: ${{ steps.count.outputs | map(attribute='value') | list }}
",
    )
    .await;
    assert_eq!(h.result.status, RunStatus::Succeeded, "{:?}", h.result.error);
    assert!(h.pos("end fan[3]") < h.pos("end fan[0]"), "elements finished out of order");
    assert_eq!(h.result.outputs["values"], json!(["v0-30!", "v1-20!", "v2-10!", "v3-0!"]));
    assert_eq!(h.result.outputs["counts"], json!([0, 1, 2]));
}

#[tokio::test(start_paused = true)]
async fn retry_backs_off_exponentially_capped_by_max_delay() {
    let h = run_yaml(
        r"
version: 1
steps:
  r:
    uses: fake.run
    retry: { attempts: 5, delay: 1s, backoff: 3, max_delay: 5s }
    with: { fail_times: 4 }
",
    )
    .await;
    assert_eq!(h.result.status, RunStatus::Succeeded);
    assert_eq!(h.step("r").attempts, 5);
    let starts = h.log.lock().unwrap().started_at["r"].clone();
    let gaps: Vec<u64> = starts.windows(2).map(|w| (w[1] - w[0]).as_millis() as u64).collect();
    assert_eq!(gaps, vec![1000, 3000, 5000, 5000]);
}

#[tokio::test(start_paused = true)]
async fn retry_on_selects_kinds_and_honours_retry_after() {
    // Default `on: transient`: a capacity error is not retried.
    let h = run_yaml("version: 1\nsteps:\n  r: { uses: fake.run, retry: { attempts: 3 }, with: { fail_times: 1, kind: capacity } }\n").await;
    assert_eq!(h.step("r").status, StepStatus::Failed);
    assert_eq!(h.step("r").attempts, 1);
    let h = run_yaml("version: 1\nsteps:\n  r: { uses: fake.run, retry: { attempts: 3, on: [capacity] }, with: { fail_times: 1, kind: capacity } }\n").await;
    assert_eq!(h.step("r").status, StepStatus::Succeeded);
    let h = run_yaml("version: 1\nsteps:\n  r: { uses: fake.run, retry: { attempts: 3, on: any }, with: { fail_times: 2, kind: auth } }\n").await;
    assert_eq!(h.step("r").attempts, 3);
    let h = run_yaml("version: 1\nsteps:\n  r: { uses: fake.run, retry: { attempts: 2, delay: 1s }, with: { fail_times: 1, retry_after_ms: 7000 } }\n").await;
    let s = h.log.lock().unwrap().started_at["r"].clone();
    assert_eq!((s[1] - s[0]).as_millis(), 7000);
}

#[tokio::test(start_paused = true)]
async fn jitter_stays_between_half_and_all_of_the_delay() {
    let h = run_yaml("version: 1\nsteps:\n  r: { uses: fake.run, for_each: 20, retry: { attempts: 2, delay: 10s, jitter: true }, with: { fail_times: 1 } }\n").await;
    let log = h.log.lock().unwrap();
    for i in 0..20 {
        let s = &log.started_at[&format!("r[{i}]")];
        let gap = (s[1] - s[0]).as_millis();
        assert!((5000..=10000).contains(&gap), "gap {gap}");
    }
}

#[tokio::test(start_paused = true)]
async fn timeout_applies_per_attempt() {
    let h = run_yaml("version: 1\nsteps:\n  t: { uses: fake.run, timeout: 2s, retry: { attempts: 3, delay: 1s, on: [timeout] }, with: { sleep_ms: 60000 } }\n").await;
    assert_eq!(h.step("t").status, StepStatus::Failed);
    assert_eq!(h.step("t").attempts, 3);
    assert!(h.step("t").error.as_ref().unwrap().contains("timed out after 2s"));
    let s = h.log.lock().unwrap().started_at["t"].clone();
    assert_eq!((s[1] - s[0]).as_millis(), 3000);
    // defaults.timeout is inherited.
    let h = run_yaml("version: 1\ndefaults: { timeout: 1s }\nsteps:\n  t: { uses: fake.run, with: { sleep_ms: 5000 } }\n").await;
    assert_eq!(h.step("t").status, StepStatus::Failed);
}

#[tokio::test(start_paused = true)]
async fn fallback_tries_alternatives_on_capacity() {
    let h = run_yaml(
        r"
version: 1
steps:
  s:
    uses: fake.run
    with: { value: first, fail_times: 1, kind: capacity }
    fallback:
      - with: { value: second }
  t:
    uses: fake.run
    with: { fail_times: 9, kind: invalid }
    fallback: [ { with: { value: never } } ]
",
    )
    .await;
    assert_eq!(h.step("s").status, StepStatus::Succeeded);
    assert_eq!(h.step("s").outputs["value"], "second");
    assert_eq!(h.step("s").outputs["fallback_index"], 0);
    assert_eq!(h.step("s").outputs["fallback_reasons"], json!(["capacity: planned failure 1"]), "why the step's own action was given up");
    assert_eq!(h.step("t").status, StepStatus::Failed, "invalid errors do not fall back");
}

#[tokio::test(start_paused = true)]
async fn cancellation_stops_in_flight_steps_and_starts_nothing_new() {
    let h = run_with(
        "version: 1\nsteps:\n  long: { uses: fake.run, with: { sleep_ms: 60000 } }\n  after: { uses: fake.run, needs: long }\n",
        Map::new(),
        CancellationToken::new(),
        Some(Duration::from_secs(1)),
    )
    .await;
    assert_eq!(h.result.status, RunStatus::Cancelled);
    assert_eq!(h.step("long").status, StepStatus::Cancelled);
    assert_eq!(h.step("after").status, StepStatus::Cancelled);
    assert!(!h.order().iter().any(|e| e == "start after"));
    let last = h.events.lock().unwrap().last().cloned().unwrap();
    assert!(matches!(last, Event::RunFinished { status: RunStatus::Cancelled, .. }));
}

#[tokio::test(start_paused = true)]
async fn secrets_are_masked_in_every_event() {
    let mut secrets = Map::new();
    secrets.insert("token".into(), json!("s3cr3t-value"));
    let h = run_with(
        "version: 1\nsecrets: { token: { env: T } }\nsteps:\n  a: { uses: fake.run, continue_on_error: true, with: { value: '${{ secrets.token }}', fail_times: 1, kind: invalid } }\n  b: { uses: fake.run, with: { value: 'x ${{ secrets.token }}' } }\noutputs: { v: '${{ steps.b.outputs.value }}' }\n",
        secrets,
        CancellationToken::new(),
        None,
    )
    .await;
    let all = serde_json::to_string(&*h.events.lock().unwrap()).unwrap();
    assert!(!all.contains("s3cr3t-value"), "{all}");
    assert!(all.contains("x ***"));
}

#[tokio::test(start_paused = true)]
async fn json_events_have_the_pinned_shape() {
    let h = run_yaml("version: 1\nsteps:\n  a: { uses: fake.run, for_each: 2 }\n").await;
    let events: Vec<Value> = h.events.lock().unwrap().iter().map(|e| serde_json::to_value(e).unwrap()).collect();
    assert!(events.iter().all(|e| e["event"].is_string() && e["run_id"] == "r1"));
    assert!(events.iter().any(|e| e["event"] == "step" && e["step"] == "a" && e["index"] == 1 && e["status"] == "succeeded" && e["attempt"] == 1));
    let last = events.last().unwrap();
    assert_eq!(last["event"], "run_finished");
    assert_eq!(last["status"], "succeeded");
    assert!(last["outputs"].is_object());
}

#[tokio::test(start_paused = true)]
async fn sub_workflows_take_inputs_and_return_outputs() {
    let h = run_yaml(
        r"
version: 1
steps:
  node:
    uses: ./node.yaml
    for_each: [a, b]
    with: { name: '${{ item }}' }
outputs:
  hosts: ${{ steps.node.outputs | map(attribute='host') | list }}
#### node.yaml
# version: 1
# inputs: { name: { type: string } }
# steps:
#   make: { uses: fake.run, with: { value: 'host-${{ inputs.name }}' } }
# outputs: { host: '${{ steps.make.outputs.value }}' }
",
    )
    .await;
    assert_eq!(h.result.status, RunStatus::Succeeded, "{:?}", h.result.error);
    assert_eq!(h.result.outputs["hosts"], json!(["host-a", "host-b"]));
    assert!(h.order().contains(&"start node[0]/make".to_string()), "{:?}", h.order());
}

#[tokio::test(start_paused = true)]
async fn the_first_pin_of_a_run_wins_for_every_step() {
    let h = run_yaml(
        r#"
version: 1
name: pins
steps:
  first:
    uses: fake.run
    with: { pin: [host-key, SHA256:aaa] }
  second:
    needs: [first]
    uses: fake.run
    with: { pin: [host-key, SHA256:bbb] }
  other:
    needs: [first]
    uses: fake.run
    with: { pin: [another, SHA256:ccc] }
"#,
    )
    .await;
    assert_eq!(h.result.status, RunStatus::Succeeded);
    let out = |s: &str| h.result.steps.iter().find(|(n, _)| n == s).unwrap().1.outputs["pinned"].clone();
    assert_eq!(out("first"), json!("SHA256:aaa"));
    assert_eq!(out("second"), json!("SHA256:aaa"), "a later step sees the run's first pin");
    assert_eq!(out("other"), json!("SHA256:ccc"));
}
