//! `GET /metrics` in the Prometheus text format.

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::app::AppState;
use crate::error::AppError;

pub const PATH: &str = "/metrics";

pub fn router() -> Router<AppState> {
    Router::new().route(PATH, get(metrics))
}

async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, AppError> {
    // Counted at scrape time: other processes sharing the file create and delete URLs too.
    match state.store.count().await {
        Ok(n) => state.metrics.urls.set(i64::try_from(n).unwrap_or(i64::MAX)),
        Err(e) => tracing::warn!(error = %e, "could not count URLs for shortener_urls"),
    }
    let (content_type, body) = state
        .metrics
        .encode()
        .map_err(|e| AppError::Internal(e.to_string()))?;
    Ok(([(CONTENT_TYPE, content_type)], body))
}
