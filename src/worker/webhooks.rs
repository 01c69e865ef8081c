//! The webhook sender, a maintenance service (`service.rs`): every `webhooks.poll_interval`
//! it claims the subscriptions with deliveries due and sends them, each in a task of its
//! own (`webhooks::Deliverer`), so the step itself never waits on a receiver. At shutdown
//! the deliveries in hand get `webhooks.timeout` to finish; an unfinished one is sent
//! again by the next worker to claim its subscription (delivery is at least once).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::runtime::Runtime;
use super::service::{self, Service};
use crate::credentials::Keyring;
use crate::webhooks::{Deliverer, DeliveryReport};

struct WebhookSender {
    interval: Duration,
    deliverer: Arc<Deliverer>,
}

impl Service for WebhookSender {
    type Report = DeliveryReport;
    const NAME: &'static str = "webhooks";
    const MISSED_TICK: MissedTickBehavior = MissedTickBehavior::Delay;

    fn interval(&self) -> Duration {
        self.interval
    }

    async fn run_once(&self, _rt: &Arc<Runtime>) -> DeliveryReport {
        self.deliverer.run_once().await
    }
}

/// Runs the sender until `stop`, then waits (a while) for the deliveries in hand.
pub(super) async fn run(rt: Arc<Runtime>, stop: CancellationToken) {
    let settings = &rt.fleet.settings;
    // Without a key no secret opens; each attempt then records why.
    let keyring = Keyring::load(settings, false).map_err(|e| e.to_string());
    let deliverer = match Deliverer::new(
        rt.fleet.store.clone(),
        settings.webhooks.clone(),
        keyring,
        rt.owner.worker_id.clone(),
    ) {
        Ok(deliverer) => Arc::new(deliverer),
        Err(e) => {
            tracing::error!(error = %e, "webhooks: cannot build the HTTP client; not delivering");
            return;
        }
    };
    let tasks = deliverer.tasks();
    let sender = WebhookSender {
        interval: settings.webhooks.poll_interval,
        deliverer,
    };
    let grace = settings.webhooks.timeout + Duration::from_secs(1);
    service::run(sender, rt, stop).await;
    tasks.close();
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        tracing::warn!("webhooks: deliveries still in hand at shutdown; they will be sent again");
    }
}
