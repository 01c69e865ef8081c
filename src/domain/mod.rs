//! The plain data every part of the fleet shares: agents, their statuses, projects, workers,
//! spawn requests and stored events. No I/O here, so the API, the CLI, the worker and the
//! store all speak the same types.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub mod integral;
pub mod page;
mod payload;
mod usage;
mod webhook;

pub use page::{Cursor, Page, PageRequest};
pub use payload::{ControlArgs, StoredPayload};
pub use usage::{
    AGO_PATTERN, Budget, DEFAULT_PRICE, PROJECT_DAILY_COST, Price, Usage, UsageGroup, UsageReport,
    UsageTotal, budget_reason, parse_ago, start_of_utc_day,
};
pub use webhook::{DeliveryStatus, Webhook, WebhookDelivery, WebhookEvent};

/// Where an agent is in its life. `pending` is recorded at enqueue; a worker moves it to
/// `starting` when it claims the request and to `running` once the process is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    Pending,
    Starting,
    Running,
    Completed,
    WaitingForInput,
    Failed,
    Crashed,
    Stopped,
}

impl AgentStatus {
    pub const ALL: [AgentStatus; 8] = [
        Self::Pending,
        Self::Starting,
        Self::Running,
        Self::Completed,
        Self::WaitingForInput,
        Self::Failed,
        Self::Crashed,
        Self::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::WaitingForInput => "waiting_for_input",
            Self::Failed => "failed",
            Self::Crashed => "crashed",
            Self::Stopped => "stopped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// A status the agent leaves only through a new request (resume, delete).
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending | Self::Starting | Self::Running)
    }

    /// Whether `--wait` and friends count this end as a success.
    pub fn is_success(self) -> bool {
        matches!(self, Self::Completed | Self::WaitingForInput)
    }
}

impl std::fmt::Display for AgentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgentMode {
    #[default]
    Execute,
    Plan,
    Review,
    Discuss,
}

impl AgentMode {
    pub const ALL: [Self; 4] = [Self::Execute, Self::Plan, Self::Review, Self::Discuss];

    /// The modes' names, as callers give them: `execute, plan, review, discuss`.
    pub fn names() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Execute => "execute",
            Self::Plan => "plan",
            Self::Review => "review",
            Self::Discuss => "discuss",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// A question an agent asked before it can go on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PendingQuestion {
    pub id: String,
    pub question: String,
}

/// The agent as the API and `agentfleet get --json` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Agent {
    pub id: Uuid,
    pub name: String,
    pub provider: String,
    pub mode: AgentMode,
    pub project: String,
    pub task_id: Option<String>,
    pub status: AgentStatus,
    pub session_id: Option<String>,
    pub worker_id: Option<String>,
    pub node_id: Option<String>,
    pub owner_epoch: Option<i64>,
    pub pid: Option<i32>,
    pub branch: String,
    pub workdir: Option<String>,
    pub output_path: Option<String>,
    pub result: Option<String>,
    pub pending_questions: Vec<PendingQuestion>,
    pub error: Option<String>,
    pub exit_code: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Hidden from `list` unless asked for.
    pub dismissed: bool,
    /// How far into the output file the stored events reach (bytes).
    pub output_offset: i64,
    /// Start time of `pid` (clock ticks since boot), which tells a reused pid apart.
    pub pid_start_time: Option<i64>,
    /// The account it runs (or last ran) on; `None` runs on the CLI's own login.
    #[serde(default)]
    pub account_id: Option<Uuid>,
    /// What it used so far, over all its runs (kept current while it runs).
    #[serde(default)]
    pub usage: Usage,
    /// The model it runs (asked for, or its provider's configured default); None: the
    /// CLI's own choice.
    #[serde(default)]
    pub model: Option<String>,
    /// Its limits (None: none).
    #[serde(default)]
    pub budget: Option<Budget>,
    /// The commit its checkout started from (its project's base branch then).
    #[serde(default)]
    pub base_commit: Option<String>,
    /// The commit its branch was last pushed at; `None` until a run pushed one.
    #[serde(default)]
    pub pushed_commit: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Project {
    pub id: Uuid,
    pub name: String,
    pub remote_url: String,
    pub default_branch: String,
    pub created_at: DateTime<Utc>,
    /// What its agents may cost in a UTC day, in US dollars (None: no limit).
    #[serde(default)]
    pub daily_cost_usd: Option<f64>,
    /// Most of its agents starting or running at once, fleet-wide (None: no cap).
    #[serde(default)]
    pub max_concurrent: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerInfo {
    pub id: String,
    pub node_id: String,
    pub host: String,
    pub pid: i32,
    pub capacity: i32,
    pub running: i32,
    pub status: String,
    pub epoch: i64,
    pub started_at: DateTime<Utc>,
    pub last_heartbeat_at: DateTime<Utc>,
    pub lease_expires_at: DateTime<Utc>,
    /// Seconds since the last renewal, as the store saw it.
    pub lease_age_seconds: f64,
}

impl WorkerInfo {
    /// How long a worker that is no longer alive stays in `workers` (`--all` shows it
    /// after that too).
    pub const SHOWN_AFTER_IT_ENDS: f64 = 600.0;

    /// Alive, or ended within `SHOWN_AFTER_IT_ENDS`.
    pub fn recently_seen(&self) -> bool {
        self.status == "alive" || self.lease_age_seconds < Self::SHOWN_AFTER_IT_ENDS
    }
}

/// An input file the caller hands the agent; written under `.agentfleet/input/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InputFile {
    /// A relative path inside the input folder: 1 to 255 bytes, segments joined by single
    /// slashes, none `.` or `..`, no backslash.
    #[schema(
        min_length = 1,
        pattern = r"^(?!/)(?![\s\S]*//)(?![\s\S]*/$)(?!([\s\S]*/)?\.\.?(/|$))[^\u0000\\]+$"
    )]
    pub name: String,
    #[schema(pattern = r"^[^\u0000]*$")]
    pub content: String,
}

