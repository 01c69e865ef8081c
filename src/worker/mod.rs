//! The worker process: registers in the store with a lease and an epoch, renews the lease on
//! a heartbeat, adopts the agents of dead workers on its node, and consumes the spawn queue
//! (apalis on Redis, or the embedded queue) only while it has a free slot. A delivered job
//! starts its agent and hands it to a tracked agent task; maintenance services (sweeper,
//! re-dispatch, control requests, cleanup) each run on their own interval.
//!
//! Shutdown is one tree: a soft stop stops fetching, then leaves running agents to the next
//! worker on the node (or stops them, `worker.on_shutdown = "stop"`); a hard stop stops them
//! at once. A lost lease lets go of everything.
//!
//! This file starts the worker and holds that tree; what its jobs and services share is the
//! [`Runtime`] (`runtime.rs`). A spawn job is `dispatch.rs` (with `retry.rs` through store
//! outages): it prepares the checkout (`git.rs`) and starts the process (`launch.rs`), then
//! `agent_task.rs` supervises it (`supervisor.rs`: the tail loop; `stream_facts.rs`,
//! `signal_file.rs` and `outcome.rs`: how the run ended), publishes its branch and records
//! its end; `failover.rs` and `resume.rs` start it again. The maintenance services share
//! one shape (`service.rs`): `lease.rs` (with `liveness.rs`), `sweeper.rs` (with
//! `node_scan.rs`), `redispatch.rs`, `cleanup.rs` and `webhooks.rs` (the webhook sender);
//! `disk.rs` and the control consumer (`control.rs`) keep loops of their own. An agent's
//! events go through `event_log.rs` to the batching `event_writer.rs`; `output_watch.rs` wakes supervisors when output grows,
//! `output_reader.rs` splits it into lines; `health.rs` serves the probes and metrics.

mod agent_task;
mod budget;
mod cleanup;
mod control;
mod disk;
mod dispatch;
mod event_log;
mod event_writer;
mod failover;
mod git;
mod health;
mod launch;
mod lease;
mod liveness;
mod node_scan;
mod outcome;
pub mod output_reader;
mod output_watch;
mod redispatch;
mod resume;
mod retry;
mod runtime;
mod service;
mod signal_file;
mod stream_facts;
mod supervisor;
mod sweeper;
mod usage_meter;
mod webhooks;

pub use cleanup::{CleanupReport, cleanup_workspace};

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::OnShutdown;
use crate::fleet::Fleet;
use crate::queue::JobHandler;

use cleanup::Cleanup;
use redispatch::Redispatch;
use runtime::{Runtime, SandboxRuntime};
use sweeper::Sweeper;

/// Signals from outside: `soft` stops taking work, `hard` stops running agents.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    pub soft: CancellationToken,
    pub hard: CancellationToken,
}

/// A unique worker id: host, pid and a random suffix (apalis-redis needs unique names).
pub fn new_worker_id() -> String {
    let suffix: u32 = rand::random_range(0..0xff_ffff);
    format!(
        "{}-{}-{suffix:06x}",
        crate::config::hostname(),
        std::process::id()
    )
}

