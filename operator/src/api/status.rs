//! Status of a `ShortenerRelease`: written only by the operator, read by users, the
//! kubectl plugin and the chart's alerts.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::budget::BudgetStatus;

/// Where a release stands. Trust it only when `observedGeneration` equals
/// `metadata.generation`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum Phase {
    /// Not reconciled yet.
    #[default]
    Pending,
    /// A new revision is starting, or being smoke tested, without user traffic.
    Progressing,
    /// The new revision has the traffic and its error rate is being watched.
    Analyzing,
    /// The desired revision is stable and serving.
    Healthy,
    /// The desired revision failed and nothing healthy serves in its place (first
    /// release, or automatic rollback off).
    Degraded,
    /// The desired revision failed; the stable revision serves (it never lost traffic,
    /// or got it back).
    RolledBack,
    /// The operator refuses to roll out this spec (see the message).
    Blocked,
    /// The `shortener.dev/paused` annotation is "true"; nothing changes.
    Paused,
}

impl Phase {
    pub const ALL: [Phase; 8] = [
        Phase::Pending,
        Phase::Progressing,
        Phase::Analyzing,
        Phase::Healthy,
        Phase::Degraded,
        Phase::RolledBack,
        Phase::Blocked,
        Phase::Paused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Progressing => "Progressing",
            Phase::Analyzing => "Analyzing",
            Phase::Healthy => "Healthy",
            Phase::Degraded => "Degraded",
            Phase::RolledBack => "RolledBack",
            Phase::Blocked => "Blocked",
            Phase::Paused => "Paused",
        }
    }
}

/// Observed state of a ShortenerRelease, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ShortenerReleaseStatus {
    /// `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the release stands.
    #[serde(default)]
    pub phase: Phase,
    /// Human-readable explanation of the phase.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Revision number of the spec being rolled out or last rolled out (see `history`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<i64>,
    /// Revision number that last passed its bake and serves when nothing is in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_revision: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`, per Kubernetes API conventions, and the
    /// kstatus pair `Reconciling` (True while a rollout is under way) and `Stalled` (True
    /// when nothing moves without outside help: rolled back, degraded, blocked, paused).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Ready pods of the revision(s) serving users: the scale subresource's
    /// `status.replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Label selector (string form) of the serving pods: the scale subresource's
    /// `labelSelectorPath`, for a HorizontalPodAutoscaler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Revisions, oldest first, pruned to `spec.rollback.revisionHistoryLimit` (the stable
    /// and current revisions are always kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<RevisionRecord>,
    /// Bake progress of the current revision, while Analyzing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisStatus>,
    /// The latest failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_incident: Option<LastIncident>,
    /// SLA downtime budget over the rolling year.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetStatus>,
    /// Value of the `shortener.dev/retry` annotation last acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_retry: Option<String>,
}

/// A condition in the shape of `metav1.Condition`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Progressing`, `Degraded`, `Reconciling` or `Stalled`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable detail.
    #[serde(default)]
    pub message: String,
    /// When `status` last changed.
    #[schemars(with = "String")]
    pub last_transition_time: Timestamp,
    /// Generation the condition was set from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// How a revision's rollout ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Outcome {
    /// Still rolling out.
    InProgress,
    /// Passed its bake and became stable.
    Promoted,
    /// Failed (see `reason`); never retried by itself.
    Failed,
    /// Replaced by a newer spec before it finished.
    Superseded,
}

/// One revision of the release.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionRecord {
    /// Revision number, increasing with every rollout (a retried pod template gets a new one).
    pub revision: i64,
    /// Hash of the pod template; the Deployment is `<name>-<podTemplateHash>`.
    pub pod_template_hash: String,
    /// Image of the revision.
    pub image: String,
    /// How the rollout ended.
    pub outcome: Outcome,
    /// Failure reason (`CrashLoop`, `StartupProbeFailed`, `ImagePullFailed`, `PodCreateFailed`,
    /// `ProgressDeadlineExceeded`, `SmokeTestFailed`, `AnalysisFailed`, `InsufficientTraffic`, `Manual`) or another
    /// CamelCase reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the rollout started.
    #[schemars(with = "String")]
    pub started_at: Timestamp,
    /// When the revision got the user traffic (absent if it never did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub promoted_at: Option<Timestamp>,
    /// When the rollout ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub finished_at: Option<Timestamp>,
    /// What the bake measured, recorded when the revision became stable: the baseline a
    /// later revision is judged against (`spec.analysis.relativeToStable`). Absent for a
    /// revision that never became stable or baked without a judged request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake: Option<BakeFigures>,
}

