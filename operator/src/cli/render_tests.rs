//! Golden output of the renderers: what users and scripts read.

use super::*;
use crate::api::{Condition, Outcome, Phase};
use crate::budget::DowntimeLedger;
use k8s_openapi::jiff::Timestamp;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn record(n: i64, image: &str, outcome: Outcome, reason: Option<&str>) -> RevisionRecord {
    RevisionRecord {
        revision: n,
        pod_template_hash: format!("hash{n}"),
        image: image.into(),
        outcome,
        reason: reason.map(Into::into),
        started_at: ts(&format!("2026-01-01T10:0{n}:00Z")),
        promoted_at: (outcome == Outcome::Promoted).then(|| ts(&format!("2026-01-01T10:0{n}:05Z"))),
        finished_at: Some(ts(&format!("2026-01-01T10:0{n}:30Z"))),
        bake: None,
    }
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: ts("2026-01-01T10:02:30Z"),
        observed_generation: Some(2),
    }
}

fn incident_record() -> LastIncident {
    LastIncident {
        revision: 2,
        reason: "AnalysisFailed".into(),
        detected_at: ts("2026-01-01T10:02:20Z"),
        rolled_back_at: Some(ts("2026-01-01T10:02:21Z")),
        recovered_at: Some(ts("2026-01-01T10:02:21Z")),
        failed_requests: 7,
        downtime_seconds: 1.2,
        log_excerpt_ref: Some("web-incident-2".into()),
    }
}

fn rolled_back() -> ReleaseView {
    ReleaseView {
        name: "web".into(),
        namespace: "prod".into(),
        image: "shortener:v2".into(),
        generation: Some(2),
        status: Some(ShortenerReleaseStatus {
            observed_generation: Some(2),
            phase: Phase::RolledBack,
            message: "revision 2 failed (AnalysisFailed); revision 1 serves".into(),
            current_revision: Some(2),
            stable_revision: Some(1),
            conditions: vec![
                condition("Ready", "True", "RolledBack", "revision 1 serves"),
                condition("Degraded", "True", "AnalysisFailed", "5xx rate 40% > 5%"),
            ],
            history: vec![
                record(1, "shortener:v1", Outcome::Promoted, None),
                record(2, "shortener:v2", Outcome::Failed, Some("AnalysisFailed")),
            ],
            analysis: None,
            last_incident: Some(incident_record()),
            budget: Some(BudgetStatus {
                allowed_seconds: 900,
                used_seconds: 2,
                remaining_seconds: 898,
                ledger: DowntimeLedger::default(),
            }),
            observed_retry: None,
            replicas: None,
            selector: None,
        }),
    }
}

#[test]
fn status_detail_shows_phase_revisions_conditions_incident_and_budget() {
    assert_eq!(
        status_detail(&rolled_back()),
        "\
Name:       web
Namespace:  prod
Phase:      RolledBack
Message:    revision 2 failed (AnalysisFailed); revision 1 serves
Image:      shortener:v2
Stable:     1 (shortener:v1)
Current:    2 (shortener:v2)
Conditions:
  TYPE       STATUS   REASON           MESSAGE
  Ready      True     RolledBack       revision 1 serves
  Degraded   True     AnalysisFailed   5xx rate 40% > 5%
Last incident: revision 2 AnalysisFailed at 2026-01-01T10:02:20Z, rolled back at 2026-01-01T10:02:21Z, 7 failed requests, 2s downtime, log excerpt in ConfigMap web-incident-2
Budget:     2s used of 15m a year, 14m58s left
"
    );
}

#[test]
fn status_detail_of_a_release_not_reconciled_yet() {
    let v = ReleaseView {
        status: None,
        ..rolled_back()
    };
    assert_eq!(
        status_detail(&v),
        "\
Name:       web
Namespace:  prod
Phase:      Pending (spec changed; not reconciled yet)
Image:      shortener:v2
Stable:     -
Current:    -
Conditions:
  none
Last incident: none
Budget:     not computed yet
"
    );
}

