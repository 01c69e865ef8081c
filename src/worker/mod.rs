//! The worker process: registers in the store with a lease and an epoch, renews the lease
//! on a heartbeat, and consumes the spawn queue (apalis on Redis, or the embedded queue)
//! only while it has a free slot. Each delivered job runs as long as its agent does (see `spawn`).
//!
//! Shutdown is one tree: a soft stop stops fetching and waits for the agents in hand; a
//! hard stop (second signal) stops the agents too. Losing the lease stops everything at once.

mod event_log;
mod lease;
mod spawn;
mod supervisor;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::domain::Project;
use crate::fleet::Fleet;
use crate::queue::{JobHandler, Slots};
use crate::store::Owner;
use crate::workspace::Workspace;

/// What every job handler of this worker shares.
pub struct Runtime {
    pub fleet: Fleet,
    pub owner: Owner,
    pub node_id: String,
    pub slots: Slots,
    workspace: Arc<Workspace>,
    workspace_root: PathBuf,
    /// One git operation at a time per project mirror.
    project_locks: Mutex<HashMap<Uuid, Arc<Mutex<()>>>>,
    /// Cancelled on a hard stop: supervisors stop their agents.
    pub hard_stop: CancellationToken,
    /// Cancelled when the lease is lost: supervisors let go at once.
    pub lease_lost: CancellationToken,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("owner", &self.owner)
            .field("node_id", &self.node_id)
            .finish()
    }
}

/// Signals from outside: `soft` stops taking work, `hard` stops running agents.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    pub soft: CancellationToken,
    pub hard: CancellationToken,
}

impl Runtime {
    fn agent_dir(&self, name: &str) -> PathBuf {
        self.workspace_root.join("agents").join(name)
    }

    async fn project_lock(&self, project: Uuid) -> Arc<Mutex<()>> {
        self.project_locks
            .lock()
            .await
            .entry(project)
            .or_default()
            .clone()
    }

    /// Fetches the project's mirror and adds the agent's worktree (blocking git work off
    /// the async threads).
    async fn prepare_worktree(
        &self,
        project: &Project,
        name: &str,
        branch: &str,
    ) -> Result<PathBuf, String> {
        let lock = self.project_lock(project.id).await;
        let _held = lock.lock().await;
        let ws = self.workspace.clone();
        let (key, remote, name, branch, base) = (
            project.id.to_string(),
            project.remote_url.clone(),
            name.to_string(),
            branch.to_string(),
            project.default_branch.clone(),
        );
        tokio::task::spawn_blocking(move || {
            ws.sync_mirror(&key, &remote)?;
            ws.create_worktree(&key, &name, &branch, &base)
        })
        .await
        .map_err(|e| format!("worktree task failed: {e}"))?
        .map_err(|e| e.to_string())
    }

    /// Commits what the agent left uncommitted and pushes its branch to the remote.
    async fn publish_branch(
        &self,
        project: &Project,
        name: &str,
        branch: &str,
        workdir: &Path,
    ) -> Result<(), String> {
        let lock = self.project_lock(project.id).await;
        let _held = lock.lock().await;
        let ws = self.workspace.clone();
        let (key, branch, workdir) = (
            project.id.to_string(),
            branch.to_string(),
            workdir.to_path_buf(),
        );
        let message = format!("agentfleet: work of agent {name}");
        tokio::task::spawn_blocking(move || {
            ws.commit_all(&workdir, &message)?;
            ws.push_branch(&key, &branch)
        })
        .await
        .map_err(|e| format!("push task failed: {e}"))?
        .map_err(|e| e.to_string())
    }
}

/// A unique worker id: host, pid and a random suffix (apalis-redis needs unique names).
pub fn new_worker_id() -> String {
    let suffix: u32 = rand::random_range(0..0xff_ffff);
    format!(
        "{}-{}-{suffix:06x}",
        crate::config::hostname(),
        std::process::id()
    )
}

/// Runs a worker until `shutdown` (or a lost lease) ends it.
pub async fn run(fleet: Fleet, shutdown: Shutdown) -> anyhow::Result<()> {
    let settings = fleet.settings.clone();
    let worker_id = new_worker_id();
    let node_id = settings.node_id();
    let capacity = settings.worker.capacity as usize;
    let epoch = fleet
        .store
        .register_worker(
            &worker_id,
            &node_id,
            &crate::config::hostname(),
            std::process::id() as i32,
            capacity as i32,
            settings.worker.lease_ttl,
        )
        .await?;
    let owner = Owner {
        worker_id: worker_id.clone(),
        epoch,
    };
    tracing::info!(worker_id = %worker_id, node_id = %node_id, epoch, capacity, "worker registered");
    std::fs::create_dir_all(&settings.worker.workspace_root)?;
    let workspace_root = std::fs::canonicalize(&settings.worker.workspace_root)?;
    let rt = Arc::new(Runtime {
        fleet: fleet.clone(),
        owner: owner.clone(),
        node_id,
        slots: Slots::new(capacity),
        workspace: Arc::new(Workspace::new(workspace_root.clone())),
        workspace_root,
        project_locks: Mutex::default(),
        hard_stop: shutdown.hard.child_token(),
        lease_lost: CancellationToken::new(),
    });

    let tracker = TaskTracker::new();
    let stop_services = CancellationToken::new();
    tracker.spawn(lease::run(rt.clone(), stop_services.clone()));

    // Stop fetching on a soft stop or a lost lease.
    let stop_fetching = CancellationToken::new();
    {
        let (soft, lost, stop) = (
            shutdown.soft.clone(),
            rt.lease_lost.clone(),
            stop_fetching.clone(),
        );
        tracker.spawn(async move {
            tokio::select! {
                _ = soft.cancelled() => {}
                _ = lost.cancelled() => {}
            }
            stop.cancel();
        });
    }

    let result = consume(rt.clone(), stop_fetching.clone()).await;
    stop_fetching.cancel();
    stop_services.cancel();
    tracker.close();
    tracker.wait().await;
    if rt.lease_lost.is_cancelled() {
        anyhow::bail!("worker {worker_id} lost its lease; its agents belong to the fleet now");
    }
    if let Err(e) = fleet.store.deregister_worker(&owner).await {
        tracing::warn!(error = %e, "cannot deregister worker");
    }
    tracing::info!(worker_id = %worker_id, "worker stopped");
    result
}

/// Takes jobs from the queue (apalis on Redis, or the embedded queue over the store's
/// pending requests) and runs each through `spawn::handle`. A consumer that fails (Redis
/// gone, say) is started again under a new name (apalis refuses a name reused inside its
/// orphan window).
async fn consume(rt: Arc<Runtime>, stop: CancellationToken) -> anyhow::Result<()> {
    let handler: JobHandler = {
        let rt = rt.clone();
        JobHandler::new(move |job| spawn::handle(rt.clone(), job))
    };
    let mut generation = 0u32;
    loop {
        generation += 1;
        let name = format!("{}-{generation}", rt.owner.worker_id);
        let outcome = rt
            .fleet
            .queue
            .consume(
                name.clone(),
                rt.slots.clone(),
                stop.clone(),
                handler.clone(),
            )
            .await;
        match outcome {
            Ok(()) if stop.is_cancelled() => return Ok(()),
            Ok(()) => tracing::warn!(worker = %name, "queue consumer ended; restarting"),
            Err(e) => {
                tracing::warn!(worker = %name, error = %e, "queue consumer failed; restarting")
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
