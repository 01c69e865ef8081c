//! The `agentfleet` command line (clap): every operation of the fleet, talking to the store
//! and the queue directly or, with `--api URL`, to a fleet's HTTP API (`ops.rs` answers
//! each operation either way), plus the long-running `worker`, `serve` and `up`.

mod accounts;
mod agents;
mod args;
mod diff;
mod doctor;
mod ops;
mod output;
mod remote;
mod usage;
mod webhooks;

pub use args::{
    AccountCommand, Cli, Command, ListArgs, ProjectCommand, SecretSource, SpawnArgs, WebhookCommand,
};

use accounts::account;
use agents::{parse_answers, spawn, wait_for_end, wait_until_resumed};
use ops::Ops;
use remote::Remote;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::fleet::{Fleet, FleetError};
use crate::store::Store;
use crate::worker::{self, Shutdown};

/// Runs the parsed command; the returned code is the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let settings = Settings::load(cli.config.as_deref())?;
    let remote = match &cli.api {
        Some(url) => Some(Remote::new(url, api_token(&cli, &settings)?)?),
        None => None,
    };
    let telemetry = crate::telemetry::init(matches!(
        cli.command,
        Command::Worker | Command::Serve | Command::Up
    ));
    let result = run_command(cli.command, settings, remote).await;
    // Spans still buffered (a CLI spawn's producer span, a worker's last jobs) go out now.
    telemetry.shutdown().await;
    result
}

/// The remote mode's token: `--token` / `AGENTFLEET_API_TOKEN`, else `client.token_file`.
fn api_token(cli: &Cli, settings: &Settings) -> anyhow::Result<Option<String>> {
    if let Some(token) = &cli.token {
        return Ok(Some(token.clone()));
    }
    let file = &settings.client.token_file;
    if file.as_os_str().is_empty() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read client.token_file {}", file.display()))?;
    Ok(Some(text.trim().to_string()))
}

/// Parses the command line, with `--help` saying which mode the CLI is in: the API named by
/// `--api` or `AGENTFLEET_API_URL`, or the configured store.
pub fn parse_args() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let matches = Cli::command()
        .after_help(mode_line(&args, std::env::var("AGENTFLEET_API_URL").ok()))
        .get_matches_from(args);
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn mode_line(args: &[std::ffi::OsString], env_url: Option<String>) -> String {
    let mut from_args = None;
    for (i, arg) in args.iter().enumerate() {
        let arg = arg.to_string_lossy();
        if let Some(url) = arg.strip_prefix("--api=") {
            from_args = Some(url.to_string());
        } else if arg == "--api" {
            from_args = args.get(i + 1).map(|a| a.to_string_lossy().into_owned());
        }
    }
    match from_args.or(env_url).filter(|u| !u.trim().is_empty()) {
        Some(url) => format!(
            "Mode: remote: commands go to the fleet's HTTP API at {url} (--api / \
             AGENTFLEET_API_URL); worker, serve, up, migrate, doctor, cleanup without an agent \
             and account rotate-key are refused."
        ),
        None => "Mode: local: commands use the configured store and queue. Set --api URL or \
                 AGENTFLEET_API_URL (and --token, AGENTFLEET_API_TOKEN or client.token_file) \
                 to use a fleet's HTTP API instead."
            .to_string(),
    }
}

