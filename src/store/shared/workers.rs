//! Workers and their leases: the operations whose SQL is the same in both dialects —
//! renewing and ending a lease, listing workers, and settling a dead worker's agents once
//! a reconciler holds it. Registering (a fresh epoch) and finding a dead worker to
//! reconcile (`FOR UPDATE SKIP LOCKED` or the write lock) differ per dialect.

use uuid::Uuid;

/// A dead worker's agent as the reconciler sees it.
pub(in crate::store) struct LiveAgent {
    pub id: Uuid,
    pub status: String,
    pub pid: Option<i32>,
    /// How often its spawn request was claimed.
    pub attempts: i32,
    /// How many re-runs after a start its request allows.
    pub retries: i32,
}

/// A process on the same node that was running may still run: it is adopted, never
/// re-queued (that would run it twice).
pub(in crate::store) fn same_node_process_may_run(same_node: bool, status: &str) -> bool {
    same_node && status == "running"
}

/// The worker operations, expanded in `postgres/workers.rs` and `sqlite/workers.rs`
/// (`$db`: the adapter's `sqlx::Database`).
macro_rules! shared_workers {
    ($store:ty, $db:ty) => {
        const _: () = {
            use std::collections::HashSet;
            use std::time::Duration;

            use sqlx::Row;
            use uuid::Uuid;

            use crate::domain::WorkerInfo;
            use crate::store::rows::worker_from_row;
            use crate::store::shared::workers::{LiveAgent, same_node_process_may_run};
            use crate::store::{Owner, PeerWorker, ReconcileParams, Reconciled, StoreError};

            impl $store {
                /// Renews the lease; false means it was lost (expired and taken over, or
                /// ended).
                pub async fn renew_lease(
                    &self,
                    owner: &Owner,
                    ttl: Duration,
                    running: i32,
                ) -> Result<bool, StoreError> {
                    let done = sqlx::query(concat!(
                        "UPDATE workers SET lease_expires_at = ",
                        from_now!("$3"),
                        ", last_heartbeat_at = ",
                        now!(),
                        ", running = $4 WHERE id = $1 AND epoch = $2 AND status = 'alive'"
                    ))
                    .bind(&owner.worker_id)
                    .bind(owner.epoch)
                    .bind(ttl.as_secs_f64())
                    .bind(running)
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                /// Ends the worker's lease. With `handoff`, its still-running agents stay for
                /// the next worker on the node, which adopts them at once; other nodes wait
                /// `handoff` before they reconcile them.
                pub async fn deregister_worker(
                    &self,
                    owner: &Owner,
                    handoff: Option<Duration>,
                ) -> Result<(), StoreError> {
                    sqlx::query(concat!(
                        "UPDATE workers SET status = 'stopped', running = 0, lease_expires_at = ",
                        from_now!("$3"),
                        " WHERE id = $1 AND epoch = $2"
                    ))
                    .bind(&owner.worker_id)
                    .bind(owner.epoch)
                    .bind(handoff.map_or(0.0, |d| d.as_secs_f64()))
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                pub async fn list_workers(&self) -> Result<Vec<WorkerInfo>, StoreError> {
                    let rows = sqlx::query(concat!(
                        "SELECT id, node_id, host, pid, capacity, running, status, epoch, \
                         started_at, last_heartbeat_at, lease_expires_at, ",
                        seconds_since!("last_heartbeat_at"),
                        " AS lease_age FROM workers ORDER BY started_at, id"
                    ))
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(worker_from_row).collect()
                }

                /// Alive (by status) workers on `node`, other than `me`, with their process
                /// identity: the caller checks /proc to learn which of them are really gone.
                pub async fn peers_on_node(
                    &self,
                    node: &str,
                    me: &str,
                ) -> Result<Vec<PeerWorker>, StoreError> {
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

                /// Settles the agents of the dead worker `out` names, which the caller holds
                /// (in `tx`): a running one on this node is adopted by `params.me`; one whose
                /// stop was pending is stopped; the others are re-queued while their request
                /// allows another run, else marked crashed. Its pending controls follow the
                /// adopter (or wait for any worker on the node), and the worker is marked dead.
                pub(super) async fn settle_dead_worker(
                    tx: &mut sqlx::Transaction<'static, $db>,
                    params: &ReconcileParams<'_>,
                    mut out: Reconciled,
                    agents: Vec<LiveAgent>,
                ) -> Result<Reconciled, StoreError> {
                    let ReconcileParams { me, node, policy, .. } = *params;
                    let dead = out.worker_id.clone();
                    let same_node = out.node_id == node;
                    let stops: HashSet<Uuid> = sqlx::query_scalar(concat!(
                        "UPDATE requests SET status = 'done', updated_at = ",
                        now!(),
                        " WHERE target_worker = $1 AND status = 'pending' AND kind = 'stop' \
                         RETURNING agent_id"
                    ))
                    .bind(&dead)
                    .fetch_all(&mut **tx)
                    .await?
                    .into_iter()
                    .collect();
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
                            sqlx::query(concat!(
                                "UPDATE agents SET worker_id = $2, owner_epoch = $3, updated_at = ",
                                now!(),
                                " WHERE id = $1"
                            ))
                            .bind(agent_id)
                            .bind(&me.worker_id)
                            .bind(me.epoch)
                            .execute(&mut **tx)
                            .await?;
                            out.adopted.push(agent_id);
                            continue;
                        }
                        if stop_requested {
                            // The owner is gone; the stop it was asked for is what the agent
                            // gets.
                            let why = "stopped: its worker was lost before it could stop it";
                            Self::finish_unowned_in(tx, agent_id, "stopped", why).await?;
                            out.crashed.push(agent_id);
                            if same_node {
                                out.to_kill.push(agent_id);
                            }
                            continue;
                        }
                        // A process that never started can run again; so can one whose
                        // request allows retries — each within the poison limit.
                        let may_requeue = (status == "starting" || attempts <= retries)
                            && attempts < policy.max_attempts as i32;
                        let entry = serde_json::json!({
                            "attempt": attempts, "worker": dead, "reason": "worker_lost",
                            "at": chrono::Utc::now(),
                        });
                        sqlx::query(concat!(
                            "UPDATE requests SET history = ",
                            json_append!("history", "$2"),
                            ", updated_at = ",
                            now!(),
                            " WHERE agent_id = $1 AND kind = 'spawn'"
                        ))
                        .bind(agent_id)
                        .bind(&entry)
                        .execute(&mut **tx)
                        .await?;
                        if may_requeue && !same_node_process_may_run(same_node, &status) {
                            sqlx::query(concat!(
                                "UPDATE agents SET status = 'pending', worker_id = NULL, \
                                 owner_epoch = NULL, pid = NULL, pid_start_time = NULL, \
                                 output_offset = 0, session_id = NULL, account_held = false, \
                                 updated_at = ",
                                now!(),
                                " WHERE id = $1"
                            ))
                            .bind(agent_id)
                            .execute(&mut **tx)
                            .await?;
                            sqlx::query(concat!(
                                "UPDATE requests SET status = 'pending', claimed_by = NULL, \
                                 dispatched_at = NULL, updated_at = ",
                                now!(),
                                " WHERE agent_id = $1 AND kind = 'spawn'"
                            ))
                            .bind(agent_id)
                            .execute(&mut **tx)
                            .await?;
                            out.requeued.push(agent_id);
                        } else {
                            let reason = if attempts >= policy.max_attempts as i32 {
                                format!("worker_lost: gave up after {attempts} attempts")
                            } else {
                                "worker_lost".to_string()
                            };
                            Self::finish_unowned_in(tx, agent_id, "crashed", &reason).await?;
                            out.crashed.push(agent_id);
                        }
                    }
                    // Control requests for agents now owned here follow them.
                    sqlx::query(concat!(
                        "UPDATE requests SET target_worker = $2, updated_at = ",
                        now!(),
                        " WHERE target_worker = $1 AND status = 'pending'"
                    ))
                    .bind(&dead)
                    .bind(if same_node { Some(&me.worker_id) } else { None })
                    .execute(&mut **tx)
                    .await?;
                    sqlx::query("UPDATE workers SET status = 'dead', running = 0 WHERE id = $1")
                        .bind(&dead)
                        .execute(&mut **tx)
                        .await?;
                    Ok(out)
                }
            }
        };
    };
}
