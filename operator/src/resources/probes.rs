//! The probes of the shortener container (pure): a startup probe that holds liveness off
//! until the process first answers, then readiness (traffic) and liveness (restarts).
//! The same numbers are documented on `spec.healthCheck` (`kubectl explain`) and in the
//! operator README; `observe` reads the startup budget back from a pod's startup probe.

use k8s_openapi::api::core::v1::{HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::ShortenerReleaseSpec;

/// Path of the startup and liveness probes: the process serves HTTP.
pub const HEALTH_PATH: &str = "/healthz";
/// Startup probe: every second, `spec.startup_seconds()` failures in a row.
pub const STARTUP_PERIOD_SECONDS: i32 = 1;
/// Readiness: every second, one failure takes the pod out of its Services, so fast failure
/// detection and draining are a matter of seconds.
pub const READINESS_PERIOD_SECONDS: i32 = 1;
pub const READINESS_FAILURES: i32 = 1;
/// Liveness: every 2 seconds, 3 failures in a row (about 6 s) restart the container.
pub const LIVENESS_PERIOD_SECONDS: i32 = 2;
pub const LIVENESS_FAILURES: i32 = 3;
/// Every probe's timeout.
pub const PROBE_TIMEOUT_SECONDS: i32 = 1;

/// The container's probes.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerProbes {
    pub startup: Probe,
    pub readiness: Probe,
    pub liveness: Probe,
}

pub fn container_probes(spec: &ShortenerReleaseSpec) -> ContainerProbes {
    let http = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::Int(spec.port),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(PROBE_TIMEOUT_SECONDS),
        ..Default::default()
    };
    // failureThreshold x periodSeconds is the time the container gets to first answer.
    let startup_failures =
        (spec.startup_seconds() + STARTUP_PERIOD_SECONDS - 1) / STARTUP_PERIOD_SECONDS;
    ContainerProbes {
        startup: http(HEALTH_PATH, STARTUP_PERIOD_SECONDS, startup_failures),
        readiness: http(
            &spec.health_check.readiness_path,
            READINESS_PERIOD_SECONDS,
            READINESS_FAILURES,
        ),
        liveness: http(HEALTH_PATH, LIVENESS_PERIOD_SECONDS, LIVENESS_FAILURES),
    }
}

/// Seconds a startup probe lets a container go unanswered before the kubelet kills it:
/// `initialDelaySeconds + periodSeconds x failureThreshold` (API defaults: 0, 10, 3).
pub fn startup_budget_seconds(probe: &Probe) -> i64 {
    let delay = i64::from(probe.initial_delay_seconds.unwrap_or(0).max(0));
    let period = i64::from(probe.period_seconds.unwrap_or(10).max(1));
    let failures = i64::from(probe.failure_threshold.unwrap_or(3).max(1));
    delay + period * failures
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> ShortenerReleaseSpec {
        serde_json::from_value(json).unwrap()
    }

    fn shape(p: &Probe) -> (String, i32, i32, i32, i32) {
        let get = p.http_get.clone().unwrap();
        let port = match get.port {
            IntOrString::Int(n) => n,
            IntOrString::String(_) => -1,
        };
        (
            get.path.unwrap(),
            port,
            p.period_seconds.unwrap(),
            p.failure_threshold.unwrap(),
            p.timeout_seconds.unwrap(),
        )
    }

    #[test]
    fn default_probes() {
        let p = container_probes(&spec(serde_json::json!({"image": "shortener:v1"})));
        assert_eq!(shape(&p.startup), ("/healthz".into(), 8080, 1, 60, 1));
        assert_eq!(shape(&p.readiness), ("/readyz".into(), 8080, 1, 1, 1));
        assert_eq!(shape(&p.liveness), ("/healthz".into(), 8080, 2, 3, 1));
        for probe in [&p.startup, &p.readiness, &p.liveness] {
            assert_eq!(probe.initial_delay_seconds, None, "no blind delay");
        }
        assert_eq!(startup_budget_seconds(&p.startup), 60);
    }

    #[test]
    fn startup_budget_follows_the_spec_and_the_deadline() {
        let cases = [
            (
                serde_json::json!({"image": "s:v1", "healthCheck": {"startupSeconds": 5}}),
                5,
            ),
            (
                serde_json::json!({"image": "s:v1", "progressDeadlineSeconds": 30}),
                30,
            ),
            (
                serde_json::json!({"image": "s:v1", "progressDeadlineSeconds": 900,
                    "healthCheck": {"startupSeconds": 600}}),
                600,
            ),
        ];
        for (json, want) in cases {
            let p = container_probes(&spec(json.clone()));
            assert_eq!(p.startup.failure_threshold, Some(want), "{json}");
            assert_eq!(
                startup_budget_seconds(&p.startup),
                i64::from(want),
                "{json}"
            );
        }
    }

    #[test]
    fn port_and_readiness_path_come_from_the_spec() {
        let p = container_probes(&spec(serde_json::json!({"image": "s:v1", "port": 9000,
            "healthCheck": {"readinessPath": "/ready"}})));
        assert_eq!(shape(&p.readiness).0, "/ready");
        for probe in [&p.startup, &p.readiness, &p.liveness] {
            assert_eq!(shape(probe).1, 9000);
        }
    }

    #[test]
    fn budget_of_a_probe_applies_api_defaults() {
        let bare = Probe::default();
        assert_eq!(startup_budget_seconds(&bare), 30);
        let delayed = Probe {
            initial_delay_seconds: Some(10),
            period_seconds: Some(2),
            failure_threshold: Some(5),
            ..Default::default()
        };
        assert_eq!(startup_budget_seconds(&delayed), 20);
    }
}
