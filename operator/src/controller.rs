//! The controller: watches, the thin reconcile wrapper (span, timer, dispatch) and the
//! error policy. The work itself is in [`crate::reconcile`].

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tracing::{Instrument, info_span, warn};

use crate::api::ShortenerRelease;
use crate::backoff::Backoffs;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::metrics::{ErrorKind, Metrics};
use crate::resources::{LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGER};

async fn reconcile(sr: Arc<ShortenerRelease>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_timer();
    let namespace = sr.namespace().unwrap_or_default();
    let name = sr.name_any();
    let span = info_span!("reconcile", %namespace, %name);
    async move {
        if sr.metadata.deletion_timestamp.is_some() {
            // Owner references make the API server delete the children.
            ctx.metrics.forget(&namespace, &name);
            return Ok(Action::await_change());
        }
        crate::reconcile::release(&sr, &ctx).await
    }
    .instrument(span)
    .await
}

/// Failing releases back off per object ([`crate::backoff`]): 2 s doubling to at most
/// 5 min, jittered, reset by the release's next successful reconcile.
fn error_policy(
    sr: Arc<ShortenerRelease>,
    err: &Error,
    ctx: Arc<Context>,
    backoffs: &Backoffs<ObjectRef<ShortenerRelease>>,
) -> Action {
    let kind = err.kind();
    ctx.metrics
        .reconcile_errors
        .with_label_values(&[kind.as_str()])
        .inc();
    warn!(name = %sr.name_any(), kind = kind.as_str(), error = %err, "reconcile failed");
    let key = ObjectRef::from_obj(sr.as_ref());
    Action::requeue(match kind {
        // Someone else wrote in between: read again at once.
        ErrorKind::Conflict => Duration::from_millis(200),
        ErrorKind::Transient => backoffs.next(key),
        // Retrying will not help until something changes; the watch brings that.
        ErrorKind::Permanent => backoffs.next(key).max(Duration::from_secs(60)),
    })
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the controller until `shutdown` resolves, over one namespace or all of them.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let ns = namespace.as_deref();
    let owned = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGER}"));
    let controller = Controller::new(
        api::<ShortenerRelease>(&client, ns),
        watcher::Config::default(),
    );
    let releases = controller.store();
    let backoffs = Arc::new(Backoffs::default());
    let succeeded = backoffs.clone();
    let ctx_deleted = ctx.clone();
    controller
        // A release gated on another (`spec.promotion.requires`) proceeds the moment its gate
        // changes, e.g. becomes Healthy with the awaited image.
        .watches(
            api::<ShortenerRelease>(&client, ns),
            watcher::Config::default(),
            move |changed: ShortenerRelease| {
                let gate_ns = changed.namespace().unwrap_or_default();
                let gate_name = changed.name_any();
                releases
                    .state()
                    .iter()
                    .filter(|r| crate::gate::waits_on(r, &gate_ns, &gate_name))
                    .map(|r| ObjectRef::from_obj(r.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .owns(api::<Deployment>(&client, ns), owned.clone())
        .owns(api::<Service>(&client, ns), owned.clone())
        // Pods belong to ReplicaSets, not to the release; map them by label so a pod turning
        // ready (or crashing) triggers a reconcile at once.
        .watches(api::<Pod>(&client, ns), owned, |pod: Pod| {
            let ns = pod.namespace()?;
            let instance = pod.labels().get(LABEL_INSTANCE)?.clone();
            Some(ObjectRef::<ShortenerRelease>::new(&instance).within(&ns))
        })
        .graceful_shutdown_on(shutdown)
        .run(
            move |sr, ctx| {
                let succeeded = succeeded.clone();
                async move {
                    let key = ObjectRef::from_obj(sr.as_ref());
                    let result = reconcile(sr, ctx).await;
                    if result.is_ok() {
                        succeeded.reset(&key);
                    }
                    result
                }
            },
            move |sr, err, ctx| error_policy(sr, err, ctx, &backoffs),
            ctx,
        )
        .for_each(|res| {
            let ctx = ctx_deleted.clone();
            async move {
                if let Err(e) = res {
                    forget_if_deleted(&ctx.metrics, &e);
                    tracing::debug!(error = %e, "controller event");
                }
            }
        })
        .await;
}

/// A reconcile asked for a release that no longer exists: it was deleted, and its metric
/// series go. Releases have no finalizer, so a plain `kubectl delete` (background
/// propagation) never shows the operator a deletionTimestamp; the reconcile that its
/// children's deletion triggers fails with `ObjectNotFound` instead.
fn forget_if_deleted<R, Q>(metrics: &Metrics, err: &kube::runtime::controller::Error<R, Q>) {
    if let kube::runtime::controller::Error::ObjectNotFound(obj) = err
        && let Some(namespace) = obj.namespace.as_deref()
    {
        metrics.forget(namespace, &obj.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Phase;
    use prometheus::Encoder;

    type ControllerError = kube::runtime::controller::Error<Error, std::io::Error>;

    /// Series of the releases `web` and `other` in `ns`, after `err`.
    fn after(err: ControllerError) -> (bool, bool) {
        let registry = prometheus::Registry::new();
        let metrics = Metrics::new(&registry).unwrap();
        for name in ["web", "other"] {
            metrics.set_phase("ns", name, Phase::Healthy);
        }
        forget_if_deleted(&metrics, &err);
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut buf)
            .unwrap();
        let text = String::from_utf8(buf).unwrap();
        (
            text.contains("name=\"web\""),
            text.contains("name=\"other\""),
        )
    }

    #[test]
    fn a_release_gone_from_the_store_loses_its_series_and_no_other_does() {
        let gone = ObjectRef::<ShortenerRelease>::new("web")
            .within("ns")
            .erase();
        let err = ControllerError::ObjectNotFound(Box::new(gone));
        assert_eq!(after(err), (false, true));
    }

    #[test]
    fn other_controller_errors_forget_nothing() {
        let err = ControllerError::QueueError(std::io::Error::other("watch failed"));
        assert_eq!(after(err), (true, true));
    }
}
