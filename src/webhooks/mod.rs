//! Webhooks: upstream services subscribe to agents' status changes instead of polling.
//! A subscription (`subscribe`) names a URL, optionally the events and the project it
//! wants; its signing secret is shown once and stored sealed with the fleet's key, as
//! accounts' credentials are. The store writes a delivery for each matching subscription
//! in the same transaction as the change it reports (triggers on `agents`), so no change
//! is lost between the record and the outbox; workers send the outbox (`delivery`), signed
//! per the Standard Webhooks spec (`signing`), to targets checked against private
//! addresses (`target`).
//!
//! The events: `agent.started` (its process is up — again after a resume or an account
//! failover), `agent.completed`, `agent.waiting_for_input` (with its `pending_questions`),
//! `agent.failed`, `agent.rate_limited` and `agent.account_exhausted` (a failure for that
//! reason), `agent.crashed`, `agent.stopped` and `agent.deleted`.

pub mod delivery;
pub mod signing;
pub mod target;

pub use delivery::{Deliverer, DeliveryReport};
pub use signing::SigningSecret;

use uuid::Uuid;

use crate::credentials::Keyring;
use crate::domain::{Webhook, WebhookDelivery, WebhookEvent};
use crate::fleet::{Fleet, FleetError, no_nul};
use crate::store::NewWebhook;

/// How many deliveries `deliveries` shows.
pub const RECENT_DELIVERIES: i64 = 50;

/// A new subscription, and its secret (`whsec_…`), shown this once.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Subscribed {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// The signing secret (`whsec_<base64>`): shown only now, never again.
    pub secret: String,
}

/// Records a subscription: `url` (see `target::check_url`), the events it receives (None:
/// all; never an empty list), only agents of `project` when given (it must exist).
/// Nothing is recorded when anything is wrong.
pub async fn subscribe(
    fleet: &Fleet,
    url: &str,
    events: Option<Vec<WebhookEvent>>,
    project: Option<&str>,
) -> Result<Subscribed, FleetError> {
    no_nul("url", url)?;
    let url = target::check_url(url, fleet.settings.webhooks.allow_private)
        .map_err(FleetError::Invalid)?;
    let events = match events {
        Some(list) if list.is_empty() => {
            return Err(FleetError::Invalid(
                "events: give at least one event, or leave it out for every event".into(),
            ));
        }
        Some(mut list) => {
            list.sort_by_key(|e| WebhookEvent::ALL.iter().position(|a| a == e));
            list.dedup();
            Some(list)
        }
        None => None,
    };
    if let Some(project) = project {
        no_nul("project", project)?;
        fleet.store.project(project).await?;
    }
    let keyring = Keyring::load(&fleet.settings, true)?;
    let secret = SigningSecret::generate().map_err(FleetError::Unavailable)?;
    let id = Uuid::now_v7();
    let sealed = keyring.seal(id, secret.as_bytes())?;
    let webhook = fleet
        .store
        .add_webhook(&NewWebhook {
            id,
            url: url.as_str(),
            events: events.as_deref(),
            project,
            sealed: &sealed,
            key_id: keyring.id(),
        })
        .await?;
    tracing::info!(webhook_id = %webhook.id, "webhook subscribed");
    Ok(Subscribed {
        webhook,
        secret: secret.to_text(),
    })
}

/// A subscription by its id as a person or a caller gave it.
pub async fn get(fleet: &Fleet, id: &str) -> Result<Webhook, FleetError> {
    Ok(fleet.store.webhook_by_id(parse_id(id, "webhook")?).await?)
}

pub async fn list(fleet: &Fleet) -> Result<Vec<Webhook>, FleetError> {
    Ok(fleet.store.list_webhooks().await?)
}

/// Removes a subscription; its deliveries not sent yet are dropped.
pub async fn remove(fleet: &Fleet, id: &str) -> Result<Uuid, FleetError> {
    let id = parse_id(id, "webhook")?;
    fleet.store.remove_webhook(id).await?;
    tracing::info!(webhook_id = %id, "webhook removed");
    Ok(id)
}

/// A subscription's recent deliveries, newest first.
pub async fn deliveries(fleet: &Fleet, id: &str) -> Result<Vec<WebhookDelivery>, FleetError> {
    let id = parse_id(id, "webhook")?;
    Ok(fleet.store.list_deliveries(id, RECENT_DELIVERIES).await?)
}

/// Sends a delivery again (pending, delivered or failed alike), with the same
/// `webhook-id`, as soon as a worker gets to it.
pub async fn redeliver(fleet: &Fleet, delivery_id: &str) -> Result<WebhookDelivery, FleetError> {
    let id = parse_id(delivery_id, "webhook delivery")?;
    Ok(fleet.store.redeliver(id).await?)
}

/// An id a caller gave; one that is not a UUID names nothing (404).
fn parse_id(text: &str, what: &str) -> Result<Uuid, FleetError> {
    Uuid::parse_str(text.trim()).map_err(|_| FleetError::NotFound(format!("no {what} '{text}'")))
}
