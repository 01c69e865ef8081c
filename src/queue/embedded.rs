//! The embedded queue: no transport at all. The store's pending requests *are* the queue;
//! a consumer takes a free slot, then hands the oldest pending request to the handler,
//! which claims it in the store like any delivered job. An enqueue in this process wakes
//! the consumer at once; a short poll picks up requests recorded by other processes (the
//! CLI's `spawn` while `up` runs) within `worker.poll_interval`.
//!
//! A request stays pending until its handler claims it, so the consumer remembers what it
//! handed out and does not hand the same request out again for `REDISPATCH_AFTER` — long
//! enough for a claim, short enough that a request whose claim failed (a store error) is
//! tried again soon. Two consumers (two `worker` processes on one machine) may hand out
//! the same request; the claim lets one run it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::slots::with_handed_slot;
use super::{JobHandler, Slots, SpawnJob};
use crate::store::Store;

#[path = "embedded_control.rs"]
mod control;

const QUEUE_NAME: &str = "embedded:spawn";
const REDISPATCH_AFTER: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct EmbeddedQueue {
    store: Store,
    wake: Arc<Notify>,
    /// Wakes the control consumers of this process.
    control_wake: Arc<Notify>,
    poll_interval: Duration,
}

impl std::fmt::Debug for EmbeddedQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedQueue")
            .field("poll_interval", &self.poll_interval)
            .finish()
    }
}

impl EmbeddedQueue {
    pub fn new(store: Store, poll_interval: Duration) -> Self {
        Self {
            store,
            wake: Arc::new(Notify::new()),
            control_wake: Arc::new(Notify::new()),
            poll_interval,
        }
    }

    pub fn queue_name(&self) -> &str {
        QUEUE_NAME
    }

    /// The request is already pending in the store; wake a consumer of this process.
    pub fn enqueue(&self, _job: &SpawnJob) {
        self.wake.notify_one();
    }

    /// Hands pending requests to `handler` while slots are free, until `stop`; then waits
    /// for the handlers in hand.
    pub async fn consume(&self, slots: Slots, stop: CancellationToken, handler: JobHandler) {
        let handlers = TaskTracker::new();
        let mut handed_out: HashMap<Uuid, Instant> = HashMap::new();
        loop {
            // A free slot first: never take a job there is no room for. An idle consumer
            // lets go of it while it waits, so the slot does not count as running.
            let slot = tokio::select! {
                _ = stop.cancelled() => break,
                slot = slots.acquire() => slot,
            };
            let request_id = match self.next_request(&mut handed_out).await {
                Ok(Some(id)) => id,
                Ok(None) => {
                    drop(slot);
                    if self.idle(&stop).await {
                        continue;
                    }
                    break;
                }
                Err(e) => {
                    drop(slot);
                    tracing::warn!(error = %e, "cannot read pending requests");
                    if self.idle(&stop).await {
                        continue;
                    }
                    break;
                }
            };
            handed_out.insert(request_id, Instant::now());
            // The enqueue's trace context was stored with the request.
            let trace_context = self
                .store
                .spawn_trace_context(request_id)
                .await
                .unwrap_or_default();
            let job = SpawnJob {
                request_id,
                trace_context,
            };
            let job = match serde_json::to_value(&job) {
                Ok(job) => job,
                Err(e) => {
                    tracing::error!(%request_id, error = %e, "cannot encode job");
                    continue;
                }
            };
            let handler = handler.clone();
            // The slot goes to the handler, which gives it to the agent it starts.
            handlers.spawn(with_handed_slot(Some(slot), handler.call(job)));
        }
        handlers.close();
        handlers.wait().await;
    }

    /// Waits for a wake-up or the next poll; false when stopped.
    async fn idle(&self, stop: &CancellationToken) -> bool {
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = self.wake.notified() => true,
            _ = tokio::time::sleep(self.poll_interval) => true,
        }
    }

    /// The oldest pending request not handed out recently.
    async fn next_request(
        &self,
        handed_out: &mut HashMap<Uuid, Instant>,
    ) -> Result<Option<Uuid>, crate::store::StoreError> {
        let limit = handed_out.len() as i64 + 16;
        let pending = self.store.pending_requests(limit).await?;
        // Requests no longer pending were claimed (or failed): forget them.
        handed_out.retain(|id, _| pending.contains(id));
        Ok(pending.into_iter().find(|id| {
            handed_out
                .get(id)
                .is_none_or(|at| at.elapsed() >= REDISPATCH_AFTER)
        }))
    }
}
