//! Starting a provider process for an agent — a first run, a resume or a failover: the
//! prompt file, the command line (the provider's args, the configured extra args, the prompt
//! where the CLI wants it), the environment, and recording the process in the store
//! (fenced). What it produces, a [`Started`] process and its [`RunFiles`], is defined here
//! for the agent task and the failover that take it on.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use super::event_log::{EventLog, LogError};
use super::git::GitError;
use super::liveness::HEARTBEAT_FILE;
use super::runtime::Runtime;
use crate::credentials::{
    self,
    run::{RunContext, RunError},
};
use crate::domain::{Agent, AgentStatus, Project};
use crate::events::STATUS_EVENT;
use crate::process::{self, ProcessError, Running};
use crate::providers::{self, Provider, ProviderError};
use crate::sandbox::{self, PolicyError};
use crate::store::{ProcessRecord, StoreError};

/// Why an agent's process did not start. Each failure keeps its cause; it becomes the
/// agent's failure reason (its `to_string`) where the agent is finished.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The agent is no longer this worker's: nothing is recorded for it.
    #[error("the agent is no longer this worker's")]
    Fenced,
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Provider(#[from] ProviderError),
    /// The agent's worktree could not be prepared.
    #[error("{0}")]
    Worktree(#[source] GitError),
    #[error("cannot write the agent's files: {0}")]
    Inputs(#[source] InputError),
    #[error("cannot write the prompt file: {0}")]
    PromptFile(#[source] std::io::Error),
    /// The provider's command is not runnable on this worker.
    #[error("{0}")]
    Command(#[from] PolicyError),
    /// The agent's account could not be picked or prepared.
    #[error("{0}")]
    Account(#[from] RunError),
    #[error("cannot prepare the agent's folders: {0}")]
    Folders(#[source] std::io::Error),
    #[error("cannot write the heartbeat file: {0}")]
    Heartbeat(#[source] std::io::Error),
    #[error("{0}")]
    Process(#[from] ProcessError),
}

impl From<LogError> for StartError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Fenced(_) => Self::Fenced,
            LogError::Store(e) => Self::Store(e),
        }
    }
}

/// Why a request's input files could not be written into the checkout.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("input file name '{0}' is not allowed")]
    NameNotAllowed(String),
    #[error("the input task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
    #[error("{0}")]
    File(#[from] crate::agent_files::AgentFileError),
}

/// What a provider process is started with, for a first run, a resume or a failover.
pub struct Launch<'a> {
    pub agent: &'a Agent,
    pub provider: &'a dyn Provider,
    /// The provider's arguments for this kind of run (the configured ones are added).
    pub args: Vec<String>,
    pub prompt: &'a str,
    pub project: Project,
    /// The agent's checkout, where the process runs.
    pub workdir: PathBuf,
}

/// The files a run leaves in its folder on the node.
#[derive(Debug, Clone)]
pub struct RunFiles {
    pub output: PathBuf,
    pub stderr: PathBuf,
    pub exit: PathBuf,
}

impl RunFiles {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            output: dir.join("output.jsonl"),
            stderr: dir.join("stderr.log"),
            exit: dir.join("exit_code"),
        }
    }
}

/// An agent whose process runs, ready to be supervised.
pub struct Started {
    pub process: Running,
    pub project: Project,
    pub workdir: PathBuf,
    pub files: RunFiles,
}

/// Starts the provider for the agent in its checkout, the prompt fed on stdin (argv is
/// size-limited and visible to every user of the node) or placed as the CLI wants it. The
/// run's files go to the agent's run folder.
pub async fn start(
    rt: &Arc<Runtime>,
    launch: Launch<'_>,
    log: &mut EventLog,
) -> Result<Started, StartError> {
    let Launch {
        agent,
        provider,
        args,
        prompt,
        project,
        workdir,
    } = launch;
    // Every run is told how to ask (the signal file): a real model knows it only so.
    let (mut args, prompt) = providers::with_question_channel(provider, args, prompt);
    let prompt = prompt.as_str();
    let run_dir = rt.git.agent_dir(&agent.name).join("run");
    let run_dir = run_dir.as_path();
    let store = &rt.fleet.store;
    write_prompt(run_dir, prompt)
        .await
        .map_err(StartError::PromptFile)?;
    // A signal file is a run's own report: the last run's must not speak for this one.
    let _ = crate::agent_files::remove_file(&workdir, Path::new(super::signal_file::SIGNAL_FILE));
    let settings = rt.fleet.settings.provider(provider.name());
    args.extend(settings.args.iter().cloned());
    let args = providers::place_prompt(args, provider.prompt_via(), prompt);
    let path_var = rt.sandbox.path_var();
    let command = settings
        .command
        .clone()
        .unwrap_or_else(|| providers::default_command(provider.name()).to_string());
    let command = sandbox::resolve_command(provider.name(), &command, path_var)?;
    // The account: its config dir and API key reach the process through its environment
    // only (never its command line), after the configured env so they win.
    let account = prepare_account(rt, agent, provider).await?;
    if let Some(a) = &account.account {
        tracing::info!(agent_id = %agent.id, account = %a.label, fingerprint = %a.fingerprint, "account selected");
        log.push(
            "account.selected",
            serde_json::json!({"kind": "account.selected", "account": a.label,
                               "fingerprint": a.fingerprint}),
        );
    }
    let paths = rt
        .agent_paths(&agent.name, &project, &workdir, account.config_dir.clone())
        .map_err(StartError::Folders)?;
    let sandboxed = rt.sandbox.enabled;
    let env = sandbox::build_env(
        rt.sandbox.worker_env.iter().cloned(),
        &sandbox::EnvParts {
            home: &paths.home,
            tmp: &paths.tmp,
            provider: provider.env(),
            configured: &settings.env,
            passthrough: &rt.fleet.settings.sandbox.env_passthrough,
            account: &account.env,
            sandboxed,
        },
    );
    let isolation = if sandboxed {
        Some(sandbox::isolation(
            &rt.fleet.settings,
            &paths,
            &command,
            path_var,
        ))
    } else {
        tracing::warn!(agent_id = %agent.id, "sandbox.mode = \"off\": the agent runs with the worker's powers");
        None
    };
    let files = RunFiles::in_dir(run_dir);
    // Written before the process starts: its dead-man switch watches it from the start.
    let heartbeat = run_dir.join(HEARTBEAT_FILE);
    rt.liveness
        .watch(agent.id, heartbeat.clone())
        .map_err(StartError::Heartbeat)?;
    let deadman = sandbox::DeadMan {
        heartbeat,
        grace_ms: rt.fleet.settings.worker.orphan_grace.as_millis() as u64,
    };
    let launch = process::Launch {
        helper: rt.sandbox.helper.clone(),
        spec: sandbox::Spec {
            command,
            args,
            env,
            cwd: workdir.clone(),
            isolation,
            deadman: Some(deadman),
        },
        spec_file: run_dir.join("sandbox.json"),
        stdin: run_dir.join("prompt.txt"),
        stdout: files.output.clone(),
        stderr: files.stderr.clone(),
        exit_file: files.exit.clone(),
    };
    let started = tracing::info_span!("process start")
        .in_scope(|| process::start(&launch))
        .map_err(|e| {
            rt.liveness.unwatch(agent.id);
            StartError::Process(e)
        })?;
    let record = ProcessRecord {
        pid: started.pid,
        pid_start_time: started.start_time,
        output_path: launch.stdout.display().to_string(),
        workdir: workdir.display().to_string(),
    };
    let mut running = Running::own(started, files.exit.clone());
    // The process runs: a store that is briefly away must not cost it.
    let marked = super::retry::store(rt, "record the started process", || {
        store.mark_running(agent.id, &rt.owner, &record)
    })
    .await;
    if !matches!(marked, Ok(true)) {
        running.terminate(Duration::from_secs(1)).await;
        rt.liveness.unwatch(agent.id);
        return Err(match marked {
            Err(e) => StartError::Store(e),
            _ => StartError::Fenced,
        });
    }
    tracing::info!(agent_id = %agent.id, pid = record.pid, "provider process started");
    crate::metrics::spawn_latency(&agent.provider, chrono::Utc::now() - agent.created_at);
    log.push(
        STATUS_EVENT,
        serde_json::json!({"kind": STATUS_EVENT, "status": AgentStatus::Running, "pid": record.pid}),
    );
    // The process runs and is recorded: a store that is briefly away now only delays this
    // event (the log keeps it for the supervisor's next flush).
    match log.flush_events().await {
        Ok(()) => {}
        Err(LogError::Fenced(_)) => {
            running.terminate(Duration::from_secs(1)).await;
            rt.liveness.unwatch(agent.id);
            return Err(StartError::Fenced);
        }
        Err(LogError::Store(e)) => {
            tracing::warn!(agent_id = %agent.id, error = %e, "cannot store the running event yet");
        }
    }
    Ok(Started {
        process: running,
        project,
        workdir,
        files,
    })
}

/// Picks and prepares the agent's account, through a brief store outage (acquiring is
/// idempotent per agent).
async fn prepare_account(
    rt: &Arc<Runtime>,
    agent: &Agent,
    provider: &dyn Provider,
) -> Result<credentials::run::AccountRun, StartError> {
    let agent_dir = rt.git.agent_dir(&agent.name);
    let ctx = RunContext {
        settings: &rt.fleet.settings,
        store: &rt.fleet.store,
        owner: &rt.owner,
        agent_dir: &agent_dir,
    };
    super::retry::store(rt, "prepare the account", || {
        credentials::run::prepare(&ctx, agent, provider)
            .instrument(tracing::info_span!("credentials", agentfleet.agent.id = %agent.id))
    })
    .await
    .map_err(StartError::Account)
}

/// The prompt file, in the run folder (out of the agent's reach), never through a link.
async fn write_prompt(run_dir: &Path, prompt: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let (run_dir, prompt) = (run_dir.to_path_buf(), prompt.to_string());
    tokio::task::spawn_blocking(move || {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&run_dir)?;
        let path = run_dir.join("prompt.txt");
        let _ = std::fs::remove_file(&path);
        std::fs::File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)?
            .write_all(prompt.as_bytes())
    })
    .await
    .map_err(std::io::Error::other)?
}
