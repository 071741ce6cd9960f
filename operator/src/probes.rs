//! HTTP checks against a revision's pods: the smoke test and the `/metrics` scrape.

use std::time::Duration;

use serde::Deserialize;

/// Probe routes and `/metrics` are not user traffic; analysis leaves them out.
const NON_USER_ROUTES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Request counters of one pod (non-probe routes only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: i64,
    pub errors: i64,
}

/// Sums `shortener_http_requests_total` over user routes from a Prometheus text exposition.
pub fn parse_request_counts(text: &str) -> Counts {
    let mut counts = Counts::default();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("shortener_http_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let Ok(value) = value.split_whitespace().next().unwrap_or("").parse::<f64>() else {
            continue;
        };
        let route = label(labels, "route").unwrap_or_default();
        if NON_USER_ROUTES.contains(&route) {
            continue;
        }
        let n = value as i64;
        counts.requests += n;
        if label(labels, "code").is_some_and(|c| c.starts_with('5')) {
            counts.errors += n;
        }
    }
    counts
}

fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=\"");
    let start = labels.find(&key)? + key.len();
    let end = labels[start..].find('"')? + start;
    Some(&labels[start..end])
}

/// HTTP client for probes: short timeouts, redirects are answers, not hops.
pub fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

pub async fn scrape(client: &reqwest::Client, ip: &str, port: i32) -> Result<Counts, String> {
    let url = format!("http://{ip}:{port}/metrics");
    let resp = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("GET {url}: {}", resp.status()));
    }
    let body = resp.text().await.map_err(|e| format!("GET {url}: {e}"))?;
    Ok(parse_request_counts(&body))
}

#[derive(Deserialize)]
struct Created {
    slug: String,
}

/// Creates a URL on one pod and follows its redirect; an error says what went wrong.
pub async fn smoke_test(
    client: &reqwest::Client,
    ip: &str,
    port: i32,
    marker: &str,
) -> Result<(), String> {
    let base = format!("http://{ip}:{port}");
    let target = format!("https://smoke-test.shortener.dev/{marker}");
    let resp = client
        .post(format!("{base}/api/v1/urls"))
        .json(&serde_json::json!({ "url": target }))
        .send()
        .await
        .map_err(|e| format!("POST /api/v1/urls on {ip}: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("POST /api/v1/urls on {ip} answered {status}"));
    }
    let created: Created = resp
        .json()
        .await
        .map_err(|e| format!("POST /api/v1/urls on {ip}: bad body: {e}"))?;
    let resp = client
        .get(format!("{base}/{}", created.slug))
        .send()
        .await
        .map_err(|e| format!("GET /{} on {ip}: {e}", created.slug))?;
    let status = resp.status();
    if !status.is_redirection() {
        return Err(format!(
            "GET /{} on {ip} answered {status}, not a redirect",
            created.slug
        ));
    }
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if location != target {
        return Err(format!(
            "GET /{} on {ip} redirected to {location:?}, expected {target:?}",
            created.slug
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_user_routes_and_5xx_only() {
        let text = r#"# HELP shortener_http_requests_total Requests
# TYPE shortener_http_requests_total counter
shortener_http_requests_total{method="POST",route="/api/v1/urls",code="201"} 7
shortener_http_requests_total{method="POST",route="/api/v1/urls",code="500"} 3
shortener_http_requests_total{method="GET",route="/{slug}",code="308"} 10
shortener_http_requests_total{method="GET",route="/{slug}",code="503"} 2
shortener_http_requests_total{method="GET",route="/readyz",code="503"} 40
shortener_http_requests_total{method="GET",route="/healthz",code="200"} 40
shortener_http_requests_total{method="GET",route="/metrics",code="200"} 4
shortener_http_request_duration_seconds_count{method="GET",route="/{slug}"} 12
"#;
        assert_eq!(
            parse_request_counts(text),
            Counts {
                requests: 22,
                errors: 5
            }
        );
        assert_eq!(parse_request_counts(""), Counts::default());
    }
}
