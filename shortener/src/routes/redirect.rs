//! `GET /{slug}`: the redirect itself, the hot path.
//!
//! 308 Permanent Redirect rather than 301: both say "this short link always means that URL",
//! but 308 forbids a client from turning the request into a different method, so the answer
//! is exact for every method a client might use, not only GET. `Cache-Control: no-store` keeps
//! the "permanent" from being cached for good, so deletes take effect and hits get counted.

use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_LENGTH, LOCATION};
use axum::http::{HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http_body::Body as _;

use crate::app::AppState;
use crate::error::AppError;
use crate::middleware;
use crate::slug;

/// The route, as the `route` label and the request span name it.
pub const ROUTE: &str = "/{slug}";

/// The other one-segment routes, which take precedence over `/{slug}` (so `/healthz` is the
/// probe, not a slug). Each is also registered with these constants, so the fast path below
/// cannot shadow one of them.
pub const ONE_SEGMENT_ROUTES: [&str; 3] = [
    super::probes::HEALTHZ,
    super::probes::READYZ,
    super::metrics::PATH,
];

pub fn router() -> Router<AppState> {
    Router::new().route(ROUTE, get(resolve).head(peek))
}

/// `GET /{slug}`: the redirect, counted as a hit.
async fn resolve(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, AppError> {
    let Path(slug) = path.map_err(|_| AppError::NoRoute)?;
    answer(&state, false, &slug).await
}

/// `HEAD /{slug}`: the same answer without the body, and not a hit: link checkers and
/// previews ask HEAD, and nobody followed the link.
async fn peek(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, AppError> {
    let Path(slug) = path.map_err(|_| AppError::NoRoute)?;
    answer(&state, true, &slug).await
}

async fn answer(state: &AppState, head: bool, slug: &str) -> Result<Response, AppError> {
    let location = lookup(state, if head { "HEAD" } else { "GET" }, slug).await?;
    if !head {
        state.hits.record(slug);
    }
    Ok(redirect(location))
}

async fn lookup(state: &AppState, method: &str, slug: &str) -> Result<HeaderValue, AppError> {
    state.api_fault(method, ROUTE, true).await?;
    // No slug longer than this was ever accepted, so don't ask the store about it.
    if slug.len() > slug::MAX_LEN {
        return Err(AppError::NotFound(slug.to_owned()));
    }
    if let Some(location) = state.redirects.get(slug) {
        return Ok(location);
    }
    let ticket = state.redirects.ticket();
    // Boxed: the store's future is large and rarely needed; inline, it made every redirect's
    // future bigger to move around (callgrind: 4% of a redirect's instructions).
    let url = Box::pin(state.store.resolve(slug.to_owned()))
        .await?
        .ok_or_else(|| AppError::NotFound(slug.to_owned()))?;
    let location = HeaderValue::try_from(url)
        .map_err(|e| AppError::Internal(format!("stored URL for {slug:?} is not a header: {e}")))?;
    state.redirects.insert(ticket, slug, location.clone());
    Ok(location)
}

fn redirect(location: HeaderValue) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    let headers = response.headers_mut();
    // Room for all three at once, Content-Length included, rather than growing twice.
    headers.reserve(3);
    headers.insert(LOCATION, location);
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The slug, if axum's router would send a request for `path` to `/{slug}` and the fast
/// path can take it: one non-empty segment that is not another route's. A segment with a
/// `%` is left to the router, whose `Path` extractor decodes it (and rejects bad UTF-8).
pub fn fast_slug(path: &str) -> Option<&str> {
    let slug = path.strip_prefix('/')?;
    if slug.is_empty()
        || slug.bytes().any(|b| b == b'/' || b == b'%')
        || ONE_SEGMENT_ROUTES.contains(&path)
    {
        return None;
    }
    Some(slug)
}

/// Whether [`fast`] answers this request: `GET` or `HEAD` of a slug, without a body.
pub fn takes<B: http_body::Body>(req: &Request<B>) -> bool {
    matches!(*req.method(), Method::GET | Method::HEAD)
        && req.body().is_end_stream()
        && fast_slug(req.uri().path()).is_some()
}

/// The redirect without axum's router: the same answer, metrics, logs and deadlines as the
/// route above (both run [`answer`] inside [`middleware::observed`]), without the routing,
/// extractor and per-layer clones, which were a third of a redirect's instructions. Only
/// for requests [`takes`] says yes to.
pub async fn fast<B>(state: AppState, req: Request<B>) -> Response {
    let started = Instant::now();
    let head = req.method() == Method::HEAD;
    let method = if head { "HEAD" } else { "GET" };
    let uri = req.uri();
    let slug = fast_slug(uri.path()).unwrap_or_default();
    let call = async { finish(answer(&state, head, slug).await.into_response(), head) };
    let response = middleware::observed(&state, method, ROUTE, uri, started, None, call).await;
    finish(response, head)
}

/// What axum's router does to every answer: a `Content-Length` for a body of known size,
/// and no body for `HEAD`.
fn finish(mut response: Response, head: bool) -> Response {
    if !response.headers().contains_key(CONTENT_LENGTH)
        && let Some(size) = response.body().size_hint().exact()
    {
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(size));
    }
    if head {
        response.map(|_| Body::empty())
    } else {
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_path_takes_exactly_the_paths_routed_to_slug() {
        for (path, want) in [
            ("/abc", Some("abc")),
            ("/a-b_c", Some("a-b_c")),
            ("/api", Some("api")),
            ("/healthzz", Some("healthzz")),
            ("/healthz", None),
            ("/readyz", None),
            ("/metrics", None),
            ("/", None),
            ("", None),
            ("/abc/", None),
            ("//abc", None),
            ("/api/v1/urls", None),
            ("/api/v1/urls/abc", None),
            ("/a%2Fb", None),
        ] {
            assert_eq!(fast_slug(path), want, "{path:?}");
        }
    }
}
