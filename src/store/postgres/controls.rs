//! Postgres adapter: control requests (stop, delete, resume, dismiss, cleanup) as the queue
//! delivers them. A delivered job names its request; the worker claims the row in one
//! statement, so a job delivered twice acts once. The re-dispatcher sends again, in one
//! statement, whatever the queue seems to have lost — spawns and controls alike — so an
//! idle worker's fallback costs the store one transaction per interval.

use std::time::Duration;

use sqlx::Row;
use uuid::Uuid;

use super::PgStore;
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

impl PgStore {
    /// Records a control request for the worker that owns the agent (None: no live owner,
    /// any worker on the agent's node may act).
    pub async fn record_control(
        &self,
        agent_id: Uuid,
        kind: ControlKind,
        target_worker: Option<&str>,
        payload: serde_json::Value,
    ) -> Result<Uuid, StoreError> {
        let id = Uuid::now_v7();
        let mut tx = self.pool.begin().await?;
        if kind == ControlKind::Resume {
            // The agent's row lock orders resumes of one agent: the second sees the first.
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM agents WHERE id = $1 FOR UPDATE")
                    .bind(agent_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let resuming: bool = sqlx::query_scalar(crate::store::RESUME_IN_HAND)
                .bind(agent_id)
                .fetch_one(&mut *tx)
                .await?;
            crate::store::resume_allowed(status.as_deref(), resuming)?;
        }
        sqlx::query(
            "INSERT INTO requests (id, kind, agent_id, payload, target_worker, dispatched_at) \
             VALUES ($1, $2, $3, $4, $5, now())",
        )
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
        sqlx::query(
            "UPDATE requests SET status = CASE WHEN $2::text IS NULL THEN 'done' ELSE 'failed' END, \
             error = $2, updated_at = now() WHERE id = $1",
        )
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
        let row = sqlx::query(concat!(
            "UPDATE requests r SET status = 'claimed', claimed_by = $2, claimed_at = now(), \
               attempts = attempts + 1, updated_at = now() \
             FROM agents a \
             WHERE r.id = $1 AND a.id = r.agent_id AND r.status = 'pending' \
               AND r.kind IN ",
            controls!(),
            " \
               AND (r.target_worker = $2 OR (r.target_worker IS NULL AND a.node_id = $3)) \
             RETURNING r.id, r.agent_id, r.kind, r.payload"
        ))
        .bind(request_id)
        .bind(worker)
        .bind(node)
        .fetch_optional(&self.pool)
        .await?;
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
            " \
               AND (r.target_worker = $1 OR (r.target_worker IS NULL AND a.node_id = $2)) \
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
        Ok(sqlx::query_scalar(concat!(
            "UPDATE requests SET target_worker = $2, dispatched_at = now(), updated_at = now() \
             WHERE agent_id = ANY($1) AND status = 'pending' AND kind IN ",
            controls!(),
            " RETURNING id"
        ))
        .bind(agents)
        .bind(worker)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn take_due_requests(&self, due: &DueParams) -> Result<DueRequests, StoreError> {
        // A stop or delete goes to whoever owns the agent now (an adopter, after its
        // worker died); anything else to any worker on the agent's node.
        let rows = sqlx::query(concat!("WITH expired AS ( \
               UPDATE requests SET status = 'failed', updated_at = now(), \
                 error = 'no worker on the agent''s node took the resume within worker.resume_timeout' \
               WHERE status = 'pending' AND kind = 'resume' \
                 AND created_at < now() - $3 * interval '1 millisecond' RETURNING id), \
             due AS ( \
               SELECT q.id FROM requests q WHERE q.status = 'pending' \
                 AND ((q.kind = 'spawn' AND (q.dispatched_at IS NULL \
                        OR q.dispatched_at < now() - $1 * interval '1 millisecond')) \
                   OR (q.kind IN ", controls!(), " AND (q.dispatched_at IS NULL \
                        OR q.dispatched_at < now() - $2 * interval '1 millisecond'))) \
                 AND q.id NOT IN (SELECT id FROM expired) \
               ORDER BY q.created_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
             UPDATE requests r SET dispatched_at = now(), target_worker = CASE \
                 WHEN r.kind = 'spawn' THEN r.target_worker \
                 WHEN r.kind IN ('stop', 'delete') AND a.status IN ('starting', 'running') \
                   THEN a.worker_id \
                 ELSE NULL END \
             FROM agents a WHERE a.id = r.agent_id AND r.id IN (SELECT id FROM due) \
             RETURNING r.id, r.kind, r.target_worker, a.node_id"
        ))
        .bind(due.spawn_after.as_millis() as f64)
        .bind(due.control_after.as_millis() as f64)
        .bind(due.resume_timeout.as_millis() as f64)
        .bind(due.limit)
        .fetch_all(&self.pool)
        .await?;
        let mut found = DueRequests::default();
        for r in rows {
            let kind: String = r.try_get("kind")?;
            if kind == "spawn" {
                found.spawns.push(r.try_get("id")?);
            } else {
                found.controls.push(DueControl {
                    id: r.try_get("id")?,
                    target_worker: r.try_get("target_worker")?,
                    node_id: r.try_get("node_id")?,
                });
            }
        }
        Ok(found)
    }

    pub async fn control_queue_stats(&self) -> Result<Vec<ControlQueueStats>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT a.node_id, count(*) AS depth, \
               extract(epoch FROM now() - min(r.created_at))::float8 AS age \
             FROM requests r JOIN agents a ON a.id = r.agent_id \
             WHERE r.status = 'pending' AND r.kind IN ",
            controls!(),
            " \
             GROUP BY a.node_id ORDER BY a.node_id"
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

    /// Spawn requests pending since before `after` (never claimed): marked as dispatched
    /// again now and returned, so only one worker re-sends each.
    pub async fn take_redispatch(
        &self,
        after: Duration,
        limit: i64,
    ) -> Result<Vec<Uuid>, StoreError> {
        Ok(sqlx::query_scalar(
            "UPDATE requests SET dispatched_at = now() WHERE id IN ( \
               SELECT id FROM requests WHERE kind = 'spawn' AND status = 'pending' \
               AND (dispatched_at IS NULL OR dispatched_at < now() - $1 * interval '1 millisecond') \
               ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id",
        )
        .bind(after.as_millis() as f64)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}
