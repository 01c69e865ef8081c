//! SQLite adapter, continued: control requests as the queue delivers them (the twin of
//! `postgres_control.rs`). Claims are one statement; the re-dispatcher runs in one
//! `BEGIN IMMEDIATE` transaction where Postgres uses one statement.

use sqlx::Row;
use uuid::Uuid;

use super::super::rows::{control_from_row, control_stats_from_row, pending_control_from_row};
use super::super::{
    ControlQueueStats, ControlRequest, DueControl, DueParams, DueRequests, PendingControl,
    StoreError,
};
use super::SqliteStore;

/// The control kinds a worker acts on.
macro_rules! controls {
    () => {
        "('stop', 'delete', 'resume', 'dismiss', 'cleanup')"
    };
}

/// Now minus the seconds bound at `$param`, in the schema's timestamp format.
macro_rules! ago {
    ($param:literal) => {
        concat!(
            "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || ",
            $param,
            " || ' seconds')"
        )
    };
}

impl SqliteStore {
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
}
