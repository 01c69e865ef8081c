//! The worker process: registers in the store with a lease and an epoch, renews the lease on
//! a heartbeat, adopts the agents of dead workers on its node, and consumes the spawn queue
//! (apalis on Redis, or the embedded queue) only while it has a free slot. A delivered job
//! starts its agent and hands it to a tracked agent task; maintenance services (sweeper,
//! re-dispatch, control requests, cleanup) each run on their own interval.
//!
//! Shutdown is one tree: a soft stop stops fetching, then leaves running agents to the next
//! worker on the node (or stops them, `worker.on_shutdown = "stop"`); a hard stop stops them
//! at once. A lost lease lets go of everything.

mod agent_task;
mod cleanup;
mod control;
mod event_log;
mod event_writer;
mod failover;
mod health;
mod launch;
mod lease;
mod output_watch;
mod resume;
mod spawn;
mod supervisor;
mod sweeper;

pub use cleanup::{CleanupReport, cleanup_workspace};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::config::OnShutdown;
use crate::domain::Project;
use crate::fleet::Fleet;
use crate::queue::{JobHandler, Slots};
use crate::store::{NewWorker, Owner};
use crate::workspace::Workspace;

/// What a worker knows of a project's mirror, kept under the project's git lock.
#[derive(Debug, Default)]
pub(crate) struct ProjectGit {
    /// When the last successful fetch began: it saw the remote as of then.
    fetched_from: Option<std::time::Instant>,
}

impl ProjectGit {
    /// A spawn delivered at `delivered` must see the remote as of then or later (its caller
    /// may have pushed just before asking): a fetch that began after that will do, so the
    /// spawns queued behind one fetch share it.
    fn must_fetch(&self, delivered: std::time::Instant) -> bool {
        self.fetched_from.is_none_or(|began| began < delivered)
    }
}

/// A new agent's worktree, and how long each step of making it took.
pub(crate) struct PreparedWorktree {
    pub workdir: PathBuf,
    /// Whether this spawn fetched (false: a fetch begun after its delivery served it).
    pub fetched: bool,
    /// Waiting for another agent's git work on the same project.
    pub lock_wait: std::time::Duration,
    /// Fetching the project's mirror from its remote.
    pub fetch: std::time::Duration,
    /// Creating the worktree and checking out its files.
    pub checkout: std::time::Duration,
}

/// What every job handler and service of this worker shares.
pub struct Runtime {
    pub fleet: Fleet,
    pub owner: Owner,
    pub node_id: String,
    pub slots: Slots,
    workspace: Arc<Workspace>,
    workspace_root: PathBuf,
    /// One git operation at a time per project mirror, and when its last fetch began.
    project_locks: Mutex<HashMap<Uuid, Arc<Mutex<ProjectGit>>>>,
    /// The agents this worker supervises, with the token that stops each.
    agents: std::sync::Mutex<HashMap<Uuid, CancellationToken>>,
    /// Every agent task, so shutdown can wait for them.
    agent_tasks: TaskTracker,
    /// Cancelled on a hard stop (or a drain with `on_shutdown = "stop"`): agents are stopped.
    pub hard_stop: CancellationToken,
    /// Cancelled on a drain that leaves agents running: supervisors let go.
    pub detach: CancellationToken,
    /// Cancelled when the lease is lost: supervisors let go at once.
    pub lease_lost: CancellationToken,
    /// Stores every agent's events, many agents per transaction.
    event_writer: event_writer::EventWriter,
    /// Wakes supervisors when their agent writes output (None: they poll).
    output_watch: Option<Arc<output_watch::OutputWatch>>,
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
    /// The agent's event log, continuing after its last stored event, written through the
    /// worker's batching writer.
    async fn open_event_log(
        &self,
        agent_id: Uuid,
    ) -> Result<event_log::EventLog, crate::store::StoreError> {
        Ok(event_log::EventLog::open(
            agent_id,
            self.owner.clone(),
            self.fleet.store.clone(),
            self.fleet.events.clone(),
        )
        .await?
        .batched(self.event_writer.clone()))
    }

    fn agent_dir(&self, name: &str) -> PathBuf {
        self.workspace_root.join("agents").join(name)
    }

    async fn project_lock(&self, project: Uuid) -> Arc<Mutex<ProjectGit>> {
        self.project_locks
            .lock()
            .await
            .entry(project)
            .or_default()
            .clone()
    }

    /// Registers an agent under supervision; its token stops it.
    fn track_agent(&self, agent_id: Uuid) -> CancellationToken {
        let token = CancellationToken::new();
        if let Ok(mut agents) = self.agents.lock() {
            agents.insert(agent_id, token.clone());
        }
        token
    }

    fn untrack_agent(&self, agent_id: Uuid) {
        if let Ok(mut agents) = self.agents.lock() {
            agents.remove(&agent_id);
        }
    }

