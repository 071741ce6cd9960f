//! The rollout's unit tests, one file per concern, sharing one fixture: [`World`], a
//! release and its simulated cluster stepped through the same decide->probe loop as the
//! controller ([`settle`]).

mod budget;
mod gate;
mod manual;
mod progress;
mod promql;
mod relative;
mod rolling;
mod scale;

use std::future::Future;
use std::time::Duration;

use futures::FutureExt;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::*;
use crate::api::{
    Condition, Outcome, Phase, ShortenerReleaseSpec, ShortenerReleaseStatus, Strategy,
};
use crate::gate::GateState;
use crate::manual::{Control, Target};

const V1: &str = "hash-v1";

const V2: &str = "hash-v2";

const V3: &str = "hash-v3";

/// A release and its cluster, stepped through decisions like the controller does.
struct World {
    spec: ShortenerReleaseSpec,
    status: ShortenerReleaseStatus,
    hash: &'static str,
    observed: Observed,
    smoke: SmokeResult,
    sample: AnalysisSample,
    now: Timestamp,
    paused: bool,
    retry: Option<String>,
    budget_override: bool,
    gate: GateState,
    control: Option<Control>,
    probes: Vec<Probe>,
}

impl World {
    fn new(spec: serde_json::Value) -> Self {
        World {
            spec: serde_json::from_value(spec).unwrap(),
            status: ShortenerReleaseStatus::default(),
            hash: V1,
            observed: Observed::default(),
            smoke: SmokeResult::Passed,
            sample: sample(100, 0),
            now: Timestamp::from_second(1_800_000_000).unwrap(),
            paused: false,
            retry: None,
            budget_override: false,
            gate: GateState::Open,
            control: None,
            probes: Vec::new(),
        }
    }

    fn default_spec() -> Self {
        Self::new(serde_json::json!({
            "image": "shortener:v1", "replicas": 2,
            "analysis": {"intervalSeconds": 1, "bakeSeconds": 5},
            "progressDeadlineSeconds": 60
        }))
    }

    fn advance(&mut self, secs: i64) {
        self.now += SignedDuration::from_secs(secs);
    }

    fn pods(&mut self, hash: &str, ready: i32, failure: Option<FailureReason>) {
        let obs = self.observed.revisions.entry(hash.to_string()).or_default();
        obs.ready_pods = ready;
        obs.failure = failure.map(|reason| PodFailure {
            reason,
            message: "seen on pod".into(),
        });
    }

    /// One reconcile: the controller's decide->probe loop with the fixture's answers, then
    /// the plan's workload applied to the simulated cluster.
    fn step(&mut self) -> Plan {
        self.probes.clear();
        let input = Input {
            name: "web",
            spec: &self.spec,
            generation: Some(1),
            status: &self.status,
            desired_hash: self.hash,
            paused: self.paused,
            retry: self.retry.as_deref(),
            budget_override: self.budget_override,
            gate: &self.gate,
            control: self.control.as_ref(),
            observed: &self.observed,
            now: self.now,
        };
        let mut answers = Answers {
            smoke: &self.smoke,
            sample: &self.sample,
            asked: &mut self.probes,
        };
        let plan = settle(&input, &mut answers)
            .now_or_never()
            .expect("the fixture answers probes at once")
            .unwrap_or_else(|p| panic!("probe asked twice: {p:?}"));
        self.status = plan.status.clone();
        match &plan.workload {
            Workload::BlueGreen(actions) => self.run_blue_green(actions),
            Workload::Rolling(target) => self.run_rolling(target.as_ref()),
        }
        plan
    }

