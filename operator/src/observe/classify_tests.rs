use k8s_openapi::api::core::v1::HTTPGetAction;
use serde_json::{Value, json};

use super::*;

const T0: &str = "2026-01-01T00:00:00Z";

fn at(seconds: i64) -> String {
    let t: k8s_openapi::jiff::Timestamp = T0.parse().unwrap();
    (t + k8s_openapi::jiff::SignedDuration::from_secs(seconds)).to_string()
}

fn terminated(code: i32, ran: i64, reason: &str) -> Value {
    json!({"exitCode": code, "reason": reason, "startedAt": T0, "finishedAt": at(ran)})
}

fn status(restarts: i32, state: Value, last: Option<Value>) -> Value {
    let mut s = json!({"name": "shortener", "image": "x", "imageID": "", "ready": false,
        "restartCount": restarts, "state": state});
    if let Some(l) = last {
        s["lastState"] = json!({"terminated": l});
    }
    s
}

/// A pod of the operator's making: one container whose startup probe has `budget` failures
/// every second (none: no startup probe).
fn pod(budget: Option<i32>, grace: Option<i64>, statuses: Vec<Value>) -> Pod {
    let mut container = json!({"name": "shortener", "image": "x"});
    if let Some(b) = budget {
        container["startupProbe"] = json!({"httpGet": {"path": "/healthz", "port": 8080},
            "periodSeconds": 1, "failureThreshold": b});
    }
    let mut spec = json!({"containers": [container]});
    if let Some(g) = grace {
        spec["terminationGracePeriodSeconds"] = json!(g);
    }
    serde_json::from_value(json!({
        "metadata": {"name": "web-abc-1"},
        "spec": spec,
        "status": {"phase": "Running", "containerStatuses": statuses},
    }))
    .unwrap()
}

fn reason(p: &Pod) -> Option<FailureReason> {
    pod_failure(p).map(|f| f.reason)
}

fn waiting(reason: &str) -> Value {
    json!({"waiting": {"reason": reason}})
}

#[test]
fn waiting_reasons() {
    let cases = [
        ("ErrImagePull", Some(FailureReason::ImagePullFailed)),
        ("ImagePullBackOff", Some(FailureReason::ImagePullFailed)),
        ("InvalidImageName", Some(FailureReason::ImagePullFailed)),
        ("ErrImageNeverPull", Some(FailureReason::ImagePullFailed)),
        ("CreateContainerError", Some(FailureReason::CrashLoop)),
        ("RunContainerError", Some(FailureReason::CrashLoop)),
        ("CrashLoopBackOff", Some(FailureReason::CrashLoop)),
        ("ContainerCreating", None),
        ("PodInitializing", None),
    ];
    for budget in [None, Some(60)] {
        for (w, want) in cases {
            let p = pod(budget, None, vec![status(0, waiting(w), None)]);
            assert_eq!(reason(&p), want, "{w}, startup probe {budget:?}");
        }
    }
}

#[test]
fn no_status_healthy_and_starting_pods_are_no_failure() {
    let bare: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}})).unwrap();
    assert_eq!(reason(&bare), None);
    let running = json!({"running": {"startedAt": T0}});
    // Still starting (the startup probe has not passed), or serving: no signal.
    assert_eq!(
        reason(&pod(Some(60), None, vec![status(0, running.clone(), None)])),
        None
    );
    assert_eq!(
        reason(&pod(None, None, vec![status(0, running, None)])),
        None
    );
    assert_eq!(reason(&pod(Some(60), None, vec![])), None);
}

#[test]
fn failed_phase_is_a_crash_loop() {
    let mut p = pod(Some(60), None, vec![]);
    p.status.as_mut().unwrap().phase = Some("Failed".into());
    assert_eq!(reason(&p), Some(FailureReason::CrashLoop));
}

#[test]
fn a_restart_without_details_is_a_crash_loop() {
    let p = pod(
        Some(60),
        None,
        vec![status(1, json!({"running": {}}), None)],
    );
    let f = pod_failure(&p).unwrap();
    assert_eq!(f.reason, FailureReason::CrashLoop);
    assert_eq!(f.message, "pod web-abc-1: container exited (restarts: 1)");
}

