//! Incident capture after a failure, the I/O beside the pure [`super::filter`] and
//! [`super::webhook`] payload: the failed revision's pod logs, cut down by the filter,
//! stored in a ConfigMap; the alert posted to the webhook. Runs after traffic is back on the
//! stable revision, before the status is written (which then names the ConfigMap).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use tracing::warn;

use super::filter::{FilterConfig, filter_bytes};
use super::tail;
use super::webhook::{
    EVENT_SUCCEEDED, Incident, Notice, PayloadLimits, WebhookSender, WebhookUrl, build_notice,
    build_payload,
};
use crate::api::{LastIncident, ShortenerRelease, ShortenerReleaseStatus};
use crate::resources::{self, LABEL_INSTANCE, LABEL_REVISION, MANAGER};

/// Log excerpt, ConfigMap and webhook for the failure in `status.lastIncident`; on success
/// `status.lastIncident.logExcerptRef` names the ConfigMap. Best effort and bounded in time:
/// nothing here may hold up reconciliation for long.
pub async fn record(
    client: &Client,
    webhook: &WebhookSender,
    sr: &ShortenerRelease,
    status: &mut ShortenerReleaseStatus,
    owner: OwnerReference,
) {
    let name = sr.name_any();
    let Some(ns) = sr.namespace() else {
        return;
    };
    let Some(incident) = status.last_incident.as_mut() else {
        return;
    };
    let record = status
        .history
        .iter()
        .find(|r| r.revision == incident.revision);
    let image = record.map(|r| r.image.clone());
    let mut excerpt = String::new();
    if sr.spec.incident.capture_logs
        && let Some(hash) = record.map(|r| r.pod_template_hash.clone())
    {
        let read = self::excerpt(client, sr, &ns, &hash);
        match tokio::time::timeout(std::time::Duration::from_secs(5), read).await {
            Ok(Ok(text)) => excerpt = text,
            Ok(Err(e)) => warn!(error = %e, "incident logs unreadable"),
            Err(_) => warn!("incident log capture timed out"),
        }
    }
    if !excerpt.is_empty() {
        match store(client, &ns, &name, incident, &excerpt, owner).await {
            Ok(cm) => incident.log_excerpt_ref = Some(cm),
            Err(e) => warn!(error = %e, "could not store the incident log excerpt"),
        }
    }
    let incident = incident.clone();
    alert(
        client,
        webhook,
        sr,
        &ns,
        &incident,
        image,
        &status.message,
        &excerpt,
    )
    .await;
    let kept: Vec<i64> = status.history.iter().map(|r| r.revision).collect();
    prune(client, &ns, &name, &kept).await;
}

pub fn config_map_name(release: &str, revision: i64) -> String {
    format!("{release}-incident-{revision}")
}

/// Reads and filters the logs of the revision's pods (current and previous containers):
/// the end of each log since the revision started ([`tail`]). Line numbers count from the
/// start of what was read.
pub async fn excerpt(
    client: &Client,
    sr: &ShortenerRelease,
    ns: &str,
    hash: &str,
) -> kube::Result<String> {
    let name = sr.name_any();
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let list = pods
        .list(
            &ListParams::default()
                .labels(&format!("{LABEL_INSTANCE}={name},{LABEL_REVISION}={hash}")),
        )
        .await?;
    let config = || FilterConfig {
        context_lines: usize::try_from(sr.spec.incident.context_lines).unwrap_or(3),
        max_lines: usize::try_from(sr.spec.incident.max_lines).unwrap_or(200),
        ..FilterConfig::default()
    };
    // Since the revision started (less a margin for clock skew between the operator and
    // the nodes): earlier lines are not its failure.
    let since = sr.status.as_ref().and_then(|st| {
        let started = st
            .history
            .iter()
            .find(|r| r.pod_template_hash == hash)?
            .started_at;
        started
            .checked_sub(jiff::SignedDuration::from_secs(30))
            .ok()
    });
    let mut out = String::new();
    for pod in &list.items {
        let pod_name = pod.name_any();
        for previous in [true, false] {
            let params = tail::log_params(previous, since);
            // No previous container, or a pod already gone: nothing to read there.
            let Ok(stream) = pods.log_stream(&pod_name, &params).await else {
                continue;
            };
            let Ok(log) = tail::read_tail(stream, tail::KEEP_BYTES).await else {
                continue;
            };
            let excerpt = filter_bytes(&log.bytes, config());
            if excerpt.is_empty() {
                continue;
            }
            let which = if previous {
                " (previous container)"
            } else {
                ""
            };
            out.push_str(&format!("==> pod/{pod_name}{which} <==\n"));
            out.push_str(&excerpt.render());
            if !out.ends_with('\n') {
                out.push('\n');
            }
        }
    }
    Ok(out)
}

