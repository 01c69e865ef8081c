//! The queue port: how a recorded request reaches a worker. The queue is only a dispatch
//! transport (apalis-redis); the request row in the store is the durable record, so a job
//! may be lost, late or delivered twice without harm — workers claim the row first.

mod redis;
mod slots;

pub use redis::{RedisQueue, SPAWN_QUEUE};
pub use slots::{SlotGateLayer, Slots, take_handed_slot};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The job on the wire: which request to run, and the W3C trace context of the enqueue so
/// the worker's span continues the caller's trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpawnJob {
    pub request_id: Uuid,
    #[serde(default)]
    pub trace_context: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue (redis): {0}")]
    Redis(String),
}
