//! `GET /{slug}`: the redirect itself, the hot path.
//!
//! 308 Permanent Redirect rather than 301: both say "this short link always means that URL",
//! but 308 forbids a client from turning the request into a different method, so the answer
//! is exact for every method a client might use, not only GET. `Cache-Control: no-store` keeps
//! the "permanent" from being cached for good, so deletes take effect and hits get counted.

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, LOCATION};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::app::AppState;
use crate::error::AppError;
use crate::slug;

pub fn router() -> Router<AppState> {
    Router::new().route("/{slug}", get(resolve))
}

async fn resolve(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, AppError> {
    let Path(slug) = path.map_err(|_| AppError::NoRoute)?;
    state.api_fault("GET", "/{slug}", true).await?;
    // No slug longer than this was ever accepted, so don't ask the store about it.
    if slug.len() > slug::MAX_LEN {
        return Err(AppError::NotFound(slug));
    }
    let url = state
        .store
        .resolve(slug.clone())
        .await?
        .ok_or_else(|| AppError::NotFound(slug.clone()))?;
    state.hits.record(&slug);
    Ok((
        StatusCode::PERMANENT_REDIRECT,
        [(LOCATION, url), (CACHE_CONTROL, "no-store".to_owned())],
    )
        .into_response())
}
