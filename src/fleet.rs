//! The front door shared by the HTTP API and the CLI: validates what a caller asks for,
//! records it in the store and enqueues its job. Bad input is refused here, before anything
//! is written.

mod checks;

pub use checks::{no_nul, no_nul_in_json, validate_input_name};

use rand::seq::IndexedRandom;
use tracing::Instrument;
use uuid::Uuid;

use crate::config::{Backend, Settings};
use crate::domain::{AgentMode, Project, SpawnRequest};
use crate::events::{EmbeddedBus, EventBus, RedisBus};
use crate::providers::Providers;
use crate::queue::{EmbeddedQueue, Queue, RedisQueue, SpawnJob};
use crate::telemetry;

use crate::store::{RecordedSpawn, SpawnRecord, Store, StoreError};
use crate::workspace::validate_name;

/// What went wrong, in the caller's terms; the API maps each kind to a status code.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    /// An idempotency key given again with a different request.
    #[error("{0}")]
    IdempotencyKeyReused(String),
}

impl From<StoreError> for FleetError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::IdempotencyKeyReused(_) => Self::IdempotencyKeyReused(e.to_string()),
            StoreError::NameTaken(_)
            | StoreError::ResumeRefused(_)
            | StoreError::ProjectExists(_)
            | StoreError::AccountExists(_) => Self::Conflict(e.to_string()),
            StoreError::UnknownProject(_)
            | StoreError::UnknownAgent(_)
            | StoreError::UnknownAccount(_) => Self::NotFound(e.to_string()),
            StoreError::Database(_)
            | StoreError::Shared(_)
            | StoreError::Migrate(_)
            | StoreError::UnsupportedUrl(_)
            | StoreError::DataDir { .. } => Self::Unavailable(e.to_string()),
        }
    }
}

/// The connected parts every front end needs.
#[derive(Clone, Debug)]
pub struct Fleet {
    pub settings: Settings,
    pub store: Store,
    pub queue: Queue,
    pub events: EventBus,
    /// The providers this fleet runs: the built-in ones and those its settings declare.
    pub providers: Providers,
}

impl Fleet {
    /// Connects the store, the queue and the events of the configured mode. The embedded
    /// mode opens no network connection at all.
    pub async fn connect(settings: Settings) -> anyhow::Result<Self> {
        let store = Store::connect(
            &settings.database.url,
            settings.database.max_connections,
            settings.database.create_if_missing,
        )
        .await?;
        store.migrate().await?;
        let (queue, events) = match settings.backend() {
            Backend::Embedded => {
                tracing::debug!(database = %settings.database.url, "embedded mode: no Redis");
                (
                    Queue::Embedded(EmbeddedQueue::new(
                        store.clone(),
                        settings.worker.poll_interval,
                    )),
                    EventBus::Embedded(EmbeddedBus::new(store.clone())),
                )
            }
            Backend::Fleet => (
                Queue::Redis(Box::new(
                    RedisQueue::connect(
                        &settings.redis.url,
                        &settings.redis.prefix,
                        settings.worker.poll_interval,
                        settings.worker.lease_ttl,
                    )
                    .await?,
                )),
                EventBus::Redis(
                    RedisBus::connect(&settings.redis.url, &settings.redis.prefix).await?,
                ),
            ),
        };
        let providers = Providers::from_settings(&settings.providers)
            .map_err(|(key, reason)| anyhow::anyhow!("{key}: {reason}"))?;
        Ok(Self {
            providers,
            settings,
            store,
            queue,
            events,
        })
    }

    pub async fn add_project(
        &self,
        name: &str,
        remote: &str,
        branch: &str,
    ) -> Result<Project, FleetError> {
        checks::no_nul("name", name)?;
        checks::no_nul("remote_url", remote)?;
        checks::no_nul("default_branch", branch)?;
        validate_name(name).map_err(|r| FleetError::Invalid(format!("project name: {r}")))?;
        if remote.trim().is_empty() {
            return Err(FleetError::Invalid("remote URL must not be empty".into()));
        }
        if !git2::Reference::is_valid_name(&format!("refs/heads/{branch}")) {
            return Err(FleetError::Invalid(format!(
                "'{branch}' is not a valid branch name"
            )));
        }
        let project = self.store.add_project(name, remote, branch).await?;
        Ok(shown(project))
    }

