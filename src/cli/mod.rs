//! The `agentfleet` command line (clap): every operation of the fleet, talking to the store
//! and the queue directly, plus the long-running `worker`, `serve` and `up`.

mod accounts;
mod agents;
mod doctor;
mod output;

use accounts::account;
use agents::{follow_events, parse_answers, spawn, wait_for_end, wait_until_resumed};

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::fleet::{Fleet, FleetError};
use crate::store::Store;
use crate::worker::{self, Shutdown};

#[derive(Debug, Parser)]
#[command(
    name = "agentfleet",
    version,
    about = "Run AI coding-agent CLIs as a fleet of queue workers"
)]
pub struct Cli {
    /// Configuration file (also AGENTFLEET_CONFIG).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// `worker`, `serve` and `up` run until stopped; every other command prints and exits.
    pub fn runs_a_service(&self) -> bool {
        matches!(self.command, Command::Worker | Command::Serve | Command::Up)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update the database schema.
    Migrate,
    /// Say what the agents' sandbox enforces on this host and whether each provider's
    /// command runs inside it; exits 1 when something required is missing.
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// Manage projects (git repositories agents work on).
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Manage provider accounts (their credentials are stored sealed; never printed).
    #[command(subcommand)]
    Account(AccountCommand),
    /// Run a worker: take spawn jobs and run their agents.
    Worker,
    /// Serve the HTTP API.
    Serve,
    /// Run the API and a worker in one process.
    Up,
    /// Ask for a new agent.
    Spawn(SpawnArgs),
    /// List agents (dismissed ones with --all).
    List {
        #[arg(long)]
        json: bool,
        #[arg(long)]
        all: bool,
    },
    /// Stop a running agent (its worker sends SIGTERM, then SIGKILL after worker.stop_grace).
    Stop {
        agent: String,
        /// Return at once instead of waiting for the agent to stop.
        #[arg(long)]
        no_wait: bool,
    },
    /// Delete an agent: stop it, remove its worktree, local branch, files and records.
    Delete {
        agent: String,
        /// Also delete the agent's branch on the project's remote.
        #[arg(long)]
        remote_branch: bool,
    },
    /// Answer an agent's questions: its provider resumes the same session in its worktree.
    Resume {
        agent: String,
        /// An answer, as QUESTION_ID=TEXT (repeatable).
        #[arg(long = "answer", value_name = "ID=TEXT")]
        answers: Vec<String>,
        /// Answers as a JSON object {"question id": "answer", ...}.
        #[arg(long, conflicts_with = "answers")]
        answers_file: Option<PathBuf>,
        /// Follow the output until the agent ends again; exit 0 only on success.
        #[arg(long)]
        wait: bool,
    },
    /// Hide an agent from `list` (it stays in the store); an ended one's checkout is freed
    /// on its node.
    Dismiss { agent: String },
    /// With AGENT: free that ended agent's checkout on its node (its record and pushed
    /// branch stay). Without: remove worktrees, branches and files under this node's
    /// workspace that belong to no agent.
    Cleanup {
        agent: Option<String>,
        #[arg(long, conflicts_with = "agent")]
        dry_run: bool,
    },
    /// Show one agent by id or name.
    Get {
        agent: String,
        #[arg(long)]
        json: bool,
    },
    /// Show an agent's normalised output; -f follows it until the agent ends.
    Logs {
        agent: String,
        #[arg(short, long)]
        follow: bool,
        #[arg(long)]
        json: bool,
    },
    /// List workers and their leases.
    Workers {
        /// Also workers that ended more than ten minutes ago.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show the queue: pending depth, oldest pending request, requests per kind and status,
    /// and the control queues per node (pending stop, delete and resume requests).
    Queue {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Register a git repository.
    Add {
        name: String,
        #[arg(long)]
        remote: String,
        #[arg(long, default_value = "main")]
        branch: String,
    },
    /// List projects.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Add an account: an API key (from an env var or a file) or a provider credentials
    /// file (OAuth tokens, e.g. claude's .credentials.json).
    Add {
        #[arg(long)]
        provider: String,
        #[arg(long)]
        label: String,
        #[command(flatten)]
        secret: SecretSource,
        /// At most this many agents on the account at once.
        #[arg(long)]
        max_concurrent: Option<i32>,
        #[arg(long)]
        json: bool,
    },
    /// List accounts with a fingerprint of their credentials (never the credentials).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove an account.
    Remove { label: String },
    /// Make an exhausted or invalid account usable again.
    Reset { label: String },
    /// Re-seal every account's credentials under a new key (read from the file; a fresh
    /// key is generated into it if it does not exist). Then configure that key.
    RotateKey {
        #[arg(long)]
        new_key_file: PathBuf,
    },
}

/// Where a new account's secret comes from: never the command line itself.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct SecretSource {
    /// Name of an environment variable holding the API key.
    #[arg(long)]
    api_key_env: Option<String>,
    /// A file holding the API key.
    #[arg(long)]
    api_key_file: Option<PathBuf>,
    /// The provider's credentials file (JSON with OAuth tokens).
    #[arg(long)]
    credentials_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SpawnArgs {
    #[arg(long, default_value = "claude")]
    provider: String,
    #[arg(long)]
    project: String,
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    mode: Option<String>,
    #[arg(long)]
    task_id: Option<String>,
    #[arg(long)]
    idempotency_key: Option<String>,
    /// A file handed to the agent under .agentfleet/input/ (repeatable).
    #[arg(long = "input")]
    inputs: Vec<PathBuf>,
    /// Read the prompt from a file instead of the command line.
    #[arg(long, conflicts_with = "prompt")]
    prompt_file: Option<PathBuf>,
    /// Follow the agent's output until it ends; exit 0 only on success.
    #[arg(long)]
    wait: bool,
    /// Run the request again (up to N times) if its worker is lost.
    #[arg(long)]
    retries: Option<u32>,
    #[arg(long)]
    json: bool,
    prompt: Option<String>,
}

/// Runs the parsed command; the returned code is the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let settings = Settings::load(cli.config.as_deref())?;
    let telemetry = crate::telemetry::init(matches!(
        cli.command,
        Command::Worker | Command::Serve | Command::Up
    ));
    let result = run_command(cli.command, settings).await;
    // Spans still buffered (a CLI spawn's producer span, a worker's last jobs) go out now.
    telemetry.shutdown().await;
    result
}

async fn run_command(command: Command, settings: Settings) -> anyhow::Result<i32> {
    if let Command::Migrate = command {
        let store = connect_store(&settings).await?;
        let applied = store.migrate().await?;
        let all = crate::store::migrations_in(store.kind());
        match applied {
            0 => println!("the database schema is up to date"),
            n if n == all => println!("created the database schema ({n} migrations)"),
            n => println!("updated the database schema ({n} of {all} migrations applied now)"),
        }
        return Ok(0);
    }
    if let Command::Doctor { json } = command {
        return tokio::task::spawn_blocking(move || doctor::run(&settings, json)).await?;
    }
    let fleet = Fleet::connect(settings).await?;
    match command {
        Command::Migrate | Command::Doctor { .. } => unreachable!("handled above"),
        Command::Project(ProjectCommand::Add {
            name,
            remote,
            branch,
        }) => {
            let project = fleet
                .add_project(&name, &remote, &branch)
                .await
                .map_err(user)?;
            println!("project {} added ({})", project.name, project.remote_url);
        }
        Command::Project(ProjectCommand::List { json }) => {
            output::projects(&fleet.list_projects().await.map_err(user)?, json)
        }
        Command::Account(command) => account(&fleet, command).await?,
        Command::Worker => run_until_signal(fleet, false).await?,
        Command::Serve => {
            let shutdown = signals();
            crate::api::serve(fleet, shutdown.soft.clone(), None).await?
        }
        Command::Up => run_until_signal(fleet, true).await?,
        Command::Spawn(args) => return spawn(&fleet, args).await,
        Command::List { json, all } => output::agents(&fleet.store.list_agents(all).await?, json),
        Command::Stop { agent, no_wait } => {
            let agent = fleet.stop(&agent, !no_wait).await.map_err(user)?;
            println!("{} {}", agent.name, agent.status);
        }
        Command::Delete {
            agent,
            remote_branch,
        } => {
            let name = fleet.delete(&agent, remote_branch).await.map_err(user)?;
            println!("{name} deleted");
        }
        Command::Resume {
            agent,
            answers,
            answers_file,
            wait,
        } => {
            let answers = parse_answers(&answers, answers_file.as_deref())?;
            let before = fleet
                .store
                .agent(&agent)
                .await
                .map_err(|e| user(e.into()))?;
            let last_seq = fleet.store.last_event_seq(before.id).await?;
            let agent = fleet.resume(&agent, answers).await.map_err(user)?;
            println!("{} resuming", agent.name);
            if wait {
                wait_until_resumed(&fleet, agent.id).await?;
                return wait_for_end(&fleet, agent.id, last_seq).await;
            }
        }
        Command::Dismiss { agent } => {
            let agent = fleet.dismiss(&agent).await.map_err(user)?;
            println!("{} dismissed", agent.name);
        }
        Command::Cleanup {
            agent: Some(agent), ..
        } => {
            let agent = fleet.cleanup(&agent).await.map_err(user)?;
            println!("{} checkout being removed on its node", agent.name);
        }
        Command::Cleanup {
            agent: None,
            dry_run,
        } => {
            let root = &fleet.settings.worker.workspace_root;
            let report = worker::cleanup_workspace(root, &fleet.store, dry_run).await?;
            let verb = if dry_run { "would remove" } else { "removed" };
            for name in &report.removed {
                println!("{verb} {name}");
            }
            if report.removed.is_empty() {
                println!("nothing to remove");
            }
        }
        Command::Get { agent, json } => {
            output::agent(&fleet.agent_detail(&agent).await.map_err(user)?, json);
        }
        Command::Logs {
            agent,
            follow,
            json,
        } => {
            let agent = fleet
                .store
                .agent(&agent)
                .await
                .map_err(|e| user(e.into()))?;
            if follow {
                follow_events(&fleet, agent.id, json, 0).await?;
            } else {
                for event in fleet.store.events_after(agent.id, 0).await? {
                    output::event(&event, json);
                }
            }
        }
        Command::Workers { all, json } => {
            let mut workers = fleet.store.list_workers().await?;
            if !all {
                workers.retain(crate::domain::WorkerInfo::recently_seen);
            }
            output::workers(&workers, json)
        }
        Command::Queue { json } => output::queue(
            &fleet.store.queue_stats().await?,
            &fleet.store.control_queue_stats().await?,
            json,
        ),
    }
    Ok(0)
}

fn user(e: FleetError) -> anyhow::Error {
    anyhow::anyhow!(e.to_string())
}

async fn connect_store(settings: &Settings) -> anyhow::Result<Store> {
    Ok(Store::connect(
        &settings.database.url,
        settings.database.max_connections,
        settings.database.create_if_missing,
    )
    .await?)
}

/// SIGINT/SIGTERM once: soft stop; twice: hard stop.
fn signals() -> Shutdown {
    let shutdown = Shutdown::default();
    let s = shutdown.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        for stop in [s.soft, s.hard] {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("stop requested");
            stop.cancel();
        }
    });
    shutdown
}

async fn run_until_signal(fleet: Fleet, with_api: bool) -> anyhow::Result<()> {
    let shutdown = signals();
    let worker = worker::run(fleet.clone(), shutdown.clone());
    if !with_api {
        return worker.await;
    }
    let api_stop = CancellationToken::new();
    let mut api = tokio::spawn(crate::api::serve(fleet, api_stop.clone(), None));
    tokio::pin!(worker);
    tokio::select! {
        result = &mut worker => {
            api_stop.cancel();
            api.await??;
            result
        }
        // The API ended on its own (it could not bind, say): the whole `up` stops.
        ended = &mut api => {
            shutdown.soft.cancel();
            let worker_result = worker.await;
            ended??;
            worker_result
        }
    }
}
