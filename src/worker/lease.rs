//! The lease heartbeat, a maintenance service (`service.rs`): renews this worker's lease
//! every `worker.heartbeat_interval` and keeps its agents' heartbeat files fresh
//! (`liveness`). It runs on an OS thread of its own
//! with a current-thread runtime and, on Postgres, its own connection, so no amount of
//! output work on the worker's runtime delays a renewal.
//!
//! A worker that cannot reach the store keeps its agents running and renews when it can.
//! It lets go of them (cancels `lease_lost`) only when the store refuses a renewal (the
//! lease was taken over: the worker is fenced) or after `worker.partition_timeout` without
//! one — which is no later than the fleet may run its agents elsewhere.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::runtime::Runtime;
use super::service::{self, Service};
use crate::store::{Store, StoreKind};

/// Starts the heartbeat on its own thread; the future ends when the heartbeat does.
pub fn start(rt: Arc<Runtime>, stop: CancellationToken) -> impl Future<Output = ()> {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let thread_rt = rt.clone();
    let spawned = std::thread::Builder::new()
        .name("lease".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(run(thread_rt, stop)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the lease heartbeat's runtime");
                    thread_rt.lease_lost.cancel();
                }
            }
            let _ = done_tx.send(());
        });
    async move {
        match spawned {
            Ok(_) => {
                let _ = done_rx.await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start the lease heartbeat's thread");
                rt.lease_lost.cancel();
            }
        }
    }
}

/// The heartbeat's own store: a connection of its own on Postgres (the worker's pool may be
/// busy with output); SQLite's single writer is shared.
async fn own_store(rt: &Runtime) -> Store {
    let url = &rt.fleet.settings.database.url;
    if StoreKind::of_url(url) == Some(StoreKind::Postgres) {
        match Store::connect(url, 1, false).await {
            Ok(store) => return store,
            Err(e) => {
                tracing::warn!(error = %e, "lease heartbeat shares the worker's store connections")
            }
        }
    }
    rt.fleet.store.clone()
}

/// The heartbeat's configuration, and the store it renews through.
struct Heartbeat {
    store: Store,
    interval: Duration,
    ttl: Duration,
    /// A renewal that hangs (a partition, not a refused connection) must not hold up the
    /// heartbeat files or the partition timeout.
    answer_within: Duration,
    partition_timeout: Duration,
}

/// What one beat did.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Beat {
    /// The store renewed the lease.
    Renewed,
    /// The store did not answer or failed; agents keep running.
    Failed,
    /// The lease is gone (taken over, or no renewal for the partition timeout): the worker
    /// lets go of every agent, and the heartbeat ends.
    Lost,
}

impl Heartbeat {
    async fn new(rt: &Runtime) -> Self {
        let settings = &rt.fleet.settings.worker;
        Self {
            store: own_store(rt).await,
            interval: settings.heartbeat_interval,
            ttl: settings.lease_ttl,
            answer_within: (settings.lease_ttl / 3).max(settings.heartbeat_interval),
            partition_timeout: settings.partition_timeout(),
        }
    }
}

impl Service for Heartbeat {
    type Report = Beat;
    const NAME: &'static str = "lease";
    const MISSED_TICK: MissedTickBehavior = MissedTickBehavior::Delay;

    fn interval(&self) -> Duration {
        self.interval
    }

    async fn run_once(&self, rt: &Arc<Runtime>) -> Beat {
        let running = rt.running_agents() as i32;
        crate::metrics::worker_slots(&rt.owner.worker_id, running as usize, rt.slots.free());
        let (sent_at, sent) = (SystemTime::now(), Instant::now());
        let renewal = tokio::time::timeout(
            self.answer_within,
            self.store.renew_lease(&rt.owner, self.ttl, running),
        )
        .await;
        let beat = match renewal {
            Ok(Ok(true)) => {
                rt.liveness.renewed(sent_at, sent);
                Beat::Renewed
            }
            Ok(Ok(false)) => {
                tracing::error!(worker_id = %rt.owner.worker_id, "lease lost: taken over or ended");
                rt.lease_lost.cancel();
                return Beat::Lost;
            }
            Ok(Err(e)) => {
                renewal_failed(rt, &e);
                Beat::Failed
            }
            Err(_) => {
                renewal_failed(rt, &"no answer in time");
                Beat::Failed
            }
        };
        if rt.liveness.without_renewal() >= self.partition_timeout {
            tracing::error!(
                worker_id = %rt.owner.worker_id,
                partition_timeout = ?self.partition_timeout,
                "lease lost: no renewal for worker.partition_timeout; letting go of every agent"
            );
            rt.lease_lost.cancel();
            return Beat::Lost;
        }
        rt.liveness.touch_all();
        beat
    }

    fn ends_after(&self, beat: &Beat) -> bool {
        *beat == Beat::Lost
    }
}

async fn run(rt: Arc<Runtime>, stop: CancellationToken) {
    let heartbeat = Heartbeat::new(&rt).await;
    service::run(heartbeat, rt, stop).await;
}

fn renewal_failed(rt: &Runtime, error: &dyn std::fmt::Display) {
    rt.liveness.store_failed();
    let without = rt.liveness.without_renewal();
    tracing::warn!(
        worker_id = %rt.owner.worker_id,
        %error,
        without_renewal_ms = without.as_millis() as u64,
        "lease renewal failed; agents keep running"
    );
}
