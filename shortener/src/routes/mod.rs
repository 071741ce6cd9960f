//! HTTP routes, one module per concern; merged in `app::router`.

pub mod metrics;
pub mod probes;
pub mod redirect;
pub mod urls;

use axum::http::HeaderMap;
use axum::http::header::HOST;

use crate::app::AppState;

/// How `short_url` is built. Never from a Host header a client made up: a response (or a
/// cache in front of the service) would then hand other users links to the client's host.
#[derive(Debug)]
pub struct ShortUrls {
    /// `--public-url`, without a trailing slash.
    pub public: Option<String>,
    /// `--allowed-hosts`, lower case, without port.
    pub allowed_hosts: Vec<String>,
    /// The base when neither applies: `http://localhost:<port>`.
    pub fallback: String,
}

impl ShortUrls {
    /// The base for a request with this Host header (`None`: no usable header).
    pub fn base<'a>(&'a self, host_header: Option<&'a str>) -> std::borrow::Cow<'a, str> {
        if let Some(public) = &self.public {
            return public.as_str().into();
        }
        match host_header.filter(|h| self.allowed(h)) {
            Some(host) => format!("http://{host}").into(),
            None => self.fallback.as_str().into(),
        }
    }

    /// A Host header of an allowed host, with at most a numeric port.
    fn allowed(&self, header: &str) -> bool {
        let (host, port) = match header.rsplit_once(':') {
            // `[::1]` alone has colons but no port.
            Some((h, p)) if !p.contains(']') => (h, Some(p)),
            _ => (header, None),
        };
        let port_ok = port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
        port_ok
            && self
                .allowed_hosts
                .iter()
                .any(|a| a.eq_ignore_ascii_case(host))
    }
}

/// `short_url` for a slug.
pub fn short_url(state: &AppState, headers: &HeaderMap, slug: &str) -> String {
    let host = headers.get(HOST).and_then(|h| h.to_str().ok());
    format!("{}/{slug}", state.short_urls.base(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_url_base_never_takes_an_unlisted_host() {
        let urls = ShortUrls {
            public: None,
            allowed_hosts: vec![
                "localhost".into(),
                "127.0.0.1".into(),
                "[::1]".into(),
                "sho.rt".into(),
            ],
            fallback: "http://localhost:8080".into(),
        };
        for (host, want) in [
            (Some("sho.rt"), "http://sho.rt"),
            (Some("SHO.RT:8443"), "http://SHO.RT:8443"),
            (Some("127.0.0.1:18080"), "http://127.0.0.1:18080"),
            (Some("[::1]:80"), "http://[::1]:80"),
            (Some("[::1]"), "http://[::1]"),
            (Some("evil.example"), "http://localhost:8080"),
            (Some("sho.rt.evil.example"), "http://localhost:8080"),
            (Some("sho.rt:80@evil.example"), "http://localhost:8080"),
            (Some("sho.rt:80/evil"), "http://localhost:8080"),
            (Some("sho.rt:"), "http://localhost:8080"),
            (None, "http://localhost:8080"),
        ] {
            assert_eq!(urls.base(host), want, "{host:?}");
        }
        let public = ShortUrls {
            public: Some("https://sho.rt".into()),
            ..urls
        };
        assert_eq!(public.base(Some("127.0.0.1:1")), "https://sho.rt");
    }
}
