//! Postgres adapter: workers and their leases. Renewing, ending and listing are expanded
//! from `store/shared/workers.rs`; here are Postgres's own: registering (the epoch comes
//! from a sequence) and the fleet's self-repair — reconciling dead workers, one actor per
//! dead worker by `FOR UPDATE SKIP LOCKED`, and adopting a same-node worker's agents.

use std::time::Duration;

use sqlx::Row;

use super::PgStore;
use crate::store::shared::workers::LiveAgent;
use crate::store::{NewWorker, ReconcileParams, Reconciled, StoreError};

shared_workers!(PgStore, sqlx::Postgres);

const LIVE: &str = "('starting', 'running')";

impl PgStore {
    /// Registers a worker with a fresh epoch and a lease of `ttl`; returns the epoch.
    pub async fn register_worker(
        &self,
        w: &NewWorker<'_>,
        ttl: Duration,
    ) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(concat!(
            "INSERT INTO workers (id, node_id, host, pid, pid_start_time, capacity, epoch, \
             lease_expires_at) VALUES ($1, $2, $3, $4, $5, $6, nextval('fleet_epoch_seq'), ",
            from_now!("$7"),
            ") RETURNING epoch"
        ))
        .bind(w.id)
        .bind(w.node_id)
        .bind(w.host)
        .bind(w.pid)
        .bind(w.pid_start_time)
        .bind(w.capacity)
        .bind(ttl.as_secs_f64())
        .fetch_one(&self.pool)
        .await?)
    }

    /// Reconciles at most one dead worker; None when there is nothing to do. A dead worker
    /// on `me`'s node has its live agents adopted by `me`; one on another node (with no
    /// live worker left there to adopt) has them re-queued or marked crashed.
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
        let mut tx = self.pool.begin().await?;
        // Never wait long on a row a stuck worker holds; the next sweep tries again.
        sqlx::query("SET LOCAL lock_timeout = '2s'")
            .execute(&mut *tx)
            .await?;
        let live = format!("a.status IN {LIVE}");
        // A lease that ended less than the orphan grace ago may still have live processes
        // (the worker may only be cut off from the store): only a same-node worker whose
        // process is known gone is judged sooner.
        let ended = concat!("w.lease_expires_at < ", ago!("$4"));
        let pick = format!(
            "SELECT w.id, w.node_id FROM workers w \
             WHERE w.id <> $1 AND ( \
                 (w.status = 'alive' AND ({ended} OR (w.node_id = $2 AND w.id = ANY($3)))) \
              OR (w.status = 'stopped' AND (w.node_id = $2 OR {ended}) \
                  AND EXISTS (SELECT 1 FROM agents a WHERE a.worker_id = w.id AND {live})) \
             ) AND (w.node_id = $2 OR NOT EXISTS (SELECT 1 FROM workers o WHERE o.node_id = w.node_id \
                  AND o.id <> w.id AND o.status = 'alive' AND o.lease_expires_at > now())) \
             ORDER BY w.lease_expires_at FOR UPDATE OF w SKIP LOCKED LIMIT 1"
        );
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(pick))
            .bind(&me.worker_id)
            .bind(node)
            .bind(known_dead)
            .bind(policy.orphan_grace.as_secs_f64())
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let dead: String = row.try_get("id")?;
        let agents: Vec<LiveAgent> = sqlx::query(
            "SELECT a.id, a.status, a.pid, r.attempts, r.payload -> 'retries' AS retries \
             FROM agents a LEFT JOIN requests r ON r.agent_id = a.id AND r.kind = 'spawn' \
             WHERE a.worker_id = $1 AND a.status IN ('starting', 'running') FOR UPDATE OF a",
        )
        .bind(&dead)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| {
            let retries: Option<serde_json::Value> = r.try_get("retries")?;
            Ok(LiveAgent {
                id: r.try_get("id")?,
                status: r.try_get("status")?,
                pid: r.try_get("pid")?,
                attempts: r.try_get::<Option<i32>, _>("attempts")?.unwrap_or(0),
                retries: retries.and_then(|v| v.as_u64()).unwrap_or(0) as i32,
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
