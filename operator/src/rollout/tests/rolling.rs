//! `strategy: Rolling`: the same decisions, run on one Deployment.

use super::*;

#[test]
fn rolling_first_release_runs_the_spec_and_becomes_healthy() {
    let mut w = rolling_world();
    let plan = w.step();
    assert_eq!(w.status.phase, Phase::Progressing);
    assert_eq!(target(&plan), runs(V1, None));
    w.pods(V1, 2, None);
    let plan = w.step();
    assert_eq!(
        w.probes,
        vec![
            Probe::SmokeTest { hash: V1.into() },
            Probe::Analyze { hash: V1.into() }
        ],
        "smoke test as soon as the pods are ready, then the bake's baseline"
    );
    assert_eq!(w.status.phase, Phase::Analyzing);
    assert_eq!(target(&plan), runs(V1, None));
    w.advance(5);
    let plan = w.step();
    assert_eq!(w.status.phase, Phase::Healthy);
    assert_eq!(w.status.stable_revision, Some(1));
    assert_eq!(target(&plan), runs(V1, None));
}

#[test]
fn rolling_good_update_replaces_pods_without_counting_downtime() {
    let mut w = rolling_world();
    w.roll_out_healthy();
    w.set_image("shortener:v2", V2);
    let plan = w.step();
    assert_eq!(target(&plan), runs(V2, None), "the new template rolls in");
    // Half-way: one old pod left, one new one ready.
    w.pods(V1, 1, None);
    w.pods(V2, 1, None);
    let plan = w.step();
    assert_eq!(w.status.phase, Phase::Progressing);
    assert_eq!(target(&plan), runs(V2, None));
    // Kubernetes retired the last old pod: the release still serves through v2's.
    w.pods(V1, 0, None);
    w.pods(V2, 2, None);
    let mut charged = 0;
    for _ in 0..8 {
        let plan = w.step();
        charged += plan.downtime_charged;
        w.advance(1);
    }
    assert_eq!(w.status.phase, Phase::Healthy);
    assert_eq!(w.status.stable_revision, Some(2));
    assert_eq!(charged, 0);
    assert!(budget(&w).ledger.open_outage.is_none());
    assert_eq!(target(&w.step()), runs(V2, None));
}

#[test]
fn rolling_failures_reapply_the_stable_template() {
    // (fault on v2, failure seen after promotion, expected reason)
    let cases = [
        (
            Some(FailureReason::CrashLoop),
            false,
            FailureReason::CrashLoop,
        ),
        (
            Some(FailureReason::ImagePullFailed),
            false,
            FailureReason::ImagePullFailed,
        ),
        (None, true, FailureReason::AnalysisFailed),
    ];
    for (pod_failure, bad_metrics, why) in cases {
        let mut w = rolling_world();
        w.roll_out_healthy();
        w.set_image("shortener:v2", V2);
        w.step();
        if bad_metrics {
            w.promote_v2_with_errors();
        } else {
            w.pods(V2, 0, pod_failure);
        }
        let mut plan = w.step();
        for _ in 0..5 {
            if w.status.phase != Phase::Analyzing {
                break;
            }
            w.advance(1);
            plan = w.step();
        }
        assert_eq!(w.status.phase, Phase::RolledBack, "{why:?}");
        assert_eq!(w.outcome(2), (Outcome::Failed, Some(why.as_str().into())));
        assert_eq!(w.status.stable_revision, Some(1));
        assert_eq!(plan.failure, Some(why));
        assert_eq!(
            target(&plan),
            runs(V1, Some("shortener:v1")),
            "{why:?}: v1's template again"
        );
        // The spec still names v2: it stays failed and v1 keeps running.
        w.advance(1);
        let plan = w.step();
        assert_eq!(w.status.phase, Phase::RolledBack);
        assert_eq!(target(&plan), runs(V1, Some("shortener:v1")));
    }
}

#[test]
fn rolling_rollback_after_promotion_is_downtime_until_the_failed_pods_are_gone() {
    let mut w = rolling_world();
    w.roll_out_healthy();
    w.set_image("shortener:v2", V2);
    w.step();
    w.promote_v2_with_errors();
    w.advance(1);
    let plan = w.step();
    let mut charged = plan.downtime_charged;
    assert_eq!(w.status.phase, Phase::RolledBack);
    assert_eq!(plan.restored, None, "time to restore is measured later");
    let incident = w.status.last_incident.clone().unwrap();
    assert!(incident.rolled_back_at.is_some());
    assert_eq!(incident.recovered_at, None, "v2's pods still serve");

    // Kubernetes rolls v1's template back in; v2's pods take traffic meanwhile.
    w.pods(V1, 1, None);
    w.pods(V2, 1, None);
    for _ in 0..4 {
        w.advance(1);
        let plan = w.step();
        charged += plan.downtime_charged;
        assert_eq!(plan.requeue, FAST_REQUEUE, "kept under watch");
    }
    assert_eq!(w.status.last_incident.clone().unwrap().recovered_at, None);
    assert!(budget(&w).ledger.open_outage.is_some());

    // The last v2 pod is gone: restored now, and the outage closes.
    w.pods(V2, 0, None);
    w.pods(V1, 2, None);
    w.advance(1);
    let plan = w.step();
    charged += plan.downtime_charged;
    let incident = w.status.last_incident.clone().unwrap();
    assert_eq!(incident.recovered_at, Some(w.now));
    assert_eq!(plan.restored, Some(incident.detected_at));
    assert!(budget(&w).ledger.open_outage.is_none());
    assert!(
        plan.events
            .iter()
            .any(|e| e.reason == reason::TRAFFIC_RESTORED),
        "{:?}",
        plan.events
    );
    assert!(
        charged >= 5,
        "from the bad sample to the last v2 pod: {charged}s"
    );
    assert_eq!(incident.downtime_seconds, charged as f64);
    // Later reconciles charge nothing more.
    w.advance(30);
    assert_eq!(w.step().downtime_charged, 0);
    assert_eq!(w.status.phase, Phase::RolledBack);
}

#[test]
fn rolling_first_release_failing_is_scaled_to_zero() {
    let mut w = rolling_world();
    w.step();
    w.pods(V1, 0, Some(FailureReason::CrashLoop));
    let plan = w.step();
    assert_eq!(w.status.phase, Phase::Degraded);
    assert_eq!(target(&plan), (V1.to_string(), None, 0));
}

#[test]
fn rolling_paused_leaves_the_deployment_alone() {
    let mut w = rolling_world();
    w.paused = true;
    assert_eq!(w.step().workload, Workload::Rolling(None));
}
