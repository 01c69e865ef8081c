//! SQLite adapter: webhooks. The SQL both dialects share is expanded from
//! `store/shared/webhooks.rs`; two parts are SQLite's own: claiming subscriptions in one
//! statement (SQLite's single writer makes it atomic), and reading a delivery's snapshot
//! (the trigger's `json_object` of the agent row, ids in hex) back as a row under the
//! names `agents` and `projects`, so the one agent SELECT and row mapping the store uses
//! everywhere maps it too. The columns here are those the trigger writes.

use std::time::Duration;

use uuid::Uuid;

use super::SqliteStore;
use crate::domain::{Agent, Webhook};
use crate::store::StoreError;
use crate::store::rows::{agent_from_row, webhook_from_row};

shared_webhooks!(SqliteStore);

/// The snapshot's value `$key` (of the delivery's payload `j`) as a column.
macro_rules! field {
    ($key:literal) => {
        concat!("json_extract(j, '$.", $key, "') AS ", $key, ", ")
    };
}

impl SqliteStore {
    /// Claims up to `limit` subscriptions that have a delivery to send now and no live
    /// claim, for `worker`, for `claim_for`.
    pub async fn claim_webhooks(
        &self,
        worker: &str,
        claim_for: Duration,
        limit: i64,
    ) -> Result<Vec<Webhook>, StoreError> {
        let rows = sqlx::query(concat!(
            "UPDATE webhooks SET claimed_by = $1, claimed_until = ",
            from_now!("$2"),
            " WHERE id IN (SELECT w.id FROM webhooks w ",
            "WHERE (w.claimed_until IS NULL OR w.claimed_until < ",
            now!(),
            ") AND EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.webhook_id = w.id AND ",
            deliverable!("d"),
            ") ORDER BY w.claimed_until NULLS FIRST, w.id LIMIT $3) ",
            "RETURNING ",
            webhook_columns!()
        ))
        .bind(worker)
        .bind(claim_for.as_secs_f64())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(webhook_from_row).collect()
    }

    /// The agent a delivery's snapshot holds, as the agent SELECT maps a row.
    pub(super) async fn delivery_agent(&self, delivery_id: Uuid) -> Result<Agent, StoreError> {
        let row = sqlx::query(concat!(
            "WITH d AS (SELECT payload AS j FROM webhook_deliveries WHERE id = $1), ",
            "agents AS (SELECT unhex(json_extract(j, '$.id')) AS id, ",
            "unhex(json_extract(j, '$.project_id')) AS project_id, ",
            "unhex(nullif(json_extract(j, '$.account_id'), '')) AS account_id, ",
            field!("name"),
            field!("provider"),
            field!("mode"),
            field!("task_id"),
            field!("status"),
            field!("session_id"),
            field!("worker_id"),
            field!("node_id"),
            field!("owner_epoch"),
            field!("pid"),
            field!("pid_start_time"),
            field!("output_path"),
            field!("workdir"),
            field!("branch"),
            field!("result"),
            field!("pending_questions"),
            field!("error"),
            field!("exit_code"),
            field!("created_at"),
            field!("updated_at"),
            field!("started_at"),
            field!("finished_at"),
            field!("dismissed"),
            field!("output_offset"),
            field!("usage_input_tokens"),
            field!("usage_output_tokens"),
            field!("usage_cache_read_tokens"),
            field!("usage_cache_write_tokens"),
            field!("usage_cost_usd"),
            field!("usage_cost_estimated"),
            field!("usage_turns"),
            field!("model"),
            field!("budget_max_tokens"),
            field!("budget_max_cost_usd"),
            field!("budget_max_turns"),
            field!("base_commit"),
            field!("pushed_commit"),
            "1 AS snapshot FROM d), ",
            "projects AS (SELECT unhex(json_extract(j, '$.project_id')) AS id, ",
            "json_extract(j, '$.project') AS name FROM d) ",
            select_agents!("")
        ))
        .bind(delivery_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::UnknownDelivery(delivery_id.to_string()))?;
        agent_from_row(&row)
    }
}
