//! Observe the cluster, ask [`crate::rollout::decide`], run the probes it asks for and
//! apply its plan: the only module that writes to the API server.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use tracing::{info, warn};

use crate::api_token;
use crate::capture;
use crate::controller::{Context, Error, Result};
use crate::crd::{Phase, ShortenerRelease, Strategy};
use crate::gate::{self, GateState, GateView};
use crate::manual;
use crate::probes;
use crate::resources::{self, LABEL_INSTANCE, LABEL_REVISION, MANAGER};
use crate::rollout::{
    self, AnalysisSample, Decision, DeploymentAction, FailureReason, Input, Observed, Plan,
    PodFailure, Probe, SmokeResult,
};

pub const ANNOTATION_PAUSED: &str = "shortener.dev/paused";
pub const ANNOTATION_RETRY: &str = "shortener.dev/retry";
pub const ANNOTATION_BUDGET_OVERRIDE: &str = "shortener.dev/budget-override";

/// Pod IPs of one revision.
#[derive(Default)]
struct PodAddresses {
    ready: Vec<String>,
    all: Vec<String>,
}

pub async fn reconcile_release(sr: &ShortenerRelease, ctx: &Context) -> Result<Action> {
    let ns = sr
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = sr.name_any();
    // A one-shot control must not be acted on twice: the cached object can still carry an
    // annotation the previous reconcile already removed, so read the release afresh.
    let fresh;
    let sr = if manual::next_control(sr.annotations()).is_some() {
        fresh = Api::<ShortenerRelease>::namespaced(ctx.client.clone(), &ns)
            .get(&name)
            .await?;
        &fresh
    } else {
        sr
    };
    let spec = &sr.spec;
    let hash = resources::template_hash(&resources::pod_template(&name, spec));
    let rolling = spec.strategy == Strategy::Rolling;
    let (mut observed, addresses) = observe(ctx, &ns, &name, rolling).await?;
    let status = sr.status.clone().unwrap_or_default();
    let paused = sr.annotations().get(ANNOTATION_PAUSED).map(String::as_str) == Some("true");
    let retry = sr.annotations().get(ANNOTATION_RETRY).cloned();
    let budget_override = sr
        .annotations()
        .get(ANNOTATION_BUDGET_OVERRIDE)
        .map(String::as_str)
        == Some("true");
    let gate = read_gate(ctx, &ns, &name, spec).await?;
    // Before any pod is created: they read it from the Secret, and the smoke test sends it.
    let owner = sr
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))?;
    let token = api_token::ensure(ctx, &ns, &name, owner).await?;
    let control = manual::next_control(sr.annotations());
    let now = Timestamp::now();

    // At most one probe of each kind per reconcile, then the decision is final.
    let plan = loop {
        let input = Input {
            spec,
            generation: sr.metadata.generation,
            status: &status,
            desired_hash: &hash,
            paused,
            retry: retry.as_deref(),
            budget_override,
            gate: &gate,
            control: control.as_ref().map(|(_, c)| c),
            observed: &observed,
            now,
        };
        match rollout::decide(&input) {
            Decision::Act(plan) => break plan,
            Decision::Probe(Probe::SmokeTest { hash }) if observed.smoke.is_none() => {
                let ips = addresses
                    .get(&hash)
                    .map(|a| a.ready.clone())
                    .unwrap_or_default();
                observed.smoke = Some(smoke(ctx, &ips, spec.port, &hash, &token).await);
            }
            Decision::Probe(Probe::Analyze { hash }) if observed.analysis.is_none() => {
                let ips = addresses
                    .get(&hash)
                    .map(|a| a.all.clone())
                    .unwrap_or_default();
                // The bake's status holds each pod's counters at the previous sample.
                let empty = BTreeMap::new();
                let baseline = status.analysis.as_ref().map_or(&empty, |a| &a.pod_counts);
                observed.analysis = Some(analyze(ctx, baseline, &ips, spec.port).await);
            }
            Decision::Probe(p) => {
                warn!(probe = ?p, "decision asked for the same probe twice");
                return Ok(Action::requeue(std::time::Duration::from_secs(1)));
            }
        }
    };
    execute(sr, ctx, &ns, &name, &plan).await?;
    // Only once the plan (status included) is written: a failed write keeps the request.
    if let Some((key, _)) = control {
        Api::<ShortenerRelease>::namespaced(ctx.client.clone(), &ns)
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&manual::removal_patch(key)),
            )
            .await?;
        info!(annotation = key, "manual control consumed");
    }
    Ok(Action::requeue(plan.requeue))
}

