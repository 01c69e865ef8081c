//! The values the store's operations take and give back: plain data, no rows, so the
//! adapters' types stay in their folders.

use std::time::Duration;

use uuid::Uuid;

use chrono::{DateTime, Utc};

use crate::domain::{
    Account, AccountKind, Agent, AgentMode, AgentStatus, Budget, PageRequest, Usage, UsageGroup,
};

/// A worker's claim on the agents it runs: its id and the epoch of its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub worker_id: String,
    pub epoch: i64,
}

/// Which agents a list shows (every filter given must hold), and which page of them,
/// newest first.
#[derive(Debug, Clone, Default)]
pub struct AgentQuery {
    /// Any of these statuses (empty: any status).
    pub statuses: Vec<AgentStatus>,
    pub project: Option<String>,
    pub provider: Option<String>,
    pub task_id: Option<String>,
    /// Names that start with this.
    pub name_prefix: Option<String>,
    /// Names that start with this, or this task id (a person's search box).
    pub search: Option<String>,
    /// Created at or after this.
    pub created_after: Option<DateTime<Utc>>,
    /// Created before this.
    pub created_before: Option<DateTime<Utc>>,
    /// Dismissed agents too.
    pub include_dismissed: bool,
    pub page: PageRequest,
}

impl AgentQuery {
    /// The first page (of the most a page holds) of every agent, dismissed ones too.
    pub fn with_dismissed() -> Self {
        Self {
            include_dismissed: true,
            page: PageRequest::all(),
            ..Self::default()
        }
    }

    /// The agents of one project, dismissed ones too.
    pub fn of_project(project: &str) -> Self {
        Self {
            project: Some(project.to_string()),
            include_dismissed: true,
            ..Self::default()
        }
    }
}

/// What a caller gets back from recording a spawn.
#[derive(Debug, Clone)]
pub struct RecordedSpawn {
    pub agent: Agent,
    pub request_id: Uuid,
    /// False when the idempotency key matched an earlier request.
    pub created: bool,
}

/// A request a worker has claimed: the agent it is about and the request's payload.
#[derive(Debug, Clone)]
pub struct ClaimedRequest {
    pub agent: Agent,
    pub payload: serde_json::Value,
    pub attempts: i32,
}

/// Where an agent's process is, recorded once it has started.
#[derive(Debug, Clone)]
pub struct ProcessRecord {
    pub pid: i32,
    pub pid_start_time: i64,
    pub output_path: String,
    pub workdir: String,
}

/// One event to append: its per-agent sequence number, kind and data.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub seq: i64,
    pub kind: String,
    pub data: serde_json::Value,
}

/// One agent's share of a batched event write: its new events, the output offset they
/// reach, and what its usage events among them add to its usage.
#[derive(Debug, Clone)]
pub struct EventAppend {
    pub agent_id: Uuid,
    pub events: Vec<NewEvent>,
    pub output_offset: i64,
    pub usage: Vec<UsageEntry>,
}

/// What one usage event (`seq`, among the same append's events) adds to the agent's usage;
/// counted once however often the append is written.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageEntry {
    pub seq: i64,
    /// The model the provider said it ran, else the one asked for.
    pub model: Option<String>,
    pub usage: Usage,
}

/// Which usage records `usage_totals` sums, and by what.
#[derive(Debug, Clone, Copy, Default)]
pub struct UsageQuery {
    pub group_by: UsageGroup,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// The fields of a spawn the store records at enqueue.
#[derive(Debug, Clone)]
pub struct SpawnRecord<'a> {
    pub name: &'a str,
    pub provider: &'a str,
    pub mode: AgentMode,
    pub project: &'a str,
    pub task_id: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    /// Fingerprint of the request without its key, kept with the key.
    pub request_hash: &'a str,
    pub payload: serde_json::Value,
    /// The model it runs (None: the CLI's own choice).
    pub model: Option<&'a str>,
    pub budget: Option<Budget>,
}

/// A worker process as it registers.
#[derive(Debug, Clone)]
pub struct NewWorker<'a> {
    pub id: &'a str,
    pub node_id: &'a str,
    pub host: &'a str,
    pub pid: i32,
    pub pid_start_time: Option<i64>,
    pub capacity: i32,
}

/// A worker row on the same node, with the identity of its process.
#[derive(Debug, Clone)]
pub struct PeerWorker {
    pub id: String,
    pub pid: i32,
    pub pid_start_time: Option<i64>,
}

/// A job no worker can run, as the queue delivered it.
#[derive(Debug, Clone, Copy)]
pub struct JobFailure<'a> {
    pub queue: &'a str,
    pub job_id: Option<&'a str>,
    pub payload: &'a str,
    pub reason: &'a str,
    pub worker_id: &'a str,
}

/// What `reconcile_one` works with: the reconciling worker (`me`, on `node`), the workers on
/// its node it knows are gone (their processes too), and the limits it applies.
#[derive(Debug, Clone, Copy)]
pub struct ReconcileParams<'a> {
    pub me: &'a Owner,
    pub node: &'a str,
    pub known_dead: &'a [String],
    pub policy: &'a ReconcilePolicy,
}

/// Limits the reconciler applies.
#[derive(Debug, Clone)]
pub struct ReconcilePolicy {
    /// A request that has been claimed this many times is not run again (poison).
    pub max_attempts: u32,
    /// How long after its lease ended a worker's processes may still run (their dead-man
    /// switch's grace plus its margin): until then only a same-node worker known gone is
    /// reconciled, so no agent runs twice.
    pub orphan_grace: Duration,
}

