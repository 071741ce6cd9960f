//! The rollout as a pure function: (spec, status, what was observed, now) -> the next step.
//!
//! Nothing here talks to the cluster. The reconcile observes, calls [`settle`], which calls
//! [`decide`], runs a probe when asked to (smoke test, metrics scrape) and decides again
//! with the result; then the write layer applies the [`Plan`]. Everything needed to resume
//! lives in the status this returns, so a restarted operator carries on where it stopped.
//!
//! - this module: the decision's inputs and outputs, [`decide`], [`settle`], the top of
//!   the decision (`run`) and the strategy rules;
//! - [`progress`]: start, wait for pods, smoke test, promote, bake, stable;
//! - [`failure`]: failures before and after promotion, and staying failed;
//! - [`manual`]: promote, abort and rollback-to by hand;
//! - [`plan`]: which revisions run, Services, budget charge, history;
//! - [`conditions`]: the status conditions per phase, kstatus's `Reconciling`/`Stalled` too;
//! - [`blue_green`], [`rolling`]: one module per strategy (the [`Rules`] that differ).

mod blue_green;
mod checks;
pub mod conditions;
mod failure;
mod manual;
mod plan;
mod progress;
mod rolling;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::api::reason;
use crate::api::{
    FailureReason, Outcome, Phase, RevisionRecord, ShortenerReleaseSpec, ShortenerReleaseStatus,
    Strategy,
};
use crate::gate::GateState;
use crate::manual::Control;

pub use rolling::RollingTarget;

/// A failure seen on a revision's pods.
#[derive(Clone, Debug, PartialEq)]
pub struct PodFailure {
    pub reason: FailureReason,
    pub message: String,
}

/// What the operator saw of one revision (one Deployment and its pods).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RevisionObservation {
    /// Pods that are Ready and not terminating.
    pub ready_pods: i32,
    /// The first failure signal among the pods, if any.
    pub failure: Option<PodFailure>,
    /// The Deployment's `spec.replicas`; `None` when only pods were seen (Rolling).
    pub replicas: Option<i32>,
}

/// Result of a smoke test against the new revision's pods.
#[derive(Clone, Debug, PartialEq)]
pub enum SmokeResult {
    Passed,
    Failed(String),
}

/// API-route requests (not 4xx) and 5xx answers of the new revision since the previous
/// sample.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct AnalysisSample {
    pub requests: i64,
    pub errors: i64,
    /// The interval's latency, when the pods export a duration histogram and it timed any.
    pub latency: Option<Latency>,
    /// Each pod's counters as just read: the baseline of the next sample.
    pub pod_counts: BTreeMap<String, crate::api::RequestCounts>,
    /// The PromQL queries' verdict, with `spec.analysis.prometheus`.
    pub prometheus: Option<crate::promql::Verdict>,
}

/// The p99 request duration of an interval, from the histogram's bucket deltas.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Latency {
    pub p99_seconds: f64,
    /// Requests the histogram timed in the interval.
    pub observed: i64,
}

/// Everything observed for one reconcile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// Revisions that have a Deployment, by pod template hash.
    pub revisions: BTreeMap<String, RevisionObservation>,
    /// Smoke test result for the desired revision, when [`decide`] asked for one.
    pub smoke: Option<SmokeResult>,
    /// Analysis sample for the desired revision, when [`decide`] asked for one.
    pub analysis: Option<AnalysisSample>,
}

/// The inputs of one decision.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    /// The release's name (its pods' `app.kubernetes.io/instance` label).
    pub name: &'a str,
    pub spec: &'a ShortenerReleaseSpec,
    pub generation: Option<i64>,
    pub status: &'a ShortenerReleaseStatus,
    /// Pod template hash of the spec.
    pub desired_hash: &'a str,
    /// The `shortener.dev/paused` annotation is "true".
    pub paused: bool,
    /// Value of the `shortener.dev/retry` annotation.
    pub retry: Option<&'a str>,
    /// The `shortener.dev/budget-override` annotation is "true": roll out despite a freeze.
    pub budget_override: bool,
    /// The promotion gate (`spec.promotion.requires`): anything but open starts nothing new.
    pub gate: &'a GateState,
    /// A manual control read from its annotation (see [`crate::manual`]), acted on once.
    pub control: Option<&'a Control>,
    pub observed: &'a Observed,
    pub now: Timestamp,
}

