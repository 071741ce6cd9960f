//! One reconcile of one release: observe ([`crate::observe`]), decide with the probes the
//! decision asks for ([`crate::rollout::settle`], answered by [`crate::probes::Http`]),
//! then write the plan ([`crate::apply`]) and consume the manual control acted on.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use tracing::{info, warn};

use crate::api::ShortenerRelease;
use crate::api::annotations::{ANNOTATION_BUDGET_OVERRIDE, ANNOTATION_PAUSED, ANNOTATION_RETRY};
use crate::api_token;
use crate::apply;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::gate::GateState;
use crate::manual;
use crate::observe;
use crate::probes;
use crate::resources;
use crate::rollout::{self, Input, Workload};

pub async fn release(cached: &ShortenerRelease, ctx: &Context) -> Result<Action> {
    let ns = cached
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = cached.name_any();
    let sr = observe::release(ctx, &ns, cached).await?;
    let sr = sr.as_ref();
    let spec = &sr.spec;
    let hash = resources::template_hash(&resources::pod_template(&name, spec));
    let (observed, addresses) = observe::revisions(ctx, &ns, &name, spec.strategy).await?;
    let status = sr.status.clone().unwrap_or_default();
    let annotations = sr.annotations();
    let retry = annotations.get(ANNOTATION_RETRY).cloned();
    let mut gate = observe::gate(ctx, &ns, &name, spec).await?;
    // The Prometheus address is the tenant's: the operator queries only those the cluster
    // admin allowed (SSRF guard). A refused one holds new rollouts like a closed gate.
    let prometheus_refused = spec.analysis.prometheus.as_ref().and_then(|p| {
        ctx.prometheus_allow
            .check(&p.address)
            .err()
            .map(|e| e.to_string())
    });
    if let (true, Some(why)) = (gate.is_open(), &prometheus_refused) {
        gate = GateState::PrometheusRefused(why.clone());
    }
    let control = manual::next_control(annotations);
    // Before any pod is created: they read it from the Secret, and the smoke test sends it.
    // (The one write before the decision: it only creates the Secret when it is absent.)
    let owner = sr
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))?;
    let token = api_token::ensure(ctx, &ns, &name, owner).await?;
    let input = Input {
        name: &name,
        spec,
        generation: sr.metadata.generation,
        status: &status,
        desired_hash: &hash,
        paused: annotations.get(ANNOTATION_PAUSED).map(String::as_str) == Some("true"),
        retry: retry.as_deref(),
        budget_override: annotations
            .get(ANNOTATION_BUDGET_OVERRIDE)
            .map(String::as_str)
            == Some("true"),
        gate: &gate,
        control: control.as_ref().map(|(_, c)| c),
        observed: &observed,
        now: Timestamp::now(),
    };
    // The bake's status holds each pod's counters at the previous sample.
    let empty = BTreeMap::new();
    // With spec.analysis.prometheus the analysis asks Prometheus (and the pods only with
    // scrapePods). The token Secret, if any, is read here: a failure to read it is said
    // in the analysis result, it does not stop the reconcile.
    let promql_target = match &spec.analysis.prometheus {
        Some(p) => Some(crate::promql::Target {
            spec: p,
            namespace: &ns,
            release: &name,
            token: crate::promql::read_token(&ctx.client, &ns, p).await,
            refused: prometheus_refused,
        }),
        None => None,
    };
    let mut prober = probes::Http {
        client: &ctx.http,
        addresses: &addresses,
        baseline: status.analysis.as_ref().map_or(&empty, |a| &a.pod_counts),
        port: spec.port,
        token: &token,
        prometheus: promql_target.as_ref(),
    };
    let plan = match rollout::settle(&input, &mut prober).await {
        Ok(plan) => plan,
        Err(probe) => {
            warn!(?probe, "decision asked for the same probe twice");
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
    };
    // A Rolling rollback re-applies the pod template that ran under the stable revision's
    // hash, taken from the ReplicaSet Kubernetes kept for it.
    let template = match &plan.workload {
        Workload::Rolling(Some(target)) if target.image.is_some() => {
            let template = observe::earlier_template(ctx, &ns, &name, &target.hash).await?;
            if template.is_none() {
                warn!(revision = %target.hash, "no ReplicaSet kept its pod template; rebuilt from the spec with its image");
            }
            template
        }
        _ => None,
    };
    let requeue = plan.requeue;
    apply::plan(sr, ctx, &ns, &name, plan, template).await?;
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
    Ok(Action::requeue(requeue))
}
