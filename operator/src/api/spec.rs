//! The `ShortenerRelease` custom resource (group `shortener.dev`, version `v1alpha1`).
//!
//! Conventions: every duration is an integer named `...Seconds`, except the SLA budget,
//! which people think of as "15m a year" and is a validated duration string. Every
//! field's doc states its default because it becomes `kubectl explain`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::EnvVarSource;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::ShortenerReleaseStatus;
use super::template::{PodTemplateOverlay, Store};

/// A release of the URL shortener, rolled out blue-green with automatic rollback.
// The printcolumn entries repeat `type_`, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "shortener.dev",
    version = "v1alpha1",
    kind = "ShortenerRelease",
    namespaced,
    shortname = "sr",
    doc = "A release of the URL shortener: the image and settings to run. The operator rolls each new pod template out as a revision (blue-green or rolling), smoke-tests and analyses it, and puts the previous healthy revision back within seconds when it fails, recording the incident and charging the downtime to the SLA budget. `kubectl explain shortenerrelease.spec` lists the settings.",
    status = "ShortenerReleaseStatus",
    derive = "PartialEq",
    // `kubectl scale sr NAME --replicas=N` and a HorizontalPodAutoscaler write
    // `spec.replicas`; the serving revision is scaled in place, without a new rollout.
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Stable",
        type_ = "integer",
        json_path = ".status.stableRevision"
    ),
    printcolumn(
        name = "Current",
        type_ = "integer",
        json_path = ".status.currentRevision"
    ),
    printcolumn(name = "Image", type_ = "string", json_path = ".spec.image"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    // The name becomes Service names (NAME, NAME-preview): DNS labels of at most 63
    // characters. Refused at apply, not by a 422 on every reconcile.
    validation = kube::core::Rule::new("self.metadata.name.size() <= 55").message(
        "metadata.name must be at most 55 characters: the release's preview Service is named NAME-preview and Service names are at most 63 characters"
    ),
    validation = kube::core::Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message(
        "metadata.name must be a DNS label (lowercase letters, digits and '-', starting with a letter, no dots): it names the release's Services"
    ),
    // Only when set: a spec with a deadline under the 60 s default and no startupSeconds
    // stays valid (its budget is the deadline, see `ShortenerReleaseSpec::startup_seconds`).
    validation = kube::core::Rule::new(
        "!has(self.spec) || !has(self.spec.healthCheck) || !has(self.spec.healthCheck.startupSeconds) || !has(self.spec.progressDeadlineSeconds) || self.spec.healthCheck.startupSeconds <= self.spec.progressDeadlineSeconds"
    ).message(
        "spec.healthCheck.startupSeconds must not exceed spec.progressDeadlineSeconds: a revision still starting at its deadline fails anyway"
    ),
    validation = kube::core::Rule::new("!has(self.spec.store) || !has(self.spec.env) || !self.spec.env.exists(e, e.name == 'SHORTENER_STORE')").message(
        "spec.env must not set SHORTENER_STORE when spec.store is set"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ShortenerReleaseSpec {
    /// Container image with a tag, a digest or both, e.g. `shortener:v2`,
    /// `registry:5000/shortener@sha256:<64 hex>` or `shortener:v2@sha256:<64 hex>`.
    /// Required; no default.
    #[x_kube(validation = kube::core::Rule::new(
        r"self.matches('^([a-z0-9][a-z0-9.-]*(:[0-9]+)?/)?[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?@sha256:[a-f0-9]{64})$')"
    ).message("spec.image must be a lowercase image name with a tag (name:tag), a digest (name@sha256:...) or both (name:tag@sha256:...)"))]
    #[schemars(length(max = 512))]
    pub image: String,

    /// Pods per revision, 1..=100. Default 2.
    #[serde(default = "default_replicas")]
    #[x_kube(validation = kube::core::Rule::new("self >= 1 && self <= 100").message("spec.replicas must be between 1 and 100"))]
    #[schemars(range(min = 1, max = 100))]
    pub replicas: i32,

    /// Port the shortener listens on (passed as `SHORTENER_PORT`), 1..=65535. Default 8080.
    /// Immutable: the active Service must reach both the stable and the new revision
    /// on the same port during a rollout and a rollback.
    #[serde(default = "default_port")]
    #[x_kube(validation = kube::core::Rule::new("self >= 1 && self <= 65535").message("spec.port must be between 1 and 65535"))]
    #[schemars(range(min = 1, max = 65535))]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("spec.port is immutable; create a new ShortenerRelease to change it"))]
    pub port: i32,

    /// Extra environment variables for the shortener container, each a `value` or a
    /// `valueFrom` (a Secret or ConfigMap key, a pod field). Default empty.
    /// `SHORTENER_PORT` is always set from `spec.port`; `SHORTENER_STORE` from `spec.store`
    /// (set here only without `spec.store`: the older way to choose the store).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = kube::core::Rule::new("self.all(e, e.name != 'SHORTENER_PORT')").message("spec.env must not set SHORTENER_PORT; use spec.port"))]
    #[schemars(length(max = 100))]
    pub env: Vec<EnvVar>,

    /// Compute resources of the shortener container. Default: none set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,

    /// Where the shortener stores URLs: `embedded` (SQLite, the default) or `postgres`
    /// (URL from a Secret). Passed to the container as `SHORTENER_STORE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<Store>,

    /// Additions to the pod template: labels, annotations, service account, security
    /// contexts, scheduling, volumes, sidecars. Default: pods that pass Pod Security
    /// `restricted`, with no service account token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplateOverlay>,

    /// Rollout strategy. Default `BlueGreen`. `Rolling` updates one Deployment in place
    /// (no spare capacity needed) and tunes it with `spec.rolling`. Immutable: create a new
    /// ShortenerRelease to switch strategy.
    #[serde(default)]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("spec.strategy is immutable; create a new ShortenerRelease to switch strategy"))]
    pub strategy: Strategy,

    /// Pace of a `Rolling` rollout; ignored by `BlueGreen`. Default: maxSurge `25%`,
    /// maxUnavailable `0`.
    #[serde(default)]
    #[x_kube(validation = kube::core::Rule::new("!((self.maxSurge == '0' || self.maxSurge == '0%') && (self.maxUnavailable == '0' || self.maxUnavailable == '0%'))").message("spec.rolling: maxSurge and maxUnavailable must not both be 0"))]
    pub rolling: RollingSpec,

    /// Seconds a new revision may take to become ready and pass its smoke test before it
    /// fails with `ProgressDeadlineExceeded`, 10..=3600. Default 120. Crash loops,
    /// image pull errors and pods refused at creation (`PodCreateFailed`) fail at once,
    /// without waiting for this deadline.
    #[serde(default = "default_progress_deadline")]
    #[x_kube(validation = kube::core::Rule::new("self >= 10 && self <= 3600").message("spec.progressDeadlineSeconds must be between 10 and 3600"))]
    #[schemars(range(min = 10, max = 3600))]
    pub progress_deadline_seconds: i32,

    /// How a new revision is checked before it takes traffic. Default: readiness on
    /// `/readyz`, smoke test on.
    #[serde(default)]
    pub health_check: HealthCheck,

    /// Error-rate analysis while the new revision bakes with live traffic.
    #[serde(default)]
    pub analysis: Analysis,

    /// What happens when a revision fails. Default: automatic rollback, 5 revisions kept.
    #[serde(default)]
    pub rollback: Rollback,

    /// Downtime budget. Default: 15 minutes a year, no freeze.
    #[serde(default)]
    pub sla: Sla,

    /// Incident capture when a revision fails. Default: logs captured with 3 lines of context.
    #[serde(default)]
    pub incident: Incident,

    /// Another release that must run an image first (staging before production). Default:
    /// none, every image rolls out at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<Promotion>,
}

