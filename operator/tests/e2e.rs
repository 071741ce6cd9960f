//! End-to-end scenarios against testenv (issue 4): the real operator binary, the real
//! shortener, a client sending steady requests through the active Service.
//!
//! Run with `make e2e` (starts testenv if needed). Each test gets its own namespace and
//! its own operator process watching only that namespace.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
// s20-s22, issue 17: releases that take long to start (operator/tests/startup/mod.rs).
mod startup;
// s44, issue 14: the bake judged by PromQL on a real Prometheus (operator/tests/promql/mod.rs).
mod promql;
// c1-c5, issue 15: the operator under faults (operator/tests/chaos/mod.rs).
mod chaos;
// s50-s52, issue 14: what the bake judges (operator/tests/analysis/mod.rs).
mod analysis;
use std::time::{Duration, Instant};
use support::env::*;
use support::traffic::{Tally, Traffic};
use support::{eventually, kubeconfig, root};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use operator::api::{Outcome, Phase, ShortenerRelease};
use serde_json::json;
use tokio::process::Command;

/// Words the operator's default pattern treats as an error line.
const ERROR_WORDS: [&str; 5] = ["error", "panic", "fatal", "exception", "traceback"];
/// Checks an excerpt of `SHORTENER_FAULT=shorten-500` pods' logs, cut with
/// `context_lines` of context: the shortener's multi-line error output is there, and
/// every other line kept is within `context_lines` of an error line.
fn assert_shortener_error_excerpt(excerpt: &str, context_lines: u64) {
    for wanted in [
        "ERROR",
        "Exception on /api/v1/urls [POST]: failed to load the URL table",
        "Traceback (most recent call last):",
        "TypeError: the JSON object must be str, bytes or bytearray",
    ] {
        assert!(
            excerpt.contains(wanted),
            "{wanted:?} missing from:\n{excerpt}"
        );
    }
    // `grep -n` style: "  12: text" for an error line, "  13- text" for context.
    let mut blocks: Vec<Vec<(u64, u64, bool, &str)>> = Vec::new();
    for line in excerpt.lines() {
        if line.starts_with("==> pod/") {
            blocks.push(Vec::new());
            continue;
        }
        let trimmed = line.trim_start();
        let digits = trimmed.len()
            - trimmed
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .len();
        let Some(mark) = trimmed[digits..].chars().next().filter(|_| digits > 0) else {
            continue; // gap or truncation marker
        };
        let number: u64 = trimmed[..digits].parse().unwrap();
        let text = &trimmed[digits + 1..];
        let repeats = text
            .rsplit_once(" (repeated ")
            .and_then(|(_, n)| n.strip_suffix(" times)")?.parse::<u64>().ok())
            .unwrap_or(1);
        let block = blocks
            .last_mut()
            .expect("excerpt lines come after a pod header");
        block.push((number, number + repeats - 1, mark == ':', text));
    }
    assert!(
        blocks.iter().flatten().any(|l| l.2),
        "no error line in:\n{excerpt}"
    );
    for block in &blocks {
        for &(first, last, matched, text) in block {
            if matched {
                let lower = text.to_lowercase();
                assert!(
                    ERROR_WORDS.iter().any(|w| lower.contains(w)),
                    "line {first} marked as an error: {text}"
                );
            } else {
                let near = block.iter().any(|&(f, l, m, _)| {
                    m && first + context_lines >= f && last <= l + context_lines
                });
                assert!(
                    near,
                    "line {first} is not within {context_lines} lines of an error:\n{excerpt}"
                );
            }
        }
    }
}

