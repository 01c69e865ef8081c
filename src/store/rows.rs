//! Rows to domain types, once for both adapters. Whether a statement is shared
//! (`shared/`) or an adapter's own, both select the same column names with types both
//! drivers decode (`StoreRow`), so the mapping back to `Agent`, `Project`, `Account`,
//! `WorkerInfo` and `StoredEvent` is written here once.

use sqlx::{Decode, Postgres, Row, Sqlite, Type};

use super::{ControlKind, ControlQueueStats, ControlRequest, PendingControl, StoreError};
use crate::domain::{
    Account, AccountKind, Agent, AgentMode, AgentStatus, Budget, DeliveryStatus, PendingQuestion,
    Project, StoredEvent, Usage, UsageTotal, Webhook, WebhookDelivery, WebhookEvent, WorkerInfo,
};

/// A column value both drivers can decode.
pub(super) trait Column:
    for<'r> Decode<'r, Postgres> + Type<Postgres> + for<'r> Decode<'r, Sqlite> + Type<Sqlite>
{
}

impl<T> Column for T where
    T: for<'r> Decode<'r, Postgres> + Type<Postgres> + for<'r> Decode<'r, Sqlite> + Type<Sqlite>
{
}

/// A result row of either adapter, read by column name.
pub(super) trait StoreRow {
    fn col<T: Column>(&self, name: &str) -> Result<T, sqlx::Error>;
}

impl StoreRow for sqlx::postgres::PgRow {
    fn col<T: Column>(&self, name: &str) -> Result<T, sqlx::Error> {
        self.try_get(name)
    }
}

impl StoreRow for sqlx::sqlite::SqliteRow {
    fn col<T: Column>(&self, name: &str) -> Result<T, sqlx::Error> {
        self.try_get(name)
    }
}

/// A stored value this version does not know (a newer writer, say).
fn unknown(what: &str, value: &str) -> StoreError {
    StoreError::Database(sqlx::Error::Decode(
        format!("{what} '{value}' is not known to this version").into(),
    ))
}

pub(super) fn project_from_row(r: &impl StoreRow) -> Result<Project, StoreError> {
    Ok(Project {
        id: r.col("id")?,
        name: r.col("name")?,
        remote_url: r.col("remote_url")?,
        default_branch: r.col("default_branch")?,
        created_at: r.col("created_at")?,
        daily_cost_usd: r.col("daily_cost_usd")?,
        max_concurrent: r.col("max_concurrent")?,
    })
}

pub(super) fn agent_from_row(r: &impl StoreRow) -> Result<Agent, StoreError> {
    let status: String = r.col("status")?;
    let mode: String = r.col("mode")?;
    let questions: Option<serde_json::Value> = r.col("pending_questions")?;
    let pending_questions: Vec<PendingQuestion> = questions
        .and_then(|q| serde_json::from_value(q).ok())
        .unwrap_or_default();
    Ok(Agent {
        id: r.col("id")?,
        name: r.col("name")?,
        provider: r.col("provider")?,
        mode: AgentMode::parse(&mode).ok_or_else(|| unknown("agent mode", &mode))?,
        project: r.col("project")?,
        task_id: r.col("task_id")?,
        status: AgentStatus::parse(&status).ok_or_else(|| unknown("agent status", &status))?,
        session_id: r.col("session_id")?,
        worker_id: r.col("worker_id")?,
        node_id: r.col("node_id")?,
        owner_epoch: r.col("owner_epoch")?,
        pid: r.col("pid")?,
        branch: r.col("branch")?,
        workdir: r.col("workdir")?,
        output_path: r.col("output_path")?,
        result: r.col("result")?,
        pending_questions,
        error: r.col("error")?,
        exit_code: r.col("exit_code")?,
        created_at: r.col("created_at")?,
        updated_at: r.col("updated_at")?,
        started_at: r.col("started_at")?,
        finished_at: r.col("finished_at")?,
        dismissed: r.col("dismissed")?,
        output_offset: r.col("output_offset")?,
        pid_start_time: r.col("pid_start_time")?,
        account_id: r.col("account_id")?,
        usage: Usage {
            input_tokens: r.col("usage_input_tokens")?,
            output_tokens: r.col("usage_output_tokens")?,
            cache_read_tokens: r.col("usage_cache_read_tokens")?,
            cache_write_tokens: r.col("usage_cache_write_tokens")?,
            cost_usd: r.col("usage_cost_usd")?,
            cost_estimated: r.col("usage_cost_estimated")?,
            turns: r.col("usage_turns")?,
        },
        model: r.col("model")?,
        budget: Some(Budget {
            max_tokens: r.col("budget_max_tokens")?,
            max_cost_usd: r.col("budget_max_cost_usd")?,
            max_turns: r.col("budget_max_turns")?,
        })
        .filter(|b| !b.is_empty()),
        base_commit: r.col("base_commit")?,
        pushed_commit: r.col("pushed_commit")?,
    })
}

