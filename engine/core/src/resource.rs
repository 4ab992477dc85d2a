//! Records of what a run created, with what is needed to undo it.

use serde::{Deserialize, Serialize};

/// The step (and fan-out index) that created a resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRef {
    /// Step id, `parent/child` inside a sub-workflow.
    pub step: String,
    /// Index in a fan-out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}

/// Life cycle of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceState {
    /// The create was about to be sent; the thing may or may not exist.
    Intended,
    /// The provider confirmed it with an id.
    Created,
    /// It was undone.
    Deleted,
}

/// Put `rec` in `list`: the latest record of a resource (same kind and key) replaces
/// the earlier one in place, so the list keeps creation order.
pub fn upsert(list: &mut Vec<ResourceRecord>, rec: ResourceRecord) {
    match list.iter_mut().find(|x| x.kind == rec.kind && x.key == rec.key) {
        Some(x) => *x = rec,
        None => list.push(rec),
    }
}

/// One thing a run created (or may have created).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceRecord {
    /// Kind, `connector.thing`, e.g. `proxmox.vm`.
    pub kind: String,
    /// Idempotency key, known before the create is sent.
    pub key: String,
    /// Provider id, once known.
    pub id: Option<String>,
    /// Where it is in its life cycle.
    pub state: ResourceState,
    /// Connector-owned payload that `undo` reads.
    pub undo: serde_json::Value,
    /// Which step made it.
    pub step: StepRef,
}
