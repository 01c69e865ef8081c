//! SQLite adapter: workers and their leases, and the fleet's self-repair — reconciling
//! dead workers and adopting a same-node worker's agents, under SQLite's write lock
//! (`BEGIN IMMEDIATE`) where Postgres uses `FOR UPDATE SKIP LOCKED`.

use std::collections::HashSet;
use std::time::Duration;

use sqlx::Row;
use uuid::Uuid;

use super::SqliteStore;
use super::agents::finish_unowned_in;
use crate::domain::WorkerInfo;
use crate::store::rows::worker_from_row;
use crate::store::{NewWorker, Owner, PeerWorker, ReconcilePolicy, Reconciled, StoreError};

/// Now minus the orphan grace bound at `?4`: a lease that ended before this also outlived
/// its processes' dead-man switch.
macro_rules! grace_ago {
    () => {
        "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || ?4 || ' seconds')"
    };
}
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
             lease_expires_at) VALUES (?1, ?2, ?3, ?4, ?8, ?5, ?6, ",
            lease_until!("?7"),
            ")"
        ))
        .bind(w.id)
        .bind(w.node_id)
        .bind(w.host)
        .bind(w.pid)
        .bind(w.capacity)
        .bind(epoch)
        .bind(seconds(ttl))
        .bind(w.pid_start_time)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(epoch)
    }

    /// Renews the lease; false means it was lost (expired and taken over, or ended).
    pub async fn renew_lease(
        &self,
        owner: &Owner,
        ttl: Duration,
        running: i32,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(concat!(
            "UPDATE workers SET lease_expires_at = ",
            lease_until!("?3"),
            ", last_heartbeat_at = ",
            now!(),
            ", running = ?4 WHERE id = ?1 AND epoch = ?2 AND status = 'alive'"
        ))
        .bind(&owner.worker_id)
        .bind(owner.epoch)
        .bind(seconds(ttl))
        .bind(running)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends the lease; with `handoff`, still-running agents wait that long for a new
    /// worker on the node before other nodes reconcile them.
    pub async fn deregister_worker(
        &self,
        owner: &Owner,
        handoff: Option<Duration>,
    ) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "UPDATE workers SET status = 'stopped', running = 0, lease_expires_at = ",
            lease_until!("?3"),
            " WHERE id = ?1 AND epoch = ?2"
        ))
        .bind(&owner.worker_id)
        .bind(owner.epoch)
        .bind(handoff.map(seconds).unwrap_or(0.0))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn list_workers(&self) -> Result<Vec<WorkerInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, node_id, host, pid, capacity, running, status, epoch, started_at, \
             last_heartbeat_at, lease_expires_at, \
             (julianday('now') - julianday(last_heartbeat_at)) * 86400.0 AS lease_age \
             FROM workers ORDER BY started_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(worker_from_row).collect()
    }

    pub async fn peers_on_node(&self, node: &str, me: &str) -> Result<Vec<PeerWorker>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, pid, pid_start_time FROM workers \
             WHERE node_id = ?1 AND id <> ?2 AND status = 'alive'",
        )
        .bind(node)
        .bind(me)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PeerWorker {
                    id: r.try_get("id")?,
                    pid: r.try_get("pid")?,
                    pid_start_time: r.try_get("pid_start_time")?,
                })
            })
            .collect()
    }

    /// See `PgStore::reconcile_one`: the same rules, under SQLite's write lock.
    pub async fn reconcile_one(
        &self,
        me: &Owner,
        node: &str,
        known_dead: &[String],
        policy: &ReconcilePolicy,
    ) -> Result<Option<Reconciled>, StoreError> {
        let mut tx = self.begin_write().await?;
        let dead_json = serde_json::to_string(known_dead).unwrap_or_else(|_| "[]".into());
        let Some(row) = sqlx::query(concat!(
            "SELECT w.id, w.node_id FROM workers w WHERE w.id <> ?1 AND ( \
                 (w.status = 'alive' AND (w.lease_expires_at < ",
            grace_ago!(),
            " OR (w.node_id = ?2 AND w.id IN (SELECT value FROM json_each(?3))))) \
              OR (w.status = 'stopped' AND (w.node_id = ?2 OR w.lease_expires_at < ",
            grace_ago!(),
            ") AND EXISTS (SELECT 1 FROM agents a WHERE a.worker_id = w.id \
                  AND a.status IN ('starting', 'running'))) \
             ) AND (w.node_id = ?2 OR NOT EXISTS (SELECT 1 FROM workers o WHERE o.node_id = w.node_id \
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
             WHERE a.worker_id = ?1 AND a.status IN ('starting', 'running')",
        )
        .bind(&dead)
        .fetch_all(&mut *tx)
        .await?;
        let stops: HashSet<Uuid> = sqlx::query_scalar(concat!(
            "UPDATE requests SET status = 'done', updated_at = ",
            now!(),
            " WHERE target_worker = ?1 AND status = 'pending' AND kind = 'stop' RETURNING agent_id"
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
                    "UPDATE agents SET worker_id = ?2, owner_epoch = ?3, updated_at = ",
                    now!(),
                    " WHERE id = ?1"
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
                finish_unowned_in(
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
                "UPDATE requests SET history = json_insert(history, '$[#]', json(?2)), updated_at = ",
                now!(),
                " WHERE agent_id = ?1 AND kind = 'spawn'"
            ))
            .bind(agent_id)
            .bind(entry.to_string())
            .execute(&mut *tx)
            .await?;
            if may_requeue {
                sqlx::query(concat!(
                    "UPDATE agents SET status = 'pending', worker_id = NULL, owner_epoch = NULL, \
                     pid = NULL, pid_start_time = NULL, output_offset = 0, session_id = NULL, \
                     account_held = 0, updated_at = ",
                    now!(),
                    " WHERE id = ?1"
                ))
                .bind(agent_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query(concat!(
                    "UPDATE requests SET status = 'pending', claimed_by = NULL, dispatched_at = NULL, \
                     updated_at = ",
                    now!(),
                    " WHERE agent_id = ?1 AND kind = 'spawn'"
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
                finish_unowned_in(&mut tx, agent_id, "crashed", &reason).await?;
                out.crashed.push(agent_id);
            }
        }
        sqlx::query(concat!(
            "UPDATE requests SET target_worker = ?2, updated_at = ",
            now!(),
            " WHERE target_worker = ?1 AND status = 'pending'"
        ))
        .bind(&dead)
        .bind(if same_node { Some(&me.worker_id) } else { None })
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE workers SET status = 'dead', running = 0 WHERE id = ?1")
            .bind(&dead)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(out))
    }
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}
