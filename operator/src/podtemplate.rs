//! What the pods get besides the shortener container's image, ports, probes and env (pure):
//! the store (`spec.store`), the defaults that pass Pod Security `restricted`, and the
//! platform team's overlay (`spec.podTemplate`) merged over them.

use std::path::Path;

use k8s_openapi::api::core::v1::{
    Capabilities, EmptyDirVolumeSource, EnvVar, EnvVarSource, PodSecurityContext, PodTemplateSpec,
    SeccompProfile, SecretKeySelector, SecurityContext, Volume, VolumeMount,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::ShortenerReleaseSpec;
use crate::resources::APP_NAME;

/// The variable the shortener reads its store from.
pub const STORE_ENV: &str = "SHORTENER_STORE";
/// The `emptyDir` volume holding the embedded store's file.
pub const DATA_VOLUME: &str = "shortener-data";
/// User and group the pods run as unless the overlay says otherwise (distroless `nonroot`;
/// the images are `FROM scratch` and name no user, which `runAsNonRoot` would refuse).
pub const DEFAULT_UID: i64 = 65532;

/// Pod security context by default: Pod Security `restricted`.
pub fn default_pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(DEFAULT_UID),
        run_as_group: Some(DEFAULT_UID),
        fs_group: Some(DEFAULT_UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The shortener container's security context by default: Pod Security `restricted`, and a
/// read-only root filesystem (the store gets a volume).
pub fn default_container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Adds the store, the security defaults and the overlay to a template whose first
/// container is the shortener. The operator's labels already on the template win over
/// the overlay's.
pub fn apply(template: &mut PodTemplateSpec, spec: &ShortenerReleaseSpec) {
    let overlay = spec.pod_template.clone().unwrap_or_default();
    let container_overlay = overlay.container.clone().unwrap_or_default();

    let meta = template.metadata.get_or_insert_with(Default::default);
    if let Some(m) = &overlay.metadata {
        if !m.labels.is_empty() {
            let labels = meta.labels.get_or_insert_with(Default::default);
            for (k, v) in &m.labels {
                labels.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        if !m.annotations.is_empty() {
            meta.annotations
                .get_or_insert_with(Default::default)
                .extend(m.annotations.clone());
        }
    }

    let pod = template.spec.get_or_insert_with(Default::default);
    pod.service_account_name = overlay.service_account_name.clone();
    pod.automount_service_account_token =
        Some(overlay.automount_service_account_token.unwrap_or(false));
    pod.security_context = Some(merged(
        default_pod_security(),
        overlay.security_context.as_ref(),
    ));
    if !overlay.node_selector.is_empty() {
        pod.node_selector = Some(overlay.node_selector.clone());
    }
    pod.affinity = overlay.affinity.clone();
    pod.tolerations = non_empty(overlay.tolerations.clone());
    pod.topology_spread_constraints = non_empty(overlay.topology_spread_constraints.clone());
    pod.image_pull_secrets = non_empty(overlay.image_pull_secrets.clone());
    pod.priority_class_name = overlay.priority_class_name.clone();

    let mut volumes = overlay.volumes.clone();
    let mut mounts = container_overlay.volume_mounts.clone();
    let store_env = store_env(spec, &mut volumes, &mut mounts);

    if let Some(c) = pod.containers.iter_mut().find(|c| c.name == APP_NAME) {
        if let Some(var) = store_env {
            c.env.get_or_insert_with(Vec::new).push(var);
        }
        c.security_context = Some(merged(
            default_container_security(),
            container_overlay.security_context.as_ref(),
        ));
        c.env_from = non_empty(container_overlay.env_from.clone());
        c.volume_mounts = non_empty(mounts);
    }
    pod.containers
        .extend(overlay.extra_containers.iter().cloned());
    pod.volumes = non_empty(volumes);
}

/// `SHORTENER_STORE` for `spec.store`, adding the embedded store's volume and mount; none
/// when `spec.env` sets it itself (the older way, which the schema allows only without
/// `spec.store`).
fn store_env(
    spec: &ShortenerReleaseSpec,
    volumes: &mut Vec<Volume>,
    mounts: &mut Vec<VolumeMount>,
) -> Option<EnvVar> {
    if spec.env.iter().any(|e| e.name == STORE_ENV) {
        return None;
    }
    let store = spec.store.clone().unwrap_or_default();
    if let Some(pg) = store.postgres {
        return Some(EnvVar {
            name: STORE_ENV.into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: pg.url_secret_ref.name,
                    key: pg.url_secret_ref.key,
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let path = store.embedded.unwrap_or_default().path;
    let dir = Path::new(&path)
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|| "/".into());
    // A directory the user mounts already (a PersistentVolumeClaim, say) is theirs.
    if !mounts.iter().any(|m| m.mount_path == dir) && dir != "/" {
        volumes.push(Volume {
            name: DATA_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: DATA_VOLUME.into(),
            mount_path: dir,
            ..Default::default()
        });
    }
    Some(EnvVar {
        name: STORE_ENV.into(),
        value: Some(path),
        ..Default::default()
    })
}

fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

/// `base` with every field `over` sets replaced, objects merged key by key (lists replaced).
pub fn merged<T: Serialize + DeserializeOwned + Clone>(base: T, over: Option<&T>) -> T {
    let Some(over) = over else { return base };
    let (Ok(mut b), Ok(o)) = (serde_json::to_value(&base), serde_json::to_value(over)) else {
        return base;
    };
    merge_json(&mut b, o);
    serde_json::from_value(b).unwrap_or(base)
}

fn merge_json(base: &mut serde_json::Value, over: serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge_json(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::pod_template;

    fn template(json: serde_json::Value) -> PodTemplateSpec {
        let spec: ShortenerReleaseSpec = serde_json::from_value(json).unwrap();
        pod_template("web", &spec)
    }

    fn env_of(t: &PodTemplateSpec, name: &str) -> Option<EnvVar> {
        t.spec.as_ref().unwrap().containers[0]
            .env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .cloned()
    }

    #[test]
    fn defaults_pass_restricted_with_a_writable_store_dir() {
        let t = template(serde_json::json!({"image": "shortener:v1"}));
        let pod = t.spec.clone().unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        let psc = pod.security_context.unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.run_as_user, Some(DEFAULT_UID));
        assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let c = &pod.containers[0];
        let sc = c.security_context.clone().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
        assert_eq!(
            env_of(&t, STORE_ENV).unwrap().value.as_deref(),
            Some("/data/shortener.db")
        );
        let mounts = c.volume_mounts.clone().unwrap();
        assert_eq!(mounts[0].mount_path, "/data");
        let vols = pod.volumes.unwrap();
        assert_eq!(vols[0].name, DATA_VOLUME);
        assert!(vols[0].empty_dir.is_some());
    }

    #[test]
    fn postgres_store_comes_from_the_secret_and_needs_no_volume() {
        let t = template(serde_json::json!({"image": "shortener:v1",
            "store": {"postgres": {"urlSecretRef": {"name": "db", "key": "url"}}}}));
        let var = env_of(&t, STORE_ENV).unwrap();
        assert_eq!(var.value, None);
        let r = var.value_from.unwrap().secret_key_ref.unwrap();
        assert_eq!((r.name.as_str(), r.key.as_str()), ("db", "url"));
        assert_eq!(t.spec.unwrap().volumes, None);
    }

    #[test]
    fn a_store_set_in_env_is_left_alone() {
        let t = template(serde_json::json!({"image": "shortener:v1",
            "env": [{"name": "SHORTENER_STORE", "value": "/tmp/x.db"}]}));
        let c = &t.spec.as_ref().unwrap().containers[0];
        let stores: Vec<_> = c
            .env
            .iter()
            .flatten()
            .filter(|e| e.name == STORE_ENV)
            .collect();
        assert_eq!(stores.len(), 1);
        assert_eq!(stores[0].value.as_deref(), Some("/tmp/x.db"));
        assert_eq!(c.volume_mounts, None);
    }

    #[test]
    fn overlay_fields_reach_the_pod_and_merge_over_the_defaults() {
        let t = template(serde_json::json!({"image": "shortener:v1",
        "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
        "resources": {"requests": {"cpu": 1, "memory": "64Mi"}},
        "podTemplate": {
            "metadata": {"labels": {"team": "links", "app.kubernetes.io/instance": "evil"},
                         "annotations": {"a": "b"}},
            "serviceAccountName": "shortener",
            "automountServiceAccountToken": true,
            "securityContext": {"runAsUser": 1000},
            "nodeSelector": {"disk": "ssd"},
            "affinity": {"nodeAffinity": {}},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "links", "effect": "NoSchedule"}],
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}],
            "imagePullSecrets": [{"name": "regcred"}],
            "priorityClassName": "high",
            "volumes": [{"name": "cache", "emptyDir": {}}],
            "container": {
                "securityContext": {"readOnlyRootFilesystem": false},
                "envFrom": [{"configMapRef": {"name": "cm"}}],
                "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]
            },
            "extraContainers": [{"name": "proxy", "image": "envoy:1"}]
        }}));
        let meta = t.metadata.clone().unwrap();
        let labels = meta.labels.unwrap();
        assert_eq!(labels["team"], "links");
        assert_eq!(
            labels["app.kubernetes.io/instance"], "web",
            "operator labels win"
        );
        assert_eq!(meta.annotations.unwrap()["a"], "b");
        let pod = t.spec.unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("shortener"));
        assert_eq!(pod.automount_service_account_token, Some(true));
        let psc = pod.security_context.unwrap();
        assert_eq!(psc.run_as_user, Some(1000));
        assert_eq!(
            psc.run_as_non_root,
            Some(true),
            "unset fields keep the default"
        );
        assert_eq!(pod.node_selector.unwrap()["disk"], "ssd");
        assert!(pod.affinity.is_some());
        assert_eq!(
            pod.tolerations.unwrap()[0].key.as_deref(),
            Some("dedicated")
        );
        assert_eq!(pod.topology_spread_constraints.unwrap()[0].max_skew, 1);
        assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "regcred");
        assert_eq!(pod.priority_class_name.as_deref(), Some("high"));
        let vols: Vec<_> = pod.volumes.unwrap().into_iter().map(|v| v.name).collect();
        assert_eq!(vols, vec!["cache".to_string(), DATA_VOLUME.to_string()]);
        assert_eq!(pod.containers.len(), 2);
        assert_eq!(pod.containers[1].name, "proxy");
        let c = &pod.containers[0];
        let sc = c.security_context.clone().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(false));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(c.env_from.clone().unwrap().len(), 1);
        let mounts: Vec<_> = c
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.clone())
            .collect();
        assert_eq!(mounts, vec!["/cache".to_string(), "/data".to_string()]);
        let token = c.env.iter().flatten().find(|e| e.name == "TOKEN").unwrap();
        assert_eq!(token.value, None, "valueFrom without a value");
        assert!(token.value_from.is_some());
        let req = c.resources.clone().unwrap().requests.unwrap();
        assert_eq!(req["cpu"].0, "1");
        assert_eq!(req["memory"].0, "64Mi");
    }

    #[test]
    fn a_mount_on_the_store_dir_replaces_the_empty_dir() {
        let t = template(serde_json::json!({"image": "shortener:v1",
        "podTemplate": {
            "volumes": [{"name": "pvc", "persistentVolumeClaim": {"claimName": "data"}}],
            "container": {"volumeMounts": [{"name": "pvc", "mountPath": "/data"}]}
        }}));
        let pod = t.spec.unwrap();
        let vols: Vec<_> = pod.volumes.unwrap().into_iter().map(|v| v.name).collect();
        assert_eq!(vols, vec!["pvc".to_string()]);
    }

    #[test]
    fn merge_replaces_scalars_and_lists_and_merges_objects() {
        let base = default_container_security();
        let over: SecurityContext = serde_json::from_value(serde_json::json!({
            "capabilities": {"add": ["NET_BIND_SERVICE"]}, "privileged": false}))
        .unwrap();
        let m = merged(base, Some(&over));
        let caps = m.capabilities.unwrap();
        assert_eq!(caps.drop, Some(vec!["ALL".to_string()]));
        assert_eq!(caps.add, Some(vec!["NET_BIND_SERVICE".to_string()]));
        assert_eq!(m.privileged, Some(false));
        assert_eq!(m.read_only_root_filesystem, Some(true));
    }
}
