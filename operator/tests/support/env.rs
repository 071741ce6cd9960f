//! One e2e scenario's world: the testenv cluster with the CRD installed, a namespace of its
//! own and an operator process watching only it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod, Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, CustomResourceExt};
use operator::api::{Outcome, Phase, ShortenerRelease};
use serde_json::json;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use super::{cluster_up, eventually, kubeconfig, root, unique_namespace, within};

pub const NAME: &str = "web";

pub async fn client() -> Client {
    let kc = Kubeconfig::read_from(kubeconfig()).expect("testenv kubeconfig");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// Whether this test binary has made sure testenv is up.
pub static CLUSTER: Mutex<bool> = Mutex::const_new(false);

/// Starts testenv unless it is up, and installs the CRD (every time: the shared cluster
/// may have been restarted by someone else since the last scenario).
pub async fn cluster() -> Client {
    let mut started = CLUSTER.lock().await;
    if !*started {
        cluster_up().await;
        *started = true;
    }
    let c = client().await;
    let crds = Api::<CustomResourceDefinition>::all(c.clone());
    crds.patch(
        "shortenerreleases.shortener.dev",
        &PatchParams::apply("e2e").force(),
        &Patch::Apply(&ShortenerRelease::crd()),
    )
    .await
    .expect("install CRD");
    eventually("CRD established", Duration::from_secs(30), || {
        let crds = crds.clone();
        async move {
            let crd = crds.get("shortenerreleases.shortener.dev").await.ok()?;
            let established = crd
                .status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            established.then_some(())
        }
    })
    .await;
    c
}

/// The operator binary watching `ns`, appending to `.testenv/e2e/operator-<ns>.log`
/// (under .testenv/e2e/, which cluster-up does not wipe).
pub fn spawn_operator(ns: &str, metrics_addr: &str) -> Child {
    spawn_operator_with(ns, metrics_addr, &[])
}

/// A loopback address with a port nobody listens on (yet).
pub fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

pub fn spawn_operator_with(ns: &str, metrics_addr: &str, extra: &[&str]) -> Child {
    spawn_operator_env(ns, metrics_addr, extra, &[])
}

/// As [`spawn_operator_with`], with extra environment variables (e.g. the test-only
/// `OPERATOR_TEST_CRASH_AT`).
pub fn spawn_operator_env(
    ns: &str,
    metrics_addr: &str,
    extra: &[&str],
    vars: &[(&str, &str)],
) -> Child {
    let dir = root().join(".testenv/e2e");
    std::fs::create_dir_all(&dir).unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("operator-{ns}.log")))
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_operator"))
        .args(["--kubeconfig"])
        .arg(kubeconfig())
        .args(["--namespace", ns, "--metrics-addr", metrics_addr])
        // s9's webhook receiver listens on loopback, which the operator refuses by default.
        .args(["--webhook-allow-cidr", "127.0.0.0/8"])
        // s44's Prometheus listens on 127.0.0.1; nothing else may be queried (s44 checks that
        // another address is refused).
        .args(["--prometheus-allow", "127.0.0.1"])
        .args(extra)
        .envs(vars.iter().copied())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn operator")
}

/// Two operator replicas with `--leader-elect` watching `env`'s namespace, with its Lease
/// there: (identity, metrics address, process) each.
pub fn spawn_replicas(env: &Env) -> Vec<(&'static str, String, Child)> {
    ["replica-a", "replica-b"]
        .into_iter()
        .map(|identity| {
            let addr = free_addr();
            let args = [
                "--leader-elect",
                "--leader-election-namespace",
                &env.ns,
                "--leader-election-identity",
                identity,
            ];
            let child = spawn_operator_with(&env.ns, &addr, &args);
            (identity, addr, child)
        })
        .collect()
}

/// The identity holding the operator's Lease in `env`'s namespace, if any.
pub async fn lease_holder(env: &Env) -> Option<String> {
    Api::<Lease>::namespaced(env.client.clone(), &env.ns)
        .get_opt("shortener-operator")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
        .filter(|h| !h.is_empty())
}

/// Creates a namespace named `prefix` plus a unique suffix; returns its name.
pub async fn create_namespace(client: &Client, prefix: &str) -> String {
    let ns = unique_namespace(prefix);
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();
    ns
}

/// The Secret holding `SHORTENER_E2E_STORE_URL` in each scenario's namespace.
const SHARED_STORE_SECRET: &str = "e2e-store";

