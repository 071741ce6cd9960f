//! A rollout from start to stable, failures before and after promotion, supersession, pause, history.

use super::*;

#[test]
fn first_release_goes_pending_progressing_analyzing_healthy() {
    let mut w = World::default_spec();
    let plan = w.step();
    assert_eq!(w.status.phase, Phase::Progressing);
    assert_eq!(w.status.current_revision, Some(1));
    assert_eq!(active(&plan), None, "no traffic before the smoke test");
    assert_eq!(replicas_of(&plan, V1), Some(2));
    assert_eq!(plan.events[0].reason, reason::ROLLOUT_STARTED);
    assert_eq!(plan.requeue, Duration::from_secs(1));

    w.pods(V1, 1, None);
    w.advance(1);
    w.step();
    assert_eq!(w.status.phase, Phase::Progressing, "1 of 2 pods ready");
    assert!(w.probes.is_empty());

    w.pods(V1, 2, None);
    let plan = w.step();
    assert_eq!(
        w.probes,
        vec![
            Probe::SmokeTest {
                hash: V1.to_string()
            },
            // The counters at promotion are the bake's baseline: the smoke test's requests
            // are not the bake's traffic.
            Probe::Analyze {
                hash: V1.to_string()
            }
        ]
    );
    assert_eq!(w.status.phase, Phase::Analyzing);
    assert_eq!(active(&plan), Some(V1));
    assert_eq!(plan.events[0].reason, reason::PROMOTED);

    w.advance(5);
    let plan = w.step();
    assert_eq!(w.status.phase, Phase::Healthy);
    assert_eq!(w.status.stable_revision, Some(1));
    assert_eq!(w.outcome(1).0, Outcome::Promoted);
    assert_eq!(w.condition("Ready").status, "True");
    assert_eq!(w.condition("Degraded").status, "False");
    assert_eq!(plan.events[0].reason, reason::ROLLOUT_SUCCEEDED);
    assert_eq!(w.status.observed_generation, Some(1));
}

#[test]
fn healthy_release_stays_put_without_events() {
    let mut w = World::default_spec();
    w.roll_out_healthy();
    let before = w.status.clone();
    w.advance(60);
    let plan = w.step();
    assert!(plan.events.is_empty());
    assert_eq!(w.status.history, before.history);
    assert_eq!(
        w.condition("Ready").last_transition_time,
        before
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap()
            .last_transition_time
    );
    assert_eq!(active(&plan), Some(V1));
}

#[test]
fn every_failure_before_promotion_keeps_stable_serving() {
    type Setup = Box<dyn Fn(&mut World)>;
    let cases: [(&str, Setup, FailureReason); 6] = [
        (
            "crash loop",
            Box::new(|w: &mut World| w.pods(V2, 0, Some(FailureReason::CrashLoop))),
            FailureReason::CrashLoop,
        ),
        (
            "startup probe",
            Box::new(|w: &mut World| w.pods(V2, 0, Some(FailureReason::StartupProbeFailed))),
            FailureReason::StartupProbeFailed,
        ),
        (
            "image pull",
            Box::new(|w: &mut World| w.pods(V2, 0, Some(FailureReason::ImagePullFailed))),
            FailureReason::ImagePullFailed,
        ),
        (
            "pods cannot be created",
            Box::new(|w: &mut World| w.pods(V2, 0, Some(FailureReason::PodCreateFailed))),
            FailureReason::PodCreateFailed,
        ),
        (
            "progress deadline",
            Box::new(|w: &mut World| {
                w.pods(V2, 1, None);
                w.advance(61);
            }),
            FailureReason::ProgressDeadlineExceeded,
        ),
        (
            "smoke test",
            Box::new(|w: &mut World| w.smoke = SmokeResult::Failed("POST gave 500".into())),
            FailureReason::SmokeTestFailed,
        ),
    ];
    for (name, setup, why) in cases {
        let mut w = World::with_v2_ready();
        setup(&mut w);
        let plan = w.step();
        assert_eq!(w.status.phase, Phase::RolledBack, "{name}");
        assert_eq!(active(&plan), Some(V1), "{name}: stable keeps traffic");
        assert_eq!(
            replicas_of(&plan, V2),
            Some(0),
            "{name}: failed scaled down"
        );
        assert_eq!(replicas_of(&plan, V1), Some(2), "{name}");
        assert_eq!(w.status.stable_revision, Some(1), "{name}");
        assert_eq!(
            w.outcome(2),
            (Outcome::Failed, Some(why.as_str().into())),
            "{name}"
        );
        assert_eq!(plan.failure, Some(why), "{name}");
        assert_eq!(plan.rollback, None, "{name}: traffic never moved");
        assert!(plan.events[0].warning, "{name}");
        assert_eq!(plan.events[0].reason, why.as_str(), "{name}");
        assert_eq!(w.condition("Degraded").status, "True", "{name}");
        assert_eq!(w.condition("Degraded").reason, why.as_str(), "{name}");
        assert_eq!(w.condition("Ready").status, "False", "{name}");
        let incident = w.status.last_incident.clone().unwrap();
        assert_eq!(incident.failed_requests, 0, "{name}");
        assert_eq!(incident.reason, why.as_str(), "{name}");
    }
}

