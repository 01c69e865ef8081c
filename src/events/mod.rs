//! Live events: every stored agent event is also published on Redis pub/sub, one channel per
//! agent, so followers (`logs -f`, `spawn --wait`, SSE) see it as it happens. Pub/sub is a
//! fan-out only; the store's event log is what followers fall back on (`follow`).

mod follow;

pub use follow::follow;

use futures::{Stream, StreamExt};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use uuid::Uuid;

use crate::domain::{AgentStatus, StoredEvent};

/// The event kind that carries an agent's status changes.
pub const STATUS_EVENT: &str = "status";

#[derive(Debug, thiserror::Error)]
#[error("events (redis): {0}")]
pub struct EventsError(String);

impl From<redis::RedisError> for EventsError {
    fn from(e: redis::RedisError) -> Self {
        Self(e.to_string())
    }
}

#[derive(Clone)]
pub struct EventBus {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl EventBus {
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, EventsError> {
        let client = redis::Client::open(url)?;
        let conn = client.get_connection_manager().await?;
        Ok(Self {
            client,
            conn,
            prefix: prefix.to_string(),
        })
    }

    fn channel(&self, agent_id: Uuid) -> String {
        format!("{}:events:{agent_id}", self.prefix)
    }

    pub async fn ping(&self) -> Result<(), EventsError> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    pub async fn publish(&self, agent_id: Uuid, event: &StoredEvent) -> Result<(), EventsError> {
        let payload = serde_json::to_string(event).map_err(|e| EventsError(e.to_string()))?;
        let mut conn = self.conn.clone();
        let _: i64 = conn.publish(self.channel(agent_id), payload).await?;
        Ok(())
    }

    /// Live events of one agent from now on (messages that do not decode are skipped).
    pub async fn subscribe(
        &self,
        agent_id: Uuid,
    ) -> Result<impl Stream<Item = StoredEvent> + Send + use<>, EventsError> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(self.channel(agent_id)).await?;
        Ok(pubsub.into_on_message().filter_map(|msg| async move {
            serde_json::from_slice::<StoredEvent>(msg.get_payload_bytes()).ok()
        }))
    }
}

/// The status a status event announces, if it is one.
pub fn status_of(event: &StoredEvent) -> Option<AgentStatus> {
    if event.kind != STATUS_EVENT {
        return None;
    }
    event
        .data
        .get("status")
        .and_then(|s| s.as_str())
        .and_then(AgentStatus::parse)
}
