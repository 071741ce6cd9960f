//! A rollout moving forward: starting (unless the gate or the budget holds it), waiting for
//! pods, the smoke test, promotion, the bake with its analysis, and becoming stable; a newer
//! spec superseding it; whether the serving revision is up.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;

use super::checks::{Baseline, failed_check, failure_detail, judged_p99_ms};
use super::{
    Course, Decider, FAST_REQUEUE, GATE_REQUEUE, Health, IDLE_REQUEUE, Probe, RevisionObservation,
    SmokeResult, seconds_between,
};
use crate::api::reason;
use crate::api::{
    AnalysisStatus, BakeFigures, FailureReason, InsufficientTraffic, Outcome, Phase, RevisionRecord,
};
use crate::promql;

/// Where the checks of a revision without traffic stand.
pub(super) enum Checks {
    /// Ready and smoke tested (if asked for): it may take the traffic.
    Passed,
    /// Run this first.
    Probe(Probe),
    /// Failed; recorded.
    Failed,
    /// Not all pods ready yet, within the progress deadline.
    Waiting,
}

impl Decider<'_> {
    /// A newer spec replaces a rollout still in progress; traffic it had goes back at once.
    pub(super) fn supersede_in_progress(&mut self, current: Option<&RevisionRecord>) {
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
    pub(super) fn check_serving(&mut self) {
        let Some(active) = self.active.as_ref() else {
            return;
        };
        let ready = self
            .rules
            .serving_pods(&self.input.observed.revisions, active);
        self.health = if ready > 0 {
            Health::Up
        } else {
            Health::Down(self.now())
        };
    }

    pub(super) fn budget_frozen(&self) -> bool {
        self.input.spec.sla.freeze_when_exhausted
            && !self.input.budget_override
            && self
                .st
                .budget
                .as_ref()
                .is_some_and(|b| b.exhausted(self.now()))
    }

    /// Starts a rollout unless the promotion gate or the SLA budget freeze forbids it.
    pub(super) fn try_start(&mut self, hash: String) {
        let gate = self.input.gate;
        if let Some(why) = gate.reason() {
            self.hold();
            let msg = gate.message();
            // Events on transitions only: a new reason or a new image to wait for.
            if self.st.phase != Phase::Blocked || self.st.message != msg {
                self.event(
                    why != crate::api::reason::AWAITING_PROMOTION,
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
    pub(super) fn hold(&mut self) {
        // A retry asked for now is kept for when the hold ends, not spent on it.
        self.st.observed_retry = self.input.status.observed_retry.clone();
        self.course = Course::Held;
        self.active = self.stable_hash();
        self.check_serving();
    }

    pub(super) fn start(&mut self, hash: String) {
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
            bake: None,
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

    pub(super) fn progress(&mut self, rec: RevisionRecord) -> Option<Probe> {
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
            return self.progress_unpromoted(&rec, obs);
        };
        self.bake(&rec, hash, promoted_at)
    }

    pub(super) fn progress_unpromoted(
        &mut self,
        rec: &RevisionRecord,
        obs: RevisionObservation,
    ) -> Option<Probe> {
        let spec = self.input.spec;
        self.active = self.stable_hash();
        self.check_serving();
        match self.check_unpromoted(rec, &obs) {
            Checks::Passed => {
                // The pods' counters now are the bake's baseline: the smoke test's requests
                // (and anything before the traffic) are not the bake's.
                let Some(sample) = self.input.observed.analysis.as_ref() else {
                    return Some(Probe::Analyze {
                        hash: rec.pod_template_hash.clone(),
                    });
                };
                self.promote(rec, sample.pod_counts.clone());
            }
            Checks::Probe(probe) => return Some(probe),
            Checks::Failed => {}
            Checks::Waiting => self.set_phase(
                Phase::Progressing,
                reason::WAITING_FOR_PODS,
                format!(
                    "revision {}: {}/{} pods ready",
                    rec.revision, obs.ready_pods, spec.replicas
                ),
            ),
        }
        None
    }

    /// Readiness, the smoke test and the progress deadline of a revision without traffic (a
    /// new one, or a manual rollback's), in the order they gate it. A failure is recorded
    /// here.
    pub(super) fn check_unpromoted(
        &mut self,
        rec: &RevisionRecord,
        obs: &RevisionObservation,
    ) -> Checks {
        let spec = self.input.spec;
        if obs.ready_pods >= spec.replicas {
            if spec.health_check.smoke_test {
                match &self.input.observed.smoke {
                    None => {
                        return Checks::Probe(Probe::SmokeTest {
                            hash: rec.pod_template_hash.clone(),
                        });
                    }
                    Some(SmokeResult::Failed(msg)) => {
                        let msg = msg.clone();
                        self.fail(rec, FailureReason::SmokeTestFailed, msg);
                        return Checks::Failed;
                    }
                    Some(SmokeResult::Passed) => {}
                }
            }
            return Checks::Passed;
        }
        let elapsed = seconds_between(rec.started_at, self.now());
        if elapsed >= f64::from(spec.progress_deadline_seconds) {
            let msg = format!(
                "{}/{} pods ready after {}s",
                obs.ready_pods, spec.replicas, spec.progress_deadline_seconds
            );
            self.fail(rec, FailureReason::ProgressDeadlineExceeded, msg);
            return Checks::Failed;
        }
        Checks::Waiting
    }

    /// Baking with live traffic.
    pub(super) fn bake(
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
        let bake = f64::from(spec.analysis.bake_seconds);
        let since = analysis.last_sample_at.unwrap_or(analysis.promoted_at);
        let bake_over = seconds_between(analysis.promoted_at, self.now()) >= bake;
        // Judged by PromQL alone, the pods' requests are never read: no minimum applies to
        // them (a bake in which no interval passed every query fails instead, promql::unproven).
        let pods_judged = spec
            .analysis
            .prometheus
            .as_ref()
            .is_none_or(|p| p.scrape_pods);
        let min_bake_requests = if pods_judged {
            spec.analysis.min_bake_requests
        } else {
            0
        };
        // A bake about to end short of traffic reads the pods once more after its end, so
        // requests of its last moments (or of a bake shorter than an interval) count.
        let final_read = bake_over
            && analysis.requests < min_bake_requests
            && seconds_between(analysis.promoted_at, since) < bake;
        if seconds_between(since, self.now()) >= interval || final_read {
            let Some(sample) = self.input.observed.analysis.as_ref() else {
                return Some(Probe::Analyze { hash });
            };
            analysis.last_sample_at = Some(self.now());
            analysis.requests += sample.requests;
            analysis.errors += sample.errors;
            analysis.pod_counts = sample.pod_counts.clone();
            let promql_passed = promql::record(&mut analysis, sample.prometheus.as_ref());
            if let Some(ms) = judged_p99_ms(spec, sample) {
                analysis.peak_latency_p99_ms =
                    Some(analysis.peak_latency_p99_ms.map_or(ms, |p| p.max(ms)));
            }
            let baseline = self.baseline();
            let failed = failed_check(spec, sample, baseline.as_ref());
            if failed.is_some() {
                analysis.failed_intervals += 1;
                self.health = Health::Down(since);
            } else if sample.requests >= spec.analysis.min_requests || promql_passed {
                analysis.failed_intervals = 0;
                self.health = Health::Up;
            }
            self.st.analysis = Some(analysis.clone());
            if analysis.failed_intervals >= spec.analysis.failure_limit {
                let msg = failure_detail(spec, sample, failed, baseline.as_ref());
                self.fail_promoted(rec, FailureReason::AnalysisFailed, msg, since, &analysis);
                return None;
            }
        }
        if bake_over {
            if let Some(msg) = promql::unproven(spec, &analysis) {
                self.fail_promoted(rec, FailureReason::AnalysisFailed, msg, since, &analysis);
                return None;
            }
            if analysis.requests >= min_bake_requests {
                if analysis.requests == 0 && pods_judged {
                    // No minimum asked for, but a release nobody used is not declared
                    // healthy without a word.
                    let msg = format!(
                        "revision {} becomes stable without a single judged request during \
                         its {}s bake (spec.analysis.minBakeRequests is 0)",
                        rec.revision, spec.analysis.bake_seconds
                    );
                    self.event(true, reason::INSUFFICIENT_TRAFFIC, msg);
                }
                self.make_stable(rec);
            } else {
                self.short_of_traffic(rec, since, &analysis);
            }
            return None;
        }
        self.set_phase(
            Phase::Analyzing,
            reason::BAKING,
            format!(
                "revision {} serving; baking {}s, {} errors in {} requests so far{}{}",
                rec.revision,
                spec.analysis.bake_seconds,
                analysis.errors,
                analysis.requests,
                analysis
                    .prometheus
                    .as_ref()
                    .map_or_else(String::new, |p| format!("; {p}")),
                self.baseline_note()
            ),
        );
        None
    }

    /// The bake is over with fewer judged requests than `minBakeRequests`: never a silent
    /// promotion. `Fail` fails the revision; `Hold` keeps it serving and analysed, not
    /// stable, until enough requests came (the intervals go on and can still fail it).
    fn short_of_traffic(&mut self, rec: &RevisionRecord, since: Timestamp, a: &AnalysisStatus) {
        let spec = self.input.spec;
        let seen = format!(
            "{} of {} requests during the {}s bake",
            a.requests, spec.analysis.min_bake_requests, spec.analysis.bake_seconds
        );
        match spec.analysis.insufficient_traffic {
            InsufficientTraffic::Fail => {
                let why = FailureReason::InsufficientTraffic;
                self.fail_promoted(rec, why, seen, since, a);
            }
            InsufficientTraffic::Hold => {
                let msg = format!(
                    "revision {} serving but not stable: {seen}; holding until {} (or \
                     shortener.dev/promote)",
                    rec.revision, spec.analysis.min_bake_requests
                );
                // One Event when the hold starts, not one per reconcile.
                let holding = self.input.status.phase == Phase::Analyzing
                    && self.input.status.conditions.iter().any(|c| {
                        c.type_ == "Progressing" && c.reason == reason::INSUFFICIENT_TRAFFIC
                    });
                if !holding {
                    self.event(true, reason::INSUFFICIENT_TRAFFIC, msg.clone());
                }
                self.set_phase(Phase::Analyzing, reason::INSUFFICIENT_TRAFFIC, msg);
            }
        }
    }

    /// The stable revision's bake figures, when `relativeToStable` compares with them.
    fn baseline(&self) -> Option<Baseline> {
        self.input.spec.analysis.relative_to_stable.as_ref()?;
        let stable = self.st.stable_revision?;
        let rec = self.st.history.iter().find(|r| r.revision == stable)?;
        Some(Baseline {
            revision: stable,
            figures: rec.bake.clone()?,
        })
    }

    /// Says so in the bake's message when `relativeToStable` is set but nothing can be
    /// compared: never a comparison silently skipped.
    fn baseline_note(&self) -> String {
        if self.input.spec.analysis.relative_to_stable.is_none() || self.baseline().is_some() {
            return String::new();
        }
        match self.st.stable_revision {
            Some(n) => {
                format!("; not compared with stable revision {n}: it recorded no bake figures")
            }
            None => "; not compared with a stable revision: there is none yet".to_string(),
        }
    }

    pub(super) fn promote(
        &mut self,
        rec: &RevisionRecord,
        baseline: BTreeMap<String, crate::api::RequestCounts>,
    ) {
        let now = self.now();
        if let Some(r) = self.record_mut(rec.revision) {
            r.promoted_at = Some(now);
        }
        let mut analysis = AnalysisStatus::new(now);
        analysis.pod_counts = baseline;
        self.st.analysis = Some(analysis);
        self.active = Some(rec.pod_template_hash.clone());
        let msg = format!(
            "revision {} passed its checks and serves traffic; baking {}s",
            rec.revision, self.input.spec.analysis.bake_seconds
        );
        self.event(false, reason::PROMOTED, msg.clone());
        self.set_phase(Phase::Analyzing, reason::PROMOTED, msg);
    }

    pub(super) fn make_stable(&mut self, rec: &RevisionRecord) {
        let now = self.now();
        // The bake's figures become the baseline of the next revision's (relativeToStable).
        let bake = self
            .st
            .analysis
            .as_ref()
            .filter(|a| a.requests > 0)
            .map(|a| BakeFigures {
                requests: a.requests,
                errors: a.errors,
                peak_latency_p99_ms: a.peak_latency_p99_ms,
            });
        if let Some(r) = self.record_mut(rec.revision) {
            r.outcome = Outcome::Promoted;
            r.finished_at = Some(now);
            r.bake = bake;
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
}
