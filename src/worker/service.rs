//! The shape every maintenance service of the worker shares, as river's maintenance
//! services do: a value holding the service's configuration, one step (`run_once`) that
//! does the work once and returns a small report of what it did, and one loop ([`run`])
//! that takes that step every interval until the service's shutdown token is cancelled.
//! Tests call the step and look at its report instead of sleeping for the loop.
//!
//! The services: the lease heartbeat (`lease.rs`), the sweeper (`sweeper.rs`), the
//! re-dispatcher (`redispatch.rs`) and the orphan cleanup (`cleanup.rs`). The disk watch
//! (`disk.rs`) and the control consumer (`control.rs`) keep loops of their own: one changes
//! its pace while the slots are closed, the other is a queue consumer, not a ticker.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::runtime::Runtime;

/// A maintenance service: its configuration is the value itself.
pub(super) trait Service: Send + Sync {
    /// What one step did.
    type Report: Debug + Send;
    /// The service's name, on its span.
    const NAME: &'static str;
    /// What the loop does when a step overran the interval (tokio's default: catch up).
    const MISSED_TICK: MissedTickBehavior = MissedTickBehavior::Burst;

    /// How long from one step to the next.
    fn interval(&self) -> Duration;

    /// Does the service's work once.
    fn run_once(&self, rt: &Arc<Runtime>) -> impl Future<Output = Self::Report> + Send;

    /// Whether the service ends after a step that reported this (its work is over).
    fn ends_after(&self, _report: &Self::Report) -> bool {
        false
    }
}

/// Takes `service`'s step every interval, the first at once, until `stop` is cancelled or a
/// step's report ends the service.
pub(super) async fn run<S: Service>(service: S, rt: Arc<Runtime>, stop: CancellationToken) {
    let span = tracing::info_span!("service", service = S::NAME);
    async move {
        let mut tick = tokio::time::interval(service.interval());
        tick.set_missed_tick_behavior(S::MISSED_TICK);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let report = service.run_once(&rt).await;
            tracing::debug!(?report, "service step");
            if service.ends_after(&report) {
                return;
            }
        }
    }
    .instrument(span)
    .await
}