/// What a caller asks for when it spawns an agent (HTTP body and CLI flags alike). The
/// patterns say what the front door accepts: names as `workspace::validate_name` has them,
/// no NUL in any string, a prompt that is not blank.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpawnRequest {
    /// A provider of the fleet's catalog: a built-in one or one configured under
    /// `providers`.
    #[schema(pattern = r"^[^\u0000]+$")]
    pub provider: String,
    #[schema(pattern = r"^[^\u0000]*$")]
    pub project: String,
    /// At most `limits.max_prompt_bytes` bytes (256 KiB unless configured).
    #[schema(
        pattern = r"^[^\u0000]*[^\u0000\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000]*$"
    )]
    pub prompt: String,
    /// The agent's name (generated when absent): 1 to 64 of `[A-Za-z0-9._-]`, as a git
    /// branch name allows, not shaped like an agent id.
    #[serde(default)]
    #[schema(
        pattern = r"^(?![0-9A-Fa-f]{32}$)(?![0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$)(?!.*\.\.)(?!.*\.lock$)(?!.*\.$)[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$"
    )]
    pub name: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<AgentMode>)]
    pub mode: Option<String>,
    #[serde(default)]
    #[schema(pattern = r"^[^\u0000]*$")]
    pub task_id: Option<String>,
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\u0000]*$")]
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub inputs: Vec<InputFile>,
    /// How many times the fleet may run the request again if its worker is lost.
    #[serde(default, deserialize_with = "integral::option")]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 4294967295_u64)]
    pub retries: Option<u32>,
    /// The model to run, passed to the CLI by its own flag (the provider's
    /// `providers.<name>.model` when absent); refused for a CLI without one. 1 to 200 of
    /// letters, digits and `_.:/@+[]-`, not starting with `-`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[A-Za-z0-9_.:/@+\[\]][A-Za-z0-9_.:/@+\[\]-]{0,199}$")]
    pub model: Option<String>,
    /// Limits on what the agent may use; going over one stops it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
}

/// One normalised event in an agent's durable log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoredEvent {
    pub seq: i64,
    pub kind: String,
    pub data: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// The final word on an agent, written once when its process ends.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentOutcome {
    pub status: AgentStatus,
    pub result: Option<String>,
    pub questions: Vec<PendingQuestion>,
    pub error: Option<String>,
    pub exit_code: Option<i32>,
    pub session_id: Option<String>,
}

/// What ops read to scale: the spawn backlog, and every request and agent by status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueStats {
    /// Spawn requests waiting for a worker.
    pub depth: i64,
    /// When the oldest of them was recorded.
    pub oldest_pending_at: Option<DateTime<Utc>>,
    /// How long the oldest of them has waited, by the store's clock.
    pub oldest_pending_age_seconds: Option<f64>,
    /// Requests per kind (spawn, stop, delete), then per status.
    pub by_kind: std::collections::BTreeMap<String, std::collections::BTreeMap<String, i64>>,
    /// Agents per status.
    pub agents_by_status: std::collections::BTreeMap<String, i64>,
}

/// What an account's sealed secret is: an API key (handed to the process as an env var) or
/// a provider credentials file (OAuth tokens, written into the account's config dir).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    ApiKey,
    Oauth,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "api_key",
            Self::Oauth => "oauth",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "api_key" => Some(Self::ApiKey),
            "oauth" => Some(Self::Oauth),
            _ => None,
        }
    }
}

/// A provider account as the API and `agentfleet account list` show it. The secret stays
/// sealed (`sealed`, never serialised); `fingerprint` tells accounts apart.
#[derive(Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Account {
    pub id: Uuid,
    pub provider: String,
    pub label: String,
    pub kind: AccountKind,
    pub fingerprint: String,
    pub max_concurrent: Option<i32>,
    /// Agents holding it right now.
    #[serde(default)]
    pub in_use: i64,
    pub last_used_at: Option<DateTime<Utc>>,
    /// Exhausted (usage or rate limit) until then; usable again afterwards by itself.
    pub exhausted_until: Option<DateTime<Utc>>,
    /// Set when its credentials were refused or could not be refreshed; cleared by reset.
    pub invalid_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Version byte, nonce and ciphertext; opened only by `credentials`.
    #[serde(skip, default)]
    pub sealed: Vec<u8>,
    /// Fingerprint of the key that sealed it.
    #[serde(skip, default)]
    pub key_id: String,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("id", &self.id)
            .field("provider", &self.provider)
            .field("label", &self.label)
            .field("kind", &self.kind)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}
