//! Each `SHORTENER_FAULT` mode does what shortener/README.md promises.
// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Server, client, create, eventually, resolve, run_to_exit, temp_store};
use serde_json::{Value, json};

#[tokio::test]
async fn shorten_500_is_the_incident_healthy_probes_failing_requests_logged_traceback() {
    let (_dir, store) = temp_store();
    // A URL stored by the previous good release, which the broken one can no longer resolve.
    {
        let good = Server::start_ready(&store, &[]).await;
        common::create_ok(&client(), &good, "https://example.com/", Some("old")).await;
    }
    let s = Server::start_ready(&store, &[("SHORTENER_FAULT", "shorten-500")]).await;
    let c = client();
    assert_eq!(c.get(s.url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(c.get(s.url("/readyz")).send().await.unwrap().status(), 200);

    let (status, body) = create(
        &c,
        &s,
        json!({ "url": "https://example.com/x", "slug": "new" }),
    )
    .await;
    assert_eq!(status, 500);
    assert_eq!(
        body,
        json!({ "error": { "code": "internal", "message": "internal server error" } })
    );
    assert_eq!(resolve(&c, &s, "old").await.0, 500);
    assert_eq!(resolve(&c, &s, "new").await.0, 500);

    // Logs reach stdout through a writer thread: wait for all three failures' tracebacks.
    eventually("the tracebacks are logged", || async {
        s.logs()
            .iter()
            .filter(|l| l.starts_with("TypeError:"))
            .count()
            == 3
    })
    .await;
    let logs = s.logs();
    let error_line = logs
        .iter()
        .position(|l| l.contains("ERROR") && l.contains("Exception on /api/v1/urls [POST]"))
        .unwrap_or_else(|| panic!("no ERROR line:\n{}", logs.join("\n")));
    // The context lines follow the ERROR line unprefixed, like a real traceback.
    assert_eq!(logs[error_line + 1], "Traceback (most recent call last):");
    assert!(logs[error_line + 2].starts_with("  File \""));
    assert!(
        logs.iter()
            .any(|l| l.contains("ERROR") && l.contains("Exception on /{slug} [GET]"))
    );
    // The request line of every 5xx is logged whatever the level (WARN, after the detail);
    // other request lines are DEBUG, so the probes' are not in a default log.
    eventually("the 500's request line is logged", || async {
        s.logs()
            .iter()
            .any(|l| l.contains(" WARN ") && l.contains("POST /api/v1/urls 500"))
    })
    .await;
    assert!(!s.logs().iter().any(|l| l.contains("GET /readyz 200")));
}

#[tokio::test]
async fn crash_on_start_exits_1_with_an_error() {
    let (_dir, store) = temp_store();
    let (status, out) = run_to_exit(&store, &[("SHORTENER_FAULT", "crash-on-start")]);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.contains("ERROR") && out.contains("crash-on-start"),
        "{out}"
    );
}

#[tokio::test]
async fn unknown_fault_or_bad_duration_refuses_to_start() {
    let (_dir, store) = temp_store();
    for (value, expect) in [
        ("shorten-404", "unknown fault \"shorten-404\""),
        ("latency=soon", "invalid duration \"soon\""),
    ] {
        let (status, out) = run_to_exit(&store, &[("SHORTENER_FAULT", value)]);
        assert_eq!(status.code(), Some(1), "{value}: {out}");
        assert!(out.contains(expect), "{value}: {out}");
        assert!(!out.contains("listening"), "{value}: {out}");
    }
}

#[tokio::test]
async fn never_ready_keeps_readyz_503_while_alive() {
    let (_dir, store) = temp_store();
    let s = Server::start(&store, &[("SHORTENER_FAULT", "never-ready")]);
    let c = client();
    assert_eq!(c.get(s.url("/healthz")).send().await.unwrap().status(), 200);
    let r = c.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_ready");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("never-ready")
    );
}

#[tokio::test]
async fn slow_start_is_unready_then_ready() {
    let (_dir, store) = temp_store();
    let started = Instant::now();
    let s = Server::start(&store, &[("SHORTENER_FAULT", "slow-start=2s")]);
    let c = client();
    let first = c.get(s.url("/readyz")).send().await.unwrap().status();
    // Only meaningful while still inside the window; the slow-start lower bound is below.
    if started.elapsed() < Duration::from_millis(1500) {
        assert_eq!(first, 503);
    }
    s.wait_ready().await;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "ready before the slow start ended"
    );
}

