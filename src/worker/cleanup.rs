//! Orphan cleanup: worktrees, local branches and run files under this worker's workspace
//! that belong to no agent in the store (deleted while their node's worker was away, or
//! left by a crash mid-delete). A maintenance service (`service.rs`) that runs at start and
//! every `worker.cleanup_interval`, and on demand (`agentfleet cleanup`). Agents that ended
//! are kept: they may be resumed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::runtime::Runtime;
use super::service::Service;
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
    /// The blocking task listing or removing files did not finish (it panicked).
    #[error("cleanup task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
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
            .map_err(CleanupError::Task)??
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
        .map_err(CleanupError::Task)??;
    }
    Ok(CleanupReport { removed: orphans })
}

/// The cleanup service's configuration: how often it looks for leftovers.
pub(super) struct Cleanup {
    pub interval: Duration,
}

impl Cleanup {
    pub(super) fn from_settings(settings: &crate::config::Settings) -> Self {
        Self {
            interval: settings.worker.cleanup_interval,
        }
    }
}

impl Service for Cleanup {
    type Report = Result<CleanupReport, CleanupError>;
    const NAME: &'static str = "cleanup";

    fn interval(&self) -> Duration {
        self.interval
    }

    async fn run_once(&self, rt: &Arc<Runtime>) -> Self::Report {
        let cleaned = cleanup_workspace(rt.git.root(), &rt.fleet.store, false).await;
        match &cleaned {
            Ok(report) if !report.removed.is_empty() => {
                tracing::info!(removed = ?report.removed, "removed orphaned agent files")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cleanup failed"),
        }
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::worker::runtime;

    #[tokio::test]
    async fn a_step_removes_the_files_of_agents_the_store_does_not_know() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime::for_test(dir.path()).await;
        let ghost = rt.git.agent_dir("ghost");
        std::fs::create_dir_all(ghost.join("run")).unwrap();
        let cleanup = Cleanup {
            interval: Duration::from_secs(3600),
        };
        let report = cleanup.run_once(&rt).await.unwrap();
        assert_eq!(report.removed, vec!["ghost".to_owned()]);
        assert!(!ghost.exists());
        let again = cleanup.run_once(&rt).await.unwrap();
        assert!(again.removed.is_empty(), "{again:?}");
    }
}
