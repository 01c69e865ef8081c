//! Orphan cleanup: worktrees, local branches and run files under this worker's workspace
//! that belong to no agent in the store (deleted while their node's worker was away, or
//! left by a crash mid-delete). Runs at start and every `worker.cleanup_interval`, and on
//! demand (`agentfleet cleanup`). Agents that ended are kept: they may be resumed.

use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::runtime::Runtime;
use crate::store::{Store, StoreError};
use crate::workspace::{Workspace, WorkspaceError};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CleanupReport {
    /// Agent names whose leftovers were (or, in a dry run, would be) removed.
    pub removed: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    #[error("cleanup task failed: {0}")]
    Task(String),
}

/// Removes what belongs to no agent under `root`; with `dry_run`, only reports it.
pub async fn cleanup_workspace(
    root: &Path,
    store: &Store,
    dry_run: bool,
) -> Result<CleanupReport, CleanupError> {
    let ws = Workspace::new(root.to_path_buf());
    let names = {
        let ws = ws.clone();
        tokio::task::spawn_blocking(move || ws.agent_names())
            .await
            .map_err(|e| CleanupError::Task(e.to_string()))??
    };
    let names: Vec<String> = names.into_iter().collect();
    let known = store.existing_agent_names(&names).await?;
    let orphans: Vec<String> = names.into_iter().filter(|n| !known.contains(n)).collect();
    if !dry_run {
        let list = orphans.clone();
        tokio::task::spawn_blocking(move || {
            for name in &list {
                ws.remove_agent(name, &format!("agent/{name}"))?;
            }
            Ok::<_, WorkspaceError>(())
        })
        .await
        .map_err(|e| CleanupError::Task(e.to_string()))??;
    }
    Ok(CleanupReport { removed: orphans })
}

pub async fn run(rt: Arc<Runtime>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(rt.fleet.settings.worker.cleanup_interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Serialised with git work on the mirrors: take every project lock in turn.
        match cleanup_workspace(rt.git.root(), &rt.fleet.store, false).await {
            Ok(report) if !report.removed.is_empty() => {
                tracing::info!(removed = ?report.removed, "removed orphaned agent files")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cleanup failed"),
        }
    }
}
