//! SQLite adapter, continued: the fleet's self-repair (the twin of `postgres_leases.rs`).
//! Reconciling dead workers, adoption, re-dispatch and control requests. SQLite has one
//! writer at a time, so each operation runs in a `BEGIN IMMEDIATE` transaction where
//! Postgres uses `FOR UPDATE SKIP LOCKED`.

use std::collections::HashSet;
use std::time::Duration;

use sqlx::Row;
use uuid::Uuid;

use super::super::{ControlKind, Owner, PeerWorker, ReconcilePolicy, Reconciled, StoreError};
use super::SqliteStore;

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

/// Now minus the orphan grace bound at `?4`: a lease that ended before this also outlived
/// its processes' dead-man switch.
macro_rules! grace_ago {
    () => {
        "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || ?4 || ' seconds')"
    };
}

impl SqliteStore {
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
                finish_unowned(&mut tx, agent_id, "crashed", &reason).await?;
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

    pub async fn append_event_unowned(
        &self,
        agent_id: Uuid,
        kind: &str,
        data: &serde_json::Value,
    ) -> Result<i64, StoreError> {
        let mut tx = self.begin_write().await?;
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO agent_events (agent_id, seq, kind, data) \
             SELECT ?1, COALESCE(max(seq), 0) + 1, ?2, ?3 FROM agent_events WHERE agent_id = ?1 \
             RETURNING seq",
        )
        .bind(agent_id)
        .bind(kind)
        .bind(data)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(seq)
    }

    pub async fn cancel_pending(&self, agent_id: Uuid, reason: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let cancelled = sqlx::query(concat!(
            "UPDATE requests SET status = 'cancelled', error = ?2, updated_at = ",
            now!(),
            " WHERE agent_id = ?1 AND kind = 'spawn' AND status = 'pending'"
        ))
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
            let resuming: bool = sqlx::query_scalar(super::super::RESUME_IN_HAND)
                .bind(agent_id)
                .fetch_one(&mut *tx)
                .await?;
            super::super::resume_allowed(status.as_deref(), resuming)?;
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

    pub async fn claim_resume(
        &self,
        agent_id: Uuid,
        owner: &Owner,
        node: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(concat!(
            "UPDATE agents SET status = 'starting', worker_id = ?2, owner_epoch = ?3, node_id = ?4, \
             pending_questions = NULL, result = NULL, error = NULL, exit_code = NULL, \
             output_offset = 0, finished_at = NULL, updated_at = ",
            now!(),
            " WHERE id = ?1 AND status = 'waiting_for_input'"
        ))
        .bind(agent_id)
        .bind(&owner.worker_id)
        .bind(owner.epoch)
        .bind(node)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn delete_agent_rows(&self, agent_id: Uuid) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        for sql in [
            "DELETE FROM agent_events WHERE agent_id = ?1",
            "DELETE FROM requests WHERE agent_id = ?1",
            "DELETE FROM agents WHERE id = ?1",
        ] {
            sqlx::query(sql).bind(agent_id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_dismissed(&self, agent_id: Uuid) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "UPDATE agents SET dismissed = 1, updated_at = ",
            now!(),
            " WHERE id = ?1"
        ))
        .bind(agent_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn existing_agent_names(
        &self,
        names: &[String],
    ) -> Result<HashSet<String>, StoreError> {
        let json = serde_json::to_string(names).unwrap_or_else(|_| "[]".into());
        Ok(sqlx::query_scalar(
            "SELECT name FROM agents WHERE name IN (SELECT value FROM json_each(?1))",
        )
        .bind(json)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .collect())
    }

    pub async fn finish_unowned(
        &self,
        agent_id: Uuid,
        status: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        finish_unowned(&mut tx, agent_id, status, reason).await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn finish_unowned(
    tx: &mut sqlx::SqliteConnection,
    agent_id: Uuid,
    status: &str,
    reason: &str,
) -> Result<(), StoreError> {
    // Clearing the owner epoch fences off the worker that ran it, should it come back.
    sqlx::query(concat!(
        "UPDATE agents SET status = ?2, error = ?3, owner_epoch = NULL, account_held = 0, \
         finished_at = ",
        now!(),
        ", updated_at = ",
        now!(),
        " WHERE id = ?1"
    ))
    .bind(agent_id)
    .bind(status)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    sqlx::query(concat!(
        "UPDATE requests SET status = 'failed', error = ?2, updated_at = ",
        now!(),
        " WHERE agent_id = ?1 AND kind IN ('spawn', 'resume') AND status IN ('pending', 'claimed')"
    ))
    .bind(agent_id)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
