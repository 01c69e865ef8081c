//! Typed configuration, loaded once at start-up from three layers (built-in
//! `config/default.toml`, an optional file, `AGENTFLEET__*` environment variables) and
//! validated before anything else runs, so a bad value stops the process with its key named.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::providers::ProviderSettings;
use crate::store::StoreKind;

mod known_keys;

const DEFAULTS: &str = include_str!("../config/default.toml");
/// Below this an event cannot even hold a short line with its truncation marker.
const MIN_EVENT_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] ::config::ConfigError),
    #[error("configuration key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
    #[error("configuration: {0}")]
    UnknownKey(known_keys::UnknownKey),
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        reason: reason.into(),
    }
}

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
    /// The configuration file the settings were read from (`--config` or
    /// `AGENTFLEET_CONFIG`), hidden from agents.
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
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

impl Settings {
    /// Loads the layers; `file` is `--config` (falls back to `AGENTFLEET_CONFIG`).
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let env_file = std::env::var_os("AGENTFLEET_CONFIG").map(PathBuf::from);
        let file = file.map(Path::to_path_buf).or(env_file);
        Self::load_layers(file, environment())
    }

    /// As [`load`](Self::load), with `vars` in place of the process's environment (which
    /// is not read at all): how a deployment's environment would configure a process.
    pub fn load_with_environment(
        file: Option<&Path>,
        vars: ::config::Map<String, String>,
    ) -> Result<Self, ConfigError> {
        Self::load_layers(
            file.map(Path::to_path_buf),
            environment().source(Some(vars)),
        )
    }

    fn load_layers(
        file: Option<PathBuf>,
        environment: ::config::Environment,
    ) -> Result<Self, ConfigError> {
        let mut builder = ::config::Config::builder().add_source(::config::File::from_str(
            DEFAULTS,
            ::config::FileFormat::Toml,
        ));
        if let Some(path) = &file {
            builder = builder.add_source(::config::File::from(path.clone()).required(true));
        }
        // serde would ignore a key it has no field for, leaving a misspelt setting at its
        // default without a word: unknown keys stop start-up instead.
        let known = known_keys::KnownKeys::new();
        if let Some(path) = &file {
            known.check_file(path).map_err(ConfigError::UnknownKey)?;
        }
        known
            .check_environment(&environment)
            .map_err(ConfigError::UnknownKey)?;
        let builder = builder.add_source(environment);
        let mut settings: Settings = builder.build()?.try_deserialize()?;
        settings.config_file = file;
        settings.resolve_data_dir();
        settings.validate()?;
        // The configured command providers are valid (the front door builds its catalog
        // from them again).
        crate::providers::Providers::from_settings(&settings.providers)
            .map_err(|(key, reason)| invalid(&key, reason))?;
        Ok(settings)
    }

    /// An empty `database.url` means the embedded store in the data directory:
    /// `$XDG_DATA_HOME/agentfleet`, or `./.agentfleet` when XDG_DATA_HOME is not set.
    fn resolve_data_dir(&mut self) {
        if !self.database.url.trim().is_empty() {
            return;
        }
        let dir = match std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
            Some(data_home) => PathBuf::from(data_home).join("agentfleet"),
            None => std::env::current_dir()
                .unwrap_or_else(|_| PathBuf::from("."))
                .join(".agentfleet"),
        };
        self.database.url = format!("sqlite://{}", dir.join("agentfleet.db").display());
    }

    /// Which mode the store and Redis settings select (valid once `validate` passed).
    pub fn backend(&self) -> Backend {
        match StoreKind::of_url(&self.database.url) {
            Some(StoreKind::Postgres) => Backend::Distributed,
            _ => Backend::Embedded,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let redis_set = !self.redis.url.trim().is_empty();
        if redis_set
            && !self.redis.url.starts_with("redis://")
            && !self.redis.url.starts_with("rediss://")
        {
            return Err(invalid(
                "redis.url",
                "must be a redis:// or rediss:// URL, or empty for the embedded mode",
            ));
        }
        match StoreKind::of_url(&self.database.url) {
            None => {
                return Err(invalid(
                    "database.url",
                    "must be postgres://… (the distributed mode) or sqlite:… (the embedded mode); \
                     leave it empty for the embedded store in the data directory",
                ));
            }
            Some(StoreKind::Sqlite) if redis_set => {
                return Err(invalid(
                    "redis.url",
                    "is set, but database.url is SQLite (the embedded mode, one machine, no \
                     services): a Redis queue cannot serve a SQLite store. Clear redis.url \
                     (AGENTFLEET__REDIS__URL=\"\") for the embedded mode, or set database.url \
                     to a postgres:// URL for the distributed mode",
                ));
            }
            Some(StoreKind::Postgres) if !redis_set => {
                return Err(invalid(
                    "redis.url",
                    "is empty, but database.url is Postgres (the distributed mode), whose workers \
                     need Redis for the queue and live events. Set redis.url \
                     (AGENTFLEET__REDIS__URL=redis://…), or leave database.url empty for the \
                     embedded mode",
                ));
            }
            Some(_) => {}
        }
        if self.redis.prefix.is_empty() || self.redis.prefix.contains(char::is_whitespace) {
            return Err(invalid("redis.prefix", "must be non-empty without spaces"));
        }
        if self.worker.capacity == 0 {
            return Err(invalid("worker.capacity", "must be at least 1"));
        }
        if self.worker.lease_ttl <= self.worker.heartbeat_interval {
            return Err(invalid(
                "worker.lease_ttl",
                "must be longer than worker.heartbeat_interval",
            ));
        }
        if self.worker.orphan_grace <= self.worker.heartbeat_interval * 2 {
            return Err(invalid(
                "worker.orphan_grace",
                "must be longer than two worker.heartbeat_interval",
            ));
        }
        if let Some(timeout) = self.worker.partition_timeout
            && (timeout < self.worker.lease_ttl
                || timeout > self.worker.lease_ttl + self.worker.orphan_grace)
        {
            return Err(invalid(
                "worker.partition_timeout",
                "must lie between worker.lease_ttl and worker.lease_ttl + worker.orphan_grace \
                 (after that the fleet may run the worker's agents elsewhere)",
            ));
        }
        if self.worker.poll_interval.is_zero() {
            return Err(invalid("worker.poll_interval", "must be above zero"));
        }
        for (key, value) in [
            ("worker.sweep_interval", self.worker.sweep_interval),
            ("worker.cleanup_interval", self.worker.cleanup_interval),
            (
                "worker.disk_check_interval",
                self.worker.disk_check_interval,
            ),
            (
                "worker.control_poll_interval",
                self.worker.control_poll_interval,
            ),
            ("worker.resume_timeout", self.worker.resume_timeout),
            ("queue.redispatch_after", self.queue.redispatch_after),
            ("agent.idle_timeout", self.agent.idle_timeout),
            ("agent.max_runtime", self.agent.max_runtime),
            (
                "credentials.refresh_lock_ttl",
                self.credentials.refresh_lock_ttl,
            ),
            (
                "credentials.refresh_timeout",
                self.credentials.refresh_timeout,
            ),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be above zero"));
            }
        }
        if self.agent.max_event_bytes < MIN_EVENT_BYTES {
            return Err(invalid(
                "agent.max_event_bytes",
                format!("must be at least {MIN_EVENT_BYTES}"),
            ));
        }
        if self.agent.max_output_bytes == 0 {
            return Err(invalid("agent.max_output_bytes", "must be above zero"));
        }
        if self.queue.max_attempts == 0 {
            return Err(invalid("queue.max_attempts", "must be at least 1"));
        }
        if self.worker.event_flush_interval.is_zero() {
            return Err(invalid("worker.event_flush_interval", "must be above zero"));
        }
        self.api_bind()?;
        self.worker_metrics_bind()?;
        if self.limits.max_prompt_bytes == 0 {
            return Err(invalid("limits.max_prompt_bytes", "must be above zero"));
        }
        self.validate_api()?;
        if self.api.tokens.iter().any(|t| t.trim().is_empty()) {
            return Err(invalid("api.tokens", "tokens must not be empty strings"));
        }
        self.validate_sandbox()
    }

    /// The API's connection limits are set, and its body limit lets the largest valid
    /// spawn through (the limits on a spawn's parts are `limits.*`).
    fn validate_api(&self) -> Result<(), ConfigError> {
        let needed = ApiSettings::body_needed(&self.limits);
        if self.api.max_body_bytes < needed {
            return Err(invalid(
                "api.max_body_bytes",
                format!(
                    "{} bytes cannot carry a spawn of limits.max_prompt_bytes + \
                     limits.max_input_file_bytes JSON-escaped: at least {needed} bytes",
                    self.api.max_body_bytes
                ),
            ));
        }
        for (key, value) in [
            ("api.header_timeout", self.api.header_timeout),
            ("api.idle_timeout", self.api.idle_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be above zero"));
            }
        }
        if self.api.max_connections == 0 {
            return Err(invalid("api.max_connections", "must be at least 1"));
        }
        Ok(())
    }

    /// Sandbox settings that would hand agents what the sandbox exists to keep from them
    /// are refused: the fleet's own variables, and ports of the fleet's own services.
    fn validate_sandbox(&self) -> Result<(), ConfigError> {
        let sandbox = &self.sandbox;
        if let Some(name) = sandbox
            .env_passthrough
            .iter()
            .find(|n| n.to_ascii_uppercase().starts_with("AGENTFLEET") || n.contains('='))
        {
            return Err(invalid(
                "sandbox.env_passthrough",
                format!("`{name}` cannot be passed to agents (AGENTFLEET* variables never are)"),
            ));
        }
        for (key, paths) in [
            ("sandbox.read_paths", &sandbox.read_paths),
            ("sandbox.write_paths", &sandbox.write_paths),
        ] {
            if let Some(p) = paths.iter().find(|p| p.is_relative()) {
                return Err(invalid(key, format!("`{}` is not absolute", p.display())));
            }
        }
        let own = self.own_service_ports();
        for entry in &sandbox.network.allow {
            let port =
                allowed_port(entry).map_err(|reason| invalid("sandbox.network.allow", reason))?;
            if let Some((service, _)) = own.iter().find(|(_, p)| *p == port) {
                return Err(invalid(
                    "sandbox.network.allow",
                    format!(
                        "`{entry}`: port {port} is the fleet's own {service}; agents may not reach it"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The ports of the fleet's own services, as configured.
    fn own_service_ports(&self) -> Vec<(&'static str, u16)> {
        let mut ports = Vec::new();
        let url_port = |url: &str, default: u16| -> Option<u16> {
            let rest = url.split_once("://")?.1;
            let host = rest.split(['/', '?']).next()?;
            let host = host.rsplit('@').next()?;
            match host.rsplit_once(':') {
                Some((_, p)) if !p.contains(']') => p.parse().ok(),
                _ => Some(default),
            }
        };
        if self.backend() == Backend::Distributed {
            ports.extend(url_port(&self.database.url, 5432).map(|p| ("Postgres", p)));
        }
        if !self.redis.url.trim().is_empty() {
            ports.extend(url_port(&self.redis.url, 6379).map(|p| ("Redis", p)));
        }
        if let Ok(bind) = self.api_bind() {
            ports.push(("API", bind.port()));
        }
        if let Ok(Some(bind)) = self.worker_metrics_bind() {
            ports.push(("worker metrics endpoint", bind.port()));
        }
        ports.retain(|(_, p)| *p != 0);
        ports
    }

    /// The TCP ports agents may connect to (None: any).
    pub fn sandbox_connect_ports(&self) -> Option<Vec<u16>> {
        match self.sandbox.network.mode {
            NetworkMode::Open => None,
            NetworkMode::Restricted => Some(
                self.sandbox
                    .network
                    .allow
                    .iter()
                    .filter_map(|e| allowed_port(e).ok())
                    .collect(),
            ),
        }
    }

    pub fn api_bind(&self) -> Result<SocketAddr, ConfigError> {
        self.api
            .bind
            .parse()
            .map_err(|e| invalid("api.bind", format!("not a socket address: {e}")))
    }

    /// The worker's health and metrics address, if it serves one.
    pub fn worker_metrics_bind(&self) -> Result<Option<SocketAddr>, ConfigError> {
        let bind = self.worker.metrics_bind.trim();
        if bind.is_empty() {
            return Ok(None);
        }
        bind.parse().map(Some).map_err(|e| {
            invalid(
                "worker.metrics_bind",
                format!("not a socket address (or empty to serve none): {e}"),
            )
        })
    }

    /// The node id: configured, or the hostname.
    pub fn node_id(&self) -> String {
        if self.worker.node_id.trim().is_empty() {
            hostname()
        } else {
            self.worker.node_id.clone()
        }
    }

    /// The embedded store's folder (None in the distributed mode): a generated key lives there.
    pub fn data_dir(&self) -> Option<PathBuf> {
        let path = self.database.url.strip_prefix("sqlite:")?;
        let path = path.strip_prefix("//").unwrap_or(path);
        let path = path.split('?').next().unwrap_or(path);
        Some(
            Path::new(path)
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
        )
    }

    pub fn provider(&self, name: &str) -> ProviderSettings {
        self.providers.get(name).cloned().unwrap_or_default()
    }
}

/// The `AGENTFLEET__SECTION__KEY` variables (`AGENTFLEET_CONFIG` and other single-underscore
/// names are not settings).
fn environment() -> ::config::Environment {
    ::config::Environment::with_prefix("AGENTFLEET")
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
        .list_separator(",")
        .with_list_parse_key("api.tokens")
        .with_list_parse_key("sandbox.env_passthrough")
        .with_list_parse_key("sandbox.read_paths")
        .with_list_parse_key("sandbox.write_paths")
        .with_list_parse_key("sandbox.network.allow")
}

/// The port of a `host:port` entry of `sandbox.network.allow`.
fn allowed_port(entry: &str) -> Result<u16, String> {
    let (host, port) = entry
        .rsplit_once(':')
        .ok_or_else(|| format!("`{entry}` is not host:port"))?;
    if host.trim().is_empty() {
        return Err(format!("`{entry}` has no host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("`{entry}`: `{port}` is not a port (1-65535)")),
    }
}

pub fn hostname() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load_and_validate() {
        let s: Settings = ::config::Config::builder()
            .add_source(::config::File::from_str(
                DEFAULTS,
                ::config::FileFormat::Toml,
            ))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap();
        let mut s: Settings = s;
        s.resolve_data_dir();
        s.validate().unwrap();
        assert_eq!(s.backend(), Backend::Embedded);
        assert!(
            s.database.url.starts_with("sqlite://"),
            "{}",
            s.database.url
        );
        assert!(
            s.database.url.ends_with("agentfleet/agentfleet.db"),
            "{}",
            s.database.url
        );
        assert_eq!(s.worker.capacity, 4);
        assert_eq!(s.worker.heartbeat_interval, Duration::from_secs(3));
        assert_eq!(s.limits.max_prompt_bytes, 256 * 1024);
        assert_eq!(s.provider("claude").command.as_deref(), Some("claude"));
    }

    #[test]
    fn bad_value_names_the_key() {
        let mut file = tempfile::NamedTempFile::with_suffix(".toml").unwrap();
        std::io::Write::write_all(&mut file, b"[worker]\ncapacity = 0\n").unwrap();
        let err = Settings::load(Some(file.path())).unwrap_err().to_string();
        assert!(err.contains("worker.capacity"), "{err}");

        let mut file = tempfile::NamedTempFile::with_suffix(".toml").unwrap();
        std::io::Write::write_all(&mut file, b"[worker]\ncapacity = \"many\"\n").unwrap();
        let err = Settings::load(Some(file.path())).unwrap_err().to_string();
        assert!(err.contains("capacity"), "{err}");
    }

    #[test]
    fn a_partition_timeout_past_the_fleets_patience_is_refused() {
        let load = |text: &str| {
            let mut file = tempfile::NamedTempFile::with_suffix(".toml").unwrap();
            std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
            Settings::load(Some(file.path()))
        };
        let s = load("[worker]\nlease_ttl = \"10s\"\norphan_grace = \"30s\"\n").unwrap();
        assert_eq!(s.worker.partition_timeout(), Duration::from_secs(40));
        // Past lease + grace the fleet may already run the agents elsewhere.
        let err = load("[worker]\norphan_grace = \"30s\"\npartition_timeout = \"41s\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("worker.partition_timeout"), "{err}");
        let err = load("[worker]\norphan_grace = \"1s\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("worker.orphan_grace"), "{err}");
    }

    fn with(database: &str, redis: &str) -> Result<Settings, ConfigError> {
        let mut file = tempfile::NamedTempFile::with_suffix(".toml").unwrap();
        let text = format!("[database]\nurl = {database:?}\n[redis]\nurl = {redis:?}\n");
        std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
        Settings::load(Some(file.path()))
    }

    #[test]
    fn body_limit_must_carry_the_largest_spawn() {
        let mut file = tempfile::NamedTempFile::with_suffix(".toml").unwrap();
        std::io::Write::write_all(&mut file, b"[api]\nmax_body_bytes = 2097152\n").unwrap();
        let err = Settings::load(Some(file.path())).unwrap_err().to_string();
        assert!(
            err.contains("api.max_body_bytes") && err.contains("limits.max_input_file_bytes"),
            "{err}"
        );
        // Smaller inputs make the smaller body enough.
        let mut file = tempfile::NamedTempFile::with_suffix(".toml").unwrap();
        std::io::Write::write_all(
            &mut file,
            b"[api]\nmax_body_bytes = 2097152\n[limits]\nmax_input_file_bytes = 65536\n",
        )
        .unwrap();
        Settings::load(Some(file.path())).unwrap();
    }

    #[test]
    fn store_and_redis_urls_choose_the_mode() {
        let embedded = with("sqlite:///tmp/x.db", "").unwrap();
        assert_eq!(embedded.backend(), Backend::Embedded);
        let fleet = with("postgres://h/db", "redis://h:6379").unwrap();
        assert_eq!(fleet.backend(), Backend::Distributed);
    }

    #[test]
    fn mixed_modes_are_refused_naming_both_keys() {
        for (database, redis) in [
            ("sqlite:///tmp/x.db", "redis://h:6379"),
            ("", "redis://h:6379"),
            ("postgres://h/db", ""),
        ] {
            let err = with(database, redis).unwrap_err().to_string();
            assert!(
                err.contains("redis.url") && err.contains("database.url"),
                "{database} + {redis}: {err}"
            );
        }
        let err = with("mysql://h/db", "").unwrap_err().to_string();
        assert!(err.contains("database.url"), "{err}");
    }

    #[test]
    fn unknown_keys_in_a_file_are_refused_naming_the_nearest() {
        let mut file = tempfile::NamedTempFile::with_suffix(".toml").unwrap();
        let text = b"[worker]\ncapacty = 2\n[providers.mine]\ncommand = \"x\"\n";
        std::io::Write::write_all(&mut file, text).unwrap();
        let err = Settings::load(Some(file.path())).unwrap_err().to_string();
        assert!(
            err.contains("`worker.capacty`") && err.contains("`worker.capacity`"),
            "{err}"
        );

        let mut file = tempfile::NamedTempFile::with_suffix(".toml").unwrap();
        let text = b"[providers.mine]\ncommand = \"x\"\ncomand = \"y\"\n\
                     [providers.mine.env]\nANY_NAME = \"1\"\n";
        std::io::Write::write_all(&mut file, text).unwrap();
        let err = Settings::load(Some(file.path())).unwrap_err().to_string();
        assert!(err.contains("`providers.mine.command`"), "{err}");
    }

    #[test]
    fn unknown_environment_variables_are_refused_naming_the_variable() {
        let known = known_keys::KnownKeys::new();
        let env = |vars: &[(&str, &str)]| {
            environment().source(Some(
                vars.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ))
        };
        let err = known
            .check_environment(&env(&[("AGENTFLEET__WORKER__CAPACTY", "2")]))
            .unwrap_err();
        assert_eq!(err.key, "worker.capacty");
        assert_eq!(err.nearest, "worker.capacity");
        assert!(
            err.to_string().contains("AGENTFLEET__WORKER__CAPACTY"),
            "{err}"
        );
        // Single-underscore names are not settings; provider env maps are free-form.
        known
            .check_environment(&env(&[
                ("AGENTFLEET_CONFIG", "/etc/agentfleet.toml"),
                ("AGENTFLEET_API_URL", "http://h"),
                ("AGENTFLEET_REDIS_ADDRESS", "redis:6379"),
                ("AGENTFLEET__WORKER__CAPACITY", "2"),
                ("AGENTFLEET__SANDBOX__NETWORK__ALLOW", "h:1,h:2"),
                ("AGENTFLEET__PROVIDERS__MINE__ENV__ANY", "1"),
            ]))
            .unwrap();
    }
}