#[test]
fn pod_failure_wins_over_waiting_for_the_deadline() {
    let mut w = World::with_v2_ready();
    w.pods(V2, 1, Some(FailureReason::CrashLoop));
    w.step();
    assert_eq!(w.outcome(2).1.as_deref(), Some("CrashLoop"));
}

#[test]
fn first_release_failing_serves_nothing_and_is_degraded() {
    let mut w = World::default_spec();
    w.step();
    w.pods(V1, 2, None);
    w.smoke = SmokeResult::Failed("redirect missing".into());
    let plan = w.step();
    assert_eq!(w.status.phase, Phase::Degraded);
    assert_eq!(active(&plan), None);
    assert_eq!(replicas_of(&plan, V1), Some(0));
    assert_eq!(w.status.stable_revision, None);
}

#[test]
fn analysis_failure_switches_traffic_back_at_once() {
    let mut w = World::with_v2_ready();
    let plan = w.step();
    assert_eq!(w.status.phase, Phase::Analyzing);
    assert_eq!(active(&plan), Some(V2));
    assert_eq!(
        replicas_of(&plan, V1),
        Some(2),
        "stable kept up while baking"
    );

    // Not due yet: no scrape.
    let plan = w.step();
    assert!(w.probes.is_empty());
    assert_eq!(active(&plan), Some(V2));

    w.advance(1);
    w.step();
    assert_eq!(
        w.probes,
        vec![Probe::Analyze {
            hash: V2.to_string()
        }]
    );
    assert_eq!(w.status.phase, Phase::Analyzing, "clean interval");

    w.sample = sample(40, 30);
    w.advance(1);
    let plan = w.step();
    assert_eq!(w.status.phase, Phase::RolledBack);
    assert_eq!(active(&plan), Some(V1));
    assert_eq!(replicas_of(&plan, V2), Some(0));
    assert_eq!(
        plan.rollback.as_ref().map(|r| r.reason),
        Some(FailureReason::AnalysisFailed)
    );
    assert_eq!(
        plan.restored,
        Some(w.now),
        "blue-green restores with the switch"
    );
    let incident = w.status.last_incident.clone().unwrap();
    assert_eq!(incident.failed_requests, 30);
    assert_eq!(incident.rolled_back_at, Some(w.now));
    assert!(incident.downtime_seconds > 0.0);
    assert_eq!(w.outcome(2).0, Outcome::Failed);
    assert_eq!(w.status.stable_revision, Some(1));
    assert_eq!(w.status.analysis, None);
}

#[test]
fn each_sample_leaves_its_pod_counters_in_status_for_the_next() {
    let mut w = World::with_v2_ready();
    w.step();
    w.sample = sample(10, 0);
    w.sample.pod_counts = [(
        "127.0.1.9".to_string(),
        crate::api::RequestCounts {
            requests: 12,
            errors: 0,
            ..Default::default()
        },
    )]
    .into();
    w.advance(1);
    w.step();
    let analysis = w.status.analysis.clone().unwrap();
    assert_eq!(analysis.pod_counts, w.sample.pod_counts);
    assert_eq!(analysis.requests, 10);
}

