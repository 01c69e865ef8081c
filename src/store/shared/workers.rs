//! Workers and their leases: the operations whose SQL is the same in both dialects —
//! renewing and ending a lease, and listing workers. Registering (a fresh epoch) and
//! reconciling dead workers differ per dialect.

/// The worker operations, expanded in `postgres/workers.rs` and `sqlite/workers.rs`.
macro_rules! shared_workers {
    ($store:ty) => {
        const _: () = {
            use std::time::Duration;

            use sqlx::Row;

            use crate::domain::WorkerInfo;
            use crate::store::rows::worker_from_row;
            use crate::store::{Owner, PeerWorker, StoreError};

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
            }
        };
    };
}
