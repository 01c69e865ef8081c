//! The store port: the system of record for projects, workers (leases), requests, agents
//! and their event logs — Postgres in the distributed mode, SQLite in the embedded default. Every
//! write about an agent a worker owns is fenced by the owner's worker id and epoch
//! (`Owner`), so a worker whose lease was taken over cannot change anything.
//!
//! `Store` dispatches to one adapter, chosen by the URL's scheme. The port is the list in
//! `store_operations!` below, in groups — projects, requests and agents, control requests
//! and re-dispatch, workers and leases, accounts, webhooks — and each adapter's folder
//! (`postgres/`, `sqlite/`) has one file per group, so an operation sits at the same path in both. SQL
//! that is the same text in both dialects is written once, in `shared/<group>.rs`, and
//! expanded into both adapters' files of that group; each adapter writes only what truly
//! differs. `records.rs` holds the operations' parameter and result types, `error.rs`
//! their error, `rows.rs` the mapping from rows to domain types.
//!
//! To add an operation: write it once in `shared/<group>.rs` when its SQL can be one text
//! (`$N` placeholders, the adapters' time macros), else as an inherent `pub async fn` with
//! the same signature in `postgres/<group>.rs` and `sqlite/<group>.rs`; add its signature
//! to the list in `store_operations!`, and a test of it to `tests/conformance/store.rs`
//! (it runs against both adapters). The list is the port: a method missing from either
//! adapter does not compile.

// First, so the adapters declared after it see its macros.
#[macro_use]
mod shared;

mod error;
mod postgres;
mod records;
mod rows;
mod sqlite;

pub use error::StoreError;
pub use records::*;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use uuid::Uuid;

use crate::domain::{
    Account, Agent, AgentOutcome, Page, Project, QueueStats, StoredEvent, UsageTotal, Webhook,
    WebhookDelivery, WorkerInfo,
};

/// The store, as one of its adapters.
#[derive(Clone, Debug)]
pub enum Store {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

/// Which adapter a database URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Postgres,
    Sqlite,
}

impl StoreKind {
    /// The backend's name in metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
        }
    }

    pub fn of_url(url: &str) -> Option<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else {
            None
        }
    }
}

impl Store {
    /// Connects to the adapter the URL's scheme names (`postgres://…` or `sqlite:…`),
    /// creating the database first when asked and it is missing.
    pub async fn connect(
        url: &str,
        max_connections: u32,
        create_if_missing: bool,
    ) -> Result<Self, StoreError> {
        match StoreKind::of_url(url) {
            Some(StoreKind::Postgres) => Ok(Self::Postgres(
                PgStore::connect(url, max_connections, create_if_missing).await?,
            )),
            Some(StoreKind::Sqlite) => Ok(Self::Sqlite(
                SqliteStore::connect(url, max_connections, create_if_missing).await?,
            )),
            None => Err(StoreError::UnsupportedUrl(redact(url))),
        }
    }

    pub fn kind(&self) -> StoreKind {
        match self {
            Self::Postgres(_) => StoreKind::Postgres,
            Self::Sqlite(_) => StoreKind::Sqlite,
        }
    }
}

/// How many of `migrator`'s migrations were not among `applied` (the versions recorded
/// before it ran).
fn migrations_applied(migrator: &sqlx::migrate::Migrator, applied: &[i64]) -> usize {
    migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version))
        .count()
}

/// How many migrations a fresh database gets (`migrate` applied them all: it created the
/// schema).
pub fn migrations_in(kind: StoreKind) -> usize {
    let migrator = match kind {
        StoreKind::Postgres => &postgres::MIGRATOR,
        StoreKind::Sqlite => &sqlite::MIGRATOR,
    };
    migrations_applied(migrator, &[])
}

/// The URL without anything that looks like a password, for error messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://…{}", &url[..scheme], &url[at..]),
        _ => url.to_string(),
    }
}

/// Whether a spawn under an idempotency key already recorded is a retry of that request:
/// its hash matches the stored one (requests stored before hashes were kept match any).
fn same_request(key: &str, stored: Option<String>, hash: &str) -> Result<(), StoreError> {
    match stored {
        Some(stored) if stored != hash => Err(StoreError::IdempotencyKeyReused(key.to_string())),
        _ => Ok(()),
    }
}

