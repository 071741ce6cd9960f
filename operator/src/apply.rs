//! The write layer: applies a [`Plan`] to the cluster. It reads nothing (what it needs was
//! observed before the decision) and writes the status once per reconcile.
//!
//! Order matters: the Services first (a rollback puts the traffic back before anything
//! else), then the incident capture (the failed revision's pods and logs still exist; its
//! ConfigMap goes into the status), then the status, then the workload (scaling a failed
//! revision down comes after the status that explains it), then Events and metrics.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PodTemplateSpec, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource};
use tracing::{info, warn};

use crate::api::{Phase, ShortenerRelease, reason};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::incident;
use crate::resources::{self, MANAGER};
use crate::rollout::{ActiveService, DeploymentAction, Plan, RollingTarget, Routing, Workload};

/// Writes `plan` for the release `name` in `ns`. `template`: the pod template a `Rolling`
/// rollback runs again (read from the ReplicaSet Kubernetes kept), if any.
pub async fn plan(
    sr: &ShortenerRelease,
    ctx: &Context,
    ns: &str,
    name: &str,
    mut plan: Plan,
    template: Option<PodTemplateSpec>,
) -> Result<()> {
    let owner = sr
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))?;
    let target = Target {
        sr,
        ctx,
        ns,
        name,
        owner,
    };
    if let Some(routing) = &plan.routing {
        target.services(routing).await?;
        if plan.rollback.is_some() {
            crate::crash::point(crate::crash::AFTER_ROLLBACK_SWITCH);
        } else if plan.events.iter().any(|e| e.reason == reason::PROMOTED) {
            crate::crash::point(crate::crash::AFTER_PROMOTION_SWITCH);
        }
        if let Some(rb) = &plan.rollback {
            ctx.metrics
                .rollbacks
                .with_label_values(&[ns, name, rb.reason.as_str()])
                .inc();
        }
    }
    // After the active Service has its selector: that is when traffic is back.
    if let Some(detected_at) = plan.restored {
        let secs =
            (Timestamp::now().as_millisecond() - detected_at.as_millisecond()) as f64 / 1000.0;
        ctx.metrics
            .time_to_restore
            .with_label_values(&[ns, name])
            .observe(secs.max(0.0));
        info!(seconds = secs, "traffic restored to a healthy revision");
    }
    // Before the failed revision is scaled down, while its pods and logs still exist;
    // traffic is already back on the stable revision.
    if plan.failure.is_some() {
        let owner = target.owner.clone();
        incident::capture::record(&ctx.client, &ctx.webhook, sr, &mut plan.status, owner).await;
    }
    // Before the workload: if a later write fails, the next reconcile re-applies from this
    // status instead of re-deciding from a state that no longer holds.
    target.status(&plan).await?;
    if plan.rollback.is_some() {
        crate::crash::point(crate::crash::AFTER_ROLLBACK_STATUS);
    }
    match &plan.workload {
        Workload::BlueGreen(actions) => target.blue_green(actions).await?,
        Workload::Rolling(Some(rolling)) => target.rolling(rolling, template).await?,
        Workload::Rolling(None) => {}
    }
    target.events(&plan).await;
    // After the status write: the transition is then persisted, so a restart does not
    // announce it again.
    let reasons: Vec<&str> = plan.events.iter().map(|e| e.reason.as_str()).collect();
    let before = sr.status.as_ref().map(|s| s.phase).unwrap_or_default();
    if let Some(notice) =
        incident::webhook::notice(before, plan.status.phase, &plan.status.message, &reasons)
    {
        incident::capture::announce(&ctx.client, &ctx.webhook, sr, &plan.status, &notice).await;
    }
    record_metrics(ctx, ns, name, &plan);
    Ok(())
}

/// The release being written to.
struct Target<'a> {
    sr: &'a ShortenerRelease,
    ctx: &'a Context,
    ns: &'a str,
    name: &'a str,
    owner: OwnerReference,
}

