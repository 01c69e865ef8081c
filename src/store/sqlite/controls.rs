//! SQLite adapter: control requests and re-dispatch. The SQL both dialects share is
//! expanded from `store/shared/controls.rs`; here are SQLite's own: re-targeting many
//! agents' controls one statement per agent, and the re-dispatcher, which reads what is
//! due and marks each row in one `BEGIN IMMEDIATE` transaction where Postgres uses one
//! statement.

use std::time::Duration;

use sqlx::Row;
use uuid::Uuid;

use super::SqliteStore;
use crate::store::{DueControl, DueParams, DueRequests, StoreError};

shared_controls!(SqliteStore);

impl SqliteStore {
    pub async fn retarget_controls(
        &self,
        agents: &[Uuid],
        worker: &str,
    ) -> Result<Vec<Uuid>, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut ids = Vec::new();
        for agent in agents {
            let found: Vec<Uuid> = sqlx::query_scalar(concat!(
                "UPDATE requests SET target_worker = $2, dispatched_at = ",
                now!(),
                ", updated_at = ",
                now!(),
                " WHERE agent_id = $1 AND status = 'pending' AND kind IN ",
                controls!(),
                " RETURNING id"
            ))
            .bind(agent)
            .bind(worker)
            .fetch_all(&mut *tx)
            .await?;
            ids.extend(found);
        }
        tx.commit().await?;
        Ok(ids)
    }

    pub async fn take_due_requests(&self, due: &DueParams) -> Result<DueRequests, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(concat!(
            "UPDATE requests SET status = 'failed', updated_at = ",
            now!(),
            ", error = 'no worker on the agent''s node took the resume within worker.resume_timeout' \
             WHERE status = 'pending' AND kind = 'resume' AND created_at < ",
            ago!("$1")
        ))
        .bind(due.resume_timeout.as_secs_f64())
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query(concat!(
            "SELECT r.id, r.kind, a.status, a.worker_id, a.node_id \
             FROM requests r JOIN agents a ON a.id = r.agent_id WHERE r.status = 'pending' \
               AND ((r.kind = 'spawn' AND (r.dispatched_at IS NULL OR r.dispatched_at < ",
            ago!("$2"),
            ")) OR (r.kind IN ",
            controls!(),
            " AND (r.dispatched_at IS NULL OR r.dispatched_at < ",
            ago!("$3"),
            "))) ORDER BY r.created_at LIMIT $1"
        ))
        .bind(due.limit)
        .bind(due.spawn_after.as_secs_f64())
        .bind(due.control_after.as_secs_f64())
        .fetch_all(&mut *tx)
        .await?;
        let mut found = DueRequests::default();
        for r in rows {
            let id: Uuid = r.try_get("id")?;
            let kind: String = r.try_get("kind")?;
            let status: String = r.try_get("status")?;
            let owner: Option<String> = r.try_get("worker_id")?;
            // A stop or delete goes to whoever owns the agent now; anything else to any
            // worker on the agent's node.
            let target = match kind.as_str() {
                "stop" | "delete" if matches!(status.as_str(), "starting" | "running") => owner,
                _ => None,
            };
            // A spawn keeps its target (none); a control is pointed at its new one.
            sqlx::query(concat!(
                "UPDATE requests SET dispatched_at = ",
                now!(),
                ", target_worker = CASE WHEN kind = 'spawn' THEN target_worker ELSE $2 END \
                 WHERE id = $1"
            ))
            .bind(id)
            .bind(&target)
            .execute(&mut *tx)
            .await?;
            if kind == "spawn" {
                found.spawns.push(id);
            } else {
                found.controls.push(DueControl {
                    id,
                    target_worker: target,
                    node_id: r.try_get("node_id")?,
                });
            }
        }
        tx.commit().await?;
        Ok(found)
    }

    pub async fn take_redispatch(
        &self,
        after: Duration,
        limit: i64,
    ) -> Result<Vec<Uuid>, StoreError> {
        let mut tx = self.begin_write().await?;
        let ids: Vec<Uuid> = sqlx::query_scalar(concat!(
            "UPDATE requests SET dispatched_at = ",
            now!(),
            " WHERE id IN (SELECT id FROM requests WHERE kind = 'spawn' AND status = 'pending' \
               AND (dispatched_at IS NULL OR dispatched_at < ",
            ago!("$1"),
            ") ORDER BY created_at LIMIT $2) RETURNING id"
        ))
        .bind(after.as_secs_f64())
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ids)
    }
}
