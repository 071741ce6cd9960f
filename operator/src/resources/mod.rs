//! The objects a ShortenerRelease owns, built from its spec (pure; applied by the controller).

pub mod probes;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, PodSpec, PodTemplateSpec, ResourceRequirements, Service,
    ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::ShortenerReleaseSpec;
use crate::podtemplate;

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_REVISION: &str = "shortener.dev/revision";
pub const APP_NAME: &str = "shortener";
pub const MANAGER: &str = "shortener-operator";
/// Selector value that matches no pods (an active Service before the first promotion).
pub const NO_REVISION: &str = "none";

/// A pod told to stop keeps serving this long, unready, before it closes its listener: the
/// time for its Service to stop routing to it (endpoint changes reach every proxy a moment
/// after the pod is signalled). Without it, the revision that served until a rollback or an
/// abort would refuse the last requests routed to it. `spec.env` may set another value.
pub const DEFAULT_SHUTDOWN_DELAY: &str = "5s";
const SHUTDOWN_DELAY_ENV: &str = "SHORTENER_SHUTDOWN_DELAY";

/// The pod template of a spec, without the revision label (the hash is computed over it).
pub fn pod_template(name: &str, spec: &ShortenerReleaseSpec) -> PodTemplateSpec {
    let mut env: Vec<EnvVar> = spec
        .env
        .iter()
        .map(|e| EnvVar {
            name: e.name.clone(),
            // `valueFrom` without a value: the API server refuses both set.
            value: match e.value_from {
                Some(_) if e.value.is_empty() => None,
                _ => Some(e.value.clone()),
            },
            value_from: e.value_from.clone(),
        })
        .collect();
    env.push(EnvVar {
        name: "SHORTENER_PORT".into(),
        value: Some(spec.port.to_string()),
        ..Default::default()
    });
    // The token the operator's smoke test creates with (from the release's Secret).
    env.push(crate::api_token::env_var(name));
    if !spec.env.iter().any(|e| e.name == SHUTDOWN_DELAY_ENV) {
        env.push(EnvVar {
            name: SHUTDOWN_DELAY_ENV.into(),
            value: Some(DEFAULT_SHUTDOWN_DELAY.into()),
            ..Default::default()
        });
    }
    let probes = probes::container_probes(spec);
    let resources = spec.resources.as_ref().map(|r| ResourceRequirements {
        requests: quantities(&r.requests),
        limits: quantities(&r.limits),
        ..Default::default()
    });
    let mut template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(base_labels(name)),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: APP_NAME.into(),
                image: Some(spec.image.clone()),
                env: Some(env),
                ports: Some(vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: spec.port,
                    ..Default::default()
                }]),
                startup_probe: Some(probes.startup),
                readiness_probe: Some(probes.readiness),
                liveness_probe: Some(probes.liveness),
                resources,
                ..Default::default()
            }],
            ..Default::default()
        }),
    };
    podtemplate::apply(&mut template, spec);
    template
}

fn quantities(m: &BTreeMap<String, IntOrString>) -> Option<BTreeMap<String, Quantity>> {
    if m.is_empty() {
        return None;
    }
    Some(
        m.iter()
            .map(|(k, v)| {
                let q = match v {
                    IntOrString::Int(n) => n.to_string(),
                    IntOrString::String(s) => s.clone(),
                };
                (k.clone(), Quantity(q))
            })
            .collect(),
    )
}

/// Stable short hash of a pod template (FNV-1a over its JSON), so the same spec always
/// maps to the same revision, across operator restarts and versions.
pub fn template_hash(template: &PodTemplateSpec) -> String {
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:010x}", h & 0xff_ffff_ffff)
}

pub fn base_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), APP_NAME.to_string()),
        (LABEL_INSTANCE.to_string(), name.to_string()),
        (LABEL_MANAGED_BY.to_string(), MANAGER.to_string()),
    ])
}

pub fn revision_labels(name: &str, hash: &str) -> BTreeMap<String, String> {
    let mut l = base_labels(name);
    l.insert(LABEL_REVISION.into(), hash.into());
    l
}

fn selector(name: &str, hash: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_INSTANCE.to_string(), name.to_string()),
        (LABEL_REVISION.to_string(), hash.to_string()),
    ])
}

pub fn deployment_name(name: &str, hash: &str) -> String {
    format!("{name}-{hash}")
}

pub fn preview_service_name(name: &str) -> String {
    format!("{name}-preview")
}

/// The Deployment of one revision.
pub fn deployment(
    name: &str,
    namespace: &str,
    spec: &ShortenerReleaseSpec,
    hash: &str,
    replicas: i32,
    owner: OwnerReference,
) -> Deployment {
    let template = with_revision_labels(pod_template(name, spec), name, hash);
    Deployment {
        metadata: ObjectMeta {
            name: Some(deployment_name(name, hash)),
            namespace: Some(namespace.into()),
            labels: Some(revision_labels(name, hash)),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(selector(name, hash)),
                ..Default::default()
            },
            template,
            progress_deadline_seconds: Some(spec.progress_deadline_seconds),
            ..Default::default()
        },
        status: None,
    }
}

