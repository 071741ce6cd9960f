//! Plan assembly: which revisions run and which are retired, the Services, the SLA budget
//! charge, history pruning and the conditions; the strategy turns the revisions to run into
//! its workload.

use super::{Course, Decider, DeploymentAction, Health, Plan, Routing};
use crate::api::reason;
use crate::api::{Outcome, ShortenerReleaseStatus};
use crate::budget;

impl Decider<'_> {
    /// The stable revision runs at full size beside `running` (unless it is `running`), and
    /// every other revision is retired.
    pub(super) fn stable_beside(
        &self,
        running: Option<&String>,
        deployments: &mut Vec<DeploymentAction>,
    ) {
        let stable = self.stable_hash();
        if let Some(hash) = stable.clone().filter(|s| Some(s) != running) {
            deployments.push(DeploymentAction::Scale {
                hash,
                replicas: self.input.spec.replicas,
            });
        }
        self.retire(&[running, stable.as_ref()], deployments);
    }

    /// What becomes of the Deployments of revisions other than `running`. A strategy that
    /// keeps retired Deployments (blue-green) keeps a revision that was promoted and is
    /// still in the history, scaled to zero, so that rolling back to it by hand brings back
    /// exactly the pods that ran (as Kubernetes keeps old ReplicaSets); every other one is
    /// deleted.
    pub(super) fn retire(
        &self,
        running: &[Option<&String>],
        deployments: &mut Vec<DeploymentAction>,
    ) {
        let keep_healthy = self.rules.keeps_retired_deployments();
        for (hash, obs) in &self.input.observed.revisions {
            if running.contains(&Some(hash)) {
                continue;
            }
            let was_healthy = self
                .st
                .history
                .iter()
                .any(|r| r.pod_template_hash == *hash && r.outcome == Outcome::Promoted);
            if keep_healthy && was_healthy {
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

    /// The revisions to run and to retire, and what the Services select (active, preview),
    /// as the course `run()` settled on asks.
    #[allow(clippy::type_complexity)]
    fn layout(
        &self,
    ) -> (
        Vec<DeploymentAction>,
        Option<(Option<String>, Option<String>)>,
    ) {
        let spec = self.input.spec;
        let mut deployments = Vec::new();
        let routing = match self.course {
            Course::Untouched => None,
            Course::Pinned => {
                let rec = self.record(self.st.current_revision).cloned();
                rec.map(|rec| {
                    let stable = self.stable_hash();
                    let hash = rec.pod_template_hash.clone();
                    let replicas =
                        if rec.outcome == Outcome::Failed && Some(&hash) != stable.as_ref() {
                            0
                        } else {
                            spec.replicas
                        };
                    // An existing Deployment is only scaled: re-applying it from today's spec
                    // would roll its pods.
                    deployments.push(if self.input.observed.revisions.contains_key(&hash) {
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
                    (self.active.clone(), Some(hash))
                })
            }
            Course::Held => {
                let stable = self.stable_hash();
                self.stable_beside(None, &mut deployments);
                Some((stable.clone(), stable))
            }
            Course::Spec => {
                let desired = self.input.desired_hash.to_string();
                let current = self.record(self.st.current_revision);
                let desired_serves = self.active.as_deref() == Some(desired.as_str());
                let failed = current.is_some_and(|rec| {
                    rec.pod_template_hash == desired && rec.outcome == Outcome::Failed
                });
                let replicas = if failed && !desired_serves {
                    0
                } else {
                    spec.replicas
                };
                deployments.push(DeploymentAction::Apply {
                    hash: desired.clone(),
                    replicas,
                });
                self.stable_beside(Some(&desired), &mut deployments);
                Some((self.active.clone(), Some(desired)))
            }
        };
        (deployments, routing)
    }

    pub(super) fn finish(mut self) -> Plan {
        // First, so that what leaves the history also loses its Deployment (see `retire`).
        prune_history(
            &mut self.st,
            self.input.spec.rollback.revision_history_limit,
        );
        let (revisions, routing) = self.layout();
        if let Some(why) = &self.rejected {
            self.st.message = format!("{why}; {}", self.st.message);
        }
        let downtime_charged = self.charge_budget();
        let reason = if self.condition_reason.is_empty() {
            reason::PENDING.to_string()
        } else {
            self.condition_reason.clone()
        };
        super::conditions::set(&mut self.st, &reason, self.input.generation, self.input.now);
        self.scale_status(routing.as_ref().and_then(|(active, _)| active.clone()));
        let workload = self.rules.workload(revisions, &self.st);
        let routing = routing.map(|(active, preview)| Routing {
            active: self.rules.active_service(active),
            preview,
        });
        Plan {
            status: self.st,
            workload,
            routing,
            events: self.events,
            rollback: self.rollback,
            restored: self.restored,
            failure: self.failure,
            requeue: self.requeue,
            downtime_charged,
        }
    }

    /// The scale subresource's view: the ready pods serving users and their selector.
    /// `active`: the revision the plan gives the traffic (else the stable one: paused).
    fn scale_status(&mut self, active: Option<String>) {
        let active = active.or_else(|| self.stable_hash());
        let revisions = &self.input.observed.revisions;
        self.st.replicas = Some(
            active
                .as_deref()
                .map_or(0, |a| self.rules.serving_pods(revisions, a)),
        );
        self.st.selector = Some(self.rules.selector(self.input.name, active.as_deref()));
    }

    /// Charges what this step learnt to the SLA budget; returns the seconds charged.
    pub(super) fn charge_budget(&mut self) -> i64 {
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

/// 15 minutes: what the schema's default allows, used if the spec cannot be parsed.
const DEFAULT_ALLOWED_SECONDS: i64 = 900;

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
