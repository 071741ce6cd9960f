//! HTTP checks against a revision's pods: the smoke test and the `/metrics` scrape, and
//! [`Http`], which answers the decision's probes with them.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;
use tracing::warn;

use crate::rollout::{AnalysisSample, Latency, Prober, SmokeResult};

/// The API routes (the shortener's `route` labels): the only requests analysis judges.
/// Probes, `/metrics` and `unmatched` say nothing about whether the API works.
const API_ROUTES: [&str; 3] = ["/api/v1/urls", "/api/v1/urls/{slug}", "/{slug}"];

/// Duration buckets kept per pod: the shortener exports 15; a tenant's image could export
/// thousands, and they are kept in the status.
const MAX_BUCKETS: usize = 32;

/// Request counters of one pod (API routes only).
pub use crate::api::RequestCounts as Counts;

/// Requests and errors since `baseline` over the pods just scraped (`None`: the scrape failed),
/// and the counters to use as the next baseline. A pod without a baseline counts from its
/// start; a counter that went down means the process restarted, so it counts from zero; a pod
/// that could not be read adds nothing and keeps its baseline.
pub fn since_baseline(
    baseline: &BTreeMap<String, Counts>,
    scraped: Vec<(String, Option<Counts>)>,
) -> AnalysisSample {
    let mut sample = AnalysisSample::default();
    let mut buckets: BTreeMap<String, i64> = BTreeMap::new();
    for (ip, counts) in scraped {
        let base = baseline.get(&ip);
        let Some(counts) = counts else {
            if let Some(base) = base {
                sample.pod_counts.insert(ip, base.clone());
            }
            continue;
        };
        let empty = Counts::default();
        let base = base.filter(|b| went_on(b, &counts)).unwrap_or(&empty);
        // Saturating: the pod's image, and so its /metrics, is the tenant's.
        sample.requests = sample
            .requests
            .saturating_add(counts.requests.saturating_sub(base.requests));
        sample.errors = sample
            .errors
            .saturating_add(counts.errors.saturating_sub(base.errors));
        for (le, n) in &counts.latency_buckets {
            let before = base.latency_buckets.get(le).copied().unwrap_or(0);
            let sum = buckets.entry(le.clone()).or_default();
            *sum = sum.saturating_add(n.saturating_sub(before));
        }
        sample.pod_counts.insert(ip, counts);
    }
    sample.latency = p99(&buckets);
    sample
}

/// Whether `now` can follow `base` in one process: no counter went down (else it restarted).
fn went_on(base: &Counts, now: &Counts) -> bool {
    now.requests >= base.requests
        && now.errors >= base.errors
        && base
            .latency_buckets
            .iter()
            .all(|(le, n)| now.latency_buckets.get(le).is_some_and(|m| m >= n))
}

/// The 0.99 quantile of cumulative buckets (`le` -> count), computed as PromQL's
/// `histogram_quantile` does: linear interpolation inside the bucket the rank falls in,
/// the highest finite bound when it falls in `+Inf`. `None` without a `+Inf` bucket or
/// without observations.
pub fn p99(buckets: &BTreeMap<String, i64>) -> Option<Latency> {
    let mut bounds: Vec<(f64, i64)> = buckets
        .iter()
        .filter_map(|(le, n)| {
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse::<f64>().ok().filter(|v| v.is_finite())?
            };
            Some((le, *n))
        })
        .collect();
    bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let &(last, total) = bounds.last()?;
    if last != f64::INFINITY || total <= 0 {
        return None;
    }
    // Counts of cumulative buckets never go down; a tenant's exposition might.
    let mut highest = 0;
    for b in &mut bounds {
        highest = highest.max(b.1);
        b.1 = highest;
    }
    let rank = 0.99 * total as f64;
    let i = bounds.iter().position(|&(_, n)| n as f64 >= rank)?;
    let (upper, count) = bounds[i];
    let (lower, below) = if i == 0 { (0.0, 0) } else { bounds[i - 1] };
    let p99_seconds = if upper == f64::INFINITY {
        lower
    } else if count == below {
        upper
    } else {
        lower + (upper - lower) * (rank - below as f64) / (count - below) as f64
    };
    Some(Latency {
        p99_seconds,
        observed: total,
    })
}

