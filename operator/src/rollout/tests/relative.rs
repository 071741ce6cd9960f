//! `spec.analysis.relativeToStable`: a new revision judged against the stable revision's
//! bake, on top of the absolute limits.

use super::*;
use crate::api::RelativeToStable;
use crate::rollout::Latency;

/// One interval's traffic: requests, 5xx, p99 in milliseconds (timed over all requests).
type Traffic = (i64, i64, f64);

fn traffic((requests, errors, p99_ms): Traffic) -> AnalysisSample {
    AnalysisSample {
        latency: Some(Latency {
            p99_seconds: p99_ms / 1000.0,
            observed: requests,
        }),
        ..sample(requests, errors)
    }
}

/// v1 baked with `stable` traffic in every interval, then v2 ready and judged on one
/// interval of `new` traffic. Returns the world after that interval.
fn judge(relative: Option<RelativeToStable>, stable: Traffic, new: Traffic) -> World {
    let mut w = World::default_spec();
    w.spec.analysis.relative_to_stable = relative;
    w.sample = traffic(stable);
    w.roll_out_healthy();
    first_interval(&mut w, "shortener:v2", V2, traffic(new));
    w
}

/// `image` applied, its pods ready and promoted, then its first interval (`sample`) judged.
fn first_interval(w: &mut World, image: &str, hash: &'static str, sample: AnalysisSample) {
    w.set_image(image, hash);
    w.step();
    w.pods(hash, 2, None);
    w.step();
    assert_eq!(w.status.phase, Phase::Analyzing, "{image} promoted");
    w.sample = sample;
    w.advance(1);
    w.step();
}

fn rel(error_points: Option<f64>, latency_percent: Option<i64>) -> Option<RelativeToStable> {
    Some(RelativeToStable {
        max_error_rate_increase: error_points,
        max_latency_p99_increase_percent: latency_percent,
    })
}

#[test]
fn becoming_stable_records_the_bake_figures() {
    let mut w = World::default_spec();
    // Intervals of 100 requests, 2 errors; p99 40ms except one at 55ms.
    w.sample = traffic((100, 2, 40.0));
    w.step();
    w.pods(V1, 2, None);
    w.step();
    for i in 0..10 {
        w.sample = traffic((100, 2, if i == 2 { 55.0 } else { 40.0 }));
        w.advance(1);
        w.step();
    }
    assert_eq!(w.status.phase, Phase::Healthy);
    let bake = w.status.history[0].bake.clone().expect("figures recorded");
    assert_eq!(bake.errors * 50, bake.requests, "2% of the bake's requests");
    assert!(
        bake.requests >= 500,
        "every interval of the 5s bake: {bake:?}"
    );
    assert_eq!(bake.peak_latency_p99_ms, Some(55.0), "the worst interval");
    assert!((bake.error_rate() - 2.0).abs() < 1e-9);
}

#[test]
fn a_bake_without_judged_requests_records_no_figures() {
    let mut w = World::default_spec();
    w.sample = sample(0, 0);
    w.roll_out_healthy();
    assert_eq!(w.status.history[0].bake, None);
}

