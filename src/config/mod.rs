//! Typed configuration, loaded once at start-up from three layers (built-in
//! `config/default.toml`, an optional file, `AGENTFLEET__*` environment variables) and
//! validated before anything else runs, so a bad value stops the process with its key named.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use crate::providers::ProviderSettings;
use crate::store::StoreKind;

mod known_keys;
mod sections;
mod validate;

use validate::allowed_port;

pub use sections::*;

const DEFAULTS: &str = include_str!("../../config/default.toml");
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
        .with_list_parse_key("api.read_only_tokens")
        .with_list_parse_key("sandbox.env_passthrough")
        .with_list_parse_key("sandbox.read_paths")
        .with_list_parse_key("sandbox.write_paths")
        .with_list_parse_key("sandbox.network.allow")
}

pub fn hostname() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
