//! The JSON API: create, inspect and delete short URLs.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::error::{ApiJson, AppError};
use crate::routes::short_url;
use crate::store::StoreError;
use crate::{slug, target};

/// Generated slugs collide about never; a handful of retries turns "about never" into never.
const GENERATE_ATTEMPTS: usize = 5;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/urls", post(create))
        .route("/api/v1/urls/{slug}", get(info).delete(remove))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    url: String,
    #[serde(default)]
    slug: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Created {
    slug: String,
    short_url: String,
    url: String,
}

#[derive(Debug, Serialize)]
pub struct Info {
    slug: String,
    short_url: String,
    url: String,
    hits: u64,
    created_at: String,
}

async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateRequest>,
) -> Result<(StatusCode, Json<Created>), AppError> {
    state.api_fault("POST", "/api/v1/urls", true).await?;
    let url = target::validate(&req.url)?;
    let slug = match req.slug {
        Some(custom) => {
            slug::validate_custom(&custom)?;
            state.store.insert(custom.clone(), url.clone()).await?;
            custom
        }
        None => insert_generated(&state, &url).await?,
    };
    tracing::debug!(slug, "created");
    let short_url = short_url(&state, &headers, &slug);
    Ok((
        StatusCode::CREATED,
        Json(Created {
            slug,
            short_url,
            url,
        }),
    ))
}

async fn insert_generated(state: &AppState, url: &str) -> Result<String, AppError> {
    for _ in 0..GENERATE_ATTEMPTS {
        let candidate = slug::generate();
        match state.store.insert(candidate.clone(), url.to_owned()).await {
            Ok(()) => return Ok(candidate),
            Err(StoreError::SlugTaken(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(AppError::Internal(format!(
        "{GENERATE_ATTEMPTS} generated slugs in a row were taken"
    )))
}

async fn info(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Info>, AppError> {
    let Path(slug) = path.map_err(|_| AppError::NoRoute)?;
    state.api_fault("GET", "/api/v1/urls/{slug}", false).await?;
    let record = state
        .hits
        .get(&state.store, &slug)
        .await?
        .ok_or_else(|| AppError::NotFound(slug.clone()))?;
    Ok(Json(Info {
        short_url: short_url(&state, &headers, &record.slug),
        slug: record.slug,
        url: record.url,
        hits: record.hits,
        created_at: record.created_at,
    }))
}

async fn remove(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, AppError> {
    let Path(slug) = path.map_err(|_| AppError::NoRoute)?;
    state
        .api_fault("DELETE", "/api/v1/urls/{slug}", false)
        .await?;
    let deleted = state.store.delete(slug.clone()).await?;
    // Also when another replica deleted it first: this one may still cache it.
    state.redirects.invalidate(&slug);
    if !deleted {
        return Err(AppError::NotFound(slug));
    }
    state.hits.forget(&slug);
    Ok(StatusCode::NO_CONTENT)
}
