//! Property tests on the parsers that read tenant- or client-controlled input: the incident
//! log filter (pod logs), spec deserialisation and validation (the ShortenerRelease), and
//! the metrics text parser (a pod's /metrics, served by the tenant's image).
//!
//! A short run by default (`PROPTEST_CASES`, 256 unless set), so `make test` stays fast;
//! set PROPTEST_CASES=10000 for a longer search. Failures print a minimal input.

use operator::api::ShortenerReleaseSpec;
use operator::budget::parse_allowed_downtime;
use operator::incident::filter::{FilterConfig, LogFilter, Pattern, filter_bytes};
use operator::incident::level::is_quiet;
use operator::probes::parse_request_counts;
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Log lines built from pieces that exercise the filter's paths: levels in and out of
/// place, keywords in paths, JSON records, CRLF, long runs, non-UTF-8 bytes.
fn log_line() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop::sample::select(vec![
        "[2023-09-22 21:01:02]",
        "2026-11-30T11:00:00.1Z",
        "INFO",
        "ERROR",
        "WARN",
        "DEBUG",
        "web.1",
        "GET",
        "/ERROR-Exception-Traceback",
        "/health",
        "error",
        "panic",
        "Traceback (most recent call last):",
        "{\"level\":\"INFO\",\"message\":\"GET /error\"}",
        "{\"level\":\"ERROR\",\"message\":\"boom\"}",
        "level=info",
        "level=error",
        "x",
        "ß",
        "\r",
        "\u{fffd}",
    ]);
    (
        prop::collection::vec(piece, 0..8),
        prop::collection::vec(any::<u8>(), 0..3),
    )
        .prop_map(|(pieces, noise)| {
            let mut line = pieces.join(" ").into_bytes();
            line.extend(noise.into_iter().filter(|b| *b != b'\n'));
            line
        })
}

/// A log: lines, some repeated (the filter collapses consecutive identical lines).
fn log() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec((log_line(), 1usize..4), 0..120).prop_map(|runs| {
        runs.into_iter()
            .flat_map(|(line, n)| std::iter::repeat_n(line, n))
            .collect()
    })
}

