//! The lease heartbeat: renews this worker's lease every `worker.heartbeat_interval`.
//! When the store refuses a renewal (the lease expired and was taken over) or no renewal
//! has succeeded for a whole `worker.lease_ttl`, the worker must assume the fleet has
//! written it off: it cancels `lease_lost` and lets go of every agent.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::Runtime;

pub async fn run(rt: Arc<Runtime>, stop: CancellationToken) {
    let settings = &rt.fleet.settings.worker;
    let mut tick = tokio::time::interval(settings.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_renewal = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let running = rt.running_agents() as i32;
        crate::metrics::worker_slots(&rt.owner.worker_id, running as usize, rt.slots.free());
        match rt
            .fleet
            .store
            .renew_lease(&rt.owner, settings.lease_ttl, running)
            .await
        {
            Ok(true) => last_renewal = Instant::now(),
            Ok(false) => {
                tracing::error!(worker_id = %rt.owner.worker_id, "lease lost: taken over or ended");
                rt.lease_lost.cancel();
                return;
            }
            Err(e) => {
                tracing::warn!(worker_id = %rt.owner.worker_id, error = %e, "lease renewal failed");
                if last_renewal.elapsed() >= settings.lease_ttl {
                    tracing::error!(worker_id = %rt.owner.worker_id, "lease expired without renewal");
                    rt.lease_lost.cancel();
                    return;
                }
            }
        }
    }
}