/// A PostgreSQL URL the pods can reach, set by `make e2e-real` (the real node's pods run in
/// containers, so they cannot share the scenario's SQLite file); unset, scenarios use a file.
fn shared_store_url() -> Option<String> {
    std::env::var("SHORTENER_E2E_STORE_URL")
        .ok()
        .filter(|url| !url.is_empty())
}

/// One scenario's namespace, operator process and helpers.
pub struct Env {
    pub client: Client,
    pub ns: String,
    pub srs: Api<ShortenerRelease>,
    pub operator: Child,
    pub metrics_addr: String,
    pub store: PathBuf,
}

impl Env {
    pub async fn new(scenario: &str) -> Env {
        let client = cluster().await;
        let ns = create_namespace(&client, &format!("e2e-{scenario}")).await;
        let metrics_addr = free_addr();
        // Under .testenv/e2e/, which cluster-up does not wipe.
        let store_dir = root().join(".testenv/e2e");
        std::fs::create_dir_all(&store_dir).unwrap();
        let operator = spawn_operator(&ns, &metrics_addr);
        let store = store_dir.join(format!("{ns}.db"));
        let env = Env {
            srs: Api::namespaced(client.clone(), &ns),
            client,
            ns,
            operator,
            metrics_addr,
            store,
        };
        if let Some(url) = shared_store_url() {
            env.create_secret(SHARED_STORE_SECRET, "url", &url).await;
        }
        let url = format!("http://{}/readyz", env.metrics_addr);
        eventually("operator /readyz", Duration::from_secs(30), || {
            let url = url.clone();
            async move {
                let r = reqwest::get(&url).await.ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
        env
    }

    /// Creates the Secret `name` holding `key: value` in this scenario's namespace.
    pub async fn create_secret(&self, name: &str, key: &str, value: &str) {
        Api::<Secret>::namespaced(self.client.clone(), &self.ns)
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": name},
                    "stringData": {key: value},
                }))
                .unwrap(),
            )
            .await
            .unwrap();
    }

    /// A spec sharing this scenario's store, fast intervals, and extra env.
    /// On the real node (`SHORTENER_E2E_STORE_URL`), the store is that PostgreSQL database,
    /// its URL in a Secret, as in production: containers cannot share a file of the host.
    pub fn spec(&self, image: &str, env: &[(&str, &str)]) -> serde_json::Value {
        let shared = shared_store_url().is_some();
        let mut vars = Vec::new();
        if !shared {
            vars.push(
                json!({"name": "SHORTENER_STORE", "value": self.store.display().to_string()}),
            );
        }
        for (k, v) in env {
            vars.push(json!({"name": k, "value": v}));
        }
        let mut spec = json!({
            "image": image,
            "replicas": 2,
            "env": vars,
            "progressDeadlineSeconds": 120,
            "analysis": {"intervalSeconds": 1, "bakeSeconds": 12, "maxErrorRate": 5.0},
        });
        if shared {
            spec["store"] =
                json!({"postgres": {"urlSecretRef": {"name": SHARED_STORE_SECRET, "key": "url"}}});
        }
        spec
    }

    /// As `spec`, with `strategy: Rolling`.
    pub fn rolling_spec(&self, image: &str, env: &[(&str, &str)]) -> serde_json::Value {
        let mut spec = self.spec(image, env);
        spec["strategy"] = json!("Rolling");
        spec
    }

    pub async fn apply(&self, spec: serde_json::Value) -> Result<ShortenerRelease, kube::Error> {
        let sr = json!({
            "apiVersion": "shortener.dev/v1alpha1",
            "kind": "ShortenerRelease",
            "metadata": {"name": NAME},
            "spec": spec,
        });
        self.srs
            .patch(NAME, &PatchParams::apply("e2e").force(), &Patch::Apply(&sr))
            .await
    }

    pub async fn wait<F>(&self, what: &str, timeout: Duration, pred: F) -> ShortenerRelease
    where
        F: Fn(&ShortenerRelease) -> bool,
    {
        let pred = &pred;
        let found = within(timeout, || async move {
            let sr = self.srs.get(NAME).await.ok()?;
            let st = sr.status.as_ref()?;
            (st.observed_generation == sr.metadata.generation && pred(&sr)).then_some(sr)
        })
        .await;
        match found {
            Some(sr) => sr,
            None => panic!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                self.describe().await
            ),
        }
    }

    /// What a person debugging a failed scenario looks at first: the release's status and
    /// each pod's container state, with the tail of its logs.
    pub async fn describe(&self) -> String {
        let status = match self.srs.get(NAME).await {
            Ok(sr) => serde_json::to_string_pretty(&sr.status).unwrap_or_default(),
            Err(e) => format!("cannot read the release: {e}"),
        };
        let mut out = format!("release status: {status}\n");
        let pods = Api::<Pod>::namespaced(self.client.clone(), &self.ns);
        for pod in pods
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let containers = pod
                .status
                .and_then(|s| s.container_statuses)
                .unwrap_or_default();
            out.push_str(&format!(
                "pod {name}: {}\n",
                serde_json::to_string(&containers).unwrap_or_default()
            ));
            for previous in [false, true] {
                let params = LogParams {
                    previous,
                    tail_lines: Some(20),
                    ..LogParams::default()
                };
                if let Ok(logs) = pods.logs(&name, &params).await {
                    out.push_str(&format!("--- logs (previous: {previous}):\n{logs}\n"));
                }
            }
        }
        out
    }

    pub async fn wait_phase(&self, phase: Phase, timeout: Duration) -> ShortenerRelease {
        self.wait(&format!("phase {phase:?}"), timeout, |sr| {
            sr.status.as_ref().is_some_and(|s| s.phase == phase)
        })
        .await
    }

    /// Waits until revision `n` has ended with `outcome`.
    pub async fn wait_outcome(&self, n: i64, outcome: Outcome) -> ShortenerRelease {
        self.wait(
            &format!("revision {n} {outcome:?}"),
            Duration::from_secs(150),
            |sr| {
                sr.status.as_ref().is_some_and(|s| {
                    s.history
                        .iter()
                        .any(|r| r.revision == n && r.outcome == outcome)
                })
            },
        )
        .await
    }

    pub async fn healthy_v1(&self) -> ShortenerRelease {
        self.apply(self.spec("shortener:v1", &[])).await.unwrap();
        self.wait_outcome(1, Outcome::Promoted).await;
        self.wait_phase(Phase::Healthy, Duration::from_secs(30))
            .await
    }

    pub async fn active_address(&self) -> String {
        let svc = Api::<Service>::namespaced(self.client.clone(), &self.ns)
            .get(NAME)
            .await
            .unwrap();
        let spec = svc.spec.unwrap();
        let port = spec.ports.unwrap()[0].port;
        format!("{}:{port}", spec.cluster_ip.unwrap())
    }

    /// The token in the Secret the operator keeps for the release.
    pub async fn api_token(&self) -> String {
        let secret = Api::<Secret>::namespaced(self.client.clone(), &self.ns)
            .get(&operator::api_token::secret_name(NAME))
            .await
            .unwrap();
        operator::api_token::token_of(&secret).expect("a token in the release's Secret")
    }

    /// Waits for a Warning Event with `reason`: the operator writes Events after the status,
    /// so a phase seen in the status does not mean its Event is there yet.
    pub async fn wait_warning(&self, reason: &str) {
        eventually(
            &format!("a Warning Event {reason}"),
            Duration::from_secs(15),
            || async {
                self.warning_reasons()
                    .await
                    .iter()
                    .any(|r| r == reason)
                    .then_some(())
            },
        )
        .await;
    }

    pub async fn warning_reasons(&self) -> Vec<String> {
        Api::<Event>::namespaced(self.client.clone(), &self.ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .filter_map(|e| e.reason)
            .collect()
    }

    pub async fn operator_metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.metrics_addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Kills the operator (SIGKILL: no chance to tidy up) and starts a new one.
    pub async fn restart_operator(&mut self) {
        self.operator.kill().await.unwrap();
        self.operator = spawn_operator(&self.ns, &self.metrics_addr);
    }

    pub async fn cleanup(mut self) {
        let _ = self.operator.kill().await;
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(&self.ns, &DeleteParams::default())
            .await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.store.display()));
        }
    }
}

/// Images of every container of the Deployments in the test namespace that `lp` selects.
pub async fn deployment_images(env: &Env, lp: &ListParams) -> Vec<String> {
    Api::<Deployment>::namespaced(env.client.clone(), &env.ns)
        .list(lp)
        .await
        .unwrap()
        .items
        .into_iter()
        .flat_map(|d| {
            d.spec
                .template
                .spec
                .map(|s| s.containers)
                .unwrap_or_default()
        })
        .filter_map(|c| c.image)
        .collect()
}

pub fn revision_outcome(sr: &ShortenerRelease, n: i64) -> (Outcome, Option<String>) {
    let r = sr
        .status
        .as_ref()
        .unwrap()
        .history
        .iter()
        .find(|r| r.revision == n)
        .unwrap_or_else(|| panic!("revision {n} in history"));
    (r.outcome, r.reason.clone())
}
