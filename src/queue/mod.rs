//! The queue port: how a recorded request reaches a worker. The queue is only a dispatch
//! transport; the request row in the store is the durable record, so a job may be lost,
//! late or delivered twice without harm — workers claim the row first.
//!
//! Two adapters: apalis-redis for the fleet (`RedisQueue`), and the store's own pending
//! requests for the embedded default (`EmbeddedQueue`). Either way a consumer only takes a
//! job while its worker has a free slot, and hands it to the same handler.
//!
//! Requests about an existing agent (stop, delete, resume) travel the same way on control
//! queues, one per worker and one per node (`control.rs`).

mod control;
mod embedded;
mod redis;
mod slots;

pub use control::{ControlConsumer, ControlJob, ControlTarget};
pub use embedded::EmbeddedQueue;
pub use redis::{RedisQueue, SPAWN_QUEUE};
pub use slots::{SlotGateLayer, Slots, Wakeup, take_handed_slot};

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The job on the wire: which request to run, and the W3C trace context of the enqueue so
/// the worker's span continues the caller's trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpawnJob {
    pub request_id: Uuid,
    #[serde(default)]
    pub trace_context: BTreeMap<String, String>,
}

/// What a consumer runs for each delivered job (the raw JSON, so malformed jobs reach the
/// handler and are recorded there). It holds the job's slot until its future ends.
#[derive(Clone)]
pub struct JobHandler(Arc<dyn Fn(serde_json::Value) -> BoxFuture<'static, ()> + Send + Sync>);

impl JobHandler {
    pub fn new<F, Fut>(handle: F) -> Self
    where
        F: Fn(serde_json::Value) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        Self(Arc::new(move |job| Box::pin(handle(job))))
    }

    pub fn call(&self, job: serde_json::Value) -> BoxFuture<'static, ()> {
        (self.0)(job)
    }
}

impl std::fmt::Debug for JobHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobHandler")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue (redis): {0}")]
    Redis(String),
    #[error("queue (embedded): {0}")]
    Embedded(String),
}

/// The queue, as one of its adapters.
#[derive(Clone, Debug)]
pub enum Queue {
    Redis(Box<RedisQueue>),
    Embedded(EmbeddedQueue),
}

impl Queue {
    /// The queue's name as recorded with jobs that could not be decoded.
    pub fn queue_name(&self) -> &str {
        match self {
            Self::Redis(q) => q.queue_name(),
            Self::Embedded(q) => q.queue_name(),
        }
    }

    /// `messaging.system` of the OpenTelemetry conventions for this transport.
    pub fn messaging_system(&self) -> &'static str {
        match self {
            Self::Redis(_) => "redis",
            Self::Embedded(_) => "agentfleet_embedded",
        }
    }

    /// Sends the job of a recorded request to the workers.
    pub async fn enqueue(&self, job: &SpawnJob) -> Result<(), QueueError> {
        match self {
            Self::Redis(q) => q
                .enqueue(job)
                .await
                .inspect_err(|_| crate::metrics::backend_error("redis")),
            Self::Embedded(q) => {
                q.enqueue(job);
                Ok(())
            }
        }
    }

    /// Delivers jobs to `handler`, never more at once than `slots` has room for, until
    /// `stop`; then waits for the jobs in hand. `consumer` names this consumer to the
    /// transport and must be unique per run (apalis-redis refuses a recent name).
    pub async fn consume(
        &self,
        consumer: String,
        slots: Slots,
        stop: CancellationToken,
        handler: JobHandler,
    ) -> Result<(), QueueError> {
        match self {
            Self::Redis(q) => q
                .consume(&consumer, slots, stop, handler)
                .await
                .inspect_err(|_| crate::metrics::backend_error("redis")),
            Self::Embedded(q) => {
                q.consume(slots, stop, handler).await;
                Ok(())
            }
        }
    }
}