/// Reads the release `spec.promotion.requires` names, fresh from the API server (it may
/// live in a namespace the controller does not watch), and judges the gate.
async fn read_gate(
    ctx: &Context,
    ns: &str,
    name: &str,
    spec: &crate::crd::ShortenerReleaseSpec,
) -> Result<GateState> {
    let Some((gns, gname)) = gate::gate_of(spec, ns) else {
        return Ok(GateState::Open);
    };
    if gns == ns && gname == name {
        return Ok(gate::evaluate((ns, name), spec, None));
    }
    let api = Api::<ShortenerRelease>::namespaced(ctx.client.clone(), &gns);
    let view = api.get_opt(&gname).await?.map(|g| GateView::of(&g, &gns));
    Ok(gate::evaluate((ns, name), spec, view.as_ref()))
}

/// Reads the release's Deployments and pods into the decision's terms.
/// A `Rolling` release has one Deployment for all revisions: its pods say which revision
/// they run.
async fn observe(
    ctx: &Context,
    ns: &str,
    name: &str,
    rolling: bool,
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
    if rolling {
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

fn pod_ready(pod: &Pod) -> bool {
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

async fn smoke(ctx: &Context, ips: &[String], port: i32, hash: &str, token: &str) -> SmokeResult {
    if ips.is_empty() {
        return SmokeResult::Failed("no ready pod to test".into());
    }
    for ip in ips {
        let marker = format!("{hash}-{}", Timestamp::now().as_millisecond());
        if let Err(e) = probes::smoke_test(&ctx.http, ip, port, &marker, token).await {
            return SmokeResult::Failed(e);
        }
    }
    SmokeResult::Passed
}

/// Reads every pod's counters and returns what happened since `baseline` (the counters at
/// the previous sample, kept in the release's status), with the new counters as the next
/// baseline. A pod without a baseline counts from its start, which before promotion held
/// only probes and the (passed) smoke test.
async fn analyze(
    ctx: &Context,
    baseline: &BTreeMap<String, probes::Counts>,
    ips: &[String],
    port: i32,
) -> AnalysisSample {
    let mut scraped = Vec::with_capacity(ips.len());
    for ip in ips {
        let counts = probes::scrape(&ctx.http, ip, port).await;
        if let Err(e) = &counts {
            // An unreachable pod shows up in readiness and restarts; skip its numbers.
            warn!(error = %e, "metrics scrape failed");
        }
        scraped.push((ip.clone(), counts.ok()));
    }
    probes::since_baseline(baseline, scraped)
}

async fn execute(
    sr: &ShortenerRelease,
    ctx: &Context,
    ns: &str,
    name: &str,
    plan: &Plan,
) -> Result<()> {
    let client = &ctx.client;
    let pp = PatchParams::apply(MANAGER).force();
    let owner = sr
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))?;

    // Status first: if a later write fails, the next reconcile re-applies from it
    // instead of re-deciding from a state that no longer holds.
    let srs = Api::<ShortenerRelease>::namespaced(client.clone(), ns);
    let status_patch = serde_json::json!({
        "apiVersion": "shortener.dev/v1alpha1",
        "kind": "ShortenerRelease",
        "status": plan.status,
    });
    srs.patch_status(name, &pp, &Patch::Apply(&status_patch))
        .await?;

    if let Some(routing) = &plan.routing {
        let services = Api::<Service>::namespaced(client.clone(), ns);
        let active = if sr.spec.strategy == Strategy::Rolling {
            resources::release_service(name, ns, sr.spec.port, owner.clone())
        } else {
            resources::service(
                name,
                name,
                ns,
                sr.spec.port,
                routing.active.as_deref(),
                owner.clone(),
            )
        };
        services.patch(name, &pp, &Patch::Apply(&active)).await?;
        if let Some(rb) = &plan.rollback {
            ctx.metrics
                .rollbacks
                .with_label_values(&[rb.reason.as_str()])
                .inc();
        }
        let preview_name = resources::preview_service_name(name);
        let preview = resources::service(
            &preview_name,
            name,
            ns,
            sr.spec.port,
            routing.preview.as_deref(),
            owner.clone(),
        );
        services
            .patch(&preview_name, &pp, &Patch::Apply(&preview))
            .await?;
    }

    // After the active Service has its selector: that is when traffic is back.
    if let Some(detected_at) = plan.restored {
        let secs =
            (Timestamp::now().as_millisecond() - detected_at.as_millisecond()) as f64 / 1000.0;
        ctx.metrics.time_to_restore.observe(secs.max(0.0));
        info!(seconds = secs, "traffic restored to a healthy revision");
    }

    // Before the failed revision is scaled down, while its pods and logs still exist;
    // traffic is already back on the stable revision.
    if plan.failure.is_some() {
        capture_incident(sr, ctx, ns, name, plan, owner.clone()).await;
    }

    let deployments = Api::<Deployment>::namespaced(client.clone(), ns);
    if sr.spec.strategy == Strategy::Rolling {
        apply_rolling(sr, ctx, ns, name, plan, owner.clone()).await?;
    }
    for action in &plan.deployments {
        if sr.spec.strategy == Strategy::Rolling {
            continue;
        }
        match action {
            DeploymentAction::Apply { hash, replicas } => {
                let d = resources::deployment(name, ns, &sr.spec, hash, *replicas, owner.clone());
                let dname = resources::deployment_name(name, hash);
                deployments.patch(&dname, &pp, &Patch::Apply(&d)).await?;
            }
            DeploymentAction::Restore {
                hash,
                image,
                replicas,
            } => {
                let mut spec = sr.spec.clone();
                spec.image = image.clone();
                let d = resources::deployment(name, ns, &spec, hash, *replicas, owner.clone());
                let dname = resources::deployment_name(name, hash);
                deployments.patch(&dname, &pp, &Patch::Apply(&d)).await?;
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

    let reference = sr.object_ref(&());
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
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            warn!(error = %e, "could not record event");
        }
        info!(reason = %note.reason, message = %note.message, "transition");
    }
    if let Some(why) = plan.failure {
        ctx.metrics
            .incidents
            .with_label_values(&[why.as_str()])
            .inc();
        // A revision refused before promotion is rolled back too (phase RolledBack): the
        // stable revision keeps the traffic. Count it, so the rollback alert fires for
        // the report's very incident, which the smoke test stops before any user sees it.
        // A switch of traffic back was already counted above.
        if plan.rollback.is_none() && plan.status.phase == Phase::RolledBack {
            ctx.metrics
                .rollbacks
                .with_label_values(&[why.as_str()])
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
    Ok(())
}

/// Points the one Deployment of a `Rolling` release at the revision the plan runs; a
/// rollback re-applies the pod template that ran under the stable revision's hash, taken
/// from the ReplicaSet Kubernetes kept for it.
async fn apply_rolling(
    sr: &ShortenerRelease,
    ctx: &Context,
    ns: &str,
    name: &str,
    plan: &Plan,
    owner: k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
) -> Result<()> {
    let Some(target) = rollout::rolling_target(plan) else {
        return Ok(());
    };
    let mut spec = sr.spec.clone();
    let mut template = None;
    if let Some(image) = &target.image {
        spec.image = image.clone();
        template = earlier_template(ctx, ns, name, &target.hash).await?;
        if template.is_none() {
            warn!(revision = %target.hash, "no ReplicaSet kept its pod template; rebuilt from the spec with its image");
        }
    }
    let d = resources::rolling_deployment(
        name,
        ns,
        &spec,
        &target.hash,
        target.replicas,
        template,
        owner,
    );
    Api::<Deployment>::namespaced(ctx.client.clone(), ns)
        .patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&d),
        )
        .await?;
    Ok(())
}

/// The pod template that ran under `hash`, without the label Kubernetes adds to it.
async fn earlier_template(
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

/// Log excerpt, ConfigMap, `status.lastIncident.logExcerptRef` and webhook for a failure.
/// Best effort and bounded in time: nothing here may hold up reconciliation for long.
async fn capture_incident(
    sr: &ShortenerRelease,
    ctx: &Context,
    ns: &str,
    name: &str,
    plan: &Plan,
    owner: k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
) {
    let Some(mut incident) = plan.status.last_incident.clone() else {
        return;
    };
    let record = plan
        .status
        .history
        .iter()
        .find(|r| r.revision == incident.revision);
    let image = record.map(|r| r.image.clone());
    let mut excerpt = String::new();
    if sr.spec.incident.capture_logs
        && let Some(hash) = record.map(|r| r.pod_template_hash.clone())
    {
        let read = capture::excerpt(ctx, sr, ns, &hash);
        match tokio::time::timeout(std::time::Duration::from_secs(5), read).await {
            Ok(Ok(text)) => excerpt = text,
            Ok(Err(e)) => warn!(error = %e, "incident logs unreadable"),
            Err(_) => warn!("incident log capture timed out"),
        }
    }
    if !excerpt.is_empty() {
        match capture::store(ctx, ns, name, &incident, &excerpt, owner).await {
            Ok(cm) => {
                incident.log_excerpt_ref = Some(cm);
                let mut status = plan.status.clone();
                status.last_incident = Some(incident.clone());
                let patch = serde_json::json!({
                    "apiVersion": "shortener.dev/v1alpha1",
                    "kind": "ShortenerRelease",
                    "status": status,
                });
                let srs = Api::<ShortenerRelease>::namespaced(ctx.client.clone(), ns);
                if let Err(e) = srs
                    .patch_status(
                        name,
                        &PatchParams::apply(MANAGER).force(),
                        &Patch::Apply(&patch),
                    )
                    .await
                {
                    warn!(error = %e, "could not record the log excerpt in status");
                }
            }
            Err(e) => warn!(error = %e, "could not store the incident log excerpt"),
        }
    }
    capture::alert(
        ctx,
        sr,
        ns,
        &incident,
        image,
        &plan.status.message,
        &excerpt,
    )
    .await;
    let kept: Vec<i64> = plan.status.history.iter().map(|r| r.revision).collect();
    capture::prune(ctx, ns, name, &kept).await;
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