pub(super) fn account_from_row(r: &impl StoreRow) -> Result<Account, StoreError> {
    let kind: String = r.col("kind")?;
    Ok(Account {
        id: r.col("id")?,
        provider: r.col("provider")?,
        label: r.col("label")?,
        kind: AccountKind::parse(&kind).ok_or_else(|| unknown("account kind", &kind))?,
        fingerprint: r.col("fingerprint")?,
        max_concurrent: r.col("max_concurrent")?,
        in_use: r.col("in_use")?,
        last_used_at: r.col("last_used_at")?,
        exhausted_until: r.col("exhausted_until")?,
        invalid_reason: r.col("invalid_reason")?,
        created_at: r.col("created_at")?,
        sealed: r.col("sealed")?,
        key_id: r.col("key_id")?,
    })
}

/// One group's sums (`usage_totals_sql!`).
pub(super) fn usage_total_from_row(r: &impl StoreRow) -> Result<UsageTotal, StoreError> {
    let estimated: i64 = r.col("cost_estimated")?;
    Ok(UsageTotal {
        key: r.col::<Option<String>>("key")?.unwrap_or_default(),
        agents: r.col("agents")?,
        usage: Usage {
            input_tokens: r.col("input_tokens")?,
            output_tokens: r.col("output_tokens")?,
            cache_read_tokens: r.col("cache_read_tokens")?,
            cache_write_tokens: r.col("cache_write_tokens")?,
            cost_usd: r.col("cost_usd")?,
            cost_estimated: estimated > 0,
            turns: r.col("turns")?,
        },
    })
}

/// A worker row with its lease age (seconds) selected as `lease_age`.
pub(super) fn worker_from_row(r: &impl StoreRow) -> Result<WorkerInfo, StoreError> {
    Ok(WorkerInfo {
        id: r.col("id")?,
        node_id: r.col("node_id")?,
        host: r.col("host")?,
        pid: r.col("pid")?,
        capacity: r.col("capacity")?,
        running: r.col("running")?,
        status: r.col("status")?,
        epoch: r.col("epoch")?,
        started_at: r.col("started_at")?,
        last_heartbeat_at: r.col("last_heartbeat_at")?,
        lease_expires_at: r.col("lease_expires_at")?,
        lease_age_seconds: r.col("lease_age")?,
    })
}

pub(super) fn event_from_row(r: &impl StoreRow) -> Result<StoredEvent, StoreError> {
    Ok(StoredEvent {
        seq: r.col("seq")?,
        kind: r.col("kind")?,
        data: r.col("data")?,
        created_at: r.col("created_at")?,
    })
}

pub(super) fn pending_control_from_row(r: &impl StoreRow) -> Result<PendingControl, StoreError> {
    Ok(PendingControl {
        id: r.col("id")?,
        kind: r.col("kind")?,
        target_worker: r.col("target_worker")?,
        requested_at: r.col("created_at")?,
    })
}

pub(super) fn control_from_row(r: &impl StoreRow) -> Result<ControlRequest, StoreError> {
    let kind: String = r.col("kind")?;
    Ok(ControlRequest {
        id: r.col("id")?,
        agent_id: r.col("agent_id")?,
        kind: ControlKind::parse(&kind).ok_or_else(|| unknown("control kind", &kind))?,
        payload: r.col("payload")?,
    })
}

pub(super) fn control_stats_from_row(r: &impl StoreRow) -> Result<ControlQueueStats, StoreError> {
    Ok(ControlQueueStats {
        node_id: r.col("node_id")?,
        depth: r.col("depth")?,
        oldest_age_seconds: r.col("age")?,
    })
}

/// A webhook row; `events` is a JSON array of event names (NULL: every one).
pub(super) fn webhook_from_row(r: &impl StoreRow) -> Result<Webhook, StoreError> {
    let events: Option<serde_json::Value> = r.col("events")?;
    let events = match events {
        None => None,
        Some(value) => {
            let names: Vec<String> = serde_json::from_value(value)
                .map_err(|_| unknown("webhook events", "(not a list of names)"))?;
            Some(
                names
                    .iter()
                    .map(|n| WebhookEvent::parse(n).ok_or_else(|| unknown("webhook event", n)))
                    .collect::<Result<Vec<_>, _>>()?,
            )
        }
    };
    Ok(Webhook {
        id: r.col("id")?,
        url: r.col("url")?,
        events,
        project: r.col("project")?,
        created_at: r.col("created_at")?,
        sealed: r.col("sealed")?,
        key_id: r.col("key_id")?,
    })
}

pub(super) fn delivery_from_row(r: &impl StoreRow) -> Result<WebhookDelivery, StoreError> {
    let event: String = r.col("event")?;
    let status: String = r.col("status")?;
    Ok(WebhookDelivery {
        id: r.col("id")?,
        webhook_id: r.col("webhook_id")?,
        agent_id: r.col("agent_id")?,
        event: WebhookEvent::parse(&event).ok_or_else(|| unknown("webhook event", &event))?,
        status: DeliveryStatus::parse(&status)
            .ok_or_else(|| unknown("delivery status", &status))?,
        attempts: r.col("attempts")?,
        next_attempt_at: r.col("next_attempt_at")?,
        last_error: r.col("last_error")?,
        last_status: r.col("last_status")?,
        created_at: r.col("created_at")?,
        delivered_at: r.col("delivered_at")?,
    })
}