    /// What Kubernetes makes of a blue-green plan's Deployments.
    fn run_blue_green(&mut self, actions: &[DeploymentAction]) {
        for d in actions {
            match d {
                DeploymentAction::Apply { hash, replicas }
                | DeploymentAction::Restore { hash, replicas, .. } => {
                    let obs = self.observed.revisions.entry(hash.clone()).or_default();
                    obs.replicas = Some(*replicas);
                }
                DeploymentAction::Delete { hash } => {
                    self.observed.revisions.remove(hash);
                }
                DeploymentAction::Scale { hash, replicas } => {
                    if let Some(obs) = self.observed.revisions.get_mut(hash) {
                        obs.replicas = Some(*replicas);
                        if *replicas == 0 {
                            // Its pods go; scaling up again needs `pods()`.
                            obs.ready_pods = 0;
                            obs.failure = None;
                        }
                    }
                }
            }
        }
    }

    /// A `Rolling` plan: the one Deployment now carries the target's revision; pods change
    /// only through `pods()`, as Kubernetes replaces them.
    fn run_rolling(&mut self, target: Option<&RollingTarget>) {
        let Some(t) = target else { return };
        for obs in self.observed.revisions.values_mut() {
            obs.replicas = None;
        }
        let obs = self.observed.revisions.entry(t.hash.clone()).or_default();
        obs.replicas = Some(t.replicas);
    }

    fn set_image(&mut self, image: &str, hash: &'static str) {
        self.spec.image = image.into();
        self.hash = hash;
    }

    fn outcome(&self, revision: i64) -> (Outcome, Option<String>) {
        let r = self
            .status
            .history
            .iter()
            .find(|r| r.revision == revision)
            .unwrap();
        (r.outcome, r.reason.clone())
    }

    fn condition(&self, type_: &str) -> &Condition {
        self.status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap()
    }

    /// Rolls the current spec out to Healthy.
    fn roll_out_healthy(&mut self) {
        self.step();
        self.pods(self.hash, self.spec.replicas, None);
        self.step();
        assert_eq!(self.status.phase, Phase::Analyzing);
        for _ in 0..10 {
            self.advance(1);
            self.step();
        }
        assert_eq!(self.status.phase, Phase::Healthy);
    }

    /// v1 Healthy, then v2 applied and its pods ready (next step decides on v2).
    fn with_v2_ready() -> Self {
        let mut w = Self::default_spec();
        w.roll_out_healthy();
        w.set_image("shortener:v2", V2);
        w.step();
        w.pods(V2, 2, None);
        w
    }
}

fn active(plan: &Plan) -> Option<&str> {
    match &plan.routing.as_ref().unwrap().active {
        ActiveService::Revision(active) => active.as_deref(),
        ActiveService::Release => panic!("a blue-green release's Service selects one revision"),
    }
}

/// A blue-green plan's Deployment actions.
fn deployments(plan: &Plan) -> &[DeploymentAction] {
    match &plan.workload {
        Workload::BlueGreen(actions) => actions,
        other => panic!("not a blue-green plan: {other:?}"),
    }
}

fn replicas_of(plan: &Plan, hash: &str) -> Option<i32> {
    deployments(plan).iter().find_map(|d| match d {
        DeploymentAction::Apply { hash: h, replicas } if h == hash => Some(*replicas),
        DeploymentAction::Scale { hash: h, replicas } if h == hash => Some(*replicas),
        DeploymentAction::Restore {
            hash: h, replicas, ..
        } if h == hash => Some(*replicas),
        _ => None,
    })
}

/// What one scrape of the new revision's pods found since the previous one.
fn sample(requests: i64, errors: i64) -> AnalysisSample {
    AnalysisSample {
        requests,
        errors,
        ..Default::default()
    }
}

fn deletes(plan: &Plan, hash: &str) -> bool {
    deployments(plan)
        .iter()
        .any(|d| *d == DeploymentAction::Delete { hash: hash.into() })
}

fn budget(w: &World) -> crate::api::budget::BudgetStatus {
    w.status.budget.clone().unwrap()
}

