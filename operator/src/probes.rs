//! HTTP checks against a revision's pods: the smoke test and the `/metrics` scrape.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::rollout::AnalysisSample;

/// Probe routes and `/metrics` are not user traffic; analysis leaves them out.
const NON_USER_ROUTES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Request counters of one pod (non-probe routes only).
pub use crate::crd::RequestCounts as Counts;

/// Requests and errors since `baseline` over the pods just scraped (`None`: the scrape failed),
/// and the counters to use as the next baseline. A pod without a baseline counts from its
/// start; a counter that went down means the process restarted, so it counts from zero; a pod
/// that could not be read adds nothing and keeps its baseline.
pub fn since_baseline(
    baseline: &BTreeMap<String, Counts>,
    scraped: Vec<(String, Option<Counts>)>,
) -> AnalysisSample {
    let mut sample = AnalysisSample::default();
    for (ip, counts) in scraped {
        let base = baseline.get(&ip).copied();
        let Some(counts) = counts else {
            if let Some(base) = base {
                sample.pod_counts.insert(ip, base);
            }
            continue;
        };
        let base = base
            .filter(|b| counts.requests >= b.requests && counts.errors >= b.errors)
            .unwrap_or_default();
        sample.requests += counts.requests - base.requests;
        sample.errors += counts.errors - base.errors;
        sample.pod_counts.insert(ip, counts);
    }
    sample
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

/// Creates a URL on one pod (with the release's API token) and follows its redirect; an
/// error says what went wrong, never what the token is.
pub async fn smoke_test(
    client: &reqwest::Client,
    ip: &str,
    port: i32,
    marker: &str,
    token: &str,
) -> Result<(), String> {
    let base = format!("http://{ip}:{port}");
    let target = format!("https://smoke-test.shortener.dev/{marker}");
    let resp = client
        .post(format!("{base}/api/v1/urls"))
        .bearer_auth(token)
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

    fn c(requests: i64, errors: i64) -> Counts {
        Counts { requests, errors }
    }

    #[test]
    fn samples_count_from_the_baseline_kept_in_status() {
        let ip = |n: u8| format!("10.0.0.{n}");
        let baseline: BTreeMap<String, Counts> = [
            (ip(1), c(100, 2)),
            (ip(2), c(50, 0)),
            (ip(3), c(80, 8)),
            (ip(4), c(9, 1)),
        ]
        .into();
        let sample = since_baseline(
            &baseline,
            vec![
                (ip(1), Some(c(130, 12))), // 30 more, 10 of them errors
                (ip(2), Some(c(5, 5))),    // restarted: counts from zero
                (ip(3), None),             // not readable this time
                (ip(5), Some(c(4, 0))),    // new pod: counts from its start
            ],
        );
        assert_eq!((sample.requests, sample.errors), (30 + 5 + 4, 10 + 5));
        let want: BTreeMap<String, Counts> = [
            (ip(1), c(130, 12)),
            (ip(2), c(5, 5)),
            (ip(3), c(80, 8)),
            (ip(5), c(4, 0)),
        ]
        .into();
        assert_eq!(
            sample.pod_counts, want,
            "pod 4 is gone, pod 3 keeps its baseline"
        );
    }

    #[test]
    fn an_operator_restart_does_not_count_a_bake_twice() {
        // The first sample after a restart starts from the status, not from the pods' start.
        let before: BTreeMap<String, Counts> = [("p".to_string(), c(1000, 40))].into();
        let sample = since_baseline(&before, vec![("p".to_string(), Some(c(1010, 40)))]);
        assert_eq!((sample.requests, sample.errors), (10, 0));
    }

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