/// `spec.healthCheck.startupSeconds` when unset (and the deadline is not shorter).
pub const DEFAULT_STARTUP_SECONDS: i32 = 60;

impl ShortenerReleaseSpec {
    /// The startup budget the pods get: `healthCheck.startupSeconds`, default 60, never
    /// more than `progressDeadlineSeconds` (the schema refuses a larger value; an object
    /// stored before that rule existed is capped here), at least 1.
    pub fn startup_seconds(&self) -> i32 {
        self.health_check
            .startup_seconds
            .unwrap_or(DEFAULT_STARTUP_SECONDS)
            .min(self.progress_deadline_seconds)
            .max(1)
    }
}

/// Promotion gate: where an image must have proven itself before this release takes it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Promotion {
    /// The release whose stable revision (passed its bake, was Healthy) must run the same
    /// image (the same digest when the image names one, else the same reference) before
    /// this release rolls it out. Until then the release is `Blocked` with reason
    /// `AwaitingPromotion`. Required.
    pub requires: ReleaseRef,
}

/// A ShortenerRelease by namespace and name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseRef {
    /// Namespace of the release. Default: this release's namespace. Another namespace
    /// needs RBAC to read ShortenerReleases there (see the operator README).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
    /// Name of the release. Required.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// One environment variable.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.valueFrom) || !has(self.value) || self.value == ''").message("spec.env: set value or valueFrom, not both"))]
