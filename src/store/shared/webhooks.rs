//! Webhook subscriptions and their outbox: the operations whose SQL is the same in both
//! dialects — adding, listing and removing subscriptions, listing and redelivering
//! deliveries, picking a subscription's next delivery, recording an attempt, releasing a
//! claim. Deliveries are written by triggers on `agents` (see the webhooks migration), in
//! the transaction of the change they report. Claiming subscriptions and mapping a
//! delivery's snapshot back to an agent differ per dialect.

/// A delivery of subscription `$1` that may be sent now: pending, due, and the oldest
/// pending one of its agent for the subscription (so an agent's events arrive in order,
/// while another agent's are not held up behind a failing one).
macro_rules! deliverable {
    ($d:literal) => {
        concat!(
            $d,
            ".status = 'pending' AND ",
            $d,
            ".next_attempt_at <= ",
            now!(),
            " AND NOT EXISTS (SELECT 1 FROM webhook_deliveries e WHERE e.webhook_id = ",
            $d,
            ".webhook_id AND e.agent_id = ",
            $d,
            ".agent_id AND e.status = 'pending' ",
            "AND e.seq < ",
            $d,
            ".seq)"
        )
    };
}

/// The columns of a delivery as `delivery_from_row` reads them.
macro_rules! delivery_columns {
    () => {
        "id, webhook_id, agent_id, event, status, attempts, next_attempt_at, last_error, \
         last_status, created_at, delivered_at"
    };
}

/// The columns of a subscription as `webhook_from_row` reads them.
macro_rules! webhook_columns {
    () => {
        "id, url, events, project, sealed, key_id, created_at"
    };
}

