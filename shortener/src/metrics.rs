//! Prometheus metrics, in a registry of their own. Names are part of docs/contracts.md: the
//! operator's analysis queries them.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{Method, StatusCode};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The `method` label of a request: one of a fixed set, so a client sending made-up methods
/// cannot create new series (each one costs memory until the process exits).
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

#[derive(Debug, Clone)]
pub struct Metrics {
    /// Tells this registry's handles apart in the per-thread cache (tests run several).
    id: u64,
    registry: Registry,
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub in_flight: IntGaugeVec,
    pub urls: IntGauge,
    pub connections_open: IntGauge,
    pub connections_refused: IntCounter,
}

impl Metrics {
    pub fn new(version: &str) -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "shortener_http_requests_total",
                "HTTP requests answered, by matched route and status code",
            ),
            &["method", "route", "code"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "shortener_http_request_duration_seconds",
                "Time from request to response, by matched route",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["method", "route"],
        )?;
        let in_flight = IntGaugeVec::new(
            Opts::new(
                "shortener_http_requests_in_flight",
                "Requests being handled now",
            ),
            &["route"],
        )?;
        let urls = IntGauge::new("shortener_urls", "Short URLs in the store")?;
        let connections_open =
            IntGauge::new("shortener_connections_open", "Client connections open now")?;
        let connections_refused = IntCounter::new(
            "shortener_connections_refused_total",
            "Connections answered 503 and closed because --max-connections were open",
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "shortener_build_info",
                "Always 1; the version label says which build runs",
            ),
            &["version"],
        )?;
        build_info.with_label_values(&[version]).set(1);
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(urls.clone()))?;
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(connections_open.clone()))?;
        registry.register(Box::new(connections_refused.clone()))?;
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Ok(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            registry,
            requests,
            duration,
            in_flight,
            urls,
            connections_open,
            connections_refused,
        })
    }

    /// The in-flight gauge of a route.
    pub fn in_flight(&self, route: &str) -> IntGauge {
        HANDLES.with_borrow_mut(|h| {
            if let Some(c) = h
                .in_flight
                .iter()
                .find(|c| c.id == self.id && *c.route == *route)
            {
                return c.gauge.clone();
            }
            let gauge = self.in_flight.with_label_values(&[route]);
            if h.in_flight.len() < MAX_CACHED {
                h.in_flight.push(CachedGauge {
                    id: self.id,
                    route: route.into(),
                    gauge: gauge.clone(),
                });
            }
            gauge
        })
    }

    /// Counts an answered request and records its duration.
    pub fn observe(&self, method: &'static str, route: &str, status: StatusCode, seconds: f64) {
        let code = status.as_u16();
        HANDLES.with_borrow_mut(|h| {
            let found = h.requests.iter().find(|c| {
                c.id == self.id && c.code == code && c.method == method && *c.route == *route
            });
            if let Some(c) = found {
                c.requests.inc();
                c.duration.observe(seconds);
                return;
            }
            // Created here, at the first answer, as before: a series appears in /metrics
            // when its first request is answered, not earlier.
            let requests = self
                .requests
                .with_label_values(&[method, route, status.as_str()]);
            let duration = self.duration.with_label_values(&[method, route]);
            requests.inc();
            duration.observe(seconds);
            if h.requests.len() < MAX_CACHED {
                h.requests.push(CachedRequests {
                    id: self.id,
                    method,
                    route: route.into(),
                    code,
                    requests,
                    duration,
                });
            }
        });
    }

    pub fn encode(&self) -> Result<(String, String), MetricsError> {
        let encoder = TextEncoder::new();
        let mut buf = Vec::new();
        encoder.encode(&self.registry.gather(), &mut buf)?;
        Ok((
            encoder.format_type().to_owned(),
            String::from_utf8_lossy(&buf).into_owned(),
        ))
    }
}

/// Handles per thread, at most this many of each kind (the label sets are few: a fixed set of
/// methods, the routes, the status codes the service answers); past it, looked up each time.
const MAX_CACHED: usize = 64;

/// Each worker thread's handles to the request series it has used, so a request does not
/// look its three series up by label (hashing the labels and taking each vector's lock:
/// 5% of a redirect's instructions). Per thread rather than shared: no lock, no contention.
/// A handle is the series itself, so counts go to the same place either way.
#[derive(Default)]
struct Handles {
    in_flight: Vec<CachedGauge>,
    requests: Vec<CachedRequests>,
}

struct CachedGauge {
    id: u64,
    route: Box<str>,
    gauge: IntGauge,
}

struct CachedRequests {
    id: u64,
    method: &'static str,
    route: Box<str>,
    code: u16,
    requests: IntCounter,
    duration: Histogram,
}

thread_local! {
    static HANDLES: RefCell<Handles> = RefCell::default();
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cached_handles_count_in_their_own_registry() {
        let a = Metrics::new("a").unwrap();
        let b = Metrics::new("b").unwrap();
        for _ in 0..3 {
            a.observe("GET", "/{slug}", StatusCode::PERMANENT_REDIRECT, 0.001);
        }
        b.observe("GET", "/{slug}", StatusCode::PERMANENT_REDIRECT, 0.001);
        b.observe("GET", "/{slug}", StatusCode::NOT_FOUND, 0.001);
        a.in_flight("/{slug}").inc();
        let count = |m: &Metrics, code: &str| {
            m.requests
                .with_label_values(&["GET", "/{slug}", code])
                .get()
        };
        assert_eq!(count(&a, "308"), 3);
        assert_eq!(count(&b, "308"), 1);
        assert_eq!(count(&b, "404"), 1);
        assert_eq!(
            a.duration
                .with_label_values(&["GET", "/{slug}"])
                .get_sample_count(),
            3
        );
        assert_eq!(a.in_flight.with_label_values(&["/{slug}"]).get(), 1);
        assert_eq!(b.in_flight.with_label_values(&["/{slug}"]).get(), 0);
        // No series before its first answer.
        let (_, text) = b.encode().unwrap();
        assert!(!text.contains("code=\"500\""), "{text}");
    }

    #[test]
    fn method_labels_are_a_fixed_set() {
        for (method, label) in [
            ("GET", "GET"),
            ("HEAD", "HEAD"),
            ("POST", "POST"),
            ("PUT", "PUT"),
            ("DELETE", "DELETE"),
            ("PATCH", "PATCH"),
            ("OPTIONS", "OPTIONS"),
            ("TRACE", "other"),
            ("CONNECT", "other"),
            ("get", "other"),
            ("XYZZY", "other"),
        ] {
            assert_eq!(
                method_label(&Method::from_bytes(method.as_bytes()).unwrap()),
                label
            );
        }
    }
}
