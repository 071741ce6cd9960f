//! Reading the cluster into the decision's terms: the release (fresh when a one-shot control
//! is set), its promotion gate, its revisions' Deployments, ReplicaSets and pods, and the pod
//! template a `Rolling` rollback re-applies. The classification of a pod's state, and of a
//! ReplicaSet that cannot create pods, into a failure signal is pure and tested
//! (`classify.rs`). Nothing in this module writes.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use crate::api::{ShortenerRelease, ShortenerReleaseSpec, Strategy};
use crate::context::Context;
use crate::error::Result;
use crate::gate::{self, GateState};
use crate::manual;
use crate::probes::PodAddresses;
use crate::resources::{self, LABEL_INSTANCE, LABEL_REVISION, MANAGER};
use crate::rollout::{self, Observed};

mod classify;
pub use classify::{Exit, classify_exit, container_failure, create_failure, pod_failure};

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
