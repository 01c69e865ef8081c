//! Reads for `get` and `GET /v1/agents/{id}`: an agent with the prompt it was spawned with
//! and the control requests about it that no worker has acted on yet.

use uuid::Uuid;

use super::{Fleet, FleetError};
use crate::domain::Agent;

/// A control request about an agent not acted on yet, as `get` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PendingRequest {
    pub id: Uuid,
    pub kind: String,
    /// `worker` (sent to its owner) or `node` (any worker on the agent's node).
    pub sent_to: &'static str,
    pub target: Option<String>,
    pub requested_at: chrono::DateTime<chrono::Utc>,
    /// No live worker can take it now: it waits for one to start on the node.
    pub waiting_for_worker: bool,
    /// When a waiting resume fails (`worker.resume_timeout`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// One agent as `get` and `GET /v1/agents/{id}` show it: its record, the prompt it was
/// spawned with, and the control requests about it that no worker has acted on yet.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AgentDetail {
    #[serde(flatten)]
    pub agent: Agent,
    pub prompt: Option<String>,
    pub pending_requests: Vec<PendingRequest>,
}

impl Fleet {
    /// The agent by id or name, with its prompt and pending requests.
    pub async fn agent_detail(&self, agent_ref: &str) -> Result<AgentDetail, FleetError> {
        let agent = self.store.agent(agent_ref).await?;
        let prompt = self.store.spawn_prompt(agent.id).await?;
        let pending_requests = self.pending_requests(&agent).await?;
        Ok(AgentDetail {
            agent,
            prompt,
            pending_requests,
        })
    }

    /// The agent's control requests that no worker has acted on yet, and whether each
    /// waits for a worker to start on the agent's node.
    pub async fn pending_requests(&self, agent: &Agent) -> Result<Vec<PendingRequest>, FleetError> {
        let pending = self.store.agent_controls(agent.id).await?;
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        let workers = self.store.list_workers().await?;
        let timeout = chrono::TimeDelta::from_std(self.settings.worker.resume_timeout)
            .unwrap_or(chrono::TimeDelta::MAX);
        Ok(pending
            .into_iter()
            .map(|p| {
                let waiting = match &p.target_worker {
                    Some(worker) => !workers
                        .iter()
                        .any(|w| &w.id == worker && w.status == "alive"),
                    None => !workers
                        .iter()
                        .any(|w| Some(&w.node_id) == agent.node_id.as_ref() && w.status == "alive"),
                };
                PendingRequest {
                    id: p.id,
                    sent_to: if p.target_worker.is_some() {
                        "worker"
                    } else {
                        "node"
                    },
                    target: p.target_worker.or_else(|| agent.node_id.clone()),
                    expires_at: (p.kind == "resume")
                        .then(|| p.requested_at.checked_add_signed(timeout))
                        .flatten(),
                    kind: p.kind,
                    requested_at: p.requested_at,
                    waiting_for_worker: waiting,
                }
            })
            .collect())
    }
}