#[test]
fn analysis_thresholds() {
    // (maxErrorRate %, failureLimit, minRequests, samples, fails)
    type Samples<'a> = &'a [(i64, i64)];
    let cases: [(f64, i32, i64, Samples, bool); 6] = [
        (5.0, 1, 1, &[(100, 5)], false),
        (5.0, 1, 1, &[(100, 6)], true),
        (0.0, 1, 1, &[(100, 1)], true),
        (5.0, 1, 50, &[(10, 10)], false),
        (5.0, 2, 1, &[(10, 10), (10, 0), (10, 10)], false),
        (5.0, 2, 1, &[(10, 10), (0, 0), (10, 10)], true),
    ];
    for (rate, limit, min, samples, fails) in cases {
        let mut w = World::with_v2_ready();
        w.spec.analysis.max_error_rate = rate;
        w.spec.analysis.failure_limit = limit;
        w.spec.analysis.min_requests = min;
        w.spec.analysis.bake_seconds = 100;
        w.step();
        for (requests, errors) in samples {
            w.sample = sample(*requests, *errors);
            w.advance(1);
            w.step();
        }
        let failed = w.status.phase == Phase::RolledBack;
        assert_eq!(failed, fails, "{rate}% limit {limit} min {min} {samples:?}");
    }
}

#[test]
fn crash_during_bake_rolls_back() {
    let mut w = World::with_v2_ready();
    w.step();
    w.pods(V2, 1, Some(FailureReason::CrashLoop));
    let plan = w.step();
    assert_eq!(w.status.phase, Phase::RolledBack);
    assert_eq!(active(&plan), Some(V1));
    assert_eq!(
        plan.rollback.map(|r| r.reason),
        Some(FailureReason::CrashLoop)
    );
}

#[test]
fn without_automatic_rollback_the_failed_revision_keeps_traffic() {
    let mut w = World::with_v2_ready();
    w.spec.rollback.automatic = false;
    w.step();
    w.sample = sample(10, 10);
    w.advance(1);
    let plan = w.step();
    assert_eq!(w.status.phase, Phase::Degraded);
    assert_eq!(active(&plan), Some(V2));
    assert_eq!(replicas_of(&plan, V2), Some(2));
    assert_eq!(plan.rollback, None);
    // And it stays that way on later reconciles.
    w.advance(30);
    let plan = w.step();
    assert_eq!(w.status.phase, Phase::Degraded);
    assert_eq!(active(&plan), Some(V2));
    assert!(plan.events.is_empty());
}

#[test]
fn failed_revision_is_never_retried_by_itself() {
    let mut w = World::with_v2_ready();
    w.smoke = SmokeResult::Failed("500".into());
    w.step();
    w.smoke = SmokeResult::Passed;
    for _ in 0..5 {
        w.advance(120);
        let plan = w.step();
        assert_eq!(w.status.phase, Phase::RolledBack);
        assert_eq!(w.status.current_revision, Some(2));
        assert_eq!(replicas_of(&plan, V2), Some(0));
        assert_eq!(active(&plan), Some(V1));
        assert!(plan.events.is_empty(), "no repeated events");
        assert!(w.probes.is_empty());
    }
    assert_eq!(w.status.history.len(), 2);
}

#[test]
fn manual_retry_annotation_starts_a_new_revision_of_the_same_template() {
    let mut w = World::with_v2_ready();
    w.smoke = SmokeResult::Failed("500".into());
    w.step();
    w.retry = Some("1".into());
    let plan = w.step();
    assert_eq!(w.status.phase, Phase::Progressing);
    assert_eq!(w.status.current_revision, Some(3));
    assert_eq!(w.status.history[2].pod_template_hash, V2);
    assert_eq!(replicas_of(&plan, V2), Some(2));
    // The same annotation value is not a second retry.
    w.smoke = SmokeResult::Failed("500".into());
    w.step();
    assert_eq!(w.status.phase, Phase::RolledBack);
    w.step();
    assert_eq!(w.status.current_revision, Some(3));
}

#[test]
fn new_spec_after_failure_rolls_out_and_prunes_the_failed_deployment() {
    let mut w = World::with_v2_ready();
    w.smoke = SmokeResult::Failed("500".into());
    w.step();
    w.smoke = SmokeResult::Passed;
    w.set_image("shortener:v3", V3);
    let plan = w.step();
    assert_eq!(w.status.phase, Phase::Progressing);
    assert!(deletes(&plan, V2));
    assert_eq!(active(&plan), Some(V1));
    w.pods(V3, 2, None);
    w.step();
    w.advance(5);
    let plan = w.step();
    assert_eq!(w.status.phase, Phase::Healthy);
    assert_eq!(w.status.stable_revision, Some(3));
    assert_eq!(
        replicas_of(&plan, V1),
        Some(0),
        "old stable scaled to zero after the bake, kept for a rollback by hand"
    );
    assert!(!deletes(&plan, V1));
    let outcomes: Vec<_> = w
        .status
        .history
        .iter()
        .map(|r| (r.revision, r.outcome))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (1, Outcome::Promoted),
            (2, Outcome::Failed),
            (3, Outcome::Promoted)
        ]
    );
    assert!(w.status.last_incident.unwrap().recovered_at.is_some());
}