/// I/O the decision needs before it can go on.
#[derive(Clone, Debug, PartialEq)]
pub enum Probe {
    SmokeTest { hash: String },
    Analyze { hash: String },
}

/// What to do with one revision's Deployment.
#[derive(Clone, Debug, PartialEq)]
pub enum DeploymentAction {
    /// Apply the Deployment built from the current spec with this many replicas.
    Apply { hash: String, replicas: i32 },
    /// Scale an existing Deployment built from an older spec.
    Scale { hash: String, replicas: i32 },
    /// Delete the Deployment.
    Delete { hash: String },
    /// Recreate an earlier revision's Deployment (a manual rollback): the current spec with
    /// that revision's image, under its pod template hash.
    Restore {
        hash: String,
        image: String,
        replicas: i32,
    },
}

/// What the Services select.
#[derive(Clone, Debug, PartialEq)]
pub struct Routing {
    pub active: ActiveService,
    /// The revision the preview Service selects; `None` selects no pods.
    pub preview: Option<String>,
}

/// What the active Service `NAME` selects.
#[derive(Clone, Debug, PartialEq)]
pub enum ActiveService {
    /// One revision's pods; `None` selects no pods (before the first promotion).
    Revision(Option<String>),
    /// Every pod of the release, whichever revision it runs.
    Release,
}

/// What runs the release's pods, in the terms of its strategy: decided once per plan, so
/// the write layer matches on it once.
#[derive(Clone, Debug, PartialEq)]
pub enum Workload {
    /// One Deployment per revision, `NAME-<hash>`: what to do with each.
    BlueGreen(Vec<DeploymentAction>),
    /// One Deployment `NAME`, rolled in place; `None` leaves it as it is.
    Rolling(Option<RollingTarget>),
}

/// An Event to record.
#[derive(Clone, Debug, PartialEq)]
pub struct EventNote {
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

/// Traffic moved back to the stable revision in this step.
#[derive(Clone, Debug, PartialEq)]
pub struct RollbackNote {
    pub reason: FailureReason,
    pub detected_at: Timestamp,
}

/// The step to apply.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub status: ShortenerReleaseStatus,
    pub workload: Workload,
    /// `None`: leave the Services as they are.
    pub routing: Option<Routing>,
    pub events: Vec<EventNote>,
    pub rollback: Option<RollbackNote>,
    /// Traffic is back on a healthy revision with this step: when the failure it ends was
    /// detected (for `time_to_restore_seconds`). With blue-green that is the rollback's step;
    /// a `Rolling` rollback restores later, once the failed pods are gone.
    pub restored: Option<Timestamp>,
    /// A revision failed in this step (an incident).
    pub failure: Option<FailureReason>,
    pub requeue: Duration,
    /// Downtime seconds newly charged to the SLA budget in this step.
    pub downtime_charged: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Probe(Probe),
    Act(Box<Plan>),
}

const FAST_REQUEUE: Duration = Duration::from_secs(1);
const IDLE_REQUEUE: Duration = Duration::from_secs(300);
/// The watch on ShortenerReleases wakes a gated release at once; this only covers a gate
/// in a namespace the operator does not watch.
const GATE_REQUEUE: Duration = Duration::from_secs(30);

/// What differs between rollout strategies. Each strategy is one module implementing it;
/// [`rules`] picks it from the spec, once per decision.
trait Rules: Sync {
    /// Ready pods serving users while `active` is the revision with the traffic.
    fn serving_pods(&self, revisions: &BTreeMap<String, RevisionObservation>, active: &str) -> i32;
    /// Whether moving the traffic back to the stable revision ends an outage in that step
    /// (else: once the failed revision's pods no longer serve).
    fn rollback_restores_at_once(&self) -> bool;
    /// Whether a retired revision that was healthy keeps its Deployment, at zero replicas,
    /// while it is in the history (else: deleted).
    fn keeps_retired_deployments(&self) -> bool;
    /// Whether revisions are also known from their pods (one Deployment runs them all).
    fn revisions_from_pods(&self) -> bool;
    /// What the active Service selects, given the revision with the traffic.
    fn active_service(&self, active: Option<String>) -> ActiveService;
    /// The serving pods as a label selector string (`status.selector`, the scale
    /// subresource's `labelSelectorPath`), given the revision with the traffic.
    fn selector(&self, name: &str, active: Option<&str>) -> String;
    /// The workload: what to do with each revision's pods (`revisions`: per revision to
    /// run or retire), in the strategy's terms.
    fn workload(
        &self,
        revisions: Vec<DeploymentAction>,
        status: &ShortenerReleaseStatus,
    ) -> Workload;
}