/// Sums `shortener_http_requests_total` over the API routes from a Prometheus text
/// exposition: `requests` are the answers that were not 4xx, `errors` the 5xx among them.
/// A 4xx is the client's mistake (an unknown slug, a bad token, a rate limit) and says
/// nothing about the server, so a flood of them must not dilute the 5xx ratio. Also sums
/// `shortener_http_request_duration_seconds_bucket` over the API routes by `le`.
pub fn parse_request_counts(text: &str) -> Counts {
    let mut counts = Counts::default();
    for line in text.lines() {
        let (rest, bucket) = if let Some(rest) = line.strip_prefix("shortener_http_requests_total{")
        {
            (rest, false)
        } else if let Some(rest) =
            line.strip_prefix("shortener_http_request_duration_seconds_bucket{")
        {
            (rest, true)
        } else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let Ok(value) = value.split_whitespace().next().unwrap_or("").parse::<f64>() else {
            continue;
        };
        // A counter is finite and not negative; anything else is not one.
        if !value.is_finite() || value < 0.0 {
            continue;
        }
        let route = label(labels, "route").unwrap_or_default();
        if !API_ROUTES.contains(&route) {
            continue;
        }
        // `as` saturates at i64::MAX; the sums saturate too, so no exposition overflows.
        let n = value as i64;
        if bucket {
            let Some(le) = label(labels, "le") else {
                continue;
            };
            let full = counts.latency_buckets.len() >= MAX_BUCKETS;
            if let Some(sum) = counts.latency_buckets.get_mut(le) {
                *sum = sum.saturating_add(n);
            } else if !full {
                counts.latency_buckets.insert(le.to_string(), n);
            }
            continue;
        }
        let code = label(labels, "code").unwrap_or_default();
        if code.starts_with('4') {
            continue;
        }
        counts.requests = counts.requests.saturating_add(n);
        if code.starts_with('5') {
            counts.errors = counts.errors.saturating_add(n);
        }
    }
    counts
}

/// A label's value; the name must start the label set or follow a comma, so `code` is not
/// found inside `statuscode`.
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=\"");
    let mut from = 0;
    let start = loop {
        let at = labels[from..].find(&key)? + from;
        if at == 0 || labels[..at].trim_end().ends_with(',') {
            break at + key.len();
        }
        from = at + key.len();
    };
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

/// Pod IPs of one revision.
#[derive(Default)]
pub struct PodAddresses {
    pub ready: Vec<String>,
    pub all: Vec<String>,
}

/// Answers the decision's probes over HTTP, against the pods of the revision it names.
pub struct Http<'a> {
    pub client: &'a reqwest::Client,
    pub addresses: &'a BTreeMap<String, PodAddresses>,
    /// Each pod's counters at the previous sample, from the bake's status.
    pub baseline: &'a BTreeMap<String, Counts>,
    pub port: i32,
    /// The release's API token: the smoke test creates a URL, and writes need one.
    pub token: &'a str,
    /// `spec.analysis.prometheus`: queried each interval, and the pods are read only with
    /// its `scrapePods`.
    pub prometheus: Option<&'a crate::promql::Target<'a>>,
}

impl Prober for Http<'_> {
    fn smoke_test(&mut self, hash: &str) -> impl Future<Output = SmokeResult> + Send {
        let ips = self
            .addresses
            .get(hash)
            .map(|a| a.ready.clone())
            .unwrap_or_default();
        smoke_all(
            self.client,
            ips,
            self.port,
            hash.to_string(),
            self.token.to_string(),
        )
    }

    fn analyze(&mut self, hash: &str) -> impl Future<Output = AnalysisSample> + Send {
        let scrape = self.prometheus.is_none_or(|t| t.spec.scrape_pods);
        let ips = self
            .addresses
            .get(hash)
            .filter(|_| scrape)
            .map(|a| a.all.clone())
            .unwrap_or_default();
        let (client, baseline, port, target) =
            (self.client, self.baseline, self.port, self.prometheus);
        let hash = hash.to_string();
        async move {
            let mut sample = analyze(client, baseline, ips, port).await;
            if let Some(target) = target {
                sample.prometheus = Some(crate::promql::sample(client, target, &hash).await);
            }
            sample
        }
    }
}

