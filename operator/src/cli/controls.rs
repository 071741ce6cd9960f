//! Manual controls as annotation writes, and the checks made before writing them.
//!
//! The operator consumes these annotations; the plugin only asks. Writes are JSON merge
//! patches of `metadata.annotations`, so they never take ownership of fields the
//! operator's server-side-apply field manager owns.

use serde_json::{Value, json};

// The operator's own names: the plugin writes exactly what the operator consumes.
use crate::api::annotations::{
    ANNOTATION_ABORT, ANNOTATION_PAUSED, ANNOTATION_PROMOTE, ANNOTATION_RETRY,
    ANNOTATION_ROLLBACK_TO,
};
use crate::api::{Outcome, Phase, ShortenerReleaseStatus};

/// One annotation write the plugin asks the operator to act on.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub annotation: &'static str,
    /// `None` removes the annotation.
    pub value: Option<String>,
    /// What was asked, for the user, e.g. "pause".
    pub summary: String,
}

impl Request {
    /// The JSON merge patch body that writes this request.
    pub fn merge_patch(&self) -> Value {
        json!({"metadata": {"annotations": {self.annotation: self.value}}})
    }
}

pub fn pause() -> Request {
    Request {
        annotation: ANNOTATION_PAUSED,
        value: Some("true".into()),
        summary: "pause".into(),
    }
}

pub fn resume() -> Request {
    Request {
        annotation: ANNOTATION_PAUSED,
        value: None,
        summary: "resume".into(),
    }
}

/// The operator retries when the annotation's value differs from `status.observedRetry`,
/// so each request needs a value never used before: the current time in nanoseconds.
pub fn retry(unique: &str) -> Request {
    Request {
        annotation: ANNOTATION_RETRY,
        value: Some(unique.into()),
        summary: "retry of the failed revision".into(),
    }
}

pub fn promote() -> Request {
    Request {
        annotation: ANNOTATION_PROMOTE,
        value: Some("true".into()),
        summary: "promotion of the current revision (rest of the bake skipped)".into(),
    }
}

pub fn abort() -> Request {
    Request {
        annotation: ANNOTATION_ABORT,
        value: Some("true".into()),
        summary: "abort of the rollout in progress".into(),
    }
}

/// The revision that has the user traffic now.
fn serving_revision(st: &ShortenerReleaseStatus) -> Option<i64> {
    match st.phase {
        // A promoted revision being baked, or a failed one left serving, has the traffic.
        Phase::Analyzing | Phase::Degraded => st.current_revision.or(st.stable_revision),
        _ => st.stable_revision.or(st.current_revision),
    }
}

/// Checks there is a healthy revision to return to, client-side so a hopeless request is
/// never written. `to_revision` None means the latest healthy revision other than the
/// serving one ("previous").
pub fn rollback(
    status: Option<&ShortenerReleaseStatus>,
    to_revision: Option<i64>,
) -> Result<Request, String> {
    let Some(st) = status else {
        return Err("the release has no history yet".into());
    };
    let serving = serving_revision(st);
    let healthy: Vec<i64> = st
        .history
        .iter()
        .filter(|r| r.outcome == Outcome::Promoted && Some(r.revision) != serving)
        .map(|r| r.revision)
        .collect();
    let serving_text = serving.map_or_else(|| "none".to_string(), |n| n.to_string());
    match to_revision {
        Some(n) if Some(n) == serving => Err(format!("revision {n} is already serving")),
        Some(n) if healthy.contains(&n) => Ok(Request {
            annotation: ANNOTATION_ROLLBACK_TO,
            value: Some(n.to_string()),
            summary: format!("rollback to revision {n}"),
        }),
        Some(n) => {
            let listed = st.history.iter().find(|r| r.revision == n);
            Err(match listed {
                None => format!(
                    "revision {n} is not in the history (healthy revisions: {})",
                    list(&healthy)
                ),
                Some(r) => format!(
                    "revision {n} never became healthy (outcome {:?}; healthy revisions: {})",
                    r.outcome,
                    list(&healthy)
                ),
            })
        }
        None => match healthy.iter().max() {
            Some(n) => Ok(Request {
                annotation: ANNOTATION_ROLLBACK_TO,
                value: Some("previous".into()),
                summary: format!("rollback to the previous healthy revision ({n})"),
            }),
            None => Err(format!(
                "no healthy revision in the history other than the serving one ({serving_text})"
            )),
        },
    }
}