/// The webhook operations, expanded in `postgres/webhooks.rs` and `sqlite/webhooks.rs`.
macro_rules! shared_webhooks {
    ($store:ty) => {
        const _: () = {
            use uuid::Uuid;

            use crate::domain::{Webhook, WebhookDelivery, WebhookEvent};
            use crate::store::rows::{delivery_from_row, webhook_from_row};
            use crate::store::{
                AttemptResult, DeliveryAttempt, DueDelivery, NewWebhook, StoreError,
            };

            impl $store {
                pub async fn add_webhook(
                    &self,
                    new: &NewWebhook<'_>,
                ) -> Result<Webhook, StoreError> {
                    let events = new.events.map(|events| {
                        serde_json::Value::from(
                            events.iter().map(|e| e.as_str()).collect::<Vec<_>>(),
                        )
                    });
                    sqlx::query(
                        "INSERT INTO webhooks (id, url, events, project, sealed, key_id) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(new.id)
                    .bind(new.url)
                    .bind(events)
                    .bind(new.project)
                    .bind(new.sealed)
                    .bind(new.key_id)
                    .execute(&self.pool)
                    .await?;
                    self.webhook_by_id(new.id).await
                }

                pub async fn list_webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
                    let rows = sqlx::query(concat!(
                        "SELECT ",
                        webhook_columns!(),
                        " FROM webhooks ORDER BY created_at, id"
                    ))
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(webhook_from_row).collect()
                }

                pub async fn webhook_by_id(&self, id: Uuid) -> Result<Webhook, StoreError> {
                    sqlx::query(concat!(
                        "SELECT ",
                        webhook_columns!(),
                        " FROM webhooks WHERE id = $1"
                    ))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(|r| webhook_from_row(&r))
                    .transpose()?
                    .ok_or_else(|| StoreError::UnknownWebhook(id.to_string()))
                }

                /// Removes a subscription with its deliveries (pending ones are never sent):
                /// the foreign key cascades, so the rows are locked subscription first, in
                /// the order an attempt being recorded locks them.
                pub async fn remove_webhook(&self, id: Uuid) -> Result<(), StoreError> {
                    let done = sqlx::query("DELETE FROM webhooks WHERE id = $1")
                        .bind(id)
                        .execute(&self.pool)
                        .await?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::UnknownWebhook(id.to_string()));
                    }
                    Ok(())
                }

                /// A subscription's deliveries, newest first, at most `limit`.
                pub async fn list_deliveries(
                    &self,
                    webhook_id: Uuid,
                    limit: i64,
                ) -> Result<Vec<WebhookDelivery>, StoreError> {
                    self.webhook_by_id(webhook_id).await?;
                    let rows = sqlx::query(concat!(
                        "SELECT ",
                        delivery_columns!(),
                        " FROM webhook_deliveries \
                         WHERE webhook_id = $1 ORDER BY seq DESC LIMIT $2"
                    ))
                    .bind(webhook_id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(delivery_from_row).collect()
                }

                /// Makes a delivery pending again, due now, with a new retry window; its
                /// id (the `webhook-id` header) stays.
                pub async fn redeliver(
                    &self,
                    delivery_id: Uuid,
                ) -> Result<WebhookDelivery, StoreError> {
                    sqlx::query(concat!(
                        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = ",
                        now!(),
                        ", retry_since = ",
                        now!(),
                        " WHERE id = $1 RETURNING ",
                        delivery_columns!()
                    ))
                    .bind(delivery_id)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(|r| delivery_from_row(&r))
                    .transpose()?
                    .ok_or_else(|| StoreError::UnknownDelivery(delivery_id.to_string()))
                }

                /// The delivery of `webhook_id` to send next (see `deliverable!`), with the
                /// agent as it was when the event happened.
                pub async fn next_delivery(
                    &self,
                    webhook_id: Uuid,
                ) -> Result<Option<DueDelivery>, StoreError> {
                    let row = sqlx::query(concat!(
                        "SELECT d.id, d.event, d.attempts, d.created_at, ",
                        seconds_since!("d.retry_since"),
                        " AS retrying_for ",
                        "FROM webhook_deliveries d WHERE d.webhook_id = $1 AND ",
                        deliverable!("d"),
                        " ORDER BY d.seq LIMIT 1"
                    ))
                    .bind(webhook_id)
                    .fetch_optional(&self.pool)
                    .await?;
                    let Some(row) = row else { return Ok(None) };
                    use crate::store::rows::StoreRow;
                    let id: Uuid = row.col("id")?;
                    let event: String = row.col("event")?;
                    let event = WebhookEvent::parse(&event).ok_or_else(|| {
                        StoreError::Database(sqlx::Error::Decode(
                            format!("webhook event '{event}' is not known to this version").into(),
                        ))
                    })?;
                    let agent = match self.delivery_agent(id).await {
                        Ok(agent) => Ok(agent),
                        Err(e) if e.is_transient() => return Err(e),
                        Err(e) => Err(format!("cannot read the agent's snapshot: {e}")),
                    };
                    Ok(Some(DueDelivery {
                        id,
                        webhook_id,
                        event,
                        agent,
                        created_at: row.col("created_at")?,
                        attempts: row.col("attempts")?,
                        retrying_for: row.col("retrying_for")?,
                    }))
                }

                /// Records an attempt and extends the worker's claim on the subscription;
                /// false (nothing written) when the claim is no longer the worker's or the
                /// delivery is gone or no longer pending.
                pub async fn record_attempt(
                    &self,
                    attempt: &DeliveryAttempt<'_>,
                ) -> Result<bool, StoreError> {
                    let (status, http, error, after) = match &attempt.result {
                        AttemptResult::Delivered { status } => {
                            ("delivered", Some(*status), None, 0.0)
                        }
                        AttemptResult::Retry {
                            error,
                            status,
                            after,
                        } => (
                            "pending",
                            *status,
                            Some(error.as_str()),
                            after.as_secs_f64(),
                        ),
                        AttemptResult::Failed { error, status } => {
                            ("failed", *status, Some(error.as_str()), 0.0)
                        }
                    };
                    let mut tx = self.begin_write().await?;
                    let claimed = sqlx::query(concat!(
                        "UPDATE webhooks SET claimed_until = ",
                        from_now!("$3"),
                        " WHERE id = $1 AND claimed_by = $2"
                    ))
                    .bind(attempt.webhook_id)
                    .bind(attempt.worker)
                    .bind(attempt.claim_for.as_secs_f64())
                    .execute(&mut *tx)
                    .await?;
                    if claimed.rows_affected() == 0 {
                        return Ok(false);
                    }
                    let done = sqlx::query(concat!(
                        "UPDATE webhook_deliveries SET status = $3, attempts = attempts + 1, ",
                        "last_status = $4, last_error = $5, next_attempt_at = ",
                        from_now!("$6"),
                        ", delivered_at = CASE WHEN $3 = 'delivered' THEN ",
                        now!(),
                        " ELSE delivered_at END ",
                        "WHERE id = $1 AND webhook_id = $2 AND status = 'pending'"
                    ))
                    .bind(attempt.delivery_id)
                    .bind(attempt.webhook_id)
                    .bind(status)
                    .bind(http)
                    .bind(error)
                    .bind(after)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(done.rows_affected() == 1)
                }

                /// Lets go of the worker's claim on a subscription.
                pub async fn release_webhook(
                    &self,
                    webhook_id: Uuid,
                    worker: &str,
                ) -> Result<(), StoreError> {
                    sqlx::query(
                        "UPDATE webhooks SET claimed_by = NULL, claimed_until = NULL \
                         WHERE id = $1 AND claimed_by = $2",
                    )
                    .bind(webhook_id)
                    .bind(worker)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                /// Replaces a subscription's sealed secret if it is still `old` (key rotation).
                pub async fn reseal_webhook(
                    &self,
                    id: Uuid,
                    old: &[u8],
                    sealed: &[u8],
                    key_id: &str,
                ) -> Result<bool, StoreError> {
                    let done = sqlx::query(
                        "UPDATE webhooks SET sealed = $3, key_id = $4 WHERE id = $1 AND sealed = $2",
                    )
                    .bind(id)
                    .bind(old)
                    .bind(sealed)
                    .bind(key_id)
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                /// Removes delivered and failed deliveries older than `older_than`; returns
                /// how many went.
                pub async fn prune_deliveries(
                    &self,
                    older_than: std::time::Duration,
                ) -> Result<u64, StoreError> {
                    let done = sqlx::query(concat!(
                        "DELETE FROM webhook_deliveries WHERE status <> 'pending' AND created_at < ",
                        ago!("$1")
                    ))
                    .bind(older_than.as_secs_f64())
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected())
                }

                /// Deliveries not delivered yet (the outbox's depth).
                pub async fn webhook_outbox_depth(&self) -> Result<i64, StoreError> {
                    Ok(sqlx::query_scalar(
                        "SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending'",
                    )
                    .fetch_one(&self.pool)
                    .await?)
                }
            }
        };
    };
}
