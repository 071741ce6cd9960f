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
        ("shortener_urls", 1.0),
        (r#"shortener_build_info{version="v2-test"}"#, 1.0),
    ];
    for (series, value) in expect {
        assert_eq!(metric_value(&m, series), Some(value), "{series} in\n{m}");
    }
    assert!(m.contains("# TYPE shortener_http_request_duration_seconds histogram"));
    assert!(m.contains("# TYPE shortener_urls gauge"));
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

/// 200,000 made-up methods once made `/metrics` 350 MB; the method label is now a fixed set.
#[tokio::test]
async fn made_up_methods_do_not_make_new_series() {
    let (_dir, store) = temp_store();
    let s = Server::start_ready(&store, &[]).await;
    let c = client();
    let slug = create_ok(&c, &s, "https://example.com/", None).await;
    let before = metrics(&c, &s).await.lines().count();
    for i in 0..300u32 {
        // Random-looking, distinct tokens of the method grammar (RFC 9110 §9.1).
        let method = format!("M{:08X}", i.wrapping_mul(2_654_435_761));
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        for path in [
            format!("/{slug}"),
            "/api/v1/urls".to_owned(),
            "/x/y".to_owned(),
        ] {
            let r = c
                .request(method.clone(), s.url(&path))
                .send()
                .await
                .unwrap();
            assert!(
                r.status().is_client_error(),
                "{method} {path}: {}",
                r.status()
            );
        }
    }
    let m = metrics(&c, &s).await;
    assert!(!m.contains("method=\"M"), "a made-up method became a label");
    assert!(
        m.contains(r#"method="other""#),
        "made-up methods are counted as other"
    );
    // A fixed handful of series were added (`other` per route, and this scrape's own), not
    // one per method: 900 distinct method/route pairs would have added thousands of lines.
    let added = m.lines().count() - before;
    assert!(added < 150, "{added} lines added:\n{m}");
    for line in m
        .lines()
        .filter(|l| l.starts_with("shortener_http_requests_total{"))
    {
        let method = line
            .split("method=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert!(
            [
                "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other"
            ]
            .contains(&method),
            "{line}"
        );
    }
}
