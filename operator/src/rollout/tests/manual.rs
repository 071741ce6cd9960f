//! Manual controls: promote, abort, rollback-to, and what a rollback leaves behind.

use super::*;

#[test]
fn promote_cuts_the_bake_short() {
    let mut w = World::with_v2_ready();
    w.spec.analysis.bake_seconds = 600;
    w.step();
    assert_eq!(w.status.phase, Phase::Analyzing);
    w.advance(1);
    let plan = w.control_once(Control::Promote);
    assert_eq!(w.status.phase, Phase::Healthy);
    assert_eq!(w.status.stable_revision, Some(2));
    assert_eq!(
        w.outcome(2),
        (Outcome::Promoted, Some(reason::MANUAL_PROMOTE.into()))
    );
    assert!(event_reasons(&plan).contains(&reason::MANUAL_PROMOTE));
    assert_eq!(active(&plan), Some(V2));
    assert_eq!(
        replicas_of(&plan, V1),
        Some(0),
        "old stable retired as after a full bake"
    );
}

#[test]
fn promote_needs_a_revision_that_passed_its_checks() {
    // Pods not ready yet, and nothing in progress at all.
    let mut w = World::default_spec();
    w.roll_out_healthy();
    w.set_image("shortener:v2", V2);
    w.step();
    let plan = w.control_once(Control::Promote);
    assert_eq!(w.status.phase, Phase::Progressing);
    assert_eq!(w.status.stable_revision, Some(1));
    assert_eq!(active(&plan), Some(V1));
    assert!(plan.events[0].warning);
    assert_eq!(plan.events[0].reason, reason::MANUAL_CONTROL_REJECTED);
    assert!(
        w.status.message.contains("smoke checks"),
        "{}",
        w.status.message
    );

    let mut w = World::default_spec();
    w.roll_out_healthy();
    let plan = w.control_once(Control::Promote);
    assert_eq!(w.status.phase, Phase::Healthy);
    assert_eq!(event_reasons(&plan), vec![reason::MANUAL_CONTROL_REJECTED]);
    assert!(w.condition("Ready").message.contains("nothing to promote"));
}

#[test]
fn abort_returns_traffic_to_stable_and_is_not_retried() {
    // Baking with traffic, with and without automatic rollback; and before promotion.
    for (baking, automatic) in [(true, true), (true, false), (false, true)] {
        let name = format!("baking={baking} automatic={automatic}");
        let mut w = World::default_spec();
        w.spec.rollback.automatic = automatic;
        w.roll_out_healthy();
        w.set_image("shortener:v2", V2);
        w.step();
        w.pods(V2, 2, None);
        if baking {
            w.step();
            assert_eq!(w.status.phase, Phase::Analyzing, "{name}");
        }
        let plan = w.control_once(Control::Abort);
        assert_eq!(w.status.phase, Phase::RolledBack, "{name}");
        assert_eq!(active(&plan), Some(V1), "{name}");
        assert_eq!(replicas_of(&plan, V2), Some(0), "{name}");
        assert_eq!(
            w.outcome(2),
            (Outcome::Failed, Some("Manual".into())),
            "{name}"
        );
        assert_eq!(w.condition("Degraded").reason, "Manual", "{name}");
        assert_eq!(event_reasons(&plan), vec![reason::MANUAL_ABORT], "{name}");
        assert_eq!(
            plan.rollback.map(|r| r.reason),
            baking.then_some(FailureReason::Manual),
            "{name}: a traffic switch is a rollback"
        );
        for _ in 0..3 {
            w.advance(60);
            let plan = w.step();
            assert_eq!(w.status.phase, Phase::RolledBack, "{name}");
            assert_eq!(active(&plan), Some(V1), "{name}");
            assert_eq!(replicas_of(&plan, V2), Some(0), "{name}");
            assert!(plan.events.is_empty(), "{name}");
            assert!(w.probes.is_empty(), "{name}");
        }
    }
}

#[test]
fn abort_without_a_rollout_is_refused() {
    let mut w = World::default_spec();
    w.roll_out_healthy();
    let plan = w.control_once(Control::Abort);
    assert_eq!(w.status.phase, Phase::Healthy);
    assert_eq!(event_reasons(&plan), vec![reason::MANUAL_CONTROL_REJECTED]);
    assert_eq!(active(&plan), Some(V1));
}

