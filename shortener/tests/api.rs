//! The API as a client sees it, against the real binary.
// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Server, client, create, create_ok, info, resolve, temp_sqlite_store, temp_store};
use serde_json::{Value, json};

#[tokio::test]
async fn create_redirect_inspect_delete() {
    let (_dir, store) = temp_store();
    let s = Server::start_ready(&store, &[]).await;
    let c = client();

    let (status, body) = create(&c, &s, json!({ "url": "https://example.com/a?b=c" })).await;
    assert_eq!(status, 201, "{body}");
    let slug = body["slug"].as_str().unwrap();
    assert_eq!(body["url"], "https://example.com/a?b=c");
    assert_eq!(body["short_url"], s.url(&format!("/{slug}")));

    for _ in 0..3 {
        assert_eq!(
            resolve(&c, &s, slug).await,
            (308, Some("https://example.com/a?b=c".to_owned()))
        );
    }

    let (status, record) = info(&c, &s, slug).await;
    assert_eq!(status, 200);
    assert_eq!(record["slug"], slug);
    assert_eq!(record["url"], "https://example.com/a?b=c");
    assert_eq!(record["hits"], 3);
    let created_at = record["created_at"].as_str().unwrap();
    assert!(
        created_at.len() >= 20 && created_at.ends_with('Z'),
        "{created_at}"
    );

    let r = c
        .delete(s.url(&format!("/api/v1/urls/{slug}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(resolve(&c, &s, slug).await.0, 404);
    assert_eq!(info(&c, &s, slug).await.0, 404);
}

#[tokio::test]
async fn custom_slug_and_collision() {
    let (_dir, store) = temp_store();
    let s = Server::start_ready(&store, &[]).await;
    let c = client();

    assert_eq!(
        create_ok(&c, &s, "https://one.example/", Some("my-link_1")).await,
        "my-link_1"
    );
    let (status, body) = create(
        &c,
        &s,
        json!({ "url": "https://two.example/", "slug": "my-link_1" }),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(body["error"]["code"], "slug_taken");
    // The first owner of the slug keeps it.
    assert_eq!(
        resolve(&c, &s, "my-link_1").await,
        (308, Some("https://one.example/".to_owned()))
    );
}

#[tokio::test]
async fn generated_slugs_are_distinct_fixed_length_and_url_safe() {
    let (_dir, store) = temp_store();
    let s = Server::start_ready(&store, &[]).await;
    let c = client();
    let mut seen = std::collections::HashSet::new();
    for i in 0..50 {
        let slug = create_ok(&c, &s, &format!("https://example.com/{i}"), None).await;
        assert_eq!(slug.len(), 7, "{slug}");
        assert!(slug.chars().all(|ch| ch.is_ascii_alphanumeric()), "{slug}");
        assert!(seen.insert(slug));
    }
}

#[tokio::test]
async fn urls_are_normalised_to_a_valid_location() {
    let (_dir, store) = temp_store();
    let s = Server::start_ready(&store, &[]).await;
    let c = client();
    let slug = create_ok(&c, &s, "https://bücher.example/straße?q=ä", None).await;
    assert_eq!(
        resolve(&c, &s, &slug).await,
        (
            308,
            Some("https://xn--bcher-kva.example/stra%C3%9Fe?q=%C3%A4".to_owned())
        )
    );
}

#[tokio::test]
async fn public_url_sets_the_short_url_base() {
    let (_dir, store) = temp_store();
    let s = Server::start(&store, &[("SHORTENER_PUBLIC_URL", "https://sho.rt/")]);
    s.wait_ready().await;
    let c = client();
    let (status, body) = create(
        &c,
        &s,
        json!({ "url": "https://example.com/", "slug": "abc" }),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(body["short_url"], "https://sho.rt/abc");
}

#[tokio::test]
async fn probes_answer_json() {
    let (_dir, store) = temp_store();
    let s = Server::start_ready(&store, &[]).await;
    let c = client();
    for (path, want) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let r = c.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["status"], want, "{path}");
    }
}

#[tokio::test]
async fn sqlite_readyz_fails_when_the_store_file_disappears() {
    let (_dir, store) = temp_sqlite_store();
    let s = Server::start_ready(&store, &[]).await;
    std::fs::remove_file(store.sqlite_path()).unwrap();
    let r = client().get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_ready");
    // Liveness is a different question: the process still serves.
    let r = client().get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn request_lines_are_debug_text_or_json() {
    let (_dir, store) = temp_store();
    let c = client();

    let s = Server::start_ready(&store, &[("RUST_LOG", "debug")]).await;
    assert_eq!(resolve(&c, &s, "nope").await.0, 404);
    common::eventually("the request is logged", || async {
        s.logs().iter().any(|l| {
            l.contains("DEBUG") && l.contains("GET /nope 404") && l.contains("latency_ms=")
        })
    })
    .await;
    drop(s);

    let s = Server::start_with_args(&store, &[("RUST_LOG", "debug")], &["--log-format", "json"]);
    s.wait_ready().await;
    assert_eq!(resolve(&c, &s, "nope").await.0, 404);
    common::eventually("the request is logged as JSON", || async {
        s.logs().iter().any(|l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| {
                v["level"] == "DEBUG"
                    && v["message"] == "GET /nope 404"
                    && v["span"]["route"] == "/{slug}"
            })
        })
    })
    .await;
}

#[tokio::test]
async fn at_the_default_level_a_redirect_logs_nothing() {
    let (_dir, store) = temp_store();
    let c = client();
    let s = Server::start_ready(&store, &[]).await;
    let slug = common::create_ok(&c, &s, "https://example.com/quiet", None).await;
    assert_eq!(resolve(&c, &s, &slug).await.0, 308);
    assert_eq!(resolve(&c, &s, "nope").await.0, 404);
    // A line that is logged after the requests, so the check below sees everything before it.
    s.sigterm();
    common::eventually("the server stops", || async {
        s.logs().iter().any(|l| l.contains("stopped"))
    })
    .await;
    let logs = s.logs();
    assert!(
        !logs
            .iter()
            .any(|l| l.contains(&format!("/{slug}")) || l.contains("/nope")),
        "{}",
        logs.join("\n")
    );
}

/// A redirect takes the fast path (`GET`/`HEAD` of a plain one-segment path, no body) or goes
/// through axum's router (a `%` escape, a body); a client and the metrics cannot tell which.
#[tokio::test]
async fn the_redirect_fast_path_answers_like_the_router() {
    let (_dir, store) = temp_store();
    let s = Server::start_ready(&store, &[]).await;
    let c = client();
    create_ok(&c, &s, "https://example.com/same", Some("abc")).await;

    // (path, body): the first of each pair is fast, the second routed.
    let pairs = [
        (("/abc", None), ("/%61bc", None)),
        (("/abc", None), ("/abc", Some("x"))),
        (("/nope", None), ("/%6Eope", None)),
    ];
    let answer = |method: reqwest::Method, path: &'static str, body: Option<&'static str>| {
        let mut req = c.request(method, s.url(path));
        if let Some(b) = body {
            req = req.body(b);
        }
        async move {
            let r = req.send().await.unwrap();
            let mut headers: Vec<(String, String)> = r
                .headers()
                .iter()
                .filter(|(k, _)| *k != "date")
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
                .collect();
            headers.sort();
            (r.status().as_u16(), headers, r.text().await.unwrap())
        }
    };
    for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
        for ((fast, fast_body), (routed, routed_body)) in pairs {
            let a = answer(method.clone(), fast, fast_body).await;
            let b = answer(method.clone(), routed, routed_body).await;
            assert_eq!(a, b, "{method} {fast} vs {routed}");
        }
    }
    // Four GETs of "abc" (two fast, two routed) are four hits; HEADs are none.
    common::eventually("the hits are counted", || async {
        info(&c, &s, "abc").await.1["hits"] == 4
    })
    .await;
    let text = common::metrics(&c, &s).await;
    for (line, n) in [
        (
            r#"shortener_http_requests_total{code="308",method="GET",route="/{slug}"}"#,
            4,
        ),
        (
            r#"shortener_http_requests_total{code="308",method="HEAD",route="/{slug}"}"#,
            4,
        ),
        (
            r#"shortener_http_requests_total{code="404",method="GET",route="/{slug}"}"#,
            2,
        ),
        (
            r#"shortener_http_request_duration_seconds_count{method="GET",route="/{slug}"}"#,
            6,
        ),
    ] {
        assert!(
            text.lines().any(|l| l == format!("{line} {n}")),
            "{line} {n} not in\n{text}"
        );
    }
}
