//! Checks of the loaded settings that serde cannot make: values that must agree with each
//! other (the store and Redis URLs choose one mode), limits that must fit together (the body
//! limit carries the largest spawn), the sandbox's lists. Each refusal names its key.

use super::{ApiSettings, Backend, ConfigError, MIN_EVENT_BYTES, Settings, invalid};
use crate::store::StoreKind;

impl Settings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
            ("webhooks.timeout", self.webhooks.timeout),
            ("webhooks.retry_initial", self.webhooks.retry_initial),
            ("webhooks.retry_max", self.webhooks.retry_max),
            ("webhooks.retry_for", self.webhooks.retry_for),
            ("webhooks.poll_interval", self.webhooks.poll_interval),
            ("webhooks.keep_for", self.webhooks.keep_for),
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
        if self.webhooks.concurrency == 0 {
            return Err(invalid("webhooks.concurrency", "must be at least 1"));
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
        if self
            .api
            .read_only_tokens
            .iter()
            .any(|t| t.trim().is_empty())
        {
            return Err(invalid(
                "api.read_only_tokens",
                "tokens must not be empty strings",
            ));
        }
        if self
            .api
            .read_only_tokens
            .iter()
            .any(|t| self.api.tokens.contains(t))
        {
            return Err(invalid(
                "api.read_only_tokens",
                "a token is in both api.tokens and api.read_only_tokens",
            ));
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
}

/// The port of a `host:port` entry of `sandbox.network.allow`.
pub(super) fn allowed_port(entry: &str) -> Result<u16, String> {
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