fn list(revisions: &[i64]) -> String {
    if revisions.is_empty() {
        return "none".into();
    }
    revisions
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RevisionRecord;
    use k8s_openapi::jiff::Timestamp;

    fn rec(revision: i64, outcome: Outcome) -> RevisionRecord {
        RevisionRecord {
            revision,
            pod_template_hash: format!("h{revision}"),
            image: format!("shortener:v{revision}"),
            outcome,
            reason: None,
            started_at: Timestamp::UNIX_EPOCH,
            promoted_at: None,
            finished_at: None,
            bake: None,
        }
    }

    fn status(
        phase: Phase,
        stable: i64,
        current: i64,
        h: &[(i64, Outcome)],
    ) -> ShortenerReleaseStatus {
        ShortenerReleaseStatus {
            phase,
            stable_revision: Some(stable),
            current_revision: Some(current),
            history: h.iter().map(|&(n, o)| rec(n, o)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn merge_patch_sets_or_removes_one_annotation() {
        assert_eq!(
            pause().merge_patch(),
            json!({"metadata": {"annotations": {"shortener.dev/paused": "true"}}})
        );
        assert_eq!(
            resume().merge_patch(),
            json!({"metadata": {"annotations": {"shortener.dev/paused": null}}})
        );
        assert_eq!(
            retry("17").merge_patch(),
            json!({"metadata": {"annotations": {"shortener.dev/retry": "17"}}})
        );
    }

    #[test]
    fn only_the_serving_revision_is_nothing_to_roll_back_to() {
        let st = status(Phase::Healthy, 1, 1, &[(1, Outcome::Promoted)]);
        let err = rollback(Some(&st), None).unwrap_err();
        assert_eq!(
            err,
            "no healthy revision in the history other than the serving one (1)"
        );
        // After a rolled-back failure the stable revision serves; the failed one is not healthy.
        let st = status(
            Phase::RolledBack,
            1,
            2,
            &[(1, Outcome::Promoted), (2, Outcome::Failed)],
        );
        assert!(rollback(Some(&st), None).is_err());
        assert_eq!(
            rollback(Some(&st), Some(2)).unwrap_err(),
            "revision 2 never became healthy (outcome Failed; healthy revisions: none)"
        );
        assert!(rollback(None, None).is_err());
    }

    #[test]
    fn previous_and_named_healthy_revisions_are_accepted() {
        let st = status(
            Phase::Healthy,
            3,
            3,
            &[
                (1, Outcome::Promoted),
                (2, Outcome::Failed),
                (3, Outcome::Promoted),
            ],
        );
        let r = rollback(Some(&st), None).unwrap();
        assert_eq!(r.value.as_deref(), Some("previous"));
        assert_eq!(r.summary, "rollback to the previous healthy revision (1)");
        let r = rollback(Some(&st), Some(1)).unwrap();
        assert_eq!(r.annotation, "shortener.dev/rollback-to");
        assert_eq!(r.value.as_deref(), Some("1"));
        assert_eq!(
            rollback(Some(&st), Some(3)).unwrap_err(),
            "revision 3 is already serving"
        );
        assert_eq!(
            rollback(Some(&st), Some(9)).unwrap_err(),
            "revision 9 is not in the history (healthy revisions: 1)"
        );
    }

    #[test]
    fn while_a_promoted_revision_bakes_the_stable_one_is_a_target() {
        let st = status(
            Phase::Analyzing,
            1,
            2,
            &[(1, Outcome::Promoted), (2, Outcome::InProgress)],
        );
        assert_eq!(
            rollback(Some(&st), Some(1)).unwrap().value.as_deref(),
            Some("1")
        );
    }
}
