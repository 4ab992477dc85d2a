//! Throughput of durable step upserts: 10,000 writes from 16 concurrent tokio
//! tasks into a fresh state file, each awaited until its group commit.
//!
//! `cargo run --release -p engine-state --example store_bench`

use std::time::Instant;

use engine_state::{RunRecord, StepRecord, Store, Write};
use serde_json::json;

const TASKS: usize = 16;
const WRITES: usize = 10_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    let store = Store::open(&path)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        store
            .write(Write::CreateRun(RunRecord {
                id: "bench".into(),
                workflow_path: "bench.yaml".into(),
                workflow_name: "bench".into(),
                status: "running".into(),
                inputs: json!({}),
                outputs: json!(null),
                error: None,
                created_at_ms: 0,
                updated_at_ms: 0,
                lock_owner: None,
                lock_expires_at_ms: None,
            }))
            .await?;
        let before = store.stats();
        let start = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in (t..WRITES).step_by(TASKS) {
                        // 64 distinct steps, each updated many times: upserts, not just inserts.
                        let rec = StepRecord {
                            step: format!("step{}", i % 64),
                            index: Some(t),
                            status: if i % 2 == 0 { "running" } else { "succeeded" }.into(),
                            attempts: 1,
                            outputs: json!({"i": i, "ip": "10.0.0.1"}),
                            error: None,
                            started_at_ms: Some(1),
                            finished_at_ms: None,
                        };
                        store.write(Write::Step { run_id: "bench".into(), rec }).await?;
                    }
                    Ok::<_, engine_state::StateError>(())
                })
            })
            .collect();
        for t in tasks {
            t.await??;
        }
        let secs = start.elapsed().as_secs_f64();
        let after = store.stats();
        let txs = after.transactions - before.transactions;
        #[allow(clippy::cast_precision_loss)]
        {
            println!("{WRITES} step upserts from {TASKS} tasks in {secs:.3} s: {:.0} writes/s", WRITES as f64 / secs);
            println!("{txs} transactions, {:.1} writes per commit on average", WRITES as f64 / txs as f64);
        }
        println!("rows: {}", store.steps("bench")?.len());
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}
