//! Sending the outbox. Every worker runs a [`Deliverer`]: each step claims subscriptions
//! that have a delivery due (one worker at a time per subscription, by a claim in the
//! store), and sends each claimed subscription's due deliveries one after the other in a
//! task of its own, with `webhooks.timeout` per request and at most `webhooks.concurrency`
//! subscriptions at once, so a slow or dead receiver holds up only its own subscription,
//! never an agent or another subscription. An attempt that fails is retried with
//! exponential backoff (`retry_initial`, doubling, at most `retry_max`) until `retry_for`
//! after the event, then the delivery is marked failed with its last error.
//!
//! A request is `POST url` with the JSON `{"type", "timestamp", "data": <the agent>}` and
//! the Standard Webhooks headers `webhook-id` (the delivery's id, the same on every
//! attempt), `webhook-timestamp` and `webhook-signature` (see `signing`). Redirects are
//! not followed, no proxy is used, and private targets are refused (see `target`).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::signing::SigningSecret;
use super::target::{PublicResolver, check_url};
use crate::config::WebhookSettings;
use crate::credentials::Keyring;
use crate::domain::Webhook;
use crate::store::{AttemptResult, DeliveryAttempt, DueDelivery, Store};

/// Deliveries one claim sends at most before it lets go (so claims move around).
const PER_CLAIM: usize = 100;

/// How often a worker removes old delivered and failed deliveries.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// What one step did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Subscriptions claimed (each now delivering in its own task).
    pub claimed: usize,
    /// Deliveries not delivered yet, as the store counted them.
    pub outbox: i64,
}

/// A worker's sender of webhook deliveries.
pub struct Deliverer {
    store: Store,
    settings: WebhookSettings,
    /// The fleet's sealing key; None (with why) when this process has none.
    keyring: Result<Keyring, String>,
    client: reqwest::Client,
    worker_id: String,
    slots: Arc<Semaphore>,
    tasks: TaskTracker,
    /// When it last pruned old deliveries (None: not yet).
    pruned_at: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl Deliverer {
    pub fn new(
        store: Store,
        settings: WebhookSettings,
        keyring: Result<Keyring, String>,
        worker_id: String,
    ) -> anyhow::Result<Self> {
        let mut client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("agentfleet/", env!("CARGO_PKG_VERSION")));
        if !settings.allow_private {
            client = client.dns_resolver(Arc::new(PublicResolver));
        }
        Ok(Self {
            slots: Arc::new(Semaphore::new(settings.concurrency as usize)),
            client: client.build()?,
            store,
            settings,
            keyring,
            worker_id,
            tasks: TaskTracker::new(),
            pruned_at: std::sync::Mutex::new(None),
        })
    }

    /// The tasks delivering now (to wait for at shutdown).
    pub fn tasks(&self) -> TaskTracker {
        self.tasks.clone()
    }

    /// How long a claim holds without an attempt recorded: longer than one request can take.
    fn claim_for(&self) -> Duration {
        self.settings.timeout * 3 + Duration::from_secs(10)
    }

