//! What the store promises: nothing acknowledged is lost to a restart or a SIGKILL, several
//! processes share one file, and SIGTERM finishes the requests in flight.
// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use common::{
    Server, client, create_ok, eventually, info, metric_value, metrics, resolve, temp_store,
};
use serde_json::Value;
use tokio::task::JoinSet;

#[tokio::test]
async fn urls_and_hits_survive_a_graceful_restart() {
    let (_dir, store) = temp_store();
    let c = client();
    let mut s = Server::start_ready(&store, &[]).await;
    let slug = create_ok(&c, &s, "https://example.com/restart", None).await;
    for _ in 0..3 {
        assert_eq!(resolve(&c, &s, &slug).await.0, 308);
    }
    s.sigterm();
    assert!(s.wait_exit().success(), "SIGTERM should be a clean exit");

    let s = Server::start_ready(&store, &[]).await;
    assert_eq!(
        resolve(&c, &s, &slug).await,
        (308, Some("https://example.com/restart".to_owned()))
    );
    // 3 from before the restart (saved at shutdown) + the one just now.
    assert_eq!(info(&c, &s, &slug).await.1["hits"], 4);
}

#[tokio::test]
async fn sigkill_right_after_201_loses_nothing() {
    let (_dir, store) = temp_store();
    let c = client();
    let mut s = Server::start_ready(&store, &[]).await;
    let mut created = Vec::new();
    for i in 0..20 {
        let slug = create_ok(&c, &s, &format!("https://example.com/k/{i}"), None).await;
        created.push((slug, format!("https://example.com/k/{i}")));
    }
    s.sigkill();

    let s = Server::start_ready(&store, &[]).await;
    for (slug, url) in &created {
        assert_eq!(
            resolve(&c, &s, slug).await,
            (308, Some(url.clone())),
            "{slug}"
        );
    }
}

/// Blue-green starts all replicas of a first release together on a store file that does not
/// exist yet: every one must come up (SQLite's "database is locked" while another process
/// creates the file used to crash some of them on start).
#[tokio::test]
async fn replicas_starting_together_on_a_new_store_all_come_up() {
    for _round in 0..5 {
        let (_dir, store) = temp_store();
        for server in &Server::start_together(&store, 4) {
            server.wait_ready().await;
        }
    }
}

#[tokio::test]
async fn two_processes_share_one_store() {
    let (_dir, store) = temp_store();
    let c = client();
    let a = Server::start_ready(&store, &[]).await;
    let b = Server::start_ready(&store, &[]).await;

    let slug = create_ok(&c, &a, "https://example.com/shared", None).await;
    assert_eq!(
        resolve(&c, &b, &slug).await.0,
        308,
        "created on A, resolved on B"
    );
    assert_eq!(resolve(&c, &b, &slug).await.0, 308);

    // B's hits reach the shared file within its flush interval.
    eventually("A sees B's hits", || async {
        info(&c, &a, &slug).await.1["hits"] == 2
    })
    .await;

    // Concurrent writers on both processes: every 201 is visible from both.
    let mut tasks = JoinSet::new();
    for i in 0..40 {
        let (c, base) = (
            c.clone(),
            if i % 2 == 0 {
                a.base.clone()
            } else {
                b.base.clone()
            },
        );
        tasks.spawn(async move {
            let r = c
                .post(format!("{base}/api/v1/urls"))
                .json(&serde_json::json!({ "url": format!("https://example.com/c/{i}") }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            r.json::<Value>().await.unwrap()["slug"]
                .as_str()
                .unwrap()
                .to_owned()
        });
    }
    let slugs = tasks.join_all().await;
    for slug in &slugs {
        assert_eq!(resolve(&c, &a, slug).await.0, 308);
        assert_eq!(resolve(&c, &b, slug).await.0, 308);
    }
    assert_eq!(
        metric_value(&metrics(&c, &b).await, "shortener_urls"),
        Some(41.0)
    );

    let r = c
        .delete(b.url(&format!("/api/v1/urls/{slug}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        resolve(&c, &a, &slug).await.0,
        404,
        "deleted on B, gone on A"
    );
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests() {
    let (_dir, store) = temp_store();
    let c = client();
    // The added latency keeps the create in flight long enough to signal during it.
    let mut s = Server::start_ready(&store, &[("SHORTENER_FAULT", "latency=1s")]).await;
    let create_url = s.url("/api/v1/urls");
    let in_flight = {
        let c = c.clone();
        tokio::spawn(async move {
            c.post(create_url)
                .json(&serde_json::json!({ "url": "https://example.com/drain", "slug": "drain" }))
                .send()
                .await
        })
    };
    eventually("the create is in flight", || async {
        metric_value(
            &metrics(&c, &s).await,
            r#"shortener_http_requests_in_flight{route="/api/v1/urls"}"#,
        ) == Some(1.0)
    })
    .await;
    s.sigterm();

    let r = in_flight
        .await
        .unwrap()
        .expect("the in-flight request gets an answer");
    assert_eq!(r.status(), 201);
    assert!(s.wait_exit().success());
    assert!(s.logs().iter().any(|l| l.contains("draining")));

    let s = Server::start_ready(&store, &[]).await;
    assert_eq!(
        resolve(&c, &s, "drain").await,
        (308, Some("https://example.com/drain".to_owned()))
    );
}

/// With `SHORTENER_SHUTDOWN_DELAY`, SIGTERM first makes the pod unready (so Kubernetes takes
/// it out of the Service) while it still answers users, and only then stops: a revision
/// scaled down right after losing the traffic drops no request that was routed to it late.
#[tokio::test]
async fn sigterm_with_a_shutdown_delay_stays_unready_but_serving_then_exits() {
    let (_dir, store) = temp_store();
    let c = client();
    let mut s = Server::start_ready(&store, &[("SHORTENER_SHUTDOWN_DELAY", "4s")]).await;
    s.sigterm();
    eventually("/readyz answers 503", || async {
        c.get(s.url("/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 503)
    })
    .await;
    let slug = create_ok(&c, &s, "https://example.com/late", None).await;
    assert_eq!(resolve(&c, &s, &slug).await.0, 308, "still serving users");
    assert!(s.wait_exit().success(), "then a clean exit");
    assert!(s.logs().iter().any(|l| l.contains("not ready; serving on")));

    let s = Server::start_ready(&store, &[]).await;
    assert_eq!(
        resolve(&c, &s, &slug).await.0,
        308,
        "the late create was saved"
    );
}