    /// The projects as callers see them (see [`shown`]).
    pub async fn list_projects(&self) -> Result<Vec<Project>, FleetError> {
        let projects = self.store.list_projects().await?;
        Ok(projects.into_iter().map(shown).collect())
    }

    /// Validates, records and enqueues a spawn. The same idempotency key with the same
    /// request returns the same agent and does not enqueue again; with a different request
    /// it is refused (`IdempotencyKeyReused`) and nothing is written.
    pub async fn spawn(&self, req: SpawnRequest) -> Result<RecordedSpawn, FleetError> {
        let result = self.record_and_enqueue(req).await;
        let outcome = match &result {
            Ok(r) if r.created => "accepted",
            Ok(_) => "duplicate",
            Err(e) => e.class(),
        };
        crate::metrics::request("spawn", outcome);
        result
    }

    /// The enqueue runs in a PRODUCER span whose W3C trace context goes with the job and
    /// is stored beside the request (`trace_context` in the stored payload), so the queue
    /// that rebuilds jobs from the store (embedded, re-dispatch) continues the same trace.
    async fn record_and_enqueue(&self, req: SpawnRequest) -> Result<RecordedSpawn, FleetError> {
        let mode = self.validate(&req)?;
        self.store.project(&req.project).await?;
        // A taken name is found by the store while it records, after the idempotency key:
        // a retry of a spawn that named its agent is the same spawn, not a conflict.
        let name = match &req.name {
            Some(name) => name.clone(),
            None => self.unique_alias().await?,
        };
        let request_hash = checks::request_hash(&req, mode);
        let span = telemetry::producer_span(
            self.queue.messaging_system(),
            self.queue.queue_name(),
            &name,
            &req.provider,
        );
        let trace_context = telemetry::inject(&span);
        let mut payload = serde_json::to_value(&req)
            .map_err(|e| FleetError::Invalid(format!("request cannot be encoded: {e}")))?;
        if let Some(fields) = payload.as_object_mut()
            && !trace_context.is_empty()
        {
            fields.insert(
                STORED_TRACE_CONTEXT.into(),
                serde_json::json!(trace_context),
            );
        }
        let mut name = name;
        let mut attempt = 0;
        let recorded = loop {
            let recorded = self
                .store
                .record_spawn(SpawnRecord {
                    name: &name,
                    provider: &req.provider,
                    mode,
                    project: &req.project,
                    task_id: req.task_id.as_deref(),
                    idempotency_key: req.idempotency_key.as_deref(),
                    request_hash: &request_hash,
                    payload: payload.clone(),
                })
                .instrument(span.clone())
                .await;
            match recorded {
                // Another caller took the generated name in between: pick another.
                Err(StoreError::NameTaken(_)) if req.name.is_none() && attempt < 3 => {
                    attempt += 1;
                    name = self.unique_alias().await?;
                }
                other => break other?,
            }
        };
        span.record(
            "messaging.message.id",
            tracing::field::display(recorded.request_id),
        );
        span.record(
            "agentfleet.agent.id",
            tracing::field::display(recorded.agent.id),
        );
        if recorded.created {
            let job = SpawnJob {
                request_id: recorded.request_id,
                trace_context,
            };
            // The request is recorded either way; if the push fails, the re-dispatch sweep
            // sends it again, so the caller still gets its agent.
            if let Err(e) = self.queue.enqueue(&job).instrument(span.clone()).await {
                tracing::warn!(request_id = %recorded.request_id, error = %e, "enqueue failed; left for re-dispatch");
            }
        }
        Ok(recorded)
    }

    fn validate(&self, req: &SpawnRequest) -> Result<AgentMode, FleetError> {
        checks::spawn_strings(req)?;
        self.providers
            .get(&req.provider)
            .map_err(|e| FleetError::Invalid(e.to_string()))?;
        let mode = match req.mode.as_deref() {
            None => AgentMode::Execute,
            Some(m) => AgentMode::parse(m).ok_or_else(|| {
                FleetError::Invalid(format!(
                    "unknown mode '{m}' (known modes: {})",
                    AgentMode::names()
                ))
            })?,
        };
        if let Some(name) = &req.name {
            validate_name(name).map_err(|r| FleetError::Invalid(format!("agent name: {r}")))?;
            // Agents are looked up by id or name: a name shaped like an id would shadow one.
            if Uuid::parse_str(name).is_ok() {
                return Err(FleetError::Invalid(format!(
                    "agent name: '{name}' has the shape of an agent id; choose another name"
                )));
            }
        }
        if req.prompt.trim().is_empty() {
            return Err(FleetError::Invalid("the prompt is empty".into()));
        }
        let max = self.settings.limits.max_prompt_bytes;
        if req.prompt.len() > max {
            return Err(FleetError::Invalid(format!(
                "the prompt is {} bytes, over the limit of {max} bytes (limits.max_prompt_bytes)",
                req.prompt.len()
            )));
        }
        if req
            .idempotency_key
            .as_deref()
            .is_some_and(|k| k.is_empty() || k.len() > 200)
        {
            return Err(FleetError::Invalid(
                "idempotency key must be 1 to 200 characters".into(),
            ));
        }
        checks::validate_inputs(&req.inputs, self.settings.limits.max_input_file_bytes)?;
        Ok(mode)
    }

