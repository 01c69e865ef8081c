//! Live events: every stored agent event is also published live, so followers (`logs -f`,
//! `spawn --wait`, SSE) see it as it happens. In the distributed mode that is Redis pub/sub, one
//! channel per agent (`RedisBus`); in the embedded default it is an in-process broadcast
//! plus a short poll of the store's event log, so a follower in another process sees the
//! output too (`EmbeddedBus`). The live side is a fan-out only; the store's event log is
//! what followers fall back on (`follow`), which also removes duplicates and fills gaps.
//!
//! This module is the read and fan-out side. The durable write path — numbering an agent's
//! events, storing them in batches fenced by the owner, then publishing them here — is the
//! worker's (`worker/event_log.rs` and `worker/event_writer.rs`); events about an agent no
//! worker runs are written by the front door (`Fleet::record_unowned_event`).

mod embedded;
mod follow;
mod redis;
mod storable;

pub use embedded::EmbeddedBus;
pub use follow::follow;
pub use redis::RedisBus;
pub use storable::{make_storable, make_storable_text, storable_line, storable_text};

use futures::Stream;
use futures::StreamExt;
use futures::stream::BoxStream;
use uuid::Uuid;

use crate::domain::{AgentStatus, StoredEvent};

/// The event kind that carries an agent's status changes.
pub const STATUS_EVENT: &str = "status";

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("events (redis): {0}")]
    Redis(String),
    #[error("events (embedded): {0}")]
    Store(String),
}

/// The live event bus, as one of its adapters.
#[derive(Clone, Debug)]
pub enum EventBus {
    Redis(RedisBus),
    Embedded(EmbeddedBus),
}

impl EventBus {
    pub async fn ping(&self) -> Result<(), EventsError> {
        match self {
            Self::Redis(bus) => bus.ping().await,
            Self::Embedded(_) => Ok(()),
        }
    }

    pub async fn publish(&self, agent_id: Uuid, event: &StoredEvent) -> Result<(), EventsError> {
        match self {
            Self::Redis(bus) => bus.publish(agent_id, event).await,
            Self::Embedded(bus) => {
                bus.publish(agent_id, event);
                Ok(())
            }
        }
    }

    /// Live events of one agent from now on.
    pub async fn subscribe(
        &self,
        agent_id: Uuid,
    ) -> Result<impl Stream<Item = StoredEvent> + Send + use<>, EventsError> {
        let stream: BoxStream<'static, StoredEvent> = match self {
            Self::Redis(bus) => bus.subscribe(agent_id).await?.boxed(),
            Self::Embedded(bus) => bus.subscribe(agent_id).await?.boxed(),
        };
        Ok(stream)
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
