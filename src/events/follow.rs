//! Following an agent: the stored backlog after a sequence number, then live events, with
//! no gaps and no duplicates. Subscribes before reading the backlog so nothing published in
//! between is missed; any gap in the live sequence (a dropped message, a reconnect) is filled
//! from the store; a periodic store check ends the stream even if the final event's
//! message never arrives.

use std::time::Duration;

use futures::{Stream, StreamExt};
use uuid::Uuid;

use super::{EventBus, status_of};
use crate::domain::StoredEvent;
use crate::store::Store;

const STORE_CHECK: Duration = Duration::from_millis(1000);

/// Events of `agent_id` with `seq > after`, ending after the agent reaches a final status.
pub fn follow(
    store: Store,
    bus: EventBus,
    agent_id: Uuid,
    after: i64,
) -> impl Stream<Item = Result<StoredEvent, String>> + Send {
    async_stream::stream! {
        let live = match bus.subscribe(agent_id).await {
            Ok(live) => live,
            Err(e) => { yield Err(e.to_string()); return; }
        };
        let mut live = Box::pin(live);
        let mut last = after;
        let mut ticker = tokio::time::interval(STORE_CHECK);
        loop {
            // Catch up from the store.
            let backlog = match store.events_after(agent_id, last).await {
                Ok(events) => events,
                Err(e) => { yield Err(e.to_string()); return; }
            };
            let mut ended = false;
            for event in backlog {
                last = event.seq;
                ended = status_of(&event).is_some_and(|s| s.is_final());
                yield Ok(event);
            }
            if ended {
                return;
            }
            // A final agent whose last status event is not stored (yet, or ever: requests
            // failed before a worker ran them) ends the stream once its log is drained.
            match store.agent(&agent_id.to_string()).await {
                Ok(agent) if agent.status.is_final() => {
                    match store.events_after(agent_id, last).await {
                        Ok(rest) => for event in rest { yield Ok(event); },
                        Err(e) => yield Err(e.to_string()),
                    }
                    return;
                }
                Ok(_) => {}
                Err(e) => { yield Err(e.to_string()); return; }
            }
            // Then live, until a gap or a store check.
            let mut resync = false;
            while !resync {
                tokio::select! {
                    msg = live.next() => match msg {
                        Some(event) if event.seq <= last => {}
                        Some(event) if event.seq == last + 1 => {
                            last = event.seq;
                            let end = status_of(&event).is_some_and(|s| s.is_final());
                            yield Ok(event);
                            if end { return; }
                        }
                        Some(_) => resync = true,
                        None => {
                            // Subscription lost: fall back to polling the store.
                            tokio::time::sleep(STORE_CHECK).await;
                            resync = true;
                        }
                    },
                    _ = ticker.tick() => resync = true,
                }
            }
        }
    }
}
