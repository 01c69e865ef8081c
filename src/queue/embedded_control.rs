//! The embedded control queue: the store's pending control rows are the queue. A request
//! recorded in this process (`up`) wakes the consumer at once; one recorded by another
//! process (the CLI) is found by the poll at `worker.poll_interval`, as spawns are. The
//! handler claims each row, so a request handed out twice acts once.

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::super::JobHandler;
use super::super::control::{ControlConsumer, ControlJob};
use super::EmbeddedQueue;

impl EmbeddedQueue {
    /// The request is already pending in the store; wake the control consumer.
    pub fn push_control(&self) {
        self.control_wake.notify_waiters();
    }

    pub async fn consume_controls(
        &self,
        targets: &ControlConsumer<'_>,
        stop: CancellationToken,
        handler: JobHandler,
    ) {
        let handlers = TaskTracker::new();
        loop {
            // Registered before the look, so a push during it is not missed.
            let woken = self.control_wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            match self
                .store
                .pending_controls(targets.worker_id, targets.node_id)
                .await
            {
                Ok(ids) => {
                    for request_id in ids {
                        let job = ControlJob {
                            request_id,
                            trace_context: Default::default(),
                        };
                        match serde_json::to_value(&job) {
                            Ok(job) => {
                                handlers.spawn(handler.call(job));
                            }
                            Err(e) => tracing::error!(%request_id, error = %e, "cannot encode job"),
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read control requests"),
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = woken => {}
                _ = tokio::time::sleep(self.poll_interval) => {}
            }
        }
        handlers.close();
        handlers.wait().await;
    }
}
