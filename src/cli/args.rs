//! The command line's grammar (clap): every command, its arguments and its help text. What
//! each command does is in `mod.rs` and its siblings.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};

use crate::domain::AgentStatus;

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
    /// Work through a fleet's HTTP API at this URL instead of the configured store (no
    /// database or Redis settings needed, nothing written here).
    #[arg(long, global = true, value_name = "URL", env = "AGENTFLEET_API_URL")]
    pub api: Option<String>,
    /// The API's bearer token (else read from client.token_file); never printed.
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        env = "AGENTFLEET_API_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
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
    /// Print the HTTP API's OpenAPI document (as `GET /openapi.json` serves it).
    Openapi,
    /// Say what the agents' sandbox enforces on this host and whether each provider's
    /// command runs inside it; exits 1 when something required is missing.
    Doctor {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Manage projects (git repositories agents work on).
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Manage provider accounts (their credentials are stored sealed; never printed).
    #[command(subcommand)]
    Account(AccountCommand),
    /// Manage webhook subscriptions (agents' status changes POSTed to a URL, signed).
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Run a worker: take spawn jobs and run their agents.
    Worker,
    /// Serve the HTTP API.
    Serve,
    /// Run the API and a worker in one process.
    Up,
    /// Ask for a new agent.
    Spawn(SpawnArgs),
    /// List agents, newest first, one page at a time (dismissed ones with --all).
    List(ListArgs),
    /// Stop a running agent (its worker sends SIGTERM, then SIGKILL after worker.stop_grace).
    Stop {
        /// The agent's id or name.
        agent: String,
        /// Return at once instead of waiting for the agent to stop.
        #[arg(long)]
        no_wait: bool,
    },
    /// Delete an agent: stop it, remove its worktree, local branch, files and records.
    Delete {
        /// The agent's id or name.
        agent: String,
        /// Also delete the agent's branch on the project's remote.
        #[arg(long)]
        remote_branch: bool,
    },
    /// Answer an agent's questions: its provider resumes the same session in its worktree.
    Resume {
        /// The agent's id or name.
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
    Dismiss {
        /// The agent's id or name.
        agent: String,
    },
    /// With AGENT: free that ended agent's checkout on its node (its record and pushed
    /// branch stay). Without: remove worktrees, branches and files under this node's
    /// workspace that belong to no agent.
    Cleanup {
        /// The agent's id or name.
        agent: Option<String>,
        /// Say what would be removed; remove nothing.
        #[arg(long, conflicts_with = "agent")]
        dry_run: bool,
    },
    /// Show one agent by id or name.
    Get {
        /// The agent's id or name.
        agent: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show an agent's pushed work against the commit it started from: the files changed
    /// with their line counts, then the patch.
    Diff {
        /// The agent's id or name.
        agent: String,
        /// The files and counts only, without the patch.
        #[arg(long)]
        stat: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show an agent's normalised output; -f follows it until the agent ends.
    Logs {
        /// The agent's id or name.
        agent: String,
        /// Follow the output until the agent ends.
        #[arg(short, long)]
        follow: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List workers and their leases.
    Workers {
        /// Also workers that ended more than ten minutes ago.
        #[arg(long)]
        all: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show what the agents used (tokens, cost, turns), summed by project, account, provider
    /// or UTC day.
    Usage {
        /// What to sum by: project, account, provider or day.
        #[arg(long, default_value = "project", value_parser = parse_group)]
        by: crate::domain::UsageGroup,
        /// Only usage recorded since this long ago: a number and a unit (s, m, h, d, w),
        /// e.g. 7d.
        #[arg(long)]
        since: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show the queue: pending depth, oldest pending request, requests per kind and status,
    /// and the control queues per node (pending stop, delete and resume requests).
    Queue {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Register a git repository.
    Add {
        /// The project's name (letters, digits, `-`, `_`, `.`).
        name: String,
        /// The git remote agents clone from and push to.
        #[arg(long)]
        remote: String,
        /// The branch agents start from.
        #[arg(long, default_value = "main")]
        branch: String,
    },
    /// Change a project's remote, default branch (agents spawned from now on use them) or
    /// daily budget.
    #[command(alias = "set")]
    Update {
        /// The project's name.
        name: String,
        /// The new git remote.
        #[arg(long)]
        remote: Option<String>,
        /// The new branch agents start from.
        #[arg(long)]
        branch: Option<String>,
        /// What the project's agents may cost in a UTC day, in US dollars ("none" removes
        /// the budget); a spawn is refused once it is spent, and a running agent that goes
        /// over it is stopped.
        #[arg(long)]
        daily_cost_usd: Option<String>,
        /// Most of the project's agents starting or running at once, fleet-wide ("none"
        /// removes the cap); further spawns wait, in order.
        #[arg(long)]
        max_concurrent: Option<String>,
    },
    /// Remove a project with its agents' records (their pushed branches stay on the
    /// remote); refused while any of its agents is pending or running.
    Remove {
        /// The project's name.
        name: String,
        /// Stop its pending and running agents first.
        #[arg(long)]
        force: bool,
    },
    /// List projects.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Which agents `list` shows: every filter given must hold.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON instead of text: {"items": [...], "next_cursor": ...}.
    #[arg(long)]
    pub json: bool,
    /// Also dismissed agents (marked).
    #[arg(long)]
    pub all: bool,
    /// Only agents in this status (repeatable).
    #[arg(long, value_parser = agent_status)]
    pub status: Vec<AgentStatus>,
    /// Only the agents of this project.
    #[arg(long)]
    pub project: Option<String>,
    /// Only agents of this provider.
    #[arg(long)]
    pub provider: Option<String>,
    /// Only agents spawned with this task id.
    #[arg(long)]
    pub task_id: Option<String>,
    /// Only agents whose name starts with this.
    #[arg(long, value_name = "PREFIX")]
    pub name: Option<String>,
    /// Only agents created since this time: RFC 3339, or an age such as 2h or 7d.
    #[arg(long, value_name = "TIME", value_parser = time_or_age)]
    pub created_after: Option<DateTime<Utc>>,
    /// Only agents created before this time: RFC 3339, or an age such as 2h or 7d.
    #[arg(long, value_name = "TIME", value_parser = time_or_age)]
    pub created_before: Option<DateTime<Utc>>,
    /// How many to show (at most 1000).
    #[arg(long, default_value_t = crate::domain::page::DEFAULT_PAGE, value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::domain::page::MAX_PAGE)))]
    pub limit: u32,
    /// Show the page after the one that printed this cursor.
    #[arg(long)]
    pub cursor: Option<String>,
}

/// A status by its name (`running`, `waiting_for_input`, ...).
fn agent_status(s: &str) -> Result<AgentStatus, String> {
    AgentStatus::parse(s).ok_or_else(|| {
        let names: Vec<_> = AgentStatus::ALL.iter().map(|s| s.as_str()).collect();
        format!("not a status; one of {}", names.join(", "))
    })
}

/// A time given as RFC 3339, or as an age back from now (`90s`, `2h`, `7d`).
pub fn time_or_age(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(s) {
        return Ok(at.with_timezone(&Utc));
    }
    let age = humantime::parse_duration(s)
        .map_err(|_| "not a time (RFC 3339) nor an age such as 2h or 7d".to_string())?;
    chrono::Duration::from_std(age)
        .ok()
        .and_then(|age| Utc::now().checked_sub_signed(age))
        .ok_or_else(|| "that age reaches too far back".to_string())
}

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Subscribe a URL to agents' status changes; prints the subscription's id and its
    /// signing secret (shown this once).
    Add {
        /// Where to POST the events (http:// or https://).
        url: String,
        /// An event to receive (repeat for more; all when none): agent.started,
        /// agent.completed, agent.waiting_for_input, agent.failed, agent.crashed,
        /// agent.stopped, agent.rate_limited, agent.account_exhausted, agent.deleted.
        #[arg(long = "event", value_name = "EVENT", value_parser = parse_event)]
        events: Vec<crate::domain::WebhookEvent>,
        /// Only agents of this project.
        #[arg(long)]
        project: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List subscriptions (never their secrets).
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove a subscription; its deliveries not sent yet are dropped.
    Remove {
        /// The subscription's id.
        id: String,
    },
    /// A subscription's recent deliveries: event, status, attempts, last error.
    Deliveries {
        /// The subscription's id.
        id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Send a delivery again (also a failed one), with the same webhook-id.
    Redeliver {
        /// The delivery's id (its webhook-id header).
        delivery_id: String,
    },
}

fn parse_event(text: &str) -> Result<crate::domain::WebhookEvent, String> {
    crate::domain::WebhookEvent::parse(text).ok_or_else(|| {
        let known: Vec<&str> = crate::domain::WebhookEvent::ALL
            .iter()
            .map(|e| e.as_str())
            .collect();
        format!("unknown event; one of {}", known.join(", "))
    })
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Add an account: an API key (from an env var or a file) or a provider credentials
    /// file (OAuth tokens, e.g. claude's .credentials.json).
    Add {
        /// The provider the account is for (claude, codex, gemini, ...).
        #[arg(long)]
        provider: String,
        /// The account's label.
        #[arg(long)]
        label: String,
        #[command(flatten)]
        secret: SecretSource,
        /// At most this many agents on the account at once.
        #[arg(long)]
        max_concurrent: Option<i32>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List accounts with a fingerprint of their credentials (never the credentials).
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove an account.
    Remove {
        /// The account's label.
        label: String,
    },
    /// Make an exhausted or invalid account usable again.
    Reset {
        /// The account's label.
        label: String,
    },
    /// Re-seal every account's credentials under a new key (read from the file; a fresh
    /// key is generated into it if it does not exist). Then configure that key.
    RotateKey {
        /// The file holding the new key (generated into it when it does not exist).
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
    pub api_key_env: Option<String>,
    /// A file holding the API key.
    #[arg(long)]
    pub api_key_file: Option<PathBuf>,
    /// The provider's credentials file (JSON with OAuth tokens).
    #[arg(long)]
    pub credentials_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SpawnArgs {
    /// The CLI to run: claude, codex, gemini, cursor, auggie, amp, opencode, or a provider
    /// configured with kind = "command".
    #[arg(long, default_value = "claude")]
    pub provider: String,
    /// The project (git repository) the agent works on.
    #[arg(long)]
    pub project: String,
    /// The agent's name (default: a generated one); not shaped like an agent id.
    #[arg(long)]
    pub name: Option<String>,
    /// How the agent works: execute (the default) edits and runs anything in its
    /// checkout; plan, review and discuss change no file.
    #[arg(long, value_parser = ["execute", "plan", "review", "discuss"])]
    pub mode: Option<String>,
    /// Your own id for the task, kept on the agent.
    #[arg(long)]
    pub task_id: Option<String>,
    /// Retries with the same key and request get the same agent, run once.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// A file handed to the agent under .agentfleet/input/ (repeatable).
    #[arg(long = "input")]
    pub inputs: Vec<PathBuf>,
    /// Read the prompt from a file instead of the command line.
    #[arg(long, conflicts_with = "prompt")]
    pub prompt_file: Option<PathBuf>,
    /// Follow the agent's output until it ends; exit 0 only on success.
    #[arg(long)]
    pub wait: bool,
    /// Run the request again (up to N times) if its worker is lost.
    #[arg(long)]
    pub retries: Option<u32>,
    /// The model to run (default: providers.<name>.model, else the CLI's own choice).
    #[arg(long)]
    pub model: Option<String>,
    /// Stop the agent once it used more tokens than this (all kinds, all its runs).
    #[arg(long)]
    pub max_tokens: Option<i64>,
    /// Stop the agent once it cost more than this many US dollars.
    #[arg(long)]
    pub max_cost_usd: Option<f64>,
    /// Stop the agent once it took more model turns than this.
    #[arg(long)]
    pub max_turns: Option<i64>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// The task (or --prompt-file).
    pub prompt: Option<String>,
}

/// `--by`: one of the usage groups.
fn parse_group(text: &str) -> Result<crate::domain::UsageGroup, String> {
    crate::domain::UsageGroup::parse(text)
        .ok_or_else(|| "expected one of project, account, provider, day".to_string())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn all_commands(cmd: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        out.push((path.clone(), cmd.clone()));
        for sub in cmd.get_subcommands() {
            all_commands(sub, format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_option_of_every_command_has_help() {
        let mut commands = Vec::new();
        all_commands(&Cli::command(), "agentfleet".into(), &mut commands);
        for (path, cmd) in &commands {
            for arg in cmd.get_arguments() {
                if matches!(arg.get_id().as_str(), "help" | "version") {
                    continue;
                }
                assert!(
                    arg.get_help().is_some(),
                    "`{path}`: `{}` has no help text",
                    arg.get_id()
                );
            }
        }
    }

    #[test]
    fn mode_and_provider_say_their_values() {
        let cli = Cli::command();
        let spawn = cli.find_subcommand("spawn").unwrap();
        let arg = |id: &str| {
            spawn
                .get_arguments()
                .find(|a| a.get_id() == id)
                .unwrap()
                .clone()
        };
        let modes: Vec<String> = arg("mode")
            .get_possible_values()
            .iter()
            .map(|v| v.get_name().to_string())
            .collect();
        let all: Vec<&str> = crate::domain::AgentMode::ALL.map(|m| m.as_str()).to_vec();
        assert_eq!(modes, all);
        let help = arg("provider").get_help().unwrap().to_string();
        for b in crate::providers::BUILT_IN {
            assert!(help.contains(b.name), "{help}");
        }
    }
}
