//! One connection of the API's server. hyper's connection, with its buffers, exists only
//! while something is in flight: an idle connection is parked as its bare socket. What
//! closed and parked connections freed goes back to the system (`ReturnFreed`): glibc keeps
//! freed small blocks in its heaps, so a burst of connections would otherwise leave the
//! process at its peak size for good.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// The connection limits, from `api.*` (`ConnectionLimits::from_settings`).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// How long a connection with nothing in flight stays with hyper before it is parked.
const PARK_AFTER: Duration = Duration::from_millis(250);

/// Serves one connection. A connection with nothing in flight (no request being read,
/// handled or answered, nothing left to write) is parked after `PARK_AFTER`: hyper's
/// connection, with its read and write buffers, is taken apart and only the socket (and
/// any bytes hyper read but did not use) is kept until it is readable again. A fresh
/// connection starts parked. So an idle connection costs its socket and this task, not
/// hyper's two 8 KB buffers.
pub(super) async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
    freed: Arc<ReturnFreed>,
    tracker: TaskTracker,
) {
    let activity = Arc::new(Activity::new());
    // Idle connections go when the first of the two limits passes.
    let idle_limit = limits.header_timeout.min(limits.idle_timeout);
    let mut stream = stream;
    let mut unread = Bytes::new();
    loop {
        if unread.is_empty() {
            let _parked = State::enter("parked");
            tokio::select! {
                ready = stream.readable() => if ready.is_err() { return },
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(idle_limit.saturating_sub(activity.idle_for())) => {
                    tracing::debug!("idle connection closed");
                    return;
                }
            }
        }
        let _active = State::enter("active");
        let io = TokioIo::new(Watched {
            inner: stream,
            unread,
            activity: activity.clone(),
        });
        let session = session(io, router.clone(), activity.clone(), limits);
        match drive(session, &activity, limits, &stop).await {
            Some((rest, bytes)) => (stream, unread) = (rest, bytes),
            None => return,
        }
        if freed.connection_closed() {
            tracker.spawn(freed.clone().return_soon());
        }
    }
}

type Session = hyper::server::conn::http1::Connection<TokioIo<Watched>, Handler>;

/// hyper serving `io` until it ends or is parked.
fn session(
    io: TokioIo<Watched>,
    router: Router,
    activity: Arc<Activity>,
    limits: ConnectionLimits,
) -> Session {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder.serve_connection(io, Handler { router, activity })
}

/// The router as hyper's service for one connection.
struct Handler {
    router: Router,
    activity: Arc<Activity>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Handler {
    type Response = hyper::Response<Body>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        let busy = Busy::enter(self.activity.clone());
        let router = self.router.clone();
        Box::pin(async move {
            let response = router.oneshot(request.map(Body::new)).await?;
            // Busy until the body is sent (an event stream is not an idle connection).
            Ok(response.map(|body| Body::new(Sending { body, _busy: busy })))
        })
    }
}

/// Runs hyper until the connection ends (None) or has had nothing in flight for
/// `PARK_AFTER` (the socket and the bytes hyper read but did not use).
async fn drive(
    mut session: Session,
    activity: &Activity,
    limits: ConnectionLimits,
    stop: &CancellationToken,
) -> Option<(TcpStream, Bytes)> {
    let mut draining = false;
    loop {
        let idle_for = activity.idle_for();
        let wait = if activity.parkable() {
            PARK_AFTER.saturating_sub(idle_for)
        } else {
            limits.idle_timeout.saturating_sub(idle_for)
        };
        tokio::select! {
            result = &mut session => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended");
                }
                return None;
            }
            _ = stop.cancelled(), if !draining => {
                draining = true;
                Pin::new(&mut session).graceful_shutdown();
            }
            _ = tokio::time::sleep(wait) => {
                if draining {
                    continue;
                }
                if activity.parkable() && activity.idle_for() >= PARK_AFTER {
                    let parts = session.into_parts();
                    let watched = parts.io.into_inner();
                    let unread = [parts.read_buf, watched.unread].concat();
                    return Some((watched.inner, Bytes::from(unread)));
                }
                if activity.busy() == 0 && activity.idle_for() >= limits.idle_timeout {
                    tracing::debug!("idle connection closed (api.idle_timeout)");
                    return None;
                }
            }
        }
    }
}

/// A connection counted in `agentfleet_api_connections` by state while this lives.
struct State(&'static str);

impl State {
    fn enter(state: &'static str) -> Self {
        crate::metrics::api_connection(state, 1);
        Self(state)
    }
}

impl Drop for State {
    fn drop(&mut self) {
        crate::metrics::api_connection(self.0, -1);
    }
}

/// A response body being sent, holding its connection busy until it is dropped.
struct Sending {
    body: Body,
    _busy: Busy,
}

impl hyper::body::Body for Sending {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// When a connection last moved a byte, and how many of its requests are being handled.
struct Activity {
    opened: Instant,
    /// Milliseconds from `opened` to the last byte read or written.
    last_io_ms: AtomicU64,
    busy: AtomicUsize,
    /// Bytes were read since the last response was sent (a request is on its way).
    reading: AtomicBool,
    /// A write could not complete (the peer is not reading): hyper holds unsent bytes.
    write_blocked: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            last_io_ms: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            reading: AtomicBool::new(false),
            write_blocked: AtomicBool::new(false),
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

    /// Nothing in flight: no request being read or handled, no response being sent.
    fn parkable(&self) -> bool {
        self.busy() == 0
            && !self.reading.load(Ordering::Relaxed)
            && !self.write_blocked.load(Ordering::Relaxed)
    }

    fn wrote(&self, blocked: bool) {
        self.write_blocked.store(blocked, Ordering::Relaxed);
        if !blocked {
            self.touch();
        }
    }
}

/// A request being handled and its response sent: a handler that takes its time (a stop
/// waits for the agent) or a long response (an event stream) is not an idle connection.
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
        self.0.reading.store(false, Ordering::Relaxed);
        self.0.touch();
    }
}

/// The connection's socket, noting every byte that moves; `unread` (what an earlier hyper
/// session read but did not use) comes first.
struct Watched {
    inner: TcpStream,
    unread: Bytes,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.unread.is_empty() {
            let n = self.unread.len().min(buf.remaining());
            buf.put_slice(&self.unread.split_to(n));
            self.activity.reading.store(true, Ordering::Relaxed);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.reading.store(true, Ordering::Relaxed);
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
        match &polled {
            Poll::Pending => self.activity.wrote(true),
            Poll::Ready(Ok(n)) if *n > 0 => self.activity.wrote(false),
            _ => {}
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        match &polled {
            Poll::Pending => self.activity.wrote(true),
            Poll::Ready(Ok(n)) if *n > 0 => self.activity.wrote(false),
            _ => {}
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
pub(super) struct ReturnFreed {
    closed: AtomicUsize,
}

impl ReturnFreed {
    /// Fewer closes than this free too little to be worth a trim.
    const BURST: usize = 64;

    /// Counts a close; true when the caller should run `return_soon`.
    pub(super) fn connection_closed(&self) -> bool {
        self.closed.fetch_add(1, Ordering::Relaxed) + 1 == Self::BURST
    }

    pub(super) async fn return_soon(self: Arc<Self>) {
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
