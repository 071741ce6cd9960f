//! The promotion gate: waiting, starting by itself, warnings; a retry asked while gated.

use super::*;

#[test]
fn first_release_waits_for_its_gate_then_starts_by_itself() {
    let mut w = World::default_spec();
    w.gate = awaiting("shortener:v1", None);
    let plan = w.step();
    assert_eq!(w.status.phase, Phase::Blocked);
    assert_eq!(w.status.current_revision, None, "no revision started");
    assert!(!applies(&plan, V1), "nothing deployed");
    assert_eq!(active(&plan), None);
    let progressing = w.condition("Progressing");
    assert_eq!(progressing.status, "False");
    assert_eq!(progressing.reason, "AwaitingPromotion");
    assert!(progressing.message.contains("staging/web"));
    assert!(progressing.message.contains("shortener:v1"));
    assert_eq!(plan.events.len(), 1);
    assert!(!plan.events[0].warning, "waiting is normal");

    w.gate = GateState::Open;
    let plan = w.step();
    assert_eq!(w.status.phase, Phase::Progressing);
    assert_eq!(w.status.current_revision, Some(1));
    assert!(applies(&plan, V1));
}

#[test]
fn new_image_waits_while_stable_keeps_serving() {
    let mut w = World::default_spec();
    w.roll_out_healthy();
    w.set_image("shortener:v2", V2);
    w.gate = awaiting("shortener:v2", Some("shortener:v1"));
    let plan = w.step();
    assert_eq!(w.status.phase, Phase::Blocked);
    assert_eq!(active(&plan), Some(V1));
    assert_eq!(replicas_of(&plan, V1), Some(2));
    assert!(!applies(&plan, V2));
    assert_eq!(w.status.current_revision, Some(1));
    assert_eq!(w.condition("Ready").status, "False");
    assert_eq!(w.condition("Degraded").status, "False");
    assert_eq!(plan.events[0].reason, "AwaitingPromotion");

    w.gate = GateState::Open;
    let plan = w.step();
    assert_eq!(w.status.phase, Phase::Progressing);
    assert_eq!(w.status.current_revision, Some(2));
    assert!(applies(&plan, V2));
    assert_eq!(
        active(&plan),
        Some(V1),
        "v2 gets traffic only after its checks"
    );
}

#[test]
fn image_that_failed_in_the_gate_is_never_deployed() {
    let mut w = World::default_spec();
    w.roll_out_healthy();
    w.set_image("shortener:v2", V2);
    // Staging tried v2, it failed there: staging's stable is still v1.
    w.gate = awaiting("shortener:v2", Some("shortener:v1"));
    for i in 0..10 {
        w.advance(60);
        let plan = w.step();
        assert_eq!(w.status.phase, Phase::Blocked);
        assert!(!applies(&plan, V2));
        assert_eq!(active(&plan), Some(V1));
        assert_eq!(w.status.history.len(), 1);
        if i > 0 {
            assert!(plan.events.is_empty(), "one Event, not one per reconcile");
        }
    }
}

#[test]
fn missing_gate_and_cycles_are_warnings_not_hangs() {
    let refused = "Prometheus address http://kubernetes.default.svc is not allowed";
    let cases = [
        (
            GateState::NotFound {
                gate: "staging/web".into(),
            },
            "PromotionGateNotFound",
            "staging/web",
        ),
        (
            GateState::Cycle {
                gate: "staging/web".into(),
            },
            "PromotionGateCycle",
            "staging/web",
        ),
        (
            GateState::Forbidden {
                gate: "staging/web".into(),
            },
            "PromotionGateForbidden",
            "staging/web",
        ),
        // A Prometheus address outside --prometheus-allow holds the rollout the same way.
        (
            GateState::PrometheusRefused(refused.into()),
            "PrometheusAddressRefused",
            refused,
        ),
    ];
    for (gate, why, needle) in cases {
        let mut w = World::default_spec();
        w.roll_out_healthy();
        w.set_image("shortener:v2", V2);
        w.gate = gate;
        let plan = w.step();
        assert_eq!(w.status.phase, Phase::Blocked, "{why}");
        assert_eq!(w.condition("Progressing").reason, why);
        assert!(plan.events[0].warning, "{why}");
        assert!(w.status.message.contains(needle), "{why}");
        assert_eq!(active(&plan), Some(V1), "{why}");
    }
}

#[test]
fn gate_does_not_touch_a_release_already_at_its_image() {
    let mut w = World::default_spec();
    w.roll_out_healthy();
    w.gate = awaiting("shortener:v1", Some("shortener:v0"));
    let plan = w.step();
    assert_eq!(w.status.phase, Phase::Healthy);
    assert_eq!(active(&plan), Some(V1));
}

#[test]
fn retry_asked_while_gated_waits_for_the_gate() {
    let mut w = World::with_v2_ready();
    w.smoke = SmokeResult::Failed("500".into());
    w.step();
    assert_eq!(w.outcome(2).0, Outcome::Failed);
    w.smoke = SmokeResult::Passed;
    w.gate = awaiting("shortener:v2", Some("shortener:v1"));
    w.retry = Some("1".into());
    let plan = w.step();
    assert_eq!(w.status.phase, Phase::Blocked);
    assert!(!applies(&plan, V2) || replicas_of(&plan, V2) == Some(0));
    w.gate = GateState::Open;
    w.step();
    assert_eq!(w.status.phase, Phase::Progressing, "the retry still counts");
    assert_eq!(w.status.current_revision, Some(3));
}
