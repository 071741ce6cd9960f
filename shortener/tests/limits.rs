//! Slow and greedy clients, as raw TCP on loopback: each limit closes or answers them.
//!
//! Waits are reads with a deadline (the server's close or answer is the event); the only
//! sleeps are the slow client being slow.
// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{DEADLINE, Server, TOKEN, client, metric_value, metrics, temp_store};

fn connect(s: &Server) -> TcpStream {
    let addr = s.base.strip_prefix("http://").unwrap();
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream
}

/// Reads until the server closes the connection; panics if it has not by the deadline.
/// Returns what was received before the close.
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let deadline = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        assert!(Instant::now() < deadline, "connection still open");
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // A reset is a close too (the server had unread input).
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return got,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("connection still open after {DEADLINE:?}")
            }
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Reads one response (head plus `content-length` body) off a kept-alive connection.
fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                let body = String::from_utf8_lossy(&got[end + 4..end + 4 + length]).to_string();
                return (status, body);
            }
        }
        let n = stream
            .read(&mut buf)
            .expect("a response before the deadline");
        assert!(
            n > 0,
            "closed before a full response: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
}

#[tokio::test]
async fn half_sent_headers_are_closed_even_when_they_trickle() {
    let (_dir, store) = temp_store();
    let s = Server::start_ready(
        &store,
        &[
            ("SHORTENER_HEADER_READ_TIMEOUT", "500ms"),
            ("SHORTENER_IDLE_TIMEOUT", "1h"),
        ],
    )
    .await;

    // Stops mid-head.
    let mut stalled = connect(&s);
    stalled
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    let got = read_until_closed(&mut stalled);
    assert!(got.is_empty() || got.starts_with(b"HTTP/1.1 4"), "{got:?}");

    // Keeps sending a byte every 100 ms, for ever if let: closed all the same.
    let mut trickle = connect(&s);
    trickle
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    trickle
        .write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        .unwrap();
    let mut closed = false;
    for _ in 0..200 {
        if trickle.write_all(b"a").is_err() {
            closed = true;
            break;
        }
        // The slow client's pace; also notices the close.
        let mut buf = [0u8; 256];
        match trickle.read(&mut buf) {
            Ok(_) => {
                closed = true;
                break;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "a head trickling for 20 s was never cut off");

    // A client that sends its request promptly is served.
    let mut ok = connect(&s);
    ok.write_all(get("/healthz").as_bytes()).unwrap();
    assert_eq!(read_response(&mut ok).0, 200);
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let (_dir, store) = temp_store();
    let s = Server::start_ready(
        &store,
        &[
            ("SHORTENER_HEADER_READ_TIMEOUT", "1h"),
            ("SHORTENER_IDLE_TIMEOUT", "500ms"),
        ],
    )
    .await;
    let mut conn = connect(&s);
    // Two requests on the connection: keep-alive works...
    for _ in 0..2 {
        conn.write_all(get("/healthz").as_bytes()).unwrap();
        assert_eq!(read_response(&mut conn).0, 200);
    }
    // ...and once it is idle, the server lets go (the head timeout is an hour: not that).
    assert!(read_until_closed(&mut conn).is_empty());
}

#[tokio::test]
async fn a_slow_body_is_answered_408_and_counted_as_a_client_error() {
    let (_dir, store) = temp_store();
    // The request timeout is shorter than the body's: a request that runs out of time while
    // its body is still arriving is still the client's fault.
    for (body_timeout, request_timeout) in [("500ms", "1h"), ("1h", "500ms")] {
        let s = Server::start_ready(
            &store,
            &[
                ("SHORTENER_BODY_READ_TIMEOUT", body_timeout),
                ("SHORTENER_REQUEST_TIMEOUT", request_timeout),
            ],
        )
        .await;
        let body = br#"{"url":"https://example.com/slow-body-test-payload","slug":"slowbody"}"#;
        let mut conn = connect(&s);
        conn.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        write!(
            conn,
            "POST /api/v1/urls HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        // A byte every 100 ms: steady, but the whole body would take 7 s.
        let mut answered = false;
        for byte in body.iter().take(body.len() - 1) {
            conn.write_all(&[*byte]).unwrap();
            let mut peek = [0u8; 1];
            match conn.peek(&mut peek) {
                Ok(n) if n > 0 => {
                    answered = true;
                    break;
                }
                _ => {}
            }
        }
        assert!(answered, "no answer before the body was complete");
        conn.set_read_timeout(Some(DEADLINE)).unwrap();
        let (status, text) = read_response(&mut conn);
        assert_eq!(status, 408, "{text}");
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["error"]["code"], "body_timeout");

        let c = client();
        assert_eq!(
            common::info(&c, &s, "slowbody").await.0,
            404,
            "nothing stored"
        );
        let m = metrics(&c, &s).await;
        assert_eq!(
            metric_value(
                &m,
                r#"shortener_http_requests_total{code="408",method="POST",route="/api/v1/urls"}"#
            ),
            Some(1.0),
            "{m}"
        );
        assert!(
            !m.lines()
                .any(|l| l.starts_with("shortener_http_requests_total{code=\"5")),
            "{m}"
        );
    }
}

#[tokio::test]
async fn connections_over_the_cap_are_answered_503_and_closed() {
    let (_dir, store) = temp_store();
    // Listening is enough (no readiness poll: its pooled connection would take a slot, and
    // this test's blocking reads keep the client's runtime from ever closing it). Four HTTP
    // workers, each accepting on its own listener: the cap is the process's, whichever
    // worker the kernel hands a connection to.
    let s = Server::start(
        &store,
        &[
            ("SHORTENER_MAX_CONNECTIONS", "2"),
            ("SHORTENER_HTTP_WORKERS", "4"),
        ],
    );
    let mut held: Vec<TcpStream> = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while held.len() < 2 {
        assert!(Instant::now() < deadline, "could not open 2 connections");
        let mut conn = connect(&s);
        conn.write_all(get("/healthz").as_bytes()).unwrap();
        let (status, _) = read_response(&mut conn);
        if status == 200 {
            held.push(conn);
        }
    }

    // The third: 503 too_many_connections, then closed.
    let mut over = connect(&s);
    over.write_all(get("/healthz").as_bytes()).unwrap();
    let got = String::from_utf8_lossy(&read_until_closed(&mut over)).to_string();
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    assert!(
        got.contains("retry-after: 1") && got.contains("too_many_connections"),
        "{got}"
    );

    // One held connection closes: a new one is served again.
    drop(held.pop());
    common::eventually("a freed slot serves a new connection", || {
        let mut conn = connect(&s);
        let ok =
            conn.write_all(get("/healthz").as_bytes()).is_ok() && read_response(&mut conn).0 == 200;
        async move { ok }
    })
    .await;
    drop(held);
    let c = client();
    common::eventually("the refusal is counted", || async {
        let m = metrics(&c, &s).await;
        metric_value(&m, "shortener_connections_refused_total").is_some_and(|n| n >= 1.0)
    })
    .await;
}
