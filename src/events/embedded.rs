//! The embedded default's live events: an in-process broadcast for followers in the
//! process that runs the agent (the API's SSE under `up`), plus a poll of the store's event
//! log every `POLL` for followers in other processes (`agentfleet logs -f` in another
//! terminal). A subscription yields each event once, in `seq` order without gaps: a
//! broadcast that runs ahead of what it has seen is preceded by a catch-up from the store.

use std::time::Duration;

use futures::Stream;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::EventsError;
use crate::domain::StoredEvent;
use crate::store::Store;

/// How often a subscription reads the store for events written by other processes.
const POLL: Duration = Duration::from_millis(150);
/// Events buffered per subscriber before it lags (and falls back on the poll).
const BUFFER: usize = 1024;

#[derive(Clone)]
pub struct EmbeddedBus {
    store: Store,
    local: broadcast::Sender<(Uuid, StoredEvent)>,
}

impl std::fmt::Debug for EmbeddedBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBus").finish_non_exhaustive()
    }
}

/// What woke a subscription up.
enum Wake {
    Local(Result<(Uuid, StoredEvent), RecvError>),
    Poll,
}

impl EmbeddedBus {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            local: broadcast::channel(BUFFER).0,
        }
    }

    /// Hands the event to this process's subscribers (nobody listening is fine).
    pub fn publish(&self, agent_id: Uuid, event: &StoredEvent) {
        let _ = self.local.send((agent_id, event.clone()));
    }

    /// Events of one agent stored from now on, from this process or any other.
    pub async fn subscribe(
        &self,
        agent_id: Uuid,
    ) -> Result<impl Stream<Item = StoredEvent> + Send + use<>, EventsError> {
        let mut local = Some(self.local.subscribe());
        let store = self.store.clone();
        let mut last = store
            .last_event_seq(agent_id)
            .await
            .map_err(|e| EventsError::Store(e.to_string()))?;
        Ok(async_stream::stream! {
            let mut poll = tokio::time::interval(POLL);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let wake = tokio::select! {
                    msg = recv(&mut local) => Wake::Local(msg),
                    _ = poll.tick() => Wake::Poll,
                };
                match wake {
                    Wake::Local(Ok((id, event))) if id == agent_id && event.seq == last + 1 => {
                        last = event.seq;
                        yield event;
                    }
                    // Ahead of what this subscription has seen (events from another
                    // process, or lost to lag): the store has them all, this one included,
                    // because events are published only once stored.
                    Wake::Local(Ok((id, event))) if id == agent_id && event.seq > last => {
                        match store.events_after(agent_id, last).await {
                            Ok(events) => {
                                for event in events {
                                    last = event.seq;
                                    yield event;
                                }
                            }
                            Err(e) => tracing::debug!(%agent_id, error = %e, "event catch-up failed"),
                        }
                    }
                    Wake::Local(Ok(_)) => {}
                    // Lagged: the poll catches up.
                    Wake::Local(Err(RecvError::Lagged(_))) => {}
                    // Every bus of this process is gone: the poll alone serves.
                    Wake::Local(Err(RecvError::Closed)) => local = None,
                    Wake::Poll => match store.events_after(agent_id, last).await {
                        Ok(events) => {
                            for event in events {
                                last = event.seq;
                                yield event;
                            }
                        }
                        Err(e) => tracing::debug!(%agent_id, error = %e, "event poll failed"),
                    },
                }
            }
        })
    }
}

async fn recv(
    local: &mut Option<broadcast::Receiver<(Uuid, StoredEvent)>>,
) -> Result<(Uuid, StoredEvent), RecvError> {
    match local {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
