//! `make bench-cluster` (part of `make bench`, never of `make test`): on testenv, what a bad
//! release costs users with the operator and with a plain Deployment, and what the operator
//! itself costs at 1, 100 and 1,000 releases. Writes JSON to `bench-results/`;
//! `scripts/bench-report.py` turns it into Markdown and PNG timelines.
//!
//! Figures are measured and written, never asserted: the tests fail only when the harness
//! cannot do its job (cluster down, a setup that never becomes ready).
//!
//! Tunables (environment): `BENCH_REPS` (repetitions per failure kind, default 3),
//! `BENCH_WINDOW_SECS` (how long a release is watched, default 45), `BENCH_KINDS` (comma
//! list of kinds to run, default all), `BENCH_COST_COUNTS` (default `1,100,1000`),
//! `BENCH_OUT` (default `bench-results`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use operator::api::{Outcome, Phase, ShortenerRelease};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use support::env::{Env, NAME, cluster, create_namespace};
use support::traffic::one_request;
use support::{eventually, root};

/// Requests start every this often, whatever the previous ones do (open loop), so every
/// system sees the same offered load however slow or broken it is.
const ARRIVAL: Duration = Duration::from_millis(50);
/// A create-and-follow pair slower than this is a failed request (the latency kind's harm).
const SLO: Duration = Duration::from_millis(1000);
/// Per HTTP call; a hung call ends as a failure.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Traffic before the release, so the timeline shows the steady state first.
const WARMUP: Duration = Duration::from_secs(2);
/// Once a run has settled and works, traffic goes on this long (restore must hold).
const TAIL: Duration = Duration::from_secs(6);
/// Progress deadline of the operator's releases and of the baseline Deployments alike.
const PROGRESS_DEADLINE: i64 = 30;
/// The token the baseline Deployments accept for creates (the shortener's operator token).
const BASELINE_TOKEN: &str = "bench-baseline-token";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn out_dir() -> std::path::PathBuf {
    let dir = root().join(std::env::var("BENCH_OUT").unwrap_or_else(|_| "bench-results".into()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A bad (or good) release: the image and the shortener's fault injection.
struct Kind {
    name: &'static str,
    image: &'static str,
    fault: Option<&'static str>,
    what: &'static str,
}

const KINDS: [Kind; 7] = [
    Kind {
        name: "healthy",
        image: "shortener:v2",
        fault: None,
        what: "a good release",
    },
    Kind {
        name: "shorten-500",
        image: "shortener:v2",
        fault: Some("shorten-500"),
        what: "creates and redirects answer 500; probes pass",
    },
    Kind {
        name: "crash-on-start",
        image: "shortener:v2",
        fault: Some("crash-on-start"),
        what: "the process exits at start",
    },
    Kind {
        name: "image-pull",
        image: "registry.invalid/not-mapped:v2",
        fault: None,
        what: "an image that cannot be pulled",
    },
    Kind {
        name: "never-ready",
        image: "shortener:v2",
        fault: Some("never-ready"),
        what: "/readyz never passes; the API works",
    },
    Kind {
        name: "errors-after",
        image: "shortener:v2",
        fault: Some("errors-after=8s"),
        what: "500s from 8 s after start; probes pass",
    },
    Kind {
        name: "latency",
        image: "shortener:v2",
        fault: Some("latency=800ms"),
        what: "every API call takes 800 ms more; probes pass",
    },
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum System {
    Operator,
    DeploymentReadyz,
    DeploymentHealthz,
}

impl System {
    const ALL: [System; 3] = [
        System::Operator,
        System::DeploymentReadyz,
        System::DeploymentHealthz,
    ];
    fn name(self) -> &'static str {
        match self {
            System::Operator => "operator",
            System::DeploymentReadyz => "deployment-readyz",
            System::DeploymentHealthz => "deployment-healthz",
        }
    }
}

/// One request pair: when it started (ms from the release), whether it worked, how long.
#[derive(Clone, Copy)]
struct Sample {
    at_ms: i64,
    ok: bool,
    latency_ms: u64,
}

/// The open-loop client: one create-and-follow pair every [`ARRIVAL`] against `addr`.
struct Load {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(addr: String, token: String, t0: Instant) -> Load {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, st) = (samples.clone(), stop.clone());
        let task = tokio::spawn(async move {
            // A new connection per request, as in the e2e client: a kept-alive connection
            // would stay on the pod it first reached.
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(CALL_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            let mut tick = tokio::time::interval(ARRIVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut inflight = Vec::new();
            let mut i = 0u64;
            while !st.load(std::sync::atomic::Ordering::SeqCst) {
                tick.tick().await;
                i += 1;
                let (http, addr, token, s) = (http.clone(), addr.clone(), token.clone(), s.clone());
                inflight.push(tokio::spawn(async move {
                    let start = Instant::now();
                    let ok = one_request(&http, &addr, &token, i).await;
                    let took = start.elapsed();
                    let at_ms = signed_ms(t0, start);
                    s.lock().await.push(Sample {
                        at_ms,
                        ok: ok && took <= SLO,
                        latency_ms: took.as_millis() as u64,
                    });
                }));
                inflight.retain(|h: &tokio::task::JoinHandle<()>| !h.is_finished());
            }
            for h in inflight {
                let _ = h.await;
            }
        });
        Load {
            samples,
            stop,
            task,
        }
    }

    /// Whether no pair that started in the last `d` has failed (so far).
    async fn quiet_for(&self, d: Duration, t0: Instant) -> bool {
        let since = signed_ms(t0, Instant::now()) - d.as_millis() as i64;
        !self
            .samples
            .lock()
            .await
            .iter()
            .any(|s| !s.ok && s.at_ms >= since)
    }

    /// Done once settled and working for [`TAIL`]; a release that settled while failing
    /// (a bad rollout completed) is watched to the end of the window.
    async fn done(&self, settle_ms: Option<i64>, t0: Instant) -> bool {
        match settle_ms {
            Some(s) => {
                Instant::now() >= t0 + Duration::from_millis(s as u64) + TAIL
                    && self.quiet_for(TAIL, t0).await
            }
            None => false,
        }
    }

    async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.task.await;
        let mut v = self.samples.lock().await.clone();
        v.sort_by_key(|s| s.at_ms);
        v
    }
}

/// Milliseconds from `t0` to `t` (negative before `t0`).
fn signed_ms(t0: Instant, t: Instant) -> i64 {
    if t >= t0 {
        t.duration_since(t0).as_millis() as i64
    } else {
        -(t0.duration_since(t).as_millis() as i64)
    }
}

/// What one run of one system saw.
struct RunResult {
    samples: Vec<Sample>,
    events: Vec<(i64, String)>,
    detect_ms: Option<i64>,
    settle_ms: Option<i64>,
    outcome: String,
}

/// Waits until 5 pairs in a row have worked through `addr` (the setup is serving).
async fn serving(addr: &str, token: &str) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(CALL_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut streak = 0;
    let mut i = 1_000_000u64;
    while streak < 5 {
        assert!(Instant::now() < deadline, "{addr} not serving after 90 s");
        i += 1;
        if one_request(&http, addr, token, i).await {
            streak += 1;
        } else {
            streak = 0;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The operator

fn operator_spec(env: &Env, image: &str, fault: Option<&str>, bake: i64) -> Value {
    let vars: Vec<(&str, &str)> = fault.map(|f| ("SHORTENER_FAULT", f)).into_iter().collect();
    let mut spec = env.spec(image, &vars);
    spec["progressDeadlineSeconds"] = json!(PROGRESS_DEADLINE);
    spec["analysis"]["bakeSeconds"] = json!(bake);
    spec["analysis"]["maxLatencyP99Ms"] = json!(500);
    spec
}

async fn run_operator(kind: &Kind, window: Duration) -> RunResult {
    let env = Env::new("bench-op").await;
    // v1 bakes briefly: only v2's bake is measured.
    env.apply(operator_spec(&env, "shortener:v1", None, 2))
        .await
        .unwrap();
    env.wait_outcome(1, Outcome::Promoted).await;
    env.wait_phase(Phase::Healthy, Duration::from_secs(60))
        .await;
    let addr = env.active_address().await;
    let token = env.api_token().await;
    serving(&addr, &token).await;

    let t0 = Instant::now() + WARMUP;
    let load = Load::start(addr, token, t0);
    tokio::time::sleep_until(t0.into()).await;
    env.apply(operator_spec(&env, kind.image, kind.fault, 12))
        .await
        .unwrap();
    let mut events = vec![(0, "release applied".to_string())];
    let (mut detect_ms, mut settle_ms) = (None, None);
    let mut last_phase = String::new();
    let mut outcome = "InProgress".to_string();
    let deadline = t0 + window;
    while Instant::now() < deadline {
        if let Ok(sr) = env.srs.get(NAME).await {
            let at = signed_ms(t0, Instant::now());
            if let Some(st) = sr.status.as_ref() {
                let phase = st.phase.as_str().to_string();
                if phase != last_phase {
                    events.push((at, phase.clone()));
                    last_phase = phase;
                }
                if let Some(r) = st.history.iter().find(|r| r.revision == 2) {
                    outcome = format!("{:?}", r.outcome);
                    if r.outcome == Outcome::Failed && detect_ms.is_none() {
                        detect_ms = Some(at);
                        events.push((
                            at,
                            format!("failed: {}", r.reason.clone().unwrap_or_default()),
                        ));
                    }
                    let done = matches!(r.outcome, Outcome::Promoted | Outcome::Failed);
                    let steady = matches!(
                        st.phase,
                        Phase::Healthy | Phase::RolledBack | Phase::Degraded | Phase::Blocked
                    );
                    if done && steady && settle_ms.is_none() {
                        settle_ms = Some(at);
                        events.push((at, "settled".into()));
                    }
                }
            }
        }
        if load.done(settle_ms, t0).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let samples = load.stop().await;
    env.cleanup().await;
    RunResult {
        samples,
        events,
        detect_ms,
        settle_ms,
        outcome,
    }
}

// ---------------------------------------------------------------------------------------
// Baselines: a plain Deployment and Service, rolling update (Kubernetes' defaults: 25 %
// surge, 25 % unavailable), the operator's pod settings, probes as the system says.

struct Baseline {
    client: Client,
    ns: String,
    store: std::path::PathBuf,
}

impl Baseline {
    async fn new(system: System) -> Baseline {
        let client = cluster().await;
        let ns = create_namespace(&client, &format!("bench-{}", system.name())).await;
        let store = root().join(format!(".testenv/e2e/{ns}.db"));
        Baseline { client, ns, store }
    }

    fn deployment(&self, system: System, image: &str, fault: Option<&str>) -> Value {
        let readiness = match system {
            System::DeploymentHealthz => "/healthz",
            _ => "/readyz",
        };
        let probe = |path: &str, period: i64, failures: i64| {
            json!({"httpGet": {"path": path, "port": 8080}, "periodSeconds": period,
                   "failureThreshold": failures, "timeoutSeconds": 1})
        };
        let mut env = vec![
            json!({"name": "SHORTENER_STORE", "value": self.store.display().to_string()}),
            json!({"name": "SHORTENER_PORT", "value": "8080"}),
            json!({"name": "SHORTENER_OPERATOR_TOKEN", "value": BASELINE_TOKEN}),
            json!({"name": "SHORTENER_SHUTDOWN_DELAY", "value": "5s"}),
        ];
        if let Some(f) = fault {
            env.push(json!({"name": "SHORTENER_FAULT", "value": f}));
        }
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": NAME},
            "spec": {
                "replicas": 2,
                "progressDeadlineSeconds": PROGRESS_DEADLINE,
                "selector": {"matchLabels": {"app": "bench-web"}},
                "template": {
                    "metadata": {"labels": {"app": "bench-web"}},
                    "spec": {"containers": [{
                        "name": "shortener",
                        "image": image,
                        "env": env,
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "startupProbe": probe("/healthz", 1, 30),
                        "readinessProbe": probe(readiness, 1, 1),
                        "livenessProbe": probe("/healthz", 2, 3),
                    }]},
                },
            },
        })
    }

    async fn apply(&self, d: Value) {
        Api::<Deployment>::namespaced(self.client.clone(), &self.ns)
            .patch(
                NAME,
                &PatchParams::apply("bench").force(),
                &Patch::Apply(&d),
            )
            .await
            .unwrap();
    }

    async fn service_address(&self) -> String {
        let svc = json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": NAME},
            "spec": {"selector": {"app": "bench-web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
        });
        let api = Api::<Service>::namespaced(self.client.clone(), &self.ns);
        let svc = api
            .patch(
                NAME,
                &PatchParams::apply("bench").force(),
                &Patch::Apply(&svc),
            )
            .await
            .unwrap();
        format!("{}:80", svc.spec.unwrap().cluster_ip.unwrap())
    }

    async fn cleanup(self) {
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(&self.ns, &DeleteParams::default())
            .await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.store.display()));
        }
    }
}

/// Whether a Deployment's rollout is complete, as `kubectl rollout status` decides it.
fn rollout_complete(d: &Deployment) -> bool {
    let Some(st) = d.status.as_ref() else {
        return false;
    };
    let want = d.spec.replicas.unwrap_or(1);
    st.observed_generation >= d.metadata.generation
        && st.updated_replicas.unwrap_or(0) == want
        && st.replicas.unwrap_or(0) == want
        && st.available_replicas.unwrap_or(0) == want
}

fn deadline_exceeded(d: &Deployment) -> bool {
    d.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.type_.as_deref() == Some("Progressing")
                    && c.status.as_deref() == Some("False")
                    && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            })
        })
}