/// Every way a container instance can end, with and without a startup probe, before,
/// within and after the window a startup probe's kill falls in.
#[test]
fn ended_instances_exhaustively() {
    use FailureReason::{CrashLoop, StartupProbeFailed};
    // budget 5 s, period 1 s, grace 30 s: a startup kill ends 2..=37 s after the start.
    let rans = [0, 1, 2, 4, 5, 6, 20, 35, 37, 38, 300];
    let in_window = |ran: i64| (2..=37).contains(&ran);
    let ends = [
        (143, "Error", true),
        (137, "Error", true),
        (137, "OOMKilled", false),
        (0, "Completed", false),
        (1, "Error", false),
        (2, "Error", false),
        (128, "StartError", false),
    ];
    for (code, why, killed) in ends {
        for ran in rans {
            for budget in [None, Some(5)] {
                let want = if budget.is_some() && killed && in_window(ran) {
                    StartupProbeFailed
                } else {
                    CrashLoop
                };
                let t = terminated(code, ran, why);
                // Seen as the current state (the kubelet has not restarted it yet), in
                // lastState after a restart, and in lastState while backing off.
                let shapes = [
                    status(0, json!({"terminated": t.clone()}), None),
                    status(1, json!({"running": {}}), Some(t.clone())),
                    status(3, waiting("CrashLoopBackOff"), Some(t.clone())),
                    status(0, waiting("ContainerCreating"), Some(t.clone())),
                ];
                for (i, s) in shapes.into_iter().enumerate() {
                    let p = pod(budget, None, vec![s]);
                    assert_eq!(
                        reason(&p),
                        Some(want),
                        "exit {code} {why} after {ran}s, budget {budget:?}, shape {i}"
                    );
                }
            }
        }
    }
}

#[test]
fn the_signal_field_counts_like_the_exit_code() {
    let probe = Probe {
        period_seconds: Some(1),
        failure_threshold: Some(5),
        ..Default::default()
    };
    let t = |code: i32, signal: Option<i32>| ContainerStateTerminated {
        exit_code: code,
        signal,
        started_at: Some(serde_json::from_value(json!(T0)).unwrap()),
        finished_at: Some(serde_json::from_value(json!(at(5))).unwrap()),
        ..Default::default()
    };
    let killed = Exit::StartupProbeKilled { ran: 5, budget: 5 };
    assert_eq!(classify_exit(&t(0, Some(15)), Some(&probe), 30), killed);
    assert_eq!(classify_exit(&t(0, Some(9)), Some(&probe), 30), killed);
    assert_eq!(
        classify_exit(&t(1, Some(6)), Some(&probe), 30),
        Exit::Crashed
    );
    assert_eq!(classify_exit(&t(1, None), Some(&probe), 30), Exit::Crashed);
    // Without timestamps the run time is unknown: not taken for the probe's kill.
    let mut bare = t(143, None);
    bare.finished_at = None;
    assert_eq!(classify_exit(&bare, Some(&probe), 30), Exit::Crashed);
}

#[test]
fn the_window_follows_the_pods_grace_period_and_budget() {
    let killed_after = |ran: i64, budget: i32, grace: Option<i64>| {
        let t = terminated(137, ran, "Error");
        reason(&pod(
            Some(budget),
            grace,
            vec![status(1, json!({"running": {}}), Some(t))],
        ))
    };
    // Default grace 30 s: SIGKILLed 30 s after the SIGTERM.
    // Window: budget - period - 2 ..= budget + grace + 2.
    assert_eq!(
        killed_after(92, 60, None),
        Some(FailureReason::StartupProbeFailed)
    );
    assert_eq!(killed_after(93, 60, None), Some(FailureReason::CrashLoop));
    assert_eq!(
        killed_after(92, 60, Some(5)),
        Some(FailureReason::CrashLoop)
    );
    assert_eq!(
        killed_after(67, 60, Some(5)),
        Some(FailureReason::StartupProbeFailed)
    );
    assert_eq!(
        killed_after(68, 60, Some(5)),
        Some(FailureReason::CrashLoop)
    );
    assert_eq!(
        killed_after(57, 60, Some(5)),
        Some(FailureReason::StartupProbeFailed)
    );
    assert_eq!(
        killed_after(56, 60, Some(5)),
        Some(FailureReason::CrashLoop)
    );
}

#[test]
fn messages_name_what_happened() {
    let p = pod(
        Some(5),
        None,
        vec![status(
            1,
            json!({"running": {}}),
            Some(terminated(143, 5, "Error")),
        )],
    );
    let f = pod_failure(&p).unwrap();
    assert_eq!(f.reason, FailureReason::StartupProbeFailed);
    assert_eq!(
        f.message,
        "pod web-abc-1: container killed after 5s: it did not answer its startup probe \
         (GET /healthz) within its 5s budget (spec.healthCheck.startupSeconds; restarts: 1)"
    );
    let p = pod(
        Some(5),
        None,
        vec![status(
            1,
            json!({"running": {}}),
            Some(terminated(1, 0, "Error")),
        )],
    );
    assert_eq!(
        pod_failure(&p).unwrap().message,
        "pod web-abc-1: container exited with code 1 (Error; restarts: 1)"
    );
    let probe = Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/started".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(startup_path(Some(&probe)), "/started");
    assert_eq!(startup_path(None), "/healthz");
}

#[test]
fn the_first_failing_container_speaks_for_the_pod() {
    let p = pod(
        Some(5),
        None,
        vec![
            status(0, json!({"running": {}}), None),
            status(0, waiting("ErrImagePull"), None),
            status(2, json!({"running": {}}), None),
        ],
    );
    assert_eq!(reason(&p), Some(FailureReason::ImagePullFailed));
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