/// Runs a worker until `shutdown` (or a lost lease) ends it.
pub async fn run(fleet: Fleet, shutdown: Shutdown) -> anyhow::Result<()> {
    let settings = fleet.settings.clone();
    let sandbox = SandboxRuntime::for_settings(&settings)?;
    let (owner, registered) = runtime::register(&fleet).await?;
    let (worker_id, epoch) = (owner.worker_id.clone(), owner.epoch);
    let (node_id, capacity) = (settings.node_id(), settings.worker.capacity);
    std::fs::create_dir_all(&settings.worker.workspace_root)?;
    let workspace_root = std::fs::canonicalize(&settings.worker.workspace_root)?;
    let mode = match fleet.store.kind() {
        crate::store::StoreKind::Sqlite => "embedded",
        crate::store::StoreKind::Postgres => "distributed",
    };
    tracing::info!(
        worker_id = %worker_id, node_id = %node_id, epoch, capacity, mode,
        store = %crate::store::redact(&settings.database.url),
        workspace = %workspace_root.display(),
        "worker registered"
    );
    let rt = Arc::new(Runtime::new(
        fleet.clone(),
        owner.clone(),
        workspace_root,
        sandbox,
        shutdown.hard.child_token(),
        registered,
    ));
    if rt.sandbox.enabled {
        tracing::info!(helper = %rt.sandbox.helper.display(), "agents run in the sandbox");
    } else {
        tracing::warn!("sandbox.mode = \"off\": agents run with the worker's powers");
    }

    let services = TaskTracker::new();
    let stop_services = CancellationToken::new();
    // Before taking new work: stop this node's processes whose agents are no longer owned
    // here, then adopt what this node's dead workers left.
    sweeper::sweep_once(&rt, true).await;
    rt.check_disk().await;
    services.spawn(disk::run(rt.clone(), stop_services.clone()));
    services.spawn(lease::start(rt.clone(), stop_services.clone()));
    services.spawn(service::run(
        Sweeper::from_settings(&settings),
        rt.clone(),
        stop_services.clone(),
    ));
    services.spawn(service::run(
        Redispatch::from_settings(&settings),
        rt.clone(),
        stop_services.clone(),
    ));
    services.spawn(control::run(rt.clone(), stop_services.clone()));
    services.spawn(service::run(
        Cleanup::from_settings(&settings),
        rt.clone(),
        stop_services.clone(),
    ));
    services.spawn(webhooks::run(rt.clone(), stop_services.clone()));
    services.spawn(health::run(
        rt.clone(),
        settings.worker_metrics_bind()?,
        stop_services.clone(),
    ));

    // Stop fetching on a soft stop or a lost lease.
    let stop_fetching = CancellationToken::new();
    {
        let (soft, lost, stop) = (
            shutdown.soft.clone(),
            rt.lease_lost.clone(),
            stop_fetching.clone(),
        );
        services.spawn(async move {
            tokio::select! {
                _ = soft.cancelled() => {}
                _ = lost.cancelled() => {}
            }
            stop.cancel();
        });
    }

    let consumer = consume(rt.clone(), stop_fetching.clone());
    tokio::pin!(consumer);
    // Once fetching stops, the job in hand gets `shutdown_timeout` to finish.
    let result = tokio::select! {
        result = &mut consumer => result,
        _ = stop_fetching.cancelled() => {
            match tokio::time::timeout(settings.worker.shutdown_timeout, &mut consumer).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!("the job in hand did not finish within worker.shutdown_timeout");
                    Ok(())
                }
            }
        }
    };
    // Running agents: leave them for the next worker on this node, or stop them.
    let leave = settings.worker.on_shutdown == OnShutdown::Leave
        && !rt.hard_stop.is_cancelled()
        && !rt.lease_lost.is_cancelled();
    if rt.lease_lost.is_cancelled() {
        // Supervisors have let go already; the agents are the fleet's now.
    } else if leave {
        rt.detach.cancel();
    } else {
        rt.hard_stop.cancel();
    }
    rt.agent_tasks.close();
    // Stopping (or, after a lost lease, killing stale) processes needs the grace period
    // plus a word with the store, which may be slow to answer just then.
    if tokio::time::timeout(
        settings.worker.stop_grace + Duration::from_secs(30),
        rt.agent_tasks.wait(),
    )
    .await
    .is_err()
    {
        tracing::warn!("agent tasks did not end in time");
    }
    stop_services.cancel();
    services.close();
    services.wait().await;
    if rt.lease_lost.is_cancelled() {
        anyhow::bail!("worker {worker_id} lost its lease; its agents belong to the fleet now");
    }
    let handoff = leave.then_some(settings.worker.handoff_grace);
    if let Err(e) = fleet.store.deregister_worker(&owner, handoff).await {
        tracing::warn!(error = %e, "cannot deregister worker");
    }
    // Whatever was still queued for this worker is in the store, for its agents' next owner.
    fleet.queue.forget_worker(&worker_id).await;
    tracing::info!(worker_id = %worker_id, left_running = leave, "worker stopped");
    result
}

/// Takes jobs from the queue (apalis on Redis, or the embedded queue over the store's
/// pending requests) and runs each through `dispatch::handle`. A consumer that fails (Redis
/// gone, say) is started again under a new name (apalis refuses a name reused inside its
/// orphan window).
async fn consume(rt: Arc<Runtime>, stop: CancellationToken) -> anyhow::Result<()> {
    let handler: JobHandler = {
        let rt = rt.clone();
        JobHandler::new(move |job| dispatch::handle(rt.clone(), job))
    };
    let mut generation = 0u32;
    let mut backoff = Duration::from_millis(500);
    loop {
        generation += 1;
        let name = format!("{}-{generation}", rt.owner.worker_id);
        let started = tokio::time::Instant::now();
        let outcome = rt
            .fleet
            .queue
            .consume(
                name.clone(),
                rt.slots.clone(),
                stop.clone(),
                handler.clone(),
            )
            .await;
        match outcome {
            Ok(()) if stop.is_cancelled() => return Ok(()),
            Ok(()) => tracing::warn!(worker = %name, "queue consumer ended; restarting"),
            Err(e) => {
                tracing::warn!(worker = %name, error = %e, "queue consumer failed; restarting")
            }
        }
        if started.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_millis(500);
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}