async fn run_baseline(system: System, kind: &Kind, window: Duration) -> RunResult {
    let b = Baseline::new(system).await;
    let deployments = Api::<Deployment>::namespaced(b.client.clone(), &b.ns);
    b.apply(b.deployment(system, "shortener:v1", None)).await;
    let addr = b.service_address().await;
    eventually(
        "baseline v1 rolled out",
        Duration::from_secs(90),
        || async {
            let d = deployments.get(NAME).await.ok()?;
            rollout_complete(&d).then_some(())
        },
    )
    .await;
    serving(&addr, BASELINE_TOKEN).await;

    let t0 = Instant::now() + WARMUP;
    let load = Load::start(addr, BASELINE_TOKEN.to_string(), t0);
    tokio::time::sleep_until(t0.into()).await;
    b.apply(b.deployment(system, kind.image, kind.fault)).await;
    let mut events = vec![(0, "release applied".to_string())];
    let (mut detect_ms, mut settle_ms) = (None, None);
    let deadline = t0 + window;
    let mut last = (-1, -1);
    while Instant::now() < deadline {
        if let Ok(d) = deployments.get(NAME).await {
            let at = signed_ms(t0, Instant::now());
            let st = d.status.clone().unwrap_or_default();
            let counts = (
                st.updated_replicas.unwrap_or(0),
                st.available_replicas.unwrap_or(0),
            );
            if counts != last && d.metadata.generation == st.observed_generation {
                events.push((at, format!("updated {} available {}", counts.0, counts.1)));
                last = counts;
            }
            if deadline_exceeded(&d) && detect_ms.is_none() {
                detect_ms = Some(at);
                events.push((at, "ProgressDeadlineExceeded".into()));
            }
            if rollout_complete(&d) && settle_ms.is_none() {
                settle_ms = Some(at);
                events.push((at, "rollout complete".into()));
            }
        }
        if load.done(settle_ms, t0).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let samples = load.stop().await;
    let outcome = if settle_ms.is_some() {
        "RolledOut"
    } else if detect_ms.is_some() {
        "ProgressDeadlineExceeded"
    } else {
        "Stuck"
    };
    b.cleanup().await;
    RunResult {
        samples,
        events,
        detect_ms,
        settle_ms,
        outcome: outcome.into(),
    }
}

/// Failed pairs after the release, and how long from the first failure to the last one
/// (None: failures went on until the end of the run, so traffic was not restored).
fn failures_and_restore(samples: &[Sample]) -> (u64, u64, Option<i64>, Option<i64>) {
    let after: Vec<&Sample> = samples.iter().filter(|s| s.at_ms >= 0).collect();
    let failed = after.iter().filter(|s| !s.ok).count() as u64;
    let first = after.iter().find(|s| !s.ok).map(|s| s.at_ms);
    let last = after.iter().rev().find(|s| !s.ok).map(|s| s.at_ms);
    let end = after.last().map(|s| s.at_ms).unwrap_or(0);
    let restore = match (first, last) {
        (None, _) => Some(0),
        // Restored means the last [`TAIL`] of the run worked.
        (Some(f), Some(l)) if end - l >= TAIL.as_millis() as i64 / 2 => Some(l - f),
        _ => None,
    };
    (after.len() as u64, failed, first, restore)
}

/// Requests ok/failed per 100 ms, from the first sample.
fn bins(samples: &[Sample]) -> Value {
    let start = samples
        .first()
        .map(|s| s.at_ms)
        .unwrap_or(0)
        .div_euclid(100)
        * 100;
    let mut ok: BTreeMap<i64, u64> = BTreeMap::new();
    let mut failed: BTreeMap<i64, u64> = BTreeMap::new();
    for s in samples {
        let b = (s.at_ms - start).div_euclid(100);
        *(if s.ok { &mut ok } else { &mut failed })
            .entry(b)
            .or_default() += 1;
        (if s.ok { &mut failed } else { &mut ok })
            .entry(b)
            .or_default();
    }
    json!({
        "start_ms": start,
        "ok": ok.values().collect::<Vec<_>>(),
        "failed": failed.values().collect::<Vec<_>>(),
    })
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("")
        .trim()
        .to_string();
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": cpu,
        "memory_gib": (mem_kb as f64 / 1_048_576.0 * 10.0).round() / 10.0,
        "loadavg_at_start": load.trim(),
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: make bench-cluster"]
async fn bench_recovery() {
    let reps = env_num("BENCH_REPS", 3).max(1);
    let window = Duration::from_secs(env_num("BENCH_WINDOW_SECS", 45).max(20));
    let only: Option<Vec<String>> = std::env::var("BENCH_KINDS")
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let started = Instant::now();
    let mut machine = machine();
    let mut runs = Vec::new();
    for kind in KINDS
        .iter()
        .filter(|k| only.as_ref().is_none_or(|o| o.iter().any(|n| n == k.name)))
    {
        for rep in 0..reps {
            // The three systems side by side: same release, same load, same moment (the
            // machine's load is shared alike).
            let (op, ready, health) = tokio::join!(
                run_operator(kind, window),
                run_baseline(System::DeploymentReadyz, kind, window),
                run_baseline(System::DeploymentHealthz, kind, window),
            );
            for (system, r) in System::ALL.into_iter().zip([op, ready, health]) {
                let (requests, failed, first_failure, restore) = failures_and_restore(&r.samples);
                let mut lat: Vec<u64> = r
                    .samples
                    .iter()
                    .filter(|s| s.at_ms >= 0)
                    .map(|s| s.latency_ms)
                    .collect();
                lat.sort_unstable();
                let p99 = lat.get(lat.len().saturating_sub(1) * 99 / 100).copied();
                eprintln!(
                    "bench: {} {} rep {rep}: {failed}/{requests} failed, detect {:?} ms, restore {:?} ms, settle {:?} ms, {}",
                    kind.name,
                    system.name(),
                    r.detect_ms,
                    restore,
                    r.settle_ms,
                    r.outcome
                );
                runs.push(json!({
                    "kind": kind.name,
                    "system": system.name(),
                    "rep": rep,
                    "requests": requests,
                    "failed": failed,
                    "first_failure_ms": first_failure,
                    "restore_ms": restore,
                    "detect_ms": r.detect_ms,
                    "settle_ms": r.settle_ms,
                    "outcome": r.outcome,
                    "latency_p99_ms": p99,
                    "events": r.events.iter().map(|(t, e)| json!({"at_ms": t, "event": e})).collect::<Vec<_>>(),
                    // Only the first repetition's timeline is kept (the chart's).
                    "timeline": if rep == 0 { bins(&r.samples) } else { Value::Null },
                }));
            }
        }
    }
    machine["loadavg_at_end"] = json!(
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let doc = json!({
        "machine": machine,
        "settings": {
            "reps": reps,
            "window_s": window.as_secs(),
            "arrival_ms": ARRIVAL.as_millis() as u64,
            "slo_ms": SLO.as_millis() as u64,
            "call_timeout_ms": CALL_TIMEOUT.as_millis() as u64,
            "tail_s": TAIL.as_secs(),
            "progress_deadline_s": PROGRESS_DEADLINE,
            "operator_analysis": {"intervalSeconds": 1, "bakeSeconds": 12, "maxErrorRate": 5.0, "maxLatencyP99Ms": 500},
        },
        "kinds": KINDS.iter().map(|k| json!({"name": k.name, "image": k.image, "fault": k.fault, "what": k.what})).collect::<Vec<_>>(),
        "duration_s": started.elapsed().as_secs(),
        "runs": runs,
    });
    let path = out_dir().join("recovery.json");
    std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    eprintln!("bench: wrote {}", path.display());
}

// ---------------------------------------------------------------------------------------
// What the operator costs

/// Resident memory (bytes) and CPU time used so far (seconds) of process `pid`.
fn proc_usage(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are the 12th
    // and 13th of them.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    (rss_kb * 1024, ticks / clock_ticks())
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The operator's counters and reconcile-duration histogram, from its /metrics.
#[derive(Clone, Default)]
struct Scrape {
    reconciles: f64,
    kube_requests: f64,
    buckets: Vec<(f64, f64)>,
}

fn scrape(text: &str) -> Scrape {
    let mut s = Scrape::default();
    for line in text.lines() {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        if key == "shortener_operator_reconciles_total" {
            s.reconciles = v;
        } else if key == "shortener_operator_kube_requests_total" {
            s.kube_requests = v;
        } else if let Some(le) = key
            .strip_prefix("shortener_operator_reconcile_duration_seconds_bucket{le=\"")
            .and_then(|r| r.strip_suffix("\"}"))
        {
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::INFINITY)
            };
            s.buckets.push((le, v));
        }
    }
    s
}

/// `histogram_quantile` over the bucket deltas between two scrapes (linear within a bucket).
fn quantile(before: &Scrape, after: &Scrape, q: f64) -> Option<f64> {
    let deltas: Vec<(f64, f64)> = after
        .buckets
        .iter()
        .map(|(le, n)| {
            let b = before
                .buckets
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0.0, |(_, v)| *v);
            (*le, n - b)
        })
        .collect();
    let total = deltas.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for (le, n) in deltas {
        if n >= rank {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let in_bucket = n - prev.1;
            let frac = if in_bucket > 0.0 {
                (rank - prev.1) / in_bucket
            } else {
                1.0
            };
            return Some(prev.0 + (le - prev.0) * frac);
        }
        prev = (le, n);
    }
    None
}

/// One measured stretch of the operator's life.
async fn measure<F, Fut>(env: &Env, what: &str, count: usize, work: F) -> Value
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let pid = env.operator.id().unwrap();
    let m0 = scrape(&env.operator_metrics().await);
    let (_, cpu0) = proc_usage(pid);
    let t = Instant::now();
    let mut peak = 0u64;
    let sampler = async {
        loop {
            peak = peak.max(proc_usage(pid).0);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    tokio::select! {
        _ = work() => {}
        _ = sampler => {}
    }
    let secs = t.elapsed().as_secs_f64();
    let (rss, cpu1) = proc_usage(pid);
    let m1 = scrape(&env.operator_metrics().await);
    let reconciles = m1.reconciles - m0.reconciles;
    let requests = m1.kube_requests - m0.kube_requests;
    let r = json!({
        "releases": count,
        "phase": what,
        "seconds": (secs * 100.0).round() / 100.0,
        "cpu_percent_of_one_core": ((cpu1 - cpu0) / secs * 1000.0).round() / 10.0,
        "rss_mib": (rss as f64 / 1_048_576.0 * 10.0).round() / 10.0,
        "peak_rss_mib": (peak.max(rss) as f64 / 1_048_576.0 * 10.0).round() / 10.0,
        "reconciles": reconciles,
        "kube_requests": requests,
        "kube_requests_per_reconcile": (reconciles > 0.0).then(|| (requests / reconciles * 100.0).round() / 100.0),
        "reconcile_p50_ms": quantile(&m0, &m1, 0.5).map(|s| (s * 10000.0).round() / 10.0),
        "reconcile_p99_ms": quantile(&m0, &m1, 0.99).map(|s| (s * 10000.0).round() / 10.0),
    });
    eprintln!("bench: cost {r}");
    r
}

fn paused_release(name: &str, churn: u64) -> Value {
    json!({
        "apiVersion": "shortener.dev/v1alpha1",
        "kind": "ShortenerRelease",
        "metadata": {"name": name, "annotations": {"shortener.dev/paused": "true"}},
        "spec": {"image": "shortener:v1", "replicas": 1,
                 "env": [{"name": "BENCH_CHURN", "value": churn.to_string()}]},
    })
}

/// Applies `names` (paused, spec stamped with `churn`), 16 at a time.
async fn apply_all(srs: &Api<ShortenerRelease>, names: &[String], churn: u64) {
    futures::stream::iter(names.iter().cloned())
        .for_each_concurrent(16, |name| {
            let srs = srs.clone();
            async move {
                srs.patch(
                    &name,
                    &PatchParams::apply("bench").force(),
                    &Patch::Apply(&paused_release(&name, churn)),
                )
                .await
                .unwrap();
            }
        })
        .await;
}

/// Waits until every release has been reconciled at its current generation, Paused.
async fn all_paused(srs: &Api<ShortenerRelease>, count: usize) {
    eventually(
        &format!("{count} releases reconciled"),
        Duration::from_secs(600),
        || async {
            let list = srs.list(&ListParams::default()).await.ok()?;
            let done = list
                .items
                .iter()
                .filter(|sr| {
                    sr.status.as_ref().is_some_and(|st| {
                        st.phase == Phase::Paused
                            && st.observed_generation == sr.metadata.generation
                    })
                })
                .count();
            (list.items.len() >= count && done == list.items.len()).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: make bench-cluster"]
async fn bench_operator_cost() {
    let counts: Vec<usize> = std::env::var("BENCH_COST_COUNTS")
        .unwrap_or_else(|_| "1,100,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let idle = Duration::from_secs(env_num("BENCH_IDLE_SECS", 10));
    let env = Env::new("bench-cost").await;
    let srs = env.srs.clone();
    let mut rows = vec![measure(&env, "idle", 0, || tokio::time::sleep(idle)).await];
    let mut names: Vec<String> = Vec::new();
    for (step, &count) in (0u64..).zip(&counts) {
        let new: Vec<String> = (names.len()..count).map(|i| format!("r{i:04}")).collect();
        names.extend(new.iter().cloned());
        rows.push(
            measure(&env, "create", count, || async {
                apply_all(&srs, &new, 2 * step).await;
                all_paused(&srs, count).await;
            })
            .await,
        );
        rows.push(measure(&env, "idle", count, || tokio::time::sleep(idle)).await);
        // Churn: every release's spec changes (a new generation to reconcile).
        rows.push(
            measure(&env, "churn", count, || async {
                apply_all(&srs, &names, 2 * step + 1).await;
                all_paused(&srs, count).await;
            })
            .await,
        );
    }
    env.cleanup().await;
    let doc = json!({"machine": machine(), "rows": rows});
    let path = out_dir().join("operator-cost.json");
    std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    eprintln!("bench: wrote {}", path.display());
}
