//! The rollout as a pure function: (spec, status, what was observed, now) -> the next step.
//!
//! Nothing here talks to the cluster. The controller observes, calls [`decide`], runs a
//! probe when asked to (smoke test, metrics scrape) and calls [`decide`] again with the
//! result, then applies the [`Plan`]. Everything needed to resume lives in the status
//! this function returns, so a restarted operator carries on where it stopped.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::budget;
use crate::crd::{
    AnalysisStatus, Condition, LastIncident, Outcome, Phase, RevisionRecord, ShortenerReleaseSpec,
    ShortenerReleaseStatus, Strategy,
};
use crate::gate::GateState;
use crate::manual::{Control, Target};

/// Why a revision failed: the fixed set from docs/contracts.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailureReason {
    CrashLoop,
    ImagePullFailed,
    ProgressDeadlineExceeded,
    SmokeTestFailed,
    AnalysisFailed,
    Manual,
}

impl FailureReason {
    pub const ALL: [FailureReason; 6] = [
        FailureReason::CrashLoop,
        FailureReason::ImagePullFailed,
        FailureReason::ProgressDeadlineExceeded,
        FailureReason::SmokeTestFailed,
        FailureReason::AnalysisFailed,
        FailureReason::Manual,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::CrashLoop => "CrashLoop",
            FailureReason::ImagePullFailed => "ImagePullFailed",
            FailureReason::ProgressDeadlineExceeded => "ProgressDeadlineExceeded",
            FailureReason::SmokeTestFailed => "SmokeTestFailed",
            FailureReason::AnalysisFailed => "AnalysisFailed",
            FailureReason::Manual => "Manual",
        }
    }
}

/// Reasons for transitions that are not failures (conditions and Events).
pub mod reason {
    pub const ROLLOUT_STARTED: &str = "RolloutStarted";
    pub const PROMOTED: &str = "Promoted";
    pub const ROLLOUT_SUCCEEDED: &str = "RolloutSucceeded";
    pub const SUPERSEDED: &str = "Superseded";
    pub const HEALTHY: &str = "Healthy";
    pub const WAITING_FOR_PODS: &str = "WaitingForPods";
    pub const BAKING: &str = "Baking";
    pub const PAUSED: &str = "Paused";
    pub const PENDING: &str = "Pending";
    pub const AS_EXPECTED: &str = "AsExpected";
    pub const RETRY: &str = "RetryRequested";
    pub const BUDGET_EXHAUSTED: &str = "BudgetExhausted";
    /// A `Rolling` release's failed pods are all gone after a rollback: the outage ends.
    pub const TRAFFIC_RESTORED: &str = "TrafficRestored";
    /// `shortener.dev/promote`: the bake was cut short by hand.
    pub const MANUAL_PROMOTE: &str = "ManualPromote";
    /// `shortener.dev/abort`: the rollout was stopped by hand (the revision fails with `Manual`).
    pub const MANUAL_ABORT: &str = "ManualAbort";
    /// `shortener.dev/rollback-to`: an earlier healthy revision serves again; also the history
    /// note on that revision's new record.
    pub const MANUAL_ROLLBACK: &str = "ManualRollback";
    /// A manual control that could not be acted on (see the Event and the status message).
    pub const MANUAL_CONTROL_REJECTED: &str = "ManualControlRejected";
}

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

/// Non-probe requests and 5xx answers of the new revision since the previous sample.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct AnalysisSample {
    pub requests: i64,
    pub errors: i64,
    /// Each pod's counters as just read: the baseline of the next sample.
    pub pod_counts: BTreeMap<String, crate::crd::RequestCounts>,
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

