//! Control requests routed to this worker: stop, delete and resume for the agents it owns
//! (its own control queue), and delete, resume, dismiss and cleanup for agents on its node
//! that no live worker owns (the node's queue). The request rows in the store are the durable record;
//! the queue pushes each request here, and this worker claims the row before it acts, so a
//! duplicate delivery does nothing. What the queue lost is sent again by the re-dispatcher
//! (`redispatch.rs`).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::git::GitError;
use super::resume::ResumeError;
use super::runtime::Runtime;
use crate::domain::{Agent, AgentStatus, ControlArgs, StoredPayload};
use crate::fleet::CHECKOUT_REMOVED_EVENT;
use crate::queue::{ControlConsumer, ControlJob, JobHandler};
use crate::store::{ControlKind, ControlRequest, StoreError};
use crate::telemetry;

/// Consumes this worker's control queues until `stop`; a consumer that fails (Redis gone)
/// is started again under a new name.
pub async fn run(rt: Arc<Runtime>, stop: CancellationToken) {
    let handler = {
        let rt = rt.clone();
        JobHandler::new(move |job| handle_job(rt.clone(), job))
    };
    let mut generation = 0u32;
    while !stop.is_cancelled() {
        generation += 1;
        let consumer = format!("{}-control-{generation}", rt.owner.worker_id);
        let targets = ControlConsumer {
            worker_id: &rt.owner.worker_id,
            node_id: &rt.node_id,
            fallback_poll: rt.fleet.settings.worker.control_poll_interval,
        };
        if let Err(e) = rt
            .fleet
            .queue
            .consume_controls(&consumer, targets, stop.clone(), handler.clone())
            .await
        {
            tracing::warn!(consumer = %consumer, error = %e, "control consumer failed; restarting");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// A delivered control job: claim its request, then act, in a CONSUMER span that
/// continues the caller's trace.
async fn handle_job(rt: Arc<Runtime>, job: serde_json::Value) {
    let job: ControlJob = match serde_json::from_value(job) {
        Ok(job) => job,
        Err(e) => {
            tracing::warn!(error = %e, "malformed control job ignored");
            return;
        }
    };
    let span = telemetry::consumer_span(
        rt.fleet.queue.messaging_system(),
        "control",
        job.request_id,
        &job.trace_context,
        &rt.owner.worker_id,
    );
    let claimed = rt
        .fleet
        .store
        .claim_control(job.request_id, &rt.owner.worker_id, &rt.node_id)
        .await;
    let control = match claimed {
        Ok(Some(control)) => control,
        // A duplicate delivery, or handled already: nothing to do.
        Ok(None) => return,
        Err(e) => {
            // Still pending: the fallback sends it again.
            tracing::warn!(request_id = %job.request_id, error = %e, "cannot claim control request");
            return;
        }
    };
    if job.trace_context.is_empty() {
        // Sent again from the store: the trace continues from the recorded context.
        let stored = StoredPayload::<ControlArgs>::from_json(control.payload.clone())
            .map(|p| p.trace_context)
            .unwrap_or_default();
        telemetry::set_parent(&span, stored.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    }
    tracing::Instrument::instrument(handle(&rt, control), span).await;
}

/// After this worker adopted `agents` (their worker died), the requests still pending
/// about them are this worker's now: it acts on them at once.
pub async fn after_adoption(rt: &Arc<Runtime>, agents: &[Uuid]) {
    if agents.is_empty() {
        return;
    }
    let ids = match rt
        .fleet
        .store
        .retarget_controls(agents, &rt.owner.worker_id)
        .await
    {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(error = %e, "cannot take over the adopted agents' control requests");
            return;
        }
    };
    for request_id in ids {
        let job = ControlJob {
            request_id,
            trace_context: Default::default(),
        };
        if let Ok(job) = serde_json::to_value(job) {
            let rt = rt.clone();
            rt.agent_tasks.clone().spawn(handle_job(rt, job));
        }
    }
}

async fn handle(rt: &Arc<Runtime>, control: ControlRequest) {
    // The act itself (a stop: until the process group took its SIGTERM and ended), under
    // the CONSUMER span, so the caller's trace runs to it.
    let act = tracing::info_span!(
        "control",
        otel.name = %format!("agent.{}", control.kind.as_str()),
        agentfleet.agent.id = %control.agent_id,
        request_id = %control.id,
    );
    tracing::Instrument::instrument(act_on(rt, control), act).await;
}

/// Why a control request failed; its `to_string` closes the request.
#[derive(Debug, thiserror::Error)]
enum ControlError {
    #[error("the agent is not running on its worker")]
    NotRunning,
    #[error("agent '{name}' is {status}: its checkout is in use and stays")]
    CheckoutInUse { name: String, status: AgentStatus },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Files(#[from] GitError),
    #[error("{0}")]
    Resume(#[from] ResumeError),
}

async fn act_on(rt: &Arc<Runtime>, control: ControlRequest) {
    let store = &rt.fleet.store;
    let result = match control.kind {
        ControlKind::Stop => stop(rt, &control).await,
        ControlKind::Delete => delete(rt, &control).await,
        ControlKind::Dismiss | ControlKind::Cleanup => free_checkout(rt, &control).await,
        ControlKind::Resume => match super::resume::resume(rt, &control).await {
            // The resumed run closes its request when it ends.
            Ok(()) => return,
            Err(e) => Err(e.into()),
        },
    };
    tracing::info!(agent_id = %control.agent_id, kind = control.kind.as_str(), ok = result.is_ok(), "control request handled");
    let error = result.err().map(|e| e.to_string());
    if let Err(e) = store.complete_request(control.id, error.as_deref()).await {
        tracing::warn!(error = %e, "cannot complete control request");
    }
}

async fn stop(rt: &Arc<Runtime>, control: &ControlRequest) -> Result<(), ControlError> {
    if stop_tracked(rt, control.agent_id).await {
        wait_untracked(rt, control.agent_id).await;
        return Ok(());
    }
    Err(ControlError::NotRunning)
}

/// Stops the agent's supervisor; an agent this worker has claimed but not yet started is
/// supervised only once its process runs, so that moment is waited for (a stop or delete
/// sent between the claim and the start would otherwise miss it).
async fn stop_tracked(rt: &Runtime, agent_id: uuid::Uuid) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if rt.stop_agent(agent_id) {
            return true;
        }
        let starting_here = rt.fleet.store.agent_by_id(agent_id).await.is_ok_and(|a| {
            a.status == AgentStatus::Starting
                && a.worker_id.as_deref() == Some(rt.owner.worker_id.as_str())
        });
        if !starting_here || tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_untracked(rt: &Runtime, agent_id: uuid::Uuid) {
    let deadline =
        tokio::time::Instant::now() + rt.fleet.settings.worker.stop_grace + Duration::from_secs(10);
    while rt.supervises(agent_id) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Dismiss and cleanup: an ended agent's checkout and run files go (its work is on its
/// pushed branch; its record and events stay). An agent that runs or waits keeps them.
async fn free_checkout(rt: &Arc<Runtime>, control: &ControlRequest) -> Result<(), ControlError> {
    let store = &rt.fleet.store;
    let agent = store.agent_by_id(control.agent_id).await?;
    if !agent.status.is_final() {
        return Err(ControlError::CheckoutInUse {
            name: agent.name,
            status: agent.status,
        });
    }
    remove_files(rt, &agent, false).await?;
    let data = serde_json::json!({
        "kind": CHECKOUT_REMOVED_EVENT, "request": control.kind.as_str(),
        "node": rt.node_id, "worker_id": rt.owner.worker_id,
    });
    rt.fleet.record_unowned_event(agent.id, &data).await;
    Ok(())
}

/// Removes the agent's files on this node (and its remote branch with `remote_branch`).
async fn remove_files(
    rt: &Runtime,
    agent: &Agent,
    remote_branch: bool,
) -> Result<(), ControlError> {
    let project = rt.fleet.store.project(&agent.project).await?;
    Ok(rt.git.remove_agent(&project, agent, remote_branch).await?)
}

async fn delete(rt: &Arc<Runtime>, control: &ControlRequest) -> Result<(), ControlError> {
    let store = &rt.fleet.store;
    if stop_tracked(rt, control.agent_id).await {
        wait_untracked(rt, control.agent_id).await;
    }
    let agent = store.agent_by_id(control.agent_id).await?;
    let remote_branch = control
        .payload
        .get("remote_branch")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    remove_files(rt, &agent, remote_branch).await?;
    Ok(store.delete_agent_rows(agent.id).await?)
}
