//! SQLite adapter: workers and their leases. Renewing, ending and listing are expanded
//! from `store/shared/workers.rs`; here are SQLite's own: registering (the epoch comes from
//! a one-row counter) and the fleet's self-repair — reconciling dead workers and adopting
//! a same-node worker's agents — under SQLite's write lock (`BEGIN IMMEDIATE`) where
//! Postgres uses `FOR UPDATE SKIP LOCKED`.

use std::time::Duration;

use sqlx::Row;

use super::SqliteStore;
use crate::store::shared::workers::LiveAgent;
use crate::store::{NewWorker, ReconcileParams, Reconciled, StoreError};

shared_workers!(SqliteStore, sqlx::Sqlite);

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
        // A lease that ended less than the orphan grace (`$4`) ago may still have live
        // processes: only a same-node worker whose process is known gone is judged sooner.
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
        let agents: Vec<LiveAgent> = sqlx::query(
            "SELECT a.id, a.status, a.pid, r.attempts, r.payload ->> '$.retries' AS retries \
             FROM agents a LEFT JOIN requests r ON r.agent_id = a.id AND r.kind = 'spawn' \
             WHERE a.worker_id = $1 AND a.status IN ('starting', 'running')",
        )
        .bind(&dead)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| {
            Ok(LiveAgent {
                id: r.try_get("id")?,
                status: r.try_get("status")?,
                pid: r.try_get("pid")?,
                attempts: r.try_get::<Option<i32>, _>("attempts")?.unwrap_or(0),
                retries: r.try_get::<Option<i64>, _>("retries")?.unwrap_or(0) as i32,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
        let dead = Reconciled {
            worker_id: dead,
            node_id: row.try_get("node_id")?,
            ..Default::default()
        };
        let out = Self::settle_dead_worker(&mut tx, params, dead, agents).await?;
        tx.commit().await?;
        Ok(Some(out))
    }
}
