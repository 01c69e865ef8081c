//! What every job handler and maintenance service of a worker shares: its identity in the
//! store (owner, node), its slots, the agents it supervises with the token that stops each,
//! the shutdown tokens its supervisors listen to, and the parts each agent's run draws on
//! (the event writer, the output watch, the sandbox, the liveness of its lease). `mod.rs`
//! builds one per worker process and hands it, shared, to everything it starts.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::git::WorkerGit;
use super::{event_log, event_writer, liveness, output_watch};
use crate::config::SandboxMode;
use crate::fleet::Fleet;
use crate::queue::Slots;
use crate::sandbox;
use crate::store::{NewWorker, Owner, StoreError};

/// What every job handler and service of this worker shares.
pub struct Runtime {
    pub fleet: Fleet,
    pub owner: Owner,
    pub node_id: String,
    pub slots: Slots,
    /// The workspace's mirrors and agents' folders, one git operation per project at a time.
    pub(super) git: WorkerGit,
    /// The agents this worker supervises, with the token that stops each.
    agents: std::sync::Mutex<HashMap<Uuid, CancellationToken>>,
    /// Every agent task, so shutdown can wait for them.
    pub(super) agent_tasks: TaskTracker,
    /// Cancelled on a hard stop (or a drain with `on_shutdown = "stop"`): agents are stopped.
    pub hard_stop: CancellationToken,
    /// Cancelled on a drain that leaves agents running: supervisors let go.
    pub detach: CancellationToken,
    /// Cancelled when the lease is lost: supervisors let go at once.
    pub lease_lost: CancellationToken,
    /// Stores every agent's events, many agents per transaction.
    pub(super) event_writer: event_writer::EventWriter,
    /// Wakes supervisors when their agent writes output (None: they poll).
    pub(super) output_watch: Option<Arc<output_watch::OutputWatch>>,
    /// How provider processes are isolated on this worker.
    pub sandbox: SandboxRuntime,
    /// The lease as this worker knows it, and its agents' heartbeat files.
    pub(super) liveness: liveness::Liveness,
}

/// The sandbox as this worker runs it: the helper binary and what the host enforces.
#[derive(Debug, Clone)]
pub struct SandboxRuntime {
    pub enabled: bool,
    /// The agentfleet binary, started as the sandbox helper for every provider process.
    pub helper: PathBuf,
    pub report: sandbox::Report,
    /// The worker's environment as it started: what agents' allow-listed environments
    /// and command look-ups draw from.
    pub worker_env: Vec<(String, String)>,
}

impl SandboxRuntime {
    /// Finds out what this host enforces; with the sandbox on, a missing required layer is
    /// an error that names it (the worker does not start).
    pub fn for_settings(settings: &crate::config::Settings) -> anyhow::Result<Self> {
        let helper = std::env::current_exe()
            .and_then(|p| p.canonicalize())
            .map_err(|e| anyhow::anyhow!("cannot find the agentfleet binary: {e}"))?;
        let enabled = settings.sandbox.mode == SandboxMode::On;
        let report = sandbox::probe_for(&helper, settings);
        let worker_env = std::env::vars().collect();
        if !enabled {
            return Ok(Self {
                enabled,
                helper,
                report: report.switched_off(),
                worker_env,
            });
        }
        let missing = report.missing();
        if !missing.is_empty() {
            let what: Vec<String> = missing
                .iter()
                .map(|l| format!("{}: {}", l.name, l.detail))
                .collect();
            anyhow::bail!(
                "the sandbox cannot be enforced on this host ({}); run `agentfleet doctor`, \
                 or set sandbox.mode = \"off\" to run agents with the worker's powers",
                what.join("; ")
            );
        }
        Ok(Self {
            enabled,
            helper,
            report,
            worker_env,
        })
    }

    /// The worker's PATH, where provider commands are looked up.
    pub fn path_var(&self) -> &str {
        self.worker_env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("owner", &self.owner)
            .field("node_id", &self.node_id)
            .finish()
    }
}

/// Registers a new worker of `fleet` in the store: its owner (id and epoch), and when the
/// registration was sent, by the wall clock and the monotonic one (its lease runs from then).
pub(super) async fn register(fleet: &Fleet) -> Result<(Owner, (SystemTime, Instant)), StoreError> {
    let settings = &fleet.settings;
    let worker_id = super::new_worker_id();
    let pid = std::process::id() as i32;
    let registered = (SystemTime::now(), Instant::now());
    let epoch = fleet
        .store
        .register_worker(
            &NewWorker {
                id: &worker_id,
                node_id: &settings.node_id(),
                host: &crate::config::hostname(),
                pid,
                pid_start_time: crate::process::start_time(pid),
                capacity: settings.worker.capacity as i32,
            },
            settings.worker.lease_ttl,
        )
        .await?;
    Ok((Owner { worker_id, epoch }, registered))
}

