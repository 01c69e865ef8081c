//! The sections of the configuration as typed structs, one per table of
//! `config/default.toml` (which documents every key), and the mode they select.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::ProviderSettings;

/// The two ways to run: everything on one machine with no services (SQLite store,
/// embedded queue and events), or workers on any number of machines sharing Postgres and
/// Redis (the distributed mode). Either is a fleet: the front door (`Fleet`) is the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Distributed,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub worker: WorkerSettings,
    pub api: ApiSettings,
    pub queue: QueueSettings,
    pub agent: AgentSettings,
    pub limits: LimitSettings,
    pub secrets: SecretsSettings,
    pub credentials: CredentialSettings,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderSettings>,
    pub sandbox: SandboxSettings,
    /// Prices per million tokens, by provider then model (`default`: the provider's other
    /// models), for the costs of providers that report tokens only.
    #[serde(default)]
    pub pricing: BTreeMap<String, BTreeMap<String, crate::domain::Price>>,
    pub webhooks: WebhookSettings,
    pub client: ClientSettings,
    /// The configuration file the settings were read from (`--config` or
    /// `AGENTFLEET_CONFIG`), hidden from agents.
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
}

/// The CLI as a client of a fleet's API (`cli/remote.rs`).
#[derive(Debug, Clone, Deserialize)]
pub struct ClientSettings {
    /// A file holding the API's bearer token (empty: none).
    pub token_file: PathBuf,
}

/// Webhook delivery (see `webhooks`).
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookSettings {
    /// Targets on private, loopback or link-local addresses are allowed.
    pub allow_private: bool,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_for: Duration,
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Subscriptions one worker delivers to at once.
    pub concurrency: u32,
    /// How long delivered and failed deliveries are kept.
    #[serde(with = "humantime_serde")]
    pub keep_for: Duration,
}