#[test]
fn spec_change_supersedes_a_rollout_in_progress() {
    // While waiting for pods, and while baking with traffic.
    for baking in [false, true] {
        let mut w = World::with_v2_ready();
        if baking {
            w.step();
            assert_eq!(w.status.phase, Phase::Analyzing);
        } else {
            w.pods(V2, 1, None);
        }
        w.set_image("shortener:v3", V3);
        let plan = w.step();
        assert_eq!(w.outcome(2).0, Outcome::Superseded, "baking={baking}");
        assert_eq!(w.status.current_revision, Some(3));
        assert_eq!(w.status.phase, Phase::Progressing);
        assert_eq!(active(&plan), Some(V1), "traffic back on stable");
        assert!(deletes(&plan, V2));
        assert!(plan.events.iter().any(|e| e.reason == reason::SUPERSEDED));
        assert_eq!(w.status.analysis, None);
    }
}

#[test]
fn reverting_to_the_stable_spec_mid_rollout_is_healthy_at_once() {
    let mut w = World::with_v2_ready();
    w.set_image("shortener:v1", V1);
    let plan = w.step();
    assert_eq!(w.status.phase, Phase::Healthy);
    assert_eq!(w.status.current_revision, Some(1));
    assert_eq!(w.outcome(2).0, Outcome::Superseded);
    assert!(deletes(&plan, V2));
    // Going back to v2 later is a fresh rollout.
    w.set_image("shortener:v2", V2);
    w.step();
    assert_eq!(w.status.phase, Phase::Progressing);
    assert_eq!(w.status.current_revision, Some(3));
}

#[test]
fn paused_and_blocked_touch_nothing() {
    let mut w = World::with_v2_ready();
    w.paused = true;
    let plan = w.step();
    assert_eq!(w.status.phase, Phase::Paused);
    assert!(plan.routing.is_none() && deployments(&plan).is_empty());
    assert_eq!(plan.events.len(), 1);
    w.paused = false;
    w.step();
    assert_eq!(w.status.phase, Phase::Analyzing, "resumes where it stopped");
}

#[test]
fn no_smoke_test_promotes_when_ready() {
    let mut w = World::default_spec();
    w.spec.health_check.smoke_test = false;
    w.step();
    w.pods(V1, 2, None);
    w.step();
    assert_eq!(
        w.probes,
        vec![Probe::Analyze { hash: V1.into() }],
        "only the bake's baseline is read"
    );
    assert_eq!(w.status.phase, Phase::Analyzing);
}

#[test]
fn history_is_pruned_but_keeps_stable() {
    let mut w = World::default_spec();
    w.spec.rollback.revision_history_limit = 2;
    w.roll_out_healthy();
    let hashes = ["a", "b", "c", "d"];
    for h in hashes {
        w.set_image("shortener:x", h);
        w.step();
    }
    let revisions: Vec<i64> = w.status.history.iter().map(|r| r.revision).collect();
    assert_eq!(revisions, vec![1, 4, 5]);
}

