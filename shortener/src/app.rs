//! The application: shared state, the router assembled from each module's routes, and the
//! middleware (see `middleware`) every request passes through.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit};
use axum::middleware;
use axum::response::Response;
use hyper::body::Incoming;
use tower::ServiceExt;

use crate::auth::{self, Tokens, WriteLimiter};
use crate::cache::RedirectCache;
use crate::error::AppError;
use crate::fault::Faults;
use crate::hits::HitCounter;
use crate::metrics::Metrics;
use crate::middleware::RequestLayer;
use crate::routes::{self, ShortUrls};
use crate::store::Store;

/// A create request is a URL of at most 2 KiB plus a slug; 16 KiB leaves room and no more.
pub const BODY_LIMIT: usize = 16 * 1024;

/// What every handler shares: one reference-counted pointer, so the clone each middleware
/// layer and extractor makes per request is one atomic increment (cloning a dozen `Arc`s per
/// layer showed up as 7% of a redirect's CPU).
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

#[derive(Debug)]
pub struct Shared {
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
impl Shared {
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

/// The service a connection calls: redirects straight to `routes::redirect::fast`, every
/// other request through the router. Cloned per connection (two reference counts).
#[derive(Debug, Clone)]
pub struct App {
    state: AppState,
    router: Router,
}

impl App {
    pub fn new(state: AppState) -> Self {
        Self {
            router: router(state.clone()),
            state,
        }
    }

    /// Answers one request from the client at `peer`.
    pub async fn call(self, mut req: hyper::Request<Incoming>, peer: SocketAddr) -> Response {
        if routes::redirect::takes(&req) {
            return routes::redirect::fast(self.state, req).await;
        }
        req.extensions_mut().insert(ConnectInfo(peer));
        // Boxed, so the redirect's future does not carry the size of the router's.
        match Box::pin(self.router.oneshot(req.map(Body::new))).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(
            routes::urls::router()
                .route_layer(middleware::from_fn_with_state(
                    state.clone(),
                    auth::guard_writes,
                ))
                // Only these routes read a body; the redirect does not pay for the limit.
                .layer(DefaultBodyLimit::max(BODY_LIMIT)),
        )
        .merge(routes::redirect::router())
        .merge(routes::probes::router())
        .merge(routes::metrics::router())
        .fallback(|| async { AppError::NoRoute })
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        .layer(RequestLayer::new(state.clone()))
        .with_state(state)
}
