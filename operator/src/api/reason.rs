//! Reasons: the CamelCase words in conditions, Events, `status.history[].reason`,
//! `status.lastIncident.reason` and metric labels (the fixed set in docs/contracts.md).

/// Why a revision failed: the fixed set from docs/contracts.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailureReason {
    CrashLoop,
    /// A container was killed because it did not answer its startup probe within the
    /// startup budget (`spec.healthCheck.startupSeconds`).
    StartupProbeFailed,
    ImagePullFailed,
    /// The revision's pods cannot be created: admission (Pod Security, a webhook), quota.
    PodCreateFailed,
    ProgressDeadlineExceeded,
    SmokeTestFailed,
    AnalysisFailed,
    /// The bake ended with fewer requests than `spec.analysis.minBakeRequests`, and
    /// `insufficientTraffic` is `Fail`.
    InsufficientTraffic,
    Manual,
}

impl FailureReason {
    pub const ALL: [FailureReason; 9] = [
        FailureReason::CrashLoop,
        FailureReason::StartupProbeFailed,
        FailureReason::ImagePullFailed,
        FailureReason::PodCreateFailed,
        FailureReason::ProgressDeadlineExceeded,
        FailureReason::SmokeTestFailed,
        FailureReason::AnalysisFailed,
        FailureReason::InsufficientTraffic,
        FailureReason::Manual,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::CrashLoop => "CrashLoop",
            FailureReason::StartupProbeFailed => "StartupProbeFailed",
            FailureReason::ImagePullFailed => "ImagePullFailed",
            FailureReason::PodCreateFailed => "PodCreateFailed",
            FailureReason::ProgressDeadlineExceeded => "ProgressDeadlineExceeded",
            FailureReason::SmokeTestFailed => "SmokeTestFailed",
            FailureReason::AnalysisFailed => "AnalysisFailed",
            FailureReason::InsufficientTraffic => "InsufficientTraffic",
            FailureReason::Manual => "Manual",
        }
    }
}

// Reasons for transitions that are not failures (conditions and Events).
pub const ROLLOUT_STARTED: &str = "RolloutStarted";
pub const PROMOTED: &str = "Promoted";
pub const ROLLOUT_SUCCEEDED: &str = "RolloutSucceeded";
pub const SUPERSEDED: &str = "Superseded";
pub const HEALTHY: &str = "Healthy";
pub const WAITING_FOR_PODS: &str = "WaitingForPods";
pub const BAKING: &str = "Baking";
/// The bake ended with fewer requests than `spec.analysis.minBakeRequests` and the
/// revision is held, serving but not stable (`insufficientTraffic: Hold`).
pub const INSUFFICIENT_TRAFFIC: &str = "InsufficientTraffic";
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

// Reasons of a closed promotion gate (conditions and Events).
pub const AWAITING_PROMOTION: &str = "AwaitingPromotion";
pub const PROMOTION_GATE_NOT_FOUND: &str = "PromotionGateNotFound";
pub const PROMOTION_GATE_CYCLE: &str = "PromotionGateCycle";
pub const PROMOTION_GATE_FORBIDDEN: &str = "PromotionGateForbidden";
/// `spec.analysis.prometheus.address` is not in the operator's `--prometheus-allow` list:
/// new rollouts are held (phase Blocked), an analysis under way gets no data from it.
pub const PROMETHEUS_ADDRESS_REFUSED: &str = "PrometheusAddressRefused";
