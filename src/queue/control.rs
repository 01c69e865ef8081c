//! Control jobs: stop, delete, resume, dismiss and cleanup requests about an agent, sent
//! to the worker that can act on them. The request row in the store is the durable
//! record; the job only names it, so a job lost, late or delivered twice does no harm —
//! the worker claims the row first, and the re-dispatcher sends lost ones again.
//!
//! Each worker has its own control queue (requests about the agents it owns) and each node
//! one more (requests any worker on the node can serve: a resume, the delete, dismiss or
//! cleanup of an agent that no longer runs). On Redis these are apalis queues beside the
//! spawn queue, woken on push like it; in the embedded mode the store's pending rows are
//! the queue.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{JobHandler, Queue, QueueError};

/// The job on the wire: which control request to act on, and the W3C trace context of
/// the request so the worker's span continues the caller's trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlJob {
    pub request_id: Uuid,
    #[serde(default)]
    pub trace_context: BTreeMap<String, String>,
}

/// Whose control queue a job goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlTarget {
    /// The worker that owns the agent's process.
    Worker(String),
    /// Any worker on the node that holds the agent's checkout.
    Node(String),
}

impl ControlTarget {
    /// The owner when there is one, else the agent's node; None when the agent was never
    /// placed anywhere.
    pub fn of(target_worker: Option<&str>, node: Option<&str>) -> Option<Self> {
        match (target_worker, node) {
            (Some(worker), _) => Some(Self::Worker(worker.to_string())),
            (None, Some(node)) => Some(Self::Node(node.to_string())),
            (None, None) => None,
        }
    }

    /// The queue's name under `redis.prefix`.
    pub fn queue_suffix(&self) -> String {
        match self {
            Self::Worker(id) => format!("control:worker:{id}"),
            Self::Node(id) => format!("control:node:{id}"),
        }
    }
}

impl Queue {
    /// The name of `target`'s control queue (for spans and logs).
    pub fn control_queue_name(&self, target: &ControlTarget) -> String {
        match self {
            Self::Redis(q) => q.control_queue_name(target),
            Self::Embedded(_) => format!("embedded:{}", target.queue_suffix()),
        }
    }

    /// Sends a recorded control request to `target`'s queue and wakes its consumers.
    pub async fn push_control(
        &self,
        target: &ControlTarget,
        job: &ControlJob,
    ) -> Result<(), QueueError> {
        match self {
            Self::Redis(q) => q
                .push_control(target, job)
                .await
                .inspect_err(|_| crate::metrics::backend_error("redis")),
            Self::Embedded(q) => {
                q.push_control();
                Ok(())
            }
        }
    }

    /// Removes what `worker_id` left in Redis once it is gone (its control queue, its
    /// consumers' metadata; its requests stay in the store); the embedded queue has nothing
    /// to remove.
    pub async fn forget_worker(&self, worker_id: &str) {
        if let Self::Redis(q) = self {
            match q.forget_worker(worker_id).await {
                Ok(keys) => tracing::debug!(worker_id, keys, "gone worker's queue keys removed"),
                Err(e) => {
                    crate::metrics::backend_error("redis");
                    tracing::warn!(worker_id, error = %e, "cannot remove a gone worker's queue keys");
                }
            }
        }
    }

    /// Delivers the control jobs of `worker`'s and `node`'s queues to `handler` until
    /// `stop`, then waits for those in hand. Pushes wake the consumer at once;
    /// `fallback_poll` is how often it looks anyway. `consumer` must be unique per run.
    pub async fn consume_controls(
        &self,
        consumer: &str,
        targets: ControlConsumer<'_>,
        stop: CancellationToken,
        handler: JobHandler,
    ) -> Result<(), QueueError> {
        match self {
            Self::Redis(q) => q
                .consume_controls(consumer, &targets, stop, handler)
                .await
                .inspect_err(|_| crate::metrics::backend_error("redis")),
            Self::Embedded(q) => {
                q.consume_controls(&targets, stop, handler).await;
                Ok(())
            }
        }
    }
}

/// Whose control queues a consumer serves, and how often it looks without a push.
#[derive(Debug, Clone, Copy)]
pub struct ControlConsumer<'a> {
    pub worker_id: &'a str,
    pub node_id: &'a str,
    pub fallback_poll: Duration,
}

impl ControlConsumer<'_> {
    pub fn targets(&self) -> [ControlTarget; 2] {
        [
            ControlTarget::Worker(self.worker_id.to_string()),
            ControlTarget::Node(self.node_id.to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_wins_over_the_node() {
        assert_eq!(
            ControlTarget::of(Some("w1"), Some("n1")),
            Some(ControlTarget::Worker("w1".into()))
        );
        assert_eq!(
            ControlTarget::of(None, Some("n1")),
            Some(ControlTarget::Node("n1".into()))
        );
        assert_eq!(ControlTarget::of(None, None), None);
    }

    #[test]
    fn jobs_without_a_trace_context_decode() {
        let id = Uuid::now_v7();
        let job: ControlJob =
            serde_json::from_value(serde_json::json!({ "request_id": id })).unwrap();
        assert_eq!(job.request_id, id);
        assert!(job.trace_context.is_empty());
    }
}
