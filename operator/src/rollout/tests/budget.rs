//! The SLA budget: downtime charged once, outages while nothing serves, the freeze.

use super::*;

#[test]
fn downtime_of_a_rolled_back_release_is_charged_once() {
    let mut w = World::with_v2_ready();
    w.step();
    w.advance(1);
    w.step(); // clean interval
    w.sample = sample(10, 10);
    w.advance(2);
    let plan = w.step();
    assert_eq!(w.status.phase, Phase::RolledBack);
    assert_eq!(
        plan.downtime_charged, 2,
        "errors since the last clean sample"
    );
    let b = budget(&w);
    assert_eq!(b.allowed_seconds, 900);
    assert_eq!(b.used_seconds, 2);
    assert_eq!(b.remaining_seconds, 898);
    assert!(b.ledger.open_outage.is_none(), "rollback closed the outage");
    assert_eq!(
        w.status.last_incident.clone().unwrap().downtime_seconds,
        2.0
    );
    // Later reconciles charge nothing more.
    w.advance(30);
    let plan = w.step();
    assert_eq!(plan.downtime_charged, 0);
    assert_eq!(budget(&w).used_seconds, 2);
}

#[test]
fn serving_revision_without_ready_pods_is_downtime_until_it_recovers() {
    let mut w = World::default_spec();
    w.roll_out_healthy();
    w.pods(V1, 0, None);
    w.step();
    w.advance(5);
    let plan = w.step();
    assert_eq!(plan.downtime_charged, 5);
    w.pods(V1, 2, None);
    w.advance(1);
    w.step();
    let b = budget(&w);
    assert_eq!(b.used_seconds, 6);
    assert!(b.ledger.open_outage.is_none());
}

#[test]
fn exhausted_budget_freezes_new_rollouts_unless_overridden() {
    let mut w = World::with_v2_ready();
    w.spec.sla.allowed_downtime_per_year = "1s".into();
    w.spec.sla.freeze_when_exhausted = true;
    w.step();
    w.sample = sample(10, 10);
    w.advance(2);
    w.step();
    assert_eq!(w.status.phase, Phase::RolledBack);
    assert_eq!(budget(&w).remaining_seconds, 0);

    w.set_image("shortener:v3", V3);
    let plan = w.step();
    assert_eq!(w.status.phase, Phase::Blocked);
    assert_eq!(w.condition("Ready").reason, reason::BUDGET_EXHAUSTED);
    assert_eq!(active(&plan), Some(V1));
    assert!(
        !deployments(&plan)
            .iter()
            .any(|d| matches!(d, DeploymentAction::Apply { hash, .. } if hash == V3)),
        "nothing of v3 is created"
    );
    assert_eq!(w.status.current_revision, Some(2));
    assert_eq!(plan.events[0].reason, reason::BUDGET_EXHAUSTED);

    w.budget_override = true;
    w.step();
    assert_eq!(w.status.phase, Phase::Progressing);
    assert_eq!(w.status.current_revision, Some(3));
}
