//! Postgres adapter, continued: the fleet's self-repair. Reconciling dead workers (one
//! actor per dead worker, by `FOR UPDATE SKIP LOCKED`), adopting a same-node worker's agents,
//! re-dispatching requests the queue lost, and the control requests (stop, delete) routed to
//! the worker that owns an agent.

use std::collections::HashSet;
use std::time::Duration;

use sqlx::Row;
use uuid::Uuid;

use super::postgres::PgStore;
use super::rows::agent_from_row;
use super::{ControlKind, Owner, PeerWorker, ReconcilePolicy, Reconciled, StoreError};
use crate::domain::Agent;

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
    /// Alive (by status) workers on `node`, other than `me`, with their process identity:
    /// the caller checks /proc to learn which of them are really gone.
    pub async fn peers_on_node(&self, node: &str, me: &str) -> Result<Vec<PeerWorker>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, pid, pid_start_time FROM workers \
             WHERE node_id = $1 AND id <> $2 AND status = 'alive'",
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

    /// Reconciles at most one dead worker; None when there is nothing to do. A dead worker
    /// on `me`'s node has its live agents adopted by `me`; one on another node (with no
    /// live worker left there to adopt) has them re-queued or marked crashed.
    pub async fn reconcile_one(
        &self,
        me: &Owner,
        node: &str,
        known_dead: &[String],
        policy: &ReconcilePolicy,
    ) -> Result<Option<Reconciled>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Never wait long on a row a stuck worker holds; the next sweep tries again.
        sqlx::query("SET LOCAL lock_timeout = '2s'")
            .execute(&mut *tx)
            .await?;
        let live = format!("a.status IN {LIVE}");
        // A lease that ended less than the orphan grace ago may still have live processes
        // (the worker may only be cut off from the store): only a same-node worker whose
        // process is known gone is judged sooner.
        let ended = "w.lease_expires_at < now() - $4 * interval '1 millisecond'";
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
            .bind(policy.orphan_grace.as_millis() as f64)
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
                finish_unowned(
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
                finish_unowned(&mut tx, agent_id, "crashed", &reason).await?;
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

    /// Appends one event to an agent's log without an owner (the reconciler and other
    /// control paths, when no worker supervises the agent).
    pub async fn append_event_unowned(
        &self,
        agent_id: Uuid,
        kind: &str,
        data: &serde_json::Value,
    ) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "INSERT INTO agent_events (agent_id, seq, kind, data) \
             SELECT $1, COALESCE(max(seq), 0) + 1, $2, $3 FROM agent_events WHERE agent_id = $1 \
             RETURNING seq",
        )
        .bind(agent_id)
        .bind(kind)
        .bind(data)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Stops an agent that no worker has claimed yet; false if a worker got it first.
    pub async fn cancel_pending(&self, agent_id: Uuid, reason: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let cancelled = sqlx::query(
            "UPDATE requests SET status = 'cancelled', error = $2, updated_at = now() \
             WHERE agent_id = $1 AND kind = 'spawn' AND status = 'pending'",
        )
        .bind(agent_id)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        if cancelled.rows_affected() == 0 {
            return Ok(false);
        }
        finish_unowned(&mut tx, agent_id, "stopped", reason).await?;
        tx.commit().await?;
        Ok(true)
    }

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
            let resuming: bool = sqlx::query_scalar(super::RESUME_IN_HAND)
                .bind(agent_id)
                .fetch_one(&mut *tx)
                .await?;
            super::resume_allowed(status.as_deref(), resuming)?;
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

    /// Takes an agent that waits for input back into `starting` for `owner`.
    pub async fn claim_resume(
        &self,
        agent_id: Uuid,
        owner: &Owner,
        node: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE agents SET status = 'starting', worker_id = $2, owner_epoch = $3, node_id = $4, \
             pending_questions = NULL, result = NULL, error = NULL, exit_code = NULL, \
             output_offset = 0, finished_at = NULL, updated_at = now() \
             WHERE id = $1 AND status = 'waiting_for_input'",
        )
        .bind(agent_id)
        .bind(&owner.worker_id)
        .bind(owner.epoch)
        .bind(node)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes an agent's rows: events, requests, the agent.
    pub async fn delete_agent_rows(&self, agent_id: Uuid) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM agent_events WHERE agent_id = $1")
            .bind(agent_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM requests WHERE agent_id = $1")
            .bind(agent_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM agents WHERE id = $1")
            .bind(agent_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_dismissed(&self, agent_id: Uuid) -> Result<(), StoreError> {
        sqlx::query("UPDATE agents SET dismissed = true, updated_at = now() WHERE id = $1")
            .bind(agent_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Of `names`, those that still have an agent row.
    pub async fn existing_agent_names(
        &self,
        names: &[String],
    ) -> Result<HashSet<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT name FROM agents WHERE name = ANY($1)")
                .bind(names)
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .collect(),
        )
    }

    /// Agents by id, in one query.
    pub async fn agents_by_id(&self, ids: &[Uuid]) -> Result<Vec<Agent>, StoreError> {
        let rows = sqlx::query(crate::store::postgres::select_agents_by_ids())
            .bind(ids)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(agent_from_row).collect()
    }

    /// Finishes an agent without an owner check (its owner is gone or was never there).
    pub async fn finish_unowned(
        &self,
        agent_id: Uuid,
        status: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        finish_unowned(&mut tx, agent_id, status, reason).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// A process on the same node that was running may still run: it is adopted, never
/// re-queued (that would run it twice).
fn same_node_process_may_run(same_node: bool, status: &str) -> bool {
    same_node && status == "running"
}

async fn finish_unowned(
    tx: &mut sqlx::PgConnection,
    agent_id: Uuid,
    status: &str,
    reason: &str,
) -> Result<(), StoreError> {
    // Clearing the owner epoch fences off the worker that ran it, should it come back.
    sqlx::query(
        "UPDATE agents SET status = $2, error = $3, owner_epoch = NULL, account_held = false, \
         finished_at = now(), updated_at = now() WHERE id = $1",
    )
    .bind(agent_id)
    .bind(status)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE requests SET status = 'failed', error = $2, updated_at = now() \
         WHERE agent_id = $1 AND kind IN ('spawn', 'resume') AND status IN ('pending', 'claimed')",
    )
    .bind(agent_id)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
