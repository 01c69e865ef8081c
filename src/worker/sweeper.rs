//! The sweeper, a maintenance service (`service.rs`): reconciles dead workers. Every worker
//! runs it, the store lets exactly one act on a given dead worker; a dead worker on this
//! node has its agents adopted here, one on another node has them re-queued (and sent again
//! at once, `redispatch.rs`) or marked crashed.

use std::sync::Arc;
use std::time::Duration;

use super::redispatch;
use super::runtime::Runtime;
use super::service::Service;
use super::{agent_task, node_scan};
use crate::events::STATUS_EVENT;
use crate::process;
use crate::store::{ReconcilePolicy, Reconciled};

/// The sweeper's configuration: how often it looks for dead workers.
pub(super) struct Sweeper {
    pub interval: Duration,
}

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct SweepReport {
    /// The lease was lost: this worker judges nobody any more, and the sweeper ends.
    pub lease_lost: bool,
    /// The store was away less than a lease ago (or failed now): nobody was judged.
    pub skipped: bool,
    /// Dead workers reconciled by this worker.
    pub reconciled: usize,
    pub adopted: usize,
    pub requeued: usize,
    pub crashed: usize,
}

impl Sweeper {
    pub(super) fn from_settings(settings: &crate::config::Settings) -> Self {
        Self {
            interval: settings.worker.sweep_interval,
        }
    }
}

impl Service for Sweeper {
    type Report = SweepReport;
    const NAME: &'static str = "sweeper";

    fn interval(&self) -> Duration {
        self.interval
    }

    async fn run_once(&self, rt: &Arc<Runtime>) -> SweepReport {
        if rt.lease_lost.is_cancelled() {
            return SweepReport {
                lease_lost: true,
                ..Default::default()
            };
        }
        sweep_once(rt, false).await
    }

    fn ends_after(&self, report: &SweepReport) -> bool {
        report.lease_lost
    }
}

/// Reconciles every dead worker there is right now. At start-up (and whenever a worker of
/// this node is found gone) it first stops this node's processes whose agents are no longer
/// owned here, so nothing it re-queues can run twice.
pub async fn sweep_once(rt: &Arc<Runtime>, starting_up: bool) -> SweepReport {
    let store = &rt.fleet.store;
    // Leases that ran out while the store was away prove nothing about their workers.
    if !rt.liveness.may_judge_peers() {
        tracing::debug!("sweep: the store was away less than a lease ago; judging nobody yet");
        return SweepReport {
            skipped: true,
            ..Default::default()
        };
    }
    // Same-node workers whose process is gone are dead now, whatever their lease says.
    let known_dead: Vec<String> = match store.peers_on_node(&rt.node_id, &rt.owner.worker_id).await
    {
        Ok(peers) => peers
            .into_iter()
            .filter(|p| {
                p.pid_start_time
                    .is_some_and(|st| !process::is_same_process_alive(p.pid, st))
            })
            .map(|p| p.id)
            .collect(),
        Err(e) => {
            rt.liveness.store_failed();
            tracing::warn!(error = %e, "sweep: cannot list peers");
            return SweepReport {
                skipped: true,
                ..Default::default()
            };
        }
    };
    if starting_up || !known_dead.is_empty() {
        node_scan::kill_unowned(rt, &known_dead).await;
    }
    let policy = ReconcilePolicy {
        max_attempts: rt.fleet.settings.queue.max_attempts,
        orphan_grace: rt.fleet.settings.worker.orphan_grace + crate::sandbox::DEADMAN_KILL_MARGIN,
    };
    let mut report = SweepReport::default();
    loop {
        match store
            .reconcile_one(&crate::store::ReconcileParams {
                me: &rt.owner,
                node: &rt.node_id,
                known_dead: &known_dead,
                policy: &policy,
            })
            .await
        {
            Ok(Some(done)) => {
                report.reconciled += 1;
                report.adopted += done.adopted.len();
                report.requeued += done.requeued.len();
                report.crashed += done.crashed.len();
                apply(rt, done).await;
            }
            Ok(None) => break,
            Err(e) => {
                rt.liveness.store_failed();
                tracing::warn!(error = %e, "sweep failed");
                break;
            }
        }
    }
    report
}

async fn apply(rt: &Arc<Runtime>, done: Reconciled) {
    tracing::info!(
        dead_worker = %done.worker_id,
        node = %done.node_id,
        adopted = done.adopted.len(),
        requeued = done.requeued.len(),
        crashed = done.crashed.len(),
        "reconciled dead worker"
    );
    crate::metrics::reconciled(done.adopted.len(), done.requeued.len(), done.crashed.len());
    // Its requests are the adopter's or the reconciler's now (the store points them there).
    rt.fleet.queue.forget_worker(&done.worker_id).await;
    let store = &rt.fleet.store;
    if !done.adopted.is_empty() {
        match store.agents_by_id(&done.adopted).await {
            Ok(agents) => {
                for agent in agents {
                    agent_task::adopt(rt, agent).await;
                }
                super::control::after_adoption(rt, &done.adopted).await;
            }
            Err(e) => tracing::error!(error = %e, "cannot load adopted agents"),
        }
    }
    let ended = store.agents_by_id(&done.crashed).await.unwrap_or_default();
    for agent in ended {
        let data = serde_json::json!({
            "kind": STATUS_EVENT, "status": agent.status, "error": agent.error,
            "reconciled_by": rt.owner.worker_id,
        });
        rt.fleet.record_unowned_event(agent.id, &data).await;
        if done.to_kill.contains(&agent.id)
            && let (Some(pid), Some(start)) = (agent.pid, agent.pid_start_time)
            && process::is_same_process_alive(pid, start)
        {
            let mut stale = process::Running::adopted(pid, start, Default::default());
            stale.terminate(rt.fleet.settings.worker.stop_grace).await;
        }
    }
    for agent_id in &done.requeued {
        let data = serde_json::json!({"kind": "requeued", "reason": "worker_lost"});
        rt.fleet.record_unowned_event(*agent_id, &data).await;
    }
    if !done.requeued.is_empty() {
        redispatch::requeued(rt).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewWorker;
    use crate::worker::runtime;

    #[tokio::test]
    async fn a_step_reconciles_a_worker_of_this_node_whose_process_is_gone_once() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime::for_test(dir.path()).await;
        let gone = NewWorker {
            id: "gone-worker",
            node_id: &rt.node_id,
            host: "here",
            // No process has this pid (above the kernel's pid_max).
            pid: i32::MAX,
            pid_start_time: Some(1),
            capacity: 1,
        };
        let lease = Duration::from_secs(3600);
        rt.fleet.store.register_worker(&gone, lease).await.unwrap();
        let sweeper = Sweeper { interval: lease };
        let report = sweeper.run_once(&rt).await;
        assert_eq!(report.reconciled, 1, "{report:?}");
        assert!(!sweeper.ends_after(&report));
        let again = sweeper.run_once(&rt).await;
        assert_eq!(again, SweepReport::default());
    }

    #[tokio::test]
    async fn the_sweeper_ends_once_the_lease_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime::for_test(dir.path()).await;
        rt.lease_lost.cancel();
        let sweeper = Sweeper {
            interval: Duration::from_secs(3600),
        };
        let report = sweeper.run_once(&rt).await;
        assert!(report.lease_lost && sweeper.ends_after(&report));
    }
}
