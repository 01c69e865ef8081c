//! SQLite adapter: workers and their leases. Renewing, ending and listing are expanded
//! from `store/shared/workers.rs`; here are SQLite's own: registering (the epoch comes from
//! a one-row counter) and the fleet's self-repair — reconciling dead workers and adopting
//! a same-node worker's agents — under SQLite's write lock (`BEGIN IMMEDIATE`) where
//! Postgres uses `FOR UPDATE SKIP LOCKED`.

use std::collections::HashSet;
use std::time::Duration;

use sqlx::Row;
use uuid::Uuid;

use super::SqliteStore;
use crate::store::{NewWorker, ReconcileParams, Reconciled, StoreError};

shared_workers!(SqliteStore);

impl SqliteStore {
    /// Registers a worker with a fresh epoch (from the one-row counter, in the same
    /// transaction) and a lease of `ttl`; returns the epoch.
    pub async fn register_worker(
        &self,
        w: &NewWorker<'_>,
        ttl: Duration,
    ) -> Result<i64, StoreError> {
        let mut tx = self.begin_write().await?;
        let epoch: i64 = sqlx::query_scalar(
            "UPDATE fleet_epoch SET value = value + 1 WHERE id = 1 RETURNING value",
        )
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(concat!(
            "INSERT INTO workers (id, node_id, host, pid, pid_start_time, capacity, epoch, \
             lease_expires_at) VALUES ($1, $2, $3, $4, $8, $5, $6, ",
            from_now!("$7"),
            ")"
        ))
        .bind(w.id)
        .bind(w.node_id)
        .bind(w.host)
        .bind(w.pid)
        .bind(w.capacity)
        .bind(epoch)
        .bind(ttl.as_secs_f64())
        .bind(w.pid_start_time)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(epoch)
    }

    /// See `PgStore::reconcile_one`: the same rules, under SQLite's write lock.
    pub async fn reconcile_one(
        &self,
        params: &ReconcileParams<'_>,
    ) -> Result<Option<Reconciled>, StoreError> {
        let ReconcileParams {
            me,
            node,
            known_dead,
            policy,
        } = *params;
        let mut tx = self.begin_write().await?;
        let dead_json = serde_json::to_string(known_dead).unwrap_or_else(|_| "[]".into());
        let Some(row) = sqlx::query(concat!(
            "SELECT w.id, w.node_id FROM workers w WHERE w.id <> $1 AND ( \
                 (w.status = 'alive' AND (w.lease_expires_at < ",
            ago!("$4"),
            " OR (w.node_id = $2 AND w.id IN (SELECT value FROM json_each($3))))) \
              OR (w.status = 'stopped' AND (w.node_id = $2 OR w.lease_expires_at < ",
            ago!("$4"),
            ") AND EXISTS (SELECT 1 FROM agents a WHERE a.worker_id = w.id \
                  AND a.status IN ('starting', 'running'))) \
             ) AND (w.node_id = $2 OR NOT EXISTS (SELECT 1 FROM workers o WHERE o.node_id = w.node_id \
                  AND o.id <> w.id AND o.status = 'alive' AND o.lease_expires_at > ",
            now!(),
            ")) ORDER BY w.lease_expires_at LIMIT 1"
        ))
        .bind(&me.worker_id)
        .bind(node)
        .bind(dead_json)
        .bind(policy.orphan_grace.as_secs_f64())
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        let dead: String = row.try_get("id")?;
        let dead_node: String = row.try_get("node_id")?;
        let same_node = dead_node == node;
        let agents = sqlx::query(
            "SELECT a.id, a.status, a.pid, r.attempts, r.payload ->> '$.retries' AS retries \
             FROM agents a LEFT JOIN requests r ON r.agent_id = a.id AND r.kind = 'spawn' \
             WHERE a.worker_id = $1 AND a.status IN ('starting', 'running')",
        )
        .bind(&dead)
        .fetch_all(&mut *tx)
        .await?;
        let stops: HashSet<Uuid> = sqlx::query_scalar(concat!(
            "UPDATE requests SET status = 'done', updated_at = ",
            now!(),
            " WHERE target_worker = $1 AND status = 'pending' AND kind = 'stop' RETURNING agent_id"
        ))
        .bind(&dead)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let mut out = Reconciled {
            worker_id: dead.clone(),
            node_id: dead_node,
            ..Default::default()
        };
        for r in &agents {
            let agent_id: Uuid = r.try_get("id")?;
            let status: String = r.try_get("status")?;
            let pid: Option<i32> = r.try_get("pid")?;
            let attempts: i32 = r.try_get::<Option<i32>, _>("attempts")?.unwrap_or(0);
            let retries: i32 = r.try_get::<Option<i64>, _>("retries")?.unwrap_or(0) as i32;
            let stop_requested = stops.contains(&agent_id);
            if same_node && status == "running" && pid.is_some() && !stop_requested {
                sqlx::query(concat!(
                    "UPDATE agents SET worker_id = $2, owner_epoch = $3, updated_at = ",
                    now!(),
                    " WHERE id = $1"
                ))
                .bind(agent_id)
                .bind(&me.worker_id)
                .bind(me.epoch)
                .execute(&mut *tx)
                .await?;
                out.adopted.push(agent_id);
                continue;
            }
            if stop_requested {
                Self::finish_unowned_in(
                    &mut tx,
                    agent_id,
                    "stopped",
                    "stopped: its worker was lost before it could stop it",
                )
                .await?;
                out.crashed.push(agent_id);
                if same_node {
                    out.to_kill.push(agent_id);
                }
                continue;
            }
            let may_requeue = (status == "starting" || attempts <= retries)
                && attempts < policy.max_attempts as i32
                && !(same_node && status == "running");
            let entry = serde_json::json!({
                "attempt": attempts, "worker": dead, "reason": "worker_lost",
                "at": chrono::Utc::now(),
            });
            sqlx::query(concat!(
                "UPDATE requests SET history = json_insert(history, '$[#]', json($2)), updated_at = ",
                now!(),
                " WHERE agent_id = $1 AND kind = 'spawn'"
            ))
            .bind(agent_id)
            .bind(entry.to_string())
            .execute(&mut *tx)
            .await?;
            if may_requeue {
                sqlx::query(concat!(
                    "UPDATE agents SET status = 'pending', worker_id = NULL, owner_epoch = NULL, \
                     pid = NULL, pid_start_time = NULL, output_offset = 0, session_id = NULL, \
                     account_held = false, updated_at = ",
                    now!(),
                    " WHERE id = $1"
                ))
                .bind(agent_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query(concat!(
                    "UPDATE requests SET status = 'pending', claimed_by = NULL, dispatched_at = NULL, \
                     updated_at = ",
                    now!(),
                    " WHERE agent_id = $1 AND kind = 'spawn'"
                ))
                .bind(agent_id)
                .execute(&mut *tx)
                .await?;
                out.requeued.push(agent_id);
            } else {
                let reason = if attempts >= policy.max_attempts as i32 {
                    format!("worker_lost: gave up after {attempts} attempts")
                } else {
                    "worker_lost".to_string()
                };
                Self::finish_unowned_in(&mut tx, agent_id, "crashed", &reason).await?;
                out.crashed.push(agent_id);
            }
        }
        sqlx::query(concat!(
            "UPDATE requests SET target_worker = $2, updated_at = ",
            now!(),
            " WHERE target_worker = $1 AND status = 'pending'"
        ))
        .bind(&dead)
        .bind(if same_node { Some(&me.worker_id) } else { None })
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE workers SET status = 'dead', running = 0 WHERE id = $1")
            .bind(&dead)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(out))
    }
}