/// `template` with the revision's labels added to its own (the overlay's labels stay; the
/// operator's win).
fn with_revision_labels(mut template: PodTemplateSpec, name: &str, hash: &str) -> PodTemplateSpec {
    template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(Default::default)
        .extend(revision_labels(name, hash));
    template
}

/// The one Deployment of a `Rolling` release, named like the release: Kubernetes rolls its
/// pods from one template to the next. `template` is a pod template to run again (the
/// stable revision's, on a rollback); `None` builds it from `spec`.
pub fn rolling_deployment(
    name: &str,
    namespace: &str,
    spec: &ShortenerReleaseSpec,
    hash: &str,
    replicas: i32,
    template: Option<PodTemplateSpec>,
    owner: OwnerReference,
) -> Deployment {
    let template = with_revision_labels(
        template.unwrap_or_else(|| pod_template(name, spec)),
        name,
        hash,
    );
    Deployment {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(base_labels(name)),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: DeploymentSpec {
            replicas: Some(replicas),
            // The revision label changes with every rollout, and a selector cannot.
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    LABEL_INSTANCE.to_string(),
                    name.to_string(),
                )])),
                ..Default::default()
            },
            template,
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(int_or_percent(&spec.rolling.max_surge)),
                    max_unavailable: Some(int_or_percent(&spec.rolling.max_unavailable)),
                }),
            }),
            progress_deadline_seconds: Some(spec.progress_deadline_seconds),
            ..Default::default()
        },
        status: None,
    }
}

/// `"25%"` stays a percentage, `"1"` becomes a count (the schema allows nothing else).
fn int_or_percent(v: &str) -> IntOrString {
    match v.parse::<i32>() {
        Ok(n) => IntOrString::Int(n),
        Err(_) => IntOrString::String(v.to_string()),
    }
}

/// The active Service of a `Rolling` release: every ready pod of the release, whatever its
/// revision, since old and new pods share the traffic while Kubernetes rolls them.
pub fn release_service(name: &str, namespace: &str, port: i32, owner: OwnerReference) -> Service {
    let mut svc = service(name, name, namespace, port, None, owner);
    if let Some(spec) = svc.spec.as_mut() {
        spec.selector = Some(BTreeMap::from([(
            LABEL_INSTANCE.to_string(),
            name.to_string(),
        )]));
    }
    svc
}

/// The active (`<name>`) or preview (`<name>-preview`) Service, selecting one revision.
pub fn service(
    service_name: &str,
    name: &str,
    namespace: &str,
    port: i32,
    revision: Option<&str>,
    owner: OwnerReference,
) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(service_name.into()),
            namespace: Some(namespace.into()),
            labels: Some(base_labels(name)),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(selector(name, revision.unwrap_or(NO_REVISION))),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port,
                target_port: Some(IntOrString::Int(port)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> ShortenerReleaseSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn hash_changes_with_image_and_env_but_not_replicas() {
        let a = spec(serde_json::json!({"image": "shortener:v1"}));
        let b = spec(serde_json::json!({"image": "shortener:v2"}));
        let c = spec(serde_json::json!({"image": "shortener:v1", "replicas": 5}));
        let d = spec(
            serde_json::json!({"image": "shortener:v1", "env": [{"name": "X", "value": "1"}]}),
        );
        let h = |s: &ShortenerReleaseSpec| template_hash(&pod_template("web", s));
        assert_eq!(h(&a), h(&c));
        assert_ne!(h(&a), h(&b));
        assert_ne!(h(&a), h(&d));
        assert_eq!(h(&a).len(), 10);
    }

    #[test]
    fn pod_gets_port_env_and_fast_readiness() {
        let s = spec(serde_json::json!({"image": "shortener:v1", "port": 9000}));
        let t = pod_template("web", &s);
        let c = &t.spec.unwrap().containers[0];
        let env = c.env.clone().unwrap();
        assert!(
            env.iter()
                .any(|e| e.name == "SHORTENER_PORT" && e.value.as_deref() == Some("9000"))
        );
        // The API token comes from the release's Secret, never as a value in the template.
        let token = env
            .iter()
            .find(|e| e.name == crate::api_token::ENV)
            .unwrap();
        assert_eq!(token.value, None);
        let from = token
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(from.name, crate::api_token::secret_name("web"));
        let probe = c.readiness_probe.clone().unwrap();
        assert_eq!(probe.period_seconds, Some(1));
        assert_eq!(probe.http_get.unwrap().path.as_deref(), Some("/readyz"));
    }

    #[test]
    fn pods_drain_for_a_shutdown_delay_unless_the_spec_sets_one() {
        let delay = |s: &ShortenerReleaseSpec| -> Vec<String> {
            let c = &pod_template("web", s).spec.unwrap().containers[0];
            c.env
                .iter()
                .flatten()
                .filter(|e| e.name == "SHORTENER_SHUTDOWN_DELAY")
                .filter_map(|e| e.value.clone())
                .collect()
        };
        let default = spec(serde_json::json!({"image": "shortener:v1"}));
        assert_eq!(delay(&default), vec![DEFAULT_SHUTDOWN_DELAY]);
        let own = spec(serde_json::json!({"image": "shortener:v1",
            "env": [{"name": "SHORTENER_SHUTDOWN_DELAY", "value": "15s"}]}));
        assert_eq!(delay(&own), vec!["15s"], "the user's value, once");
    }
}
