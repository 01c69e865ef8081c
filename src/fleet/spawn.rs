//! Spawns: a request is validated (here and in `checks`), given a name if it has none,
//! recorded with its agent in one store write under its idempotency key, and enqueued.

use rand::seq::IndexedRandom;
use tracing::Instrument;
use uuid::Uuid;

use super::{Fleet, FleetError, checks};
use crate::domain::{AgentMode, SpawnRequest, StoredPayload};
use crate::queue::SpawnJob;
use crate::store::{RecordedSpawn, SpawnRecord, StoreError};
use crate::telemetry;
use crate::workspace::validate_name;

impl Fleet {
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
    /// is stored beside the request (a `StoredPayload`), so the queue
    /// that rebuilds jobs from the store (embedded, re-dispatch) continues the same trace.
    async fn record_and_enqueue(&self, req: SpawnRequest) -> Result<RecordedSpawn, FleetError> {
        let mode = self.validate(&req)?;
        let project = self.store.project(&req.project).await?;
        self.refuse_when_spent(&project).await?;
        // A taken name is found by the store while it records, after the idempotency key:
        // a retry of a spawn that named its agent is the same spawn, not a conflict.
        let name = match &req.name {
            Some(name) => name.clone(),
            None => self.unique_alias().await?,
        };
        let request_hash = checks::request_hash(&req, mode);
        let model = self.model_for(&req);
        let span = telemetry::producer_span(
            self.queue.messaging_system(),
            self.queue.queue_name(),
            &name,
            &req.provider,
        );
        let trace_context = telemetry::inject(&span);
        let payload = StoredPayload {
            request: &req,
            trace_context: trace_context.clone(),
        }
        .to_json()
        .map_err(|e| FleetError::Invalid(format!("request cannot be encoded: {e}")))?;
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
                    model: model.as_deref(),
                    budget: req.budget.filter(|b| !b.is_empty()),
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
        let provider = self
            .providers
            .get(&req.provider)
            .map_err(|e| FleetError::Invalid(e.to_string()))?;
        if let Some(model) = &req.model {
            checks::validate_model(model)?;
            if !provider.takes_model() {
                return Err(FleetError::Invalid(format!(
                    "model: provider '{}' has no way to choose a model",
                    req.provider
                )));
            }
        }
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
        if let Some(why) = req.budget.as_ref().and_then(|b| b.invalid()) {
            return Err(FleetError::Invalid(why));
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

    /// Refuses a spawn on a project whose daily budget its agents spent already today.
    async fn refuse_when_spent(&self, project: &crate::domain::Project) -> Result<(), FleetError> {
        let Some(limit) = project.daily_cost_usd else {
            return Ok(());
        };
        let today = crate::domain::start_of_utc_day(chrono::Utc::now());
        let spent = self.store.project_cost_since(project.id, today).await?;
        if spent >= limit {
            return Err(FleetError::Invalid(format!(
                "project: '{}' spent its daily budget ({spent:.4} of {limit:.4} US dollars \
                 today, UTC); try again tomorrow or raise it (project update --daily-cost-usd)",
                project.name
            )));
        }
        Ok(())
    }

    /// The model a spawn runs: the one asked for, else the provider's configured default
    /// (for a provider that can choose one).
    fn model_for(&self, req: &SpawnRequest) -> Option<String> {
        req.model.clone().or_else(|| {
            let default = self.settings.providers.get(&req.provider)?.model.clone()?;
            let provider = self.providers.get(&req.provider).ok()?;
            provider.takes_model().then_some(default)
        })
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
    fn aliases_are_valid_names() {
        for suffix in [false, true] {
            let alias = generate_alias(suffix);
            validate_name(&alias).unwrap();
            assert_eq!(alias.split('-').count(), if suffix { 3 } else { 2 });
        }
    }
}
