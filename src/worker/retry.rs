//! Retrying a store operation through a brief outage (a restart, a failover, a connection
//! the server dropped): the steps of a spawn and of an agent's end are fenced or idempotent,
//! so trying one again is safe, and failing the agent for a blip is not.

use std::future::Future;
use std::time::{Duration, Instant};

use super::runtime::Runtime;
use crate::credentials::{CredentialError, run::RunError};
use crate::store::StoreError;

/// An error that may say the store was briefly away.
pub trait Transient: std::fmt::Display {
    fn is_transient(&self) -> bool;
}

impl Transient for StoreError {
    fn is_transient(&self) -> bool {
        StoreError::is_transient(self)
    }
}

impl Transient for RunError {
    fn is_transient(&self) -> bool {
        matches!(self, RunError::Credentials(CredentialError::Store(e)) if e.is_transient())
    }
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Runs `op` until it succeeds, fails for good, the lease is lost, or the store has been
/// away for `worker.partition_timeout` (then the last error is returned).
pub async fn store<T, E, F, Fut>(rt: &Runtime, what: &str, mut op: F) -> Result<T, E>
where
    E: Transient,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let give_up = Instant::now() + rt.fleet.settings.worker.partition_timeout();
    let mut backoff = FIRST_BACKOFF;
    loop {
        match op().await {
            Err(e) if e.is_transient() && Instant::now() < give_up => {
                tracing::warn!(what, error = %e, retry_in_ms = backoff.as_millis() as u64, "store unavailable; trying again");
                tokio::select! {
                    _ = rt.lease_lost.cancelled() => return Err(e),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            other => return other,
        }
    }
}
