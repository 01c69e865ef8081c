//! Postgres adapter: workers and their leases. Renewing, ending and listing are expanded
//! from `store/shared/workers.rs`; here are Postgres's own: registering (the epoch comes
//! from a sequence) and the fleet's self-repair — reconciling dead workers, one actor per
//! dead worker by `FOR UPDATE SKIP LOCKED`, and adopting a same-node worker's agents.

use std::collections::HashSet;
use std::time::Duration;

use sqlx::Row;
use uuid::Uuid;

use super::PgStore;
use crate::store::{NewWorker, ReconcileParams, Reconciled, StoreError};

shared_workers!(PgStore);

const LIVE: &str = "('starting', 'running')";

/// A dead worker's agent as the reconciler sees it.
struct LiveAgent {
    id: Uuid,
    status: String,
    pid: Option<i32>,
    attempts: i32,
    retries: Option<serde_json::Value>,
}
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
        let dead_node: String = row.try_get("node_id")?;
        let same_node = dead_node == node;
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
            Ok(LiveAgent {
                id: r.try_get("id")?,
                status: r.try_get("status")?,
                pid: r.try_get("pid")?,
                attempts: r.try_get::<Option<i32>, _>("attempts")?.unwrap_or(0),
                retries: r.try_get("retries")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
        let stops: HashSet<Uuid> = sqlx::query_scalar(
            "UPDATE requests SET status = 'done', updated_at = now() \
             WHERE target_worker = $1 AND status = 'pending' AND kind = 'stop' RETURNING agent_id",
        )
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
        for LiveAgent {
            id: agent_id,
            status,
            pid,
            attempts,
            retries,
        } in agents
        {
            let stop_requested = stops.contains(&agent_id);
            if same_node && status == "running" && pid.is_some() && !stop_requested {
                sqlx::query(
                    "UPDATE agents SET worker_id = $2, owner_epoch = $3, updated_at = now() WHERE id = $1",
                )
                .bind(agent_id)
                .bind(&me.worker_id)
                .bind(me.epoch)
                .execute(&mut *tx)
                .await?;
                out.adopted.push(agent_id);
                continue;
            }
            if stop_requested {
                // The owner is gone; the stop it was asked for is what the agent gets.
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
            let retries = retries.and_then(|v| v.as_u64()).unwrap_or(0) as i32;
            // A process that never started can run again; so can one whose request allows
            // retries — each within the poison limit.
            let may_requeue = (status == "starting" || attempts <= retries)
                && attempts < policy.max_attempts as i32;
            let entry = serde_json::json!({
                "attempt": attempts, "worker": dead, "reason": "worker_lost",
                "at": chrono::Utc::now(),
            });
            sqlx::query(
                "UPDATE requests SET history = history || $2::jsonb, updated_at = now() \
                 WHERE agent_id = $1 AND kind = 'spawn'",
            )
            .bind(agent_id)
            .bind(serde_json::json!([entry]))
            .execute(&mut *tx)
            .await?;
            if may_requeue && !same_node_process_may_run(same_node, &status) {
                sqlx::query(
                    "UPDATE agents SET status = 'pending', worker_id = NULL, owner_epoch = NULL, \
                     pid = NULL, pid_start_time = NULL, output_offset = 0, session_id = NULL, \
                     account_held = false, updated_at = now() WHERE id = $1",
                )
                .bind(agent_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE requests SET status = 'pending', claimed_by = NULL, dispatched_at = NULL, \
                     updated_at = now() WHERE agent_id = $1 AND kind = 'spawn'",
                )
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
        // Control requests for agents now owned here follow them.
        sqlx::query(
            "UPDATE requests SET target_worker = $2, updated_at = now() \
             WHERE target_worker = $1 AND status = 'pending'",
        )
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

/// A process on the same node that was running may still run: it is adopted, never
/// re-queued (that would run it twice).
fn same_node_process_may_run(same_node: bool, status: &str) -> bool {
    same_node && status == "running"
}
