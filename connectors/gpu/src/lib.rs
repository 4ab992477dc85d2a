//! The parsing core of the future `gpu` connector.
//!
//! The `gpu` connector (issue: GPU and container connectors; design row `gpu` in
//! `CONNECTORS.md`, seed 004) will list, inspect, monitor and select NVIDIA GPUs by
//! reading `nvidia-smi` output, locally or over SSH. This crate holds what does not
//! depend on how the output was obtained: [`smi::parse_query_xml`] turns the XML of
//! `nvidia-smi -q -x` into typed, serializable data.
//!
//! It is **not yet a registered connector**: there is no `Connector` implementation
//! here and the engine does not load it. The actions will be added on top of this
//! module.

pub mod smi;

pub use smi::{parse_query_xml, SmiError, SmiReport};
