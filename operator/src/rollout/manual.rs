//! Manual controls (`shortener.dev/promote`, `abort`, `rollback-to`; parsed in
//! [`crate::manual`]) and a manual rollback carried on until it serves.

use super::progress::Checks;
use super::{Decider, FAST_REQUEUE, IDLE_REQUEUE, Probe, RollbackNote, seconds_between};
use crate::api::reason;
use crate::api::{FailureReason, Outcome, Phase, RevisionRecord};
use crate::manual::{Control, Target};

impl Decider<'_> {
    pub(super) fn reject(&mut self, why: String) {
        self.event(true, reason::MANUAL_CONTROL_REJECTED, why.clone());
        self.rejected = Some(why);
    }

    /// The revision being rolled out (not the stable one), if any.
    pub(super) fn in_progress(&self) -> Option<RevisionRecord> {
        self.record(self.st.current_revision)
            .filter(|r| r.outcome == Outcome::InProgress)
            .filter(|r| Some(r.revision) != self.st.stable_revision)
            .cloned()
    }

    pub(super) fn act_on(&mut self, control: &Control) {
        match control {
            Control::Invalid(why) => self.reject(why.clone()),
            Control::Promote => self.promote_now(),
            Control::Abort => self.abort(),
            Control::RollbackTo(target) => self.roll_back_to(*target),
        }
    }

    /// `shortener.dev/promote`: the bake ends now. The readiness and smoke checks are not
    /// skipped: a revision that has not passed them never gets traffic by hand either.
    pub(super) fn promote_now(&mut self) {
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
    pub(super) fn abort(&mut self) {
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
    pub(super) fn roll_back_to(&mut self, target: Target) {
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
                    bake: None,
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
            bake: None,
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

    /// The current revision, when the release is held on a manual rollback: the newest
    /// record for the spec's template failed, and only manual rollbacks came after it.
    pub(super) fn pinned_rollback(&self) -> Option<RevisionRecord> {
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
    pub(super) fn follow_rollback(&mut self, rec: RevisionRecord) -> Option<Probe> {
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
                match self.check_unpromoted(&rec, &obs) {
                    Checks::Passed => self.restore(&rec, &hint),
                    Checks::Probe(probe) => return Some(probe),
                    Checks::Failed => {}
                    Checks::Waiting => self.set_phase(
                        Phase::Progressing,
                        reason::MANUAL_ROLLBACK,
                        format!(
                            "rolling back by hand to {} (revision {}): {}/{} pods ready",
                            rec.image, rec.revision, obs.ready_pods, spec.replicas
                        ),
                    ),
                }
                None
            }
        }
    }

    /// The manual rollback's pods are ready and tested: it takes the traffic and is stable.
    pub(super) fn restore(&mut self, rec: &RevisionRecord, hint: &str) {
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
}
