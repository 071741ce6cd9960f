//! Annotations a person (or `kubectl shortener`) sets on a release to steer it.

/// "true": nothing changes while set (phase `Paused`).
pub const ANNOTATION_PAUSED: &str = "shortener.dev/paused";
/// Any new value: roll the spec's failed pod template out again as a new revision (compared
/// with `status.observedRetry`).
pub const ANNOTATION_RETRY: &str = "shortener.dev/retry";
/// "true": roll out despite an SLA freeze.
pub const ANNOTATION_BUDGET_OVERRIDE: &str = "shortener.dev/budget-override";

// One-shot manual controls: acted on once, then removed by the operator.
/// "true": end the bake now; the revision being baked becomes stable.
pub const ANNOTATION_PROMOTE: &str = "shortener.dev/promote";
/// "true": stop the rollout in progress; traffic back to stable, the revision Failed (Manual).
pub const ANNOTATION_ABORT: &str = "shortener.dev/abort";
/// A revision number from `status.history`, or "previous": serve that healthy revision again.
pub const ANNOTATION_ROLLBACK_TO: &str = "shortener.dev/rollback-to";

/// In the order they are acted on when several are set at once: stopping comes first.
pub const CONTROL_ANNOTATIONS: [&str; 3] =
    [ANNOTATION_ABORT, ANNOTATION_ROLLBACK_TO, ANNOTATION_PROMOTE];

/// On a release: the other namespaces whose releases may use it as their promotion gate,
/// comma-separated namespace names, or `*` for all.
pub const ANNOTATION_PROMOTION_GATE_FOR: &str = "shortener.dev/promotion-gate-for";
