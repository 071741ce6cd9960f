//! `spec.analysis.prometheus`: the bake judged by PromQL queries against a Prometheus server,
//! instead of (or beside) the operator reading each pod's `/metrics`.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::spec::SecretKeyRef;

/// Longest query accepted, in bytes (before the placeholders are filled in).
pub const MAX_QUERY_LEN: usize = 4096;

/// PromQL checks of the promoted revision, one instant query each per interval.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.queries.all(q, self.queries.exists_one(p, p.name == q.name))").message("spec.analysis.prometheus.queries: names must be unique"))]
pub struct PrometheusAnalysis {
    /// Base URL of the Prometheus HTTP API, `http://` or `https://`, without credentials,
    /// query or fragment, e.g. `http://prometheus.monitoring:9090`. Required.
    #[x_kube(validation = kube::core::Rule::new("self.matches('^https?://([A-Za-z0-9.-]+|\\\\[[0-9A-Fa-f:.]+\\\\])(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$')").message("spec.analysis.prometheus.address must be an http:// or https:// URL without credentials, query or fragment, e.g. http://prometheus.monitoring:9090"))]
    #[schemars(length(min = 8, max = 512))]
    pub address: String,
    /// Queries evaluated at every interval, 1..=10. A value outside a query's bounds fails
    /// the interval; see the README's analysis section for empty results. Required.
    #[schemars(length(min = 1, max = 10))]
    pub queries: Vec<PromQuery>,
    /// Also read each pod's `/metrics` and judge `maxErrorRate` as without Prometheus.
    /// Default false: the operator never connects to the pods for analysis (a default-deny
    /// NetworkPolicy or strict mTLS need not let it in).
    #[serde(default)]
    pub scrape_pods: bool,
    /// Secret key (same namespace) holding a bearer token sent to Prometheus. Never logged.
    /// Default: no Authorization header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_secret: Option<SecretKeyRef>,
}

/// One PromQL check.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.min) || has(self.max)").message("spec.analysis.prometheus.queries: set min, max or both"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.min) || !has(self.max) || self.min <= self.max").message("spec.analysis.prometheus.queries: min must not exceed max"))]
pub struct PromQuery {
    /// Name used in status and failure messages, a DNS label. Required.
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("spec.analysis.prometheus.queries[].name must be a DNS label (lower case letters, digits, '-')"))]
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Instant query that must return one number: a scalar or a one-element vector (use
    /// `sum`, `max`... to aggregate, and `or vector(0)` when no series means zero).
    /// `{{namespace}}`, `{{release}}` and `{{revision}}` are replaced by the release's
    /// namespace, its name (the pods' `app.kubernetes.io/instance` label) and the promoted
    /// revision's pod template hash (the pods' `shortener.dev/revision` label), escaped for
    /// a PromQL string literal. Required.
    #[x_kube(validation = kube::core::Rule::new("!self.replace('{{namespace}}', '').replace('{{release}}', '').replace('{{revision}}', '').contains('{{')").message("spec.analysis.prometheus.queries[].query: the only placeholders are {{namespace}}, {{release}} and {{revision}}"))]
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
    /// Lowest acceptable value (inclusive). Default: no lower bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Highest acceptable value (inclusive). Default: no upper bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}