#[tokio::test]
#[ignore = "needs testenv"]
async fn s1_healthy_release_becomes_ready() {
    let env = Env::new("s1").await;
    env.apply(env.spec("shortener:v1", &[])).await.unwrap();
    let out = Command::new(root().join("testenv/bin/kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args([
            "-n",
            &env.ns,
            "wait",
            "--for=condition=Ready",
            "sr/web",
            "--timeout=120s",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl wait: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sr = env
        .wait_phase(Phase::Healthy, Duration::from_secs(10))
        .await;
    let st = sr.status.unwrap();
    assert_eq!(st.stable_revision, Some(1));
    assert_eq!(st.current_revision, Some(1));
    let traffic = Traffic::start(&env).await;
    traffic.more(50).await;
    let tally = traffic.stop().await;
    assert_eq!(tally.failed, 0, "{tally:?}");

    // The smoke test created with the release's token, which lives in a Secret the release
    // owns; pods read it from there, so no Deployment carries it.
    let secret = Api::<Secret>::namespaced(env.client.clone(), &env.ns)
        .get(&operator::api_token::secret_name(NAME))
        .await
        .unwrap();
    let owners = secret.metadata.owner_references.clone().unwrap_or_default();
    assert!(
        owners
            .iter()
            .any(|o| o.kind == "ShortenerRelease" && o.name == NAME),
        "{owners:?}"
    );
    let token = operator::api_token::token_of(&secret).unwrap();
    let deployments = Api::<Deployment>::namespaced(env.client.clone(), &env.ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(!deployments.items.is_empty());
    for d in deployments {
        let text = serde_json::to_string(&d).unwrap();
        assert!(!text.contains(&token), "the token is in a Deployment");
        assert!(
            text.contains(operator::api_token::ENV),
            "no token env in a Deployment"
        );
    }
    // Without it, nobody writes; with it, the client above did.
    let addr = env.active_address().await;
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/urls"))
        .json(&json!({ "url": "https://example.com/anonymous" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let log = root().join(format!(".testenv/e2e/operator-{}.log", env.ns));
    let log = std::fs::read_to_string(log).unwrap_or_default();
    assert!(!log.contains(&token), "the operator logged the token");
    env.cleanup().await;
}

#[tokio::test]
#[ignore = "needs testenv"]
async fn s2_release_failing_its_smoke_test_is_never_promoted() {
    let env = Env::new("s2").await;
    env.healthy_v1().await;
    let traffic = Traffic::start(&env).await;
    traffic.more(20).await;
    env.apply(env.spec("shortener:v2", &[("SHORTENER_FAULT", "shorten-500")]))
        .await
        .unwrap();
    let sr = env.wait_outcome(2, Outcome::Failed).await;
    traffic.more(50).await;
    let tally = traffic.stop().await;
    let st = sr.status.clone().unwrap();
    assert_eq!(
        revision_outcome(&sr, 2),
        (Outcome::Failed, Some("SmokeTestFailed".into()))
    );
    assert!(st.history[1].promoted_at.is_none(), "v2 never got traffic");
    assert_eq!(st.phase, Phase::RolledBack);
    assert_eq!(st.stable_revision, Some(1));
    assert!(st.message.contains("SmokeTestFailed"), "{}", st.message);
    env.wait_warning("SmokeTestFailed").await;
    // The failed pods' error lines are kept for whoever troubleshoots.
    let sr = env
        .wait("log excerpt recorded", Duration::from_secs(30), |sr| {
            sr.status
                .as_ref()
                .and_then(|s| s.last_incident.as_ref())
                .is_some_and(|i| i.revision == 2 && i.log_excerpt_ref.is_some())
        })
        .await;
    let sr_uid = sr.metadata.uid.clone();
    let cm_name = sr
        .status
        .unwrap()
        .last_incident
        .unwrap()
        .log_excerpt_ref
        .unwrap();
    let cm = Api::<ConfigMap>::namespaced(env.client.clone(), &env.ns)
        .get(&cm_name)
        .await
        .unwrap();
    assert_eq!(cm_name, "web-incident-2");
    // Owned by the release, so deleting it removes the incident too.
    let owner = &cm.metadata.owner_references.clone().unwrap_or_default()[..];
    assert!(
        matches!(owner, [o] if o.kind == "ShortenerRelease" && o.name == NAME
            && Some(&o.uid) == sr_uid.as_ref() && o.controller == Some(true)),
        "owner references: {owner:?}"
    );
    let excerpt = cm.data.unwrap().remove("excerpt").unwrap();
    assert_shortener_error_excerpt(&excerpt, 3);
    assert_eq!(tally.failed, 0, "{tally:?}");
    eprintln!(
        "s2: {} requests, {} failed",
        tally.ok + tally.failed,
        tally.failed
    );
    env.cleanup().await;
}

#[tokio::test]
#[ignore = "needs testenv"]
async fn s3_crash_loop_and_unpullable_image_abort_before_the_deadline() {
    let env = Env::new("s3").await;
    env.healthy_v1().await;
    let traffic = Traffic::start(&env).await;
    let started = Instant::now();
    env.apply(env.spec("shortener:v2", &[("SHORTENER_FAULT", "crash-on-start")]))
        .await
        .unwrap();
    let sr = env.wait_outcome(2, Outcome::Failed).await;
    let crash_secs = started.elapsed().as_secs_f64();
    // The reason proves the operator did not wait for the 120 s progress deadline.
    assert_eq!(revision_outcome(&sr, 2).1.as_deref(), Some("CrashLoop"));

    let started = Instant::now();
    env.apply(env.spec("registry.invalid/not-mapped:v1", &[]))
        .await
        .unwrap();
    let sr = env.wait_outcome(3, Outcome::Failed).await;
    let pull_secs = started.elapsed().as_secs_f64();
    assert_eq!(
        revision_outcome(&sr, 3).1.as_deref(),
        Some("ImagePullFailed")
    );
    traffic.more(30).await;
    let tally = traffic.stop().await;
    assert_eq!(tally.failed, 0, "{tally:?}");
    assert_eq!(sr.status.unwrap().stable_revision, Some(1));
    eprintln!("s3: crash loop failed after {crash_secs:.1}s, image pull after {pull_secs:.1}s");
    env.cleanup().await;
}

#[tokio::test]
#[ignore = "needs testenv"]
async fn s4_analysis_rolls_back_a_promoted_release_within_seconds() {
    let env = Env::new("s4").await;
    env.healthy_v1().await;
    let traffic = Traffic::start(&env).await;
    traffic.more(20).await;
    let mut spec = env.spec("shortener:v2", &[("SHORTENER_FAULT", "errors-after=8s")]);
    spec["analysis"]["bakeSeconds"] = json!(60);
    env.apply(spec).await.unwrap();
    let sr = env.wait_outcome(2, Outcome::Failed).await;
    traffic.more(100).await;
    let tally = traffic.stop().await;
    let st = sr.status.clone().unwrap();
    assert_eq!(
        revision_outcome(&sr, 2).1.as_deref(),
        Some("AnalysisFailed")
    );
    assert!(st.history[1].promoted_at.is_some(), "v2 was promoted first");
    assert_eq!(st.phase, Phase::RolledBack);
    assert_eq!(st.stable_revision, Some(1));
    let incident = st.last_incident.clone().unwrap();
    assert!(incident.rolled_back_at.is_some());
    assert!(tally.failed > 0, "the client saw v2's errors: {tally:?}");
    let first = tally.first_failure.unwrap();
    let last = tally.last_failure.unwrap();
    let restore = last.duration_since(first).as_secs_f64();
    // Traffic is back on v1 after the last failure; the figure is printed for the report.
    assert!(
        restore < 15.0,
        "traffic restored {restore:.2}s after the first error"
    );
    let metrics = env.operator_metrics().await;
    let ttr = metrics
        .lines()
        .find(|l| l.starts_with("shortener_operator_time_to_restore_seconds_sum"))
        .unwrap_or("")
        .to_string();
    // Labelled by release, so the alert can say which one failed.
    let rollback = format!(
        "shortener_operator_rollbacks_total{{name=\"{NAME}\",namespace=\"{}\",reason=\"AnalysisFailed\"}} 1",
        env.ns
    );
    assert!(metrics.contains(&rollback), "no {rollback} in\n{metrics}");
    eprintln!(
        "s4: first failed request -> traffic restored: {restore:.2}s; failed requests {} of {}; operator reported failedRequests {} downtime {:.2}s; {ttr}",
        tally.failed,
        tally.ok + tally.failed,
        incident.failed_requests,
        incident.downtime_seconds
    );
    env.cleanup().await;
}

#[tokio::test]
#[ignore = "needs testenv"]
async fn s5_fixed_release_after_a_failed_one_is_promoted() {
    let env = Env::new("s5").await;
    env.healthy_v1().await;
    let traffic = Traffic::start(&env).await;
    env.apply(env.spec("shortener:v2", &[("SHORTENER_FAULT", "shorten-500")]))
        .await
        .unwrap();
    env.wait_outcome(2, Outcome::Failed).await;
    env.apply(env.spec("shortener:v3", &[])).await.unwrap();
    env.wait_outcome(3, Outcome::Promoted).await;
    let sr = env
        .wait_phase(Phase::Healthy, Duration::from_secs(30))
        .await;
    traffic.more(30).await;
    let tally = traffic.stop().await;
    let st = sr.status.unwrap();
    let history: Vec<_> = st
        .history
        .iter()
        .map(|r| (r.revision, r.image.as_str(), r.outcome))
        .collect();
    assert_eq!(
        history,
        vec![
            (1, "shortener:v1", Outcome::Promoted),
            (2, "shortener:v2", Outcome::Failed),
            (3, "shortener:v3", Outcome::Promoted),
        ]
    );
    assert_eq!(st.stable_revision, Some(3));
    assert_eq!(tally.failed, 0, "{tally:?}");
    // v3 serves; v1 stays as a Deployment at zero replicas (a rollback by hand brings back
    // exactly what ran); the failed v2's Deployment is gone.
    let hash_of = |n: usize| st.history[n].pod_template_hash.clone();
    let want = vec![
        (format!("{NAME}-{}", hash_of(0)), 0),
        (format!("{NAME}-{}", hash_of(2)), 2),
    ];
    let deployments = Api::<Deployment>::namespaced(env.client.clone(), &env.ns);
    eventually(
        "v2's Deployment deleted, v1's at zero replicas",
        Duration::from_secs(30),
        || async {
            let list = deployments.list(&ListParams::default()).await.ok()?;
            let mut got: Vec<(String, i32)> = list
                .items
                .into_iter()
                .map(|d| {
                    (
                        d.metadata.name.unwrap_or_default(),
                        d.spec.replicas.unwrap_or(1),
                    )
                })
                .collect();
            got.sort();
            let mut want = want.clone();
            want.sort();
            (got == want).then_some(())
        },
    )
    .await;
    env.cleanup().await;
}

#[tokio::test]
#[ignore = "needs testenv"]
async fn s6_spec_change_supersedes_a_rollout_in_progress() {
    let env = Env::new("s6").await;
    env.healthy_v1().await;
    let traffic = Traffic::start(&env).await;
    env.apply(env.spec("shortener:v2", &[("SHORTENER_FAULT", "never-ready")]))
        .await
        .unwrap();
    env.wait("revision 2 progressing", Duration::from_secs(30), |sr| {
        sr.status
            .as_ref()
            .is_some_and(|s| s.current_revision == Some(2) && s.phase == Phase::Progressing)
    })
    .await;
    env.apply(env.spec("shortener:v3", &[])).await.unwrap();
    let sr = env.wait_outcome(3, Outcome::Promoted).await;
    traffic.more(30).await;
    let tally = traffic.stop().await;
    assert_eq!(revision_outcome(&sr, 2).0, Outcome::Superseded);
    assert_eq!(sr.status.unwrap().stable_revision, Some(3));
    assert_eq!(tally.failed, 0, "{tally:?}");
    env.cleanup().await;
}

#[tokio::test]
#[ignore = "needs testenv"]
async fn s7_invalid_spec_is_rejected_and_delete_removes_everything() {
    let env = Env::new("s7").await;
    // Each error names the field; a range is refused twice over, by the OpenAPI bound
    // (`minimum`/`maximum`, what editors and kubeconform read) and by the CEL rule with its
    // message, so users of either see why.
    let cases: [(serde_json::Value, &str, &[&str]); 9] = [
        (json!({"image": "shortener"}), "spec.image", &[]),
        (
            json!({"image": "shortener:v1", "replicas": 0}),
            "spec.replicas",
            &[
                "should be greater than or equal to 1",
                "spec.replicas must be between 1 and 100",
            ],
        ),
        (
            json!({"image": "shortener:v1", "port": 70000}),
            "spec.port",
            &[
                "should be less than or equal to 65535",
                "spec.port must be between 1 and 65535",
            ],
        ),
        (
            json!({"image": "shortener:v1", "analysis": {"maxErrorRate": 150.0}}),
            "spec.analysis.maxErrorRate",
            &[
                "should be less than or equal to 100",
                "maxErrorRate is a percentage between 0 and 100",
            ],
        ),
        (
            json!({"image": "shortener:v1", "sla": {"allowedDowntimePerYear": "15 minutes"}}),
            "spec.sla.allowedDowntimePerYear",
            &[],
        ),
        (
            json!({"image": "shortener:v1@sha256:abc"}),
            "spec.image",
            &[],
        ),
        (
            json!({"image": "shortener:v1", "analysis": {"minBakeRequests": -1}}),
            "spec.analysis.minBakeRequests",
            &[
                "should be greater than or equal to 0",
                "minBakeRequests must be between 0 and 1000000000",
            ],
        ),
        (
            json!({"image": "shortener:v1", "analysis": {"maxLatencyP99Ms": 0}}),
            "spec.analysis.maxLatencyP99Ms",
            &[
                "should be greater than or equal to 1",
                "maxLatencyP99Ms must be between 1 and 60000",
            ],
        ),
        (
            json!({"image": "shortener:v1", "analysis": {"insufficientTraffic": "Ignore"}}),
            "spec.analysis.insufficientTraffic",
            &[],
        ),
    ];
    for (spec, field, needles) in cases {
        let err = env
            .apply(spec.clone())
            .await
            .expect_err("invalid spec accepted")
            .to_string();
        assert!(err.contains(field), "{spec}: {err}");
        for needle in needles {
            assert!(err.contains(needle), "{spec}: {needle:?} not in {err}");
        }
        assert!(
            env.srs.get_opt(NAME).await.unwrap().is_none(),
            "nothing created"
        );
    }

    // Names that would make invalid Service names are refused at apply, naming the limit;
    // 55 characters (NAME-preview is then 63) is accepted (server-side dry run).
    let named = |name: &str| {
        json!({
            "apiVersion": "shortener.dev/v1alpha1",
            "kind": "ShortenerRelease",
            "metadata": {"name": name},
            "spec": env.spec("shortener:v1", &[]),
        })
    };
    for (name, needle) in [
        (
            "a".repeat(56),
            "metadata.name must be at most 55 characters",
        ),
        ("web.v2".to_string(), "metadata.name must be a DNS label"),
        ("2web".to_string(), "metadata.name must be a DNS label"),
    ] {
        let err = env
            .srs
            .patch(
                &name,
                &PatchParams::apply("e2e"),
                &Patch::Apply(&named(&name)),
            )
            .await
            .expect_err("invalid name accepted");
        assert!(err.to_string().contains(needle), "{name}: {err}");
        assert!(
            env.srs.get_opt(&name).await.unwrap().is_none(),
            "{name} created"
        );
    }
    let longest = "a".repeat(55);
    env.srs
        .patch(
            &longest,
            &PatchParams::apply("e2e").dry_run(),
            &Patch::Apply(&named(&longest)),
        )
        .await
        .expect("a 55-character name is valid");
    // Pinned images: a digest, or a tag and a digest (what `docker buildx` and CI print).
    let digest = "a".repeat(64);
    for image in [
        format!("shortener@sha256:{digest}"),
        format!("registry:5000/shortener:v1@sha256:{digest}"),
    ] {
        let mut sr = named(NAME);
        sr["spec"]["image"] = json!(image);
        env.srs
            .patch(
                NAME,
                &PatchParams::apply("e2e").dry_run(),
                &Patch::Apply(&sr),
            )
            .await
            .unwrap_or_else(|e| panic!("{image} refused: {e}"));
    }

    env.healthy_v1().await;
    // port is immutable
    let mut spec = env.spec("shortener:v1", &[]);
    spec["port"] = json!(9090);
    let err = env.apply(spec).await.expect_err("port change accepted");
    assert!(err.to_string().contains("spec.port is immutable"), "{err}");

    env.srs
        .delete(NAME, &DeleteParams::foreground())
        .await
        .unwrap();
    let deployments = Api::<Deployment>::namespaced(env.client.clone(), &env.ns);
    let services = Api::<Service>::namespaced(env.client.clone(), &env.ns);
    eventually("owned objects deleted", Duration::from_secs(60), || async {
        let d = deployments.list(&ListParams::default()).await.ok()?;
        let s = services
            .list(&ListParams::default().labels("app.kubernetes.io/instance=web"))
            .await
            .ok()?;
        let sr = env.srs.get_opt(NAME).await.ok()?;
        (d.items.is_empty() && s.items.is_empty() && sr.is_none()).then_some(())
    })
    .await;
    env.cleanup().await;
}

#[tokio::test]
#[ignore = "needs testenv"]
async fn s8_operator_restarted_mid_rollout_resumes() {
    let mut env = Env::new("s8").await;
    env.healthy_v1().await;
    let traffic = Traffic::start(&env).await;
    let mut spec = env.spec("shortener:v2", &[]);
    spec["analysis"]["bakeSeconds"] = json!(15);
    env.apply(spec).await.unwrap();
    env.wait_phase(Phase::Analyzing, Duration::from_secs(60))
        .await;
    env.restart_operator().await;
    let sr = env.wait_outcome(2, Outcome::Promoted).await;
    traffic.more(30).await;
    let tally = traffic.stop().await;
    let st = sr.status.unwrap();
    assert_eq!(st.stable_revision, Some(2));
    assert_eq!(
        st.history.len(),
        2,
        "no revision restarted: {:?}",
        st.history
    );
    assert_eq!(tally.failed, 0, "{tally:?}");
    env.cleanup().await;
}

/// Two replicas with `--leader-elect`: only the Lease holder reconciles, and when it stops
/// gracefully (SIGTERM, as in a rolling upgrade of the operator) it gives the Lease up, so the
/// standby carries on with the next release without waiting for the Lease to expire.
#[tokio::test]
#[ignore = "needs testenv: make e2e"]
async fn s14_standby_takes_over_when_the_leader_stops() {
    let mut env = Env::new("s14").await;
    env.operator.kill().await.unwrap();
    let holder = || lease_holder(&env);
    let mut replicas = spawn_replicas(&env);
    env.healthy_v1().await;
    let leader = eventually("a Lease holder", Duration::from_secs(30), holder).await;
    let leader_at = replicas
        .iter()
        .position(|(id, _, _)| *id == leader)
        .unwrap();
    let (_, standby_addr, _) = &replicas[1 - leader_at];
    let standby_metrics = reqwest::get(format!("http://{standby_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let standby_reconciles = standby_metrics
        .lines()
        .find_map(|l| l.strip_prefix("shortener_operator_reconciles_total "))
        .map(|v| v.trim().parse::<f64>().unwrap());
    assert!(
        standby_reconciles.unwrap_or(0.0) == 0.0,
        "the standby reconciled while {leader} held the Lease: {standby_reconciles:?}"
    );

    let (_, _, mut leading) = replicas.remove(leader_at);
    let standby = replicas[0].0;
    let stopping = Instant::now();
    let pid = leading.id().unwrap().to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(sent.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), leading.wait())
        .await
        .expect("the leader stops within 30 s of SIGTERM")
        .unwrap();
    assert!(exit.success(), "graceful stop exits 0: {exit}");
    let after = holder().await;
    assert_ne!(
        after.as_deref(),
        Some(leader.as_str()),
        "the Lease was given up on stop"
    );
    eventually(
        "the standby holds the Lease",
        Duration::from_secs(30),
        || async { (holder().await.as_deref() == Some(standby)).then_some(()) },
    )
    .await;
    eprintln!(
        "s14: standby took over {:?} after SIGTERM",
        stopping.elapsed()
    );

    env.apply(env.spec("shortener:v2", &[])).await.unwrap();
    env.wait_outcome(2, Outcome::Promoted).await;
    assert_eq!(holder().await.as_deref(), Some(standby));
    for (_, _, mut child) in replicas {
        let _ = child.kill().await;
    }
    env.cleanup().await;
}

/// Rolling, a revision that fails its analysis after promotion: Kubernetes replaces its pods
/// with the stable template's one by one, and they serve errors until the last has gone. The
/// incident stays open until then, and that whole time is charged to the SLA budget.
#[tokio::test]
#[ignore = "needs testenv"]
async fn s15_rolling_rollback_after_promotion_is_charged_until_the_bad_pods_are_gone() {
    let env = Env::new("s15").await;
    let rolling = |image: &str, vars: &[(&str, &str)]| {
        let mut spec = env.rolling_spec(image, vars);
        spec["analysis"]["bakeSeconds"] = json!(60);
        spec
    };
    env.apply(rolling("shortener:v1", &[])).await.unwrap();
    env.wait_outcome(1, Outcome::Promoted).await;
    env.wait_phase(Phase::Healthy, Duration::from_secs(90))
        .await;
    let traffic = Traffic::start(&env).await;
    traffic.more(20).await;
    env.apply(rolling(
        "shortener:v2",
        &[("SHORTENER_FAULT", "errors-after=8s")],
    ))
    .await
    .unwrap();
    env.wait_outcome(2, Outcome::Failed).await;
    let sr = env
        .wait("traffic restored", Duration::from_secs(90), |sr| {
            sr.status
                .as_ref()
                .and_then(|s| s.last_incident.as_ref())
                .is_some_and(|i| i.revision == 2 && i.recovered_at.is_some())
        })
        .await;
    assert_eq!(
        revision_outcome(&sr, 2).1.as_deref(),
        Some("AnalysisFailed")
    );
    let st = sr.status.unwrap();
    let incident = st.last_incident.clone().unwrap();
    let (rolled_back, recovered) = (
        incident.rolled_back_at.unwrap(),
        incident.recovered_at.unwrap(),
    );
    assert!(
        recovered > rolled_back,
        "restored only once v2's pods were replaced: {incident:?}"
    );
    // The whole outage, rollout of v1's pods included, is charged.
    let undo = recovered.duration_since(rolled_back).as_secs_f64();
    assert!(
        incident.downtime_seconds >= undo.floor(),
        "downtime {} < rolling undo {undo:.1}s",
        incident.downtime_seconds
    );
    let budget = st.budget.unwrap();
    assert!(budget.used_seconds as f64 >= incident.downtime_seconds);
    env.wait_warning("AnalysisFailed").await;
    // No pod of v2 is left serving; from here on every request succeeds.
    let before = traffic.tally().await.failed;
    traffic.more(30).await;
    let tally = traffic.stop().await;
    assert_eq!(tally.failed, before, "no failure after recovery: {tally:?}");
    eprintln!(
        "s15: rolling undo {undo:.1}s; downtime charged {}s; failed requests {} of {}",
        incident.downtime_seconds,
        tally.failed,
        tally.ok + tally.failed
    );
    env.cleanup().await;
}

/// A rollback by hand to an earlier healthy revision brings back exactly what ran then, not
/// that image under today's settings: blue-green keeps the retired revision's Deployment at zero
/// replicas and scales that very object back up.
#[tokio::test]
#[ignore = "needs testenv"]
async fn s16_manual_rollback_restores_the_revision_exactly_as_it_ran() {
    let env = Env::new("s16").await;
    env.apply(env.spec("shortener:v1", &[("RELEASE_NOTE", "first")]))
        .await
        .unwrap();
    env.wait_outcome(1, Outcome::Promoted).await;
    let sr = env
        .wait_phase(Phase::Healthy, Duration::from_secs(30))
        .await;
    let v1_name = format!("{NAME}-{}", sr.status.unwrap().history[0].pod_template_hash);
    let deployments = Api::<Deployment>::namespaced(env.client.clone(), &env.ns);
    let v1_uid = deployments.get(&v1_name).await.unwrap().metadata.uid;

    env.apply(env.spec("shortener:v2", &[("RELEASE_NOTE", "second")]))
        .await
        .unwrap();
    env.wait_outcome(2, Outcome::Promoted).await;
    env.wait_phase(Phase::Healthy, Duration::from_secs(30))
        .await;
    eventually(
        "v1 retired to zero replicas",
        Duration::from_secs(30),
        || async {
            let d = deployments.get(&v1_name).await.ok()?;
            (d.spec.replicas == Some(0)).then_some(())
        },
    )
    .await;

    let traffic = Traffic::start(&env).await;
    traffic.more(20).await;
    let patch = json!({"metadata": {"annotations": {"shortener.dev/rollback-to": "previous"}}});
    env.srs
        .patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let sr = env
        .wait("v1 serving again", Duration::from_secs(90), |sr| {
            let st = sr.status.as_ref();
            sr.status
                .as_ref()
                .is_some_and(|s| s.phase == Phase::RolledBack)
                && st
                    .and_then(|s| s.stable_revision)
                    .and_then(|n| st?.history.iter().find(|r| r.revision == n))
                    .is_some_and(|r| r.image == "shortener:v1" && r.revision == 3)
        })
        .await;
    traffic.more(30).await;
    let tally = traffic.stop().await;

    let d = deployments.get(&v1_name).await.unwrap();
    assert_eq!(
        d.metadata.uid, v1_uid,
        "the same Deployment, scaled back up"
    );
    let env_of = |d: &Deployment| -> Vec<(String, String)> {
        d.spec.template.spec.as_ref().unwrap().containers[0]
            .env
            .iter()
            .flatten()
            .filter(|e| e.name == "RELEASE_NOTE")
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect()
    };
    assert_eq!(
        env_of(&d),
        vec![("RELEASE_NOTE".to_string(), "first".to_string())],
        "v1's settings, not today's spec"
    );
    assert_eq!(d.spec.replicas, Some(2));
    let st = sr.status.unwrap();
    assert_eq!(
        st.history
            .iter()
            .find(|r| r.revision == 2)
            .map(|r| r.outcome),
        Some(Outcome::Failed)
    );
    assert_eq!(tally.failed, 0, "{tally:?}");
    env.cleanup().await;
}

/// A webhook receiver on loopback: every POST's arrival time and JSON body.
struct Receiver {
    url: String,
    posts: tokio::sync::mpsc::UnboundedReceiver<(jiff::Timestamp, serde_json::Value)>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(token: &str) -> Receiver {
        let (tx, posts) = tokio::sync::mpsc::unbounded_channel();
        let app = axum::Router::new().route(
            &format!("/hooks/{token}"),
            axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send((jiff::Timestamp::now(), body));
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/{token}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { url, posts, server }
    }
}

#[tokio::test]
#[ignore = "needs testenv"]
async fn s9_incident_is_posted_once_to_the_webhook_without_leaking_its_url() {
    let env = Env::new("s9").await;
    // The path is the secret part of a Slack-style URL.
    let token = format!("T0E2E/B0E2E/{}", env.ns.replace('-', ""));
    let mut receiver = Receiver::start(&token).await;
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(env.client.clone(), &env.ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "alerts"},
                "stringData": {"url": receiver.url},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let with_webhook = |mut spec: serde_json::Value| {
        // One line of context, so the shortener's start-up lines (at least three lines
        // before its first error: it logs a readiness probe before the smoke test) are
        // unrelated lines the excerpt must leave out.
        spec["incident"] = json!({
            "contextLines": 1,
            "webhook": {"secretRef": {"name": "alerts", "key": "url"}},
        });
        spec
    };
    env.apply(with_webhook(env.spec("shortener:v1", &[])))
        .await
        .unwrap();
    env.wait_outcome(1, Outcome::Promoted).await;
    env.wait_phase(Phase::Healthy, Duration::from_secs(30))
        .await;
    // The promotion is announced too, once, told apart by `event`.
    let (_, ok) = tokio::time::timeout(Duration::from_secs(30), receiver.posts.recv())
        .await
        .expect("a webhook POST for the promotion within 30 s")
        .unwrap();
    assert_eq!(ok["event"], "succeeded", "{ok}");
    assert_eq!(ok["revision"], 1, "{ok}");
    assert_eq!(ok["reason"], "RolloutSucceeded", "{ok}");
    env.apply(with_webhook(
        env.spec("shortener:v2", &[("SHORTENER_FAULT", "shorten-500")]),
    ))
    .await
    .unwrap();
    env.wait_outcome(2, Outcome::Failed).await;

    let (received_at, body) = tokio::time::timeout(Duration::from_secs(30), receiver.posts.recv())
        .await
        .expect("a webhook POST within 30 s of the failure")
        .unwrap();
    let sr = env
        .wait("incident recorded", Duration::from_secs(10), |sr| {
            sr.status
                .as_ref()
                .and_then(|s| s.last_incident.as_ref())
                .is_some_and(|i| i.revision == 2)
        })
        .await;
    let incident = sr.status.unwrap().last_incident.unwrap();
    // detectedAt has whole seconds, hence the extra second.
    let delay = received_at
        .duration_since(incident.detected_at)
        .as_secs_f64();
    assert!(
        (-1.0..10.0).contains(&delay),
        "POST {delay:.1}s after detection (detected {}, received {received_at})",
        incident.detected_at
    );
    let text = body["text"].as_str().expect("a text field for Slack/Teams");
    assert!(text.contains("revision 2"), "{text}");
    assert!(text.contains("SmokeTestFailed"), "{text}");
    assert!(
        text.contains("Traceback (most recent call last):"),
        "{text}"
    );
    assert_eq!(body["reason"], "SmokeTestFailed");
    assert_eq!(body["revision"], 2);
    assert_eq!(body["event"], "incident");
    let excerpt = body["excerpt"].as_str().expect("excerpt field");
    assert_shortener_error_excerpt(excerpt, 1);
    // Two lines before the first error: outside one line of context. (The `listening` line
    // is now right before it: request lines are DEBUG, so no probe lines lie in between.)
    assert!(
        !excerpt.contains("fault injection is on"),
        "an unrelated line kept:\n{excerpt}"
    );

    // One incident, one POST: nothing more arrives (no duplicate from a later reconcile).
    let again = tokio::time::timeout(Duration::from_secs(5), receiver.posts.recv()).await;
    assert!(again.is_err(), "a second POST: {again:?}");

    let log = std::fs::read_to_string(root().join(format!(".testenv/e2e/operator-{}.log", env.ns)))
        .unwrap();
    assert!(log.contains("incident webhook delivered"), "{log}");
    assert!(!log.contains(&token), "webhook URL in the operator's log");
    assert!(
        !log.contains("/hooks/"),
        "webhook path in the operator's log"
    );
    eprintln!("s9: webhook POST {delay:.1}s after detectedAt");
    receiver.server.abort();
    env.cleanup().await;
}

/// The steady client's failures as one window, in seconds.
fn failure_window(tally: &Tally) -> f64 {
    match (tally.first_failure, tally.last_failure) {
        (Some(first), Some(last)) => last.duration_since(first).as_secs_f64(),
        _ => 0.0,
    }
}

/// Applies v2 failing `errors-after` seconds after start (a few seconds after its smoke
/// test), long bake, and waits for its analysis rollback; returns the release and what the
/// client saw.
async fn post_promotion_failure(env: &Env, sla: serde_json::Value) -> (ShortenerRelease, Tally) {
    let traffic = Traffic::start(env).await;
    traffic.more(20).await;
    let mut spec = env.spec("shortener:v2", &[("SHORTENER_FAULT", "errors-after=8s")]);
    spec["analysis"]["bakeSeconds"] = json!(60);
    spec["sla"] = sla;
    env.apply(spec).await.unwrap();
    env.wait_outcome(2, Outcome::Failed).await;
    // The outage closes once traffic is back on v1: downtime is final from then on.
    let sr = env
        .wait("downtime charged", Duration::from_secs(30), |sr| {
            sr.status.as_ref().is_some_and(|s| {
                s.budget
                    .as_ref()
                    .is_some_and(|b| b.ledger.open_outage.is_none() && b.used_seconds > 0)
            })
        })
        .await;
    traffic.more(50).await;
    let tally = traffic.stop().await;
    assert_eq!(
        revision_outcome(&sr, 2).1.as_deref(),
        Some("AnalysisFailed")
    );
    (sr, tally)
}

#[tokio::test]
#[ignore = "needs testenv"]
async fn s10_post_promotion_failure_is_charged_to_the_downtime_budget() {
    let env = Env::new("s10").await;
    let sr = env.healthy_v1().await;
    let before = sr.status.unwrap().budget.unwrap();
    assert_eq!(before.allowed_seconds, 15 * 60, "default 15m a year");
    assert_eq!(before.used_seconds, 0, "{before:?}");

    let (sr, tally) = post_promotion_failure(&env, json!({})).await;
    let st = sr.status.unwrap();
    let budget = st.budget.unwrap();
    let incident = st.last_incident.unwrap();
    assert_eq!(budget.allowed_seconds, 15 * 60);
    assert!(budget.used_seconds > 0, "{budget:?}");
    assert_eq!(
        budget.remaining_seconds,
        budget.allowed_seconds - budget.used_seconds
    );
    // One outage so far: the budget used is that incident's downtime.
    assert_eq!(incident.revision, 2);
    assert_eq!(
        incident.downtime_seconds, budget.used_seconds as f64,
        "{incident:?} {budget:?}"
    );
    // Roughly what users saw: whole seconds at each end, and the analysis interval (1 s)
    // in which the first errors were seen.
    let seen = failure_window(&tally);
    assert!(tally.failed > 0, "{tally:?}");
    assert!(
        (budget.used_seconds as f64) <= seen + 4.0,
        "charged {}s, client saw failures for {seen:.1}s",
        budget.used_seconds
    );
    let metrics = env.operator_metrics().await;
    let gauge = metrics
        .lines()
        .find(|l| {
            l.starts_with("shortener_operator_downtime_budget_remaining_seconds{")
                && l.contains(&format!("namespace=\"{}\"", env.ns))
                && l.contains(&format!("name=\"{NAME}\""))
        })
        .and_then(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok());
    assert_eq!(gauge, Some(budget.remaining_seconds as f64), "{metrics}");
    eprintln!(
        "s10: charged {}s (remaining {}s of {}s); client saw {} failed requests over {seen:.1}s",
        budget.used_seconds, budget.remaining_seconds, budget.allowed_seconds, tally.failed
    );
    env.cleanup().await;
}

#[tokio::test]
#[ignore = "needs testenv"]
async fn s11_exhausted_budget_freezes_the_next_release_until_overridden() {
    let env = Env::new("s11").await;
    env.healthy_v1().await;
    let sla = json!({"allowedDowntimePerYear": "1s", "freezeWhenExhausted": true});
    let (sr, _) = post_promotion_failure(&env, sla.clone()).await;
    let budget = sr.status.unwrap().budget.unwrap();
    assert_eq!(budget.allowed_seconds, 1);
    assert_eq!(budget.remaining_seconds, 0, "{budget:?}");

    let mut spec = env.spec("shortener:v3", &[]);
    spec["sla"] = sla;
    env.apply(spec.clone()).await.unwrap();
    let sr = env
        .wait_phase(Phase::Blocked, Duration::from_secs(30))
        .await;
    let st = sr.status.unwrap();
    assert!(
        st.conditions.iter().any(|c| c.reason == "BudgetExhausted"),
        "{:?}",
        st.conditions
    );
    assert!(st.message.contains("budget"), "{}", st.message);
    assert_eq!(st.stable_revision, Some(1));
    assert!(
        st.history.iter().all(|r| r.image != "shortener:v3"),
        "v3 got a revision: {:?}",
        st.history
    );
    let images = deployment_images(&env, &ListParams::default()).await;
    assert!(
        !images.iter().any(|i| i == "shortener:v3"),
        "a Deployment runs v3 while frozen: {images:?}"
    );
    env.wait_warning("BudgetExhausted").await;

    let sr = json!({
        "apiVersion": "shortener.dev/v1alpha1",
        "kind": "ShortenerRelease",
        "metadata": {"name": NAME, "annotations": {"shortener.dev/budget-override": "true"}},
        "spec": spec,
    });
    env.srs
        .patch(NAME, &PatchParams::apply("e2e").force(), &Patch::Apply(&sr))
        .await
        .unwrap();
    env.wait_outcome(3, Outcome::Promoted).await;
    let sr = env
        .wait_phase(Phase::Healthy, Duration::from_secs(30))
        .await;
    let st = sr.status.unwrap();
    assert_eq!(st.stable_revision, Some(3));
    env.cleanup().await;
}

/// A promotion gate in another tenant's namespace (issue 15): until the gate's owners opt in
/// (annotation `shortener.dev/promotion-gate-for` naming this namespace) the release is
/// blocked and its status says nothing of the gate, neither that it exists nor its image;
/// once they do, it rolls out.
#[tokio::test]
#[ignore = "needs testenv"]
async fn s32_cross_namespace_gate_is_refused_until_the_gate_opts_in() {
    let mut env = Env::new("xgate").await;
    let tenant_ns = support::unique_namespace("e2e-xgate-tenant");
    Api::<Namespace>::all(env.client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": tenant_ns}})).unwrap(),
        )
        .await
        .unwrap();
    // One operator watching both namespaces.
    env.operator.kill().await.unwrap();
    env.operator = spawn_operator(&format!("{},{tenant_ns}", env.ns), &env.metrics_addr);
    env.healthy_v1().await;

    let tenant = Api::<ShortenerRelease>::namespaced(env.client.clone(), &tenant_ns);
    let tenant_store = format!("{}-tenant.db", env.store.display());
    let mut spec = env.spec("shortener:v1", &[]);
    spec["env"] = json!([{"name": "SHORTENER_STORE", "value": tenant_store}]);
    spec["promotion"] = json!({"requires": {"namespace": env.ns, "name": NAME}});
    let sr = json!({
        "apiVersion": "shortener.dev/v1alpha1",
        "kind": "ShortenerRelease",
        "metadata": {"name": NAME},
        "spec": spec,
    });
    tenant
        .patch(NAME, &PatchParams::apply("e2e").force(), &Patch::Apply(&sr))
        .await
        .unwrap();
    let tenant_status = |what: &'static str, pred: fn(&ShortenerRelease) -> bool| {
        let tenant = tenant.clone();
        eventually(what, Duration::from_secs(150), move || {
            let tenant = tenant.clone();
            async move {
                let sr = tenant.get(NAME).await.ok()?;
                let st = sr.status.as_ref()?;
                (st.observed_generation == sr.metadata.generation && pred(&sr)).then_some(sr)
            }
        })
    };
    let blocked = tenant_status("the tenant blocked on its gate", |sr| {
        sr.status.as_ref().is_some_and(|s| {
            s.phase == Phase::Blocked
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "Progressing" && c.reason == "PromotionGateNotFound")
        })
    })
    .await;
    let st = blocked.status.unwrap();
    assert!(
        st.history.is_empty(),
        "nothing rolled out: {:?}",
        st.history
    );
    // The same words as for a gate that does not exist: nothing about the other tenant.
    assert!(
        st.message.contains("not found or is not shared"),
        "{}",
        st.message
    );
    assert!(!st.message.contains("shortener:v1"), "{}", st.message);

    env.srs
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "shortener.dev/promotion-gate-for": tenant_ns
            }}})),
        )
        .await
        .unwrap();
    let sr = tenant_status("the tenant Healthy on v1 once shared", |sr| {
        sr.status
            .as_ref()
            .is_some_and(|s| s.phase == Phase::Healthy && s.stable_revision == Some(1))
    })
    .await;
    assert_eq!(revision_outcome(&sr, 1).0, Outcome::Promoted);
    let _ = Api::<Namespace>::all(env.client.clone())
        .delete(&tenant_ns, &DeleteParams::default())
        .await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{tenant_store}{suffix}"));
    }
    env.cleanup().await;
}