fn awaiting(image: &str, gate_stable: Option<&str>) -> GateState {
    GateState::Awaiting {
        gate: "staging/web".into(),
        image: image.into(),
        gate_stable: gate_stable.map(str::to_string),
    }
}

fn applies(plan: &Plan, hash: &str) -> bool {
    deployments(plan)
        .iter()
        .any(|d| matches!(d, DeploymentAction::Apply { hash: h, .. } if h == hash))
}

impl World {
    /// One reconcile with a manual control set; the operator then removes it.
    fn control_once(&mut self, control: Control) -> Plan {
        self.control = Some(control);
        let plan = self.step();
        self.control = None;
        plan
    }
}

fn restores(plan: &Plan, hash: &str) -> Option<(String, i32)> {
    deployments(plan).iter().find_map(|d| match d {
        DeploymentAction::Restore {
            hash: h,
            image,
            replicas,
        } if h == hash => Some((image.clone(), *replicas)),
        _ => None,
    })
}

fn event_reasons(plan: &Plan) -> Vec<&str> {
    plan.events.iter().map(|e| e.reason.as_str()).collect()
}

/// v1 then v2 rolled out Healthy; v1's Deployment is kept, scaled to zero.
fn v2_stable() -> World {
    let mut w = World::default_spec();
    w.roll_out_healthy();
    w.set_image("shortener:v2", V2);
    w.roll_out_healthy();
    let v1 = w.observed.revisions.get(V1).map(|o| o.replicas);
    assert_eq!(v1, Some(Some(0)), "v1 kept at zero replicas");
    w
}

/// As `v2_stable`, but v1's Deployment has been deleted since (by hand, or it left the
/// history and was pruned).
fn v2_stable_v1_gone() -> World {
    let mut w = v2_stable();
    w.observed.revisions.remove(V1);
    w
}

fn v2_clone(w: &World) -> World {
    World {
        spec: w.spec.clone(),
        status: w.status.clone(),
        hash: w.hash,
        observed: w.observed.clone(),
        smoke: w.smoke.clone(),
        sample: w.sample.clone(),
        now: w.now,
        paused: false,
        retry: None,
        budget_override: false,
        gate: GateState::Open,
        control: None,
        probes: Vec::new(),
    }
}

// Rolling: the same decisions, folded onto one Deployment by `rolling_target`.

impl World {
    /// Rolling: v2's pods replaced v1's and passed their checks; its next scrape is bad.
    fn promote_v2_with_errors(&mut self) {
        self.pods(V2, 2, None);
        self.pods(V1, 0, None);
        self.step();
        assert_eq!(self.status.phase, Phase::Analyzing);
        self.sample = sample(100, 50);
    }
}

fn rolling_world() -> World {
    let mut w = World::default_spec();
    w.spec.strategy = Strategy::Rolling;
    w
}

fn target(plan: &Plan) -> (String, Option<String>, i32) {
    let Workload::Rolling(Some(t)) = &plan.workload else {
        panic!("no Rolling target: {:?}", plan.workload);
    };
    (t.hash.clone(), t.image.clone(), t.replicas)
}

fn runs(hash: &str, image: Option<&str>) -> (String, Option<String>, i32) {
    (hash.to_string(), image.map(str::to_string), 2)
}

/// The fixture's answers to the probes a decision asks for; records what was asked.
struct Answers<'a> {
    smoke: &'a SmokeResult,
    sample: &'a AnalysisSample,
    asked: &'a mut Vec<Probe>,
}

impl Prober for Answers<'_> {
    fn smoke_test(&mut self, hash: &str) -> impl Future<Output = SmokeResult> + Send {
        self.asked.push(Probe::SmokeTest { hash: hash.into() });
        std::future::ready(self.smoke.clone())
    }

    fn analyze(&mut self, hash: &str) -> impl Future<Output = AnalysisSample> + Send {
        self.asked.push(Probe::Analyze { hash: hash.into() });
        std::future::ready(self.sample.clone())
    }
}
