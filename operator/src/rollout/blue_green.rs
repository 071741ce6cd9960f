//! `strategy: BlueGreen` (the default): one Deployment per revision, `NAME-<hash>`; the
//! active Service selects one revision and switches in one write.

use std::collections::BTreeMap;

use super::{ActiveService, DeploymentAction, RevisionObservation, Rules, Workload};
use crate::api::ShortenerReleaseStatus;
use crate::resources::{LABEL_INSTANCE, LABEL_REVISION, NO_REVISION};

/// The `BlueGreen` strategy.
pub(super) struct BlueGreen;

impl Rules for BlueGreen {
    fn serving_pods(&self, revisions: &BTreeMap<String, RevisionObservation>, active: &str) -> i32 {
        revisions.get(active).map_or(0, |r| r.ready_pods)
    }

    fn rollback_restores_at_once(&self) -> bool {
        // Switching the selector back restores service with that one write.
        true
    }

    fn keeps_retired_deployments(&self) -> bool {
        true
    }

    fn revisions_from_pods(&self) -> bool {
        false
    }

    fn active_service(&self, active: Option<String>) -> ActiveService {
        ActiveService::Revision(active)
    }

    fn selector(&self, name: &str, active: Option<&str>) -> String {
        format!(
            "{LABEL_INSTANCE}={name},{LABEL_REVISION}={}",
            active.unwrap_or(NO_REVISION)
        )
    }

    fn workload(
        &self,
        revisions: Vec<DeploymentAction>,
        _status: &ShortenerReleaseStatus,
    ) -> Workload {
        Workload::BlueGreen(revisions)
    }
}
