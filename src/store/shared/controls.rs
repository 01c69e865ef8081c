//! Control requests (stop, delete, resume, dismiss, cleanup): the operations whose SQL is
//! the same in both dialects — recording one, claiming it as the queue delivers it (one
//! statement, so a job delivered twice acts once), completing it, and reading what waits.

/// The control-request operations, expanded in `postgres/controls.rs` and
/// `sqlite/controls.rs`.
macro_rules! shared_controls {
    ($store:ty) => {
        const _: () = {
            use uuid::Uuid;

            use crate::store::rows::{
                control_from_row, control_stats_from_row, pending_control_from_row,
            };
            use crate::store::{
                ControlKind, ControlQueueStats, ControlRequest, PendingControl, StoreError,
            };

            impl $store {
                /// Records a control request for the worker that owns the agent (None: no
                /// live owner, any worker on the agent's node may act).
                pub async fn record_control(
                    &self,
                    agent_id: Uuid,
                    kind: ControlKind,
                    target_worker: Option<&str>,
                    payload: serde_json::Value,
                ) -> Result<Uuid, StoreError> {
                    let id = Uuid::now_v7();
                    let mut tx = self.begin_write().await?;
                    if kind == ControlKind::Resume {
                        // The agent's row lock (Postgres) or the write lock (SQLite) orders
                        // resumes of one agent: the second sees the first.
                        let status: Option<String> = sqlx::query_scalar(concat!(
                            "SELECT status FROM agents WHERE id = $1",
                            for_update!()
                        ))
                        .bind(agent_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                        let resuming: bool = sqlx::query_scalar(crate::store::RESUME_IN_HAND)
                            .bind(agent_id)
                            .fetch_one(&mut *tx)
                            .await?;
                        crate::store::resume_allowed(status.as_deref(), resuming)?;
                    }
                    sqlx::query(concat!(
                        "INSERT INTO requests (id, kind, agent_id, payload, target_worker, \
                         dispatched_at) VALUES ($1, $2, $3, $4, $5, ",
                        now!(),
                        ")"
                    ))
                    .bind(id)
                    .bind(kind.as_str())
                    .bind(agent_id)
                    .bind(payload)
                    .bind(target_worker)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(id)
                }

                pub async fn complete_request(
                    &self,
                    request_id: Uuid,
                    error: Option<&str>,
                ) -> Result<(), StoreError> {
                    sqlx::query(concat!(
                        "UPDATE requests SET status = CASE WHEN CAST($2 AS TEXT) IS NULL \
                         THEN 'done' ELSE 'failed' END, error = $2, updated_at = ",
                        now!(),
                        " WHERE id = $1"
                    ))
                    .bind(request_id)
                    .bind(error)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                pub async fn claim_control(
                    &self,
                    request_id: Uuid,
                    worker: &str,
                    node: &str,
                ) -> Result<Option<ControlRequest>, StoreError> {
                    let mut tx = self.begin_write().await?;
                    let row = sqlx::query(concat!(
                        "UPDATE requests SET status = 'claimed', claimed_by = $2, claimed_at = ",
                        now!(),
                        ", attempts = attempts + 1, updated_at = ",
                        now!(),
                        " WHERE id = $1 AND status = 'pending' AND kind IN ",
                        controls!(),
                        " AND (target_worker = $2 OR (target_worker IS NULL AND EXISTS \
                             (SELECT 1 FROM agents a WHERE a.id = requests.agent_id \
                              AND a.node_id = $3))) \
                         RETURNING id, agent_id, kind, payload"
                    ))
                    .bind(request_id)
                    .bind(worker)
                    .bind(node)
                    .fetch_optional(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    row.as_ref().map(control_from_row).transpose()
                }

                pub async fn pending_controls(
                    &self,
                    worker: &str,
                    node: &str,
                ) -> Result<Vec<Uuid>, StoreError> {
                    Ok(sqlx::query_scalar(concat!(
                        "SELECT r.id FROM requests r JOIN agents a ON a.id = r.agent_id \
                         WHERE r.status = 'pending' AND r.kind IN ",
                        controls!(),
                        " AND (r.target_worker = $1 OR (r.target_worker IS NULL AND a.node_id = $2)) \
                         ORDER BY r.created_at"
                    ))
                    .bind(worker)
                    .bind(node)
                    .fetch_all(&self.pool)
                    .await?)
                }

                pub async fn control_queue_stats(&self) -> Result<Vec<ControlQueueStats>, StoreError> {
                    let rows = sqlx::query(concat!(
                        "SELECT a.node_id, count(*) AS depth, ",
                        seconds_since!("min(r.created_at)"),
                        " AS age FROM requests r JOIN agents a ON a.id = r.agent_id \
                         WHERE r.status = 'pending' AND r.kind IN ",
                        controls!(),
                        " GROUP BY a.node_id ORDER BY a.node_id"
                    ))
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(control_stats_from_row).collect()
                }

                pub async fn agent_controls(&self, agent_id: Uuid) -> Result<Vec<PendingControl>, StoreError> {
                    let rows = sqlx::query(concat!(
                        "SELECT id, kind, target_worker, created_at FROM requests \
                         WHERE agent_id = $1 AND status = 'pending' AND kind IN ",
                        controls!(),
                        " ORDER BY created_at, id"
                    ))
                    .bind(agent_id)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(pending_control_from_row).collect()
                }
            }
        };
    };
}
