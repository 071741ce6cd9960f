//! The status conditions, as a pure function of the phase: `Ready`, `Progressing` and
//! `Degraded` (Kubernetes API conventions) and the kstatus pair `Reconciling` and `Stalled`
//! (sigs.k8s.io/cli-utils kstatus, read by Flux health checks, Helm 4 `--wait` and
//! Argo CD): `Reconciling=True` while a rollout is under way; `Stalled=True`, with the
//! reason, when the release does not reach its spec without outside help (the revision
//! failed, a gate or budget freeze blocks it, or it is paused); both `False` once the spec's
//! revision is stable. Each condition carries `observedGeneration`, so a tool waiting after
//! an apply never reads the previous rollout's result.

use k8s_openapi::jiff::Timestamp;

use crate::api::reason;
use crate::api::{Condition, Phase, ShortenerReleaseStatus};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// One condition's value before it is stamped with messages and times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Want<'a> {
    pub type_: &'static str,
    pub on: bool,
    pub reason: &'a str,
}

/// The five conditions of a release in `phase`, whose step gave `reason`.
pub fn wanted(phase: Phase, reason: &str) -> [Want<'_>; 5] {
    let ready = phase == Phase::Healthy;
    let progressing = matches!(phase, Phase::Progressing | Phase::Analyzing);
    let degraded = matches!(phase, Phase::Degraded | Phase::RolledBack);
    // Work the operator does by itself: a rollout under way, or not reconciled yet.
    let reconciling = matches!(
        phase,
        Phase::Pending | Phase::Progressing | Phase::Analyzing
    );
    let stalled = matches!(
        phase,
        Phase::Degraded | Phase::RolledBack | Phase::Blocked | Phase::Paused
    );
    let off = |on: bool| if on { reason } else { reason::AS_EXPECTED };
    [
        Want {
            type_: READY,
            on: ready,
            reason,
        },
        Want {
            type_: PROGRESSING,
            on: progressing,
            reason,
        },
        Want {
            type_: DEGRADED,
            on: degraded,
            reason: off(degraded),
        },
        Want {
            type_: RECONCILING,
            on: reconciling,
            reason: off(reconciling),
        },
        Want {
            type_: STALLED,
            on: stalled,
            reason: off(stalled),
        },
    ]
}

/// Sets the conditions from the status's phase and message; `lastTransitionTime` moves
/// only when a condition's status changes.
pub fn set(st: &mut ShortenerReleaseStatus, reason: &str, generation: Option<i64>, now: Timestamp) {
    let message = st.message.clone();
    for want in wanted(st.phase, reason) {
        let status = if want.on { "True" } else { "False" };
        match st.conditions.iter_mut().find(|c| c.type_ == want.type_) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = now;
                }
                c.status = status.into();
                c.reason = want.reason.into();
                c.message = message.clone();
                c.observed_generation = generation;
            }
            None => st.conditions.push(Condition {
                type_: want.type_.into(),
                status: status.into(),
                reason: want.reason.into(),
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

    fn on(phase: Phase, type_: &str) -> (bool, String) {
        let w = wanted(phase, "Why");
        let c = w.iter().find(|w| w.type_ == type_).expect("every type");
        (c.on, c.reason.to_string())
    }

    /// Every phase: (Ready, Progressing, Degraded, Reconciling, Stalled).
    #[test]
    fn each_phase_sets_the_kstatus_pair() {
        use Phase::*;
        let table = [
            (Pending, [false, false, false, true, false]),
            (Progressing, [false, true, false, true, false]),
            (Analyzing, [false, true, false, true, false]),
            (Healthy, [true, false, false, false, false]),
            (Degraded, [false, false, true, false, true]),
            (RolledBack, [false, false, true, false, true]),
            (Blocked, [false, false, false, false, true]),
            (Paused, [false, false, false, false, true]),
        ];
        assert_eq!(table.len(), Phase::ALL.len(), "every phase is in the table");
        for (phase, expected) in table {
            let got: Vec<bool> = wanted(phase, "Why").iter().map(|w| w.on).collect();
            assert_eq!(got, expected, "{phase:?}");
        }
    }

    #[test]
    fn never_reconciling_and_stalled_at_once() {
        for phase in Phase::ALL {
            let (r, _) = on(phase, RECONCILING);
            let (s, _) = on(phase, STALLED);
            assert!(!(r && s), "{phase:?}");
            // kstatus "Current" (neither) only when the spec's revision is stable.
            assert_eq!(!r && !s, phase == Phase::Healthy, "{phase:?}");
        }
    }

    #[test]
    fn true_conditions_carry_the_step_reason_false_ones_as_expected() {
        for phase in Phase::ALL {
            for type_ in [DEGRADED, RECONCILING, STALLED] {
                let (is_on, why) = on(phase, type_);
                let expected = if is_on { "Why" } else { reason::AS_EXPECTED };
                assert_eq!(why, expected, "{phase:?} {type_}");
            }
        }
        assert_eq!(on(Phase::RolledBack, STALLED).1, "Why");
        assert_eq!(on(Phase::Blocked, STALLED).1, "Why");
    }

    #[test]
    fn set_stamps_generation_and_moves_transition_time_only_on_change() {
        let t0 = Timestamp::from_second(1_000).expect("valid");
        let t1 = Timestamp::from_second(2_000).expect("valid");
        let mut st = ShortenerReleaseStatus {
            phase: Phase::Progressing,
            message: "rolling".into(),
            ..Default::default()
        };
        set(&mut st, "RolloutStarted", Some(1), t0);
        assert_eq!(st.conditions.len(), 5);
        st.phase = Phase::RolledBack;
        st.message = "failed".into();
        set(&mut st, "SmokeTestFailed", Some(2), t1);
        let get = |t: &str| st.conditions.iter().find(|c| c.type_ == t).expect("set");
        let stalled = get(STALLED);
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", "SmokeTestFailed")
        );
        assert_eq!(stalled.last_transition_time, t1);
        assert_eq!(stalled.observed_generation, Some(2));
        assert_eq!(stalled.message, "failed");
        let ready = get(READY);
        assert_eq!(ready.status, "False");
        assert_eq!(ready.last_transition_time, t0, "Ready stayed False");
        assert_eq!(get(RECONCILING).status, "False");
    }
}
