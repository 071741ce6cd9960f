//! `spec.replicas` changes (`kubectl scale`, an HPA) scale the serving revision in place:
//! no new revision, the same pod template hash, the phase stays; `status.replicas` and
//! `status.selector` feed the scale subresource.

use super::*;

fn scale_to(w: &mut World, replicas: i32) -> Plan {
    w.spec.replicas = replicas;
    w.step()
}

#[test]
fn blue_green_scales_the_serving_revision_without_a_rollout() {
    let mut w = World::default_spec();
    w.roll_out_healthy();
    assert_eq!(w.status.replicas, Some(2));
    assert_eq!(
        w.status.selector.as_deref(),
        Some("app.kubernetes.io/instance=web,shortener.dev/revision=hash-v1")
    );
    let plan = scale_to(&mut w, 3);
    assert_eq!(w.status.phase, Phase::Healthy);
    assert_eq!(w.status.history.len(), 1, "no new revision");
    assert_eq!(w.status.current_revision, Some(1));
    assert_eq!(
        plan.workload,
        Workload::BlueGreen(vec![DeploymentAction::Apply {
            hash: V1.into(),
            replicas: 3
        }])
    );
    assert!(plan.events.is_empty(), "no transition: {:?}", plan.events);
    w.pods(V1, 3, None);
    w.step();
    assert_eq!(w.status.replicas, Some(3));
    assert_eq!(w.condition("Reconciling").status, "False");
    assert_eq!(w.condition("Stalled").status, "False");
}

#[test]
fn blue_green_scales_the_stable_revision_while_rolled_back() {
    let mut w = World::with_v2_ready();
    w.smoke = SmokeResult::Failed("500".into());
    w.step();
    assert_eq!(w.status.phase, Phase::RolledBack);
    assert_eq!(w.condition("Stalled").status, "True");
    assert_eq!(w.condition("Stalled").reason, "SmokeTestFailed");
    let plan = scale_to(&mut w, 4);
    assert_eq!(
        w.status.phase,
        Phase::RolledBack,
        "the failed spec is not retried"
    );
    let Workload::BlueGreen(actions) = &plan.workload else {
        panic!("blue-green");
    };
    assert!(
        actions.contains(&DeploymentAction::Scale {
            hash: V1.into(),
            replicas: 4
        }),
        "{actions:?}"
    );
    assert_eq!(
        w.status.selector.as_deref(),
        Some("app.kubernetes.io/instance=web,shortener.dev/revision=hash-v1")
    );
}

#[test]
fn rolling_scales_the_one_deployment_in_place() {
    let mut w = rolling_world();
    w.step();
    w.pods(V1, 2, None);
    w.step();
    w.advance(5);
    w.step();
    assert_eq!(w.status.phase, Phase::Healthy);
    assert_eq!(
        w.status.selector.as_deref(),
        Some("app.kubernetes.io/instance=web")
    );
    let plan = scale_to(&mut w, 3);
    assert_eq!(target(&plan), (V1.to_string(), None, 3));
    assert_eq!(w.status.phase, Phase::Healthy);
    assert_eq!(w.status.history.len(), 1, "no new revision");
    w.pods(V1, 3, None);
    w.step();
    assert_eq!(w.status.replicas, Some(3));
}

#[test]
fn a_rollout_reports_reconciling_then_current() {
    let mut w = World::default_spec();
    w.step();
    assert_eq!(w.condition("Reconciling").status, "True");
    assert_eq!(w.condition("Stalled").status, "False");
    assert_eq!(
        w.status.replicas,
        Some(0),
        "nothing serves before the first promotion"
    );
    w.pods(V1, 2, None);
    w.step();
    assert_eq!(w.status.phase, Phase::Analyzing);
    assert_eq!(w.condition("Reconciling").status, "True");
    for c in &w.status.conditions {
        assert_eq!(c.observed_generation, Some(1), "{}", c.type_);
    }
}
