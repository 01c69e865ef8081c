//! Two maintenance services. The sweeper reconciles dead workers: every worker runs it,
//! the store lets exactly one act on a given dead worker; a dead worker on this node has
//! its agents adopted here, one on another node has them re-queued or marked crashed. The
//! re-dispatcher (`control::run_redispatch`) sends again the requests the queue seems to have
//! lost.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::runtime::Runtime;
use super::{agent_task, node_scan};
use crate::events::STATUS_EVENT;
use crate::process;
use crate::queue::SpawnJob;
use crate::store::{ReconcilePolicy, Reconciled};

pub async fn run(rt: Arc<Runtime>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(rt.fleet.settings.worker.sweep_interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if rt.lease_lost.is_cancelled() {
            return;
        }
        sweep_once(&rt, false).await;
    }
}

/// Reconciles every dead worker there is right now. At start-up (and whenever a worker of
/// this node is found gone) it first stops this node's processes whose agents are no longer
/// owned here, so nothing it re-queues can run twice.
pub async fn sweep_once(rt: &Arc<Runtime>, starting_up: bool) {
    let store = &rt.fleet.store;
    // Leases that ran out while the store was away prove nothing about their workers.
    if !rt.liveness.may_judge_peers() {
        tracing::debug!("sweep: the store was away less than a lease ago; judging nobody yet");
        return;
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
            return;
        }
    };
    if starting_up || !known_dead.is_empty() {
        node_scan::kill_unowned(rt, &known_dead).await;
    }
    let policy = ReconcilePolicy {
        max_attempts: rt.fleet.settings.queue.max_attempts,
        orphan_grace: rt.fleet.settings.worker.orphan_grace + crate::sandbox::DEADMAN_KILL_MARGIN,
    };
    loop {
        match store
            .reconcile_one(&rt.owner, &rt.node_id, &known_dead, &policy)
            .await
        {
            Ok(Some(done)) => apply(rt, done).await,
            Ok(None) => break,
            Err(e) => {
                rt.liveness.store_failed();
                tracing::warn!(error = %e, "sweep failed");
                break;
            }
        }
    }
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
        redispatch(rt).await;
    }
}

async fn redispatch(rt: &Runtime) {
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

/// Sends the jobs of these recorded spawn requests again.
pub(super) async fn send_spawns(rt: &Runtime, due: Vec<uuid::Uuid>) {
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
            Ok(()) => tracing::info!(%request_id, "request dispatched again"),
            Err(e) => tracing::warn!(%request_id, error = %e, "re-dispatch failed"),
        }
    }
}