async fn run_command(
    command: Command,
    settings: Settings,
    remote: Option<Remote>,
) -> anyhow::Result<i32> {
    if let Command::Openapi = command {
        print!("{}", crate::api::openapi::document());
        return Ok(0);
    }
    let ops = match remote {
        Some(remote) => {
            if let Some(name) = ops::local_only(&command) {
                return Err(ops::refused(name, &remote));
            }
            Ops::Remote(remote)
        }
        None => {
            if let Command::Migrate = command {
                let store = connect_store(&settings).await?;
                let applied = store.migrate().await?;
                let all = crate::store::migrations_in(store.kind());
                match applied {
                    0 => println!("the database schema is up to date"),
                    n if n == all => println!("created the database schema ({n} migrations)"),
                    n => println!(
                        "updated the database schema ({n} of {all} migrations applied now)"
                    ),
                }
                return Ok(0);
            }
            if let Command::Doctor { json } = command {
                return tokio::task::spawn_blocking(move || doctor::run(&settings, json)).await?;
            }
            Ops::Local(Box::new(Fleet::connect(settings).await?))
        }
    };
    match command {
        Command::Migrate | Command::Openapi | Command::Doctor { .. } => {
            unreachable!("handled above")
        }
        Command::Project(ProjectCommand::Add {
            name,
            remote,
            branch,
        }) => {
            let project = ops.add_project(&name, &remote, &branch).await?;
            println!("project {} added ({})", project.name, project.remote_url);
        }
        Command::Project(ProjectCommand::Update {
            name,
            remote,
            branch,
            daily_cost_usd,
            max_concurrent,
        }) => {
            let daily = match daily_cost_usd.as_deref() {
                None => None,
                Some("none") => Some(None),
                Some(text) => Some(Some(text.parse::<f64>().map_err(|_| {
                    anyhow::anyhow!(
                        "--daily-cost-usd must be a number of US dollars, or none; got {text:?}"
                    )
                })?)),
            };
            let cap = match max_concurrent.as_deref() {
                None => None,
                Some("none") => Some(None),
                Some(text) => Some(Some(text.parse::<i64>().map_err(|_| {
                    anyhow::anyhow!("--max-concurrent must be a number, or none; got {text:?}")
                })?)),
            };
            let change = crate::fleet::ProjectChange {
                remote_url: remote,
                default_branch: branch,
                daily_cost_usd: daily,
                max_concurrent: cap,
            };
            let project = ops.update_project(&name, &change).await?;
            if let Some(cap) = project.max_concurrent {
                println!("project {} runs at most {cap} agents at once", project.name);
            }
            if let Some(daily) = project.daily_cost_usd {
                println!("project {} daily budget: {daily} US dollars", project.name);
            }
            println!(
                "project {} updated ({}, branch {})",
                project.name, project.remote_url, project.default_branch
            );
        }
        Command::Project(ProjectCommand::Remove { name, force }) => {
            let agents = ops.remove_project(&name, force).await?;
            println!("project {name} removed (with {agents} agent record(s))");
        }
        Command::Project(ProjectCommand::List { json }) => {
            output::projects(&ops.projects().await?, json)
        }
        Command::Account(command) => account(&ops, command).await?,
        Command::Webhook(command) => webhooks::webhook(&ops, command).await?,
        Command::Worker => run_until_signal(ops.local("worker")?.clone(), false).await?,
        Command::Serve => {
            let shutdown = signals();
            let fleet = ops.local("serve")?.clone();
            crate::api::serve(fleet, shutdown.soft.clone(), None).await?
        }
        Command::Up => run_until_signal(ops.local("up")?.clone(), true).await?,
        Command::Spawn(args) => return spawn(&ops, args).await,
        Command::List(args) => list(&ops, args).await?,
        Command::Stop { agent, no_wait } => {
            let agent = ops.stop(&agent, !no_wait).await?;
            println!("{} {}", agent.name, agent.status);
        }
        Command::Delete {
            agent,
            remote_branch,
        } => {
            let name = ops.delete(&agent, remote_branch).await?;
            println!("{name} deleted");
        }
        Command::Resume {
            agent,
            answers,
            answers_file,
            wait,
        } => {
            let answers = parse_answers(&answers, answers_file.as_deref())?;
            let before = ops.agent(&agent).await?;
            let last_seq = ops.last_event_seq(&before).await?;
            let agent = ops.resume(&agent, answers).await?;
            println!("{} resuming", agent.name);
            if wait {
                wait_until_resumed(&ops, agent.id).await?;
                return wait_for_end(&ops, agent.id, last_seq).await;
            }
        }
        Command::Dismiss { agent } => {
            let agent = ops.dismiss(&agent).await?;
            println!("{} dismissed", agent.name);
        }
        Command::Cleanup {
            agent: Some(agent), ..
        } => {
            let agent = ops.cleanup(&agent).await?;
            println!("{} checkout being removed on its node", agent.name);
        }
        Command::Cleanup {
            agent: None,
            dry_run,
        } => {
            let fleet = ops.local("cleanup")?;
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
            output::agent(&ops.agent_detail(&agent).await?, json);
        }
        Command::Diff { agent, stat, json } => {
            diff::print(&ops.agent_diff(&agent, !stat).await?, json)
        }
        Command::Logs {
            agent,
            follow,
            json,
        } => {
            let agent = ops.agent(&agent).await?;
            if follow {
                ops.follow(agent.id, json, 0).await?;
            } else {
                for event in ops.events(&agent).await? {
                    output::event(&event, json);
                }
            }
        }
        Command::Workers { all, json } => output::workers(&ops.workers(all).await?, json),
        Command::Queue { json } => {
            let (stats, controls) = ops.queue().await?;
            output::queue(&stats, &controls, json)
        }
        Command::Usage { by, since, json } => {
            let fleet = ops.local("usage")?;
            usage::report(&fleet.store, by, since.as_deref(), json).await?
        }
    }
    Ok(0)
}

/// One page of agents, as `list` was asked; the cursor of the next goes to stderr, so the
/// table (or the JSON page) stays alone on stdout.
async fn list(ops: &Ops, args: ListArgs) -> anyhow::Result<()> {
    let query = crate::store::AgentQuery {
        statuses: args.status,
        project: args.project,
        provider: args.provider,
        task_id: args.task_id,
        name_prefix: args.name,
        search: None,
        created_after: args.created_after,
        created_before: args.created_before,
        include_dismissed: args.all,
        page: crate::domain::PageRequest::parse(Some(args.limit), args.cursor.as_deref())
            .map_err(anyhow::Error::msg)?,
    };
    let page = ops
        .list_agents(query, args.limit, args.cursor.as_deref())
        .await?;
    if args.json {
        output::json(&page);
    } else {
        output::agents(&page.items);
        if let Some(next) = &page.next_cursor {
            eprintln!("more: add --cursor {next}");
        }
    }
    Ok(())
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
