//! Postgres adapter: control requests and re-dispatch. The SQL both dialects share is
//! expanded from `store/shared/controls.rs`; here are Postgres's own: re-targeting many
//! agents' controls by array, and the re-dispatcher, which sends again in one statement
//! (`FOR UPDATE SKIP LOCKED`, so concurrent sweeps split the work) whatever the queue seems
//! to have lost — spawns and controls alike — so an idle worker's fallback costs the store
//! one transaction per interval.

use std::time::Duration;

use sqlx::Row;
use uuid::Uuid;

use super::PgStore;
use crate::store::{DueControl, DueParams, DueRequests, StoreError};

shared_controls!(PgStore);

impl PgStore {
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
        let rows = sqlx::query(concat!(
            "WITH expired AS ( \
               UPDATE requests SET status = 'failed', updated_at = now(), \
                 error = 'no worker on the agent''s node took the resume within worker.resume_timeout' \
               WHERE status = 'pending' AND kind = 'resume' AND created_at < ",
            ago!("$3"),
            " RETURNING id), \
             due AS ( \
               SELECT q.id FROM requests q WHERE q.status = 'pending' \
                 AND ((q.kind = 'spawn' AND (q.dispatched_at IS NULL OR q.dispatched_at < ",
            ago!("$1"),
            ")) OR (q.kind IN ",
            controls!(),
            " AND (q.dispatched_at IS NULL OR q.dispatched_at < ",
            ago!("$2"),
            "))) AND q.id NOT IN (SELECT id FROM expired) \
               ORDER BY q.created_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
             UPDATE requests r SET dispatched_at = now(), target_worker = CASE \
                 WHEN r.kind = 'spawn' THEN r.target_worker \
                 WHEN r.kind IN ('stop', 'delete') AND a.status IN ('starting', 'running') \
                   THEN a.worker_id \
                 ELSE NULL END \
             FROM agents a WHERE a.id = r.agent_id AND r.id IN (SELECT id FROM due) \
             RETURNING r.id, r.kind, r.target_worker, a.node_id"
        ))
        .bind(due.spawn_after.as_secs_f64())
        .bind(due.control_after.as_secs_f64())
        .bind(due.resume_timeout.as_secs_f64())
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

    /// Spawn requests pending since before `after` (never claimed): marked as dispatched
    /// again now and returned, so only one worker re-sends each.
    pub async fn take_redispatch(
        &self,
        after: Duration,
        limit: i64,
    ) -> Result<Vec<Uuid>, StoreError> {
        Ok(sqlx::query_scalar(concat!(
            "UPDATE requests SET dispatched_at = now() WHERE id IN ( \
               SELECT id FROM requests WHERE kind = 'spawn' AND status = 'pending' \
               AND (dispatched_at IS NULL OR dispatched_at < ",
            ago!("$1"),
            ") ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id"
        ))
        .bind(after.as_secs_f64())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}