/// Whether another resume of agent `$1` is pending or in a live worker's hands (one text
/// for both dialects: sqlx-sqlite binds `$1` by number).
const RESUME_IN_HAND: &str = concat!(
    "SELECT EXISTS (SELECT 1 FROM requests r WHERE r.agent_id = $1 ",
    "AND r.kind = 'resume' AND (r.status = 'pending' OR (r.status = 'claimed' ",
    "AND EXISTS (SELECT 1 FROM workers w WHERE w.id = r.claimed_by ",
    "AND w.status = 'alive'))))"
);

/// Whether a resume may be recorded for an agent in `status` (`None`: the agent is gone);
/// `resuming` says another resume of it is pending or in a live worker's hands. Both
/// adapters decide under a lock, so two resumes sent together cannot both be recorded.
fn resume_allowed(status: Option<&str>, resuming: bool) -> Result<(), StoreError> {
    let refused = |why: String| Err(StoreError::ResumeRefused(why));
    match status {
        None => refused("is gone".into()),
        Some(_) if resuming => refused("is already resuming (another resume is pending)".into()),
        Some("waiting_for_input") => Ok(()),
        Some(other) => refused(format!("is not waiting for input (it is {other})")),
    }
}

/// Generates one `Store` method per operation, each forwarding to the adapter in hand (and
/// counting database errors in the metrics).
macro_rules! store_operations {
    ($(
        $(#[$doc:meta])*
        fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty;
    )*) => {
        impl Store {
            $(
                $(#[$doc])*
                pub async fn $name(&self $(, $arg: $ty)*) -> Result<$ret, StoreError> {
                    let result = match self {
                        Self::Postgres(store) => store.$name($($arg),*).await,
                        Self::Sqlite(store) => store.$name($($arg),*).await,
                    };
                    if let Err(e) = &result
                        && e.is_database_failure()
                    {
                        crate::metrics::backend_error(self.kind().label());
                    }
                    result
                }
            )*
        }
    };
}

store_operations! {
    /// Creates or updates the schema; returns how many migrations it applied.
    fn migrate(&self) -> usize;
    fn ping(&self) -> ();

    // ---- projects
    fn add_project(&self, name: &str, remote_url: &str, default_branch: &str) -> Project;
    fn project(&self, name: &str) -> Project;
    fn project_by_id(&self, id: Uuid) -> Project;
    fn list_projects(&self) -> Vec<Project>;
    /// Changes a project's remote and/or default branch (None: kept as it is).
    fn update_project(&self, name: &str, remote_url: Option<&str>, default_branch: Option<&str>) -> Project;
    /// Removes a project and its agents' records; `ProjectBusy` (nothing removed) while any
    /// of its agents is pending, starting or running. Returns how many agents' records went.
    fn remove_project(&self, name: &str) -> i64;
    /// Sets (None: removes) a project's daily budget in US dollars.
    fn set_project_daily_budget(&self, name: &str, daily_cost_usd: Option<f64>) -> Project;
    /// Sets (None: removes) a project's cap on its agents starting or running at once.
    fn set_project_max_concurrent(&self, name: &str, max_concurrent: Option<i32>) -> Project;

    // ---- requests and agents
    /// Records a spawn: the agent row (status `pending`) and its request, atomically. An
    /// idempotency key seen before returns the earlier agent unchanged when the request
    /// hash matches, and is `IdempotencyKeyReused` (nothing written) when it does not;
    /// concurrent spawns with one key are decided one after the other.
    fn record_spawn(&self, spawn: SpawnRecord<'_>) -> RecordedSpawn;
    /// Request ids still waiting for a worker, oldest first.
    fn pending_requests(&self, limit: i64) -> Vec<Uuid>;
    /// The spawn backlog (depth, oldest pending) and requests and agents by status.
    fn queue_stats(&self) -> QueueStats;
    /// The prompt the agent was spawned with (None for rows without one).
    fn spawn_prompt(&self, agent_id: Uuid) -> Option<String>;
    /// The W3C trace context recorded with a spawn request (empty when none).
    fn spawn_trace_context(&self, request_id: Uuid) -> BTreeMap<String, String>;
    /// Claims a pending request for a worker that holds its lease, in one statement: a job
    /// delivered twice (or to two workers) is claimed once.
    fn claim_request(&self, request_id: Uuid, owner: &Owner, node_id: &str) -> Option<ClaimedRequest>;
    /// `claim_request` under the fleet-wide caps of agents starting or running: its
    /// provider's (`provider_caps`, by provider) and its project's (`max_concurrent`); older
    /// pending spawns are counted first. None leaves the request pending.
    fn claim_request_within(
        &self,
        request_id: Uuid,
        owner: &Owner,
        node_id: &str,
        provider_caps: &std::collections::BTreeMap<String, i64>,
    ) -> Option<ClaimedRequest>;
    /// Hands a claimed request back (pending again, its agent too, the attempt not
    /// counted), fenced on the claiming owner: for a worker that cannot start it now.
    fn release_request(&self, request_id: Uuid, owner: &Owner) -> bool;
    /// Fails a request (and its agent if not yet final), unfenced: for requests that can
    /// never run.
    fn fail_request(&self, request_id: Uuid, reason: &str) -> ();
    /// Keeps a job no worker can run (its payload cannot be decoded) for a person to see.
    fn record_job_failure(&self, failure: &JobFailure<'_>) -> ();
    fn job_failures(&self) -> Vec<(String, String)>;
    /// Looks an agent up by id when the reference parses as one, else by name: for
    /// references a person gave.
    fn agent(&self, id_or_name: &str) -> Agent;
    fn agent_by_id(&self, id: Uuid) -> Agent;
    /// One page of the agents the query selects, newest first (by creation time, then id).
    fn list_agents(&self, query: &AgentQuery) -> Page<Agent>;
    fn count_agents(&self) -> i64;
    /// Agents by id, in one query.
    fn agents_by_id(&self, ids: &[Uuid]) -> Vec<Agent>;
    /// Records the started process; fenced by the owner.
    fn mark_running(&self, agent_id: Uuid, owner: &Owner, process: &ProcessRecord) -> bool;
    fn set_session_id(&self, agent_id: Uuid, owner: &Owner, session_id: &str) -> bool;
    /// Moves the agent's remote branch from `from` to `to` (its own, when the branch of its
    /// name was taken on the remote); fenced by the owner, and false also when the agent's
    /// branch is no longer `from`.
    fn rename_branch(&self, agent_id: Uuid, owner: &Owner, from: &str, to: &str) -> bool;
    /// Records the commit the agent's checkout started from; fenced by the owner.
    fn set_base_commit(&self, agent_id: Uuid, owner: &Owner, commit: &str) -> bool;
    /// Records the commit the agent's branch was pushed at; fenced by the owner.
    fn set_pushed_commit(&self, agent_id: Uuid, owner: &Owner, commit: &str) -> bool;
    /// Appends a batch of events and records how far into the output file they reach,
    /// atomically, only while `owner` owns the agent; false when the write was fenced off.
    fn append_events(
        &self,
        agent_id: Uuid,
        owner: &Owner,
        events: &[NewEvent],
        output_offset: i64,
    ) -> bool;
    /// `append_events` for several agents of one owner in one transaction (one commit);
    /// returns the agents whose writes were taken, the others were fenced off. An agent
    /// appears at most once.
    fn append_events_many(&self, owner: &Owner, appends: &[EventAppend]) -> HashSet<Uuid>;
    fn last_event_seq(&self, agent_id: Uuid) -> i64;
    fn events_after(&self, agent_id: Uuid, after_seq: i64) -> Vec<StoredEvent>;
    /// Writes the agent's final state and closes its request; fenced by the owner.
    fn finish_agent(&self, agent_id: Uuid, owner: &Owner, outcome: &AgentOutcome) -> bool;
    /// Finishes an agent without an owner check (its owner is gone or was never there).
    fn finish_unowned(&self, agent_id: Uuid, status: &str, reason: &str) -> ();
    /// Appends one event to an agent's log without an owner; returns its sequence number.
    fn append_event_unowned(&self, agent_id: Uuid, kind: &str, data: &serde_json::Value) -> i64;
    /// Stops an agent no worker has claimed yet; false if a worker got it first.
    fn cancel_pending(&self, agent_id: Uuid, reason: &str) -> bool;
    /// Takes an agent that waits for input back into `starting` for `owner` (on `node`),
    /// clearing its last outcome; false if it is not waiting (anymore).
    fn claim_resume(&self, agent_id: Uuid, owner: &Owner, node: &str) -> bool;
    /// Removes an agent's rows: events, requests, the agent.
    fn delete_agent_rows(&self, agent_id: Uuid) -> ();
    fn set_dismissed(&self, agent_id: Uuid) -> ();
    /// Of `names`, those that still have an agent row.
    fn existing_agent_names(&self, names: &[String]) -> HashSet<String>;

    // ---- control requests and re-dispatch
    /// Records a request about an agent for the worker that owns it (None: any worker on
    /// the agent's node). A resume is recorded only while the agent waits for input and no
    /// other resume of it is pending or in a live worker's hands (`ResumeRefused`).
    fn record_control(
        &self,
        agent_id: Uuid,
        kind: ControlKind,
        target_worker: Option<&str>,
        payload: serde_json::Value,
    ) -> Uuid;
    fn complete_request(&self, request_id: Uuid, error: Option<&str>) -> ();
    /// Claims one pending control request for `worker` (targeted at it, or at any worker on
    /// `node`) in one statement; None when it is not pending for this worker (a duplicate
    /// delivery, or already handled).
    fn claim_control(&self, request_id: Uuid, worker: &str, node: &str) -> Option<ControlRequest>;
    /// Ids of the pending control requests `claim_control` would give `worker` on `node`.
    fn pending_controls(&self, worker: &str, node: &str) -> Vec<Uuid>;
    /// Points the pending control requests of `agents` (just adopted) at `worker`; returns
    /// their ids.
    fn retarget_controls(&self, agents: &[Uuid], worker: &str) -> Vec<Uuid>;
    /// In one statement: spawn requests dispatched longer than `due.spawn_after` ago and
    /// control requests dispatched longer than `due.control_after` ago, still pending, marked
    /// as dispatched now (only one caller gets each), a control pointed at the agent's
    /// current owner (or any worker on its node); resume requests older than
    /// `due.resume_timeout` are failed instead.
    fn take_due_requests(&self, due: &DueParams) -> DueRequests;
    /// Pending control requests per node: how many, and since when the oldest waits.
    fn control_queue_stats(&self) -> Vec<ControlQueueStats>;
    /// The control requests about one agent that are still pending, oldest first.
    fn agent_controls(&self, agent_id: Uuid) -> Vec<PendingControl>;
    /// Spawn requests dispatched longer than `after` ago and still unclaimed, marked as
    /// dispatched now (only one caller gets each).
    fn take_redispatch(&self, after: Duration, limit: i64) -> Vec<Uuid>;

    // ---- workers and leases
    /// Registers a worker with a fresh epoch and a lease of `ttl`; returns the epoch.
    fn register_worker(&self, worker: &NewWorker<'_>, ttl: Duration) -> i64;
    /// Renews the lease; false means it was lost (taken over, or ended).
    fn renew_lease(&self, owner: &Owner, ttl: Duration, running: i32) -> bool;
    /// Ends the lease; with `handoff`, still-running agents wait that long for a new
    /// worker on the node before other nodes reconcile them.
    fn deregister_worker(&self, owner: &Owner, handoff: Option<Duration>) -> ();
    fn list_workers(&self) -> Vec<WorkerInfo>;
    /// Alive (by status) workers on `node` other than `me`, with their process identity.
    fn peers_on_node(&self, node: &str, me: &str) -> Vec<PeerWorker>;
    /// Reconciles at most one dead worker (see `Reconciled`); None when there is none.
    fn reconcile_one(&self, params: &ReconcileParams<'_>) -> Option<Reconciled>;

    // ---- accounts
    /// Adds an account whose secret the caller sealed; a taken label is `AccountExists`.
    fn add_account(&self, account: &NewAccount<'_>) -> Account;
    /// All accounts, by provider and label, with the number of agents holding each.
    fn list_accounts(&self) -> Vec<Account>;
    fn account_by_id(&self, id: Uuid) -> Account;
    /// Removes an account; agents that ran on it keep running and forget it.
    fn remove_account(&self, label: &str) -> ();
    /// Clears exhaustion and invalidity.
    fn reset_account(&self, label: &str) -> Account;
    /// Picks, for the agent `owner` runs, the least recently used of the provider's
    /// accounts that is neither exhausted, invalid, excluded nor at `max_concurrent`, and
    /// records the reservation (agent ↔ account) in the same transaction; fenced.
    fn acquire_account(&self, params: &AcquireParams<'_>) -> AccountPick;
    /// Reserves a given account for the agent again (a resume: its session lives in that
    /// account's config dir); None when the account is gone or the write was fenced off.
    fn hold_account(&self, agent_id: Uuid, owner: &Owner, account_id: Uuid) -> Option<Account>;
    /// Marks the account exhausted for `for_` from now (the store's clock).
    fn mark_account_exhausted(&self, account_id: Uuid, for_: Duration) -> ();
    fn mark_account_invalid(&self, account_id: Uuid, reason: &str) -> ();
    /// Takes the account's refresh lock for `ttl` (or renews it); false when another holder
    /// has it.
    fn lock_account_refresh(&self, account_id: Uuid, holder: &str, ttl: Duration) -> bool;
    fn unlock_account_refresh(&self, account_id: Uuid, holder: &str) -> ();
    /// Stores refreshed credentials and releases the refresh lock, only for its holder.
    fn store_refreshed_account(
        &self,
        account_id: Uuid,
        holder: &str,
        sealed: &[u8],
        key_id: &str,
    ) -> bool;
    /// Replaces the sealed secret if it is still `old` (key rotation).
    fn reseal_account(&self, account_id: Uuid, old: &[u8], sealed: &[u8], key_id: &str) -> bool;
    /// Puts a running agent back to `starting` for a new process in the same run (a
    /// failover to another account): no pid, output read from its start; fenced.
    fn restart_run(&self, agent_id: Uuid, owner: &Owner) -> bool;

    // ---- usage (recorded with the events: `append_events_many`)
    /// What the usage records of `query`'s period add up to, per group, ordered by key.
    fn usage_totals(&self, query: &UsageQuery) -> Vec<UsageTotal>;
    /// What the usage records of a project cost since `since` (its daily budget's count).
    fn project_cost_since(&self, project_id: Uuid, since: chrono::DateTime<chrono::Utc>) -> f64;
    // ---- webhooks (deliveries are written by triggers on `agents`, with the change)
    fn add_webhook(&self, new: &NewWebhook<'_>) -> Webhook;
    fn list_webhooks(&self) -> Vec<Webhook>;
    fn webhook_by_id(&self, id: Uuid) -> Webhook;
    /// Removes a subscription with its deliveries (pending ones are never sent).
    fn remove_webhook(&self, id: Uuid) -> ();
    /// A subscription's deliveries, newest first.
    fn list_deliveries(&self, webhook_id: Uuid, limit: i64) -> Vec<WebhookDelivery>;
    /// Makes a delivery (pending, delivered or failed) pending again, due now, with a new
    /// retry window; its id stays.
    fn redeliver(&self, delivery_id: Uuid) -> WebhookDelivery;
    /// Claims up to `limit` subscriptions with a delivery due and no live claim, for
    /// `claim_for`: one worker at a time delivers for a subscription.
    fn claim_webhooks(&self, worker: &str, claim_for: Duration, limit: i64) -> Vec<Webhook>;
    /// The subscription's delivery to send next: due, and its agent's oldest pending one
    /// (an agent's events go out in order); the agent as it was at the event.
    fn next_delivery(&self, webhook_id: Uuid) -> Option<DueDelivery>;
    /// Records an attempt, fenced by the worker's claim (which it extends); false when
    /// the claim or the pending delivery is gone.
    fn record_attempt(&self, attempt: &DeliveryAttempt<'_>) -> bool;
    fn release_webhook(&self, webhook_id: Uuid, worker: &str) -> ();
    /// Deliveries not delivered (nor failed) yet.
    fn webhook_outbox_depth(&self) -> i64;
    /// Removes delivered and failed deliveries older than `older_than`; returns how many.
    fn prune_deliveries(&self, older_than: Duration) -> u64;
    /// Replaces a subscription's sealed secret if it is still `old` (key rotation).
    fn reseal_webhook(&self, id: Uuid, old: &[u8], sealed: &[u8], key_id: &str) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_scheme_picks_the_adapter() {
        assert_eq!(
            StoreKind::of_url("postgres://u@h/db"),
            Some(StoreKind::Postgres)
        );
        assert_eq!(
            StoreKind::of_url("postgresql://h/db"),
            Some(StoreKind::Postgres)
        );
        assert_eq!(
            StoreKind::of_url("sqlite:///tmp/a.db"),
            Some(StoreKind::Sqlite)
        );
        assert_eq!(StoreKind::of_url("sqlite:a.db"), Some(StoreKind::Sqlite));
        assert_eq!(StoreKind::of_url("mysql://h/db"), None);
    }

    #[test]
    fn passwords_stay_out_of_errors() {
        assert_eq!(redact("mysql://me:secret@host/db"), "mysql://…@host/db");
        assert_eq!(redact("file.db"), "file.db");
    }
}