pub struct EnvVar {
    /// Variable name. Required.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// Variable value. Default empty.
    #[serde(default)]
    #[schemars(length(max = 32768))]
    pub value: String,
    /// Where the value comes from instead: `secretKeyRef`, `configMapKeyRef`, `fieldRef`
    /// or `resourceFieldRef` (Kubernetes' `EnvVarSource`). Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

/// Container resources as Kubernetes quantities, a string or an integer, e.g.
/// `{"cpu": 1, "memory": "64Mi"}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
pub struct Resources {
    /// Requested resources. Default none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, IntOrString>,
    /// Resource limits. Default none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, IntOrString>,
}

/// How traffic moves to a new revision.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum Strategy {
    /// New revision alongside the old one; the active Service switches in one write.
    #[default]
    BlueGreen,
    /// One Deployment updated in place by a Kubernetes rolling update: for users without
    /// spare capacity. New pods take traffic as soon as they are ready.
    Rolling,
}

/// How fast a `Rolling` rollout replaces pods: Kubernetes' RollingUpdate parameters.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollingSpec {
    /// Pods above `spec.replicas` during the rollout, a count (`1`) or a percentage
    /// (`25%`, rounded up). Default `25%`.
    #[serde(default = "default_max_surge")]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[0-9]{1,3}%?$')").message("spec.rolling.maxSurge must be a count like 1 or a percentage like 25%"))]
    #[schemars(length(min = 1, max = 4))]
    pub max_surge: String,
    /// Pods below `spec.replicas` during the rollout, a count or a percentage (rounded
    /// down). Default `0`: never less capacity than asked for.
    #[serde(default = "default_max_unavailable")]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[0-9]{1,3}%?$')").message("spec.rolling.maxUnavailable must be a count like 1 or a percentage like 25%"))]
    #[schemars(length(min = 1, max = 4))]
    pub max_unavailable: String,
}

impl Default for RollingSpec {
    fn default() -> Self {
        Self {
            max_surge: default_max_surge(),
            max_unavailable: default_max_unavailable(),
        }
    }
}

fn default_max_surge() -> String {
    "25%".into()
}

fn default_max_unavailable() -> String {
    "0".into()
}

/// Checks a new revision must pass before it takes traffic, and the probes of its pods.
/// Each container gets three HTTP probes (timeout 1 s each): a startup probe on `/healthz`
/// every second for `startupSeconds`; once it has passed, readiness on `readinessPath` every
/// second (1 failure marks the pod unready, 1 success ready again) and liveness on
/// `/healthz` every 2 seconds (3 failures in a row, about 6 s, restart the container).
/// Default: readiness on `/readyz`, a startup budget of 60 s, smoke test on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// HTTP path of the readiness probe: probed every second once the startup probe has
    /// passed, 1 failure marks the pod unready (no traffic), 1 success ready again.
    /// Default `/readyz`.
    #[serde(default = "default_readiness_path")]
    #[x_kube(validation = kube::core::Rule::new("self.startsWith('/')").message("spec.healthCheck.readinessPath must start with '/'"))]
    #[schemars(length(max = 1024))]
    pub readiness_path: String,
    /// Seconds a container may take to first answer `/healthz` (its startup probe: every
    /// second, this many failures in a row), 1..=3600. Until then the liveness probe
    /// (`/healthz` every 2 s, 3 failures) does not run, so a release that migrates a schema
    /// or warms a cache before it listens is not restarted. A container still not answering
    /// by then is killed, and the revision fails with `StartupProbeFailed`.
    /// Must not exceed `progressDeadlineSeconds`. Default: 60, or `progressDeadlineSeconds`
    /// when that is smaller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self >= 1 && self <= 3600").message("spec.healthCheck.startupSeconds must be between 1 and 3600"))]
    #[schemars(range(min = 1, max = 3600))]
    pub startup_seconds: Option<i32>,
    /// Smoke test the new revision's pods before promotion: create a URL, follow its
    /// redirect. Default true.
    #[serde(default = "default_true")]
    pub smoke_test: bool,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            readiness_path: default_readiness_path(),
            startup_seconds: None,
            smoke_test: true,
        }
    }
}

