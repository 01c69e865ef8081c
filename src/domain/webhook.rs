//! Webhook subscriptions and their deliveries, as the API, the CLI and the store speak of
//! them: which events there are, what a subscription asks for, and what became of each
//! delivery. The secret a subscription signs with is never part of these types' output.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What happened to an agent, as a webhook reports it (the payload's `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum WebhookEvent {
    /// Its process is up (also after a resume or an account failover).
    #[serde(rename = "agent.started")]
    Started,
    #[serde(rename = "agent.completed")]
    Completed,
    /// It asks questions (`pending_questions`) and waits for a resume.
    #[serde(rename = "agent.waiting_for_input")]
    WaitingForInput,
    #[serde(rename = "agent.failed")]
    Failed,
    #[serde(rename = "agent.crashed")]
    Crashed,
    #[serde(rename = "agent.stopped")]
    Stopped,
    /// It failed on a rate limit of the CLI's own login.
    #[serde(rename = "agent.rate_limited")]
    RateLimited,
    /// It failed because its account (and every other to fail over to) was exhausted.
    #[serde(rename = "agent.account_exhausted")]
    AccountExhausted,
    #[serde(rename = "agent.deleted")]
    Deleted,
}

impl WebhookEvent {
    pub const ALL: [WebhookEvent; 9] = [
        Self::Started,
        Self::Completed,
        Self::WaitingForInput,
        Self::Failed,
        Self::Crashed,
        Self::Stopped,
        Self::RateLimited,
        Self::AccountExhausted,
        Self::Deleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "agent.started",
            Self::Completed => "agent.completed",
            Self::WaitingForInput => "agent.waiting_for_input",
            Self::Failed => "agent.failed",
            Self::Crashed => "agent.crashed",
            Self::Stopped => "agent.stopped",
            Self::RateLimited => "agent.rate_limited",
            Self::AccountExhausted => "agent.account_exhausted",
            Self::Deleted => "agent.deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

impl std::fmt::Display for WebhookEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A subscription: where to send which agents' events. Its secret is shown once, when it
/// is created, and stored sealed (`sealed`, never serialised).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Webhook {
    pub id: Uuid,
    pub url: String,
    /// The events it receives; `null`: every one.
    pub events: Option<Vec<WebhookEvent>>,
    /// Only agents of this project; `null`: every project.
    pub project: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The signing secret, sealed with the fleet's key.
    #[serde(skip, default)]
    pub sealed: Vec<u8>,
    /// Fingerprint of the key that sealed it.
    #[serde(skip, default)]
    pub key_id: String,
}

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not delivered yet: waiting for its first attempt or its next retry.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Retried for `webhooks.retry_for` without success; `last_error` says why.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Delivered, Self::Failed]
            .into_iter()
            .find(|st| st.as_str() == s)
    }
}

/// One event for one subscription, and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookDelivery {
    /// Sent as the `webhook-id` header, the same on every attempt.
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub agent_id: Uuid,
    pub event: WebhookEvent,
    pub status: DeliveryStatus,
    pub attempts: i32,
    /// When the next attempt is due (while pending).
    pub next_attempt_at: DateTime<Utc>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// The HTTP status the receiver last answered.
    pub last_status: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}
