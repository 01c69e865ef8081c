//! apalis-redis adapter of the queue. Designed around apalis-redis's known defects: every
//! worker process uses a unique worker name, apalis retries and attempts are never relied
//! on (handlers always succeed; outcomes live in the store), and the backend heartbeat —
//! which is also when an idle worker looks for new jobs — runs at `worker.poll_interval`.

use std::time::Duration;

use apalis::prelude::{BoxDynError, Data, TaskSink, WorkerBuilder};
use apalis_redis::{Config, ConnectionManager, RedisStorage};
use tokio_util::sync::CancellationToken;

use super::{JobHandler, QueueError, SlotGateLayer, Slots, SpawnJob};

pub const SPAWN_QUEUE: &str = "spawn";

#[derive(Clone)]
pub struct RedisQueue {
    storage: RedisStorage<serde_json::Value>,
    queue_name: String,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("queue", &self.queue_name)
            .finish()
    }
}

impl RedisQueue {
    /// Connects to Redis; `prefix` namespaces the queue keys; `poll_interval` and
    /// `orphan_after` tune how fast idle workers see jobs and how soon the jobs of a vanished
    /// worker go back to the queue.
    pub async fn connect(
        url: &str,
        prefix: &str,
        poll_interval: Duration,
        orphan_after: Duration,
    ) -> Result<Self, QueueError> {
        let conn = apalis_redis::connect(url)
            .await
            .map_err(|e| QueueError::Redis(e.to_string()))?;
        Ok(Self::from_connection(
            conn,
            prefix,
            poll_interval,
            orphan_after,
        ))
    }

    fn from_connection(
        conn: ConnectionManager,
        prefix: &str,
        poll_interval: Duration,
        orphan_after: Duration,
    ) -> Self {
        let queue_name = format!("{prefix}:{SPAWN_QUEUE}");
        let missed = (orphan_after.as_millis() / poll_interval.as_millis().max(1)).max(3) as usize;
        let config = Config::default()
            .queue(&queue_name)
            // One job per fetch: a worker only fetches while it has a free slot.
            .batch_size(1)
            .heartbeat_interval(poll_interval)
            .missed_heartbeats(missed);
        Self {
            storage: RedisStorage::new(conn).with_config(config),
            queue_name,
        }
    }

    pub fn queue_name(&self) -> &str {
        &self.queue_name
    }

    pub async fn enqueue(&self, job: &SpawnJob) -> Result<(), QueueError> {
        let value = serde_json::to_value(job).map_err(|e| QueueError::Redis(e.to_string()))?;
        self.enqueue_raw(value).await
    }

    /// Pushes any JSON value as a job (operators' tools and tests of malformed jobs).
    pub async fn enqueue_raw(&self, value: serde_json::Value) -> Result<(), QueueError> {
        let mut storage = self.storage.clone();
        storage
            .push(value)
            .await
            .map_err(|e| QueueError::Redis(e.to_string()))
    }

    /// A backend for one apalis worker.
    pub fn backend(&self) -> RedisStorage<serde_json::Value> {
        self.storage.clone()
    }

    /// Runs one apalis worker named `consumer` until `stop`. The slot gate makes it fetch
    /// only while a slot is free.
    pub async fn consume(
        &self,
        consumer: &str,
        slots: Slots,
        stop: CancellationToken,
        handler: JobHandler,
    ) -> Result<(), QueueError> {
        let worker = WorkerBuilder::new(consumer)
            .backend(self.backend())
            .layer(SlotGateLayer::new(slots))
            .data(handler)
            .build(run_job);
        worker
            .run_until(async move {
                stop.cancelled().await;
                Ok::<(), std::io::Error>(())
            })
            .await
            .map_err(|e| QueueError::Redis(e.to_string()))
    }
}

/// Handlers never fail: outcomes live in the store, so apalis has nothing to retry.
async fn run_job(job: serde_json::Value, handler: Data<JobHandler>) -> Result<(), BoxDynError> {
    handler.call(job).await;
    Ok(())
}
