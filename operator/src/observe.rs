//! Reading the cluster into the decision's terms: the release (fresh when a one-shot control
//! is set), its promotion gate, its revisions' Deployments, ReplicaSets and pods, and the pod
//! template a `Rolling` rollback re-applies. The classification of a pod's state, and of a
//! ReplicaSet that cannot create pods, into a failure signal is pure and tested here. Nothing in this module writes.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use crate::api::{FailureReason, ShortenerRelease, ShortenerReleaseSpec, Strategy};
use crate::context::Context;
use crate::error::Result;
use crate::gate::{self, GateState};
use crate::manual;
use crate::probes::PodAddresses;
use crate::resources::{self, LABEL_INSTANCE, LABEL_REVISION, MANAGER};
use crate::rollout::{self, Observed, PodFailure};

/// The release to reconcile. A one-shot control must not be acted on twice: the cached
/// object can still carry an annotation the previous reconcile already removed, so with
/// one set the release is read afresh.
pub async fn release<'a>(
    ctx: &Context,
    ns: &str,
    cached: &'a ShortenerRelease,
) -> Result<Cow<'a, ShortenerRelease>> {
    if manual::next_control(cached.annotations()).is_none() {
        return Ok(Cow::Borrowed(cached));
    }
    let fresh = Api::<ShortenerRelease>::namespaced(ctx.client.clone(), ns)
        .get(&cached.name_any())
        .await?;
    Ok(Cow::Owned(fresh))
}

/// Reads the release `spec.promotion.requires` names, fresh from the API server (it may
/// live in a namespace the controller does not watch), and judges the gate.
pub async fn gate(
    ctx: &Context,
    ns: &str,
    name: &str,
    spec: &ShortenerReleaseSpec,
) -> Result<GateState> {
    let Some((gns, gname)) = gate::gate_of(spec, ns) else {
        return Ok(GateState::Open);
    };
    if gns == ns && gname == name {
        return Ok(gate::evaluate((ns, name), spec, None));
    }
    let api = Api::<ShortenerRelease>::namespaced(ctx.client.clone(), &gns);
    let view = gate::visible(api.get_opt(&gname).await, &gns, ns)?;
    Ok(gate::evaluate((ns, name), spec, view.as_ref()))
}

/// Reads the release's Deployments and pods into the decision's terms.
/// A strategy with one Deployment for all revisions (`Rolling`) knows them from its pods
/// too: they say which revision they run.
pub async fn revisions(
    ctx: &Context,
    ns: &str,
    name: &str,
    strategy: Strategy,
) -> Result<(Observed, BTreeMap<String, PodAddresses>)> {
    let selector = format!("{LABEL_INSTANCE}={name},{}", owned_selector());
    let lp = ListParams::default().labels(&selector);
    let deployments = Api::<Deployment>::namespaced(ctx.client.clone(), ns)
        .list(&lp)
        .await?;
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), ns)
        .list(&lp)
        .await?;

    let mut observed = Observed::default();
    for d in &deployments {
        let template_hash = d
            .spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref())
            .and_then(|l| l.get(LABEL_REVISION));
        if let Some(hash) = d.labels().get(LABEL_REVISION).or(template_hash) {
            observed.revisions.entry(hash.clone()).or_default().replicas =
                Some(d.spec.replicas.unwrap_or(1));
        }
    }
    // Pods that cannot be created, per revision: each ReplicaSet carries its template's
    // revision label (with `Rolling` one Deployment has a ReplicaSet per revision, so the
    // Deployment's copy of the condition could name an old one's failure).
    let sets = Api::<ReplicaSet>::namespaced(ctx.client.clone(), ns)
        .list(&lp)
        .await?;
    for rs in &sets {
        if let (Some(hash), Some(failure)) = (rs.labels().get(LABEL_REVISION), create_failure(rs))
            && let Some(rev) = observed.revisions.get_mut(hash)
        {
            rev.failure.get_or_insert(failure);
        }
    }
    if rollout::revisions_from_pods(strategy) {
        for pod in &pods {
            if pod.metadata.deletion_timestamp.is_none()
                && let Some(hash) = pod.labels().get(LABEL_REVISION)
            {
                observed.revisions.entry(hash.clone()).or_default();
            }
        }
    }
    let mut addresses: BTreeMap<String, PodAddresses> = BTreeMap::new();
    for pod in &pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(hash) = pod.labels().get(LABEL_REVISION) else {
            continue;
        };
        let Some(rev) = observed.revisions.get_mut(hash) else {
            continue;
        };
        let ready = pod_ready(pod);
        if ready {
            rev.ready_pods += 1;
        }
        if rev.failure.is_none() {
            rev.failure = pod_failure(pod);
        }
        if let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()) {
            let a = addresses.entry(hash.clone()).or_default();
            if ready {
                a.ready.push(ip.clone());
            }
            a.all.push(ip);
        }
    }
    Ok((observed, addresses))
}

fn owned_selector() -> String {
    format!("{}={MANAGER}", resources::LABEL_MANAGED_BY)
}

pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The first failure signal of a pod. A restart counts at once: waiting for the
/// CrashLoopBackOff state would cost the backoff delay.
pub fn pod_failure(pod: &Pod) -> Option<PodFailure> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() == Some("Failed") {
        return Some(PodFailure {
            reason: FailureReason::CrashLoop,
            message: format!("pod {} failed", pod.name_any()),
        });
    }
    for cs in status.container_statuses.iter().flatten() {
        let waiting = cs
            .state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.clone())
            .unwrap_or_default();
        match waiting.as_str() {
            "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull" => {
                return Some(PodFailure {
                    reason: FailureReason::ImagePullFailed,
                    message: format!("pod {}: {waiting}", pod.name_any()),
                });
            }
            "CrashLoopBackOff" | "CreateContainerError" | "RunContainerError" => {
                return Some(PodFailure {
                    reason: FailureReason::CrashLoop,
                    message: format!("pod {}: {waiting}", pod.name_any()),
                });
            }
            _ => {}
        }
        let exited = cs
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .map(|t| t.exit_code);
        if cs.restart_count > 0 || exited.is_some() {
            return Some(PodFailure {
                reason: FailureReason::CrashLoop,
                message: format!(
                    "pod {}: container exited (restarts: {})",
                    pod.name_any(),
                    cs.restart_count
                ),
            });
        }
    }
    None
}