#[test]
fn a_bake_short_of_traffic_is_never_promoted_silently() {
    use crate::api::InsufficientTraffic::{Fail, Hold};
    // (minBakeRequests, policy, requests per 1 s sample over a 5 s bake, phase, why)
    let cases = [
        (
            1,
            Hold,
            0,
            Phase::Analyzing,
            Some(reason::INSUFFICIENT_TRAFFIC),
        ),
        (1, Fail, 0, Phase::RolledBack, Some("InsufficientTraffic")),
        (
            50,
            Hold,
            5,
            Phase::Analyzing,
            Some(reason::INSUFFICIENT_TRAFFIC),
        ),
        (50, Fail, 5, Phase::RolledBack, Some("InsufficientTraffic")),
        (50, Fail, 10, Phase::Healthy, None),
        (0, Hold, 0, Phase::Healthy, None),
        (0, Fail, 0, Phase::Healthy, None),
    ];
    for (min, policy, per_sample, phase, why) in cases {
        let name = format!("min {min} {policy:?} {per_sample}/s");
        let mut w = World::with_v2_ready();
        w.spec.analysis.min_bake_requests = min;
        w.spec.analysis.insufficient_traffic = policy;
        w.sample = sample(per_sample, 0);
        let mut events = Vec::new();
        for _ in 0..8 {
            let plan = w.step();
            events.extend(plan.events.iter().map(|e| e.reason.to_string()));
            w.advance(1);
        }
        assert_eq!(w.status.phase, phase, "{name}: {}", w.status.message);
        match (phase, why) {
            (Phase::Analyzing, Some(why)) => {
                assert_eq!(w.condition("Progressing").reason, why, "{name}");
                assert_eq!(w.condition("Ready").status, "False", "{name}");
                assert_eq!(w.status.stable_revision, Some(1), "{name}: not stable");
                assert!(
                    w.status.message.contains(&format!("of {min} requests")),
                    "{name}"
                );
                let warned = events.iter().filter(|r| *r == why).count();
                assert_eq!(warned, 1, "{name}: one Event when the hold starts");
            }
            (Phase::RolledBack, Some(why)) => {
                assert_eq!(w.outcome(2), (Outcome::Failed, Some(why.into())), "{name}");
            }
            _ => {
                assert_eq!(w.status.stable_revision, Some(2), "{name}");
                let warned = events.contains(&reason::INSUFFICIENT_TRAFFIC.to_string());
                assert_eq!(warned, per_sample == 0, "{name}: warned iff no traffic");
            }
        }
    }
}

#[test]
fn a_held_revision_becomes_stable_once_the_traffic_came() {
    let mut w = World::with_v2_ready();
    w.spec.analysis.min_bake_requests = 1;
    w.sample = sample(0, 0);
    for _ in 0..8 {
        w.step();
        w.advance(1);
    }
    assert_eq!(
        w.condition("Progressing").reason,
        reason::INSUFFICIENT_TRAFFIC
    );
    w.sample = sample(3, 0);
    w.advance(1);
    w.step();
    assert_eq!(w.status.phase, Phase::Healthy);
    assert_eq!(w.status.stable_revision, Some(2));
}

#[test]
fn the_bake_counts_from_the_counters_at_promotion() {
    let mut w = World::with_v2_ready();
    let at_promotion: BTreeMap<String, crate::api::RequestCounts> = [(
        "127.0.1.9".to_string(),
        crate::api::RequestCounts {
            requests: 4,
            ..Default::default()
        },
    )]
    .into();
    w.sample.pod_counts = at_promotion.clone();
    w.step();
    let analysis = w.status.analysis.clone().unwrap();
    assert_eq!(
        analysis.pod_counts, at_promotion,
        "the next sample's baseline"
    );
    assert_eq!(
        analysis.requests, 0,
        "the smoke test's requests are not the bake's"
    );
}

#[test]
fn a_latency_regression_fails_the_interval() {
    use crate::rollout::Latency;
    // (maxLatencyP99Ms, p99 seconds, timed requests, minRequests, fails)
    let cases = [
        (None, 5.0, 100, 1, false),
        (Some(200), 0.1, 100, 1, false),
        (Some(200), 0.2, 100, 1, false),
        (Some(200), 0.25, 100, 1, true),
        (Some(200), 0.5, 10, 50, false),
    ];
    for (max, p99, observed, min, fails) in cases {
        let mut w = World::with_v2_ready();
        w.spec.analysis.max_latency_p99_ms = max;
        w.spec.analysis.min_requests = min;
        w.step();
        w.sample = sample(100, 0);
        w.sample.latency = Some(Latency {
            p99_seconds: p99,
            observed,
        });
        w.advance(1);
        w.step();
        let failed = w.status.phase == Phase::RolledBack;
        assert_eq!(failed, fails, "{max:?} {p99}s {observed} min {min}");
        if fails {
            assert_eq!(
                w.outcome(2),
                (Outcome::Failed, Some("AnalysisFailed".into()))
            );
            assert!(w.status.message.contains("p99"), "{}", w.status.message);
        }
    }
}