/// The rules of a strategy: the one place a new strategy is added.
fn rules(strategy: Strategy) -> &'static dyn Rules {
    match strategy {
        Strategy::BlueGreen => &blue_green::BlueGreen,
        Strategy::Rolling => &rolling::Rolling,
    }
}

/// Whether the strategy's revisions are also known from their pods (for the observer).
pub fn revisions_from_pods(strategy: Strategy) -> bool {
    rules(strategy).revisions_from_pods()
}

/// The probes a decision may ask for, answered by the controller over HTTP and by the unit
/// tests from their fixture.
pub trait Prober {
    fn smoke_test(&mut self, hash: &str) -> impl Future<Output = SmokeResult> + Send;
    fn analyze(&mut self, hash: &str) -> impl Future<Output = AnalysisSample> + Send;
}

/// Decides, runs the probe the decision asks for and decides again with its result, until
/// the plan is complete: at most one probe of each kind per reconcile. `Err` carries a
/// probe asked for a second time (a bug in the decision; the caller retries later).
pub async fn settle<P: Prober>(input: &Input<'_>, prober: &mut P) -> Result<Plan, Probe> {
    let mut observed = input.observed.clone();
    loop {
        let step = Input {
            observed: &observed,
            ..input.clone()
        };
        match decide(&step) {
            Decision::Act(plan) => return Ok(*plan),
            Decision::Probe(Probe::SmokeTest { hash }) if observed.smoke.is_none() => {
                observed.smoke = Some(prober.smoke_test(&hash).await);
            }
            Decision::Probe(Probe::Analyze { hash }) if observed.analysis.is_none() => {
                observed.analysis = Some(prober.analyze(&hash).await);
            }
            Decision::Probe(again) => return Err(again),
        }
    }
}

/// Decides the next step of a release.
pub fn decide(input: &Input<'_>) -> Decision {
    let mut d = Decider::new(input);
    match d.run() {
        Some(probe) => Decision::Probe(probe),
        None => Decision::Act(Box::new(d.finish())),
    }
}

/// What the plan does with the Deployments and Services; settled by `run()`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Course {
    /// Roll the spec's revision out (or keep it), the stable revision beside it.
    Spec,
    /// Leave everything as it is (paused).
    Untouched,
    /// A manual rollback holds the release: its revision runs instead of the spec's.
    Pinned,
    /// Nothing new starts (promotion gate, budget freeze): the stable revision serves alone.
    Held,
}

struct Decider<'a> {
    input: &'a Input<'a>,
    st: ShortenerReleaseStatus,
    events: Vec<EventNote>,
    rollback: Option<RollbackNote>,
    restored: Option<Timestamp>,
    failure: Option<FailureReason>,
    /// The strategy's rules, picked once from the spec.
    rules: &'static dyn Rules,
    /// What the plan does with the Deployments and Services.
    course: Course,
    active: Option<String>,
    requeue: Duration,
    condition_reason: String,
    /// What this step learnt about the serving revision, for the SLA budget.
    health: Health,
    /// A manual control was refused: said in the status message.
    rejected: Option<String>,
}

/// Whether the revision that has the traffic works, as far as this step knows.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Health {
    Unknown,
    Up,
    /// Down since the given instant.
    Down(Timestamp),
    /// Was down since the given instant and serves again now (rolled back).
    Restored(Timestamp),
}

