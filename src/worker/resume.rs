//! Resuming an agent that waits for input: the answers become a prompt for the provider's
//! resume command, run with the stored session id in the agent's own worktree on this node,
//! under the same event sequence as its first run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::agent_task;
use super::launch::{self, Launch, StartError};
use super::runtime::Runtime;
use crate::providers::{self, SpawnOptions};
use crate::store::ControlRequest;

/// Starts the resumed run. Ok(true) when the agent runs again (its run closes the request);
/// an error says why it could not.
pub async fn resume(rt: &Arc<Runtime>, control: &ControlRequest) -> Result<(), String> {
    let store = &rt.fleet.store;
    let answers: BTreeMap<String, String> = control
        .payload
        .get("answers")
        .cloned()
        .and_then(|a| serde_json::from_value(a).ok())
        .ok_or("the resume request carries no answers")?;
    let agent = store
        .agent(&control.agent_id.to_string())
        .await
        .map_err(|e| e.to_string())?;
    let provider = providers::provider(&agent.provider).map_err(|e| e.to_string())?;
    let session = agent
        .session_id
        .clone()
        .ok_or("the agent has no session to resume")?;
    let opts = SpawnOptions {
        mode: Some(agent.mode.as_str().to_string()),
        ..Default::default()
    };
    let args = provider
        .resume_args(&session, &opts)
        .map_err(|e| e.to_string())?;
    let workdir = agent
        .workdir
        .clone()
        .map(PathBuf::from)
        .filter(|w| w.exists())
        .ok_or("the agent's worktree is not on this node")?;
    let project = store
        .project(&agent.project)
        .await
        .map_err(|e| e.to_string())?;
    // A resumed agent runs in a slot like any other.
    let slot = rt.slots.acquire().await;
    if !store
        .claim_resume(agent.id, &rt.owner, &rt.node_id)
        .await
        .map_err(|e| e.to_string())?
    {
        return Err(format!(
            "agent '{}' is no longer waiting for input",
            agent.name
        ));
    }
    let agent = store
        .agent(&agent.id.to_string())
        .await
        .map_err(|e| e.to_string())?;
    let mut log = rt
        .open_event_log(agent.id)
        .await
        .map_err(|e| e.to_string())?;
    log.push(
        "agent.resumed",
        serde_json::json!({"kind": "agent.resumed", "session_id": session,
                           "answers": answers.len(), "worker_id": rt.owner.worker_id}),
    );
    let prompt = providers::format_answers(&answers);
    match launch::start(
        rt,
        Launch {
            agent: &agent,
            provider: provider.as_ref(),
            args,
            prompt: &prompt,
            project,
            workdir,
        },
        &mut log,
    )
    .await
    {
        Ok(started) => {
            tracing::info!(agent_id = %agent.id, %session, "agent resumed");
            agent_task::spawn(rt.clone(), agent, started, log, Some(slot), Duration::ZERO);
            Ok(())
        }
        Err(StartError::Fenced) => Err("the agent was taken over while resuming".into()),
        Err(StartError::Failed(reason)) => {
            agent_task::finish(rt, &agent, agent_task::failed(reason.clone()), &mut log).await;
            Err(reason)
        }
    }
}
