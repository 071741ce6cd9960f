//! Prometheus metrics, in a registry of their own. Names are part of docs/contracts.md: the
//! operator's analysis queries them.

use axum::http::Method;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
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
        Ok(Self {
            registry,
            requests,
            duration,
            in_flight,
            urls,
            connections_open,
            connections_refused,
        })
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
