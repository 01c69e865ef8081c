//! Redis pub/sub adapter of the live events: one channel per agent, under the fleet's
//! key prefix.

use futures::{Stream, StreamExt};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use uuid::Uuid;

use super::EventsError;
use crate::domain::StoredEvent;

impl From<redis::RedisError> for EventsError {
    fn from(e: redis::RedisError) -> Self {
        Self::Redis(e.to_string())
    }
}

#[derive(Clone)]
pub struct RedisBus {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl RedisBus {
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
        let payload =
            serde_json::to_string(event).map_err(|e| EventsError::Redis(e.to_string()))?;
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
