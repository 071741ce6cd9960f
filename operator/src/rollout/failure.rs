//! A revision that failed: before it had the traffic (the stable revision never lost it),
//! after (traffic back to stable, unless automatic rollback is off), and the steps after
//! that while the spec still names it.

use k8s_openapi::jiff::Timestamp;

use super::{Decider, FAST_REQUEUE, Health, IDLE_REQUEUE, RollbackNote, seconds_between};
use crate::api::reason;
use crate::api::{AnalysisStatus, FailureReason, LastIncident, Outcome, Phase, RevisionRecord};

impl Decider<'_> {
    /// The revision failed before it took traffic.
    pub(super) fn fail(&mut self, rec: &RevisionRecord, why: FailureReason, detail: String) {
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
    pub(super) fn fail_promoted(
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
        // so the outage stays open until then (see `follow_undo`).
        let restored_now = roll_back && self.rules.rollback_restores_at_once();
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

    pub(super) fn mark_failed(&mut self, revision: i64, why: FailureReason) {
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
    pub(super) fn stay_failed(&mut self, rec: &RevisionRecord) {
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
        } else if rolled_back && self.follow_undo(rec) {
            // Still replacing the failed pods.
        } else if !kept_traffic {
            self.check_serving();
        }
        self.condition_reason = rec.reason.clone().unwrap_or_default();
        if self.st.message.is_empty() {
            self.st.message = format!("revision {} failed", rec.revision);
        }
    }

    /// A strategy whose rollback does not restore at once (`Rolling`), rolled back after
    /// promotion, is restored only once none of the failed revision's pods is ready any
    /// more: until then they take a share of the traffic and the outage (and the SLA
    /// budget's charge) goes on. Returns true while it does.
    pub(super) fn follow_undo(&mut self, rec: &RevisionRecord) -> bool {
        if self.rules.rollback_restores_at_once() {
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
}