impl Runtime {
    /// The runtime of a worker the store registered as `owner` at `registered` (the send
    /// time of its registration, by the wall clock and the monotonic one: its lease runs
    /// from then), working in `workspace_root`. `hard_stop` stops its agents at once.
    pub(super) fn new(
        fleet: Fleet,
        owner: Owner,
        workspace_root: PathBuf,
        sandbox: SandboxRuntime,
        hard_stop: CancellationToken,
        registered: (SystemTime, Instant),
    ) -> Self {
        let settings = &fleet.settings;
        let (registered_at, registered) = registered;
        Self {
            node_id: settings.node_id(),
            slots: Slots::new(settings.worker.capacity as usize),
            git: WorkerGit::new(workspace_root),
            agents: std::sync::Mutex::default(),
            agent_tasks: TaskTracker::new(),
            hard_stop,
            detach: CancellationToken::new(),
            lease_lost: CancellationToken::new(),
            event_writer: event_writer::EventWriter::start(fleet.store.clone()),
            output_watch: output_watch::OutputWatch::start(),
            sandbox,
            liveness: liveness::Liveness::new(settings.worker.lease_ttl, registered_at, registered),
            owner,
            fleet,
        }
    }

    /// The agent's event log, continuing after its last stored event, written through the
    /// worker's batching writer.
    pub(super) async fn open_event_log(
        &self,
        agent_id: Uuid,
    ) -> Result<event_log::EventLog, crate::store::StoreError> {
        event_log::EventLog::open(
            agent_id,
            self.owner.clone(),
            &self.fleet.store,
            self.event_writer.clone(),
            self.fleet.events.clone(),
        )
        .await
    }

    /// The places one agent's sandbox is built from; creates its private HOME and TMPDIR.
    pub(super) fn agent_paths(
        &self,
        name: &str,
        project: &crate::domain::Project,
        workdir: &std::path::Path,
        config_dir: Option<PathBuf>,
    ) -> std::io::Result<sandbox::AgentPaths> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = self.git.agent_dir(name);
        let (home, tmp) = (dir.join("home"), dir.join("tmp"));
        for private in [&home, &tmp] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(private)?;
        }
        Ok(sandbox::AgentPaths {
            workdir: workdir.to_path_buf(),
            git_dir: self.git.agent_git_dir(name),
            home,
            tmp,
            config_dir,
            shared: vec![self.git.mirror_objects(project)],
            workspace_root: self.git.root().to_path_buf(),
        })
    }

    /// Registers an agent under supervision; its token stops it.
    pub(super) fn track_agent(&self, agent_id: Uuid) -> CancellationToken {
        let token = CancellationToken::new();
        if let Ok(mut agents) = self.agents.lock() {
            agents.insert(agent_id, token.clone());
        }
        token
    }

    /// Ends supervision of an agent: its heartbeat goes stale, so a process nobody else
    /// takes over stops itself after `worker.orphan_grace`.
    pub(super) fn untrack_agent(&self, agent_id: Uuid) {
        if let Ok(mut agents) = self.agents.lock() {
            agents.remove(&agent_id);
        }
        self.liveness.unwatch(agent_id);
    }

    /// Asks the supervisor of `agent_id` to stop it; false if this worker does not run it.
    pub(super) fn stop_agent(&self, agent_id: Uuid) -> bool {
        match self.agents.lock() {
            Ok(agents) => agents.get(&agent_id).map(|t| t.cancel()).is_some(),
            Err(_) => false,
        }
    }

    /// Whether this worker still supervises `agent_id`.
    pub(super) fn supervises(&self, agent_id: Uuid) -> bool {
        self.agents.lock().is_ok_and(|a| a.contains_key(&agent_id))
    }

    pub(super) fn running_agents(&self) -> usize {
        self.agents.lock().map(|a| a.len()).unwrap_or(0)
    }
}

/// A runtime for unit tests: an embedded store and a workspace in `dir`, registered as a
/// live worker, with the sandbox off. Services and steps run against it without a process.
#[cfg(test)]
pub(super) async fn for_test(dir: &std::path::Path) -> Arc<Runtime> {
    let db = format!("sqlite://{}", dir.join("fleet.db").display());
    let root = dir.join("workspace");
    let vars = [
        ("AGENTFLEET__DATABASE__URL", db),
        (
            "AGENTFLEET__WORKER__WORKSPACE_ROOT",
            root.display().to_string(),
        ),
    ];
    let vars = vars.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    let settings = crate::config::Settings::load_with_environment(None, vars).unwrap();
    let fleet = Fleet::connect(settings).await.unwrap();
    let (owner, registered) = register(&fleet).await.unwrap();
    std::fs::create_dir_all(&root).unwrap();
    let sandbox = SandboxRuntime {
        enabled: false,
        helper: PathBuf::new(),
        report: sandbox::Report::default(),
        worker_env: Vec::new(),
    };
    let hard_stop = CancellationToken::new();
    Arc::new(Runtime::new(
        fleet, owner, root, sandbox, hard_stop, registered,
    ))
}
