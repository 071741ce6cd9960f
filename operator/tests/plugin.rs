//! `kubectl-shortener` against a live release on testenv (issue 7): the real operator, the
//! real plugin binary, each command's output and effect, and its one-line errors.
//!
//! Run with `make plugin-test` (builds, starts testenv if needed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;
use support::{cluster_up, eventually, kubeconfig, root, unique_namespace};

use kube::api::{Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, ResourceExt};
use operator::api::{Outcome, Phase, RevisionRecord, ShortenerRelease};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const NAME: &str = "web";

fn kubectl() -> std::process::Command {
    let mut c = std::process::Command::new(root().join("testenv/bin/kubectl"));
    c.arg("--kubeconfig").arg(kubeconfig());
    c
}

fn run_ok(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `f` until it returns Some, failing the test after `timeout`.
/// Deletes the namespace (and with it the release) and the shortener's store even when an
/// assertion fails; the operator log is kept for whoever debugs a failure.
struct NamespaceGuard {
    ns: String,
    store: PathBuf,
}

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        let _ = kubectl()
            .args(["delete", "namespace", &self.ns, "--wait=false"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.store.display()));
        }
    }
}

struct Env {
    ns: String,
    srs: Api<ShortenerRelease>,
    store: PathBuf,
    _operator: Child,
    _guard: NamespaceGuard,
}

impl Env {
    async fn new() -> Env {
        cluster_up().await;
        run_ok(kubectl().arg("apply").arg("-f").arg(root().join("crds/")));
        run_ok(kubectl().args([
            "wait",
            "--for=condition=established",
            "--timeout=30s",
            "crd/shortenerreleases.shortener.dev",
        ]));
        let ns = unique_namespace("plugin");
        run_ok(kubectl().args(["create", "namespace", &ns]));
        // Under .testenv/plugin/, which cluster-up does not wipe.
        let dir = root().join(".testenv/plugin");
        let guard = NamespaceGuard {
            ns: ns.clone(),
            store: dir.join(format!("{ns}.db")),
        };
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join(format!("operator-{ns}.log"))).unwrap();
        let operator = Command::new(env!("CARGO_BIN_EXE_operator"))
            .arg("--kubeconfig")
            .arg(kubeconfig())
            .args(["--namespace", &ns, "--metrics-addr", "127.0.0.1:0"])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn operator");
        let kc = Kubeconfig::read_from(kubeconfig()).unwrap();
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .unwrap();
        let client = Client::try_from(config).unwrap();
        Env {
            srs: Api::namespaced(client, &ns),
            store: guard.store.clone(),
            ns,
            _operator: operator,
            _guard: guard,
        }
    }

    async fn apply(&self, image: &str, fault: Option<&str>) {
        self.apply_baking(image, fault, 3).await;
    }

    /// `bake_seconds` long enough leaves time to promote or abort by hand.
    async fn apply_baking(&self, image: &str, fault: Option<&str>, bake_seconds: i32) {
        let mut env =
            vec![json!({"name": "SHORTENER_STORE", "value": self.store.display().to_string()})];
        if let Some(f) = fault {
            env.push(json!({"name": "SHORTENER_FAULT", "value": f}));
        }
        let sr = json!({
            "apiVersion": "shortener.dev/v1alpha1",
            "kind": "ShortenerRelease",
            "metadata": {"name": NAME},
            "spec": {
                "image": image,
                "replicas": 1,
                "env": env,
                "analysis": {"intervalSeconds": 1, "bakeSeconds": bake_seconds},
            },
        });
        self.srs
            .patch(
                NAME,
                &PatchParams::apply("plugin-test").force(),
                &Patch::Apply(&sr),
            )
            .await
            .unwrap();
    }

    async fn wait<F: Fn(&ShortenerRelease) -> bool>(
        &self,
        what: &str,
        pred: F,
    ) -> ShortenerRelease {
        let pred = &pred;
        eventually(what, Duration::from_secs(120), || async move {
            let sr = self.srs.get(NAME).await.ok()?;
            let st = sr.status.as_ref()?;
            (st.observed_generation == sr.metadata.generation && pred(&sr)).then_some(sr)
        })
        .await
    }

    async fn wait_phase(&self, phase: Phase) -> ShortenerRelease {
        self.wait(&format!("phase {phase:?}"), |sr| {
            sr.status.as_ref().is_some_and(|s| s.phase == phase)
        })
        .await
    }

    fn plugin_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kubectl-shortener"));
        c.arg("--kubeconfig")
            .arg(kubeconfig())
            .args(["-n", &self.ns])
            .args(args)
            .env_remove("KUBECONFIG");
        c
    }

    async fn plugin(&self, args: &[&str]) -> Output {
        self.plugin_command(args)
            .output()
            .await
            .expect("run plugin")
    }

    /// Runs the plugin, expecting success; returns stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let out = self.plugin(args).await;
        assert!(
            out.status.success(),
            "kubectl-shortener {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs the plugin, expecting exit code 1 and one line on stderr; returns that line.
    async fn fails(&self, args: &[&str]) -> String {
        let out = self.plugin(args).await;
        assert_eq!(
            out.status.code(),
            Some(1),
            "kubectl-shortener {args:?}: {out:?}"
        );
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "one line expected: {stderr}");
        stderr.trim_end().to_string()
    }
}

