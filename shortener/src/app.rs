//! The application: shared state, the router assembled from each module's routes, and the
//! middleware every request passes through.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use prometheus::IntGauge;
use tower_http::trace::TraceLayer;

use crate::error::{AppError, InternalDetail};
use crate::fault::Faults;
use crate::hits::HitCounter;
use crate::metrics::Metrics;
use crate::routes;
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
    /// Base of `short_url`, without a trailing slash; `None` means "from the Host header".
    pub public_url: Option<Arc<str>>,
    pub request_timeout: Duration,
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
        .merge(routes::urls::router())
        .merge(routes::redirect::router())
        .merge(routes::probes::router())
        .merge(routes::metrics::router())
        .fallback(|| async { AppError::NoRoute })
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(state.clone(), timeout))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let route = req
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or(UNMATCHED, MatchedPath::as_str);
                    tracing::info_span!("http", method = %req.method(), route)
                })
                // `observe` logs each request and any internal error once; TraceLayer's own
                // failure line would repeat it.
                .on_failure(()),
        )
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Counts, times and logs every request, and logs the detail of internal errors.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED.to_owned(), |m| m.as_str().to_owned());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = Instant::now();
    let in_flight = InFlight::enter(state.metrics.in_flight.with_label_values(&[&route]));
    let response = next.run(req).await;
    drop(in_flight);
    let elapsed = started.elapsed();
    let status = response.status();

    if let Some(InternalDetail(detail)) = response.extensions().get::<InternalDetail>() {
        tracing::error!("{detail}");
    }
    state
        .metrics
        .requests
        .with_label_values(&[method.as_str(), &route, status.as_str()])
        .inc();
    state
        .metrics
        .duration
        .with_label_values(&[method.as_str(), &route])
        .observe(elapsed.as_secs_f64());
    tracing::info!(
        // Microsecond precision, as a number so JSON logs can be queried numerically.
        latency_ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3,
        "{method} {path} {}",
        status.as_u16()
    );
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

/// Answers 503 in the service's JSON shape when a request runs too long.
async fn timeout(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(state.request_timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => AppError::Timeout(state.request_timeout).into_response(),
    }
}