#[test]
fn each_interval_is_judged_against_the_stable_bake() {
    use crate::rollout::checks::FailedCheck::*;
    // (error points, latency %, stable interval, new interval, the check that fails)
    let cases: [(Option<RelativeToStable>, Traffic, Traffic, Option<_>); 12] = [
        // Not asked for: 4% passes the absolute 5%.
        (None, (100, 2, 40.0), (100, 4, 400.0), None),
        // Stable at 2%, one point allowed: 3% passes, 4% fails.
        (rel(Some(1.0), None), (100, 2, 40.0), (100, 3, 40.0), None),
        (
            rel(Some(1.0), None),
            (100, 2, 40.0),
            (100, 4, 40.0),
            Some(ErrorRateVsStable),
        ),
        // Zero points over a clean stable: any error fails.
        (
            rel(Some(0.0), None),
            (100, 0, 40.0),
            (1000, 1, 40.0),
            Some(ErrorRateVsStable),
        ),
        // The absolute limit still applies, and is reported first.
        (
            rel(Some(50.0), None),
            (100, 2, 40.0),
            (100, 6, 40.0),
            Some(ErrorRate),
        ),
        // Stable peak 40ms, 50% allowed: 60ms passes, 61ms fails.
        (rel(None, Some(50)), (100, 0, 40.0), (100, 0, 60.0), None),
        (
            rel(None, Some(50)),
            (100, 0, 40.0),
            (100, 0, 61.0),
            Some(LatencyVsStable),
        ),
        // Latency not compared when only error points are asked for, and vice versa.
        (rel(Some(1.0), None), (100, 0, 40.0), (100, 0, 400.0), None),
        (rel(None, Some(50)), (100, 0, 40.0), (100, 4, 40.0), None),
        // Both: the error rate is reported first.
        (
            rel(Some(1.0), Some(50)),
            (100, 0, 40.0),
            (100, 2, 80.0),
            Some(ErrorRateVsStable),
        ),
        // A stable revision that baked without traffic gives nothing to compare with.
        (rel(Some(0.0), Some(0)), (0, 0, 40.0), (100, 4, 400.0), None),
        // An interval without traffic is not judged.
        (rel(Some(0.0), Some(0)), (100, 0, 40.0), (0, 0, 0.0), None),
    ];
    for (i, (relative, stable, new, fails)) in cases.into_iter().enumerate() {
        let w = judge(relative.clone(), stable, new);
        let failed = w.status.phase == Phase::RolledBack;
        assert_eq!(failed, fails.is_some(), "case {i}: {}", w.status.message);
        if let Some(check) = fails {
            assert_eq!(
                w.outcome(2),
                (Outcome::Failed, Some("AnalysisFailed".into())),
                "case {i}"
            );
            let by_stable = w.status.message.contains("relativeToStable");
            assert_eq!(
                by_stable,
                matches!(check, ErrorRateVsStable | LatencyVsStable),
                "case {i}: {}",
                w.status.message
            );
        }
    }
}

#[test]
fn too_few_timed_requests_are_not_compared() {
    let mut w = World::default_spec();
    w.spec.analysis.min_requests = 50;
    w.spec.analysis.relative_to_stable = rel(None, Some(0));
    w.sample = traffic((100, 0, 40.0));
    w.roll_out_healthy();
    first_interval(&mut w, "shortener:v2", V2, traffic((10, 0, 900.0)));
    assert_eq!(w.status.phase, Phase::Analyzing, "{}", w.status.message);
}

#[test]
fn the_failure_message_names_the_stable_revision_and_its_figures() {
    let w = judge(rel(Some(1.0), None), (100, 2, 40.0), (100, 4, 40.0));
    let msg = &w.status.message;
    assert!(msg.contains("4 of 100 requests failed"), "{msg}");
    assert!(msg.contains("2.00% of stable revision 1's bake"), "{msg}");

    let w = judge(rel(None, Some(50)), (100, 0, 40.0), (100, 0, 90.0));
    let msg = &w.status.message;
    assert!(msg.contains("p99 latency 90.0ms"), "{msg}");
    assert!(msg.contains("above 60.0ms"), "{msg}");
    assert!(
        msg.contains("40.0ms peak of stable revision 1's bake"),
        "{msg}"
    );
}

#[test]
fn a_bake_that_cannot_be_compared_says_so() {
    let mut w = World::default_spec();
    w.spec.analysis.relative_to_stable = rel(Some(1.0), None);
    first_interval(&mut w, "shortener:v1", V1, sample(0, 0));
    assert!(
        w.status
            .message
            .contains("not compared with a stable revision: there is none yet"),
        "{}",
        w.status.message
    );
    for _ in 0..10 {
        w.advance(1);
        w.step();
    }
    assert_eq!(w.status.phase, Phase::Healthy);
    first_interval(&mut w, "shortener:v2", V2, sample(0, 0));
    assert!(
        w.status
            .message
            .contains("not compared with stable revision 1: it recorded no bake figures"),
        "{}",
        w.status.message
    );
}
