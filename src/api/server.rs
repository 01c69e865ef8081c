//! The API's HTTP/1.1 server: the accept loop and one task per connection, with the limits
//! a public listener needs (`api.header_timeout`, `api.idle_timeout`,
//! `api.max_connections`). Without them every connection a client opens and leaves silent
//! is held forever.
//!
//! A connection holds only what it must: the router is shared (one `Arc` per connection;
//! axum's own `serve` rebuilds every route, state included, per connection). How one
//! connection is served, parked while idle, is `connection.rs`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use super::connection::ConnectionLimits;
use super::connection::{ReturnFreed, serve_connection};
use crate::config::ApiSettings;

impl ConnectionLimits {
    /// The configured limits, `max_connections` lowered to what the process's open-files
    /// limit allows (after raising it as far as it may go).
    pub fn from_settings(api: &ApiSettings) -> Self {
        // Store, Redis, logs and the listener need descriptors too.
        const RESERVED_FDS: u64 = 256;
        let fds = raise_open_files_limit();
        let fit = fds.saturating_sub(RESERVED_FDS).max(1) as usize;
        if api.max_connections > fit {
            tracing::warn!(
                max_connections = api.max_connections,
                open_files = fds,
                lowered_to = fit,
                "api.max_connections is above what the open-files limit allows"
            );
        }
        Self {
            header_timeout: api.header_timeout,
            idle_timeout: api.idle_timeout,
            max_connections: api.max_connections.min(fit),
        }
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard one (the soft default, often 1,024, is far
/// below what a server of many connections needs); returns the soft limit in force.
fn raise_open_files_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(_) => soft,
        },
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

/// Serves `router` on `listener` until `stop`, then lets the open connections finish
/// their request in hand and waits for them.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    let freed = Arc::new(ReturnFreed::default());
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors (or memory): wait for connections to close rather
                // than spin on the error.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let (freed, tracker) = (freed.clone(), connections.clone());
                let connection = serve_connection(
                    stream,
                    router.clone(),
                    limits,
                    stop.clone(),
                    freed.clone(),
                    tracker.clone(),
                );
                connections.spawn(async move {
                    connection.await;
                    drop(permit);
                    if freed.connection_closed() {
                        tracker.spawn(freed.return_soon());
                    }
                });
            }
            Err(_) => refuse(stream),
        }
    }
    connections.close();
    connections.wait().await;
}

/// One connection over the limit: a 503 in the API's error shape, then closed. Written
/// without waiting (it fits any socket buffer); a peer that does not read it just sees
/// the connection close.
fn refuse(stream: TcpStream) {
    const BODY: &str = r#"{"error":{"code":"unavailable","message":"too many open connections (api.max_connections)"}}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.try_write(response.as_bytes());
    tracing::debug!("connection refused: api.max_connections reached");
}