/// Error-rate analysis of the promoted revision during its bake.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    /// Seconds between two reads of the new pods' `/metrics`, 1..=300. Default 2.
    #[serde(default = "default_interval")]
    #[x_kube(validation = kube::core::Rule::new("self >= 1 && self <= 300").message("spec.analysis.intervalSeconds must be between 1 and 300"))]
    #[schemars(range(min = 1, max = 300))]
    pub interval_seconds: i32,
    /// Failing intervals in a row that trigger a rollback, 1..=100. Default 1.
    #[serde(default = "default_failure_limit")]
    #[x_kube(validation = kube::core::Rule::new("self >= 1 && self <= 100").message("spec.analysis.failureLimit must be between 1 and 100"))]
    #[schemars(range(min = 1, max = 100))]
    pub failure_limit: i32,
    /// Highest tolerated share of 5xx answers in one interval, in percent (0..=100; 0 means
    /// any 5xx fails the interval). Default 5. Only the API routes (`/api/v1/urls...` and
    /// `/{slug}`) are judged, and a 4xx answer counts neither as an error nor in the total:
    /// it is the client's mistake and says nothing about the server, so a flood of 404s
    /// cannot dilute real 5xx below the limit. Probes, `/metrics` and unmatched paths never
    /// count.
    #[serde(default = "default_max_error_rate")]
    #[x_kube(validation = kube::core::Rule::new("self >= 0.0 && self <= 100.0").message("spec.analysis.maxErrorRate is a percentage between 0 and 100"))]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub max_error_rate: f64,
    /// Seconds the promoted revision must stay healthy before it becomes stable,
    /// 0..=86400. Default 30.
    #[serde(default = "default_bake")]
    #[x_kube(validation = kube::core::Rule::new("self >= 0 && self <= 86400").message("spec.analysis.bakeSeconds must be between 0 and 86400"))]
    #[schemars(range(min = 0, max = 86400))]
    pub bake_seconds: i32,
    /// Requests an interval needs before its error rate is judged, 1..=1000000. Default 1.
    #[serde(default = "default_min_requests")]
    #[x_kube(validation = kube::core::Rule::new("self >= 1 && self <= 1000000").message("spec.analysis.minRequests must be between 1 and 1000000"))]
    #[schemars(range(min = 1, max = 1000000))]
    pub min_requests: i64,
    /// Judge the bake with PromQL queries against a Prometheus server, instead of reading
    /// each pod's `/metrics` (unless `scrapePods`). Default: none, the pods are read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<super::promql::PrometheusAnalysis>,
    /// Judged requests (API-route answers that were not 4xx) the whole bake needs before
    /// the revision may become stable, 0..=1000000000. Requests of the smoke test do not
    /// count. Default 0: no minimum, so a release nobody uses yet (a first install, a
    /// staging namespace) still becomes stable, but never silently: a bake without any
    /// judged request ends with a Warning Event `InsufficientTraffic`. Set it (with
    /// `insufficientTraffic`) where traffic is expected.
    #[serde(default = "default_min_bake_requests")]
    #[x_kube(validation = kube::core::Rule::new("self >= 0 && self <= 1000000000").message("spec.analysis.minBakeRequests must be between 0 and 1000000000"))]
    #[schemars(range(min = 0, max = 1000000000))]
    pub min_bake_requests: i64,
    /// What happens when the bake ends with fewer than `minBakeRequests`: `Hold` (default)
    /// keeps the revision serving and analysed, `Analyzing` with reason
    /// `InsufficientTraffic`, until enough requests came (or `shortener.dev/promote`);
    /// `Fail` fails it like a failed analysis (`InsufficientTraffic`, rolled back).
    #[serde(default)]
    pub insufficient_traffic: InsufficientTraffic,
    /// Highest tolerated p99 latency of the API routes in one interval, in milliseconds,
    /// 1..=60000, from `shortener_http_request_duration_seconds` (bucket deltas between
    /// two reads, interpolated like PromQL's `histogram_quantile`). An interval above it
    /// fails like one above `maxErrorRate`. Unset: latency is not judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self >= 1 && self <= 60000").message("spec.analysis.maxLatencyP99Ms must be between 1 and 60000"))]
    #[schemars(range(min = 1, max = 60000))]
    pub max_latency_p99_ms: Option<i64>,
    /// Also judge each interval against the stable revision: how much worse than the
    /// stable revision's own bake the new one may be. Catches a regression that stays under
    /// the absolute limits (a service whose normal error rate is 2% and a release at 4.5%,
    /// under a `maxErrorRate` of 5). Unset: only the absolute limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative_to_stable: Option<RelativeToStable>,
}

