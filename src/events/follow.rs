//! Following an agent: the stored backlog after a sequence number, then what is stored
//! next, with no gaps and no duplicates. Events come only from the store's sequence: a live
//! message wakes the follower to read the store, it is never yielded itself, so a forged or
//! reordered pub/sub message can neither end a `--wait` early nor show an event the store
//! does not hold. Subscribes before reading the backlog so nothing published in between is
//! missed; a periodic store check carries on when messages are lost.

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
            match store.agent_by_id(agent_id).await {
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
            // Then wait for news. A live message only says that something may have been
            // stored: what is yielded, and when the stream ends, comes from the store's
            // sequence, so a forged, reordered or unknown message cannot end a follower
            // early or put an event in its log that the store does not hold.
            loop {
                tokio::select! {
                    msg = live.next() => match msg {
                        Some(event) if event.seq <= last => continue,
                        Some(_) => break,
                        None => {
                            // Subscription lost: fall back to polling the store.
                            tokio::time::sleep(STORE_CHECK).await;
                            break;
                        }
                    },
                    _ = ticker.tick() => break,
                }
            }
        }
    }
}
