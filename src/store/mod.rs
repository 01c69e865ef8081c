//! The store port: Postgres is the system of record for projects, workers (leases), requests,
//! agents and their event logs. Every write about an agent a worker owns is fenced by the
//! owner's worker id and epoch (`Owner`), so a worker whose lease was taken over cannot
//! change anything.

mod postgres;
mod postgres_leases;

pub use postgres::{NewWorker, PgStore as Store, SpawnRecord};

use uuid::Uuid;

use crate::domain::Agent;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("an agent named '{0}' already exists")]
    NameTaken(String),
    #[error("a project named '{0}' already exists")]
    ProjectExists(String),
    #[error("unknown project '{0}'")]
    UnknownProject(String),
    #[error("no agent with id or name '{0}'")]
    UnknownAgent(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A worker's claim on the agents it runs: its id and the epoch of its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub worker_id: String,
    pub epoch: i64,
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

/// A worker row on the same node, with the identity of its process.
#[derive(Debug, Clone)]
pub struct PeerWorker {
    pub id: String,
    pub pid: i32,
    pub pid_start_time: Option<i64>,
}

/// Limits the reconciler applies.
#[derive(Debug, Clone)]
pub struct ReconcilePolicy {
    /// A request that has been claimed this many times is not run again (poison).
    pub max_attempts: u32,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlKind {
    Stop,
    Delete,
}

impl ControlKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Delete => "delete",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "stop" => Some(Self::Stop),
            "delete" => Some(Self::Delete),
            _ => None,
        }
    }
}

/// A request about an existing agent, routed to the worker that owns it.
#[derive(Debug, Clone)]
pub struct ControlRequest {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub kind: ControlKind,
    pub payload: serde_json::Value,
}
