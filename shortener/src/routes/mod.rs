//! HTTP routes, one module per concern; merged in `app::router`.

pub mod metrics;
pub mod probes;
pub mod redirect;
pub mod urls;

use axum::http::HeaderMap;
use axum::http::header::HOST;

use crate::app::AppState;

/// `short_url` for a slug: the configured public URL, else the address the client used.
pub fn short_url(state: &AppState, headers: &HeaderMap, slug: &str) -> String {
    match &state.public_url {
        Some(base) => format!("{base}/{slug}"),
        None => {
            let host = headers
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            format!("http://{host}/{slug}")
        }
    }
}