/// The sandbox provider processes run in (see `sandbox`).
#[derive(Debug, Clone, Deserialize)]
pub struct SandboxSettings {
    pub mode: SandboxMode,
    /// Names of worker environment variables passed on to providers.
    pub env_passthrough: Vec<String>,
    /// Extra trees (or files) agents may read.
    pub read_paths: Vec<PathBuf>,
    /// Extra trees (or files) agents may read and write.
    pub write_paths: Vec<PathBuf>,
    pub network: SandboxNetwork,
    pub limits: SandboxLimits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxMode {
    On,
    Off,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SandboxNetwork {
    pub mode: NetworkMode,
    /// `host:port` entries agents may connect to.
    pub allow: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    Restricted,
    Open,
}

/// Per-agent limits; 0 means none.
#[derive(Debug, Clone, Deserialize)]
pub struct SandboxLimits {
    pub processes: u64,
    pub memory_mb: u64,
    pub cpu_seconds: u64,
    pub file_size_mb: u64,
    pub disk_mb: u64,
    pub open_files: u64,
    /// A memory and a pids cgroup per agent where the worker may create them.
    pub cgroups: bool,
}

/// Where the key that seals account credentials comes from (see `credentials::Keyring`).
#[derive(Clone, Deserialize)]
pub struct SecretsSettings {
    /// 32 bytes, base64 or hex.
    pub key: String,
    /// A file holding the key (base64 or hex).
    pub key_file: PathBuf,
}

impl std::fmt::Debug for SecretsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsSettings")
            .field("key", &if self.key.is_empty() { "" } else { "<set>" })
            .field("key_file", &self.key_file)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct CredentialSettings {
    #[serde(with = "humantime_serde")]
    pub refresh_margin: Duration,
    #[serde(with = "humantime_serde")]
    pub exhaustion_cooldown: Duration,
    #[serde(with = "humantime_serde")]
    pub refresh_lock_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub refresh_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
    pub create_if_missing: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RedisSettings {
    pub url: String,
    pub prefix: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WorkerSettings {
    pub capacity: u32,
    pub workspace_root: PathBuf,
    pub node_id: String,
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub event_flush_interval: Duration,
    pub output_buffer_lines: usize,
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub stop_grace: Duration,
    pub on_shutdown: OnShutdown,
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub handoff_grace: Duration,
    /// How long an agent's process runs on once no worker supervises it (its heartbeat is
    /// stale) before it stops itself; a worker restarted on the node within it re-attaches.
    #[serde(with = "humantime_serde")]
    pub orphan_grace: Duration,
    /// How long a worker that cannot reach the store keeps its agents before it stops them;
    /// unset: `lease_ttl + orphan_grace`, the longest the fleet waits (see `partition_timeout()`).
    #[serde(default, with = "humantime_serde")]
    pub partition_timeout: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub cleanup_interval: Duration,
    /// Below this much free space in the workspace the worker takes no spawns.
    pub min_free_disk_mb: u64,
    /// How often the worker checks that it can write its workspace.
    #[serde(with = "humantime_serde")]
    pub disk_check_interval: Duration,
    /// How often a worker re-sends control requests (and spawns) the queue seems to have
    /// lost, and looks at its control queues without a push.
    #[serde(with = "humantime_serde")]
    pub control_poll_interval: Duration,
    /// How long a resume waits for a worker on the agent's node before it fails.
    #[serde(with = "humantime_serde")]
    pub resume_timeout: Duration,
    /// Where the worker serves /metrics, /healthz and /readyz; empty: not served.
    #[serde(default)]
    pub metrics_bind: String,
}

impl WorkerSettings {
    /// How long a worker cut off from the store keeps its agents (see the field).
    pub fn partition_timeout(&self) -> Duration {
        self.partition_timeout
            .unwrap_or(self.lease_ttl + self.orphan_grace)
    }
}

/// What a draining worker does with its running agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnShutdown {
    Leave,
    Stop,
}

#[derive(Debug, Clone, Deserialize)]
pub struct QueueSettings {
    #[serde(with = "humantime_serde")]
    pub redispatch_after: Duration,
    pub max_attempts: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AgentSettings {
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub max_runtime: Duration,
    /// Largest event stored from one output line; a longer line is cut with a marker.
    pub max_event_bytes: usize,
    /// Most output read from one agent; past it the agent is stopped (output_limit).
    pub max_output_bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ApiSettings {
    pub bind: String,
    pub tokens: Vec<String>,
    /// Tokens that may read but change nothing (mutations answer 403 `forbidden`).
    #[serde(default)]
    pub read_only_tokens: Vec<String>,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// A connection that has not sent a whole request header this long after it opened (or
    /// after its previous response) is closed.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// A connection on which no byte moved this long while none of its requests was being
    /// handled (a client that stopped reading its response) is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Open connections at most; further ones are answered 503 and closed.
    pub max_connections: usize,
    /// Requests per second per token on /v1 (0: no limit).
    pub rate_limit: u32,
    /// How many requests a token may make at once above its rate.
    pub rate_limit_burst: u32,
    /// Largest patch an agent's diff returns, in bytes; a longer one is cut (`truncated`).
    pub diff_max_bytes: usize,
    /// Where agents' diffs are read from: a cache of the projects' remotes (empty:
    /// `<worker.workspace_root>/diff-cache`).
    pub diff_cache_dir: PathBuf,
}

impl ApiSettings {
    /// The body a spawn needs at most: a prompt and one input file of the largest sizes,
    /// each JSON-escaped at the worst (six bytes per byte, `\u0001`), and the rest of the
    /// request's fields.
    pub fn body_needed(limits: &LimitSettings) -> usize {
        const ESCAPED: usize = 6;
        const FIELDS: usize = 64 * 1024;
        ESCAPED * (limits.max_prompt_bytes + limits.max_input_file_bytes) + FIELDS
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct LimitSettings {
    pub max_prompt_bytes: usize,
    pub max_input_file_bytes: usize,
}
