//! One error type for the HTTP layer: every failure a client can see, its status, and the JSON
//! body `{"error": {"code", "message"}}`. Internal details are logged, never sent.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::header::{CONNECTION, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    InvalidUrl(String),
    #[error("url is longer than {max} characters")]
    UrlTooLong { max: usize },
    #[error("{0}")]
    InvalidSlug(String),
    #[error("slug {0:?} is reserved")]
    ReservedSlug(String),
    #[error("slug {0:?} is already taken")]
    SlugTaken(String),
    #[error("no short URL {0:?}")]
    NotFound(String),
    #[error("no such route")]
    NoRoute,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("invalid request body: {0}")]
    InvalidBody(String),
    #[error("request body is too large")]
    PayloadTooLarge,
    #[error("expected a request with Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("request took longer than {0:?}")]
    Timeout(std::time::Duration),
    #[error("the request body arrived too slowly")]
    BodyTimeout,
    #[error("{}", unauthorized_message(.invalid))]
    Unauthorized { invalid: bool },
    #[error("too many writes from this client; retry in {}s", retry_after_secs(.0))]
    RateLimited(std::time::Duration),
    #[error("not ready: {0}")]
    NotReady(String),
    /// The database cannot serve now (unreachable, restarting, read-only). The detail is
    /// logged, not sent.
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
    /// Anything the client cannot fix. The detail goes to the log, not to the client.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidUrl(_)
            | Self::UrlTooLong { .. }
            | Self::InvalidSlug(_)
            | Self::ReservedSlug(_)
            | Self::InvalidBody(_) => StatusCode::BAD_REQUEST,
            Self::SlugTaken(_) => StatusCode::CONFLICT,
            Self::NotFound(_) | Self::NoRoute => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Timeout(_) | Self::NotReady(_) | Self::StoreUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable, machine-readable code; clients branch on this, not on the message.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidUrl(_) => "invalid_url",
            Self::UrlTooLong { .. } => "url_too_long",
            Self::InvalidSlug(_) => "invalid_slug",
            Self::ReservedSlug(_) => "reserved_slug",
            Self::SlugTaken(_) => "slug_taken",
            Self::NotFound(_) => "not_found",
            Self::NoRoute => "no_route",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::InvalidBody(_) => "invalid_body",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Timeout(_) => "timeout",
            Self::BodyTimeout => "body_timeout",
            Self::Unauthorized { .. } => "unauthorized",
            Self::RateLimited(_) => "rate_limited",
            Self::NotReady(_) => "not_ready",
            Self::StoreUnavailable(_) => "store_unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

fn unauthorized_message(invalid: &bool) -> &'static str {
    if *invalid {
        "the bearer token is not valid"
    } else {
        "this request needs Authorization: Bearer <token>"
    }
}

/// Whole seconds to wait, at least 1 (`Retry-After` has no fractions).
fn retry_after_secs(wait: &std::time::Duration) -> u64 {
    let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    whole.max(1)
}

/// Carried on a 500 response so the request-logging middleware can log the detail once,
/// inside the request's span.
#[derive(Debug, Clone)]
pub struct InternalDetail(pub String);

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorInner<'a>,
}

#[derive(Serialize)]
struct ErrorInner<'a> {
    code: &'a str,
    message: String,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            Self::Internal(_) => "internal server error".to_owned(),
            Self::StoreUnavailable(_) => "the store is unavailable; retry later".to_owned(),
            other => other.to_string(),
        };
        let body = ErrorBody {
            error: ErrorInner {
                code: self.code(),
                message,
            },
        };
        let mut response = (status, Json(body)).into_response();
        match &self {
            Self::Unauthorized { invalid } => {
                // RFC 6750 §3: the scheme, and `invalid_token` when one was presented.
                let value = if *invalid {
                    r#"Bearer realm="shortener", error="invalid_token""#
                } else {
                    r#"Bearer realm="shortener""#
                };
                response
                    .headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static(value));
            }
            Self::RateLimited(wait) => {
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(wait)));
            }
            _ => {}
        }
        if matches!(
            self,
            Self::PayloadTooLarge | Self::UnsupportedMediaType | Self::BodyTimeout
        ) {
            // The body was left unread, so the connection cannot carry another request; say so,
            // or a client may reuse it and lose its next request to the close.
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        if let Self::Internal(detail) | Self::StoreUnavailable(detail) = self {
            response.extensions_mut().insert(InternalDetail(detail));
        }
        response
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::SlugTaken(slug) => Self::SlugTaken(slug),
            e @ StoreError::Unavailable(_) => Self::StoreUnavailable(e.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<JsonRejection> for AppError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType,
            _ => Self::InvalidBody(rejection.body_text()),
        }
    }
}

/// `Json` for request bodies that must be a JSON object, whose rejections use this service's error shape instead of axum's plain text.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<serde_json::Value>::from_request(req, state).await?;
        // serde would also accept a struct written as a JSON array; the API takes objects only.
        if !value.is_object() {
            return Err(AppError::InvalidBody("expected a JSON object".to_owned()));
        }
        T::deserialize(value)
            .map(Self)
            .map_err(|e| AppError::InvalidBody(e.to_string()))
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}
