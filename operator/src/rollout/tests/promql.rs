//! The bake judged by `spec.analysis.prometheus` (the verdicts come from `crate::promql`).

use super::*;
use crate::promql::Verdict;

fn with_promql(failure_limit: i32, bake_seconds: i32) -> World {
    let mut w = World::with_v2_ready();
    w.spec.analysis = serde_json::from_value(serde_json::json!({
        "intervalSeconds": 1,
        "failureLimit": failure_limit,
        "bakeSeconds": bake_seconds,
        "prometheus": {
            "address": "http://prometheus:9090",
            "queries": [{"name": "errors", "query": "vector(0)", "max": 0.1}],
        },
    }))
    .unwrap();
    w
}

/// A sample as the controller takes it without `scrapePods`: no pod counts, the verdict only.
fn verdict(v: &str) -> AnalysisSample {
    let prometheus = Some(match v {
        "pass" => Verdict::Passed("query errors = 0 (max 0.1)".into()),
        "fail" => Verdict::Failed("query errors = 0.5 outside (max 0.1)".into()),
        _ => Verdict::NoData("query errors: no data (empty result)".into()),
    });
    AnalysisSample {
        prometheus,
        ..Default::default()
    }
}

#[test]
fn promql_verdicts_decide_the_bake() {
    // (failureLimit, bakeSeconds, verdict per interval, phase after the bake)
    let cases: [(i32, i32, &[&str], Phase); 7] = [
        (1, 4, &["pass", "pass", "pass", "pass"], Phase::Healthy),
        (1, 4, &["pass", "fail"], Phase::RolledBack),
        // No data neither fails an interval nor lets the bake end stable.
        (1, 4, &["none", "none", "none", "none"], Phase::RolledBack),
        (1, 4, &["none", "pass", "none", "none"], Phase::Healthy),
        // No data keeps the failures in a row; a pass resets them.
        (2, 6, &["fail", "none", "fail"], Phase::RolledBack),
        (
            2,
            6,
            &["fail", "pass", "fail", "pass", "pass", "pass"],
            Phase::Healthy,
        ),
        // A bake of 0 seconds asks for no analysis.
        (1, 0, &[], Phase::Healthy),
    ];
    for (limit, bake, verdicts, want) in cases {
        let mut w = with_promql(limit, bake);
        w.step();
        for v in verdicts {
            w.sample = verdict(v);
            w.advance(1);
            w.step();
        }
        // Past the end of the bake, with an interval that has no data.
        w.sample = verdict("none");
        w.advance(1);
        w.step();
        assert_eq!(
            w.status.phase, want,
            "limit {limit} bake {bake} {verdicts:?}"
        );
        if want == Phase::RolledBack {
            assert_eq!(w.outcome(2).1.as_deref(), Some("AnalysisFailed"));
        }
    }
}

#[test]
fn a_failed_query_is_named_with_its_value_and_bound() {
    let mut w = with_promql(1, 60);
    w.step();
    w.sample = verdict("pass");
    w.advance(1);
    w.step();
    let analysis = w.status.analysis.clone().unwrap();
    assert_eq!(analysis.prometheus_passed_intervals, 1);
    assert!(
        w.status.message.contains("query errors = 0 (max 0.1)"),
        "{}",
        w.status.message
    );
    w.sample = verdict("fail");
    w.advance(1);
    w.step();
    assert_eq!(w.status.phase, Phase::RolledBack);
    assert!(
        w.status
            .message
            .contains("PromQL check failed: query errors = 0.5 outside (max 0.1)"),
        "{}",
        w.status.message
    );
}

#[test]
fn a_bake_without_data_says_why_it_failed() {
    let mut w = with_promql(1, 2);
    w.step();
    for _ in 0..3 {
        w.sample = verdict("none");
        w.advance(1);
        w.step();
    }
    assert_eq!(w.status.phase, Phase::RolledBack);
    assert!(
        w.status
            .message
            .contains("no interval of the 2s bake passed every PromQL query")
            && w.status.message.contains("no data (empty result)"),
        "{}",
        w.status.message
    );
}
