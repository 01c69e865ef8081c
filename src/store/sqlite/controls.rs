//! SQLite adapter: control requests as the queue delivers them. Claims are one statement;
//! the re-dispatcher runs in one `BEGIN IMMEDIATE` transaction where Postgres uses one
//! statement.

use std::time::Duration;

use sqlx::Row;
use uuid::Uuid;

use super::SqliteStore;
use crate::store::rows::{control_from_row, control_stats_from_row, pending_control_from_row};
use crate::store::{
    ControlKind, ControlQueueStats, ControlRequest, DueControl, DueParams, DueRequests,
    PendingControl, StoreError,
};

/// The control kinds a worker acts on.
macro_rules! controls {
    () => {
        "('stop', 'delete', 'resume', 'dismiss', 'cleanup')"
    };
}
impl SqliteStore {
    pub async fn record_control(
        &self,
        agent_id: Uuid,
        kind: ControlKind,
        target_worker: Option<&str>,
        payload: serde_json::Value,
    ) -> Result<Uuid, StoreError> {
        let id = Uuid::now_v7();
        // The write lock orders resumes of one agent: the second sees the first.
        let mut tx = self.begin_write().await?;
        if kind == ControlKind::Resume {
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM agents WHERE id = ?1")
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
            "INSERT INTO requests (id, kind, agent_id, payload, target_worker, dispatched_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ",
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
            "UPDATE requests SET status = CASE WHEN ?2 IS NULL THEN 'done' ELSE 'failed' END, \
             error = ?2, updated_at = ",
            now!(),
            " WHERE id = ?1"
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
            "UPDATE requests SET status = 'claimed', claimed_by = ?2, claimed_at = ",
            now!(),
            ", attempts = attempts + 1, updated_at = ",
            now!(),
            " WHERE id = ?1 AND status = 'pending' AND kind IN ",
            controls!(),
            " AND (target_worker = ?2 OR (target_worker IS NULL AND EXISTS \
                 (SELECT 1 FROM agents a WHERE a.id = requests.agent_id AND a.node_id = ?3))) \
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
            " AND (r.target_worker = ?1 OR (r.target_worker IS NULL AND a.node_id = ?2)) \
             ORDER BY r.created_at"
        ))
        .bind(worker)
        .bind(node)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn retarget_controls(
        &self,
        agents: &[Uuid],
        worker: &str,
    ) -> Result<Vec<Uuid>, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut ids = Vec::new();
        for agent in agents {
            let found: Vec<Uuid> = sqlx::query_scalar(concat!(
                "UPDATE requests SET target_worker = ?2, dispatched_at = ",
                now!(),
                ", updated_at = ",
                now!(),
                " WHERE agent_id = ?1 AND status = 'pending' AND kind IN ",
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
            ago!("?1")
        ))
        .bind(due.resume_timeout.as_secs_f64())
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query(concat!(
            "SELECT r.id, r.kind, a.status, a.worker_id, a.node_id \
             FROM requests r JOIN agents a ON a.id = r.agent_id WHERE r.status = 'pending' \
               AND ((r.kind = 'spawn' AND (r.dispatched_at IS NULL OR r.dispatched_at < ",
            ago!("?2"),
            ")) OR (r.kind IN ",
            controls!(),
            " AND (r.dispatched_at IS NULL OR r.dispatched_at < ",
            ago!("?3"),
            "))) ORDER BY r.created_at LIMIT ?1"
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
                ", target_worker = CASE WHEN kind = 'spawn' THEN target_worker ELSE ?2 END \
                 WHERE id = ?1"
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

    pub async fn control_queue_stats(&self) -> Result<Vec<ControlQueueStats>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT a.node_id, count(*) AS depth, \
               (julianday('now') - julianday(min(r.created_at))) * 86400.0 AS age \
             FROM requests r JOIN agents a ON a.id = r.agent_id \
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
             WHERE agent_id = ?1 AND status = 'pending' AND kind IN ",
            controls!(),
            " ORDER BY created_at, id"
        ))
        .bind(agent_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(pending_control_from_row).collect()
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
            ago!("?1"),
            ") ORDER BY created_at LIMIT ?2) RETURNING id"
        ))
        .bind(after.as_secs_f64())
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ids)
    }
}
