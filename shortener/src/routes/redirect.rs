//! `GET /{slug}`: the redirect itself, the hot path.
//!
//! 308 Permanent Redirect rather than 301: both say "this short link always means that URL",
//! but 308 forbids a client from turning the request into a different method, so the answer
//! is exact for every method a client might use, not only GET. `Cache-Control: no-store` keeps
//! the "permanent" from being cached for good, so deletes take effect and hits get counted.

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, LOCATION};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::app::AppState;
use crate::error::AppError;
use crate::slug;

pub fn router() -> Router<AppState> {
    Router::new().route("/{slug}", get(resolve).head(peek))
}

/// `GET /{slug}`: the redirect, counted as a hit.
async fn resolve(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, AppError> {
    let (slug, location) = lookup(&state, "GET", path).await?;
    state.hits.record(&slug);
    Ok(redirect(location))
}

/// `HEAD /{slug}`: the same answer without the body, and not a hit: link checkers and
/// previews ask HEAD, and nobody followed the link.
async fn peek(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, AppError> {
    let (_, location) = lookup(&state, "HEAD", path).await?;
    Ok(redirect(location))
}

async fn lookup(
    state: &AppState,
    method: &str,
    path: Result<Path<String>, PathRejection>,
) -> Result<(String, HeaderValue), AppError> {
    let Path(slug) = path.map_err(|_| AppError::NoRoute)?;
    state.api_fault(method, "/{slug}", true).await?;
    // No slug longer than this was ever accepted, so don't ask the store about it.
    if slug.len() > slug::MAX_LEN {
        return Err(AppError::NotFound(slug));
    }
    if let Some(location) = state.redirects.get(&slug) {
        return Ok((slug, location));
    }
    let ticket = state.redirects.ticket();
    let url = state
        .store
        .resolve(slug.clone())
        .await?
        .ok_or_else(|| AppError::NotFound(slug.clone()))?;
    let location = HeaderValue::try_from(url)
        .map_err(|e| AppError::Internal(format!("stored URL for {slug:?} is not a header: {e}")))?;
    state.redirects.insert(ticket, &slug, location.clone());
    Ok((slug, location))
}

fn redirect(location: HeaderValue) -> Response {
    (
        StatusCode::PERMANENT_REDIRECT,
        [
            (LOCATION, location),
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
        .into_response()
}
