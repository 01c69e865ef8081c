//! The `agentfleet` command line (clap): every operation of the fleet, talking to the store
//! and the queue directly, plus the long-running `worker`, `serve` and `up`.

mod accounts;
mod agents;
mod args;
mod diff;
mod doctor;
mod output;
mod webhooks;

pub use args::{
    AccountCommand, Cli, Command, ListArgs, ProjectCommand, SecretSource, SpawnArgs, WebhookCommand,
};

use accounts::account;
use agents::{follow_events, parse_answers, spawn, wait_for_end, wait_until_resumed};

use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::fleet::{Fleet, FleetError};
use crate::store::Store;
use crate::worker::{self, Shutdown};

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
    if let Command::Openapi = command {
        print!("{}", crate::api::openapi::document());
        return Ok(0);
    }
    if let Command::Doctor { json } = command {
        return tokio::task::spawn_blocking(move || doctor::run(&settings, json)).await?;
    }
    let fleet = Fleet::connect(settings).await?;
    match command {
        Command::Migrate | Command::Openapi | Command::Doctor { .. } => {
            unreachable!("handled above")
        }
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
        Command::Project(ProjectCommand::Update {
            name,
            remote,
            branch,
        }) => {
            let project = fleet
                .update_project(&name, remote.as_deref(), branch.as_deref())
                .await
                .map_err(user)?;
            println!(
                "project {} updated ({}, branch {})",
                project.name, project.remote_url, project.default_branch
            );
        }
        Command::Project(ProjectCommand::Remove { name, force }) => {
            let agents = fleet.remove_project(&name, force).await.map_err(user)?;
            println!("project {name} removed (with {agents} agent record(s))");
        }
        Command::Project(ProjectCommand::List { json }) => {
            output::projects(&fleet.all_projects().await.map_err(user)?, json)
        }
        Command::Account(command) => account(&fleet, command).await?,
        Command::Webhook(command) => webhooks::webhook(&fleet, command).await?,
        Command::Worker => run_until_signal(fleet, false).await?,
        Command::Serve => {
            let shutdown = signals();
            crate::api::serve(fleet, shutdown.soft.clone(), None).await?
        }
        Command::Up => run_until_signal(fleet, true).await?,
        Command::Spawn(args) => return spawn(&fleet, args).await,
        Command::List(args) => list(&fleet, args).await?,
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
        Command::Diff { agent, stat, json } => {
            diff::print(&fleet.agent_diff(&agent, !stat).await.map_err(user)?, json)
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
            workers.sort_by_key(|w| std::cmp::Reverse((w.started_at, w.id.clone())));
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

/// One page of agents, as `list` was asked; the cursor of the next goes to stderr, so the
/// table (or the JSON page) stays alone on stdout.
async fn list(fleet: &Fleet, args: ListArgs) -> anyhow::Result<()> {
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
    let page = fleet.list_agents(&query).await.map_err(user)?;
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