/// Which revision a Service selects; `None` selects no pods.
#[derive(Clone, Debug, PartialEq)]
pub struct Routing {
    pub active: Option<String>,
    pub preview: Option<String>,
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
    pub deployments: Vec<DeploymentAction>,
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

/// Decides the next step of a release.
pub fn decide(input: &Input<'_>) -> Decision {
    let mut d = Decider::new(input);
    match d.run() {
        Some(probe) => Decision::Probe(probe),
        None => Decision::Act(Box::new(d.finish())),
    }
}

struct Decider<'a> {
    input: &'a Input<'a>,
    st: ShortenerReleaseStatus,
    events: Vec<EventNote>,
    rollback: Option<RollbackNote>,
    restored: Option<Timestamp>,
    failure: Option<FailureReason>,
    /// Plan the Deployments and Services; false leaves them untouched (paused, blocked).
    touch: bool,
    active: Option<String>,
    requeue: Duration,
    condition_reason: String,
    /// What this step learnt about the serving revision, for the SLA budget.
    health: Health,
    /// New rollouts refused by the budget freeze: keep stable serving, start nothing.
    frozen: bool,
    /// The newest record is a manual rollback and the spec's revision stays failed: the
    /// rollback's revision is planned instead of the spec's.
    pinned: bool,
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
            touch: true,
            active: None,
            requeue: IDLE_REQUEUE,
            condition_reason: String::new(),
            health: Health::Unknown,
            frozen: false,
            pinned: false,
            rejected: None,
        }
    }

    fn now(&self) -> Timestamp {
        self.input.now
    }

    fn record(&self, revision: Option<i64>) -> Option<&RevisionRecord> {
        let revision = revision?;
        self.st.history.iter().find(|r| r.revision == revision)
    }

    fn record_mut(&mut self, revision: i64) -> Option<&mut RevisionRecord> {
        self.st.history.iter_mut().find(|r| r.revision == revision)
    }

    fn stable_hash(&self) -> Option<String> {
        self.record(self.st.stable_revision)
            .map(|r| r.pod_template_hash.clone())
    }

    fn set_phase(&mut self, phase: Phase, reason: &str, message: String) {
        self.st.phase = phase;
        self.st.message = message;
        self.condition_reason = reason.to_string();
    }

    fn event(&mut self, warning: bool, reason: &str, message: String) {
        self.events.push(EventNote {
            warning,
            reason: reason.to_string(),
            message,
        });
    }

    /// Returns a probe to run first, or None when the plan is complete.
    fn run(&mut self) -> Option<Probe> {
        let input = self.input;
        if input.paused {
            self.touch = false;
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
            self.pinned = true;
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

    fn reject(&mut self, why: String) {
        self.event(true, reason::MANUAL_CONTROL_REJECTED, why.clone());
        self.rejected = Some(why);
    }

    /// The revision being rolled out (not the stable one), if any.
    fn in_progress(&self) -> Option<RevisionRecord> {
        self.record(self.st.current_revision)
            .filter(|r| r.outcome == Outcome::InProgress)
            .filter(|r| Some(r.revision) != self.st.stable_revision)
            .cloned()
    }

    fn act_on(&mut self, control: &Control) {
        match control {
            Control::Invalid(why) => self.reject(why.clone()),
            Control::Promote => self.promote_now(),
            Control::Abort => self.abort(),
            Control::RollbackTo(target) => self.roll_back_to(*target),
        }
    }

    /// `shortener.dev/promote`: the bake ends now. The readiness and smoke checks are not
    /// skipped: a revision that has not passed them never gets traffic by hand either.
    fn promote_now(&mut self) {
        let Some(rec) = self.in_progress() else {
            self.reject("shortener.dev/promote: nothing to promote, no rollout is baking".into());
            return;
        };
        let Some(promoted_at) = rec.promoted_at else {
            self.reject(format!(
                "shortener.dev/promote: revision {} has not passed its readiness and smoke checks \
                 yet; promote only cuts the bake short",
                rec.revision
            ));
            return;
        };
        let baked = seconds_between(promoted_at, self.now());
        self.make_stable(&rec);
        if let Some(r) = self.record_mut(rec.revision) {
            r.reason = Some(reason::MANUAL_PROMOTE.to_string());
        }
        self.event(
            false,
            reason::MANUAL_PROMOTE,
            format!(
                "revision {} promoted by hand after {baked:.0}s of its {}s bake",
                rec.revision, self.input.spec.analysis.bake_seconds
            ),
        );
    }

    /// `shortener.dev/abort`: the rollout in progress fails with `Manual`; traffic it had
    /// goes back to stable. Like any failure it is not retried by itself.
    fn abort(&mut self) {
        let Some(rec) = self.in_progress() else {
            self.reject("shortener.dev/abort: nothing to abort, no rollout is in progress".into());
            return;
        };
        let now = self.now();
        self.mark_failed(rec.revision, FailureReason::Manual);
        self.st.analysis = None;
        let stable = self.st.stable_revision;
        if rec.promoted_at.is_some() && stable.is_some() {
            self.rollback = Some(RollbackNote {
                reason: FailureReason::Manual,
                detected_at: now,
            });
            self.restored = Some(now);
        }
        let msg = match stable {
            Some(stable) => format!(
                "revision {} aborted by hand (Manual); revision {stable} serves",
                rec.revision
            ),
            None => format!(
                "revision {} aborted by hand (Manual); no stable revision, nothing serves",
                rec.revision
            ),
        };
        self.event(false, reason::MANUAL_ABORT, msg.clone());
        let phase = if stable.is_some() {
            Phase::RolledBack
        } else {
            Phase::Degraded
        };
        self.set_phase(phase, FailureReason::Manual.as_str(), msg);
    }

    /// `shortener.dev/rollback-to`: starts a new revision from an earlier healthy one's
    /// template; the spec's revision is marked Failed (Manual) so it does not roll forward
    /// again until the spec changes or `shortener.dev/retry` asks for it.
    fn roll_back_to(&mut self, target: Target) {
        let desired = self.input.desired_hash.to_string();
        let stable = self.stable_hash();
        let serving_stable =
            stable.as_deref() == Some(desired.as_str()) && self.in_progress().is_none();
        let healthy = |r: &&RevisionRecord| r.outcome == Outcome::Promoted;
        let rec = match target {
            Target::Revision(n) => {
                let Some(rec) = self.st.history.iter().find(|r| r.revision == n).cloned() else {
                    let known: Vec<String> = self
                        .st
                        .history
                        .iter()
                        .filter(healthy)
                        .map(|r| r.revision.to_string())
                        .collect();
                    self.reject(format!(
                        "shortener.dev/rollback-to: revision {n} is not in the history (healthy: {})",
                        if known.is_empty() { "none".into() } else { known.join(", ") }
                    ));
                    return;
                };
                if rec.outcome != Outcome::Promoted {
                    self.reject(format!(
                        "shortener.dev/rollback-to: revision {n} never became healthy (outcome {:?})",
                        rec.outcome
                    ));
                    return;
                }
                rec
            }
            Target::Previous => {
                let found = self
                    .st
                    .history
                    .iter()
                    .rev()
                    .filter(healthy)
                    .find(|r| {
                        r.pod_template_hash != desired
                            && (!serving_stable || Some(&r.pod_template_hash) != stable.as_ref())
                    })
                    .cloned();
                let Some(rec) = found else {
                    self.reject(
                        "shortener.dev/rollback-to: no earlier healthy revision to roll back to"
                            .into(),
                    );
                    return;
                };
                rec
            }
        };
        if rec.pod_template_hash == desired {
            let why = if serving_stable {
                format!(
                    "shortener.dev/rollback-to: revision {} already serves",
                    rec.revision
                )
            } else {
                format!(
                    "shortener.dev/rollback-to: revision {} has the spec's pod template; use \
                     shortener.dev/retry to roll it out again",
                    rec.revision
                )
            };
            self.reject(why);
            return;
        }

        let now = self.now();
        // The spec's revision: failed by hand. One that never started gets a record too,
        // so the pin below has something to hold on to.
        let spec_rec = self
            .st
            .history
            .iter()
            .rev()
            .find(|r| r.pod_template_hash == desired)
            .cloned();
        let spec_number = match spec_rec {
            Some(r) => {
                if r.outcome == Outcome::InProgress && r.promoted_at.is_some() {
                    self.rollback = Some(RollbackNote {
                        reason: FailureReason::Manual,
                        detected_at: now,
                    });
                    self.restored = Some(now);
                }
                if r.outcome != Outcome::Failed {
                    self.mark_failed(r.revision, FailureReason::Manual);
                }
                r.revision
            }
            None => {
                let n = self.next_revision();
                self.st.history.push(RevisionRecord {
                    revision: n,
                    pod_template_hash: desired,
                    image: self.input.spec.image.clone(),
                    outcome: Outcome::Failed,
                    reason: Some(FailureReason::Manual.as_str().to_string()),
                    started_at: now,
                    promoted_at: None,
                    finished_at: Some(now),
                });
                n
            }
        };
        let number = self.next_revision();
        self.st.history.push(RevisionRecord {
            revision: number,
            pod_template_hash: rec.pod_template_hash.clone(),
            image: rec.image.clone(),
            outcome: Outcome::InProgress,
            reason: Some(reason::MANUAL_ROLLBACK.to_string()),
            started_at: now,
            promoted_at: None,
            finished_at: None,
        });
        self.st.current_revision = Some(number);
        self.st.analysis = None;
        self.event(
            false,
            reason::MANUAL_ROLLBACK,
            format!(
                "rolling back by hand to revision {} ({}) as revision {number}; revision \
                 {spec_number} ({}) marked Failed (Manual)",
                rec.revision, rec.image, self.input.spec.image
            ),
        );
    }

    fn next_revision(&self) -> i64 {
        self.st
            .history
            .iter()
            .map(|r| r.revision)
            .max()
            .unwrap_or(0)
            + 1
    }

    /// The current revision, when the release is held on a manual rollback: the newest
    /// record for the spec's template failed, and only manual rollbacks came after it.
    fn pinned_rollback(&self) -> Option<RevisionRecord> {
        let desired = self.input.desired_hash;
        let pos = self
            .st
            .history
            .iter()
            .rposition(|r| r.pod_template_hash == desired)?;
        if self.st.history[pos].outcome != Outcome::Failed {
            return None;
        }
        let after = &self.st.history[pos + 1..];
        if after.is_empty()
            || after
                .iter()
                .any(|r| r.reason.as_deref() != Some(reason::MANUAL_ROLLBACK))
        {
            return None;
        }
        self.record(self.st.current_revision)
            .filter(|r| r.reason.as_deref() == Some(reason::MANUAL_ROLLBACK))
            .cloned()
    }

    /// Carries a manual rollback on: wait for its pods, smoke test them, switch traffic at
    /// once (it was healthy before: no bake), then stay there.
    fn follow_rollback(&mut self, rec: RevisionRecord) -> Option<Probe> {
        let spec = self.input.spec;
        let hint = format!(
            "the spec's {} is not rolled out until the spec changes or shortener.dev/retry is set",
            spec.image
        );
        match rec.outcome {
            Outcome::Promoted => {
                self.active = Some(rec.pod_template_hash.clone());
                self.check_serving();
                self.set_phase(
                    Phase::RolledBack,
                    reason::MANUAL_ROLLBACK,
                    format!(
                        "rolled back by hand: revision {} ({}) serves; {hint}",
                        rec.revision, rec.image
                    ),
                );
                None
            }
            Outcome::Failed | Outcome::Superseded => {
                self.active = self.stable_hash();
                self.check_serving();
                self.condition_reason = reason::MANUAL_ROLLBACK.to_string();
                if self.st.phase != Phase::RolledBack && self.st.phase != Phase::Degraded {
                    let phase = if self.st.stable_revision.is_some() {
                        Phase::RolledBack
                    } else {
                        Phase::Degraded
                    };
                    self.st.phase = phase;
                }
                if self.st.message.is_empty() {
                    self.st.message =
                        format!("manual rollback revision {} failed; {hint}", rec.revision);
                }
                None
            }
            Outcome::InProgress => {
                self.requeue = FAST_REQUEUE;
                self.active = self.stable_hash();
                self.check_serving();
                let obs = self
                    .input
                    .observed
                    .revisions
                    .get(&rec.pod_template_hash)
                    .cloned()
                    .unwrap_or_default();
                if let Some(f) = obs.failure {
                    self.fail(&rec, f.reason, f.message);
                    return None;
                }
                if obs.ready_pods >= spec.replicas {
                    if spec.health_check.smoke_test {
                        match &self.input.observed.smoke {
                            None => {
                                return Some(Probe::SmokeTest {
                                    hash: rec.pod_template_hash.clone(),
                                });
                            }
                            Some(SmokeResult::Failed(msg)) => {
                                let msg = msg.clone();
                                self.fail(&rec, FailureReason::SmokeTestFailed, msg);
                                return None;
                            }
                            Some(SmokeResult::Passed) => {}
                        }
                    }
                    self.restore(&rec, &hint);
                    return None;
                }
                let elapsed = seconds_between(rec.started_at, self.now());
                if elapsed >= f64::from(spec.progress_deadline_seconds) {
                    let msg = format!(
                        "{}/{} pods ready after {}s",
                        obs.ready_pods, spec.replicas, spec.progress_deadline_seconds
                    );
                    self.fail(&rec, FailureReason::ProgressDeadlineExceeded, msg);
                    return None;
                }
                self.set_phase(
                    Phase::Progressing,
                    reason::MANUAL_ROLLBACK,
                    format!(
                        "rolling back by hand to {} (revision {}): {}/{} pods ready",
                        rec.image, rec.revision, obs.ready_pods, spec.replicas
                    ),
                );
                None
            }
        }
    }

    /// The manual rollback's pods are ready and tested: it takes the traffic and is stable.
    fn restore(&mut self, rec: &RevisionRecord, hint: &str) {
        let now = self.now();
        if let Some(r) = self.record_mut(rec.revision) {
            r.outcome = Outcome::Promoted;
            r.promoted_at = Some(now);
            r.finished_at = Some(now);
        }
        self.st.stable_revision = Some(rec.revision);
        self.st.analysis = None;
        self.active = Some(rec.pod_template_hash.clone());
        self.check_serving();
        self.requeue = IDLE_REQUEUE;
        let msg = format!(
            "rolled back by hand: revision {} ({}) serves; {hint}",
            rec.revision, rec.image
        );
        self.event(false, reason::MANUAL_ROLLBACK, msg.clone());
        self.set_phase(Phase::RolledBack, reason::MANUAL_ROLLBACK, msg);
    }

    fn rev_label(&self) -> String {
        self.st
            .current_revision
            .map_or_else(|| "none".to_string(), |r| r.to_string())
    }

    /// A newer spec replaces a rollout still in progress; traffic it had goes back at once.
    fn supersede_in_progress(&mut self, current: Option<&RevisionRecord>) {
        let Some(rec) = current else { return };
        if rec.outcome != Outcome::InProgress || Some(rec.revision) == self.st.stable_revision {
            return;
        }
        let now = self.now();
        let number = rec.revision;
        if let Some(r) = self.record_mut(number) {
            r.outcome = Outcome::Superseded;
            r.finished_at = Some(now);
        }
        self.st.analysis = None;
        self.event(
            false,
            reason::SUPERSEDED,
            format!("revision {number} superseded by a newer spec before it finished"),
        );
    }

    /// The serving revision counts as down when none of its pods is ready.
    fn check_serving(&mut self) {
        let Some(active) = self.active.as_ref() else {
            return;
        };
        let revisions = &self.input.observed.revisions;
        // A Rolling release's Service selects every pod of the release: old and new pods
        // serve together while Kubernetes replaces one with the other.
        let ready = if self.input.spec.strategy == Strategy::Rolling {
            revisions.values().map(|r| r.ready_pods).sum()
        } else {
            revisions.get(active).map_or(0, |r| r.ready_pods)
        };
        self.health = if ready > 0 {
            Health::Up
        } else {
            Health::Down(self.now())
        };
    }

    fn budget_frozen(&self) -> bool {
        self.input.spec.sla.freeze_when_exhausted
            && !self.input.budget_override
            && self
                .st
                .budget
                .as_ref()
                .is_some_and(|b| b.exhausted(self.now()))
    }

    /// Starts a rollout unless the promotion gate or the SLA budget freeze forbids it.
    fn try_start(&mut self, hash: String) {
        let gate = self.input.gate;
        if let Some(why) = gate.reason() {
            self.hold();
            let msg = gate.message();
            // Events on transitions only: a new reason or a new image to wait for.
            if self.st.phase != Phase::Blocked || self.st.message != msg {
                self.event(
                    why != crate::gate::reason::AWAITING_PROMOTION,
                    why,
                    msg.clone(),
                );
            }
            self.set_phase(Phase::Blocked, why, msg);
            self.requeue = GATE_REQUEUE;
            return;
        }
        if !self.budget_frozen() {
            self.start(hash);
            return;
        }
        self.hold();
        let msg = format!(
            "downtime budget of {} per year is used up; new rollouts wait until it recovers or \
             shortener.dev/budget-override is \"true\"",
            self.input.spec.sla.allowed_downtime_per_year
        );
        if self.st.phase != Phase::Blocked {
            self.event(true, reason::BUDGET_EXHAUSTED, msg.clone());
        }
        self.set_phase(Phase::Blocked, reason::BUDGET_EXHAUSTED, msg);
    }

    /// Nothing new starts: the stable revision (if any) keeps serving, the rest goes.
    fn hold(&mut self) {
        // A retry asked for now is kept for when the hold ends, not spent on it.
        self.st.observed_retry = self.input.status.observed_retry.clone();
        self.frozen = true;
        self.active = self.stable_hash();
        self.check_serving();
    }

    fn start(&mut self, hash: String) {
        let now = self.now();
        let number = self
            .st
            .history
            .iter()
            .map(|r| r.revision)
            .max()
            .unwrap_or(0)
            + 1;
        self.st.history.push(RevisionRecord {
            revision: number,
            pod_template_hash: hash,
            image: self.input.spec.image.clone(),
            outcome: Outcome::InProgress,
            reason: None,
            started_at: now,
            promoted_at: None,
            finished_at: None,
        });
        self.st.current_revision = Some(number);
        self.st.analysis = None;
        self.active = self.stable_hash();
        self.requeue = FAST_REQUEUE;
        let msg = format!(
            "revision {number} ({}) started; waiting for {} ready pods",
            self.input.spec.image, self.input.spec.replicas
        );
        self.event(false, reason::ROLLOUT_STARTED, msg.clone());
        self.set_phase(Phase::Progressing, reason::ROLLOUT_STARTED, msg);
    }

    fn progress(&mut self, rec: RevisionRecord) -> Option<Probe> {
        let hash = rec.pod_template_hash.clone();
        let obs = self
            .input
            .observed
            .revisions
            .get(&hash)
            .cloned()
            .unwrap_or_default();
        self.requeue = FAST_REQUEUE;

        if let Some(f) = obs.failure {
            self.fail(&rec, f.reason, f.message);
            return None;
        }

        let Some(promoted_at) = rec.promoted_at else {
            return self.progress_unpromoted(&rec, hash, obs);
        };
        self.bake(&rec, hash, promoted_at)
    }

    fn progress_unpromoted(
        &mut self,
        rec: &RevisionRecord,
        hash: String,
        obs: RevisionObservation,
    ) -> Option<Probe> {
        let spec = self.input.spec;
        {
            self.active = self.stable_hash();
            self.check_serving();
            if obs.ready_pods >= spec.replicas {
                if spec.health_check.smoke_test {
                    match &self.input.observed.smoke {
                        None => return Some(Probe::SmokeTest { hash }),
                        Some(SmokeResult::Failed(msg)) => {
                            let msg = msg.clone();
                            self.fail(rec, FailureReason::SmokeTestFailed, msg);
                            return None;
                        }
                        Some(SmokeResult::Passed) => {}
                    }
                }
                self.promote(rec);
                return None;
            }
            let elapsed = seconds_between(rec.started_at, self.now());
            if elapsed >= f64::from(spec.progress_deadline_seconds) {
                let msg = format!(
                    "{}/{} pods ready after {}s",
                    obs.ready_pods, spec.replicas, spec.progress_deadline_seconds
                );
                self.fail(rec, FailureReason::ProgressDeadlineExceeded, msg);
                return None;
            }
            self.set_phase(
                Phase::Progressing,
                reason::WAITING_FOR_PODS,
                format!(
                    "revision {}: {}/{} pods ready",
                    rec.revision, obs.ready_pods, spec.replicas
                ),
            );
            None
        }
    }

    /// Baking with live traffic.
    fn bake(
        &mut self,
        rec: &RevisionRecord,
        hash: String,
        promoted_at: Timestamp,
    ) -> Option<Probe> {
        let spec = self.input.spec;
        self.active = Some(hash.clone());
        let mut analysis = self
            .st
            .analysis
            .clone()
            .unwrap_or(AnalysisStatus::new(promoted_at));
        let interval = f64::from(spec.analysis.interval_seconds);
        let since = analysis.last_sample_at.unwrap_or(analysis.promoted_at);
        if seconds_between(since, self.now()) >= interval {
            let Some(sample) = self.input.observed.analysis.as_ref() else {
                return Some(Probe::Analyze { hash });
            };
            analysis.last_sample_at = Some(self.now());
            analysis.requests += sample.requests;
            analysis.errors += sample.errors;
            analysis.pod_counts = sample.pod_counts.clone();
            if interval_failed(spec, sample) {
                analysis.failed_intervals += 1;
                self.health = Health::Down(since);
            } else if sample.requests >= spec.analysis.min_requests {
                analysis.failed_intervals = 0;
                self.health = Health::Up;
            }
            self.st.analysis = Some(analysis.clone());
            if analysis.failed_intervals >= spec.analysis.failure_limit {
                let msg = format!(
                    "{} of {} requests failed in the last {}s (limit {}%)",
                    sample.errors,
                    sample.requests,
                    spec.analysis.interval_seconds,
                    spec.analysis.max_error_rate
                );
                self.fail_promoted(rec, FailureReason::AnalysisFailed, msg, since, &analysis);
                return None;
            }
        }
        if seconds_between(analysis.promoted_at, self.now())
            >= f64::from(spec.analysis.bake_seconds)
        {
            self.make_stable(rec);
            return None;
        }
        self.set_phase(
            Phase::Analyzing,
            reason::BAKING,
            format!(
                "revision {} serving; baking {}s, {} errors in {} requests so far",
                rec.revision, spec.analysis.bake_seconds, analysis.errors, analysis.requests
            ),
        );
        None
    }

    fn promote(&mut self, rec: &RevisionRecord) {
        let now = self.now();
        if let Some(r) = self.record_mut(rec.revision) {
            r.promoted_at = Some(now);
        }
        self.st.analysis = Some(AnalysisStatus::new(now));
        self.active = Some(rec.pod_template_hash.clone());
        let msg = format!(
            "revision {} passed its checks and serves traffic; baking {}s",
            rec.revision, self.input.spec.analysis.bake_seconds
        );
        self.event(false, reason::PROMOTED, msg.clone());
        self.set_phase(Phase::Analyzing, reason::PROMOTED, msg);
    }

    fn make_stable(&mut self, rec: &RevisionRecord) {
        let now = self.now();
        if let Some(r) = self.record_mut(rec.revision) {
            r.outcome = Outcome::Promoted;
            r.finished_at = Some(now);
        }
        self.st.stable_revision = Some(rec.revision);
        self.st.analysis = None;
        if let Some(incident) = self.st.last_incident.as_mut()
            && incident.recovered_at.is_none()
        {
            incident.recovered_at = Some(now);
        }
        self.active = Some(rec.pod_template_hash.clone());
        self.requeue = IDLE_REQUEUE;
        let msg = format!("revision {} is stable", rec.revision);
        self.event(false, reason::ROLLOUT_SUCCEEDED, msg.clone());
        self.set_phase(Phase::Healthy, reason::ROLLOUT_SUCCEEDED, msg);
    }

    /// The revision failed before it took traffic.
    fn fail(&mut self, rec: &RevisionRecord, why: FailureReason, detail: String) {
        if let Some(promoted_at) = rec.promoted_at {
            let analysis = self
                .st
                .analysis
                .clone()
                .unwrap_or(AnalysisStatus::new(promoted_at));
            let since = analysis.last_sample_at.unwrap_or(analysis.promoted_at);
            self.fail_promoted(rec, why, detail, since, &analysis);
            return;
        }
        let now = self.now();
        self.mark_failed(rec.revision, why);
        self.st.last_incident = Some(LastIncident {
            revision: rec.revision,
            reason: why.as_str().to_string(),
            detected_at: now,
            rolled_back_at: None,
            recovered_at: self.st.stable_revision.map(|_| now),
            failed_requests: 0,
            downtime_seconds: 0.0,
            log_excerpt_ref: None,
        });
        self.failure = Some(why);
        self.active = self.stable_hash();
        self.requeue = IDLE_REQUEUE;
        let msg = match self.st.stable_revision {
            Some(stable) => format!(
                "revision {} failed ({}: {detail}); never promoted, revision {stable} keeps serving",
                rec.revision,
                why.as_str()
            ),
            None => format!(
                "revision {} failed ({}: {detail}); no stable revision, nothing serves",
                rec.revision,
                why.as_str()
            ),
        };
        self.event(true, why.as_str(), msg.clone());
        let phase = if self.st.stable_revision.is_some() {
            Phase::RolledBack
        } else {
            Phase::Degraded
        };
        self.set_phase(phase, why.as_str(), msg);
    }

    /// The revision failed while it had the traffic.
    fn fail_promoted(
        &mut self,
        rec: &RevisionRecord,
        why: FailureReason,
        detail: String,
        errors_since: Timestamp,
        analysis: &AnalysisStatus,
    ) {
        let now = self.now();
        self.mark_failed(rec.revision, why);
        self.failure = Some(why);
        self.requeue = IDLE_REQUEUE;
        let stable = self.st.stable_revision;
        let roll_back = self.input.spec.rollback.automatic && stable.is_some();
        // Blue-green: switching the selector back restores service at once. Rolling: the
        // failed pods serve until Kubernetes has replaced them with the stable template's,
        // so the outage stays open until then (see `follow_rolling_undo`).
        let restored_now = roll_back && self.input.spec.strategy != Strategy::Rolling;
        let downtime = if analysis.errors > 0 {
            seconds_between(errors_since, now)
        } else {
            0.0
        };
        self.st.last_incident = Some(LastIncident {
            revision: rec.revision,
            reason: why.as_str().to_string(),
            detected_at: now,
            rolled_back_at: roll_back.then_some(now),
            recovered_at: restored_now.then_some(now),
            failed_requests: analysis.errors,
            downtime_seconds: downtime,
            log_excerpt_ref: None,
        });
        self.st.analysis = None;
        if analysis.errors > 0 {
            self.health = if restored_now {
                Health::Restored(errors_since)
            } else {
                Health::Down(errors_since)
            };
        }
        if roll_back && !restored_now {
            self.requeue = FAST_REQUEUE;
        }
        if roll_back {
            self.active = self.stable_hash();
            self.rollback = Some(RollbackNote {
                reason: why,
                detected_at: now,
            });
            if restored_now {
                self.restored = Some(now);
            }
            let msg = format!(
                "revision {} failed ({}: {detail}); traffic switched back to revision {}",
                rec.revision,
                why.as_str(),
                stable.unwrap_or_default()
            );
            self.event(true, why.as_str(), msg.clone());
            self.set_phase(Phase::RolledBack, why.as_str(), msg);
        } else {
            self.active = Some(rec.pod_template_hash.clone());
            let msg = match stable {
                Some(_) => format!(
                    "revision {} failed ({}: {detail}); automatic rollback is off, it keeps the traffic",
                    rec.revision,
                    why.as_str()
                ),
                None => format!(
                    "revision {} failed ({}: {detail}); no stable revision to roll back to",
                    rec.revision,
                    why.as_str()
                ),
            };
            self.event(true, why.as_str(), msg.clone());
            self.set_phase(Phase::Degraded, why.as_str(), msg);
        }
    }

    fn mark_failed(&mut self, revision: i64, why: FailureReason) {
        let now = self.now();
        if let Some(r) = self.record_mut(revision) {
            r.outcome = Outcome::Failed;
            // A manual rollback keeps its note: it is what pins the release (see
            // `pinned_rollback`); the failure reason is in the status and lastIncident.
            if r.reason.as_deref() != Some(reason::MANUAL_ROLLBACK) {
                r.reason = Some(why.as_str().to_string());
            }
            r.finished_at = Some(now);
        }
    }

    /// The spec still names a revision that failed: keep it failed, keep routing as the
    /// failure left it.
    fn stay_failed(&mut self, rec: &RevisionRecord) {
        let rolled_back = self.input.spec.rollback.automatic && self.st.stable_revision.is_some();
        // An abort always takes the traffic back, whatever `rollback.automatic` says.
        let aborted = rec.reason.as_deref() == Some(FailureReason::Manual.as_str());
        let kept_traffic = rec.promoted_at.is_some() && !rolled_back && !aborted;
        self.active = if kept_traffic {
            Some(rec.pod_template_hash.clone())
        } else {
            self.stable_hash()
        };
        let outage_open = self
            .st
            .budget
            .as_ref()
            .is_some_and(|b| b.ledger.open_outage.is_some());
        if kept_traffic && outage_open {
            // A failed revision keeps the traffic: the outage goes on.
            self.health = Health::Down(self.now());
        } else if rolled_back && self.follow_rolling_undo(rec) {
            // Still replacing the failed pods.
        } else if !kept_traffic {
            self.check_serving();
        }
        self.condition_reason = rec.reason.clone().unwrap_or_default();
        if self.st.message.is_empty() {
            self.st.message = format!("revision {} failed", rec.revision);
        }
    }

    /// A `Rolling` release rolled back after promotion is restored only once none of the
    /// failed revision's pods is ready any more: until then they take a share of the traffic
    /// and the outage (and the SLA budget's charge) goes on. Returns true while it does.
    fn follow_rolling_undo(&mut self, rec: &RevisionRecord) -> bool {
        if self.input.spec.strategy != Strategy::Rolling {
            return false;
        }
        let now = self.now();
        let Some(incident) = self
            .st
            .last_incident
            .as_mut()
            .filter(|i| i.revision == rec.revision && i.rolled_back_at.is_some())
            .filter(|i| i.recovered_at.is_none())
        else {
            return false;
        };
        let failed_serving = self
            .input
            .observed
            .revisions
            .get(&rec.pod_template_hash)
            .is_some_and(|r| r.ready_pods > 0);
        if failed_serving {
            self.health = Health::Down(now);
            self.requeue = FAST_REQUEUE;
            return true;
        }
        incident.recovered_at = Some(now);
        self.restored = Some(incident.detected_at);
        self.health = Health::Restored(now);
        self.event(
            false,
            reason::TRAFFIC_RESTORED,
            format!(
                "the last pod of failed revision {} has left the Service; revision {} serves alone",
                rec.revision,
                self.st.stable_revision.unwrap_or_default()
            ),
        );
        true
    }

    /// The stable revision runs at full size beside `running` (unless it is `running`), and
    /// every other revision is retired.
    fn stable_beside(&self, running: Option<&String>, deployments: &mut Vec<DeploymentAction>) {
        let stable = self.stable_hash();
        if let Some(hash) = stable.clone().filter(|s| Some(s) != running) {
            deployments.push(DeploymentAction::Scale {
                hash,
                replicas: self.input.spec.replicas,
            });
        }
        self.retire(&[running, stable.as_ref()], deployments);
    }

    /// What becomes of the Deployments of revisions other than `running`. With blue-green,
    /// a revision that was promoted and is still in the history keeps its Deployment, scaled
    /// to zero, so that rolling back to it by hand brings back exactly the pods that ran
    /// (as Kubernetes keeps old ReplicaSets); every other one is deleted. Rolling has one
    /// Deployment: older templates live on in its ReplicaSets.
    fn retire(&self, running: &[Option<&String>], deployments: &mut Vec<DeploymentAction>) {
        let blue_green = self.input.spec.strategy != Strategy::Rolling;
        for (hash, obs) in &self.input.observed.revisions {
            if running.contains(&Some(hash)) {
                continue;
            }
            let was_healthy = self
                .st
                .history
                .iter()
                .any(|r| r.pod_template_hash == *hash && r.outcome == Outcome::Promoted);
            if blue_green && was_healthy {
                if obs.replicas != Some(0) {
                    deployments.push(DeploymentAction::Scale {
                        hash: hash.clone(),
                        replicas: 0,
                    });
                }
            } else {
                deployments.push(DeploymentAction::Delete { hash: hash.clone() });
            }
        }
    }

    fn finish(mut self) -> Plan {
        let spec = self.input.spec;
        // First, so that what leaves the history also loses its Deployment (see `retire`).
        prune_history(&mut self.st, spec.rollback.revision_history_limit);
        let desired = self.input.desired_hash.to_string();
        let mut deployments = Vec::new();
        let mut routing = None;
        if self.pinned {
            let stable = self.stable_hash();
            let observed = &self.input.observed.revisions;
            if let Some(rec) = self.record(self.st.current_revision).cloned() {
                let hash = rec.pod_template_hash.clone();
                let replicas = if rec.outcome == Outcome::Failed && Some(&hash) != stable.as_ref() {
                    0
                } else {
                    spec.replicas
                };
                // An existing Deployment is only scaled: re-applying it from today's spec
                // would roll its pods.
                deployments.push(if observed.contains_key(&hash) {
                    DeploymentAction::Scale {
                        hash: hash.clone(),
                        replicas,
                    }
                } else {
                    DeploymentAction::Restore {
                        hash: hash.clone(),
                        image: rec.image.clone(),
                        replicas,
                    }
                });
                self.stable_beside(Some(&hash), &mut deployments);
                routing = Some(Routing {
                    active: self.active.clone(),
                    preview: Some(hash),
                });
            }
        } else if self.frozen {
            let stable = self.stable_hash();
            self.stable_beside(None, &mut deployments);
            routing = Some(Routing {
                active: stable.clone(),
                preview: stable,
            });
        } else if self.touch {
            let current = self.record(self.st.current_revision).cloned();
            let desired_serves = self.active.as_deref() == Some(desired.as_str());
            let desired_replicas = match current {
                Some(rec) if rec.pod_template_hash == desired && rec.outcome == Outcome::Failed => {
                    if desired_serves {
                        spec.replicas
                    } else {
                        0
                    }
                }
                _ => spec.replicas,
            };
            deployments.push(DeploymentAction::Apply {
                hash: desired.clone(),
                replicas: desired_replicas,
            });
            self.stable_beside(Some(&desired), &mut deployments);
            routing = Some(Routing {
                active: self.active.clone(),
                preview: Some(desired),
            });
        }
        if let Some(why) = &self.rejected {
            self.st.message = format!("{why}; {}", self.st.message);
        }
        let downtime_charged = self.charge_budget();
        let reason = if self.condition_reason.is_empty() {
            reason::PENDING.to_string()
        } else {
            self.condition_reason.clone()
        };
        set_conditions(&mut self.st, &reason, self.input.generation, self.input.now);
        Plan {
            status: self.st,
            deployments,
            routing,
            events: self.events,
            rollback: self.rollback,
            restored: self.restored,
            failure: self.failure,
            requeue: self.requeue,
            downtime_charged,
        }
    }

    /// Charges what this step learnt to the SLA budget; returns the seconds charged.
    fn charge_budget(&mut self) -> i64 {
        let now = self.now();
        let allowed =
            budget::parse_allowed_downtime(&self.input.spec.sla.allowed_downtime_per_year)
                .unwrap_or(DEFAULT_ALLOWED_SECONDS);
        let mut b = self.st.budget.take().unwrap_or_default();
        let ledger_total =
            |l: &budget::DowntimeLedger| l.days.iter().map(|d| d.seconds).sum::<i64>();
        let before = ledger_total(&b.ledger);
        match self.health {
            Health::Unknown => {}
            Health::Down(since) => {
                b.ledger.observe_down_since(since, now);
            }
            Health::Up => {
                b.ledger.observe_up(now);
            }
            Health::Restored(since) => {
                b.ledger.observe_down_since(since, now);
                if let Some(closed) = b.ledger.observe_up(now)
                    && let Some(incident) = self.st.last_incident.as_mut()
                {
                    incident.downtime_seconds = closed.downtime_seconds as f64;
                }
            }
        }
        let charged = (ledger_total(&b.ledger) - before).max(0);
        b.refresh(allowed, now);
        self.st.budget = Some(b);
        charged
    }
}

/// What the one Deployment of a `Rolling` release runs.
#[derive(Clone, Debug, PartialEq)]
pub struct RollingTarget {
    /// Pod template hash of the revision to run.
    pub hash: String,
    /// The revision's image when it is not the spec's template: the pod template is then
    /// the one that ran under `hash` before (a rollback re-applies it).
    pub image: Option<String>,
    pub replicas: i32,
}

/// Folds a plan written for one Deployment per revision into the one Deployment of a
/// `Rolling` release: the revision being rolled out when it should run, else the stable
/// one (a rollback), else the spec's at the replicas the plan gives it. `None`: leave the
/// Deployment as it is (paused, nothing planned).
pub fn rolling_target(plan: &Plan) -> Option<RollingTarget> {
    let stable = plan
        .status
        .stable_revision
        .and_then(|n| plan.status.history.iter().find(|r| r.revision == n))
        .map(|r| r.pod_template_hash.clone());
    let image_of = |hash: &str| {
        plan.status
            .history
            .iter()
            .rev()
            .find(|r| r.pod_template_hash == hash)
            .map(|r| r.image.clone())
    };
    let target = |action: &DeploymentAction| match action {
        DeploymentAction::Apply { hash, replicas } => Some(RollingTarget {
            hash: hash.clone(),
            image: None,
            replicas: *replicas,
        }),
        DeploymentAction::Scale { hash, replicas } => Some(RollingTarget {
            hash: hash.clone(),
            image: image_of(hash),
            replicas: *replicas,
        }),
        DeploymentAction::Restore {
            hash,
            image,
            replicas,
        } => Some(RollingTarget {
            hash: hash.clone(),
            image: Some(image.clone()),
            replicas: *replicas,
        }),
        DeploymentAction::Delete { .. } => None,
    };
    let running: Vec<RollingTarget> = plan
        .deployments
        .iter()
        .filter_map(target)
        .filter(|t| t.replicas > 0)
        .collect();
    running
        .iter()
        .find(|t| Some(&t.hash) != stable.as_ref())
        .or_else(|| running.first())
        .cloned()
        .or_else(|| plan.deployments.iter().find_map(target))
}

/// 15 minutes: what the schema's default allows, used if the spec cannot be parsed.
const DEFAULT_ALLOWED_SECONDS: i64 = 900;

fn interval_failed(spec: &ShortenerReleaseSpec, sample: &AnalysisSample) -> bool {
    if sample.requests < spec.analysis.min_requests || sample.requests <= 0 {
        return false;
    }
    // errors/requests > max% without floating the counts.
    (sample.errors as f64) * 100.0 > spec.analysis.max_error_rate * (sample.requests as f64)
}

fn seconds_between(from: Timestamp, to: Timestamp) -> f64 {
    let d = to.as_millisecond() - from.as_millisecond();
    d as f64 / 1000.0
}

/// Keeps the newest `limit` records plus the stable and current ones.
fn prune_history(st: &mut ShortenerReleaseStatus, limit: i32) {
    let limit = usize::try_from(limit.max(1)).unwrap_or(1);
    if st.history.len() <= limit {
        return;
    }
    let keep_from = st.history.len() - limit;
    let stable = st.stable_revision;
    let current = st.current_revision;
    let mut i = 0;
    st.history.retain(|r| {
        let keep = i >= keep_from || Some(r.revision) == stable || Some(r.revision) == current;
        i += 1;
        keep
    });
}

fn set_conditions(
    st: &mut ShortenerReleaseStatus,
    reason: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    let phase = st.phase;
    let message = st.message.clone();
    let ready = phase == Phase::Healthy;
    let progressing = matches!(phase, Phase::Progressing | Phase::Analyzing);
    let degraded = matches!(phase, Phase::Degraded | Phase::RolledBack);
    let not_degraded = if degraded {
        reason
    } else {
        reason::AS_EXPECTED
    };
    for (type_, on, why) in [
        ("Ready", ready, reason),
        ("Progressing", progressing, reason),
        ("Degraded", degraded, not_degraded),
    ] {
        let status = if on { "True" } else { "False" };
        let existing = st.conditions.iter_mut().find(|c| c.type_ == type_);
        match existing {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = now;
                }
                c.status = status.into();
                c.reason = why.into();
                c.message = message.clone();
                c.observed_generation = generation;
            }
            None => st.conditions.push(Condition {
                type_: type_.into(),
                status: status.into(),
                reason: why.into(),
                message: message.clone(),
                last_transition_time: now,
                observed_generation: generation,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::SignedDuration;

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

        /// One reconcile: answers probes like the controller, applies the plan's deployments.
        fn step(&mut self) -> Plan {
            self.probes.clear();
            let mut observed = self.observed.clone();
            loop {
                let input = Input {
                    spec: &self.spec,
                    generation: Some(1),
                    status: &self.status,
                    desired_hash: self.hash,
                    paused: self.paused,
                    retry: self.retry.as_deref(),
                    budget_override: self.budget_override,
                    gate: &self.gate,
                    control: self.control.as_ref(),
                    observed: &observed,
                    now: self.now,
                };
                match decide(&input) {
                    Decision::Probe(p) => {
                        assert!(!self.probes.contains(&p), "probe asked twice: {p:?}");
                        match &p {
                            Probe::SmokeTest { .. } => observed.smoke = Some(self.smoke.clone()),
                            Probe::Analyze { .. } => observed.analysis = Some(self.sample.clone()),
                        }
                        self.probes.push(p);
                    }
                    Decision::Act(plan) => {
                        self.status = plan.status.clone();
                        for d in &plan.deployments {
                            match d {
                                DeploymentAction::Apply { hash, replicas }
                                | DeploymentAction::Restore { hash, replicas, .. } => {
                                    let obs =
                                        self.observed.revisions.entry(hash.clone()).or_default();
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
                        return *plan;
                    }
                }
            }
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
        plan.routing.as_ref().unwrap().active.as_deref()
    }

    fn replicas_of(plan: &Plan, hash: &str) -> Option<i32> {
        plan.deployments.iter().find_map(|d| match d {
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
            pod_counts: BTreeMap::new(),
        }
    }

    fn deletes(plan: &Plan, hash: &str) -> bool {
        plan.deployments
            .iter()
            .any(|d| *d == DeploymentAction::Delete { hash: hash.into() })
    }

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
            vec![Probe::SmokeTest {
                hash: V1.to_string()
            }]
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
        let cases: [(&str, Setup, FailureReason); 4] = [
            (
                "crash loop",
                Box::new(|w: &mut World| w.pods(V2, 0, Some(FailureReason::CrashLoop))),
                FailureReason::CrashLoop,
            ),
            (
                "image pull",
                Box::new(|w: &mut World| w.pods(V2, 0, Some(FailureReason::ImagePullFailed))),
                FailureReason::ImagePullFailed,
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
            crate::crd::RequestCounts {
                requests: 12,
                errors: 0,
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
        assert!(plan.routing.is_none() && plan.deployments.is_empty());
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
        assert!(w.probes.is_empty());
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

    fn budget(w: &World) -> crate::budget::BudgetStatus {
        w.status.budget.clone().unwrap()
    }

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
            !plan
                .deployments
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

    fn awaiting(image: &str, gate_stable: Option<&str>) -> GateState {
        GateState::Awaiting {
            gate: "staging/web".into(),
            image: image.into(),
            gate_stable: gate_stable.map(str::to_string),
        }
    }

    fn applies(plan: &Plan, hash: &str) -> bool {
        plan.deployments
            .iter()
            .any(|d| matches!(d, DeploymentAction::Apply { hash: h, .. } if h == hash))
    }

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
        let cases = [
            (
                GateState::NotFound {
                    gate: "staging/web".into(),
                },
                "PromotionGateNotFound",
            ),
            (
                GateState::Cycle {
                    gate: "staging/web".into(),
                },
                "PromotionGateCycle",
            ),
            (
                GateState::Forbidden {
                    gate: "staging/web".into(),
                },
                "PromotionGateForbidden",
            ),
        ];
        for (gate, why) in cases {
            let mut w = World::default_spec();
            w.roll_out_healthy();
            w.set_image("shortener:v2", V2);
            w.gate = gate;
            let plan = w.step();
            assert_eq!(w.status.phase, Phase::Blocked, "{why}");
            assert_eq!(w.condition("Progressing").reason, why);
            assert!(plan.events[0].warning, "{why}");
            assert!(w.status.message.contains("staging/web"), "{why}");
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
        plan.deployments.iter().find_map(|d| match d {
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
        let t = rolling_target(plan).unwrap();
        (t.hash, t.image, t.replicas)
    }

    fn runs(hash: &str, image: Option<&str>) -> (String, Option<String>, i32) {
        (hash.to_string(), image.map(str::to_string), 2)
    }

    #[test]
    fn rolling_first_release_runs_the_spec_and_becomes_healthy() {
        let mut w = rolling_world();
        let plan = w.step();
        assert_eq!(w.status.phase, Phase::Progressing);
        assert_eq!(target(&plan), runs(V1, None));
        w.pods(V1, 2, None);
        let plan = w.step();
        assert_eq!(
            w.probes.len(),
            1,
            "smoke test as soon as the pods are ready"
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
        assert_eq!(rolling_target(&w.step()), None);
    }
}
