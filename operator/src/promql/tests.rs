use super::*;

fn q(name: &str, min: Option<f64>, max: Option<f64>) -> PromQuery {
    PromQuery {
        name: name.into(),
        query: "vector(0)".into(),
        min,
        max,
    }
}

const VARS: Vars<'static> = Vars {
    namespace: "shop",
    release: "web",
    revision: "7d9f8c",
};

#[test]
fn placeholders_are_filled_in_and_escaped() {
    let cases: [(&str, Vars<'_>, Result<&str, &str>); 6] = [
        (
            r#"sum(rate(x{namespace="{{namespace}}",release="{{release}}",revision="{{revision}}"}[1m]))"#,
            VARS,
            Ok(r#"sum(rate(x{namespace="shop",release="web",revision="7d9f8c"}[1m]))"#),
        ),
        ("vector(1)", VARS, Ok("vector(1)")),
        ("{{revision}}{{revision}}", VARS, Ok("7d9f8c7d9f8c")),
        // Values come from the cluster, but a quote or backslash still cannot end the literal.
        (
            r#"x{a="{{release}}"}"#,
            Vars {
                release: "a\"} or vector(1) or x{b=\"\\",
                ..VARS
            },
            Ok(r#"x{a="a\"} or vector(1) or x{b=\"\\"}"#),
        ),
        (
            "x{a=\"{{pod}}\"}",
            VARS,
            Err("unknown placeholder {{pod}} in query"),
        ),
        ("x{a=\"{{release\"}", VARS, Err("unclosed {{ in query")),
    ];
    for (query, vars, want) in cases {
        assert_eq!(
            render(query, &vars).as_deref(),
            want.map_err(str::to_string).as_deref(),
            "{query}"
        );
    }
    assert_eq!(escape("a'b`c\nd"), "a\\'b\\`c\\nd");
}

#[test]
fn an_answer_must_be_one_number() {
    let many = format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
        [r#"{"metric":{},"value":[1,"1"]}"#; 3].join(",")
    );
    let cases: [(&str, Result<f64, &str>); 12] = [
        (
            r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000.1,"0.25"]}}"#,
            Ok(0.25),
        ),
        (
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"job":"x"},"value":[1700000000,"3"]}]}}"#,
            Ok(3.0),
        ),
        (
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"+Inf"]}]}}"#,
            Ok(f64::INFINITY),
        ),
        (
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"-Inf"]}]}}"#,
            Ok(f64::NEG_INFINITY),
        ),
        (
            r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
            Err("no data (empty result)"),
        ),
        (
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#,
            Err("no data (NaN, e.g. 0/0 without traffic)"),
        ),
        (
            &many,
            Err("3 series; the query must return one (aggregate it with sum, max...)"),
        ),
        (
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
            Err("a matrix; the query must return one number"),
        ),
        (
            r#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#,
            Err("Prometheus answered error: parse error at char 5"),
        ),
        (
            r#"{"status":"success","data":{"resultType":"scalar","result":[1,"lots"]}}"#,
            Err("value \"lots\" is not a number"),
        ),
        (
            r#"{"status":"success","data":{"resultType":"scalar","result":[1]}}"#,
            Err("malformed sample"),
        ),
        ("<html>proxy error</html>", Err("not a Prometheus answer")),
    ];
    for (body, want) in cases {
        match (parse(body.as_bytes()), want) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{body}"),
            (Err(got), Err(want)) => assert!(got.starts_with(want), "{body}: {got}"),
            (got, want) => panic!("{body}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn bounds_decide_the_interval() {
    let queries = [q("errors", None, Some(0.05)), q("rps", Some(1.0), None)];
    let none = || Err("no data (empty result)".to_string());
    // (errors, rps, verdict kind)
    type Answer = Result<f64, String>;
    let cases: [(Answer, Answer, &str); 9] = [
        (Ok(0.0), Ok(5.0), "passed"),
        (Ok(0.05), Ok(1.0), "passed"), // bounds are inclusive
        (Ok(0.06), Ok(5.0), "failed"),
        (Ok(0.0), Ok(0.5), "failed"),
        (Ok(f64::INFINITY), Ok(5.0), "failed"),
        (Ok(0.0), Ok(f64::NEG_INFINITY), "failed"),
        (none(), Ok(5.0), "no data"),
        // An out-of-bounds value fails the interval even if another query had no data.
        (Ok(0.9), none(), "failed"),
        (none(), none(), "no data"),
    ];
    for (errors, rps, want) in cases {
        let verdict = judge(&queries, &[errors.clone(), rps.clone()]);
        let kind = match &verdict {
            Verdict::Passed(_) => "passed",
            Verdict::Failed(_) => "failed",
            Verdict::NoData(_) => "no data",
        };
        assert_eq!(kind, want, "{errors:?} {rps:?}: {verdict:?}");
    }
    assert_eq!(
        judge(&queries, &[Ok(0.5), Ok(0.0)]),
        Verdict::Failed(
            "query errors = 0.5 outside (max 0.05); query rps = 0 outside (min 1)".into()
        )
    );
    assert_eq!(
        judge(&[q("lat", Some(0.0), Some(0.3))], &[Ok(0.1)]),
        Verdict::Passed("query lat = 0.1 (0..0.3)".into())
    );
    // Fewer results than queries (never by construction) is not a pass.
    assert!(matches!(judge(&queries, &[Ok(0.0)]), Verdict::NoData(_)));
}

#[test]
fn the_status_message_stays_bounded() {
    let long = "x".repeat(5000);
    let verdict = judge(&[q("a", None, Some(1.0))], &[Err(long)]);
    assert!(verdict.message().chars().count() <= MAX_SUMMARY_CHARS);
}

/// A one-shot HTTP server on loopback answering `body`; returns its address and the request
/// it received.
async fn serve_once(body: String) -> (String, tokio::task::JoinHandle<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 8192];
        let n = conn.read(&mut buf).await.unwrap();
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        // The client may stop reading once it has seen enough.
        let _ = conn.write_all(body.as_bytes()).await;
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    (addr, task)
}

#[tokio::test]
async fn queries_go_to_the_instant_api_with_the_token_and_huge_answers_are_refused() {
    // The binary installs ring as the process default before it builds clients.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = crate::probes::client().unwrap();
    let ok = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"0.5"]}}"#;
    let (addr, request) = serve_once(ok.to_string()).await;
    let got = instant_query(
        &client,
        &format!("{addr}/"),
        Some("s3cret-token"),
        "up{a=\"b c\"}",
    )
    .await;
    assert_eq!(got, Ok(0.5));
    let request = request.await.unwrap();
    let first = request.lines().next().unwrap();
    assert_eq!(
        first,
        "GET /api/v1/query?query=up%7Ba%3D%22b+c%22%7D&timeout=3s HTTP/1.1"
    );
    assert!(
        request
            .to_ascii_lowercase()
            .contains("authorization: bearer s3cret-token")
    );

    let huge = format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
        [r#"{"metric":{"pod":"p"},"value":[1,"1"]}"#; 5000].join(",")
    );
    assert!(huge.len() > MAX_BODY_BYTES);
    let (addr, _request) = serve_once(huge).await;
    let got = instant_query(&client, &addr, None, "x").await;
    assert!(
        got.as_ref()
            .is_err_and(|e| e.contains("larger than 64 KiB")),
        "{got:?}"
    );
}
