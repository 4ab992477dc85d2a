//! A test harness for connector authors (feature `test-util`): run an action as the
//! engine would, and see everything it reported.
//!
//! ```no_run
//! # async fn demo() {
//! use engine_connector::harness::Harness;
//! # use engine_connector::fake::{FakeConnector};
//! # let action = engine_connector::fake::FakeRun::new(Default::default());
//! let h = Harness::new("make");
//! let out = h.run(&action, serde_json::json!({"value": 1, "create": true})).await.unwrap();
//! assert_eq!(h.created().len(), 1);
//! h.assert_undo_idempotent(&action).await;
//! # }
//! ```

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use engine_core::{ResourceRecord, ResourceState, StepRef};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::{Action, ConnectorError, LogStream, StepContext, StepSink};

/// What an action reported while it ran.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Every resource record, in the order they were stored.
    pub records: Vec<ResourceRecord>,
    /// `(stream, line)`.
    pub logs: Vec<(LogStream, String)>,
    /// `(stage, percent)`.
    pub progress: Vec<(String, Option<u8>)>,
    /// Values pinned with [`StepContext::pin`](crate::StepContext::pin), by key; shared by
    /// every call through this harness, as the run's pins are by its steps.
    pub pins: std::collections::BTreeMap<String, String>,
}

#[derive(Default)]
struct Sink(Mutex<Recorded>);

#[async_trait]
impl StepSink for Sink {
    fn progress(&self, _: &StepRef, _: u32, stage: &str, percent: Option<u8>) {
        self.0.lock().expect("harness lock").progress.push((stage.to_string(), percent));
    }
    fn log(&self, _: &StepRef, stream: LogStream, line: &str) {
        self.0.lock().expect("harness lock").logs.push((stream, line.to_string()));
    }
    async fn record(&self, record: &ResourceRecord) -> Result<(), ConnectorError> {
        self.0.lock().expect("harness lock").records.push(record.clone());
        Ok(())
    }
    async fn pin(&self, key: &str, value: &str) -> Result<String, ConnectorError> {
        Ok(self.0.lock().expect("harness lock").pins.entry(key.to_string()).or_insert_with(|| value.to_string()).clone())
    }
}

/// Runs actions with a recording context.
pub struct Harness {
    sink: Arc<Sink>,
    cancel: CancellationToken,
    step: StepRef,
    /// The connector settings the action sees (`cx.settings`).
    pub settings: Value,
}

impl Harness {
    /// A harness for a step called `step`.
    #[must_use]
    pub fn new(step: &str) -> Self {
        Self { sink: Arc::default(), cancel: CancellationToken::new(), step: StepRef { step: step.to_string(), index: None }, settings: Value::Null }
    }

    /// The context an action gets (same run id and step each time, so the idempotency
    /// key is stable across calls, as on a retry or a resume).
    #[must_use]
    pub fn context(&self) -> StepContext {
        let mut cx = StepContext::new("harness-run", self.step.clone(), self.cancel.clone(), self.sink.clone());
        cx.settings = self.settings.clone();
        cx
    }

    /// Deserialize `input` as the engine would (unknown keys are errors), check it, run it.
    ///
    /// # Errors
    /// The action's error, or `invalid` for an input that does not deserialize.
    pub async fn run<A: Action>(&self, action: &A, input: Value) -> Result<A::Output, ConnectorError> {
        let typed: A::Input = serde_json::from_value(input).map_err(|e| ConnectorError::invalid(format!("invalid input for {}: {e}", A::ID)))?;
        action.validate(&typed)?;
        action.run(typed, &self.context()).await
    }

    /// Undo a record.
    ///
    /// # Errors
    /// The action's error (`not_found` included: the engine counts it as done).
    pub async fn undo<A: Action>(&self, action: &A, record: &ResourceRecord) -> Result<(), ConnectorError> {
        action.undo(record, &self.context()).await
    }

    /// Cancel the next (or the running) call.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Everything recorded so far.
    pub fn recorded(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.sink.0.lock().expect("harness lock")
    }

    /// The latest record of each resource that reached `created`.
    #[must_use]
    pub fn created(&self) -> Vec<ResourceRecord> {
        let rec = self.recorded();
        let mut out: Vec<ResourceRecord> = Vec::new();
        for r in &rec.records {
            engine_core::resource::upsert(&mut out, r.clone());
        }
        out.retain(|r| r.state == ResourceState::Created);
        out
    }

    /// The contract every creating action keeps: each resource was recorded as an
    /// intent before it was confirmed.
    ///
    /// # Panics
    /// When a created resource has no earlier intent.
    pub fn assert_intent_before_create(&self) {
        let rec = self.recorded();
        for (i, r) in rec.records.iter().enumerate().filter(|(_, r)| r.state == ResourceState::Created) {
            let intended = rec.records[..i].iter().any(|x| x.kind == r.kind && x.key == r.key && x.state == ResourceState::Intended);
            assert!(intended, "{} `{}` was confirmed without an intent recorded first", r.kind, r.key);
        }
    }

    /// Undo every created resource twice, and once more as a record whose create never
    /// confirmed (`id: None`): all must succeed, as the engine's `destroy` expects.
    ///
    /// # Panics
    /// When an undo fails.
    pub async fn assert_undo_idempotent<A: Action>(&self, action: &A) {
        for r in self.created() {
            for round in 1..=2 {
                if let Err(e) = self.undo(action, &r).await {
                    assert!(e.kind == engine_core::ErrorKind::NotFound, "undo {round} of {} `{}` failed: {e}", r.kind, r.key);
                }
            }
            let mut never_confirmed = r.clone();
            never_confirmed.id = None;
            never_confirmed.state = ResourceState::Intended;
            if let Err(e) = self.undo(action, &never_confirmed).await {
                assert!(e.kind == engine_core::ErrorKind::NotFound, "undo of an unconfirmed {} `{}` failed: {e}", r.kind, r.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeConnector;
    use crate::Connector;

    #[tokio::test]
    async fn the_fake_action_keeps_the_contract() {
        let fake = FakeConnector::default();
        let action = crate::fake::FakeRun::new(fake.log.clone());
        let _ = fake.actions();
        let h = Harness::new("make");
        let out = h.run(&action, serde_json::json!({"value": 7, "create": true})).await.unwrap();
        assert_eq!(out.value, 7);
        assert_eq!(h.created().len(), 1);
        h.assert_intent_before_create();
        h.assert_undo_idempotent(&action).await;
        assert_eq!(fake.log.lock().unwrap().undone.len(), 3);
        let e = h.run(&action, serde_json::json!({"bogus": 1})).await.unwrap_err();
        assert!(e.message.contains("unknown field"), "{}", e.message);
    }
}
