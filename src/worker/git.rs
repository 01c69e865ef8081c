//! A worker's git work on a project, one operation at a time per project mirror: preparing
//! a new agent's checkout, a repository of its own borrowing the mirror's objects (fetching
//! the mirror unless a fetch that began after the spawn's delivery already did), and
//! publishing an agent's branch: committing what it left, then pushing from the worker's
//! own repository to the project's remote URL from the store, never through anything the
//! agent could have configured.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use uuid::Uuid;

use super::Runtime;
use crate::domain::Project;
use crate::workspace::Published;

/// What a worker knows of a project's mirror, kept under the project's git lock.
#[derive(Debug, Default)]
pub(crate) struct ProjectGit {
    /// When the last successful fetch began: it saw the remote as of then.
    fetched_from: Option<Instant>,
}

impl ProjectGit {
    /// A spawn delivered at `delivered` must see the remote as of then or later (its caller
    /// may have pushed just before asking): a fetch that began after that will do, so the
    /// spawns queued behind one fetch share it.
    fn must_fetch(&self, delivered: Instant) -> bool {
        self.fetched_from.is_none_or(|began| began < delivered)
    }
}

/// A new agent's worktree, and how long each step of making it took.
pub(crate) struct PreparedWorktree {
    pub workdir: PathBuf,
    /// Whether this spawn fetched (false: a fetch begun after its delivery served it).
    pub fetched: bool,
    /// Waiting for another agent's git work on the same project.
    pub lock_wait: Duration,
    /// Fetching the project's mirror from its remote.
    pub fetch: Duration,
    /// Creating the worktree and checking out its files.
    pub checkout: Duration,
}

impl Runtime {
    pub(super) async fn project_lock(&self, project: Uuid) -> Arc<Mutex<ProjectGit>> {
        self.project_locks
            .lock()
            .await
            .entry(project)
            .or_default()
            .clone()
    }

    /// Fetches the project's mirror and adds the agent's worktree (blocking git work off
    /// the async threads).
    pub(super) async fn prepare_worktree(
        &self,
        project: &Project,
        name: &str,
        branch: &str,
        delivered: Instant,
    ) -> Result<PreparedWorktree, String> {
        let waited = Instant::now();
        let lock = self.project_lock(project.id).await;
        let mut git = lock.lock().await;
        let waited = waited.elapsed();
        let fetch_now = git.must_fetch(delivered);
        let ws = self.workspace.clone();
        let (key, remote, name, branch, base) = (
            project.id.to_string(),
            project.remote_url.clone(),
            name.to_string(),
            branch.to_string(),
            project.default_branch.clone(),
        );
        let span = tracing::Span::current();
        let fetch_began = Instant::now();
        let prepared = tokio::task::spawn_blocking(move || {
            let _in = span.enter();
            let step = Instant::now();
            if fetch_now {
                tracing::info_span!("mirror fetch")
                    .in_scope(|| ws.sync_mirror_branch(&key, &remote, &base))?;
            }
            let fetch = step.elapsed();
            let step = Instant::now();
            let workdir = tracing::info_span!("worktree create")
                .in_scope(|| ws.create_worktree(&key, &name, &branch, &base))?;
            Ok(PreparedWorktree {
                workdir,
                fetched: fetch_now,
                lock_wait: waited,
                fetch,
                checkout: step.elapsed(),
            })
        })
        .await
        .map_err(|e| format!("worktree task failed: {e}"))?
        .map_err(|e: crate::workspace::WorkspaceError| e.to_string())?;
        if prepared.fetched {
            git.fetched_from = Some(fetch_began);
        }
        Ok(prepared)
    }

    /// Commits what the agent left uncommitted and pushes its branch to the project's
    /// remote; `None` when the branch had nothing beyond its base, so nothing was pushed.
    pub(super) async fn publish_branch(
        &self,
        project: &Project,
        name: &str,
        branch: &str,
    ) -> Result<Option<Published>, String> {
        let lock = self.project_lock(project.id).await;
        let _held = lock.lock().await;
        let ws = self.workspace.clone();
        let (key, name, branch, remote) = (
            project.id.to_string(),
            name.to_string(),
            branch.to_string(),
            project.remote_url.clone(),
        );
        let message = format!("agentfleet: work of agent {name}");
        tokio::task::spawn_blocking(move || {
            ws.commit_all(&name, &message)?;
            ws.publish_branch(&key, &name, &branch, &remote)
        })
        .await
        .map_err(|e| format!("push task failed: {e}"))?
        .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::ProjectGit;

    #[test]
    fn a_spawn_reuses_only_a_fetch_begun_after_its_delivery() {
        let mut git = ProjectGit::default();
        let delivered = Instant::now();
        assert!(git.must_fetch(delivered), "never fetched");
        git.fetched_from = Some(delivered - Duration::from_millis(1));
        assert!(
            git.must_fetch(delivered),
            "the fetch began before it was delivered"
        );
        git.fetched_from = Some(delivered);
        assert!(!git.must_fetch(delivered));
        git.fetched_from = Some(delivered + Duration::from_millis(5));
        assert!(
            !git.must_fetch(delivered),
            "a later fetch saw a newer remote"
        );
    }
}
