//! `strategy: Rolling`: one Deployment, `NAME`, whose pod template changes in place;
//! Kubernetes' RollingUpdate replaces the pods. The active Service selects every pod of the
//! release, so old and new pods serve together while it does.

use std::collections::BTreeMap;

use super::{ActiveService, DeploymentAction, RevisionObservation, Rules, Workload};
use crate::api::ShortenerReleaseStatus;
use crate::resources::LABEL_INSTANCE;

/// The `Rolling` strategy.
pub(super) struct Rolling;

impl Rules for Rolling {
    fn serving_pods(
        &self,
        revisions: &BTreeMap<String, RevisionObservation>,
        _active: &str,
    ) -> i32 {
        // Old and new pods serve together while Kubernetes replaces one with the other.
        revisions.values().map(|r| r.ready_pods).sum()
    }

    fn rollback_restores_at_once(&self) -> bool {
        // The failed pods serve until Kubernetes has rolled the stable template back in.
        false
    }

    fn keeps_retired_deployments(&self) -> bool {
        // One Deployment: older templates live on in its ReplicaSets.
        false
    }

    fn revisions_from_pods(&self) -> bool {
        // The Deployment carries only the revision it runs now; pods say which they run.
        true
    }

    fn active_service(&self, _active: Option<String>) -> ActiveService {
        ActiveService::Release
    }

    fn selector(&self, name: &str, _active: Option<&str>) -> String {
        // What the active Service selects: every pod of the release.
        format!("{LABEL_INSTANCE}={name}")
    }

    fn workload(
        &self,
        revisions: Vec<DeploymentAction>,
        status: &ShortenerReleaseStatus,
    ) -> Workload {
        Workload::Rolling(rolling_target(&revisions, status))
    }
}

/// What the one Deployment of a `Rolling` release runs.
#[derive(Clone, Debug, PartialEq)]
pub struct RollingTarget {
    /// Pod template hash of the revision to run.
    pub hash: String,
    /// The revision's image when it is not the spec's template: the pod template is then
    /// the one that ran under `hash` before (a rollback re-applies it).
    pub image: Option<String>,
    pub replicas: i32,
}

/// Folds the revisions the plan runs and retires into the one Deployment of a `Rolling`
/// release: the revision being rolled out when it should run, else the stable
/// one (a rollback), else the spec's at the replicas the plan gives it. `None`: leave the
/// Deployment as it is (paused, nothing planned).
fn rolling_target(
    revisions: &[DeploymentAction],
    status: &ShortenerReleaseStatus,
) -> Option<RollingTarget> {
    let stable = status
        .stable_revision
        .and_then(|n| status.history.iter().find(|r| r.revision == n))
        .map(|r| r.pod_template_hash.clone());
    let image_of = |hash: &str| {
        status
            .history
            .iter()
            .rev()
            .find(|r| r.pod_template_hash == hash)
            .map(|r| r.image.clone())
    };
    let target = |action: &DeploymentAction| match action {
        DeploymentAction::Apply { hash, replicas } => Some(RollingTarget {
            hash: hash.clone(),
            image: None,
            replicas: *replicas,
        }),
        DeploymentAction::Scale { hash, replicas } => Some(RollingTarget {
            hash: hash.clone(),
            image: image_of(hash),
            replicas: *replicas,
        }),
        DeploymentAction::Restore {
            hash,
            image,
            replicas,
        } => Some(RollingTarget {
            hash: hash.clone(),
            image: Some(image.clone()),
            replicas: *replicas,
        }),
        DeploymentAction::Delete { .. } => None,
    };
    let running: Vec<RollingTarget> = revisions
        .iter()
        .filter_map(target)
        .filter(|t| t.replicas > 0)
        .collect();
    running
        .iter()
        .find(|t| Some(&t.hash) != stable.as_ref())
        .or_else(|| running.first())
        .cloned()
        .or_else(|| revisions.iter().find_map(target))
}