#[test]
fn status_list_has_one_aligned_row_per_release() {
    let mut other = rolled_back();
    other.name = "staging-web".into();
    other.status = None;
    assert_eq!(
        status_list(&[rolled_back(), other]),
        "\
NAME          PHASE        STABLE   CURRENT   IMAGE          READY   BUDGET LEFT
web           RolledBack   1        2         shortener:v2   True    14m58s
staging-web   Pending      -        -         shortener:v2   -       -
"
    );
    assert_eq!(status_list(&[]), "No ShortenerReleases found.\n");
}

#[test]
fn history_lists_revisions_oldest_first() {
    let st = rolled_back().status.unwrap();
    assert_eq!(
        history(&st.history),
        "\
REVISION   IMAGE          OUTCOME    REASON           STARTED                PROMOTED               FINISHED
1          shortener:v1   Promoted   -                2026-01-01T10:01:00Z   2026-01-01T10:01:05Z   2026-01-01T10:01:30Z
2          shortener:v2   Failed     AnalysisFailed   2026-01-01T10:02:00Z   -                      2026-01-01T10:02:30Z
"
    );
}

#[test]
fn incident_shows_timeline_then_excerpt() {
    let view = IncidentView {
        name: "web".into(),
        namespace: "prod".into(),
        incident: incident_record(),
        revision: Some(record(
            2,
            "shortener:v2",
            Outcome::Failed,
            Some("AnalysisFailed"),
        )),
        excerpt: Some("5: ERROR boom\n6- after".into()),
    };
    assert_eq!(
        incident(&view),
        "\
Incident:   revision 2 of web (prod), AnalysisFailed
Impact:     7 failed requests, 2s downtime charged
Timeline:
  2026-01-01T10:02:00Z  revision 2 (shortener:v2) started
  2026-01-01T10:02:20Z  failed: AnalysisFailed
  2026-01-01T10:02:21Z  traffic back on the stable revision
  2026-01-01T10:02:21Z  a healthy revision serves again
Log excerpt (ConfigMap web-incident-2):
  5: ERROR boom
  6- after
"
    );
    let pruned = IncidentView {
        excerpt: None,
        ..view
    };
    assert!(
        incident(&pruned).ends_with("Log excerpt: ConfigMap web-incident-2 not found (pruned?)\n")
    );
}

#[test]
fn budget_shows_share_used_and_exhaustion() {
    let st = rolled_back().status.unwrap();
    assert_eq!(
        budget("web", st.budget.as_ref()),
        "Allowed:    15m per rolling year\nUsed:       2s (0.2%)\nRemaining:  14m58s\n"
    );
    let spent = BudgetStatus {
        allowed_seconds: 60,
        used_seconds: 75,
        remaining_seconds: 0,
        ledger: DowntimeLedger::default(),
    };
    assert_eq!(
        budget("web", Some(&spent)),
        "Allowed:    1m per rolling year\nUsed:       1m15s (125.0%)\nRemaining:  0s (exhausted)\n"
    );
    assert_eq!(budget("web", None), "web: budget not computed yet\n");
}

#[test]
fn durations_read_like_the_sla_field() {
    assert_eq!(duration(0), "0s");
    assert_eq!(duration(-3), "0s");
    assert_eq!(duration(90), "1m30s");
    assert_eq!(duration(86_400 + 3_600 + 1), "1d1h1s");
}

#[test]
fn json_and_yaml_carry_the_status_in_api_field_names() {
    let v = rolled_back();
    let json: serde_json::Value =
        serde_json::from_str(&structured(&v, Output::Json).unwrap()).unwrap();
    assert_eq!(json["name"], "web");
    assert_eq!(json["status"]["phase"], "RolledBack");
    assert_eq!(json["status"]["stableRevision"], 1);
    assert_eq!(
        json["status"]["lastIncident"]["logExcerptRef"],
        "web-incident-2"
    );
    let yaml: serde_json::Value =
        serde_yaml::from_str(&structured(&v, Output::Yaml).unwrap()).unwrap();
    assert_eq!(yaml, json);
}