/// Stores the excerpt in `<release>-incident-<revision>`, owned by the release.
pub async fn store(
    client: &Client,
    ns: &str,
    release: &str,
    incident: &LastIncident,
    excerpt: &str,
    owner: OwnerReference,
) -> kube::Result<String> {
    let cm_name = config_map_name(release, incident.revision);
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(cm_name.clone()),
            namespace: Some(ns.into()),
            labels: Some(resources::base_labels(release)),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            ("excerpt".to_string(), excerpt.to_string()),
            ("reason".to_string(), incident.reason.clone()),
            ("revision".to_string(), incident.revision.to_string()),
        ])),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .patch(
            &cm_name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&cm),
        )
        .await?;
    Ok(cm_name)
}

/// Deletes incident ConfigMaps of revisions no longer in `status.history`, so their
/// number follows `spec.rollback.revisionHistoryLimit`.
pub async fn prune(client: &Client, ns: &str, release: &str, kept_revisions: &[i64]) {
    let api = Api::<ConfigMap>::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&format!("{LABEL_INSTANCE}={release}"));
    let Ok(list) = api.list(&lp).await else {
        return;
    };
    for cm in list.items {
        let cm_name = cm.name_any();
        let Some(revision) = cm_name
            .strip_prefix(&format!("{release}-incident-"))
            .and_then(|r| r.parse::<i64>().ok())
        else {
            continue;
        };
        if !kept_revisions.contains(&revision)
            && let Err(e) = api.delete(&cm_name, &Default::default()).await
        {
            warn!(config_map = %cm_name, error = %e, "could not prune incident ConfigMap");
        }
    }
}

/// Posts the incident to the webhook named by `spec.incident.webhook`, in the background.
#[allow(clippy::too_many_arguments)]
pub async fn alert(
    client: &Client,
    sender: &WebhookSender,
    sr: &ShortenerRelease,
    ns: &str,
    incident: &LastIncident,
    image: Option<String>,
    message: &str,
    excerpt: &str,
) {
    let Some(url) = webhook_url(client, sr, ns).await else {
        return;
    };
    let summary = Incident {
        namespace: ns.to_string(),
        release: sr.name_any(),
        revision: incident.revision,
        image,
        reason: incident.reason.clone(),
        message: Some(message.to_string()),
        detected_at: Some(incident.detected_at),
        rolled_back_at: incident.rolled_back_at,
        recovered_at: incident.recovered_at,
        downtime_seconds: Some(incident.downtime_seconds),
        failed_requests: Some(incident.failed_requests),
        excerpt_config_map: incident.log_excerpt_ref.clone(),
    };
    let payload = build_payload(&summary, excerpt, PayloadLimits::default());
    // Fire and forget: delivery, retries and logging happen in the spawned task.
    drop(sender.spawn(url, payload));
}

/// The URL in the Secret named by `spec.incident.webhook`, if one is configured and valid.
async fn webhook_url(client: &Client, sr: &ShortenerRelease, ns: &str) -> Option<WebhookUrl> {
    let webhook = sr.spec.incident.webhook.as_ref()?;
    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    let raw = match secrets.get(&webhook.secret_ref.name).await {
        Ok(secret) => secret
            .data
            .and_then(|d| d.get(&webhook.secret_ref.key).cloned())
            .and_then(|v| String::from_utf8(v.0).ok()),
        Err(e) => {
            warn!(secret = %webhook.secret_ref.name, error = %e, "webhook Secret unreadable");
            return None;
        }
    };
    let url = raw.and_then(|r| WebhookUrl::parse(&r).ok());
    if url.is_none() {
        warn!(secret = %webhook.secret_ref.name, key = %webhook.secret_ref.key,
            "webhook Secret key missing or not an http(s) URL");
    }
    url
}

/// Posts a success or Blocked [`Notice`] to the same webhook as incidents, in the
/// background. Called after the status that records the transition is written, so a
/// restart does not post it again (at most once; a crash in between loses it).
pub async fn announce(
    client: &Client,
    sender: &WebhookSender,
    sr: &ShortenerRelease,
    status: &ShortenerReleaseStatus,
    notice: &Notice,
) {
    let Some(ns) = sr.namespace() else {
        return;
    };
    let revision = if notice.event == EVENT_SUCCEEDED {
        status.stable_revision
    } else {
        status.current_revision.or(status.stable_revision)
    }
    .unwrap_or(0);
    let image = status
        .history
        .iter()
        .find(|r| r.revision == revision)
        .map(|r| r.image.clone());
    let Some(url) = webhook_url(client, sr, &ns).await else {
        return;
    };
    let payload = build_notice(notice, &ns, &sr.name_any(), revision, image);
    drop(sender.spawn(url, payload));
}