#[test]
fn rollback_to_a_kept_revision_scales_its_own_deployment_back_up() {
    let mut w = v2_stable();
    let plan = w.control_once(Control::RollbackTo(Target::Previous));
    assert_eq!(
        replicas_of(&plan, V1),
        Some(2),
        "the Deployment that ran v1, as it ran"
    );
    assert_eq!(
        restores(&plan, V1),
        None,
        "nothing rebuilt from today's spec"
    );
    w.pods(V1, 2, None);
    let plan = w.step();
    assert_eq!(w.status.phase, Phase::RolledBack);
    assert_eq!(active(&plan), Some(V1));
    assert!(deletes(&plan, V2), "v2 failed by hand: not kept");
}

#[test]
fn reverting_the_spec_to_a_retired_revision_rolls_it_out_again() {
    let mut w = v2_stable();
    w.set_image("shortener:v1", V1);
    let plan = w.step();
    assert_eq!(w.status.phase, Phase::Progressing);
    assert_eq!(w.status.current_revision, Some(3));
    assert_eq!(
        replicas_of(&plan, V1),
        Some(2),
        "the kept Deployment, re-applied"
    );
    assert_eq!(
        active(&plan),
        Some(V2),
        "v2 serves until v1 passes its checks"
    );
    w.pods(V1, 2, None);
    w.step();
    assert_eq!(w.status.phase, Phase::Analyzing);
}

#[test]
fn retired_deployments_follow_the_history() {
    // Each new healthy release leaves the previous one at zero replicas; once a revision
    // leaves the history, its Deployment goes too.
    let mut w = World::default_spec();
    w.spec.rollback.revision_history_limit = 2;
    w.roll_out_healthy();
    w.set_image("shortener:v2", V2);
    w.roll_out_healthy();
    w.set_image("shortener:v3", V3);
    w.roll_out_healthy();
    let kept: Vec<_> = w.observed.revisions.keys().cloned().collect();
    assert_eq!(
        kept,
        vec![V2.to_string(), V3.to_string()],
        "v1 left the history"
    );
    assert_eq!(w.observed.revisions[V2].replicas, Some(0));
    assert_eq!(w.observed.revisions[V3].replicas, Some(2));
    // Scaled once, then left alone: no write per reconcile.
    let plan = w.step();
    assert_eq!(replicas_of(&plan, V2), None);
    assert!(!deletes(&plan, V2));
}

#[test]
fn rollback_recreates_the_earlier_revision_and_switches_when_ready() {
    for target in [Target::Previous, Target::Revision(1)] {
        let mut w = v2_stable_v1_gone();
        let plan = w.control_once(Control::RollbackTo(target));
        assert_eq!(
            event_reasons(&plan),
            vec![reason::MANUAL_ROLLBACK],
            "{target:?}"
        );
        assert_eq!(w.outcome(2), (Outcome::Failed, Some("Manual".into())));
        assert_eq!(
            w.outcome(3),
            (Outcome::InProgress, Some(reason::MANUAL_ROLLBACK.into()))
        );
        assert_eq!(w.status.history[2].image, "shortener:v1");
        assert_eq!(
            restores(&plan, V1),
            Some(("shortener:v1".into(), 2)),
            "recreated from history"
        );
        assert_eq!(
            active(&plan),
            Some(V2),
            "{target:?}: not before it is ready"
        );
        assert_eq!(w.status.phase, Phase::Progressing);

        w.pods(V1, 1, None);
        let plan = w.step();
        assert_eq!(active(&plan), Some(V2));
        w.pods(V1, 2, None);
        let plan = w.step();
        assert_eq!(w.probes.len(), 1, "smoke tested first");
        assert_eq!(w.status.phase, Phase::RolledBack);
        assert_eq!(w.condition("Progressing").reason, reason::MANUAL_ROLLBACK);
        assert_eq!(active(&plan), Some(V1));
        assert_eq!(w.status.stable_revision, Some(3));
        assert!(deletes(&plan, V2));

        // The spec still says v2: it does not roll forward by itself.
        for _ in 0..3 {
            w.advance(60);
            let plan = w.step();
            assert_eq!(w.status.phase, Phase::RolledBack);
            assert_eq!(active(&plan), Some(V1));
            assert!(restores(&plan, V2).is_none() && replicas_of(&plan, V2).is_none());
            assert!(plan.events.is_empty());
        }
        assert!(w.status.message.contains("shortener.dev/retry"));
    }
}