    /// Claims the subscriptions with deliveries due (as many as there are free slots) and
    /// starts a task for each; does not wait for them.
    pub async fn run_once(self: &Arc<Self>) -> DeliveryReport {
        let mut report = DeliveryReport::default();
        self.prune_now_and_then().await;
        match self.store.webhook_outbox_depth().await {
            Ok(depth) => {
                crate::metrics::webhook_outbox(depth);
                report.outbox = depth;
                if depth == 0 {
                    return report;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "webhooks: cannot read the outbox");
                return report;
            }
        }
        let free = self.slots.available_permits();
        if free == 0 {
            return report;
        }
        let claimed = match self
            .store
            .claim_webhooks(&self.worker_id, self.claim_for(), free as i64)
            .await
        {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(error = %e, "webhooks: cannot claim subscriptions");
                return report;
            }
        };
        for webhook in claimed {
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                // Claimed more than the free slots (cannot happen: this is the only taker).
                let _ = self
                    .store
                    .release_webhook(webhook.id, &self.worker_id)
                    .await;
                continue;
            };
            report.claimed += 1;
            let this = self.clone();
            let span = tracing::info_span!("webhook delivery", webhook_id = %webhook.id);
            self.tasks.spawn(
                async move {
                    this.deliver_for(&webhook).await;
                    drop(slot);
                }
                .instrument(span),
            );
        }
        report
    }

    /// Removes delivered and failed deliveries past `webhooks.keep_for`, at most once per
    /// `PRUNE_EVERY` (any worker may; a second one finds little to remove).
    async fn prune_now_and_then(&self) {
        {
            let mut pruned_at = self.pruned_at.lock().unwrap_or_else(|e| e.into_inner());
            if pruned_at.is_some_and(|at| at.elapsed() < PRUNE_EVERY) {
                return;
            }
            *pruned_at = Some(tokio::time::Instant::now());
        }
        match self.store.prune_deliveries(self.settings.keep_for).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "webhooks: old deliveries removed"),
            Err(e) => tracing::warn!(error = %e, "webhooks: cannot remove old deliveries"),
        }
    }

    /// Sends a claimed subscription's due deliveries one by one, then lets go of it.
    async fn deliver_for(&self, webhook: &Webhook) {
        let secret = self.keyring.clone().and_then(|keyring| {
            keyring
                .open(
                    webhook.id,
                    &format!("webhook {}", webhook.id),
                    &webhook.key_id,
                    &webhook.sealed,
                )
                .map(SigningSecret::from_bytes)
                .map_err(|e| e.to_string())
        });
        for _ in 0..PER_CLAIM {
            let due = match self.store.next_delivery(webhook.id).await {
                Ok(Some(due)) => due,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "webhooks: cannot read the next delivery");
                    break;
                }
            };
            let result = match (&secret, &due.agent) {
                (_, Err(why)) => AttemptResult::Failed {
                    error: why.clone(),
                    status: None,
                },
                (Ok(secret), Ok(agent)) => {
                    let sent = self.send(webhook, secret, &due, agent).await;
                    self.judge(&due, sent)
                }
                (Err(why), Ok(_)) => {
                    let why = format!("cannot open the webhook's secret: {why}");
                    self.judge(&due, Err((why, None)))
                }
            };
            let outcome = match &result {
                AttemptResult::Delivered { .. } => "delivered",
                AttemptResult::Retry { .. } => "retried",
                AttemptResult::Failed { .. } => "failed",
            };
            crate::metrics::webhook_attempt(outcome);
            match &result {
                AttemptResult::Delivered { status } => {
                    crate::metrics::webhook_delivered(
                        due.event.as_str(),
                        Utc::now() - due.created_at,
                    );
                    tracing::debug!(delivery_id = %due.id, event = %due.event, status, "webhook delivered");
                }
                AttemptResult::Retry { error, after, .. } => {
                    tracing::info!(delivery_id = %due.id, event = %due.event, error = %error, retry_in = ?after, "webhook delivery failed; will retry");
                }
                AttemptResult::Failed { error, .. } => {
                    tracing::warn!(delivery_id = %due.id, event = %due.event, error = %error, attempts = due.attempts + 1, "webhook delivery failed for good");
                }
            }
            let attempt = DeliveryAttempt {
                delivery_id: due.id,
                webhook_id: webhook.id,
                worker: &self.worker_id,
                result,
                claim_for: self.claim_for(),
            };
            match self.store.record_attempt(&attempt).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!("webhooks: the claim on the subscription was lost");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "webhooks: cannot record an attempt");
                    break;
                }
            }
        }
        if let Err(e) = self
            .store
            .release_webhook(webhook.id, &self.worker_id)
            .await
        {
            tracing::warn!(error = %e, "webhooks: cannot release a subscription (its claim expires)");
        }
    }

    /// One attempt: the HTTP status of a 2xx answer, or why it failed (with the status
    /// the receiver answered, if it did).
    async fn send(
        &self,
        webhook: &Webhook,
        secret: &SigningSecret,
        due: &DueDelivery,
        agent: &crate::domain::Agent,
    ) -> Result<i32, (String, Option<i32>)> {
        let url = check_url(&webhook.url, self.settings.allow_private).map_err(|e| (e, None))?;
        let body = serde_json::json!({
            "type": due.event,
            "timestamp": due.created_at,
            "data": agent,
        });
        let body = serde_json::to_vec(&body).map_err(|e| (e.to_string(), None))?;
        let id = due.id.to_string();
        let timestamp = Utc::now().timestamp();
        let response = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", secret.sign(&id, timestamp, &body))
            .body(body)
            .send()
            .await
            .map_err(|e| (describe(e), None))?;
        let status = response.status();
        if status.is_success() {
            Ok(i32::from(status.as_u16()))
        } else {
            Err((format!("HTTP {status}"), Some(i32::from(status.as_u16()))))
        }
    }

    /// A failed attempt is retried after the backoff, unless that falls past `retry_for`
    /// since the delivery's retries began.
    fn judge(&self, due: &DueDelivery, sent: Result<i32, (String, Option<i32>)>) -> AttemptResult {
        let (error, status) = match sent {
            Ok(status) => return AttemptResult::Delivered { status },
            Err(failed) => failed,
        };
        let after = backoff(&self.settings, due.attempts);
        if due.retrying_for + after.as_secs_f64() > self.settings.retry_for.as_secs_f64() {
            AttemptResult::Failed { error, status }
        } else {
            AttemptResult::Retry {
                error,
                status,
                after,
            }
        }
    }
}

/// The wait after the attempt that follows `attempts` earlier ones: `retry_initial`,
/// doubling each time, at most `retry_max`.
pub fn backoff(settings: &WebhookSettings, attempts: i32) -> Duration {
    let doublings = attempts.clamp(0, 30) as u32;
    settings
        .retry_initial
        .checked_mul(1 << doublings)
        .unwrap_or(settings.retry_max)
        .min(settings.retry_max)
}

/// A request error with its causes, without the URL (its query may hold a token).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> WebhookSettings {
        WebhookSettings {
            allow_private: false,
            timeout: Duration::from_secs(10),
            retry_initial: Duration::from_secs(5),
            retry_max: Duration::from_secs(3600),
            retry_for: Duration::from_secs(86400),
            poll_interval: Duration::from_secs(1),
            concurrency: 4,
            keep_for: Duration::from_secs(86400),
        }
    }

    #[test]
    fn retries_back_off_exponentially_up_to_the_maximum() {
        let s = settings();
        let waits: Vec<u64> = (0..12).map(|n| backoff(&s, n).as_secs()).collect();
        assert_eq!(
            waits,
            [5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]
        );
        assert_eq!(backoff(&s, i32::MAX).as_secs(), 3600);
    }
}