/// Limits relative to the stable revision, whose figures were recorded when it became stable
/// (`status.history[].bake`). Without such figures (a first release, a stable revision that
/// baked without judged requests, or one promoted by an older operator) the interval is
/// judged by the absolute limits alone, and the status message says so.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.maxErrorRateIncrease) || has(self.maxLatencyP99IncreasePercent)").message("spec.analysis.relativeToStable: set maxErrorRateIncrease, maxLatencyP99IncreasePercent or both"))]
pub struct RelativeToStable {
    /// Highest tolerated rise of an interval's error rate over the stable revision's error
    /// rate during its whole bake, in percentage points, 0..=100 (stable at 2% and a limit
    /// of 1: an interval above 3% fails). Judged from `minRequests` requests on.
    /// Unset: error rates are not compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self >= 0.0 && self <= 100.0").message("spec.analysis.relativeToStable.maxErrorRateIncrease is in percentage points, between 0 and 100"))]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub max_error_rate_increase: Option<f64>,
    /// Highest tolerated rise of an interval's p99 latency over the stable revision's
    /// highest interval p99 during its bake, in percent, 0..=10000 (stable at 40ms and a
    /// limit of 50: an interval above 60ms fails). Comparing with the stable revision's
    /// worst interval, not its average, keeps ordinary jitter from rolling a release back.
    /// Unset: latencies are not compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self >= 0 && self <= 10000").message("spec.analysis.relativeToStable.maxLatencyP99IncreasePercent must be between 0 and 10000"))]
    #[schemars(range(min = 0, max = 10000))]
    pub max_latency_p99_increase_percent: Option<i64>,
}

/// What a bake with too little traffic leads to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum InsufficientTraffic {
    /// Keep the revision serving and analysed, not stable, until enough requests came.
    #[default]
    Hold,
    /// Fail the revision (rolled back to the stable one).
    Fail,
}

impl Default for Analysis {
    fn default() -> Self {
        Self {
            interval_seconds: default_interval(),
            failure_limit: default_failure_limit(),
            max_error_rate: default_max_error_rate(),
            bake_seconds: default_bake(),
            min_requests: default_min_requests(),
            prometheus: None,
            min_bake_requests: default_min_bake_requests(),
            insufficient_traffic: InsufficientTraffic::default(),
            max_latency_p99_ms: None,
            relative_to_stable: None,
        }
    }
}

/// What happens when a revision fails.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rollback {
    /// Switch traffic back to the stable revision when a promoted revision fails. When
    /// false the failed revision keeps traffic and the release is Degraded. Default true.
    #[serde(default = "default_true")]
    pub automatic: bool,
    /// Revisions kept in `status.history`, 1..=50. Default 5. The Deployments of the healthy
    /// ones among them are kept at zero replicas, so a rollback by hand restores them exactly.
    #[serde(default = "default_history_limit")]
    #[x_kube(validation = kube::core::Rule::new("self >= 1 && self <= 50").message("spec.rollback.revisionHistoryLimit must be between 1 and 50"))]
    #[schemars(range(min = 1, max = 50))]
    pub revision_history_limit: i32,
}

