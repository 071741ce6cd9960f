//! What every request passes through, after routing (or instead of it, for a redirect on the
//! fast path, `routes::redirect::fast`): it is counted, timed and logged, and held to the
//! request and body deadlines ([`observed`]).
//!
//! One hand-written tower layer rather than `axum::middleware::from_fn`: `from_fn` clones and
//! re-boxes the inner route and boxes a `Next` on every request, which cost a redirect more
//! than its own work (in callgrind, 15% of a redirect's instructions were route clones). The
//! inner service here is axum's `Route`, which is always ready, so it is called in place.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request};
use axum::response::{IntoResponse, Response};
use http_body::{Body as _, Frame, SizeHint};
use prometheus::IntGauge;
use tower::{Layer, Service};

use crate::app::AppState;
use crate::error::{AppError, InternalDetail};
use crate::metrics::method_label;

/// Label for requests that matched no route, so unknown paths cannot blow up cardinality.
const UNMATCHED: &str = "unmatched";

/// Wraps every route (and the fallbacks) in [`Observed`].
#[derive(Debug, Clone)]
pub struct RequestLayer(AppState);

impl RequestLayer {
    pub fn new(state: AppState) -> Self {
        Self(state)
    }
}

impl<S> Layer<S> for RequestLayer {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Observed<S> {
        Observed {
            inner,
            state: self.0.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Observed<S> {
    inner: S,
    state: AppState,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<S> Service<Request> for Observed<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> BoxFuture {
        let started = Instant::now();
        // Cheap copies: the matched route is an `Arc<str>`, the URI reference-counted, and
        // most requests are never logged.
        let route = req.extensions().get::<MatchedPath>().cloned();
        let method = method_label(req.method());
        let uri = req.uri().clone();
        let (parts, body) = req.into_parts();
        // Most requests (every redirect) have no body: no body timer for them.
        let body_state = (!body.is_end_stream()).then(|| Arc::new(AtomicU8::new(BODY_READING)));
        let body = match &body_state {
            Some(st) => Body::new(DeadlineBody::new(
                body,
                self.state.body_read_timeout,
                Arc::clone(st),
            )),
            None => body,
        };
        let call = self.inner.call(Request::from_parts(parts, body));
        let state = self.state.clone();
        Box::pin(async move {
            let route = route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
            let call = async move {
                match call.await {
                    Ok(response) => response,
                    Err(never) => match never {},
                }
            };
            Ok(observed(
                &state,
                method,
                route,
                &uri,
                started,
                body_state.as_deref(),
                call,
            )
            .await)
        })
    }
}

/// Runs a request's handler `call` under the request and body deadlines, and counts, times
/// and logs it. Every request passes here: through [`Observed`], or, for a redirect, through
/// the fast path (`routes::redirect::fast`).
pub async fn observed(
    state: &AppState,
    method: &'static str,
    route: &str,
    uri: &axum::http::Uri,
    started: Instant,
    body_state: Option<&AtomicU8>,
    call: impl Future<Output = Response>,
) -> Response {
    let in_flight = InFlight::enter(state.metrics.in_flight(route));
    let mut call = std::pin::pin!(call);
    // Most answers (a cached redirect) are ready at the first poll: no timer for them. The
    // deadline still counts from when the request arrived.
    let first = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
    let result = match first {
        Poll::Ready(response) => Ok(response),
        Poll::Pending => {
            let deadline = tokio::time::Instant::from_std(started) + state.request_timeout;
            tokio::time::timeout_at(deadline, call).await
        }
    };
    drop(in_flight);
    let response = deadline_answer(state, result, body_state);
    observe(state, method, route, uri, started, &response);
    response
}

/// The request timeout (503 `timeout`: the server was too slow) and the body read timeout
/// (408 `body_timeout`: the client was). A request that runs out of time while its body is
/// still arriving is the client's doing, so it gets the 408 too, never a 5xx.
fn deadline_answer(
    state: &AppState,
    result: Result<Response, tokio::time::error::Elapsed>,
    body_state: Option<&AtomicU8>,
) -> Response {
    let body_now = body_state.map_or(BODY_DONE, |st| st.load(Ordering::SeqCst));
    match result {
        Ok(_) if body_now == BODY_TIMED_OUT => AppError::BodyTimeout.into_response(),
        Ok(response) => response,
        Err(_) if body_now != BODY_DONE => AppError::BodyTimeout.into_response(),
        Err(_) => AppError::Timeout(state.request_timeout).into_response(),
    }
}

/// Counts, times and logs a request, and logs the detail of an internal error.
///
/// Request lines are DEBUG (a line per redirect would cost more than the redirect), except
/// for 5xx answers, which are always logged, at WARN, after the ERROR line with the detail.
fn observe(
    state: &AppState,
    method: &'static str,
    route: &str,
    uri: &axum::http::Uri,
    started: Instant,
    response: &Response,
) {
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
        .observe(method, route, status, elapsed.as_secs_f64());
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
    fn new(inner: Body, limit: std::time::Duration, state: Arc<AtomicU8>) -> Self {
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
