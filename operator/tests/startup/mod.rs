//! Issue 17: releases that take long to start. The pods get a startup probe on `/healthz`
//! with a budget from `spec.healthCheck.startupSeconds`, so a release that binds its port
//! late (`SHORTENER_FAULT=listen-after=15s`) is not restarted by its liveness probe; one
//! that overruns its budget is refused with `StartupProbeFailed`.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use operator::api::{Outcome, Phase, ShortenerRelease};
use serde_json::json;

use crate::support::env::*;
use crate::support::eventually;
use crate::support::traffic::Traffic;

/// The pods of revision `n`, with their containers' restart counts.
async fn restarts_of(env: &Env, sr: &ShortenerRelease, n: i64) -> Vec<(String, i32)> {
    let hash =
        &sr.status.as_ref().unwrap().history[usize::try_from(n - 1).unwrap()].pod_template_hash;
    let lp = ListParams::default().labels(&format!("shortener.dev/revision={hash}"));
    Api::<Pod>::namespaced(env.client.clone(), &env.ns)
        .list(&lp)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| {
            let restarts = p
                .status
                .and_then(|s| s.container_statuses)
                .unwrap_or_default()
                .iter()
                .map(|c| c.restart_count)
                .sum();
            (p.metadata.name.unwrap_or_default(), restarts)
        })
        .collect()
}

/// Seconds from a revision's start to its promotion.
fn seconds_to_promotion(sr: &ShortenerRelease, n: i64) -> f64 {
    let r = sr
        .status
        .as_ref()
        .unwrap()
        .history
        .iter()
        .find(|r| r.revision == n)
        .unwrap();
    let promoted = r.promoted_at.expect("promoted");
    (promoted.as_millisecond() - r.started_at.as_millisecond()) as f64 / 1000.0
}

#[tokio::test]
#[ignore = "needs testenv"]
async fn s20_release_listening_after_15s_is_promoted_without_a_restart() {
    let env = Env::new("s20").await;
    env.healthy_v1().await;
    let traffic = Traffic::start(&env).await;
    traffic.more(20).await;
    let started = Instant::now();
    env.apply(env.spec("shortener:v2", &[("SHORTENER_FAULT", "listen-after=15s")]))
        .await
        .unwrap();
    let sr = env.wait_outcome(2, Outcome::Promoted).await;
    let took = started.elapsed().as_secs_f64();
    // The pods did wait the 15 s, well past the liveness probe's ~6 s, and were never
    // restarted for it.
    let to_promotion = seconds_to_promotion(&sr, 2);
    assert!(to_promotion >= 15.0, "promoted {to_promotion}s after start");
    let pods = restarts_of(&env, &sr, 2).await;
    assert_eq!(pods.len(), 2, "{pods:?}");
    assert!(pods.iter().all(|(_, r)| *r == 0), "{pods:?}");
    let sr = env
        .wait_phase(Phase::Healthy, Duration::from_secs(30))
        .await;
    assert_eq!(sr.status.unwrap().stable_revision, Some(2));
    traffic.more(30).await;
    let tally = traffic.stop().await;
    assert_eq!(tally.failed, 0, "{tally:?}");
    eprintln!(
        "s20: promoted {to_promotion:.0}s after the revision started, stable after {took:.1}s; \
         {} requests, {} failed",
        tally.ok + tally.failed,
        tally.failed
    );
    env.cleanup().await;
}

#[tokio::test]
#[ignore = "needs testenv"]
async fn s21_release_overrunning_its_startup_budget_is_refused_naming_the_probe() {
    let env = Env::new("s21").await;
    env.healthy_v1().await;
    let traffic = Traffic::start(&env).await;
    traffic.more(20).await;
    let mut spec = env.spec("shortener:v2", &[("SHORTENER_FAULT", "listen-after=15s")]);
    spec["healthCheck"] = json!({"startupSeconds": 5});
    let started = Instant::now();
    env.apply(spec).await.unwrap();
    let sr = env.wait_outcome(2, Outcome::Failed).await;
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(
        revision_outcome(&sr, 2),
        (Outcome::Failed, Some("StartupProbeFailed".into()))
    );
    // Refused by the startup probe's kill, well before the 15 s listen or the deadline.
    assert!(secs < 14.0, "refused after {secs:.1}s");
    let st = sr.status.clone().unwrap();
    assert_eq!(st.phase, Phase::RolledBack);
    assert_eq!(st.stable_revision, Some(1));
    assert!(st.message.contains("startup probe"), "{}", st.message);
    // The Event is written after the status: poll for it.
    env.wait_warning("StartupProbeFailed").await;
    traffic.more(30).await;
    let tally = traffic.stop().await;
    assert_eq!(tally.failed, 0, "{tally:?}");
    eprintln!("s21: refused after {secs:.1}s: {}", st.message);
    env.cleanup().await;
}

#[tokio::test]
#[ignore = "needs testenv"]
async fn s22_startup_budget_is_validated_only_when_set() {
    let env = Env::new("s22").await;
    let with = |deadline: i32, startup: Option<i32>| {
        let mut spec = env.spec("shortener:v1", &[]);
        spec["progressDeadlineSeconds"] = json!(deadline);
        if let Some(s) = startup {
            spec["healthCheck"] = json!({"startupSeconds": s});
        }
        spec
    };
    for (spec, message) in [
        (
            with(120, Some(121)),
            "spec.healthCheck.startupSeconds must not exceed spec.progressDeadlineSeconds",
        ),
        (
            with(30, Some(60)),
            "spec.healthCheck.startupSeconds must not exceed spec.progressDeadlineSeconds",
        ),
        (
            with(120, Some(0)),
            "spec.healthCheck.startupSeconds must be between 1 and 3600",
        ),
    ] {
        let err = env.apply(spec.clone()).await.unwrap_err().to_string();
        assert!(err.contains(message), "{spec}: {err}");
    }
    // A deadline under the 60 s default without startupSeconds stays valid: the budget is
    // the deadline.
    env.apply(with(30, None)).await.unwrap();
    let deployments = Api::<Deployment>::namespaced(env.client.clone(), &env.ns);
    let threshold = eventually("the revision's Deployment", Duration::from_secs(30), || {
        let deployments = deployments.clone();
        async move {
            let list = deployments.list(&ListParams::default()).await.ok()?;
            let d = list.items.into_iter().next()?;
            let c = d.spec.template.spec?.containers.into_iter().next()?;
            c.startup_probe?.failure_threshold
        }
    })
    .await;
    assert_eq!(threshold, 30);
    env.apply(with(30, Some(30))).await.unwrap();
    env.cleanup().await;
}
