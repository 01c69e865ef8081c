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
use crate::providers::{self, ProviderError, SpawnOptions};
use crate::store::{ControlRequest, StoreError};

/// Why an agent could not be resumed; its `to_string` closes the resume request.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error("the resume request carries no answers")]
    NoAnswers,
    #[error("the agent has no session to resume")]
    NoSession,
    #[error("the agent's worktree is not on this node")]
    NotOnThisNode,
    #[error("agent '{0}' is no longer waiting for input")]
    NotWaiting(String),
    #[error("the agent was taken over while resuming")]
    TakenOver,
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Provider(#[from] ProviderError),
    /// The resumed process did not start (the agent is finished with this reason).
    #[error("{0}")]
    Start(#[source] StartError),
}

/// Starts the resumed run. Ok when the agent runs again (its run closes the request); an
/// error says why it could not.
pub async fn resume(rt: &Arc<Runtime>, control: &ControlRequest) -> Result<(), ResumeError> {
    let store = &rt.fleet.store;
    let answers: BTreeMap<String, String> = control
        .payload
        .get("answers")
        .cloned()
        .and_then(|a| serde_json::from_value(a).ok())
        .ok_or(ResumeError::NoAnswers)?;
    let agent = store.agent_by_id(control.agent_id).await?;
    let provider = rt.fleet.providers.get(&agent.provider)?;
    let session = agent.session_id.clone().ok_or(ResumeError::NoSession)?;
    let opts = SpawnOptions {
        mode: agent.mode,
        model: agent.model.clone(),
    };
    let args = provider.resume_args(&session, &opts)?;
    let workdir = agent
        .workdir
        .clone()
        .map(PathBuf::from)
        .filter(|w| w.exists())
        .ok_or(ResumeError::NotOnThisNode)?;
    let project = store.project(&agent.project).await?;
    // A resumed agent runs in a slot like any other.
    let slot = rt.slots.acquire().await;
    if !store.claim_resume(agent.id, &rt.owner, &rt.node_id).await? {
        return Err(ResumeError::NotWaiting(agent.name));
    }
    let agent = store.agent_by_id(agent.id).await?;
    let mut log = rt.open_event_log(agent.id).await?;
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
        Err(StartError::Fenced) => Err(ResumeError::TakenOver),
        Err(failed) => {
            let reason = failed.to_string();
            agent_task::finish(rt, &agent, agent_task::failed(reason), &mut log).await;
            Err(ResumeError::Start(failed))
        }
    }
}
