//! The HTTP/1.1 server loop: hyper directly rather than `axum::serve`, for the limits a
//! service on the open network needs and axum's server does not offer.
//!
//! - **Connections**: at most `max_connections` open at once. One more is answered
//!   `503 too_many_connections` (with `Retry-After: 1` and `Connection: close`) without its
//!   request being read, and closed; it never reaches the router or the request metrics.
//! - **Header read**: a connection must send a complete request head within
//!   `header_read_timeout` of its first byte (of being accepted, for its first request), or
//!   it is closed.
//! - **Idle keep-alive**: a connection with no request for `idle_timeout` after its last
//!   response is closed.
//! - **Body read**: not here; `middleware` answers 408 when a body is too slow, since that
//!   needs an HTTP answer, not a closed socket.
//!
//! The two read deadlines live in [`Watched`], the connection's I/O: a read that would wait
//! past the deadline fails instead, and hyper closes the connection. Hyper's own
//! `header_read_timeout` also runs while a keep-alive connection waits for its next
//! request, so it cannot tell a slow head from an idle connection; this can.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use crate::app::App;
use crate::metrics::Metrics;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// Refusals being written at once; past this a connection over the cap is just closed.
const MAX_REFUSALS: usize = 64;
/// How long a refusal waits for the client to finish sending before closing: closing with
/// unread input makes the kernel send a reset, which can destroy the 503 before it is read.
const REFUSAL_LINGER: Duration = Duration::from_millis(500);
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 92\r\n\
\r\n\
{\"error\":{\"code\":\"too_many_connections\",\"message\":\"too many open connections; retry later\"}}";

/// Serves `app` until `shutdown` completes, then stops accepting and waits for the
/// connections' requests to finish (idle connections are closed at once). A connection
/// holds one of `slots` while open (`max_connections`, shared by all workers).
pub async fn serve(
    listener: TcpListener,
    app: App,
    limits: Limits,
    slots: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    // Off: `Watched` does it, without closing idle keep-alive connections early.
    http.header_read_timeout(None);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            metrics.connections_refused.inc();
            if let Ok(permit) = Arc::clone(&refusals).try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream).await;
                    drop(permit);
                });
            }
            continue;
        };
        // Responses are small and written whole; waiting to coalesce them only adds latency.
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::default());
        let io = TokioIo::new(Watched::new(stream, Arc::clone(&activity), limits));
        let app = app.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let busy = Busy::begin(Arc::clone(&activity));
            let call = app.clone().call(req, peer);
            async move {
                let response = call.await;
                drop(busy);
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let conn = graceful.watch(http.serve_connection(io, service));
        let open = metrics.connections_open.clone();
        open.inc();
        tokio::spawn(async move {
            // An error here is the client's (reset, timeout, malformed request); hyper has
            // answered what could be answered.
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection closed with an error");
            }
            open.dec();
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Accept fails for the whole listener (e.g. out of file descriptors) or for one connection
/// that went away before it was accepted; either way pause a moment rather than spin.
async fn accept_failed(e: io::Error) {
    if !matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    ) {
        tracing::warn!(error = %e, "cannot accept a connection");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn refuse(mut stream: TcpStream) {
    let deadline = Instant::now() + REFUSAL_LINGER;
    let _ = tokio::time::timeout_at(deadline, async {
        stream.write_all(REFUSAL).await?;
        stream.shutdown().await?;
        // Drain (a bounded amount) until the client closes, so our close sends no reset.
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < 64 * 1024 {
            let n = tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await?;
            if n == 0 {
                break;
            }
            drained += n;
        }
        Ok::<_, io::Error>(())
    })
    .await;
}

/// What the request side of a connection is doing, shared with its I/O.
#[derive(Debug, Default)]
struct Activity {
    /// Requests being handled (more than one only with pipelining).
    in_flight: AtomicUsize,
    /// Requests begun, so the I/O can tell that a head it saw starting has been read.
    begun: AtomicU64,
    /// When the last request finished, as milliseconds since [`EPOCH`] plus one; 0 while
    /// the connection has not served a request.
    idle_since_ms: AtomicU64,
    /// The connection's task, if it found the socket empty while a request was in flight.
    /// hyper does not read again after the response unless woken, so without this wake-up
    /// the idle deadline would never be set and an idle connection never closed.
    parked_reader: Mutex<Option<Waker>>,
}

/// Marks a request in progress; the drop (response ready, or the request abandoned) makes
/// the connection idle again.
struct Busy(Arc<Activity>);

impl Busy {
    fn begin(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        activity.begun.fetch_add(1, Ordering::SeqCst);
        Self(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let ms = u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.0.idle_since_ms.store(ms + 1, Ordering::SeqCst);
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            let parked = self
                .0
                .parked_reader
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(waker) = parked {
                waker.wake();
            }
        }
    }
}

/// The origin of the idle marks (a process-wide monotonic clock).
static EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

/// A connection's socket, with the header-read and idle deadlines applied to its reads.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
    limits: Limits,
    accepted: Instant,
    /// When the first byte of the next request head arrived, and `begun` at that time.
    head: Option<(Instant, u64)>,
    timer: Pin<Box<Sleep>>,
}

impl Watched {
    fn new(stream: TcpStream, activity: Arc<Activity>, limits: Limits) -> Self {
        let accepted = Instant::now();
        Self {
            stream,
            activity,
            limits,
            accepted,
            head: None,
            timer: Box::pin(tokio::time::sleep_until(
                accepted + limits.header_read_timeout,
            )),
        }
    }

    /// The read deadline now, `None` while a request is being handled (its body has its own).
    fn deadline(&mut self) -> Option<Instant> {
        if self.activity.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let begun = self.activity.begun.load(Ordering::SeqCst);
        if let Some((started, seen)) = self.head {
            if seen == begun {
                return Some(started + self.limits.header_read_timeout);
            }
            self.head = None;
        }
        match self.activity.idle_since_ms.load(Ordering::SeqCst) {
            // A client that connects must send its first request promptly.
            0 => Some(self.accepted + self.limits.header_read_timeout),
            ms => Some(*EPOCH + Duration::from_millis(ms - 1) + self.limits.idle_timeout),
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        if let Poll::Ready(result) = Pin::new(&mut this.stream).poll_read(cx, buf) {
            if buf.filled().len() > before
                && this.head.is_none()
                && this.activity.in_flight.load(Ordering::SeqCst) == 0
            {
                let begun = this.activity.begun.load(Ordering::SeqCst);
                this.head = Some((Instant::now(), begun));
            }
            return Poll::Ready(result);
        }
        let Some(deadline) = this.deadline() else {
            let mut parked = this
                .activity
                .parked_reader
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !parked.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *parked = Some(cx.waker().clone());
            }
            return Poll::Pending;
        };
        if this.timer.deadline() != deadline {
            this.timer.as_mut().reset(deadline);
        }
        ready!(this.timer.as_mut().poll(cx));
        let what = if this.head.is_some() {
            "request head not received in time"
        } else {
            "connection idle"
        };
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)))
    }
}

impl tokio::io::AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_well_formed() {
        let text = std::str::from_utf8(REFUSAL).unwrap_or_default();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|n| n.parse::<usize>().ok());
        assert_eq!(length, Some(body.len()));
        let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(json["error"]["code"], "too_many_connections");
    }
}