/// Production gated on staging (issue 7): production waits while staging bakes an image,
/// proceeds by itself once staging is Healthy with it, and never deploys an image that
/// failed in staging. Both releases live in the scenario's namespace, under one operator.
#[tokio::test]
#[ignore = "needs testenv"]
async fn s12_production_waits_for_staging_and_never_gets_what_failed_there() {
    const PROD: &str = "web-production";
    let env = Env::new("gate").await;
    let prod_store = format!("{}-production.db", env.store.display());
    let prod_spec = |image: &str| {
        let mut spec = env.spec(image, &[]);
        spec["env"] = json!([{"name": "SHORTENER_STORE", "value": prod_store}]);
        spec["promotion"] = json!({"requires": {"name": NAME}});
        spec
    };
    let apply_prod = |image: &str| {
        let sr = json!({
            "apiVersion": "shortener.dev/v1alpha1",
            "kind": "ShortenerRelease",
            "metadata": {"name": PROD},
            "spec": prod_spec(image),
        });
        let srs = env.srs.clone();
        async move {
            srs.patch(PROD, &PatchParams::apply("e2e").force(), &Patch::Apply(&sr))
                .await
                .unwrap();
        }
    };
    let wait_prod = |what: &'static str, timeout: Duration, pred: fn(&ShortenerRelease) -> bool| {
        let srs = env.srs.clone();
        eventually(what, timeout, move || {
            let srs = srs.clone();
            async move {
                let sr = srs.get(PROD).await.ok()?;
                let st = sr.status.as_ref()?;
                (st.observed_generation == sr.metadata.generation && pred(&sr)).then_some(sr)
            }
        })
    };
    fn progressing_reason(sr: &ShortenerRelease) -> Option<&str> {
        sr.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "Progressing")
            .map(|c| c.reason.as_str())
    }
    fn images(sr: &ShortenerRelease) -> Vec<&str> {
        sr.status
            .as_ref()
            .map(|s| s.history.iter().map(|r| r.image.as_str()).collect())
            .unwrap_or_default()
    }

    // Production first: its gate does not exist yet.
    apply_prod("shortener:v1").await;
    wait_prod(
        "production blocked on a missing gate",
        Duration::from_secs(30),
        |sr| progressing_reason(sr) == Some("PromotionGateNotFound"),
    )
    .await;

    // Staging appears with v1: production waits for its bake, then starts by itself.
    env.apply(env.spec("shortener:v1", &[])).await.unwrap();
    let sr = wait_prod(
        "production awaiting promotion",
        Duration::from_secs(30),
        |sr| progressing_reason(sr) == Some("AwaitingPromotion"),
    )
    .await;
    let st = sr.status.unwrap();
    assert_eq!(st.phase, Phase::Blocked);
    assert!(st.history.is_empty(), "nothing started: {:?}", st.history);
    assert!(
        st.message.contains(NAME) && st.message.contains("shortener:v1"),
        "{}",
        st.message
    );
    env.wait_outcome(1, Outcome::Promoted).await;
    // Well inside the operator's 30 s fallback requeue: the watch on staging woke it.
    wait_prod(
        "production started after staging",
        Duration::from_secs(15),
        |sr| !images(sr).is_empty(),
    )
    .await;
    wait_prod("production Healthy on v1", Duration::from_secs(120), |sr| {
        sr.status
            .as_ref()
            .is_some_and(|s| s.phase == Phase::Healthy)
    })
    .await;

    // v2 fails its smoke test in staging: production, given the same image, never runs it.
    env.apply(env.spec("shortener:v2", &[("SHORTENER_FAULT", "shorten-500")]))
        .await
        .unwrap();
    apply_prod("shortener:v2").await;
    let staging = env.wait_outcome(2, Outcome::Failed).await;
    assert_eq!(
        revision_outcome(&staging, 2).1.as_deref(),
        Some("SmokeTestFailed")
    );
    let sr = wait_prod(
        "production still waiting on v2",
        Duration::from_secs(30),
        |sr| progressing_reason(sr) == Some("AwaitingPromotion"),
    )
    .await;
    assert_eq!(images(&sr), vec!["shortener:v1"]);

    // v3 works in staging: production takes it after staging's bake, skipping v2 for good.
    env.apply(env.spec("shortener:v3", &[])).await.unwrap();
    apply_prod("shortener:v3").await;
    env.wait_outcome(3, Outcome::Promoted).await;
    let sr = wait_prod("production Healthy on v3", Duration::from_secs(150), |sr| {
        sr.status
            .as_ref()
            .is_some_and(|s| s.phase == Phase::Healthy && images(sr).contains(&"shortener:v3"))
    })
    .await;
    assert_eq!(images(&sr), vec!["shortener:v1", "shortener:v3"]);
    let prod_images = deployment_images(
        &env,
        &ListParams::default().labels(&format!("app.kubernetes.io/instance={PROD}")),
    )
    .await;
    assert!(
        !prod_images.iter().any(|i| i == "shortener:v2"),
        "{prod_images:?}"
    );
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{prod_store}{suffix}"));
    }
    env.cleanup().await;
}

