//! The application: shared state, the router assembled from each module's routes, and the
//! middleware every request passes through.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use http_body::{Body as _, Frame, SizeHint};
use prometheus::IntGauge;

use crate::auth::{self, Tokens, WriteLimiter};
use crate::cache::RedirectCache;
use crate::error::{AppError, InternalDetail};
use crate::fault::Faults;
use crate::hits::HitCounter;
use crate::metrics::{Metrics, method_label};
use crate::routes::{self, ShortUrls};
use crate::store::Store;

/// A create request is a URL of at most 2 KiB plus a slug; 16 KiB leaves room and no more.
pub const BODY_LIMIT: usize = 16 * 1024;

/// Label for requests that matched no route, so unknown paths cannot blow up cardinality.
const UNMATCHED: &str = "unmatched";

#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub hits: Arc<HitCounter>,
    pub metrics: Arc<Metrics>,
    pub faults: Arc<Faults>,
    pub short_urls: Arc<ShortUrls>,
    pub tokens: Tokens,
    pub write_limiter: WriteLimiter,
    pub redirects: RedirectCache,
    pub request_timeout: Duration,
    pub body_read_timeout: Duration,
    /// Set on SIGTERM: /readyz answers 503 while requests are still served.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
}
impl AppState {
    /// Applies the API faults: added latency, then, if the release is "broken", the 500 with
    /// the logged traceback.
    pub async fn api_fault(&self, method: &str, route: &str, breaks: bool) -> Result<(), AppError> {
        if let Some(latency) = self.faults.latency() {
            tokio::time::sleep(latency).await;
        }
        if breaks && self.faults.breaks_requests() {
            return Err(AppError::Internal(crate::fault::traceback(method, route)));
        }
        Ok(())
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(
            routes::urls::router().route_layer(middleware::from_fn_with_state(
                state.clone(),
                auth::guard_writes,
            )),
        )
        .merge(routes::redirect::router())
        .merge(routes::probes::router())
        .merge(routes::metrics::router())
        .fallback(|| async { AppError::NoRoute })
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(state.clone(), deadlines))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Counts, times and logs every request, and logs the detail of internal errors.
///
/// Request lines are DEBUG (a line per redirect would cost more than the redirect), except
/// for 5xx answers, which are always logged, at WARN, after the ERROR line with the detail.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
    let method = method_label(req.method());
    // A reference-counted copy, not a new string: most requests are never logged.
    let uri = req.uri().clone();
    let started = Instant::now();
    let in_flight = InFlight::enter(state.metrics.in_flight.with_label_values(&[route]));
    let response = next.run(req).await;
    drop(in_flight);
    let elapsed = started.elapsed();
    let status = response.status();

    // The request's span is made only for the lines logged, not for every request: at full
    // speed, a span per redirect cost more than the metrics.
    let span = || tracing::info_span!("http", method, route);
    if let Some(InternalDetail(detail)) = response.extensions().get::<InternalDetail>() {
        span().in_scope(|| tracing::error!("{detail}"));
    }
    state
        .metrics
        .requests
        .with_label_values(&[method, route, status.as_str()])
        .inc();
    state
        .metrics
        .duration
        .with_label_values(&[method, route])
        .observe(elapsed.as_secs_f64());
    // Microsecond precision, as a number so JSON logs can be queried numerically.
    let latency_ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3;
    if status.is_server_error() {
        span()
            .in_scope(|| tracing::warn!(latency_ms, "{method} {} {}", uri.path(), status.as_u16()));
    } else if tracing::enabled!(tracing::Level::DEBUG) {
        span().in_scope(|| {
            tracing::debug!(latency_ms, "{method} {} {}", uri.path(), status.as_u16());
        });
    }
    response
}

/// Decrements on drop, so a request whose client went away (its future dropped mid-way)
/// does not stay "in flight" for ever.
struct InFlight(IntGauge);

impl InFlight {
    fn enter(gauge: IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The request timeout (503 `timeout`: the server was too slow) and the body read timeout
/// (408 `body_timeout`: the client was). A request that runs out of time while its body is
/// still arriving is the client's doing, so it gets the 408 too, never a 5xx.
async fn deadlines(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    // Most requests (every redirect) have no body: no timer for them.
    let body_state = (!body.is_end_stream()).then(|| Arc::new(AtomicU8::new(BODY_READING)));
    let body = match &body_state {
        Some(st) => Body::new(DeadlineBody::new(
            body,
            state.body_read_timeout,
            Arc::clone(st),
        )),
        None => body,
    };
    let result = tokio::time::timeout(
        state.request_timeout,
        next.run(Request::from_parts(parts, body)),
    )
    .await;
    let body_now = body_state.map_or(BODY_DONE, |st| st.load(Ordering::SeqCst));
    match result {
        Ok(_) if body_now == BODY_TIMED_OUT => AppError::BodyTimeout.into_response(),
        Ok(response) => response,
        Err(_) if body_now != BODY_DONE => AppError::BodyTimeout.into_response(),
        Err(_) => AppError::Timeout(state.request_timeout).into_response(),
    }
}

const BODY_READING: u8 = 0;
const BODY_DONE: u8 = 1;
const BODY_TIMED_OUT: u8 = 2;

/// A request body that fails once `limit` has passed since the request's head was read,
/// however steadily its bytes trickle in (a per-read timeout would let one byte a second
/// hold a request for ever).
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    state: Arc<AtomicU8>,
}

impl DeadlineBody {
    fn new(inner: Body, limit: Duration, state: Arc<AtomicU8>) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(limit)),
            state,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("request body read timed out")]
struct BodyTimedOut;

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            if !matches!(frame, Some(Ok(_))) || this.inner.is_end_stream() {
                this.state.store(BODY_DONE, Ordering::SeqCst);
            }
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.state.store(BODY_TIMED_OUT, Ordering::SeqCst);
            return Poll::Ready(Some(Err(BodyTimedOut.into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
