//! A worker's git work on a project, one operation at a time per project mirror
//! ([`WorkerGit`], which owns the workspace and the per-project locks): preparing
//! a new agent's checkout, a repository of its own borrowing the mirror's objects (fetching
//! the mirror unless a fetch that began after the spawn's delivery already did), and
//! publishing an agent's branch: committing what it left, then pushing from the worker's
//! own repository to the project's remote URL from the store, never through anything the
//! agent could have configured.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use tokio::task::JoinError;
use uuid::Uuid;

use crate::domain::{Agent, Project};
use crate::store::{Owner, Store, StoreError};
use crate::workspace::{Published, Workspace, WorkspaceError};

/// Why git work on an agent's files failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GitError {
    #[error("{0}")]
    Workspace(#[from] WorkspaceError),
    /// The blocking task preparing a worktree did not finish (it panicked).
    #[error("worktree task failed: {0}")]
    WorktreeTask(#[source] JoinError),
    /// The blocking task removing an agent's files did not finish (it panicked).
    #[error("{0}")]
    RemoveTask(#[source] JoinError),
}

/// Why an agent's branch was not pushed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PushError {
    #[error("{0}")]
    Workspace(#[from] WorkspaceError),
    /// The blocking task committing and pushing did not finish (it panicked).
    #[error("the push task failed")]
    Task(#[source] JoinError),
    /// The remote branch is taken, and the agent is no longer this worker's to rename.
    #[error("{taken}; cannot move it to branch '{own}': the agent is no longer this worker's")]
    RenameFenced {
        #[source]
        taken: WorkspaceError,
        own: String,
    },
    /// The remote branch is taken, and the store did not record the agent's own branch.
    #[error("{taken}; cannot move it to branch '{own}': {source}")]
    RenameFailed {
        taken: WorkspaceError,
        own: String,
        #[source]
        source: StoreError,
    },
}

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
    /// The commit the checkout started from.
    pub base_commit: String,
    /// Whether this spawn fetched (false: a fetch begun after its delivery served it).
    pub fetched: bool,
    /// Waiting for another agent's git work on the same project.
    pub lock_wait: Duration,
    /// Fetching the project's mirror from its remote.
    pub fetch: Duration,
    /// Creating the worktree and checking out its files.
    pub checkout: Duration,
}

/// This worker's workspace as git sees it: the project mirrors and the agents' folders
/// under one root, with one git operation at a time per project mirror. The runtime holds
/// one; every git operation of the worker goes through it.
pub(crate) struct WorkerGit {
    workspace: Arc<Workspace>,
    root: PathBuf,
    /// One git operation at a time per project mirror, and when its last fetch began.
    projects: Mutex<HashMap<Uuid, Arc<Mutex<ProjectGit>>>>,
}

impl WorkerGit {
    /// The workspace under `root` (an absolute path).
    pub(super) fn new(root: PathBuf) -> Self {
        Self {
            workspace: Arc::new(Workspace::new(root.clone())),
            root,
            projects: Mutex::default(),
        }
    }

    /// The workspace's root folder.
    pub(super) fn root(&self) -> &Path {
        &self.root
    }

    /// The agent's folder: its checkout, repository and run files.
    pub(super) fn agent_dir(&self, name: &str) -> PathBuf {
        self.root.join("agents").join(name)
    }

    /// The agent's own repository (its checkout's git dir).
    pub(super) fn agent_git_dir(&self, name: &str) -> PathBuf {
        self.workspace.agent_git_dir(name)
    }

    /// The object store of the project's mirror, which agents' repositories borrow from.
    pub(super) fn mirror_objects(&self, project: &Project) -> PathBuf {
        self.workspace.mirror_objects(&project.id.to_string())
    }

    async fn project_lock(&self, project: Uuid) -> Arc<Mutex<ProjectGit>> {
        self.projects
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
    ) -> Result<PreparedWorktree, GitError> {
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
            // Read back from the layout: a redelivered job finds the checkout made earlier.
            let base_commit = ws.agent_base_commit(&name)?;
            Ok::<_, WorkspaceError>(PreparedWorktree {
                workdir,
                base_commit,
                fetched: fetch_now,
                lock_wait: waited,
                fetch,
                checkout: step.elapsed(),
            })
        })
        .await
        .map_err(GitError::WorktreeTask)??;
        if prepared.fetched {
            git.fetched_from = Some(fetch_began);
        }
        Ok(prepared)
    }

    /// Commits what the agent left uncommitted and pushes its branch to the project's
    /// remote.
    ///
    /// Where the remote's branch of that name was not made by this agent (an earlier agent
    /// of the same name left it), the work goes to a branch of its own instead,
    /// `<branch>-<first 8 hex digits of its id>`, recorded on the agent before the push
    /// (fenced: a worker that no longer owns it pushes nothing), so that a later run
    /// publishes there too.
    pub(super) async fn publish_branch(
        &self,
        store: &Store,
        owner: &Owner,
        project: &Project,
        agent: &Agent,
    ) -> Publication {
        let lock = self.project_lock(project.id).await;
        let _held = lock.lock().await;
        let branch = agent.branch.clone();
        let message = format!("agentfleet: work of agent {}", agent.name);
        let first = self
            .push_as(project, &agent.name, &branch, Some(message))
            .await;
        let own = own_branch(&branch, agent.id);
        let taken = match first {
            Err(PushError::Workspace(e @ WorkspaceError::RemoteBranchTaken { .. }))
                if branch != own =>
            {
                e
            }
            first => return Publication::new(branch, None, first),
        };
        tracing::info!(agent_id = %agent.id, from = %branch, to = %own, reason = %taken,
            "the agent's branch is taken on the remote; pushing to a branch of its own");
        let recorded = store.rename_branch(agent.id, owner, &branch, &own).await;
        let refused = match recorded {
            Ok(true) => None,
            Ok(false) => Some(PushError::RenameFenced {
                taken,
                own: own.clone(),
            }),
            Err(source) => Some(PushError::RenameFailed {
                taken,
                own: own.clone(),
                source,
            }),
        };
        if let Some(refused) = refused {
            return Publication::new(branch, None, Err(refused));
        }
        let pushed = self.push_as(project, &agent.name, &own, None).await;
        Publication::new(own, Some(branch), pushed)
    }

    /// Commits what the agent left uncommitted (when given a `commit` message) and pushes
    /// its branch as `remote_branch` (blocking git work off the async threads; the caller
    /// holds the project's git lock). `Err(None)`: the task itself failed.
    async fn push_as(
        &self,
        project: &Project,
        name: &str,
        remote_branch: &str,
        commit: Option<String>,
    ) -> Result<Option<Published>, PushError> {
        let ws = self.workspace.clone();
        let (key, name, remote_branch, url) = (
            project.id.to_string(),
            name.to_owned(),
            remote_branch.to_owned(),
            project.remote_url.clone(),
        );
        let pushed = tokio::task::spawn_blocking(move || {
            if let Some(message) = commit {
                ws.commit_all(&name, &message)?;
            }
            ws.publish_branch_as(&key, &name, &remote_branch, &url)
        })
        .await;
        match pushed {
            Ok(pushed) => Ok(pushed?),
            Err(e) => {
                tracing::error!(error = %e, "push task failed");
                Err(PushError::Task(e))
            }
        }
    }
}