impl Default for Rollback {
    fn default() -> Self {
        Self {
            automatic: true,
            revision_history_limit: default_history_limit(),
        }
    }
}

/// Downtime budget over a rolling year.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sla {
    /// Downtime allowed per rolling 365 days as a duration string of days, hours, minutes
    /// and seconds in that order, e.g. `15m`, `1h30m`, `90s`, `1d`. Default `15m`.
    #[serde(default = "default_allowed_downtime")]
    #[x_kube(validation = kube::core::Rule::new(
        r"self.matches('^([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?$') && self != ''"
    ).message("spec.sla.allowedDowntimePerYear must be a duration like 15m, 1h30m, 90s or 1d"))]
    #[schemars(length(max = 32))]
    pub allowed_downtime_per_year: String,
    /// Refuse new rollouts (phase Blocked, reason `BudgetExhausted`) once the budget is
    /// used up, until it recovers or the annotation `shortener.dev/budget-override: "true"`
    /// is set. Default false.
    #[serde(default)]
    pub freeze_when_exhausted: bool,
}

impl Default for Sla {
    fn default() -> Self {
        Self {
            allowed_downtime_per_year: default_allowed_downtime(),
            freeze_when_exhausted: false,
        }
    }
}

/// Incident capture when a revision fails.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Incident {
    /// Capture the failing pods' logs, cut to the error lines, into a ConfigMap. Default true.
    #[serde(default = "default_true")]
    pub capture_logs: bool,
    /// Lines of context kept around each error line, 0..=50. Default 3.
    #[serde(default = "default_context_lines")]
    #[x_kube(validation = kube::core::Rule::new("self >= 0 && self <= 50").message("spec.incident.contextLines must be between 0 and 50"))]
    #[schemars(range(min = 0, max = 50))]
    pub context_lines: i32,
    /// Most lines kept in the excerpt, 1..=10000. Default 200.
    #[serde(default = "default_max_lines")]
    #[x_kube(validation = kube::core::Rule::new("self >= 1 && self <= 10000").message("spec.incident.maxLines must be between 1 and 10000"))]
    #[schemars(range(min = 1, max = 10000))]
    pub max_lines: i32,
    /// Webhook notified of each incident. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Webhook>,
}

impl Default for Incident {
    fn default() -> Self {
        Self {
            capture_logs: true,
            context_lines: default_context_lines(),
            max_lines: default_max_lines(),
            webhook: None,
        }
    }
}

/// Where incidents are posted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    /// Secret (same namespace) whose key holds the webhook URL. Required.
    pub secret_ref: SecretKeyRef,
}