#[tokio::test]
async fn listen_after_binds_the_port_only_after_the_delay() {
    let (_dir, store) = temp_store();
    let started = Instant::now();
    // `start` returns once the `listening` line is logged, i.e. once the port is bound.
    let s = Server::start(&store, &[("SHORTENER_FAULT", "listen-after=2s")]);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "listening after {:?}",
        started.elapsed()
    );
    let logs = s.logs().join("\n");
    let waiting = logs.find("not listening yet").expect(&logs);
    let listening = logs.find("listening addr=").expect(&logs);
    assert!(waiting < listening, "{logs}");
    // Once listening, nothing else is wrong with it.
    s.wait_ready().await;
    assert_eq!(
        client()
            .get(s.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn sigterm_while_waiting_to_listen_ends_the_process_as_the_kubelet_sees_it() {
    use std::os::unix::process::ExitStatusExt;
    let (_dir, store) = temp_store();
    let (mut child, logs) = common::spawn_bare(&store, &[("SHORTENER_FAULT", "listen-after=60s")]);
    eventually("the not-listening line", || {
        let seen = logs
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("not listening yet"));
        async move { seen }
    })
    .await;
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let status = common::wait_exit(&mut child);
    // Killed by the signal (a runtime reports exit code 143), not a clean exit.
    assert_eq!(status.signal(), Some(15), "{status}");
}

#[tokio::test]
async fn listen_after_beyond_its_bound_refuses_to_start() {
    let (_dir, store) = temp_store();
    let (status, out) = run_to_exit(&store, &[("SHORTENER_FAULT", "listen-after=1h")]);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.contains("listen-after=1h: at most 10m allowed"),
        "{out}"
    );
}

#[tokio::test]
async fn an_http_worker_count_out_of_range_refuses_to_start() {
    let (_dir, store) = temp_store();
    for bad in ["0", "257", "many"] {
        let (status, out) = run_to_exit(&store, &[("SHORTENER_HTTP_WORKERS", bad)]);
        assert_eq!(status.code(), Some(2), "{bad}: {out}");
        assert!(out.contains("--http-workers"), "{bad}: {out}");
    }
}

#[tokio::test]
async fn errors_after_works_then_fails() {
    let (_dir, store) = temp_store();
    let started = Instant::now();
    let s = Server::start_ready(&store, &[("SHORTENER_FAULT", "errors-after=2s")]).await;
    let c = client();
    let (status, _) = create(
        &c,
        &s,
        json!({ "url": "https://example.com/", "slug": "early" }),
    )
    .await;
    if started.elapsed() < Duration::from_millis(1500) {
        assert_eq!(status, 201);
        assert_eq!(resolve(&c, &s, "early").await.0, 308);
    }
    eventually("requests start failing", || async {
        resolve(&c, &s, "early").await.0 == 500
    })
    .await;
    assert!(started.elapsed() >= Duration::from_secs(2));
    let (status, _) = create(&c, &s, json!({ "url": "https://example.com/" })).await;
    assert_eq!(status, 500);
    // Probes stay green: this is the failure only traffic analysis catches.
    assert_eq!(c.get(s.url("/readyz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn latency_delays_api_calls_but_not_probes() {
    let (_dir, store) = temp_store();
    let s = Server::start_ready(&store, &[("SHORTENER_FAULT", "latency=300ms")]).await;
    let c = client();
    let t = Instant::now();
    let (status, _) = create(&c, &s, json!({ "url": "https://example.com/" })).await;
    assert_eq!(status, 201);
    assert!(t.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn requests_over_the_timeout_get_a_json_503() {
    let (_dir, store) = temp_store();
    let s = Server::start_ready(
        &store,
        &[
            ("SHORTENER_FAULT", "latency=5s"),
            ("SHORTENER_REQUEST_TIMEOUT", "200ms"),
        ],
    )
    .await;
    let (status, body) = create(
        &client(),
        &s,
        json!({ "url": "https://example.com/", "slug": "late" }),
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "timeout");
    // The timed-out create was abandoned before it reached the store.
    let m = common::metrics(&client(), &s).await;
    assert_eq!(common::metric_value(&m, "shortener_urls"), Some(0.0));
}