fn join(lines: &[Vec<u8>], trailing_newline: bool) -> Vec<u8> {
    let mut out = lines.join(&b"\n"[..]);
    if trailing_newline && !lines.is_empty() {
        out.push(b'\n');
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Whatever the chunking of the stream, the excerpt is the same.
    #[test]
    fn filter_is_independent_of_chunking(
        lines in log(),
        trailing in any::<bool>(),
        chunk in 1usize..64,
        context in 0usize..5,
    ) {
        let input = join(&lines, trailing);
        let config = FilterConfig { context_lines: context, ..FilterConfig::default() };
        let whole = filter_bytes(&input, config.clone());
        let mut filter = LogFilter::new(config);
        for piece in input.chunks(chunk) {
            filter.push(piece);
        }
        prop_assert_eq!(filter.finish(), whole);
    }

    /// With room for everything, exactly the lines that contain a keyword and are not an
    /// informational record are marked as matches, with their own line numbers.
    #[test]
    fn filter_marks_exactly_the_error_records(lines in log(), trailing in any::<bool>()) {
        let input = join(&lines, trailing);
        let pattern = Pattern::default();
        let excerpt = filter_bytes(&input, FilterConfig {
            context_lines: 0,
            ..FilterConfig::default()
        });
        prop_assume!(excerpt.truncation.is_none());
        let mut want = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let text = line.strip_suffix(b"\r").unwrap_or(line);
            if pattern.is_match(line) && !is_quiet(text) {
                want.push(i as u64 + 1);
            }
        }
        let got: Vec<u64> = excerpt
            .lines()
            .filter(|l| l.matched)
            .flat_map(|l| l.number..l.number + l.repeats)
            .collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(excerpt.stats.lines_read, lines.len() as u64 - u64::from(!trailing && lines.last().is_some_and(Vec::is_empty)));
    }

    /// The caps hold for any input: rendered bytes and lines, and the filter's memory.
    #[test]
    fn filter_output_and_memory_are_bounded(
        lines in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..400), 0..200),
        max_lines in 1usize..50,
        max_bytes in 0usize..4096,
        max_line_bytes in 0usize..200,
        context in 0usize..200,
    ) {
        let input = join(&lines, true);
        let config = FilterConfig {
            context_lines: context,
            max_lines,
            max_bytes,
            max_line_bytes,
            pattern: Pattern::parse("e|\u{0}").expect("pattern"),
            ..FilterConfig::default()
        };
        let mut filter = LogFilter::new(config);
        let mut peak = 0;
        for piece in input.chunks(97) {
            filter.push(piece);
            peak = peak.max(filter.held_bytes());
        }
        let excerpt = filter.finish();
        let rendered = excerpt.render();
        prop_assert!(rendered.len() <= max_bytes.max(1024), "{} bytes", rendered.len());
        prop_assert!(excerpt.items.len() <= max_lines);
        let context = context.min(100);
        let line_cap = max_line_bytes.max(64);
        prop_assert!(peak <= (context + 3) * line_cap + 64 * 1024 + 8 * max_bytes.max(1024) + 4096,
            "peak {peak}");
    }

    /// Any JSON: deserialising a spec returns a value or an error, never panics; what it
    /// accepts serialises back to an equal spec.
    #[test]
    fn spec_deserialisation_is_total_and_round_trips(json in arb_json()) {
        if let Ok(spec) = serde_json::from_value::<ShortenerReleaseSpec>(json) {
            let again = serde_json::to_value(&spec).expect("serialises");
            let back: ShortenerReleaseSpec = serde_json::from_value(again).expect("round trip");
            prop_assert_eq!(back, spec);
        }
    }

    /// Specs shaped like real ones (every field family present, odd values included).
    #[test]
    fn spec_like_documents_round_trip(
        image in "[a-z]{1,8}(:[a-z0-9.]{1,6})?",
        replicas in any::<i32>(),
        port in any::<i32>(),
        rate in any::<f64>(),
        downtime in "[0-9dhms]{0,8}",
        context in any::<i64>(),
    ) {
        let json = serde_json::json!({
            "image": image,
            "replicas": replicas,
            "port": port,
            "analysis": {"maxErrorRate": if rate.is_finite() { rate } else { 0.0 }},
            "sla": {"allowedDowntimePerYear": downtime},
            "incident": {"contextLines": context, "webhook": {"secretRef": {"name": "a", "key": "b"}}},
        });
        if let Ok(spec) = serde_json::from_value::<ShortenerReleaseSpec>(json) {
            let back: ShortenerReleaseSpec =
                serde_json::from_value(serde_json::to_value(&spec).expect("serialises"))
                    .expect("round trip");
            prop_assert_eq!(back, spec);
        }
    }

    /// The downtime allowance parser: any text, an error or a value within one year.
    #[test]
    fn allowed_downtime_is_bounded(text in "\\PC{0,12}|[0-9]{1,20}[dhms]([0-9]{1,20}[dhms]){0,3}") {
        if let Ok(seconds) = parse_allowed_downtime(&text) {
            prop_assert!((0..=366 * 24 * 3600).contains(&seconds), "{text:?} -> {seconds}");
            // Canonical seconds parse back to the same value.
            prop_assert_eq!(parse_allowed_downtime(&format!("{seconds}s")), Ok(seconds));
        }
    }

    /// Any /metrics text: counts are never negative and errors never exceed requests.
    #[test]
    fn metrics_parser_is_total_and_consistent(text in metrics_text()) {
        let counts = parse_request_counts(&text);
        prop_assert!(counts.requests >= 0 && counts.errors >= 0, "{counts:?}");
        prop_assert!(counts.errors <= counts.requests, "{counts:?}");
    }

    /// Well-formed expositions: the sum is exactly the API routes' non-4xx counters.
    #[test]
    fn metrics_parser_sums_user_routes(
        series in prop::collection::vec(
            (prop::sample::select(vec!["/api/v1/urls", "/api/v1/urls/{slug}", "/{slug}", "/healthz", "/readyz", "/metrics", "unmatched"]),
             prop::sample::select(vec!["200", "308", "401", "404", "429", "500", "503"]),
             0u32..1_000_000),
            0..30),
    ) {
        let mut text = String::from("# TYPE shortener_http_requests_total counter\n");
        let (mut requests, mut errors) = (0i64, 0i64);
        for (route, code, n) in &series {
            text.push_str(&format!(
                "shortener_http_requests_total{{method=\"GET\",route=\"{route}\",code=\"{code}\"}} {n}\n"
            ));
            if !matches!(*route, "/healthz" | "/readyz" | "/metrics" | "unmatched")
                && !code.starts_with('4')
            {
                requests += i64::from(*n);
                if code.starts_with('5') {
                    errors += i64::from(*n);
                }
            }
        }
        let counts = parse_request_counts(&text);
        prop_assert_eq!((counts.requests, counts.errors), (requests, errors));
    }
}

fn metrics_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        "\\PC{0,60}",
        (
            "[a-z=\",/{}\\\\]{0,30}",
            prop_oneof![
                Just("NaN".to_string()),
                Just("+Inf".to_string()),
                Just("-Inf".to_string()),
                Just("1e308".to_string()),
                Just("-3".to_string()),
                any::<f64>().prop_map(|f| f.to_string()),
                any::<u64>().prop_map(|n| n.to_string()),
            ],
        )
            .prop_map(|(labels, value)| format!(
                "shortener_http_requests_total{{code=\"500\",{labels}}} {value}"
            )),
    ];
    prop::collection::vec(line, 0..20).prop_map(|lines| lines.join("\n"))
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        prop::sample::select(vec![
            "shortener:v1",
            "BlueGreen",
            "Rolling",
            "15m",
            "",
            "25%",
            "/readyz",
            "x",
        ])
        .prop_map(serde_json::Value::from),
    ];
    let keys = prop::sample::select(vec![
        "image",
        "replicas",
        "port",
        "env",
        "strategy",
        "rolling",
        "maxSurge",
        "maxUnavailable",
        "analysis",
        "maxErrorRate",
        "sla",
        "allowedDowntimePerYear",
        "incident",
        "webhook",
        "secretRef",
        "name",
        "key",
        "promotion",
        "requires",
        "namespace",
        "healthCheck",
        "rollback",
        "value",
        "unknown",
    ]);
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(keys.clone(), inner, 0..6).prop_map(|m| {
                serde_json::Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}
