//! The Prometheus exposition carries the names and labels in docs/contracts.md.
// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Server, client, create_ok, metric_value, metrics, resolve, temp_store};

#[tokio::test]
async fn exposition_has_the_contract_names_and_labels() {
    let (_dir, store) = temp_store();
    let s = Server::start_ready(&store, &[("SHORTENER_VERSION", "v2-test")]).await;
    let c = client();
    let slug = create_ok(&c, &s, "https://example.com/", None).await;
    assert_eq!(resolve(&c, &s, &slug).await.0, 308);
    assert_eq!(resolve(&c, &s, &slug).await.0, 308);
    assert_eq!(resolve(&c, &s, "missing").await.0, 404);
    assert_eq!(c.get(s.url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(
        c.get(s.url("/no/such/route"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let r = c.get(s.url("/metrics")).send().await.unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let m = r.text().await.unwrap();
    let expect = [
        (
            r#"shortener_http_requests_total{code="201",method="POST",route="/api/v1/urls"}"#,
            1.0,
        ),
        (
            r#"shortener_http_requests_total{code="308",method="GET",route="/{slug}"}"#,
            2.0,
        ),
        (
            r#"shortener_http_requests_total{code="404",method="GET",route="/{slug}"}"#,
            1.0,
        ),
        (
            r#"shortener_http_requests_total{code="200",method="GET",route="/healthz"}"#,
            1.0,
        ),
        (
            r#"shortener_http_requests_total{code="404",method="GET",route="unmatched"}"#,
            1.0,
        ),
        (
            r#"shortener_http_request_duration_seconds_count{method="GET",route="/{slug}"}"#,
            3.0,
        ),
        (
            r#"shortener_http_request_duration_seconds_bucket{method="GET",route="/{slug}",le="+Inf"}"#,
            3.0,
        ),
        ("shortener_urls_total", 1.0),
        (r#"shortener_build_info{version="v2-test"}"#, 1.0),
    ];
    for (series, value) in expect {
        assert_eq!(metric_value(&m, series), Some(value), "{series} in\n{m}");
    }
    assert!(m.contains("# TYPE shortener_http_request_duration_seconds histogram"));
    assert!(m.contains("# TYPE shortener_urls_total gauge"));
    assert!(m.contains("# TYPE shortener_http_requests_total counter"));
    // Probe scrapes count under their own route, so analysis can leave them out.
    let m = metrics(&c, &s).await;
    assert_eq!(
        metric_value(
            &m,
            r#"shortener_http_requests_total{code="200",method="GET",route="/metrics"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &m,
            r#"shortener_http_requests_total{code="200",method="GET",route="/readyz"}"#
        )
        .map(|v| v >= 1.0),
        Some(true)
    );
}
