//! A pod's state as a failure signal (pure). Fail fast where waiting cannot help: an image
//! that cannot be pulled, a container that exits. A container still starting is no failure
//! (the startup probe holds its liveness probe off); one the kubelet killed because its
//! startup probe never passed is, with a reason that says so.
//!
//! The pod's status does not say which probe had a container killed (the kubelet's
//! `Killing` Event does, and the operator may not read Events). The status is enough here:
//! an instance ended by SIGTERM or SIGKILL (exit code 143/137, not `OOMKilled`) that ran
//! about as long as its startup budget (from the pod's own startup probe) was killed by
//! that probe. A crash on start exits within the first second and is `CrashLoop`. A
//! liveness kill that happens to fall in the same window (the budget up to the budget plus
//! the termination grace period) would be named a startup probe failure too.

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{
    Container, ContainerStateTerminated, ContainerStatus, Pod, Probe,
};
use kube::ResourceExt;

use crate::api::FailureReason;
use crate::resources::probes::{HEALTH_PATH, startup_budget_seconds};
use crate::rollout::PodFailure;

/// The kubelet's default `terminationGracePeriodSeconds`.
const DEFAULT_GRACE_SECONDS: i64 = 30;
/// Timestamps in a pod's status have whole seconds; the kubelet's probe ticks add up to one
/// period of jitter.
const CLOCK_SLACK_SECONDS: i64 = 2;

/// How a container instance ended, in the terms of the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Killed for not answering its startup probe within the budget: `StartupProbeFailed`.
    StartupProbeKilled { ran: i64, budget: i64 },
    /// Exited by itself (any code, 0 too: it should keep running), or killed for another
    /// reason: `CrashLoop`.
    Crashed,
}

/// The first failure signal of a pod. A restart counts at once: waiting for the
/// CrashLoopBackOff state would cost the backoff delay.
pub fn pod_failure(pod: &Pod) -> Option<PodFailure> {
    let status = pod.status.as_ref()?;
    let name = pod.name_any();
    if status.phase.as_deref() == Some("Failed") {
        return Some(PodFailure {
            reason: FailureReason::CrashLoop,
            message: format!("pod {name} failed"),
        });
    }
    let grace = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(DEFAULT_GRACE_SECONDS);
    let containers = pod.spec.as_ref().map(|s| &s.containers[..]).unwrap_or(&[]);
    status.container_statuses.iter().flatten().find_map(|cs| {
        let startup = containers
            .iter()
            .find(|c| c.name == cs.name)
            .and_then(|c: &Container| c.startup_probe.as_ref());
        container_failure(cs, startup, grace).map(|(reason, detail)| PodFailure {
            reason,
            message: format!("pod {name}: {detail}"),
        })
    })
}

/// One container's failure signal: its reason and a sentence saying what happened.
pub fn container_failure(
    cs: &ContainerStatus,
    startup: Option<&Probe>,
    grace_seconds: i64,
) -> Option<(FailureReason, String)> {
    let waiting = cs
        .state
        .as_ref()
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.reason.as_deref())
        .unwrap_or_default();
    match waiting {
        "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull" => {
            return Some((FailureReason::ImagePullFailed, waiting.to_string()));
        }
        "CreateContainerError" | "RunContainerError" => {
            return Some((FailureReason::CrashLoop, waiting.to_string()));
        }
        _ => {}
    }
    // The instance that ended: the current one, else the one before a restart.
    let ended = cs
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .or_else(|| cs.last_state.as_ref().and_then(|s| s.terminated.as_ref()));
    let restarts = cs.restart_count;
    match ended {
        Some(t) => Some(match classify_exit(t, startup, grace_seconds) {
            Exit::StartupProbeKilled { ran, budget } => (
                FailureReason::StartupProbeFailed,
                format!(
                    "container killed after {ran}s: it did not answer its startup probe \
                     (GET {}) within its {budget}s budget (spec.healthCheck.startupSeconds; \
                     restarts: {restarts})",
                    startup_path(startup)
                ),
            ),
            Exit::Crashed => (
                FailureReason::CrashLoop,
                format!(
                    "container exited with code {} ({}; restarts: {restarts})",
                    t.exit_code,
                    t.reason.as_deref().unwrap_or("no reason given")
                ),
            ),
        }),
        None if waiting == "CrashLoopBackOff" => Some((
            FailureReason::CrashLoop,
            format!("container exited ({waiting}; restarts: {restarts})"),
        )),
        None if restarts > 0 => Some((
            FailureReason::CrashLoop,
            format!("container exited (restarts: {restarts})"),
        )),
        None => None,
    }
}

/// Whether an ended instance was killed by its startup probe (see the module doc).
pub fn classify_exit(
    t: &ContainerStateTerminated,
    startup: Option<&Probe>,
    grace_seconds: i64,
) -> Exit {
    let Some(probe) = startup else {
        return Exit::Crashed;
    };
    let signalled = matches!(t.exit_code, 137 | 143) || matches!(t.signal, Some(9 | 15));
    if !signalled || t.reason.as_deref() == Some("OOMKilled") {
        return Exit::Crashed;
    }
    let (Some(started), Some(finished)) = (t.started_at.as_ref(), t.finished_at.as_ref()) else {
        return Exit::Crashed;
    };
    let ran = finished.0.as_second() - started.0.as_second();
    let budget = startup_budget_seconds(probe);
    // The last failing probe runs one period before the budget's end (the first runs at
    // once); the container then has up to its grace period to stop.
    let period = i64::from(probe.period_seconds.unwrap_or(10).max(1));
    let earliest = budget - period - CLOCK_SLACK_SECONDS;
    let latest = budget + grace_seconds.max(0) + CLOCK_SLACK_SECONDS;
    if (earliest..=latest).contains(&ran) {
        Exit::StartupProbeKilled { ran, budget }
    } else {
        Exit::Crashed
    }
}

fn startup_path(startup: Option<&Probe>) -> &str {
    startup
        .and_then(|p| p.http_get.as_ref())
        .and_then(|g| g.path.as_deref())
        .unwrap_or(HEALTH_PATH)
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

#[cfg(test)]
#[path = "classify_tests.rs"]
mod tests;
