//! Workflow files: YAML with spans -> the raw model (checked against the JSON
//! Schema generated from it) -> a checked [`Workflow`] with its DAG, resolved
//! actions and typed expressions. Pure: reads files, never the network.

pub mod check;
pub mod inputs;
pub mod model;
pub mod plan;
pub mod schemacheck;
pub mod yaml;

pub use check::{ConnectorResolver, Loader};
pub use plan::{CleanupPlan, FallbackPlan, RetryOn, RetryPolicy, StepPlan, Uses, Workflow};
