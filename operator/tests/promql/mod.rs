//! Issue 14: `spec.analysis.prometheus`. A real Prometheus (Debian's, started on loopback by
//! `scripts/prometheus-local.sh start-pods`) scrapes the scenario's pods, found through
//! testenv's API server; the operator judges the bake with PromQL only, never reading the
//! pods itself.

use std::process::Command;
use std::time::Duration;

use operator::api::{Outcome, Phase};
use serde_json::json;

use crate::support::env::*;
use crate::support::traffic::Traffic;
use crate::support::{eventually, root};

/// A Prometheus of the scenario's own, stopped when dropped (also when the test panics).
struct LocalPrometheus {
    dir: std::path::PathBuf,
    address: String,
}

impl LocalPrometheus {
    fn start(ns: &str) -> LocalPrometheus {
        let dir = root().join(format!(".testenv/e2e/prometheus-{ns}"));
        let port = free_addr().rsplit_once(':').unwrap().1.to_string();
        let out = Command::new("bash")
            .arg(root().join("scripts/prometheus-local.sh"))
            .args(["start-pods", ns])
            .env("PROM_DIR", &dir)
            .env("PROM_PORT", &port)
            .current_dir(root())
            .output()
            .expect("run scripts/prometheus-local.sh");
        let prom = LocalPrometheus {
            dir,
            address: format!("http://127.0.0.1:{port}"),
        };
        assert!(
            out.status.success(),
            "prometheus-local.sh start-pods: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        prom
    }
}

impl Drop for LocalPrometheus {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(root().join("scripts/prometheus-local.sh"))
            .arg("stop")
            .env("PROM_DIR", &self.dir)
            .current_dir(root())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// 5xx answers per second of the promoted revision on user routes (no series: none), and
/// the revision's pods Prometheus scrapes (no series: no data, so a broken relabelling cannot
/// pass for a clean revision).
fn promql_analysis(address: &str) -> serde_json::Value {
    json!({
        "intervalSeconds": 1,
        "bakeSeconds": 12,
        "prometheus": {
            "address": address,
            "queries": [
                {
                    "name": "api-5xx-rate",
                    "query": "sum(rate(shortener_http_requests_total{namespace=\"{{namespace}}\",release=\"{{release}}\",revision=\"{{revision}}\",code=~\"5..\",route!~\"/healthz|/readyz|/metrics\"}[5s])) or vector(0)",
                    "max": 0,
                },
                {
                    "name": "scraped-pods",
                    "query": "count(up{namespace=\"{{namespace}}\",release=\"{{release}}\",revision=\"{{revision}}\"} == 1)",
                    "min": 1,
                },
            ],
        },
    })
}

#[tokio::test]
#[ignore = "needs testenv"]
async fn s44_promql_check_rolls_back_a_failure_using_a_real_prometheus() {
    let env = Env::new("s44").await;
    let prom = LocalPrometheus::start(&env.ns);

    // Bad input is refused at apply, with a message that says what is wrong.
    let refused: [(&str, serde_json::Value, &str); 4] = [
        (
            "address",
            json!("ftp://127.0.0.1:9090"),
            "must be an http:// or https:// URL",
        ),
        (
            "address",
            json!("http://user:pw@127.0.0.1:9090"),
            "without credentials",
        ),
        (
            "queries",
            json!([{"name": "q", "query": "up{pod=\"{{pod}}\"}", "max": 1}]),
            "the only placeholders are",
        ),
        (
            "queries",
            json!([{"name": "q", "query": "up"}]),
            "set min, max or both",
        ),
    ];
    for (field, value, message) in refused {
        let mut bad = env.spec("shortener:v1", &[]);
        bad["analysis"] = promql_analysis(&prom.address);
        bad["analysis"]["prometheus"][field] = value;
        let err = env.apply(bad).await.expect_err("refused at apply");
        assert!(err.to_string().contains(message), "{field}: {err}");
    }

    // An address outside the operator's --prometheus-allow (here 127.0.0.1 only) is never
    // queried: nothing rolls out, the release says why, with a Warning Event.
    let mut elsewhere = env.spec("shortener:v1", &[]);
    elsewhere["analysis"] = promql_analysis("http://prometheus.monitoring.svc:9090");
    env.apply(elsewhere).await.unwrap();
    let sr = env
        .wait_phase(Phase::Blocked, Duration::from_secs(30))
        .await;
    let st = sr.status.unwrap();
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Progressing" && c.reason == "PrometheusAddressRefused"),
        "{:?}",
        st.conditions
    );
    assert!(
        st.message.contains("http://prometheus.monitoring.svc:9090")
            && st.message.contains("--prometheus-allow"),
        "the refusal names the address and the flag: {}",
        st.message
    );
    assert!(
        st.history.is_empty(),
        "no revision started: {:?}",
        st.history
    );
    env.wait_warning("PrometheusAddressRefused").await;

    // v1 bakes on PromQL alone: it becomes stable only once an interval passed both queries.
    let mut v1 = env.spec("shortener:v1", &[]);
    v1["analysis"] = promql_analysis(&prom.address);
    env.apply(v1).await.unwrap();
    let sr = env.wait_outcome(1, Outcome::Promoted).await;
    assert_eq!(sr.status.unwrap().phase, Phase::Healthy);

    let traffic = Traffic::start(&env).await;
    traffic.more(20).await;
    // v2 passes its smoke test, takes the traffic, then answers 5xx.
    let mut v2 = env.spec("shortener:v2", &[("SHORTENER_FAULT", "errors-after=8s")]);
    v2["analysis"] = promql_analysis(&prom.address);
    v2["analysis"]["bakeSeconds"] = json!(60);
    env.apply(v2).await.unwrap();
    let sr = env.wait_outcome(2, Outcome::Failed).await;
    traffic.more(50).await;
    let tally = traffic.stop().await;

    let st = sr.status.clone().unwrap();
    assert_eq!(
        revision_outcome(&sr, 2).1.as_deref(),
        Some("AnalysisFailed")
    );
    assert!(st.history[1].promoted_at.is_some(), "v2 was promoted first");
    assert_eq!(st.phase, Phase::RolledBack);
    assert_eq!(st.stable_revision, Some(1));
    assert!(
        st.message
            .contains("PromQL check failed: query api-5xx-rate = ")
            && st.message.contains("outside (max 0)"),
        "the failure names the query, its value and bound: {}",
        st.message
    );
    let incident = st.last_incident.unwrap();
    assert!(incident.rolled_back_at.is_some());
    // The operator counted no request itself: it never read the pods' /metrics.
    assert_eq!(incident.failed_requests, 0);
    assert!(tally.failed > 0, "the client saw v2's errors: {tally:?}");
    // And the client is served by v1 again.
    let ok_before = tally.ok;
    let traffic = Traffic::start(&env).await;
    eventually(
        "requests succeed on v1",
        Duration::from_secs(15),
        || async {
            let t = traffic.tally().await;
            (t.ok >= 20).then_some(())
        },
    )
    .await;
    let after = traffic.stop().await;
    eprintln!(
        "s44: {} of {} requests failed before the PromQL rollback; {}; then {} ok, {} failed on v1",
        tally.failed,
        tally.ok + tally.failed,
        st.message,
        after.ok,
        after.failed
    );
    assert!(ok_before > 0);
    drop(prom);
    env.cleanup().await;
}
