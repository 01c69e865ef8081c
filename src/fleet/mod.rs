//! The front door shared by the HTTP API and the CLI: validates what a caller asks for,
//! records it in the store and enqueues its job. Bad input is refused here, before anything
//! is written. `Fleet` is the connected parts of either mode (embedded or Postgres + Redis)
//! as a caller sees them: projects here, spawns in `spawn`, requests about an existing agent
//! (stop, delete, resume, dismiss, cleanup) in `control`, what `get` shows in `detail`.

mod checks;
mod control;
mod detail;
mod diff;
mod lists;
mod spawn;

pub use checks::{no_nul, no_nul_in_json, validate_input_name};
pub use control::{CHECKOUT_REMOVED_EVENT, RESUME_WAITING_EVENT};
pub use detail::{AgentDetail, PendingRequest};
pub use diff::AgentDiff;
pub use spawn::generate_alias;

use crate::config::{Backend, Settings};
use crate::domain::{AgentStatus, Project};
use crate::events::{EmbeddedBus, EventBus, RedisBus};
use crate::providers::Providers;
use crate::queue::{EmbeddedQueue, Queue, RedisQueue};
use crate::store::{AgentQuery, Store, StoreError};
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
            | StoreError::ProjectBusy { .. }
            | StoreError::AccountExists(_) => Self::Conflict(e.to_string()),
            StoreError::InvalidQuery(_) => Self::Invalid(e.to_string()),
            StoreError::UnknownProject(_)
            | StoreError::UnknownAgent(_)
            | StoreError::UnknownAccount(_)
            | StoreError::UnknownWebhook(_)
            | StoreError::UnknownDelivery(_) => Self::NotFound(e.to_string()),
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
            Backend::Distributed => (
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

    /// Changes a project's remote and/or default branch; agents spawned from now on use
    /// them (running agents keep theirs).
    pub async fn update_project(
        &self,
        name: &str,
        remote: Option<&str>,
        branch: Option<&str>,
    ) -> Result<Project, FleetError> {
        checks::no_nul("name", name)?;
        if remote.is_none() && branch.is_none() {
            return Err(FleetError::Invalid(
                "nothing to change: give a remote URL, a default branch, a daily budget or a cap"
                    .into(),
            ));
        }
        if let Some(remote) = remote {
            checks::no_nul("remote_url", remote)?;
            if remote.trim().is_empty() {
                return Err(FleetError::Invalid("remote URL must not be empty".into()));
            }
        }
        if let Some(branch) = branch {
            checks::no_nul("default_branch", branch)?;
            if !git2::Reference::is_valid_name(&format!("refs/heads/{branch}")) {
                return Err(FleetError::Invalid(format!(
                    "'{branch}' is not a valid branch name"
                )));
            }
        }
        let project = self.store.update_project(name, remote, branch).await?;
        Ok(shown(project))
    }

    /// Sets (None: removes) a project's daily budget: what its agents may cost in a UTC
    /// day, in US dollars (a positive number).
    pub async fn set_project_daily_budget(
        &self,
        name: &str,
        daily_cost_usd: Option<f64>,
    ) -> Result<Project, FleetError> {
        checks::no_nul("name", name)?;
        Self::check_daily_budget(daily_cost_usd)?;
        let project = self
            .store
            .set_project_daily_budget(name, daily_cost_usd)
            .await?;
        Ok(shown(project))
    }

    /// Sets (None: removes) a project's cap on its agents starting or running at once.
    pub async fn set_project_max_concurrent(
        &self,
        name: &str,
        max_concurrent: Option<i32>,
    ) -> Result<Project, FleetError> {
        checks::no_nul("name", name)?;
        let project = self
            .store
            .set_project_max_concurrent(name, max_concurrent)
            .await?;
        Ok(shown(project))
    }

    /// Changes what `change` gives of a project (its remote and branch, daily budget, cap),
    /// every value checked before anything is written; with nothing to change, the
    /// remote/branch update's own error says so.
    pub async fn change_project(
        &self,
        name: &str,
        change: &ProjectChange,
    ) -> Result<Project, FleetError> {
        if let Some(daily) = change.daily_cost_usd {
            Self::check_daily_budget(daily)?;
        }
        let cap = change
            .max_concurrent
            .map(Self::check_project_cap)
            .transpose()?;
        let moved = change.remote_url.is_some() || change.default_branch.is_some();
        let mut project = None;
        if moved || (change.daily_cost_usd.is_none() && cap.is_none()) {
            let (remote, branch) = (
                change.remote_url.as_deref(),
                change.default_branch.as_deref(),
            );
            project = Some(self.update_project(name, remote, branch).await?);
        }
        if let Some(daily) = change.daily_cost_usd {
            project = Some(self.set_project_daily_budget(name, daily).await?);
        }
        if let Some(cap) = cap {
            project = Some(self.set_project_max_concurrent(name, cap).await?);
        }
        Ok(project.expect("one write ran: the update runs when nothing else does"))
    }

    /// A project's cap is 1 or more (None: no cap).
    pub fn check_project_cap(max_concurrent: Option<i64>) -> Result<Option<i32>, FleetError> {
        match max_concurrent {
            None => Ok(None),
            Some(n) => i32::try_from(n)
                .ok()
                .filter(|n| *n >= 1)
                .map(Some)
                .ok_or_else(|| FleetError::Invalid("max_concurrent must be at least 1".into())),
        }
    }

    /// A daily budget is a positive number of US dollars (None: no budget).
    pub fn check_daily_budget(daily_cost_usd: Option<f64>) -> Result<(), FleetError> {
        if daily_cost_usd.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
            return Err(FleetError::Invalid(
                "daily_cost_usd must be a positive number (or null to remove the budget)".into(),
            ));
        }
        Ok(())
    }

    /// Removes a project with its agents' records (their pushed branches stay on the
    /// remote; files left on nodes go with `cleanup`). Refused while any of its agents is
    /// pending or running, unless `force`: then they are stopped first. Returns how many
    /// agents' records went.
    pub async fn remove_project(&self, name: &str, force: bool) -> Result<i64, FleetError> {
        checks::no_nul("name", name)?;
        let project = self.store.project(name).await?;
        if force {
            let live = AgentQuery {
                statuses: AgentStatus::ALL
                    .into_iter()
                    .filter(|s| !s.is_final())
                    .collect(),
                ..AgentQuery::of_project(&project.name)
            };
            for agent in self.all_agents(live).await? {
                match self.stop(&agent.id.to_string(), true).await {
                    // It ended on its own in between.
                    Ok(_) | Err(FleetError::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(self.store.remove_project(name).await?)
    }
}

/// What to change of a project (None: kept; `Some(None)`: a budget or cap removed).
#[derive(Debug, Clone, Default)]
pub struct ProjectChange {
    pub remote_url: Option<String>,
    pub default_branch: Option<String>,
    pub daily_cost_usd: Option<Option<f64>>,
    pub max_concurrent: Option<Option<i64>>,
}

/// A project as callers see it: its remote URL without the credentials it may embed. The
/// stored URL keeps them for the worker's push.
pub fn shown(project: Project) -> Project {
    Project {
        remote_url: crate::workspace::redact_url(&project.remote_url),
        ..project
    }
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

/// Counts a request by kind and outcome (`agentfleet_requests_total`).
fn counted<T>(kind: &str, result: Result<T, FleetError>) -> Result<T, FleetError> {
    let outcome = match &result {
        Ok(_) => "accepted",
        Err(e) => e.class(),
    };
    crate::metrics::request(kind, outcome);
    result
}
