//! Every kind of bad input gets a 4xx with the JSON error shape and changes nothing.
// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Server, client, create_ok, metric_value, metrics, resolve, temp_store};
use serde_json::Value;

struct Case {
    name: &'static str,
    content_type: Option<&'static str>,
    body: String,
    status: u16,
    code: &'static str,
}

fn case(name: &'static str, body: impl Into<String>, status: u16, code: &'static str) -> Case {
    Case {
        name,
        content_type: Some("application/json"),
        body: body.into(),
        status,
        code,
    }
}

fn cases() -> Vec<Case> {
    let long_url = format!("https://example.com/{}", "a".repeat(2048));
    vec![
        case(
            "ftp scheme",
            r#"{"url":"ftp://example.com/f","slug":"bad-1"}"#,
            400,
            "invalid_url",
        ),
        case(
            "javascript scheme",
            r#"{"url":"javascript:alert(1)","slug":"bad-2"}"#,
            400,
            "invalid_url",
        ),
        case(
            "relative url",
            r#"{"url":"/just/a/path","slug":"bad-3"}"#,
            400,
            "invalid_url",
        ),
        case(
            "no scheme",
            r#"{"url":"example.com","slug":"bad-4"}"#,
            400,
            "invalid_url",
        ),
        case(
            "no host",
            r#"{"url":"http://","slug":"bad-5"}"#,
            400,
            "invalid_url",
        ),
        case(
            "credentials",
            r#"{"url":"https://u:p@example.com/","slug":"bad-6"}"#,
            400,
            "invalid_url",
        ),
        case(
            "empty url",
            r#"{"url":"","slug":"bad-7"}"#,
            400,
            "invalid_url",
        ),
        case(
            "over-long url",
            format!(r#"{{"url":"{long_url}","slug":"bad-8"}}"#),
            400,
            "url_too_long",
        ),
        case(
            "slug with a space",
            r#"{"url":"https://example.com/","slug":"bad 9"}"#,
            400,
            "invalid_slug",
        ),
        case(
            "slug with a slash",
            r#"{"url":"https://example.com/","slug":"bad/10"}"#,
            400,
            "invalid_slug",
        ),
        case(
            "slug too short",
            r#"{"url":"https://example.com/","slug":"ab"}"#,
            400,
            "invalid_slug",
        ),
        case(
            "slug too long",
            format!(
                r#"{{"url":"https://example.com/","slug":"{}"}}"#,
                "s".repeat(65)
            ),
            400,
            "invalid_slug",
        ),
        case(
            "reserved slug healthz",
            r#"{"url":"https://example.com/","slug":"healthz"}"#,
            400,
            "reserved_slug",
        ),
        case(
            "reserved slug api",
            r#"{"url":"https://example.com/","slug":"api"}"#,
            400,
            "reserved_slug",
        ),
        case(
            "url not a string",
            r#"{"url":42,"slug":"bad-15"}"#,
            400,
            "invalid_body",
        ),
        case(
            "slug not a string",
            r#"{"url":"https://example.com/","slug":["bad-16"]}"#,
            400,
            "invalid_body",
        ),
        case("missing url", r#"{"slug":"bad-17"}"#, 400, "invalid_body"),
        case(
            "unknown field",
            r#"{"url":"https://example.com/","slug":"bad-18","slgu":"x"}"#,
            400,
            "invalid_body",
        ),
        case(
            "malformed json",
            r#"{"url":"https://example.com/","slug":"bad-19""#,
            400,
            "invalid_body",
        ),
        case("empty body", "", 400, "invalid_body"),
        case(
            "json array",
            r#"["https://example.com/"]"#,
            400,
            "invalid_body",
        ),
        Case {
            name: "text/plain",
            content_type: Some("text/plain"),
            body: r#"{"url":"https://example.com/","slug":"bad-22"}"#.into(),
            status: 415,
            code: "unsupported_media_type",
        },
        Case {
            name: "no content type",
            content_type: None,
            body: r#"{"url":"https://example.com/","slug":"bad-23"}"#.into(),
            status: 415,
            code: "unsupported_media_type",
        },
        case(
            "oversize body",
            format!(
                r#"{{"url":"https://example.com/","slug":"bad-24","pad":"{}"}}"#,
                "x".repeat(64 * 1024)
            ),
            413,
            "payload_too_large",
        ),
    ]
}

#[tokio::test]
async fn bad_create_requests_get_a_json_4xx_and_change_nothing() {
    let (_dir, store) = temp_store();
    let s = Server::start_ready(&store, &[]).await;
    let c = client();
    // One good URL, so "nothing changed" also covers "nothing was overwritten or removed".
    create_ok(&c, &s, "https://kept.example/", Some("kept")).await;

    for case in cases() {
        let mut req = c.post(s.url("/api/v1/urls")).body(case.body.clone());
        if let Some(ct) = case.content_type {
            req = req.header("content-type", ct);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), case.status, "{}", case.name);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{}",
            case.name
        );
        if matches!(case.status, 413 | 415) {
            // The unread body makes the connection unusable; the client must be told.
            assert_eq!(r.headers()["connection"], "close", "{}", case.name);
        }
        let body: Value = r
            .json()
            .await
            .unwrap_or_else(|e| panic!("{}: body is not JSON: {e}", case.name));
        assert_eq!(body["error"]["code"], case.code, "{}: {body}", case.name);
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}: {body}",
            case.name
        );
    }

    let m = metrics(&c, &s).await;
    assert_eq!(
        metric_value(&m, "shortener_urls"),
        Some(1.0),
        "only the good URL is stored"
    );
    for n in 1..=24 {
        assert_eq!(
            resolve(&c, &s, &format!("bad-{n}")).await.0,
            404,
            "bad-{n} was created"
        );
    }
    assert_eq!(
        resolve(&c, &s, "kept").await,
        (308, Some("https://kept.example/".to_owned()))
    );
}

#[tokio::test]
async fn unknown_slugs_routes_and_methods_answer_json() {
    let (_dir, store) = temp_store();
    let s = Server::start_ready(&store, &[]).await;
    let c = client();
    let long_slug = "x".repeat(100);
    let checks: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (c.get(s.url("/no-such-slug")), 404, "not_found"),
        (c.get(s.url(&format!("/{long_slug}"))), 404, "not_found"),
        (c.get(s.url("/api/v1/urls/no-such-slug")), 404, "not_found"),
        (
            c.delete(s.url("/api/v1/urls/no-such-slug")),
            404,
            "not_found",
        ),
        (c.get(s.url("/")), 404, "no_route"),
        (c.get(s.url("/a/b/c")), 404, "no_route"),
        (c.put(s.url("/api/v1/urls")), 405, "method_not_allowed"),
        (c.get(s.url("/api/v1/urls")), 405, "method_not_allowed"),
        (c.post(s.url("/some-slug")), 405, "method_not_allowed"),
    ];
    for (req, status, code) in checks {
        let r = req.send().await.unwrap();
        let what = format!("{} {}", r.status(), r.url());
        assert_eq!(r.status().as_u16(), status, "{what}");
        let body: Value = r.json().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(body["error"]["code"], code, "{what}");
    }
}