/// A key of a Secret in the release's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretKeyRef {
    /// Secret name. Required.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret. Required.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_replicas() -> i32 {
    2
}
fn default_port() -> i32 {
    8080
}
fn default_progress_deadline() -> i32 {
    120
}
fn default_readiness_path() -> String {
    "/readyz".into()
}
fn default_true() -> bool {
    true
}
fn default_interval() -> i32 {
    2
}
fn default_failure_limit() -> i32 {
    1
}
fn default_max_error_rate() -> f64 {
    5.0
}
fn default_bake() -> i32 {
    30
}
fn default_min_requests() -> i64 {
    1
}
fn default_min_bake_requests() -> i64 {
    0
}
fn default_history_limit() -> i32 {
    5
}
fn default_allowed_downtime() -> String {
    "15m".into()
}
fn default_context_lines() -> i32 {
    3
}
fn default_max_lines() -> i32 {
    200
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn minimal_spec_gets_documented_defaults() {
        let spec: ShortenerReleaseSpec =
            serde_json::from_value(serde_json::json!({"image": "shortener:v1"})).unwrap();
        assert_eq!(spec.replicas, 2);
        assert_eq!(spec.port, 8080);
        assert_eq!(spec.strategy, Strategy::BlueGreen);
        assert_eq!(spec.health_check.readiness_path, "/readyz");
        assert!(spec.health_check.smoke_test);
        assert!(spec.rollback.automatic);
        assert_eq!(spec.sla.allowed_downtime_per_year, "15m");
        assert!(spec.incident.capture_logs);
        assert_eq!(spec.incident.context_lines, 3);
    }

    #[test]
    fn crd_carries_names_and_cel_rules() {
        let crd = serde_json::to_string(&ShortenerRelease::crd()).unwrap();
        assert!(crd.contains("\"shortNames\":[\"sr\"]"));
        assert!(crd.contains("spec.image must be"));
        assert!(crd.contains("spec.port is immutable"));
        assert!(crd.contains("spec.strategy is immutable"));
        assert!(crd.contains("maxSurge and maxUnavailable must not both be 0"));
        assert!(crd.contains("x-kubernetes-validations"));
        assert!(crd.contains("metadata.name must be at most 55 characters"));
        assert!(crd.contains("metadata.name must be a DNS label"));
        assert!(crd.contains("\"status\":{}"));
        assert!(crd.contains("startupSeconds must not exceed spec.progressDeadlineSeconds"));
        assert!(crd.contains("startupSeconds must be between 1 and 3600"));
    }

    /// Editors and kubeconform read OpenAPI bounds, not CEL: every range a CEL rule enforces
    /// is also the property's `minimum`/`maximum`, so the two cannot drift apart.
    #[test]
    fn every_cel_range_is_also_an_openapi_range() {
        fn walk(path: &str, node: &serde_json::Value, seen: &mut Vec<String>) {
            let rules = node["x-kubernetes-validations"].as_array();
            for rule in rules.into_iter().flatten() {
                let text = rule["rule"].as_str().unwrap_or_default();
                let Some((low, high)) = text
                    .strip_prefix("self >= ")
                    .and_then(|r| r.split_once(" && self <= "))
                else {
                    continue;
                };
                let (low, high): (f64, f64) = (low.parse().unwrap(), high.parse().unwrap());
                assert_eq!(node["minimum"].as_f64(), Some(low), "{path}: minimum");
                assert_eq!(node["maximum"].as_f64(), Some(high), "{path}: maximum");
                seen.push(path.to_string());
            }
            for (name, child) in node["properties"].as_object().into_iter().flatten() {
                walk(&format!("{path}.{name}"), child, seen);
            }
            if node["items"].is_object() {
                walk(&format!("{path}[]"), &node["items"], seen);
            }
        }
        let crd = serde_json::to_value(ShortenerRelease::crd()).unwrap();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut seen = Vec::new();
        walk("", schema, &mut seen);
        // The walk must reach the ranges (a schema layout change would make it vacuous).
        assert!(seen.contains(&".spec.replicas".to_string()), "{seen:?}");
        assert!(
            seen.contains(&".spec.analysis.maxLatencyP99Ms".to_string()),
            "{seen:?}"
        );
        assert_eq!(seen.len(), 16, "{seen:?}");
    }

    #[test]
    fn startup_budget_defaults_to_60_capped_by_the_deadline() {
        let budget = |extra: serde_json::Value| {
            let mut json = serde_json::json!({"image": "shortener:v1"});
            if let (Some(o), Some(e)) = (json.as_object_mut(), extra.as_object()) {
                o.extend(e.clone());
            }
            serde_json::from_value::<ShortenerReleaseSpec>(json)
                .unwrap()
                .startup_seconds()
        };
        let cases = [
            (serde_json::json!({}), 60),
            (serde_json::json!({"progressDeadlineSeconds": 30}), 30),
            (serde_json::json!({"progressDeadlineSeconds": 60}), 60),
            (serde_json::json!({"progressDeadlineSeconds": 600}), 60),
            (serde_json::json!({"healthCheck": {"startupSeconds": 5}}), 5),
            (
                serde_json::json!({"healthCheck": {"startupSeconds": 120}}),
                120,
            ),
            (
                serde_json::json!({"progressDeadlineSeconds": 600, "healthCheck": {"startupSeconds": 300}}),
                300,
            ),
            // Stored before the CEL rule: capped by the deadline.
            (
                serde_json::json!({"progressDeadlineSeconds": 20, "healthCheck": {"startupSeconds": 300}}),
                20,
            ),
            (serde_json::json!({"healthCheck": {"startupSeconds": 0}}), 1),
        ];
        for (extra, want) in cases {
            assert_eq!(budget(extra.clone()), want, "{extra}");
        }
    }
}
