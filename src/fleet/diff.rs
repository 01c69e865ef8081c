//! An agent's work as a diff, for `diff` and `GET /v1/agents/{id}/diff`: its pushed commit
//! against the commit its checkout started from, read from a cache of the project's remote
//! where the caller runs (the worker's checkout may be on another machine, or gone).
//!
//! An agent with a pushed commit answers its diff (a resumed agent's last push while it
//! runs again). One whose run ended without pushing (it changed nothing) answers an empty
//! diff; one with nothing pushed yet (pending, starting, running) is a `Conflict`.

use std::path::PathBuf;

use uuid::Uuid;

use super::{Fleet, FleetError};
use crate::domain::{Agent, AgentStatus};
use crate::workspace::{ChangeSet, DiffTarget, Workspace, WorkspaceError};

/// An agent's diff as `diff` and `GET /v1/agents/{id}/diff` show it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AgentDiff {
    pub agent_id: Uuid,
    pub name: String,
    /// The remote branch the work was pushed to.
    pub branch: String,
    /// The commit the agent's checkout started from.
    pub base_commit: Option<String>,
    /// The commit the diff ends at; `None` when the agent ended without pushing (the diff
    /// is then empty).
    pub pushed_commit: Option<String>,
    #[serde(flatten)]
    pub changes: ChangeSet,
}

impl Fleet {
    /// The diff of agent `agent_ref`'s pushed work (`with_patch`: with the patch, capped at
    /// `api.diff_max_bytes`; else the files and counts only).
    pub async fn agent_diff(
        &self,
        agent_ref: &str,
        with_patch: bool,
    ) -> Result<AgentDiff, FleetError> {
        let agent = self.store.agent(agent_ref).await?;
        let (base, head) = match (&agent.base_commit, &agent.pushed_commit) {
            (Some(base), Some(head)) => (base.clone(), head.clone()),
            (Some(_), None) if run_ended(agent.status) => {
                let changes = ChangeSet {
                    patch: with_patch.then(String::new),
                    ..ChangeSet::default()
                };
                return Ok(diff_of(agent, changes));
            }
            _ => return Err(FleetError::Conflict(not_pushed(&agent))),
        };
        let project = self.store.project(&agent.project).await?;
        let cache = Workspace::new(self.diff_cache_dir());
        let (branch, max_patch_bytes) = (agent.branch.clone(), self.settings.api.diff_max_bytes);
        let span = tracing::Span::current();
        let changes = tokio::task::spawn_blocking(move || {
            let _in = span.enter();
            cache.branch_diff(&DiffTarget {
                project_key: &project.id.to_string(),
                remote: &project.remote_url,
                branch: &branch,
                base: &base,
                head: &head,
                max_patch_bytes,
                with_patch,
            })
        })
        .await
        .map_err(|e| FleetError::Unavailable(format!("the diff task failed: {e}")))?
        .map_err(|e| match e {
            WorkspaceError::CommitMissing { .. } => {
                FleetError::Conflict(format!("cannot show agent {}'s diff: {e}", agent.name))
            }
            e => FleetError::Unavailable(format!("cannot show agent {}'s diff: {e}", agent.name)),
        })?;
        Ok(diff_of(agent, changes))
    }

    /// `api.diff_cache_dir`, or `<worker.workspace_root>/diff-cache` when it is empty.
    fn diff_cache_dir(&self) -> PathBuf {
        let configured = &self.settings.api.diff_cache_dir;
        if configured.as_os_str().is_empty() {
            self.settings.worker.workspace_root.join("diff-cache")
        } else {
            configured.clone()
        }
    }
}

/// Whether the agent's last run ended (and so published what it had).
fn run_ended(status: AgentStatus) -> bool {
    status.is_final() || status == AgentStatus::WaitingForInput
}

fn not_pushed(agent: &Agent) -> String {
    if agent.base_commit.is_none() && run_ended(agent.status) {
        format!(
            "agent {} has no diff: it ended ({}) without a checkout recorded",
            agent.name, agent.status
        )
    } else {
        format!(
            "agent {} has pushed nothing yet (it is {}); its diff is there once a run of it ends",
            agent.name, agent.status
        )
    }
}

fn diff_of(agent: Agent, changes: ChangeSet) -> AgentDiff {
    AgentDiff {
        agent_id: agent.id,
        name: agent.name,
        branch: agent.branch,
        base_commit: agent.base_commit,
        pushed_commit: agent.pushed_commit,
        changes,
    }
}