fn record(sr: &ShortenerRelease, n: i64) -> Option<RevisionRecord> {
    sr.status
        .as_ref()?
        .history
        .iter()
        .find(|r| r.revision == n)
        .cloned()
}

fn phase(sr: &ShortenerRelease) -> Option<Phase> {
    sr.status.as_ref().map(|s| s.phase)
}

fn newest(sr: &ShortenerRelease) -> i64 {
    sr.status
        .as_ref()
        .and_then(|s| s.history.iter().map(|r| r.revision).max())
        .unwrap_or(0)
}

/// Reads a child's stdout until a line containing `wanted` appears.
async fn read_until(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    wanted: &str,
) {
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains(wanted) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "--watch never printed {wanted:?}");
}

#[tokio::test]
#[ignore = "needs testenv"]
async fn plugin_commands_against_a_live_release() {
    let env = Env::new().await;
    let ns = env.ns.clone();

    // Before the release exists: the error names it and its namespace.
    assert_eq!(
        env.fails(&["status", NAME]).await,
        format!("error: no ShortenerRelease \"web\" in namespace \"{ns}\"")
    );
    assert_eq!(env.ok(&["status"]).await, "No ShortenerReleases found.\n");

    env.apply("shortener:v1", None).await;
    env.wait_phase(Phase::Healthy).await;

    // status: detail and list
    let detail = env.ok(&["status", NAME]).await;
    for wanted in [
        "Name:       web\n",
        &format!("Namespace:  {ns}\n"),
        "Phase:      Healthy\n",
        "Stable:     1 (shortener:v1)\n",
        "Current:    1 (shortener:v1)\n",
        "Last incident: none\n",
        "Budget:     0s used of 15m a year, 15m left\n",
    ] {
        assert!(
            detail.contains(wanted),
            "{wanted:?} missing from:\n{detail}"
        );
    }
    assert!(
        detail
            .lines()
            .any(|l| l.trim_start().starts_with("Ready") && l.contains("True")),
        "{detail}"
    );
    let list = env.ok(&["status"]).await;
    let row: Vec<&str> = list.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row,
        ["web", "Healthy", "1", "1", "shortener:v1", "True", "15m"]
    );

    // The namespace comes from the kubeconfig context when -n is not given.
    let kc_copy = root().join(format!(".testenv/plugin/kubeconfig-{ns}"));
    std::fs::copy(kubeconfig(), &kc_copy).unwrap();
    run_ok(
        std::process::Command::new(root().join("testenv/bin/kubectl"))
            .arg("--kubeconfig")
            .arg(&kc_copy)
            .args(["config", "set-context", "--current", "--namespace", &ns]),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-shortener"))
        .arg("--kubeconfig")
        .arg(&kc_copy)
        .args(["status", NAME, "-o", "json"])
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_file(&kc_copy);
    assert!(out.status.success(), "{out:?}");

    // -o json / yaml parse, with the API's field names
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["status", NAME, "-o", "json"]).await).unwrap();
    assert_eq!(json["status"]["phase"], "Healthy");
    assert_eq!(json["status"]["stableRevision"], 1);
    let yaml: serde_json::Value =
        serde_yaml::from_str(&env.ok(&["status", NAME, "-o", "yaml"]).await).unwrap();
    assert_eq!(yaml, json);
    let history: serde_json::Value =
        serde_json::from_str(&env.ok(&["history", NAME, "-o", "json"]).await).unwrap();
    assert_eq!(history.as_array().map(Vec::len), Some(1));
    assert_eq!(history[0]["outcome"], "Promoted");
    let all: serde_json::Value =
        serde_json::from_str(&env.ok(&["status", "-o", "json"]).await).unwrap();
    assert_eq!(all[0]["name"], "web");

    // history / budget tables
    let table = env.ok(&["history", NAME]).await;
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[..4], ["1", "shortener:v1", "Promoted", "-"]);
    assert_eq!(
        env.ok(&["budget", NAME]).await,
        "Allowed:    15m per rolling year\nUsed:       0s (0.0%)\nRemaining:  15m\n"
    );

    // Only one healthy revision, and it serves: nothing is written.
    assert_eq!(
        env.fails(&["rollback", NAME]).await,
        "error: nothing to roll back to: no healthy revision in the history other than the serving one (1)"
    );
    assert!(
        !env.srs
            .get(NAME)
            .await
            .unwrap()
            .annotations()
            .contains_key("shortener.dev/rollback-to")
    );
    assert_eq!(
        env.fails(&["history", "nope"]).await,
        format!("error: no ShortenerRelease \"nope\" in namespace \"{ns}\"")
    );
    assert_eq!(
        env.fails(&["pause", "nope"]).await,
        format!("error: no ShortenerRelease \"nope\" in namespace \"{ns}\"")
    );
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-shortener"))
        .args(["--kubeconfig", "/nonexistent/kubeconfig", "status"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8(out.stderr).unwrap();
    assert!(
        e.starts_with("error: not connected: cannot read kubeconfig /nonexistent/kubeconfig"),
        "{e}"
    );

    // pause / resume, seen through --watch
    let mut watch = env
        .plugin_command(&["status", NAME, "--watch"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    read_until(&mut lines, "Phase:      Healthy").await;
    let out = env.ok(&["pause", NAME]).await;
    assert!(
        out.starts_with(&format!(
            "Requested pause for web in namespace {ns} (shortener.dev/paused=true).\nThe operator acts on it"
        )),
        "{out}"
    );
    env.wait_phase(Phase::Paused).await;
    read_until(&mut lines, "Phase:      Paused").await;
    let out = env.ok(&["resume", NAME]).await;
    assert!(out.contains("(shortener.dev/paused removed)"), "{out}");
    env.wait_phase(Phase::Healthy).await;
    read_until(&mut lines, "Phase:      Healthy").await;
    watch.kill().await.unwrap();

    // A failing v2: its incident and log excerpt.
    env.apply("shortener:v2", Some("shorten-500")).await;
    let sr = env
        .wait("revision 2 failed with its log excerpt", |sr| {
            sr.status.as_ref().is_some_and(|s| {
                s.last_incident
                    .as_ref()
                    .is_some_and(|i| i.revision == 2 && i.log_excerpt_ref.is_some())
            })
        })
        .await;
    let reason = sr.status.unwrap().last_incident.unwrap().reason;
    let incidents = env.ok(&["incidents", NAME]).await;
    for wanted in [
        format!("Incident:   revision 2 of web ({ns}), {reason}"),
        "revision 2 (shortener:v2) started".into(),
        format!("failed: {reason}"),
        "Log excerpt (ConfigMap web-incident-2):".into(),
        "ERROR".into(),
        "Exception on /api/v1/urls [POST]: failed to load the URL table".into(),
        "Traceback (most recent call last):".into(),
    ] {
        assert!(
            incidents.contains(&wanted),
            "{wanted:?} missing from:\n{incidents}"
        );
    }
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["incidents", NAME, "-o", "json"]).await).unwrap();
    assert!(json["excerpt"].as_str().unwrap().contains("Traceback"));
    let detail = env.ok(&["status", NAME]).await;
    assert!(
        detail.contains(&format!("Last incident: revision 2 {reason} at ")),
        "{detail}"
    );

    // The failed revision is no rollback target; revision 1 already serves.
    assert_eq!(
        env.fails(&["rollback", NAME, "--to-revision", "2"]).await,
        format!(
            "error: nothing to roll back to: revision 2 never became healthy (outcome Failed; healthy revisions: none)"
        )
    );
    assert_eq!(
        env.fails(&["rollback", NAME]).await,
        "error: nothing to roll back to: no healthy revision in the history other than the serving one (1)"
    );

    // retry: the same failed template is rolled out again as revision 3.
    let out = env.ok(&["retry", NAME]).await;
    assert!(
        out.starts_with("Requested retry of the failed revision for web"),
        "{out}"
    );
    let sr = env
        .wait("revision 3 rolled out", |sr| {
            sr.status
                .as_ref()
                .is_some_and(|s| s.history.iter().any(|r| r.revision == 3))
        })
        .await;
    let st = sr.status.unwrap();
    let r3 = st.history.iter().find(|r| r.revision == 3).unwrap();
    assert_eq!(r3.image, "shortener:v2");
    let r2 = st.history.iter().find(|r| r.revision == 2).unwrap();
    assert_eq!(r3.pod_template_hash, r2.pod_template_hash);
    assert_eq!(r2.outcome, Outcome::Failed);
    let table = env.ok(&["history", NAME]).await;
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("3 ") && l.contains("shortener:v2")),
        "{table}"
    );

    // RBAC: an account that may only read releases is told what it lacks.
    let k = |args: &[&str]| run_ok(kubectl().args(["-n", &ns]).args(args));
    k(&["create", "serviceaccount", "reader"]);
    k(&[
        "create",
        "role",
        "reader",
        "--verb=get,list,watch",
        "--resource=shortenerreleases.shortener.dev",
    ]);
    k(&[
        "create",
        "rolebinding",
        "reader",
        "--role=reader",
        &format!("--serviceaccount={ns}:reader"),
    ]);
    let token = k(&["create", "token", "reader"]);
    let kc_reader = root().join(format!(".testenv/plugin/kubeconfig-reader-{ns}"));
    std::fs::copy(kubeconfig(), &kc_reader).unwrap();
    let kc = |args: &[&str]| {
        run_ok(
            std::process::Command::new(root().join("testenv/bin/kubectl"))
                .arg("--kubeconfig")
                .arg(&kc_reader)
                .args(args),
        )
    };
    kc(&[
        "config",
        "set-credentials",
        "reader",
        &format!("--token={}", token.trim()),
    ]);
    kc(&["config", "set-context", "--current", "--user=reader"]);
    let as_reader = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kubectl-shortener"));
        c.arg("--kubeconfig")
            .arg(&kc_reader)
            .args(["-n", &ns])
            .args(args);
        c
    };
    let out = as_reader(&["status", NAME]).output().await.unwrap();
    assert!(out.status.success(), "{out:?}");
    for (args, wanted) in [
        (
            &["pause", NAME][..],
            format!(
                "error: not permitted: your account cannot patch shortenerreleases.shortener.dev in namespace \"{ns}\" (ask for RBAC on it)\n"
            ),
        ),
        (
            &["incidents", NAME][..],
            format!(
                "error: not permitted: your account cannot get configmaps in namespace \"{ns}\" (ask for RBAC on it)\n"
            ),
        ),
    ] {
        let out = as_reader(args).output().await.unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert_eq!(String::from_utf8(out.stderr).unwrap(), wanted);
    }
    let _ = std::fs::remove_file(&kc_reader);

    // rollback: a good v3 becomes stable, then revision 1's image serves again.
    env.apply("shortener:v3", None).await;
    let sr = env
        .wait("v3 stable", |sr| {
            phase(sr) == Some(Phase::Healthy)
                && sr
                    .status
                    .as_ref()
                    .and_then(|s| s.stable_revision)
                    .and_then(|n| record(sr, n))
                    .is_some_and(|r| r.image == "shortener:v3")
        })
        .await;
    let v3 = newest(&sr);
    let out = env.ok(&["rollback", NAME]).await;
    assert!(
        out.starts_with(
            "Requested rollback to the previous healthy revision (1) for web in namespace"
        ),
        "{out}"
    );
    env.wait("manual rollback to v1 serving", |sr| {
        phase(sr) == Some(Phase::RolledBack)
            && record(sr, newest(sr)).is_some_and(|r| {
                r.revision > v3 && r.image == "shortener:v1" && r.outcome == Outcome::Promoted
            })
            && !sr.annotations().contains_key("shortener.dev/rollback-to")
    })
    .await;
    let detail = env.ok(&["status", NAME]).await;
    assert!(detail.contains("Phase:      RolledBack\n"), "{detail}");
    assert!(
        detail
            .lines()
            .any(|l| l.starts_with("Stable:") && l.ends_with("(shortener:v1)")),
        "{detail}"
    );

    // abort: a revision being baked is stopped by hand.
    env.apply_baking("shortener:v4", None, 600).await;
    let sr = env.wait_phase(Phase::Analyzing).await;
    let v4 = newest(&sr);
    let out = env.ok(&["abort", NAME]).await;
    assert!(out.contains("(shortener.dev/abort=true)"), "{out}");
    env.wait("v4 aborted", |sr| {
        phase(sr) == Some(Phase::RolledBack)
            && record(sr, v4).is_some_and(|r| {
                r.outcome == Outcome::Failed && r.reason.as_deref() == Some("Manual")
            })
    })
    .await;

    // promote: the rest of a long bake is skipped.
    env.apply_baking("shortener:v5", None, 600).await;
    let sr = env.wait_phase(Phase::Analyzing).await;
    let v5 = newest(&sr);
    assert!(v5 > v4);
    let out = env.ok(&["promote", NAME]).await;
    assert!(out.contains("(shortener.dev/promote=true)"), "{out}");
    env.wait("v5 promoted by hand", |sr| {
        phase(sr) == Some(Phase::Healthy)
            && sr.status.as_ref().and_then(|s| s.stable_revision) == Some(v5)
    })
    .await;
    let history: serde_json::Value =
        serde_json::from_str(&env.ok(&["history", NAME, "-o", "json"]).await).unwrap();
    let last = history.as_array().unwrap().last().unwrap();
    assert_eq!(last["outcome"], "Promoted");
    assert_eq!(last["reason"], "ManualPromote");
}
