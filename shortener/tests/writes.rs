//! Who may change links: tokens, the anonymous opt-out, write rate limits; and what stays
//! public. Plus the answers a client cannot steer: `short_url`'s host, `HEAD` hits, and the
//! redirect cache's consistency with deletes.
// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use common::{
    Server, TOKEN, anonymous_client, client, create, create_ok, info, resolve, run_to_exit,
    temp_store,
};
use serde_json::{Value, json};

async fn post(
    c: &reqwest::Client,
    s: &Server,
    auth: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut req = c.post(s.url("/api/v1/urls")).json(&body);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    req.send().await.unwrap()
}

async fn error_code(r: reqwest::Response) -> String {
    let body: Value = r.json().await.unwrap();
    body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn creates_and_deletes_need_a_token_redirects_and_reads_do_not() {
    let (_dir, store) = temp_store();
    let second = "second-token-for-rotation-42";
    let s = Server::start_ready(
        &store,
        &[
            ("SHORTENER_API_TOKENS", &format!("{TOKEN},{second}")),
            ("RUST_LOG", "debug"),
        ],
    )
    .await;
    let anon = anonymous_client();

    // No credential: 401, the JSON error, the challenge, and nothing stored.
    let r = post(
        &anon,
        &s,
        None,
        json!({"url": "https://evil.example/", "slug": "promo"}),
    )
    .await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        r#"Bearer realm="shortener""#
    );
    assert_eq!(error_code(r).await, "unauthorized");
    // A wrong one, or another scheme.
    for auth in [
        "Bearer not-the-token-0123456789".to_owned(),
        format!("Bearer {TOKEN}x"),
        format!("Basic {TOKEN}"),
    ] {
        let r = post(
            &anon,
            &s,
            Some(&auth),
            json!({"url": "https://evil.example/", "slug": "promo"}),
        )
        .await;
        assert_eq!(r.status(), 401, "{auth}");
        assert_eq!(error_code(r).await, "unauthorized");
    }
    assert_eq!(info(&anon, &s, "promo").await.0, 404);

    // Either configured token creates (rotation).
    for (slug, token) in [("promo", TOKEN), ("promo2", second)] {
        let r = post(
            &anon,
            &s,
            Some(&format!("Bearer {token}")),
            json!({"url": "https://shop.example/sale", "slug": slug}),
        )
        .await;
        assert_eq!(r.status(), 201);
    }

    // Redirects and reads are public.
    assert_eq!(
        resolve(&anon, &s, "promo").await,
        (308, Some("https://shop.example/sale".to_owned()))
    );
    assert_eq!(info(&anon, &s, "promo").await.0, 200);

    // Deleting (the first step of re-pointing a link) needs the token too.
    let r = anon
        .delete(s.url("/api/v1/urls/promo"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(resolve(&anon, &s, "promo").await.0, 308);
    let r = client()
        .delete(s.url("/api/v1/urls/promo"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(resolve(&anon, &s, "promo").await.0, 404);

    // Not even a DEBUG log shows a token.
    let logs = s.logs().join("\n");
    assert!(!logs.contains(TOKEN) && !logs.contains(second), "{logs}");
}

#[tokio::test]
async fn without_tokens_the_service_refuses_to_start_unless_told_to_allow_anonymous_writes() {
    let (_dir, store) = temp_store();
    let (status, out) = run_to_exit(&store, &[("SHORTENER_API_TOKENS", "")]);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.contains("ERROR")
            && out.contains("SHORTENER_API_TOKENS")
            && out.contains("--allow-anonymous-writes"),
        "{out}"
    );

    // A weak token stops it too, without echoing the token.
    let (status, out) = run_to_exit(&store, &[("SHORTENER_API_TOKENS", "hunter2")]);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.contains("too short") && !out.contains("hunter2"),
        "{out}"
    );

    let s = Server::start_ready(
        &store,
        &[
            ("SHORTENER_API_TOKENS", ""),
            ("SHORTENER_ALLOW_ANONYMOUS_WRITES", "true"),
        ],
    )
    .await;
    assert!(
        s.logs()
            .iter()
            .any(|l| l.contains("WARN") && l.contains("creates and deletes need no token")),
        "{}",
        s.logs().join("\n")
    );
    create_ok(&anonymous_client(), &s, "https://example.com/open", None).await;
}

#[tokio::test]
async fn writes_over_the_rate_limit_get_429_with_retry_after_reads_do_not() {
    let (_dir, store) = temp_store();
    let s = Server::start_ready(
        &store,
        &[
            ("SHORTENER_WRITE_RATE_LIMIT", "1"),
            ("SHORTENER_WRITE_BURST", "3"),
        ],
    )
    .await;
    let c = client();
    let slug = create_ok(&c, &s, "https://example.com/1", None).await;
    create_ok(&c, &s, "https://example.com/2", None).await;
    // Guesses without a token use up the same allowance, so tokens cannot be brute-forced.
    let r = post(
        &anonymous_client(),
        &s,
        None,
        json!({"url": "https://example.com/x"}),
    )
    .await;
    assert_eq!(r.status(), 401);
    let r = post(&c, &s, None, json!({"url": "https://example.com/3"})).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After: {retry}");
    assert_eq!(error_code(r).await, "rate_limited");
    let r = c
        .delete(s.url(&format!("/api/v1/urls/{slug}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    // Redirects and reads are not limited.
    for _ in 0..20 {
        assert_eq!(resolve(&c, &s, &slug).await.0, 308);
        assert_eq!(info(&c, &s, &slug).await.0, 200);
    }
}

#[tokio::test]
async fn short_url_never_takes_an_unlisted_host() {
    let (_dir, store) = temp_store();
    let s = Server::start_ready(&store, &[("SHORTENER_ALLOWED_HOSTS", "127.0.0.1,sho.rt")]).await;
    let c = client();
    let port = s.base.rsplit(':').next().unwrap().to_owned();
    let short_url = |host: &'static str, slug: &'static str| {
        let c = c.clone();
        let url = s.url("/api/v1/urls");
        async move {
            let r = c
                .post(url)
                .header("host", host)
                .json(&json!({"url": "https://example.com/", "slug": slug}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            let body: Value = r.json().await.unwrap();
            body["short_url"].as_str().unwrap().to_owned()
        }
    };
    assert_eq!(short_url("sho.rt", "one").await, "http://sho.rt/one");
    // Not listed: the fallback, never the client's host.
    assert_eq!(
        short_url("evil.example", "two").await,
        format!("http://localhost:{port}/two")
    );
    assert_eq!(
        short_url("sho.rt.evil.example", "three").await,
        format!("http://localhost:{port}/three")
    );
    // The info route builds it the same way.
    let r = c
        .get(s.url("/api/v1/urls/one"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["short_url"], format!("http://localhost:{port}/one"));
}

#[tokio::test]
async fn head_answers_like_get_but_is_not_a_hit() {
    let (_dir, store) = temp_store();
    let s = Server::start_ready(&store, &[]).await;
    let c = client();
    let slug = create_ok(&c, &s, "https://example.com/head", None).await;
    for _ in 0..3 {
        let r = c.head(s.url(&format!("/{slug}"))).send().await.unwrap();
        assert_eq!(r.status(), 308);
        assert_eq!(r.headers()["location"], "https://example.com/head");
    }
    assert_eq!(
        c.head(s.url("/missing")).send().await.unwrap().status(),
        404
    );
    assert_eq!(info(&c, &s, &slug).await.1["hits"], 0);
    assert_eq!(resolve(&c, &s, &slug).await.0, 308);
    assert_eq!(info(&c, &s, &slug).await.1["hits"], 1);
}

#[tokio::test]
async fn a_delete_takes_effect_at_once_on_its_replica_and_within_the_ttl_on_others() {
    let (_dir, store) = temp_store();
    let a = Server::start_ready(&store, &[]).await;
    // A long TTL: only the delete's own invalidation can make this replica forget.
    let b = Server::start_ready(&store, &[("SHORTENER_REDIRECT_CACHE_TTL", "1h")]).await;
    let c = client();
    let slug = create_ok(&c, &a, "https://example.com/cached", None).await;
    assert_eq!(resolve(&c, &b, &slug).await.0, 308);
    assert_eq!(resolve(&c, &a, &slug).await.0, 308);
    let r = c
        .delete(b.url(&format!("/api/v1/urls/{slug}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(resolve(&c, &b, &slug).await.0, 404);

    // Replica `a` (TTL 5 s by default) had it cached too; it lets go within the TTL.
    common::eventually("the other replica sees the delete", || async {
        resolve(&c, &a, &slug).await.0 == 404
    })
    .await;

    // A slug made again (pointing elsewhere) is served with its new URL by the replica that
    // made it at once; a delete never leaves a negative entry behind.
    let (status, _) = create(
        &c,
        &b,
        json!({"url": "https://example.com/new-target", "slug": slug}),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        resolve(&c, &b, &slug).await,
        (308, Some("https://example.com/new-target".to_owned()))
    );
}