    /// Asks the supervisor of `agent_id` to stop it; false if this worker does not run it.
    fn stop_agent(&self, agent_id: Uuid) -> bool {
        match self.agents.lock() {
            Ok(agents) => agents.get(&agent_id).map(|t| t.cancel()).is_some(),
            Err(_) => false,
        }
    }

    fn running_agents(&self) -> usize {
        self.agents.lock().map(|a| a.len()).unwrap_or(0)
    }

    /// Fetches the project's mirror and adds the agent's worktree (blocking git work off
    /// the async threads).
    async fn prepare_worktree(
        &self,
        project: &Project,
        name: &str,
        branch: &str,
        delivered: std::time::Instant,
    ) -> Result<PreparedWorktree, String> {
        let waited = std::time::Instant::now();
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
        let fetch_began = std::time::Instant::now();
        let prepared = tokio::task::spawn_blocking(move || {
            let _in = span.enter();
            let step = std::time::Instant::now();
            if fetch_now {
                tracing::info_span!("mirror fetch")
                    .in_scope(|| ws.sync_mirror_branch(&key, &remote, &base))?;
            }
            let fetch = step.elapsed();
            let step = std::time::Instant::now();
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
    let pid = std::process::id() as i32;
    let epoch = fleet
        .store
        .register_worker(
            &NewWorker {
                id: &worker_id,
                node_id: &node_id,
                host: &crate::config::hostname(),
                pid,
                pid_start_time: crate::process::start_time(pid),
                capacity: capacity as i32,
            },
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
        agents: std::sync::Mutex::default(),
        agent_tasks: TaskTracker::new(),
        hard_stop: shutdown.hard.child_token(),
        detach: CancellationToken::new(),
        lease_lost: CancellationToken::new(),
        event_writer: event_writer::EventWriter::start(fleet.store.clone()),
        output_watch: output_watch::OutputWatch::start(),
    });

    let services = TaskTracker::new();
    let stop_services = CancellationToken::new();
    // Adopt what this node's dead workers left before taking new work.
    sweeper::sweep_once(&rt).await;
    services.spawn(lease::run(rt.clone(), stop_services.clone()));
    services.spawn(sweeper::run(rt.clone(), stop_services.clone()));
    services.spawn(sweeper::run_redispatch(rt.clone(), stop_services.clone()));
    services.spawn(control::run(rt.clone(), stop_services.clone()));
    services.spawn(cleanup::run(rt.clone(), stop_services.clone()));
    services.spawn(health::run(
        rt.clone(),
        settings.worker_metrics_bind()?,
        stop_services.clone(),
    ));

    // Stop fetching on a soft stop or a lost lease.
    let stop_fetching = CancellationToken::new();
    {
        let (soft, lost, stop) = (
            shutdown.soft.clone(),
            rt.lease_lost.clone(),
            stop_fetching.clone(),
        );
        services.spawn(async move {
            tokio::select! {
                _ = soft.cancelled() => {}
                _ = lost.cancelled() => {}
            }
            stop.cancel();
        });
    }

    let consumer = consume(rt.clone(), stop_fetching.clone());
    tokio::pin!(consumer);
    // Once fetching stops, the job in hand gets `shutdown_timeout` to finish.
    let result = tokio::select! {
        result = &mut consumer => result,
        _ = stop_fetching.cancelled() => {
            match tokio::time::timeout(settings.worker.shutdown_timeout, &mut consumer).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!("the job in hand did not finish within worker.shutdown_timeout");
                    Ok(())
                }
            }
        }
    };
    // Running agents: leave them for the next worker on this node, or stop them.
    let leave = settings.worker.on_shutdown == OnShutdown::Leave
        && !rt.hard_stop.is_cancelled()
        && !rt.lease_lost.is_cancelled();
    if rt.lease_lost.is_cancelled() {
        // Supervisors have let go already; the agents are the fleet's now.
    } else if leave {
        rt.detach.cancel();
    } else {
        rt.hard_stop.cancel();
    }
    rt.agent_tasks.close();
    // Stopping (or, after a lost lease, killing stale) processes needs the grace period
    // plus a word with the store, which may be slow to answer just then.
    if tokio::time::timeout(
        settings.worker.stop_grace + Duration::from_secs(30),
        rt.agent_tasks.wait(),
    )
    .await
    .is_err()
    {
        tracing::warn!("agent tasks did not end in time");
    }
    stop_services.cancel();
    services.close();
    services.wait().await;
    if rt.lease_lost.is_cancelled() {
        anyhow::bail!("worker {worker_id} lost its lease; its agents belong to the fleet now");
    }
    let handoff = leave.then_some(settings.worker.handoff_grace);
    if let Err(e) = fleet.store.deregister_worker(&owner, handoff).await {
        tracing::warn!(error = %e, "cannot deregister worker");
    }
    tracing::info!(worker_id = %worker_id, left_running = leave, "worker stopped");
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
    let mut backoff = Duration::from_millis(500);
    loop {
        generation += 1;
        let name = format!("{}-{generation}", rt.owner.worker_id);
        let started = tokio::time::Instant::now();
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
        if started.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_millis(500);
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod project_git_tests {
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
