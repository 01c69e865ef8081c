//! What `/readyz` (the API's and a worker's) asks of the services the process depends on:
//! each answers within `PROBE_TIMEOUT` or counts as unavailable. A store or Redis that
//! hangs (a stopped server, a lost network) holds a query forever; an orchestrator's probe
//! must get its 503 in time instead of a late 200.

use std::time::Duration;

use crate::fleet::Fleet;

/// How long one dependency may take to answer; both are asked at once, so a probe is
/// answered within about this long (an orchestrator's default probe timeout is 1 s).
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// Each dependency's answer: `Ok`, or why it is not ready.
pub struct Dependencies {
    pub store: Result<(), String>,
    pub events: Result<(), String>,
}

impl Dependencies {
    pub fn ready(&self) -> bool {
        self.store.is_ok() && self.events.is_ok()
    }
}

/// Asks the store and the event bus (Redis in the distributed mode) together.
pub async fn probe(fleet: &Fleet) -> Dependencies {
    let (store, events) = tokio::join!(within(fleet.store.ping()), within(fleet.events.ping()));
    Dependencies { store, events }
}

async fn within<E: std::fmt::Display>(
    answer: impl Future<Output = Result<(), E>>,
) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, answer).await {
        Ok(answer) => answer.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {} ms", PROBE_TIMEOUT.as_millis())),
    }
}
