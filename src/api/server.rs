//! The API's HTTP/1.1 server: the accept loop and one task per connection, with the limits
//! a public listener needs (`api.header_timeout`, `api.idle_timeout`,
//! `api.max_connections`). Without them every connection a client opens and leaves silent
//! is held forever.
//!
//! A connection holds only what it must: the router is shared (one `Arc` per connection;
//! axum's own `serve` rebuilds every route, state included, per connection), and hyper's
//! buffers. What closed connections freed goes back to the system (`ReturnFreed`): glibc
//! keeps freed small blocks in its heaps, so a burst of connections would otherwise leave
//! the process at its peak size for good.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::ApiSettings;

/// The connection limits, from `api.*`.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

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
                let connection = serve_connection(stream, router.clone(), limits, stop.clone());
                let (freed, tracker) = (freed.clone(), connections.clone());
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

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let in_service = activity.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let busy = Busy::enter(in_service.clone());
        let router = router.clone();
        async move {
            let response = router.oneshot(request.map(Body::new)).await;
            drop(busy);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let connection = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        let idle_for = activity.idle_for();
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended");
                }
                return;
            }
            _ = stop.cancelled(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep(limits.idle_timeout.saturating_sub(idle_for)) => {
                if activity.busy() == 0 && activity.idle_for() >= limits.idle_timeout {
                    tracing::debug!("idle connection closed (api.idle_timeout)");
                    return;
                }
            }
        }
    }
}

/// When a connection last moved a byte, and how many of its requests are being handled.
struct Activity {
    opened: Instant,
    /// Milliseconds from `opened` to the last byte read or written.
    last_io_ms: AtomicU64,
    busy: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            last_io_ms: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        self.last_io_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_io_ms.load(Ordering::Relaxed));
        self.opened.elapsed().saturating_sub(last)
    }

    fn busy(&self) -> usize {
        self.busy.load(Ordering::Relaxed)
    }
}

/// A request being handled: a handler that takes its time (a stop waits for the agent) is
/// not an idle connection.
struct Busy(Arc<Activity>);

impl Busy {
    fn enter(activity: Arc<Activity>) -> Self {
        activity.busy.fetch_add(1, Ordering::Relaxed);
        Self(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// The connection's socket, noting every byte that moves.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Hands the memory that closed connections freed back to the system, a second after
/// `BURST` of them closed (so at most about once a second, however many close). glibc
/// returns a heap's free memory only from its top, so the buffers of thousands of closed
/// connections, freed in the middle of the heaps, would stay resident; `malloc_trim`
/// releases the free pages wherever they are (a few ms, off the runtime threads).
#[derive(Default)]
struct ReturnFreed {
    closed: AtomicUsize,
}

impl ReturnFreed {
    /// Fewer closes than this free too little to be worth a trim.
    const BURST: usize = 64;

    /// Counts a close; true when the caller should run `return_soon`.
    fn connection_closed(&self) -> bool {
        self.closed.fetch_add(1, Ordering::Relaxed) + 1 == Self::BURST
    }

    async fn return_soon(self: Arc<Self>) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.closed.store(0, Ordering::Relaxed);
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        let _ = tokio::task::spawn_blocking(|| {
            // SAFETY: malloc_trim only walks the allocator's free lists and madvises them.
            unsafe { libc::malloc_trim(0) };
        })
        .await;
    }
}
