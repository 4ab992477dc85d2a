//! The connector interface: typed [`Action`]s with JSON Schemas for input and output,
//! error kinds, resource records with undo, progress and cancellation, and the
//! [`Registry`] the engine looks actions up in.
//!
//! An implementor writes typed code only; the engine talks to every action through
//! the object-safe [`DynAction`] twin that each [`Action`] gets for free.

mod context;
mod error;
mod registry;
#[cfg(any(test, feature = "test-util"))]
pub mod fake;
#[cfg(any(test, feature = "test-util"))]
pub mod harness;

use std::sync::Arc;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

pub use context::{LogStream, NullSink, StepContext, StepSink};
pub use engine_core::{ErrorKind, ResourceRecord, ResourceState, Secret, StepRef};
pub use error::ConnectorError;
pub use registry::Registry;
pub use tokio_util::sync::CancellationToken;

/// A provider: a named set of actions (`proxmox`, `aws`, `shell`).
pub trait Connector: Send + Sync + 'static {
    /// Lowercase ascii name, the first part of `uses: name.action`.
    fn name(&self) -> &'static str;
    /// One line shown by `engine connectors`.
    fn description(&self) -> &'static str;
    /// The actions, each with its full id (`name.action`).
    fn actions(&self) -> Vec<Arc<dyn DynAction>>;
}

/// One action with typed input and output.
#[async_trait]
pub trait Action: Send + Sync + 'static {
    /// Full id, `connector.action` (`proxmox.vm.create`).
    const ID: &'static str;
    /// One line shown by `engine connectors`.
    const DESCRIPTION: &'static str;
    /// The kind of resource the action creates, if it creates one (`proxmox.vm`).
    const RESOURCE: Option<&'static str> = None;
    /// Input; use `#[serde(deny_unknown_fields)]`.
    type Input: DeserializeOwned + JsonSchema + Send;
    /// Output.
    type Output: Serialize + JsonSchema + Send;

    /// Pure checks beyond the schema: no network, no credentials, no await.
    ///
    /// # Errors
    /// An `invalid` error saying what is wrong.
    fn validate(&self, _input: &Self::Input) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// Do it.
    ///
    /// # Errors
    /// A classified [`ConnectorError`].
    async fn run(&self, input: Self::Input, cx: &StepContext) -> Result<Self::Output, ConnectorError>;

    /// The hourly price of what one run of the action creates, from the connector's own
    /// dated price table: pure, no network, no credentials (`engine plan` shows it).
    /// `None` when the action creates nothing billed, or the input does not say enough.
    fn price(&self, _input: &Self::Input) -> Option<Price> {
        None
    }

    /// Undo what `run` created. Idempotent, and must accept a record whose create
    /// never finished (`id == None`). Actions that create nothing keep the default.
    ///
    /// # Errors
    /// A classified [`ConnectorError`]; `not_found` counts as done.
    async fn undo(&self, _record: &ResourceRecord, _cx: &StepContext) -> Result<(), ConnectorError> {
        Ok(())
    }
}

/// The object-safe twin of [`Action`], over JSON values.
#[async_trait]
pub trait DynAction: Send + Sync + 'static {
    /// Full id.
    fn id(&self) -> &'static str;
    /// One line.
    fn description(&self) -> &'static str;
    /// The resource kind it creates, if any.
    fn resource_kind(&self) -> Option<&'static str>;
    /// JSON Schema of the input.
    fn input_schema(&self) -> Value;
    /// JSON Schema of the output.
    fn output_schema(&self) -> Value;
    /// Names of the top-level output fields.
    fn output_names(&self) -> Vec<String> {
        self.output_schema()
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }
    /// [`Action::price`] of a JSON input; `None` when the input is not complete yet (it
    /// holds a value known only at run time).
    fn price_value(&self, input: &Value) -> Option<Price>;
    /// Deserialize and run the pure checks.
    ///
    /// # Errors
    /// An `invalid` error.
    fn validate_value(&self, input: &Value) -> Result<(), ConnectorError>;
    /// Run with a JSON input.
    ///
    /// # Errors
    /// As [`Action::run`]; a bad input is `invalid`.
    async fn run_value(&self, input: Value, cx: &StepContext) -> Result<Value, ConnectorError>;
    /// Undo a resource.
    ///
    /// # Errors
    /// As [`Action::undo`].
    async fn undo_value(&self, record: &ResourceRecord, cx: &StepContext) -> Result<(), ConnectorError>;
}

impl std::fmt::Debug for dyn DynAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}

fn decode<T: DeserializeOwned>(id: &str, input: Value) -> Result<T, ConnectorError> {
    serde_json::from_value(input).map_err(|e| ConnectorError::invalid(format!("invalid input for {id}: {e}")))
}

/// An hourly price from a connector's table.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Price {
    /// Price per hour of one created thing.
    pub per_hour: f64,
    /// `USD`, `EUR`.
    pub currency: String,
    /// Where the figure comes from, with its date (`AWS on-demand list price, us-east-1, 2025-06-15`).
    pub source: String,
}

/// The JSON Schema of a type, as the engine publishes it.
#[must_use]
pub fn schema_of<T: JsonSchema>() -> Value {
    engine_core::schema::json_schema::<T>()
}

#[async_trait]
impl<A: Action> DynAction for A {
    fn id(&self) -> &'static str {
        A::ID
    }
    fn description(&self) -> &'static str {
        A::DESCRIPTION
    }
    fn resource_kind(&self) -> Option<&'static str> {
        A::RESOURCE
    }
    fn input_schema(&self) -> Value {
        schema_of::<A::Input>()
    }
    fn output_schema(&self) -> Value {
        schema_of::<A::Output>()
    }
    fn price_value(&self, input: &Value) -> Option<Price> {
        let typed: A::Input = serde_json::from_value(input.clone()).ok()?;
        self.price(&typed)
    }
    fn validate_value(&self, input: &Value) -> Result<(), ConnectorError> {
        let typed: A::Input = decode(A::ID, input.clone())?;
        self.validate(&typed)
    }
    async fn run_value(&self, input: Value, cx: &StepContext) -> Result<Value, ConnectorError> {
        let typed: A::Input = decode(A::ID, input)?;
        self.validate(&typed)?;
        let out = self.run(typed, cx).await?;
        serde_json::to_value(out).map_err(|e| ConnectorError::invalid(format!("{} produced an output that cannot be encoded: {e}", A::ID)))
    }
    async fn undo_value(&self, record: &ResourceRecord, cx: &StepContext) -> Result<(), ConnectorError> {
        match self.undo(record, cx).await {
            Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

/// Send `signal` (`KILL`, `TERM`) to the whole process group led by `pid`: connectors
/// start child processes as group leaders so that a timeout or a cancellation ends
/// everything they started. Best effort: a group already gone is fine.
pub fn signal_process_group(pid: u32, signal: &str) {
    let _ = std::process::Command::new("kill")
        .args([&format!("-{signal}"), "--", &format!("-{pid}")])
        .stderr(std::process::Stdio::null())
        .status();
}