impl<'a> Decider<'a> {
    fn new(input: &'a Input<'a>) -> Self {
        let mut st = input.status.clone();
        st.observed_generation = input.generation;
        Self {
            input,
            st,
            events: Vec::new(),
            rollback: None,
            restored: None,
            failure: None,
            rules: rules(input.spec.strategy),
            course: Course::Spec,
            active: None,
            requeue: IDLE_REQUEUE,
            condition_reason: String::new(),
            health: Health::Unknown,
            rejected: None,
        }
    }

    pub(super) fn now(&self) -> Timestamp {
        self.input.now
    }

    pub(super) fn record(&self, revision: Option<i64>) -> Option<&RevisionRecord> {
        let revision = revision?;
        self.st.history.iter().find(|r| r.revision == revision)
    }

    pub(super) fn record_mut(&mut self, revision: i64) -> Option<&mut RevisionRecord> {
        self.st.history.iter_mut().find(|r| r.revision == revision)
    }

    pub(super) fn stable_hash(&self) -> Option<String> {
        self.record(self.st.stable_revision)
            .map(|r| r.pod_template_hash.clone())
    }

    pub(super) fn set_phase(&mut self, phase: Phase, reason: &str, message: String) {
        self.st.phase = phase;
        self.st.message = message;
        self.condition_reason = reason.to_string();
    }

    pub(super) fn event(&mut self, warning: bool, reason: &str, message: String) {
        self.events.push(EventNote {
            warning,
            reason: reason.to_string(),
            message,
        });
    }

    /// Returns a probe to run first, or None when the plan is complete.
    pub(super) fn run(&mut self) -> Option<Probe> {
        let input = self.input;
        if input.paused {
            self.course = Course::Untouched;
            if self.st.phase != Phase::Paused {
                self.event(false, reason::PAUSED, "rollout paused by annotation".into());
            }
            self.set_phase(
                Phase::Paused,
                reason::PAUSED,
                "shortener.dev/paused is \"true\"; nothing changes until it is removed".into(),
            );
            return None;
        }
        let retry_requested =
            input.retry.is_some() && input.retry.map(str::to_string) != self.st.observed_retry;
        self.st.observed_retry = input.retry.map(str::to_string);
        if let Some(control) = input.control {
            self.act_on(control);
        }

        let desired = input.desired_hash.to_string();
        let stable_hash = self.stable_hash();
        let current = self.record(self.st.current_revision).cloned();

        if !retry_requested && let Some(rec) = self.pinned_rollback() {
            self.course = Course::Pinned;
            return self.follow_rollback(rec);
        }

        if stable_hash.as_deref() == Some(desired.as_str()) {
            self.supersede_in_progress(current.as_ref());
            self.st.current_revision = self.st.stable_revision;
            self.st.analysis = None;
            if self.st.phase != Phase::Healthy {
                self.event(
                    false,
                    reason::HEALTHY,
                    format!("revision {} is stable and serving", self.rev_label()),
                );
            }
            self.set_phase(
                Phase::Healthy,
                reason::HEALTHY,
                format!("revision {} is stable and serving", self.rev_label()),
            );
            self.active = Some(desired);
            self.check_serving();
            return None;
        }

        match current {
            Some(rec) if rec.pod_template_hash == desired => match rec.outcome {
                Outcome::InProgress => self.progress(rec),
                Outcome::Failed if !retry_requested => {
                    self.stay_failed(&rec);
                    None
                }
                Outcome::Failed => {
                    self.event(
                        false,
                        reason::RETRY,
                        format!("retrying failed pod template {desired} on request"),
                    );
                    self.try_start(desired);
                    None
                }
                Outcome::Promoted | Outcome::Superseded => {
                    self.try_start(desired);
                    None
                }
            },
            other => {
                self.supersede_in_progress(other.as_ref());
                self.try_start(desired);
                None
            }
        }
    }

    pub(super) fn rev_label(&self) -> String {
        self.st
            .current_revision
            .map_or_else(|| "none".to_string(), |r| r.to_string())
    }

    pub(super) fn next_revision(&self) -> i64 {
        self.st
            .history
            .iter()
            .map(|r| r.revision)
            .max()
            .unwrap_or(0)
            + 1
    }
}

fn seconds_between(from: Timestamp, to: Timestamp) -> f64 {
    let d = to.as_millisecond() - from.as_millisecond();
    d as f64 / 1000.0
}