#[test]
fn after_a_manual_rollback_retry_or_a_new_spec_rolls_forward() {
    let mut w = v2_stable();
    w.control_once(Control::RollbackTo(Target::Previous));
    w.pods(V1, 2, None);
    w.step();
    assert_eq!(w.status.phase, Phase::RolledBack);

    let mut retried = v2_clone(&w);
    retried.retry = Some("1".into());
    let plan = retried.step();
    assert_eq!(retried.status.phase, Phase::Progressing);
    assert_eq!(retried.status.current_revision, Some(4));
    assert_eq!(replicas_of(&plan, V2), Some(2));
    assert_eq!(active(&plan), Some(V1));

    w.set_image("shortener:v3", V3);
    let plan = w.step();
    assert_eq!(w.status.phase, Phase::Progressing);
    assert_eq!(replicas_of(&plan, V3), Some(2));
    assert_eq!(active(&plan), Some(V1));
}

#[test]
fn rollback_during_a_bake_takes_traffic_back_first() {
    let mut w = World::with_v2_ready();
    w.step();
    assert_eq!(w.status.phase, Phase::Analyzing);
    let plan = w.control_once(Control::RollbackTo(Target::Revision(1)));
    assert_eq!(w.outcome(2), (Outcome::Failed, Some("Manual".into())));
    assert_eq!(
        active(&plan),
        Some(V1),
        "stable serves while revision 3 starts"
    );
    assert_eq!(
        replicas_of(&plan, V1),
        Some(2),
        "v1 exists: scaled, not re-applied"
    );
    assert!(deletes(&plan, V2));
    assert_eq!(plan.rollback.map(|r| r.reason), Some(FailureReason::Manual));
    let plan = w.step();
    assert_eq!(w.status.phase, Phase::RolledBack);
    assert_eq!(active(&plan), Some(V1));
    assert_eq!(w.status.stable_revision, Some(3));
}

#[test]
fn failing_rollback_target_leaves_stable_serving() {
    let mut w = v2_stable();
    w.control_once(Control::RollbackTo(Target::Revision(1)));
    w.pods(V1, 0, Some(FailureReason::CrashLoop));
    let plan = w.step();
    assert_eq!(w.status.phase, Phase::RolledBack);
    assert_eq!(active(&plan), Some(V2), "v2 never lost the traffic");
    assert_eq!(w.outcome(3).0, Outcome::Failed);
    let plan = w.step();
    assert_eq!(active(&plan), Some(V2));
    assert_eq!(replicas_of(&plan, V1), Some(0));
    assert!(plan.events.is_empty());
}

#[test]
fn rollback_requests_that_cannot_be_honoured() {
    let mut failed = World::with_v2_ready();
    failed.smoke = SmokeResult::Failed("500".into());
    failed.step();
    assert_eq!(failed.outcome(2).0, Outcome::Failed);
    let cases: [(&str, World, Control, &str); 5] = [
        (
            "unknown",
            v2_stable(),
            Control::RollbackTo(Target::Revision(9)),
            "not in the history",
        ),
        (
            "failed",
            failed,
            Control::RollbackTo(Target::Revision(2)),
            "never became healthy",
        ),
        (
            "serving",
            v2_stable(),
            Control::RollbackTo(Target::Revision(2)),
            "already serves",
        ),
        (
            "nothing earlier",
            {
                let mut w = World::default_spec();
                w.roll_out_healthy();
                w
            },
            Control::RollbackTo(Target::Previous),
            "no earlier healthy revision",
        ),
        (
            "bad value",
            v2_stable(),
            Control::Invalid("shortener.dev/rollback-to must be a revision number".into()),
            "must be a revision number",
        ),
    ];
    for (name, mut w, control, says) in cases {
        let before = w.status.history.clone();
        let phase = w.status.phase;
        let plan = w.control_once(control);
        assert_eq!(
            event_reasons(&plan),
            vec![reason::MANUAL_CONTROL_REJECTED],
            "{name}"
        );
        assert!(plan.events[0].warning, "{name}");
        assert!(
            plan.events[0].message.contains(says),
            "{name}: {}",
            plan.events[0].message
        );
        assert!(
            w.status.message.contains(says),
            "{name}: {}",
            w.status.message
        );
        assert_eq!(w.status.history, before, "{name}: nothing changed");
        assert_eq!(w.status.phase, phase, "{name}");
    }
}
