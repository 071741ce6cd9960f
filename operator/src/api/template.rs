//! Where the shortener keeps its URLs (`spec.store`) and the pod template overlay a
//! platform team sets (`spec.podTemplate`). The operator owns the shortener container's
//! image, ports and probes; CEL rules refuse them in the overlay, naming the field.
//!
//! Small Kubernetes types (tolerations, security contexts, env sources, mounts) keep their
//! full schema from k8s-openapi, so a typo is refused at apply. Big subtrees (affinity,
//! topology spread constraints, volumes, extra containers) are stored as given
//! (`x-kubernetes-preserve-unknown-fields`), which keeps the CRD small; the API server
//! validates them when the operator writes the Deployment.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Container, EnvFromSource, LocalObjectReference, PodSecurityContext, SecurityContext,
    Toleration, TopologySpreadConstraint, Volume, VolumeMount,
};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::spec::SecretKeyRef;

/// Where the shortener stores URLs. Default: the embedded SQLite store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!(has(self.embedded) && has(self.postgres))").message("spec.store: set either embedded or postgres, not both"))]
pub struct Store {
    /// The embedded SQLite store, a file in the pod (default when `postgres` is not set).
    /// Pods share it only when they share the file: one host, `make demo`, testenv.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedded: Option<EmbeddedStore>,
    /// A PostgreSQL server shared by every pod of every revision: any real cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresStore>,
}

/// The embedded SQLite store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmbeddedStore {
    /// Absolute path of the SQLite file in the container. Default `/data/shortener.db`.
    /// The directory holding it gets a writable `emptyDir` volume (the root filesystem is
    /// read-only), unless `spec.podTemplate.container.volumeMounts` mounts something there.
    #[serde(default = "default_store_path")]
    #[x_kube(validation = kube::core::Rule::new("self.startsWith('/') && !self.endsWith('/') && self.size() > 1").message("spec.store.embedded.path must be an absolute file path, e.g. /data/shortener.db"))]
    #[schemars(length(max = 1024))]
    pub path: String,
}

impl Default for EmbeddedStore {
    fn default() -> Self {
        Self {
            path: default_store_path(),
        }
    }
}

pub fn default_store_path() -> String {
    "/data/shortener.db".into()
}

/// A PostgreSQL store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresStore {
    /// Secret key (same namespace) holding the URL, `postgres://user:password@host:port/db`.
    /// Passed to the container as `SHORTENER_STORE` from the Secret; the operator never
    /// reads it. Required.
    pub url_secret_ref: SecretKeyRef,
}

/// Additions to the pods the operator runs. Every field is optional; what is not set keeps
/// the operator's default (a pod that passes Pod Security `restricted`, no service account
/// token).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.extraContainers) || self.extraContainers.all(c, c.name != 'shortener')").message("spec.podTemplate.extraContainers must not be named shortener: that container is the operator's (use spec.podTemplate.container)"))]
pub struct PodTemplateOverlay {
    /// Labels and annotations added to the pods. The operator's own labels
    /// (`app.kubernetes.io/*`, `shortener.dev/revision`) win over these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
    /// ServiceAccount the pods run as. Default: the namespace's `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub service_account_name: Option<String>,
    /// Mount the ServiceAccount's API token in the pods. Default false (the shortener
    /// never calls the API server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automount_service_account_token: Option<bool>,
    /// Pod security context, merged field by field over the default `runAsNonRoot: true`,
    /// `runAsUser`/`runAsGroup`/`fsGroup` 65532, `seccompProfile: RuntimeDefault`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,
    /// Node labels the pods must match. Default none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Pod affinity and anti-affinity (Kubernetes' `affinity`, validated when the
    /// Deployment is written). Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved_object")]
    pub affinity: Option<Affinity>,
    /// Taints the pods tolerate. Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub tolerations: Vec<Toleration>,
    /// How pods spread over topology domains (Kubernetes' `topologySpreadConstraints`,
    /// validated when the Deployment is written). Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "preserved_list")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// Secrets for pulling the images. Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// PriorityClass of the pods. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub priority_class_name: Option<String>,
    /// Extra volumes (Kubernetes' `volumes`, validated when the Deployment is written).
    /// Default none; the embedded store adds its own `shortener-data`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "preserved_list")]
    pub volumes: Vec<Volume>,
    /// Additions to the shortener container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerOverlay>,
    /// Sidecars (Kubernetes containers, validated when the Deployment is written). Default
    /// none. They share the pod's security context but get no default container one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "containers_list")]
    pub extra_containers: Vec<Container>,
}

/// Pod labels and annotations.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
pub struct TemplateMetadata {
    /// Labels added to the pods. Default none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations added to the pods. Default none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Additions to the shortener container. Its image (`spec.image`), ports (`spec.port`),
/// probes (`spec.healthCheck`), env (`spec.env`) and resources (`spec.resources`) are set
/// elsewhere; setting them here is refused.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.image)").message("spec.podTemplate.container.image is owned by the operator: set spec.image"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.ports)").message("spec.podTemplate.container.ports is owned by the operator: set spec.port"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.readinessProbe)").message("spec.podTemplate.container.readinessProbe is owned by the operator: set spec.healthCheck.readinessPath"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.livenessProbe)").message("spec.podTemplate.container.livenessProbe is owned by the operator (GET /healthz)"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.startupProbe)").message("spec.podTemplate.container.startupProbe is owned by the operator"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.env)").message("spec.podTemplate.container.env: set spec.env (it takes valueFrom)"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.resources)").message("spec.podTemplate.container.resources: set spec.resources"))]
pub struct ContainerOverlay {
    /// Container security context, merged field by field over the default
    /// `allowPrivilegeEscalation: false`, `readOnlyRootFilesystem: true`,
    /// `capabilities: {drop: [ALL]}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    /// Whole ConfigMaps or Secrets as environment variables. Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub env_from: Vec<EnvFromSource>,
    /// Volumes mounted into the shortener container (from `spec.podTemplate.volumes`).
    /// Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub volume_mounts: Vec<VolumeMount>,
    /// Owned by the operator: refused (use `spec.image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_string")]
    pub image: Option<serde_json::Value>,
    /// Owned by the operator: refused (use `spec.port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved_list")]
    pub ports: Option<serde_json::Value>,
    /// Owned by the operator: refused (use `spec.healthCheck.readinessPath`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved_object")]
    pub readiness_probe: Option<serde_json::Value>,
    /// Owned by the operator: refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved_object")]
    pub liveness_probe: Option<serde_json::Value>,
    /// Owned by the operator: refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved_object")]
    pub startup_probe: Option<serde_json::Value>,
    /// Refused: use `spec.env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved_list")]
    pub env: Option<serde_json::Value>,
    /// Refused: use `spec.resources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved_object")]
    pub resources: Option<serde_json::Value>,
}

fn preserved_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

fn preserved_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": 64,
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
    })
}

/// Containers kept as given, but with a typed name (CEL rules read it; Kubernetes requires it).
fn containers_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": 16,
        "items": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "maxLength": 63}},
            "x-kubernetes-preserve-unknown-fields": true,
        },
    })
}

/// A string kept so a CEL rule can refuse it by name (a field missing from the schema would
/// be pruned silently instead, and CEL sees only typed fields).
fn any_string(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
    })
}
