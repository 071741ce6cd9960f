//! Kubernetes probes. `/healthz` says the process serves HTTP; `/readyz` says it can do its
//! job, which means the store opens and answers a real query (the check that would have
//! caught the incident's broken release before it took traffic).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::app::AppState;
use crate::error::AppError;

pub const HEALTHZ: &str = "/healthz";
pub const READYZ: &str = "/readyz";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(HEALTHZ, get(healthz))
        .route(READYZ, get(readyz))
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    if state.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(AppError::NotReady("shutting down".into()));
    }
    if let Some(reason) = state.faults.not_ready_reason() {
        return Err(AppError::NotReady(reason));
    }
    state.store.check().await.map_err(|e| {
        tracing::warn!(error = %e, "store check failed");
        AppError::NotReady(e.to_string())
    })?;
    Ok(Json(json!({ "status": "ready" })))
}