/// Pods of a revision cannot be created (admission refused them, a quota is full): the
/// ReplicaSet controller's `ReplicaFailure` condition with reason `FailedCreate` and the API
/// server's message (the Deployment controller copies it into the Deployment's conditions,
/// whose update wakes the controller). Waiting would only reach `progressDeadlineSeconds`.
/// A ReplicaSet scaled to zero wants no pods, so its stale condition is ignored.
pub fn create_failure(rs: &ReplicaSet) -> Option<PodFailure> {
    if rs.spec.replicas == Some(0) {
        return None;
    }
    let cond = rs.status.as_ref()?.conditions.as_ref()?.iter().find(|c| {
        c.type_.as_deref() == Some("ReplicaFailure") && c.status.as_deref() == Some("True")
    })?;
    if cond.reason.as_deref() != Some("FailedCreate") {
        return None;
    }
    Some(PodFailure {
        reason: FailureReason::PodCreateFailed,
        message: format!(
            "pods of {} cannot be created: {}",
            rs.name_any(),
            cond.message.as_deref().unwrap_or("no message")
        ),
    })
}

/// The pod template that ran under `hash`, without the label Kubernetes adds to it.
pub async fn earlier_template(
    ctx: &Context,
    ns: &str,
    name: &str,
    hash: &str,
) -> Result<Option<PodTemplateSpec>> {
    let lp =
        ListParams::default().labels(&format!("{LABEL_INSTANCE}={name},{LABEL_REVISION}={hash}"));
    let sets = Api::<ReplicaSet>::namespaced(ctx.client.clone(), ns)
        .list(&lp)
        .await?;
    Ok(sets
        .items
        .into_iter()
        .filter_map(|rs| rs.spec.template)
        .next()
        .map(|mut t| {
            if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
                labels.remove("pod-template-hash");
            }
            t
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-abc-1"},
            "status": status,
        }))
        .unwrap()
    }

    fn waiting(reason: &str) -> Pod {
        pod(serde_json::json!({"containerStatuses": [{
            "name": "shortener", "image": "x", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"waiting": {"reason": reason}}
        }]}))
    }

    fn replica_set(replicas: i32, conditions: serde_json::Value) -> ReplicaSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-abc-5d8f"},
            "spec": {"replicas": replicas, "selector": {}},
            "status": {"replicas": 0, "conditions": conditions},
        }))
        .unwrap()
    }

    #[test]
    fn failed_create_is_a_pod_create_failure_with_the_api_servers_message() {
        let msg = "pods \"web-abc-x\" is forbidden: violates PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false";
        let failing = serde_json::json!([
            {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": msg},
        ]);
        let f = create_failure(&replica_set(2, failing.clone())).unwrap();
        assert_eq!(f.reason, FailureReason::PodCreateFailed);
        assert!(f.message.contains("violates PodSecurity"), "{}", f.message);
        assert!(f.message.contains("web-abc-5d8f"), "{}", f.message);
        assert!(
            create_failure(&replica_set(0, failing)).is_none(),
            "scaled to zero: a stale condition"
        );
        let cleared = replica_set(
            2,
            serde_json::json!([{"type": "ReplicaFailure", "status": "False", "reason": "FailedCreate"}]),
        );
        assert!(create_failure(&cleared).is_none());
        let other = replica_set(
            2,
            serde_json::json!([{"type": "ReplicaFailure", "status": "True", "reason": "FailedDelete"}]),
        );
        assert!(create_failure(&other).is_none());
        assert!(create_failure(&replica_set(2, serde_json::json!([]))).is_none());
    }

    #[test]
    fn pod_failure_signals() {
        let reason = |p: &Pod| pod_failure(p).map(|f| f.reason);
        assert_eq!(
            reason(&waiting("ErrImagePull")),
            Some(FailureReason::ImagePullFailed)
        );
        assert_eq!(
            reason(&waiting("ImagePullBackOff")),
            Some(FailureReason::ImagePullFailed)
        );
        assert_eq!(
            reason(&waiting("CrashLoopBackOff")),
            Some(FailureReason::CrashLoop)
        );
        assert_eq!(reason(&waiting("ContainerCreating")), None);
        let restarted = pod(serde_json::json!({"containerStatuses": [{
            "name": "shortener", "image": "x", "imageID": "", "ready": false,
            "restartCount": 1, "state": {"running": {}}
        }]}));
        assert_eq!(reason(&restarted), Some(FailureReason::CrashLoop));
        let exited = pod(serde_json::json!({"containerStatuses": [{
            "name": "shortener", "image": "x", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"terminated": {"exitCode": 1}}
        }]}));
        assert_eq!(reason(&exited), Some(FailureReason::CrashLoop));
        assert_eq!(
            reason(&pod(serde_json::json!({"phase": "Failed"}))),
            Some(FailureReason::CrashLoop)
        );
        let healthy = pod(
            serde_json::json!({"phase": "Running", "containerStatuses": [{
                "name": "shortener", "image": "x", "imageID": "", "ready": true,
                "restartCount": 0, "state": {"running": {}}
            }]}),
        );
        assert_eq!(reason(&healthy), None);
    }
}