impl WorkerGit {
    /// Removes the agent's folder (checkout, repository, run files) and local branch on this
    /// node, under its project's git lock; its remote branch too with `remote_branch`.
    pub(super) async fn remove_agent(
        &self,
        project: &Project,
        agent: &Agent,
        remote_branch: bool,
    ) -> Result<(), GitError> {
        let ws = self.workspace.clone();
        let (name, branch, url) = (
            agent.name.clone(),
            agent.branch.clone(),
            project.remote_url.clone(),
        );
        let lock = self.project_lock(project.id).await;
        let _held = lock.lock().await;
        tokio::task::spawn_blocking(move || {
            ws.remove_agent(&name, &branch)?;
            if remote_branch {
                crate::workspace::delete_remote_branch(&url, &branch)?;
            }
            Ok::<_, WorkspaceError>(())
        })
        .await
        .map_err(GitError::RemoveTask)??;
        Ok(())
    }
}

/// The branch an agent's work goes to when the one of its name is taken on the remote.
fn own_branch(branch: &str, agent_id: Uuid) -> String {
    let id = agent_id.simple().to_string();
    let suffix = format!("-{}", &id[..8]);
    if branch.ends_with(&suffix) {
        branch.to_owned()
    } else {
        format!("{branch}{suffix}")
    }
}

/// What [`WorkerGit::publish_branch`] did.
#[derive(Debug)]
pub(crate) struct Publication {
    /// The remote branch the work went to (or was to go to).
    pub branch: String,
    /// The agent's branch before this run moved its work to a branch of its own.
    pub renamed_from: Option<String>,
    /// The commit the remote branch now points at; `None` when the agent had nothing
    /// beyond its base, so nothing was pushed; why not pushed otherwise.
    pub pushed: Result<Option<String>, PushError>,
}

impl Publication {
    fn new(
        branch: String,
        renamed_from: Option<String>,
        pushed: Result<Option<Published>, PushError>,
    ) -> Self {
        let pushed = pushed.map(|published| published.map(|p| p.commit));
        Self {
            branch,
            renamed_from,
            pushed,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use uuid::Uuid;

    use super::{ProjectGit, own_branch};

    #[test]
    fn an_agents_own_branch_is_named_once() {
        let id: Uuid = "1a2b3c4d-0000-4000-8000-000000000000".parse().unwrap();
        let own = own_branch("agent/otter", id);
        assert_eq!(own, "agent/otter-1a2b3c4d");
        assert_eq!(own_branch(&own, id), own, "a renamed branch stays as it is");
    }

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
