//! Postgres adapter: webhooks. The SQL both dialects share is expanded from
//! `store/shared/webhooks.rs`; two parts are Postgres's own: claiming subscriptions with
//! `FOR UPDATE SKIP LOCKED` (two workers never deliver for one subscription at once), and
//! reading a delivery's snapshot (`to_jsonb` of the agent row) back as a row with
//! `jsonb_populate_record`, under the names `agents` and `projects`, so the one agent
//! SELECT and row mapping the store uses everywhere maps it too.

use std::time::Duration;

use uuid::Uuid;

use super::PgStore;
use crate::domain::{Agent, Webhook};
use crate::store::StoreError;
use crate::store::rows::{agent_from_row, webhook_from_row};

shared_webhooks!(PgStore);

impl PgStore {
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
            "WHERE (w.claimed_until IS NULL OR w.claimed_until < now()) ",
            "AND EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.webhook_id = w.id AND ",
            deliverable!("d"),
            ") ORDER BY w.claimed_until NULLS FIRST, w.id LIMIT $3 FOR UPDATE SKIP LOCKED) ",
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
            "WITH d AS (SELECT payload FROM webhook_deliveries WHERE id = $1), ",
            "agents AS (SELECT r.* FROM d, jsonb_populate_record(NULL::agents, d.payload) r), ",
            "projects AS (SELECT (d.payload->>'project_id')::uuid AS id, ",
            "d.payload->>'project' AS name FROM d) ",
            select_agents!("")
        ))
        .bind(delivery_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::UnknownDelivery(delivery_id.to_string()))?;
        agent_from_row(&row)
    }
}