/// What reconciling one dead worker did.
#[derive(Debug, Clone, Default)]
pub struct Reconciled {
    pub worker_id: String,
    pub node_id: String,
    /// Agents now owned by the reconciling worker (same node): supervise them.
    pub adopted: Vec<Uuid>,
    /// Agents put back in the queue: dispatch them.
    pub requeued: Vec<Uuid>,
    /// Agents given a final status (crashed, or stopped when a stop was pending).
    pub crashed: Vec<Uuid>,
    /// Agents whose process on this node must be killed.
    pub to_kill: Vec<Uuid>,
}

/// An account to add, its secret already sealed (with `id` bound into the seal).
#[derive(Debug, Clone)]
pub struct NewAccount<'a> {
    pub id: Uuid,
    pub provider: &'a str,
    pub label: &'a str,
    pub kind: AccountKind,
    pub sealed: &'a [u8],
    pub key_id: &'a str,
    pub fingerprint: &'a str,
    pub max_concurrent: Option<i32>,
}

/// An account wanted for the agent `owner` runs: one of `provider`'s, not in `exclude`.
#[derive(Debug, Clone, Copy)]
pub struct AcquireParams<'a> {
    pub agent_id: Uuid,
    pub owner: &'a Owner,
    pub provider: &'a str,
    pub exclude: &'a [Uuid],
}

/// What account selection found.
#[derive(Debug, Clone)]
pub struct AccountPick {
    /// The account now reserved for the agent, if one was free.
    pub account: Option<Account>,
    /// How many accounts the provider has at all (0: run on the CLI's own login).
    pub provider_accounts: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlKind {
    Stop,
    Delete,
    Resume,
    /// Hidden from lists (at once, by the front door); the node frees an ended agent's
    /// checkout.
    Dismiss,
    /// The node frees an ended agent's checkout; the record stays.
    Cleanup,
}

impl ControlKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Delete => "delete",
            Self::Resume => "resume",
            Self::Dismiss => "dismiss",
            Self::Cleanup => "cleanup",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "stop" => Some(Self::Stop),
            "delete" => Some(Self::Delete),
            "resume" => Some(Self::Resume),
            "dismiss" => Some(Self::Dismiss),
            "cleanup" => Some(Self::Cleanup),
            _ => None,
        }
    }
}

/// What `take_due_requests` looks for.
#[derive(Debug, Clone, Copy)]
pub struct DueParams {
    pub spawn_after: Duration,
    pub control_after: Duration,
    pub resume_timeout: Duration,
    pub limit: i64,
}

/// Requests to send again, as `take_due_requests` found them.
#[derive(Debug, Clone, Default)]
pub struct DueRequests {
    pub spawns: Vec<Uuid>,
    pub controls: Vec<DueControl>,
}

/// A control request to send again: to `target_worker`'s queue, or (None) to the queue
/// of the agent's node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueControl {
    pub id: Uuid,
    pub target_worker: Option<String>,
    pub node_id: Option<String>,
}

/// A control request about an agent that no worker has acted on yet.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PendingControl {
    pub id: Uuid,
    pub kind: String,
    /// The worker it was sent to; None: any worker on the agent's node.
    pub target_worker: Option<String>,
    pub requested_at: chrono::DateTime<chrono::Utc>,
}

/// The pending control requests of one node (`None`: agents never placed on a node).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ControlQueueStats {
    pub node_id: Option<String>,
    pub depth: i64,
    pub oldest_age_seconds: Option<f64>,
}

/// A request about an existing agent, routed to the worker that owns it.
#[derive(Debug, Clone)]
pub struct ControlRequest {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub kind: ControlKind,
    pub payload: serde_json::Value,
}

/// A webhook subscription to record; the caller sealed its secret.
#[derive(Debug, Clone)]
pub struct NewWebhook<'a> {
    pub id: Uuid,
    pub url: &'a str,
    /// None: every event.
    pub events: Option<&'a [crate::domain::WebhookEvent]>,
    /// None: every project.
    pub project: Option<&'a str>,
    pub sealed: &'a [u8],
    pub key_id: &'a str,
}

/// The delivery a subscription's worker sends next: the agent as it was when the event
/// happened (mapped from the row's snapshot as the store maps agent rows).
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub event: crate::domain::WebhookEvent,
    /// Err: the snapshot cannot be read as an agent (by this version), saying why; a
    /// delivery that can never be sent.
    pub agent: Result<Agent, String>,
    /// When the event happened.
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub attempts: i32,
    /// Seconds since its retries began (its creation or its redelivery), by the store's clock.
    pub retrying_for: f64,
}

/// What one attempt at a delivery came to.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptResult {
    /// The receiver answered 2xx.
    Delivered { status: i32 },
    /// Failed; try again after `after`.
    Retry {
        error: String,
        status: Option<i32>,
        after: Duration,
    },
    /// Failed for the last time.
    Failed { error: String, status: Option<i32> },
}

/// An attempt to record, fenced by the worker's claim on the subscription, which it
/// extends by `claim_for`.
#[derive(Debug, Clone)]
pub struct DeliveryAttempt<'a> {
    pub delivery_id: Uuid,
    pub webhook_id: Uuid,
    pub worker: &'a str,
    pub result: AttemptResult,
    pub claim_for: Duration,
}
