//! The re-dispatcher, a maintenance service (`service.rs`): every
//! `worker.control_poll_interval` it sends again the spawn and control requests the queue
//! seems to have lost (found in one store statement), and fails resumes that waited longer
//! than `worker.resume_timeout`. The sweeper sends a dead worker's re-queued spawns through
//! here too, at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use uuid::Uuid;

use super::runtime::Runtime;
use super::service::Service;
use crate::queue::{ControlJob, ControlTarget, SpawnJob};
use crate::store::DueParams;

/// Requests re-sent per look.
const REDISPATCH_LIMIT: i64 = 100;

/// The re-dispatcher's configuration: how often it looks, and which requests are due.
pub(super) struct Redispatch {
    pub interval: Duration,
    pub due: DueParams,
}

/// What one look sent again.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct RedispatchReport {
    /// The store could not be read: nothing was sent.
    pub store_failed: bool,
    /// Spawn jobs enqueued again.
    pub spawns: usize,
    /// Control jobs pushed again.
    pub controls: usize,
}

impl Redispatch {
    pub(super) fn from_settings(settings: &crate::config::Settings) -> Self {
        Self {
            interval: settings.worker.control_poll_interval,
            due: DueParams {
                spawn_after: settings.queue.redispatch_after,
                control_after: settings.worker.control_poll_interval,
                resume_timeout: settings.worker.resume_timeout,
                limit: REDISPATCH_LIMIT,
            },
        }
    }
}

impl Service for Redispatch {
    type Report = RedispatchReport;
    const NAME: &'static str = "redispatch";
    const MISSED_TICK: MissedTickBehavior = MissedTickBehavior::Delay;

    fn interval(&self) -> Duration {
        self.interval
    }

    async fn run_once(&self, rt: &Arc<Runtime>) -> RedispatchReport {
        let found = match rt.fleet.store.take_due_requests(&self.due).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "re-dispatch: cannot read pending requests");
                return RedispatchReport {
                    store_failed: true,
                    ..Default::default()
                };
            }
        };
        let mut report = RedispatchReport {
            spawns: send_spawns(rt, found.spawns).await,
            ..Default::default()
        };
        for control in found.controls {
            let Some(target) =
                ControlTarget::of(control.target_worker.as_deref(), control.node_id.as_deref())
            else {
                continue;
            };
            let job = ControlJob {
                request_id: control.id,
                trace_context: Default::default(),
            };
            match rt.fleet.queue.push_control(&target, &job).await {
                Ok(()) => {
                    report.controls += 1;
                    tracing::info!(request_id = %control.id, "control request dispatched again");
                }
                Err(e) => {
                    tracing::warn!(request_id = %control.id, error = %e, "control re-dispatch failed")
                }
            }
        }
        report
    }
}

/// Sends again the spawns a dead worker's reconciliation just re-queued.
pub(super) async fn requeued(rt: &Runtime) {
    let due = match rt
        .fleet
        .store
        .take_redispatch(rt.fleet.settings.queue.redispatch_after, 100)
        .await
    {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!(error = %e, "re-dispatch: cannot read pending requests");
            return;
        }
    };
    send_spawns(rt, due).await;
}

/// Sends the jobs of these recorded spawn requests again; how many were enqueued.
async fn send_spawns(rt: &Runtime, due: Vec<Uuid>) -> usize {
    let mut sent = 0;
    for request_id in due {
        // The caller's trace continues from the stored context, not from this sweep.
        let trace_context = rt
            .fleet
            .store
            .spawn_trace_context(request_id)
            .await
            .unwrap_or_default();
        let job = SpawnJob {
            request_id,
            trace_context,
        };
        match rt.fleet.queue.enqueue(&job).await {
            Ok(()) => {
                sent += 1;
                tracing::info!(%request_id, "request dispatched again");
            }
            Err(e) => tracing::warn!(%request_id, error = %e, "re-dispatch failed"),
        }
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SpawnRequest;
    use crate::worker::runtime;

    fn due(spawn_after: Duration) -> Redispatch {
        let hour = Duration::from_secs(3600);
        Redispatch {
            interval: hour,
            due: DueParams {
                spawn_after,
                control_after: hour,
                resume_timeout: hour,
                limit: REDISPATCH_LIMIT,
            },
        }
    }

    #[tokio::test]
    async fn a_step_sends_a_lost_spawn_again_and_not_again_before_it_is_due() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime::for_test(dir.path()).await;
        let remote = dir.path().join("remote.git");
        let remote = remote.to_str().unwrap();
        rt.fleet.add_project("demo", remote, "main").await.unwrap();
        let request: SpawnRequest = serde_json::from_value(serde_json::json!(
            {"provider": "claude", "project": "demo", "prompt": "hello"}
        ))
        .unwrap();
        rt.fleet.spawn(request).await.unwrap();
        // Its dispatch time must lie in the past of the store's clock.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let sent = due(Duration::ZERO).run_once(&rt).await;
        assert_eq!(
            sent,
            RedispatchReport {
                spawns: 1,
                ..Default::default()
            }
        );
        let later = due(Duration::from_secs(3600)).run_once(&rt).await;
        assert_eq!(later, RedispatchReport::default(), "sent just now");
    }
}