/// A stable revision's bake, in the terms a later revision is compared in.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BakeFigures {
    /// Judged requests (API routes, not 4xx) during the bake.
    pub requests: i64,
    /// 5xx answers among them.
    pub errors: i64,
    /// The highest p99 latency of one interval, in milliseconds; absent when no interval
    /// timed `minRequests` requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_latency_p99_ms: Option<f64>,
}

impl BakeFigures {
    /// The error rate in percent (`requests` is never 0: such a bake records no figures).
    pub fn error_rate(&self) -> f64 {
        (self.errors as f64) * 100.0 / (self.requests.max(1) as f64)
    }
}

/// Bake progress of a promoted revision.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisStatus {
    /// When the revision got the traffic.
    #[schemars(with = "String")]
    pub promoted_at: Timestamp,
    /// When `/metrics` was last read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub last_sample_at: Option<Timestamp>,
    /// Failing intervals in a row.
    #[serde(default)]
    pub failed_intervals: i32,
    /// Judged requests (API routes, not 4xx) seen so far during the bake.
    #[serde(default)]
    pub requests: i64,
    /// 5xx answers among them.
    #[serde(default)]
    pub errors: i64,
    /// Each pod's counters (by pod IP) at the last sample: the next sample counts from there,
    /// also in an operator restarted mid-bake.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_counts: BTreeMap<String, RequestCounts>,
    /// Intervals in which every `spec.analysis.prometheus` query answered a number within
    /// its bounds; the bake does not end stable at zero.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prometheus_passed_intervals: i32,
    /// The last PromQL result: each query's value and bounds, or why it gave no number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<String>,
    /// The highest p99 latency of one interval so far, in milliseconds (intervals that
    /// timed at least `minRequests` requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_latency_p99_ms: Option<f64>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

impl AnalysisStatus {
    /// The bake of a revision promoted at `promoted_at`, before any sample.
    pub fn new(promoted_at: Timestamp) -> Self {
        Self {
            promoted_at,
            last_sample_at: None,
            failed_intervals: 0,
            requests: 0,
            errors: 0,
            pod_counts: BTreeMap::new(),
            prometheus_passed_intervals: 0,
            prometheus: None,
            peak_latency_p99_ms: None,
        }
    }
}

/// A pod's `shortener_http_requests_total` over the API routes (4xx left out), the 5xx
/// among them, and its cumulative duration histogram over those routes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestCounts {
    pub requests: i64,
    pub errors: i64,
    /// `shortener_http_request_duration_seconds_bucket` summed over the API routes, by
    /// upper bound (`le`, as exported); at most 32 buckets are kept.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub latency_buckets: BTreeMap<String, i64>,
}

/// The latest failure of a revision.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastIncident {
    /// Revision number that failed.
    pub revision: i64,
    /// Failure reason.
    pub reason: String,
    /// When the operator saw the failure.
    #[schemars(with = "String")]
    pub detected_at: Timestamp,
    /// When traffic went back to the stable revision (only if the failed revision had it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub rolled_back_at: Option<Timestamp>,
    /// When a healthy revision served again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub recovered_at: Option<Timestamp>,
    /// 5xx answers the failed revision gave to users.
    #[serde(default)]
    pub failed_requests: i64,
    /// Seconds of user-visible failure charged to the SLA budget.
    #[serde(default)]
    pub downtime_seconds: f64,
    /// ConfigMap holding the filtered log excerpt, when captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_excerpt_ref: Option<String>,
}