/// The smoke test on every ready pod of the revision; the first failure ends it.
async fn smoke_all(
    client: &reqwest::Client,
    ips: Vec<String>,
    port: i32,
    hash: String,
    token: String,
) -> SmokeResult {
    if ips.is_empty() {
        return SmokeResult::Failed("no ready pod to test".into());
    }
    for ip in &ips {
        let marker = format!("{hash}-{}", Timestamp::now().as_millisecond());
        if let Err(e) = smoke_test(client, ip, port, &marker, &token).await {
            return SmokeResult::Failed(e);
        }
        crate::crash::point(crate::crash::SMOKE_TEST);
    }
    SmokeResult::Passed
}

/// Reads every pod's counters and returns what happened since `baseline` (the counters at
/// the previous sample, kept in the release's status), with the new counters as the next
/// baseline. A pod without a baseline counts from its start, which before promotion held
/// only probes and the (passed) smoke test.
async fn analyze(
    client: &reqwest::Client,
    baseline: &BTreeMap<String, Counts>,
    ips: Vec<String>,
    port: i32,
) -> AnalysisSample {
    let mut scraped = Vec::with_capacity(ips.len());
    for ip in ips {
        let counts = scrape(client, &ip, port).await;
        if let Err(e) = &counts {
            // An unreachable pod shows up in readiness and restarts; skip its numbers.
            warn!(error = %e, "metrics scrape failed");
        }
        scraped.push((ip, counts.ok()));
    }
    since_baseline(baseline, scraped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(requests: i64, errors: i64) -> Counts {
        Counts {
            requests,
            errors,
            ..Counts::default()
        }
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
    fn counts_api_routes_without_4xx_and_their_5xx() {
        let text = r#"# HELP shortener_http_requests_total Requests
# TYPE shortener_http_requests_total counter
shortener_http_requests_total{method="POST",route="/api/v1/urls",code="201"} 7
shortener_http_requests_total{method="POST",route="/api/v1/urls",code="500"} 3
shortener_http_requests_total{method="GET",route="/api/v1/urls/{slug}",code="200"} 1
shortener_http_requests_total{method="DELETE",route="/api/v1/urls/{slug}",code="502"} 1
shortener_http_requests_total{method="GET",route="/{slug}",code="308"} 10
shortener_http_requests_total{method="GET",route="/{slug}",code="503"} 2
shortener_http_requests_total{method="GET",route="/{slug}",code="404"} 5000
shortener_http_requests_total{method="POST",route="/api/v1/urls",code="401"} 70
shortener_http_requests_total{method="POST",route="/api/v1/urls",code="429"} 9
shortener_http_requests_total{method="GET",route="unmatched",code="404"} 800
shortener_http_requests_total{method="GET",route="unmatched",code="500"} 8
shortener_http_requests_total{method="GET",route="/readyz",code="503"} 40
shortener_http_requests_total{method="GET",route="/healthz",code="200"} 40
shortener_http_requests_total{method="GET",route="/metrics",code="200"} 4
shortener_http_request_duration_seconds_count{method="GET",route="/{slug}"} 12
"#;
        assert_eq!(
            parse_request_counts(text),
            c(24, 6),
            "404s, 401s and 429s are left out; probes, /metrics and unmatched never count"
        );
        assert_eq!(parse_request_counts(""), Counts::default());
        // A tenant's pod serves its own /metrics: odd values are ignored, sums saturate,
        // and a label is matched by its whole name.
        let hostile = r#"shortener_http_requests_total{route="/{slug}",code="500"} NaN
shortener_http_requests_total{route="/{slug}",code="500"} -5
shortener_http_requests_total{route="/{slug}",code="500"} +Inf
shortener_http_requests_total{route="/{slug}",code="500"} 1e300
shortener_http_requests_total{route="/{slug}",code="500"} 1e300
shortener_http_requests_total{route="/{slug}",statuscode="500",code="200"} 1
"#;
        assert_eq!(parse_request_counts(hostile), c(i64::MAX, i64::MAX));
    }

    fn buckets(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
        pairs.iter().map(|(le, n)| (le.to_string(), *n)).collect()
    }

    #[test]
    fn p99_interpolates_like_histogram_quantile() {
        // (cumulative buckets, p99 seconds; None: nothing to judge)
        type Buckets<'a> = &'a [(&'a str, i64)];
        let cases: [(Buckets, Option<f64>); 7] = [
            // All in (0.001, 0.0025]: 0.001 + 0.0015 * 99/100.
            (
                &[("0.001", 0), ("0.0025", 100), ("+Inf", 100)],
                Some(0.002485),
            ),
            // 300 ms answers land in (0.25, 0.5].
            (
                &[("0.0025", 0), ("0.25", 0), ("0.5", 10), ("+Inf", 10)],
                Some(0.4975),
            ),
            // 1 slow in 100 stays out of the p99's bucket; 2 do not.
            (&[("0.0025", 99), ("0.5", 100), ("+Inf", 100)], Some(0.0025)),
            (
                &[("0.0025", 98), ("0.5", 100), ("+Inf", 100)],
                Some(0.25125),
            ),
            // Beyond the highest finite bound: that bound, as PromQL answers.
            (&[("0.5", 0), ("+Inf", 7)], Some(0.5)),
            (&[("0.5", 0), ("+Inf", 0)], None),
            (&[("0.5", 9)], None),
        ];
        for (pairs, want) in cases {
            let got = p99(&buckets(pairs)).map(|l| l.p99_seconds);
            match (got, want) {
                (Some(g), Some(w)) => assert!((g - w).abs() < 1e-9, "{pairs:?}: {g} != {w}"),
                _ => assert_eq!(got, want, "{pairs:?}"),
            }
        }
    }

    #[test]
    fn latency_is_the_interval_bucket_deltas_over_api_routes() {
        let text = |fast: i64, slow: i64| {
            format!(
                r#"shortener_http_request_duration_seconds_bucket{{method="GET",route="/{{slug}}",le="0.0025"}} {fast}
shortener_http_request_duration_seconds_bucket{{method="GET",route="/{{slug}}",le="0.5"}} {}
shortener_http_request_duration_seconds_bucket{{method="GET",route="/{{slug}}",le="+Inf"}} {}
shortener_http_request_duration_seconds_bucket{{method="GET",route="/readyz",le="0.0025"}} 0
shortener_http_request_duration_seconds_bucket{{method="GET",route="/readyz",le="0.5"}} 5000
shortener_http_request_duration_seconds_bucket{{method="GET",route="/readyz",le="+Inf"}} 5000
"#,
                fast + slow,
                fast + slow
            )
        };
        let before = parse_request_counts(&text(1000, 0));
        assert_eq!(before.latency_buckets.len(), 3, "probes are not timed");
        let baseline: BTreeMap<String, Counts> = [("p".to_string(), before)].into();
        // 1000 fast requests before; 50 slow ones in the interval: its p99 is slow.
        let now = parse_request_counts(&text(1000, 50));
        let sample = since_baseline(&baseline, vec![("p".to_string(), Some(now))]);
        let latency = sample.latency.unwrap();
        assert_eq!(latency.observed, 50);
        assert!(latency.p99_seconds > 0.25, "{latency:?}");
        // A tenant's exposition cannot grow the status without bound.
        let many: String = (0..1000)
            .map(|i| {
                format!("shortener_http_request_duration_seconds_bucket{{route=\"/{{slug}}\",le=\"{i}\"}} 1\n")
            })
            .collect();
        assert_eq!(
            parse_request_counts(&many).latency_buckets.len(),
            MAX_BUCKETS
        );
    }
}
