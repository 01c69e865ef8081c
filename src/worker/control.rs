//! Control requests routed to this worker: stop, delete and resume for the agents it owns,
//! and delete and resume for agents on its node that no live worker owns. The request rows in the store
//! are the durable record; the worker polls for its own.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Runtime;
use crate::store::{ControlKind, ControlRequest};
use crate::workspace;

const POLL: Duration = Duration::from_millis(300);

pub async fn run(rt: Arc<Runtime>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let controls = match rt
            .fleet
            .store
            .take_controls(&rt.owner.worker_id, &rt.node_id)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read control requests");
                continue;
            }
        };
        for control in controls {
            let rt = rt.clone();
            // Each control runs on its own so a slow stop does not hold up the others.
            rt.agent_tasks
                .clone()
                .spawn(async move { handle(&rt, control).await });
        }
    }
}

async fn handle(rt: &Arc<Runtime>, control: ControlRequest) {
    let store = &rt.fleet.store;
    let result = match control.kind {
        ControlKind::Stop => stop(rt, &control).await,
        ControlKind::Delete => delete(rt, &control).await,
        ControlKind::Resume => match super::resume::resume(rt, &control).await {
            // The resumed run closes its request when it ends.
            Ok(()) => return,
            Err(e) => Err(e),
        },
    };
    tracing::info!(agent_id = %control.agent_id, kind = control.kind.as_str(), ok = result.is_ok(), "control request handled");
    let error = result.err();
    if let Err(e) = store.complete_request(control.id, error.as_deref()).await {
        tracing::warn!(error = %e, "cannot complete control request");
    }
}

async fn stop(rt: &Arc<Runtime>, control: &ControlRequest) -> Result<(), String> {
    if rt.stop_agent(control.agent_id) {
        wait_untracked(rt, control.agent_id).await;
        return Ok(());
    }
    Err("the agent is not running on its worker".into())
}

async fn wait_untracked(rt: &Runtime, agent_id: uuid::Uuid) {
    let deadline =
        tokio::time::Instant::now() + rt.fleet.settings.worker.stop_grace + Duration::from_secs(10);
    while rt.agents.lock().is_ok_and(|a| a.contains_key(&agent_id))
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn delete(rt: &Arc<Runtime>, control: &ControlRequest) -> Result<(), String> {
    let store = &rt.fleet.store;
    if rt.stop_agent(control.agent_id) {
        wait_untracked(rt, control.agent_id).await;
    }
    let agent = store
        .agent(&control.agent_id.to_string())
        .await
        .map_err(|e| e.to_string())?;
    let project = store
        .project(&agent.project)
        .await
        .map_err(|e| e.to_string())?;
    let remote_branch = control
        .payload
        .get("remote_branch")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let ws = rt.workspace.clone();
    let (name, branch, url) = (
        agent.name.clone(),
        agent.branch.clone(),
        project.remote_url.clone(),
    );
    let lock = rt.project_lock(project.id).await;
    let _held = lock.lock().await;
    tokio::task::spawn_blocking(move || {
        ws.remove_agent(&name, &branch)?;
        if remote_branch {
            workspace::delete_remote_branch(&url, &branch)?;
        }
        Ok::<_, workspace::WorkspaceError>(())
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    store
        .delete_agent_rows(agent.id)
        .await
        .map_err(|e| e.to_string())
}