    /// A free generated name, asked of the store in one query per round: short names
    /// first, with a numeric suffix once they grow scarce (a few hundred agents).
    async fn unique_alias(&self) -> Result<String, FleetError> {
        const CANDIDATES: usize = 16;
        for round in 0..5 {
            let candidates: Vec<String> = (0..CANDIDATES)
                .map(|i| generate_alias(round > 0 || i >= CANDIDATES / 2))
                .collect();
            let taken = self.store.existing_agent_names(&candidates).await?;
            if let Some(free) = candidates.into_iter().find(|c| !taken.contains(c)) {
                return Ok(free);
            }
        }
        Err(FleetError::Unavailable(
            "could not find a free agent name".into(),
        ))
    }
}

/// A project as callers see it: its remote URL without the credentials it may embed. The
/// stored URL keeps them for the worker's push.
pub fn shown(project: Project) -> Project {
    Project {
        remote_url: crate::workspace::redact_url(&project.remote_url),
        ..project
    }
}

/// The key of the enqueue's W3C trace context in a stored spawn payload (beside the
/// caller's `SpawnRequest` fields, which refuse unknown keys).
pub const STORED_TRACE_CONTEXT: &str = "trace_context";

/// The caller's request from a stored spawn payload (without the stored trace context).
pub fn stored_request(mut payload: serde_json::Value) -> Result<SpawnRequest, serde_json::Error> {
    if let Some(fields) = payload.as_object_mut() {
        fields.remove(STORED_TRACE_CONTEXT);
    }
    serde_json::from_value(payload)
}

impl FleetError {
    /// A short label for metrics.
    pub fn class(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::Unavailable(_) => "unavailable",
            Self::IdempotencyKeyReused(_) => "idempotency_key_reused",
        }
    }
}

const ADJECTIVES: &[&str] = &[
    "brave", "calm", "clever", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lively",
    "mighty", "nimble", "proud", "quick", "quiet", "rapid", "shiny", "sly", "swift", "witty",
    "bold", "bright", "cosmic", "daring", "fuzzy", "golden", "humble", "lucky", "merry", "noble",
];
const ANIMALS: &[&str] = &[
    "otter", "falcon", "badger", "beaver", "bison", "cobra", "crane", "dingo", "eagle", "ferret",
    "gecko", "heron", "ibis", "jaguar", "koala", "lemur", "lynx", "marmot", "newt", "ocelot",
    "panda", "quokka", "raven", "salmon", "tapir", "urchin", "viper", "walrus", "yak", "zebra",
];

/// An adjective-animal name; with `suffix`, a short number is added to widen the space.
pub fn generate_alias(suffix: bool) -> String {
    let mut rng = rand::rng();
    let adjective = ADJECTIVES.choose(&mut rng).copied().unwrap_or("brave");
    let animal = ANIMALS.choose(&mut rng).copied().unwrap_or("otter");
    if suffix {
        format!("{adjective}-{animal}-{}", rand::random_range(100..1000))
    } else {
        format!("{adjective}-{animal}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_payload_keeps_the_trace_context_beside_the_request() {
        let payload = serde_json::json!({
            "provider": "claude", "project": "demo", "prompt": "hi",
            "trace_context": {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
        });
        let req = stored_request(payload).unwrap();
        assert_eq!(req.prompt, "hi");
    }

    #[test]
    fn aliases_are_valid_names() {
        for suffix in [false, true] {
            let alias = generate_alias(suffix);
            validate_name(&alias).unwrap();
            assert_eq!(alias.split('-').count(), if suffix { 3 } else { 2 });
        }
    }
}