#[tokio::test]
#[ignore = "needs testenv"]
async fn s13_rolling_release_rolls_back_a_crash_loop_in_place() {
    let env = Env::new("s13").await;
    let rolling = |image: &str, vars: &[(&str, &str)]| env.rolling_spec(image, vars);
    env.apply(rolling("shortener:v1", &[])).await.unwrap();
    env.wait_outcome(1, Outcome::Promoted).await;
    let sr = env
        .wait_phase(Phase::Healthy, Duration::from_secs(30))
        .await;
    let v1_hash = sr.status.unwrap().history[0].pod_template_hash.clone();

    let traffic = Traffic::start(&env).await;
    traffic.more(20).await;
    env.apply(rolling(
        "shortener:v2",
        &[("SHORTENER_FAULT", "crash-on-start")],
    ))
    .await
    .unwrap();
    let sr = env.wait_outcome(2, Outcome::Failed).await;
    assert_eq!(revision_outcome(&sr, 2).1.as_deref(), Some("CrashLoop"));
    let st = sr.status.unwrap();
    assert_eq!(st.phase, Phase::RolledBack);
    assert_eq!(st.stable_revision, Some(1));

    // One Deployment, back on v1's pod template (without v2's fault), all of it ready.
    let deployments = Api::<Deployment>::namespaced(env.client.clone(), &env.ns);
    eventually(
        "the Deployment runs v1's template again",
        Duration::from_secs(60),
        || async {
            let list = deployments.list(&ListParams::default()).await.ok()?;
            let [d] = list.items.as_slice() else {
                return None;
            };
            let t = &d.spec.template;
            let labels = t.metadata.as_ref()?.labels.as_ref()?;
            let c = &t.spec.as_ref()?.containers[0];
            let faulty = c.env.iter().flatten().any(|e| e.name == "SHORTENER_FAULT");
            let status = d.status.as_ref()?;
            (d.metadata.name.as_deref() == Some(NAME)
                && labels.get("shortener.dev/revision") == Some(&v1_hash)
                && c.image.as_deref() == Some("shortener:v1")
                && !faulty
                && status.updated_replicas == Some(2)
                && status.ready_replicas == Some(2)
                && status.replicas == Some(2))
            .then_some(())
        },
    )
    .await;
    traffic.more(30).await;
    let tally = traffic.stop().await;
    assert_eq!(tally.failed, 0, "v1 kept serving: {tally:?}");

    env.apply(rolling("shortener:v3", &[])).await.unwrap();
    env.wait_outcome(3, Outcome::Promoted).await;
    let sr = env
        .wait_phase(Phase::Healthy, Duration::from_secs(30))
        .await;
    let st = sr.status.unwrap();
    assert_eq!(st.stable_revision, Some(3));
    let list = deployments.list(&ListParams::default()).await.unwrap();
    let images: Vec<_> = list
        .items
        .iter()
        .map(|d| {
            (
                d.metadata.name.clone().unwrap_or_default(),
                d.spec.template.spec.as_ref().unwrap().containers[0]
                    .image
                    .clone()
                    .unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(images, vec![(NAME.to_string(), "shortener:v3".to_string())]);
    eprintln!(
        "s13: v2 crash loop rolled back in place, {} requests, 0 failed",
        tally.ok
    );
    env.cleanup().await;
}

/// `kubectl` against testenv, in the scenario's namespace.
async fn kubectl(env: &Env, args: &[&str]) -> std::process::Output {
    Command::new(root().join("testenv/bin/kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args(["-n", &env.ns])
        .args(args)
        .output()
        .await
        .unwrap()
}

/// `kubectl shortener status web --wait`: its exit code and output.
async fn plugin_wait(env: &Env, timeout: &str) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-shortener"))
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args([
            "-n",
            &env.ns,
            "status",
            NAME,
            "--wait",
            "--timeout",
            timeout,
        ])
        .output()
        .await
        .unwrap();
    let text = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// Ready, non-terminating pods matching `selector` (the scale subresource's).
async fn ready_pods(env: &Env, selector: &str) -> usize {
    use k8s_openapi::api::core::v1::Pod;
    Api::<Pod>::namespaced(env.client.clone(), &env.ns)
        .list(&ListParams::default().labels(selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count()
}

/// `kubectl scale sr/web --replicas=3` on a Healthy release: the serving revision grows to
/// 3 ready pods in place (no new revision, same pod template hash), and the scale
/// subresource reports them with the selector a HorizontalPodAutoscaler would use.
async fn scale_in_place(env: &Env) -> String {
    let before = env
        .wait_phase(Phase::Healthy, Duration::from_secs(30))
        .await;
    let history = before.status.as_ref().unwrap().history.clone();
    let out = kubectl(env, &["scale", "sr/web", "--replicas=3"]).await;
    assert!(
        out.status.success(),
        "kubectl scale: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sr = env
        .wait("3 serving replicas", Duration::from_secs(90), |sr| {
            sr.status
                .as_ref()
                .is_some_and(|s| s.phase == Phase::Healthy && s.replicas == Some(3))
        })
        .await;
    let st = sr.status.unwrap();
    assert_eq!(
        st.history, history,
        "no new revision, nothing rolled out again"
    );
    let selector = st.selector.clone().expect("status.selector");
    assert_eq!(ready_pods(env, &selector).await, 3, "selector {selector}");
    let path = format!(
        "/apis/shortener.dev/v1alpha1/namespaces/{}/shortenerreleases/web/scale",
        env.ns
    );
    let out = kubectl(env, &["get", "--raw", &path]).await;
    let scale: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(scale["spec"]["replicas"], 3, "{scale}");
    assert_eq!(scale["status"]["replicas"], 3, "{scale}");
    assert_eq!(scale["status"]["selector"], selector.as_str(), "{scale}");
    selector
}

/// A crash-looping release applied right after a Healthy one: `status --wait` does not take
/// the previous generation's Healthy for an answer, and exits 2 (RolledBack); `kubectl wait`
/// on `Stalled`, or on `Reconciling=False` followed by `Ready`, reports the failure too.
async fn failure_is_reported(env: &Env, spec: serde_json::Value) {
    env.apply(spec).await.unwrap();
    let (code, text) = plugin_wait(env, "3m").await;
    assert_eq!(
        code,
        Some(2),
        "status --wait on a rolled-back release: {text}"
    );
    assert!(text.contains("RolledBack"), "{text}");
    let out = kubectl(
        env,
        &["wait", "--for=condition=Stalled", "sr/web", "--timeout=10s"],
    )
    .await;
    assert!(
        out.status.success(),
        "kubectl wait Stalled: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kubectl(
        env,
        &[
            "wait",
            "--for=condition=Reconciling=False",
            "sr/web",
            "--timeout=10s",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kubectl(
        env,
        &["wait", "--for=condition=Ready", "sr/web", "--timeout=1s"],
    )
    .await;
    assert!(
        !out.status.success(),
        "Ready must not be met after a rollback"
    );
}

#[tokio::test]
#[ignore = "needs testenv"]
async fn s30_blue_green_scale_subresource_and_wait_for_a_failure() {
    let env = Env::new("s30").await;
    env.apply(env.spec("shortener:v1", &[])).await.unwrap();
    let (code, text) = plugin_wait(&env, "3m").await;
    assert_eq!(code, Some(0), "status --wait on a healthy release: {text}");
    let selector = scale_in_place(&env).await;
    assert!(selector.contains("shortener.dev/revision="), "{selector}");

    // A good v2 cannot pass its 12 s bake within 1 s: the previous generation's Healthy is
    // not taken for an answer, and the timeout has its own exit code; then it succeeds.
    let mut v2 = env.spec("shortener:v2", &[]);
    v2["replicas"] = json!(3);
    env.apply(v2).await.unwrap();
    let (code, text) = plugin_wait(&env, "1s").await;
    assert_eq!(code, Some(6), "status --wait timing out: {text}");
    assert!(text.contains("timed out"), "{text}");
    let (code, text) = plugin_wait(&env, "3m").await;
    assert_eq!(code, Some(0), "status --wait on healthy v2: {text}");

    let mut v3 = env.spec("shortener:v3", &[("SHORTENER_FAULT", "crash-on-start")]);
    v3["replicas"] = json!(3);
    failure_is_reported(&env, v3).await;
    // The stable revision still serves with the 3 replicas asked for.
    let sr = env.srs.get(NAME).await.unwrap();
    let st = sr.status.unwrap();
    assert_eq!(st.phase, Phase::RolledBack);
    assert_eq!(ready_pods(&env, st.selector.as_deref().unwrap()).await, 3);
    env.cleanup().await;
}

#[tokio::test]
#[ignore = "needs testenv"]
async fn s31_rolling_scale_subresource_and_wait_for_a_failure() {
    let env = Env::new("s31").await;
    env.apply(env.rolling_spec("shortener:v1", &[]))
        .await
        .unwrap();
    let (code, text) = plugin_wait(&env, "3m").await;
    assert_eq!(code, Some(0), "status --wait on a healthy release: {text}");
    let selector = scale_in_place(&env).await;
    assert_eq!(selector, format!("app.kubernetes.io/instance={NAME}"));

    let mut v2 = env.rolling_spec("shortener:v2", &[("SHORTENER_FAULT", "crash-on-start")]);
    v2["replicas"] = json!(3);
    failure_is_reported(&env, v2).await;
    env.cleanup().await;
}

/// `spec` without the scenario's shared SQLite file: the store comes from `spec.store`.
fn without_env_store(mut spec: serde_json::Value) -> serde_json::Value {
    if let Some(vars) = spec["env"].as_array_mut() {
        vars.retain(|v| v["name"] != "SHORTENER_STORE");
    }
    spec
}

/// Creates a URL through `addr`, returning its slug.
async fn shorten(http: &reqwest::Client, addr: &str, token: &str, url: &str) -> Option<String> {
    let resp = http
        .post(format!("http://{addr}/api/v1/urls"))
        .bearer_auth(token)
        .json(&json!({ "url": url }))
        .send()
        .await
        .ok()?;
    if resp.status().as_u16() != 201 {
        return None;
    }
    let body: serde_json::Value = resp.json().await.ok()?;
    body["slug"].as_str().map(str::to_string)
}

/// Where `slug` redirects to through `addr`, if it does.
async fn resolve(http: &reqwest::Client, addr: &str, slug: &str) -> Option<String> {
    let resp = http
        .get(format!("http://{addr}/{slug}"))
        .send()
        .await
        .ok()?;
    if !resp.status().is_redirection() {
        return None;
    }
    resp.headers()
        .get("location")?
        .to_str()
        .ok()
        .map(str::to_string)
}

fn plain_http() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(2))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Every (slug, url) resolves through `addr` (retried: a request may meet a pod going away).
async fn assert_all_resolve(
    http: &reqwest::Client,
    addr: &str,
    urls: &[(String, String)],
    when: &str,
) {
    for (slug, url) in urls {
        let got = eventually(
            &format!("{slug} resolving {when}"),
            Duration::from_secs(10),
            || async { resolve(http, addr, slug).await },
        )
        .await;
        assert_eq!(&got, url, "{slug} {when}");
    }
}

/// The PostgreSQL store: the URL comes from a Secret; URLs created through v1 resolve
/// through v2 after a blue-green promotion, and after a bad v3 is rolled back.
#[tokio::test]
#[ignore = "needs testenv and SHORTENER_E2E_PG_URL: make e2e"]
async fn s17_postgres_store_keeps_every_url_across_promotion_and_rollback() {
    let pg_url = std::env::var("SHORTENER_E2E_PG_URL")
        .expect("SHORTENER_E2E_PG_URL (make e2e starts a PostgreSQL server and sets it)");
    let env = Env::new("s17").await;
    env.create_secret("shortener-store", "url", &pg_url).await;
    let spec = |image: &str, extra: &[(&str, &str)]| {
        let mut spec = without_env_store(env.spec(image, extra));
        spec["store"] =
            json!({"postgres": {"urlSecretRef": {"name": "shortener-store", "key": "url"}}});
        spec
    };
    env.apply(spec("shortener:v1", &[])).await.unwrap();
    env.wait_outcome(1, Outcome::Promoted).await;
    env.wait_phase(Phase::Healthy, Duration::from_secs(30))
        .await;
    let deployments = Api::<Deployment>::namespaced(env.client.clone(), &env.ns);
    let d = deployments
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let store_var = d[0].spec.template.spec.as_ref().unwrap().containers[0]
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "SHORTENER_STORE")
        .cloned()
        .unwrap();
    assert_eq!(store_var.value, None, "the URL is never in the Deployment");
    assert_eq!(
        store_var.value_from.unwrap().secret_key_ref.unwrap().name,
        "shortener-store"
    );

    let addr = env.active_address().await;
    let http = plain_http();
    let token = env.api_token().await;
    let stamp = env.ns.clone();
    let mut urls = Vec::new();
    for i in 0..20 {
        let url = format!("https://example.com/{stamp}/v1/{i}");
        let slug = eventually("a URL created through v1", Duration::from_secs(10), || {
            shorten(&http, &addr, &token, &url)
        })
        .await;
        urls.push((slug, url));
    }

    let traffic = Traffic::start_at(addr.clone(), token.clone());
    env.apply(spec("shortener:v2", &[])).await.unwrap();
    env.wait_outcome(2, Outcome::Promoted).await;
    let sr = env
        .wait_phase(Phase::Healthy, Duration::from_secs(60))
        .await;
    assert_eq!(sr.status.unwrap().stable_revision, Some(2));
    let tally = traffic.stop().await;
    assert_eq!(tally.failed, 0, "blue-green on PostgreSQL: {tally:?}");
    assert_all_resolve(&http, &addr, &urls, "through v2").await;
    for i in 0..10 {
        let url = format!("https://example.com/{stamp}/v2/{i}");
        let slug = eventually("a URL created through v2", Duration::from_secs(10), || {
            shorten(&http, &addr, &token, &url)
        })
        .await;
        urls.push((slug, url));
    }

    let traffic = Traffic::start_at(addr.clone(), token.clone());
    let mut bad = spec("shortener:v3", &[("SHORTENER_FAULT", "errors-after=8s")]);
    bad["analysis"]["bakeSeconds"] = json!(60);
    env.apply(bad).await.unwrap();
    let sr = env.wait_outcome(3, Outcome::Failed).await;
    traffic.more(50).await;
    let tally = traffic.stop().await;
    let st = sr.status.clone().unwrap();
    assert_eq!(st.phase, Phase::RolledBack);
    assert_eq!(st.stable_revision, Some(2));
    assert!(st.history[2].promoted_at.is_some(), "v3 was promoted first");
    assert_all_resolve(&http, &addr, &urls, "after v3's rollback").await;
    println!(
        "s17: {} URLs from v1 and v2 resolve after v3's rollback; client during v3: {tally:?}",
        urls.len()
    );
    env.cleanup().await;
}

/// A namespace enforcing Pod Security `restricted` runs the default pods; a template the
/// policy refuses fails at once with `PodCreateFailed` and the API server's message.
#[tokio::test]
#[ignore = "needs testenv"]
async fn s18_restricted_namespace_accepts_defaults_and_refusals_fail_at_once() {
    let env = Env::new("s18").await;
    Api::<Namespace>::all(env.client.clone())
        .patch(
            &env.ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            }}})),
        )
        .await
        .unwrap();
    env.healthy_v1().await;

    let mut spec = env.spec("shortener:v2", &[]);
    spec["progressDeadlineSeconds"] = json!(600);
    spec["podTemplate"] =
        json!({"container": {"securityContext": {"allowPrivilegeEscalation": true}}});
    let applied = Instant::now();
    env.apply(spec).await.unwrap();
    let sr = env.wait_outcome(2, Outcome::Failed).await;
    let took = applied.elapsed();
    assert_eq!(
        revision_outcome(&sr, 2).1.as_deref(),
        Some("PodCreateFailed")
    );
    assert!(
        took < Duration::from_secs(60),
        "failed in {took:?}, not after progressDeadlineSeconds (600 s)"
    );
    let st = sr.status.clone().unwrap();
    assert_eq!(st.phase, Phase::RolledBack);
    assert_eq!(st.stable_revision, Some(1));
    let messages: Vec<String> = st.conditions.iter().map(|c| c.message.clone()).collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("violates PodSecurity") && m.contains("allowPrivilegeEscalation")),
        "the API server's message in the conditions: {messages:?}"
    );
    // The Event is written after the status: poll for it.
    env.wait_warning("PodCreateFailed").await;
    println!(
        "s18: PodCreateFailed {took:.2?} after apply; {}",
        messages.join(" | ")
    );
    env.cleanup().await;
}

/// The overlay reaches the Deployment; the shortener container's image and probes are the
/// operator's, and the schema says so at apply.
#[tokio::test]
#[ignore = "needs testenv"]
async fn s19_pod_template_reaches_the_deployment_and_owned_fields_are_refused() {
    let env = Env::new("s19").await;
    env.create_secret("api-token", "token", "s3cret").await;
    Api::<ServiceAccount>::namespaced(env.client.clone(), &env.ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "links"}})).unwrap(),
        )
        .await
        .unwrap();
    let mut spec = env.spec("shortener:v1", &[]);
    spec["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "api-token", "key": "token"}}}));
    spec["resources"] = json!({"requests": {"cpu": 1, "memory": "64Mi"}});
    spec["podTemplate"] = json!({
        "metadata": {"labels": {"team": "links"}, "annotations": {"example.com/owner": "links"}},
        "serviceAccountName": "links",
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "links", "effect": "NoSchedule"}],
    });
    env.apply(spec.clone()).await.unwrap();
    env.wait_outcome(1, Outcome::Promoted).await;
    let deployments = Api::<Deployment>::namespaced(env.client.clone(), &env.ns);
    let d = deployments
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(d.len(), 1);
    let template = &d[0].spec.template;
    let labels = template.metadata.as_ref().unwrap().labels.clone().unwrap();
    assert_eq!(labels["team"], "links");
    assert!(labels.contains_key("shortener.dev/revision"));
    let pod = template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("links"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(
        pod.tolerations.as_ref().unwrap()[0].key.as_deref(),
        Some("dedicated")
    );
    let c = &pod.containers[0];
    let token = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "API_TOKEN")
        .unwrap();
    assert_eq!(
        token
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap()
            .name,
        "api-token"
    );
    assert_eq!(
        c.resources.as_ref().unwrap().requests.as_ref().unwrap()["cpu"].0,
        "1"
    );
    assert_eq!(
        c.security_context
            .as_ref()
            .unwrap()
            .read_only_root_filesystem,
        Some(true)
    );

    for (field, value, needle) in [
        (
            "image",
            json!("evil:v1"),
            "spec.podTemplate.container.image is owned by the operator",
        ),
        (
            "readinessProbe",
            json!({"httpGet": {"path": "/", "port": 8080}}),
            "spec.podTemplate.container.readinessProbe is owned by the operator",
        ),
        (
            "livenessProbe",
            json!({"exec": {"command": ["true"]}}),
            "spec.podTemplate.container.livenessProbe is owned by the operator",
        ),
    ] {
        let mut bad = spec.clone();
        bad["podTemplate"]["container"] = json!({ field: value });
        let err = env.apply(bad).await.expect_err("owned field accepted");
        assert!(err.to_string().contains(needle), "{field}: {err}");
    }
    let sr = env.srs.get(NAME).await.unwrap();
    assert!(
        sr.spec.pod_template.unwrap().container.is_none(),
        "nothing of the refused specs was stored"
    );
    env.cleanup().await;
}