impl Target<'_> {
    fn apply_params() -> PatchParams {
        PatchParams::apply(MANAGER).force()
    }

    async fn status(&self, plan: &Plan) -> Result<()> {
        let patch = serde_json::json!({
            "apiVersion": "shortener.dev/v1alpha1",
            "kind": "ShortenerRelease",
            "status": plan.status,
        });
        Api::<ShortenerRelease>::namespaced(self.ctx.client.clone(), self.ns)
            .patch_status(self.name, &Self::apply_params(), &Patch::Apply(&patch))
            .await?;
        Ok(())
    }

    async fn services(&self, routing: &Routing) -> Result<()> {
        let (name, ns, port) = (self.name, self.ns, self.sr.spec.port);
        let services = Api::<Service>::namespaced(self.ctx.client.clone(), ns);
        let active = match &routing.active {
            ActiveService::Revision(revision) => resources::service(
                name,
                name,
                ns,
                port,
                revision.as_deref(),
                self.owner.clone(),
            ),
            ActiveService::Release => {
                resources::release_service(name, ns, port, self.owner.clone())
            }
        };
        services
            .patch(name, &Self::apply_params(), &Patch::Apply(&active))
            .await?;
        let preview_name = resources::preview_service_name(name);
        let preview = resources::service(
            &preview_name,
            name,
            ns,
            port,
            routing.preview.as_deref(),
            self.owner.clone(),
        );
        services
            .patch(
                &preview_name,
                &Self::apply_params(),
                &Patch::Apply(&preview),
            )
            .await?;
        Ok(())
    }

    /// One Deployment per revision, `NAME-<hash>`.
    async fn blue_green(&self, actions: &[DeploymentAction]) -> Result<()> {
        let (name, ns) = (self.name, self.ns);
        let deployments = Api::<Deployment>::namespaced(self.ctx.client.clone(), ns);
        for action in actions {
            match action {
                DeploymentAction::Apply { hash, replicas } => {
                    let d = resources::deployment(
                        name,
                        ns,
                        &self.sr.spec,
                        hash,
                        *replicas,
                        self.owner.clone(),
                    );
                    let dname = resources::deployment_name(name, hash);
                    deployments
                        .patch(&dname, &Self::apply_params(), &Patch::Apply(&d))
                        .await?;
                }
                DeploymentAction::Restore {
                    hash,
                    image,
                    replicas,
                } => {
                    let mut spec = self.sr.spec.clone();
                    spec.image = image.clone();
                    let d =
                        resources::deployment(name, ns, &spec, hash, *replicas, self.owner.clone());
                    let dname = resources::deployment_name(name, hash);
                    deployments
                        .patch(&dname, &Self::apply_params(), &Patch::Apply(&d))
                        .await?;
                }
                DeploymentAction::Scale { hash, replicas } => {
                    let dname = resources::deployment_name(name, hash);
                    let patch = serde_json::json!({"spec": {"replicas": replicas}});
                    match deployments
                        .patch(&dname, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        Ok(_) => {}
                        Err(kube::Error::Api(e)) if e.code == 404 => {
                            warn!(deployment = %dname, "stable revision's Deployment is gone");
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                DeploymentAction::Delete { hash } => {
                    let dname = resources::deployment_name(name, hash);
                    match deployments
                        .delete(&dname, &DeleteParams::background())
                        .await
                    {
                        Ok(_) => {}
                        Err(kube::Error::Api(e)) if e.code == 404 => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok(())
    }

    /// The one Deployment of a `Rolling` release, pointed at the revision the plan runs; a
    /// rollback runs `template` (the one that ran under the stable revision's hash) again,
    /// or, without it, the spec with that revision's image.
    async fn rolling(
        &self,
        target: &RollingTarget,
        template: Option<PodTemplateSpec>,
    ) -> Result<()> {
        let mut spec = self.sr.spec.clone();
        if let Some(image) = &target.image {
            spec.image = image.clone();
        }
        let d = resources::rolling_deployment(
            self.name,
            self.ns,
            &spec,
            &target.hash,
            target.replicas,
            template,
            self.owner.clone(),
        );
        Api::<Deployment>::namespaced(self.ctx.client.clone(), self.ns)
            .patch(self.name, &Self::apply_params(), &Patch::Apply(&d))
            .await?;
        Ok(())
    }

    async fn events(&self, plan: &Plan) {
        let reference = self.sr.object_ref(&());
        for note in &plan.events {
            let event = Event {
                type_: if note.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: note.reason.clone(),
                note: Some(note.message.clone()),
                action: "Rollout".into(),
                secondary: None,
            };
            if let Err(e) = self.ctx.recorder.publish(&event, &reference).await {
                warn!(error = %e, "could not record event");
            }
            info!(reason = %note.reason, message = %note.message, "transition");
        }
    }
}

fn record_metrics(ctx: &Context, ns: &str, name: &str, plan: &Plan) {
    if let Some(why) = plan.failure {
        ctx.metrics
            .incidents
            .with_label_values(&[ns, name, why.as_str()])
            .inc();
        // A revision refused before promotion is rolled back too (phase RolledBack): the
        // stable revision keeps the traffic. Count it, so the rollback alert fires for
        // the report's very incident, which the smoke test stops before any user sees it.
        // A switch of traffic back was already counted with the Services.
        if plan.rollback.is_none() && plan.status.phase == Phase::RolledBack {
            ctx.metrics
                .rollbacks
                .with_label_values(&[ns, name, why.as_str()])
                .inc();
        }
    }
    if plan.downtime_charged > 0 {
        ctx.metrics
            .downtime
            .with_label_values(&[ns, name])
            .inc_by(plan.downtime_charged as f64);
    }
    if let Some(budget) = &plan.status.budget {
        ctx.metrics
            .budget_remaining
            .with_label_values(&[ns, name])
            .set(budget.remaining_seconds as f64);
    }
    ctx.metrics.set_phase(ns, name, plan.status.phase);
}
