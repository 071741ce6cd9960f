//! Manual controls: one-shot annotations a person (or `kubectl shortener`) sets and the
//! operator consumes. The operator acts on one per reconcile, records an Event and a history
//! note, then removes the annotation, so setting it again means asking again.
//!
//! `shortener.dev/paused` and `shortener.dev/retry` are not here: the first is a state that
//! stays while set, the second is compared with `status.observedRetry`.

use std::collections::BTreeMap;

use crate::api::annotations::{ANNOTATION_ABORT, ANNOTATION_PROMOTE, CONTROL_ANNOTATIONS};

/// Which earlier revision to roll back to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The newest healthy revision other than the one serving.
    Previous,
    Revision(i64),
}

/// A request read from an annotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Control {
    Promote,
    Abort,
    RollbackTo(Target),
    /// A value the operator cannot act on; reported, then removed like the others.
    Invalid(String),
}

/// The control to act on in this reconcile and the annotation that carried it.
pub fn next_control(annotations: &BTreeMap<String, String>) -> Option<(&'static str, Control)> {
    CONTROL_ANNOTATIONS.iter().find_map(|&key| {
        let value = annotations.get(key)?.trim();
        Some((key, parse(key, value)))
    })
}

fn parse(key: &str, value: &str) -> Control {
    match key {
        ANNOTATION_PROMOTE | ANNOTATION_ABORT => {
            if value != "true" {
                return Control::Invalid(format!("{key} must be \"true\", not {value:?}"));
            }
            if key == ANNOTATION_PROMOTE {
                Control::Promote
            } else {
                Control::Abort
            }
        }
        _ if value == "previous" => Control::RollbackTo(Target::Previous),
        _ => match value.parse::<i64>() {
            Ok(n) if n > 0 => Control::RollbackTo(Target::Revision(n)),
            _ => Control::Invalid(format!(
                "{key} must be a revision number or \"previous\", not {value:?}"
            )),
        },
    }
}

/// JSON merge patch removing one annotation: touches no field the operator's server-side
/// apply owns, and a second removal is harmless.
pub fn removal_patch(key: &str) -> serde_json::Value {
    serde_json::json!({ "metadata": { "annotations": { key: null } } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::annotations::ANNOTATION_ROLLBACK_TO;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn annotation_values() {
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<(&'a str, Control)>);
        let cases: [Case; 10] = [
            (&[], None),
            (&[("shortener.dev/paused", "true")], None),
            (
                &[(ANNOTATION_PROMOTE, "true")],
                Some((ANNOTATION_PROMOTE, Control::Promote)),
            ),
            (
                &[(ANNOTATION_ABORT, "true")],
                Some((ANNOTATION_ABORT, Control::Abort)),
            ),
            (
                &[(ANNOTATION_ROLLBACK_TO, "3")],
                Some((ANNOTATION_ROLLBACK_TO, Control::RollbackTo(Target::Revision(3)))),
            ),
            (
                &[(ANNOTATION_ROLLBACK_TO, " previous ")],
                Some((ANNOTATION_ROLLBACK_TO, Control::RollbackTo(Target::Previous))),
            ),
            (
                &[(ANNOTATION_ROLLBACK_TO, "0")],
                Some((
                    ANNOTATION_ROLLBACK_TO,
                    Control::Invalid(
                        "shortener.dev/rollback-to must be a revision number or \"previous\", not \"0\"".into(),
                    ),
                )),
            ),
            (
                &[(ANNOTATION_PROMOTE, "yes")],
                Some((
                    ANNOTATION_PROMOTE,
                    Control::Invalid("shortener.dev/promote must be \"true\", not \"yes\"".into()),
                )),
            ),
            (
                &[(ANNOTATION_PROMOTE, "true"), (ANNOTATION_ABORT, "true")],
                Some((ANNOTATION_ABORT, Control::Abort)),
            ),
            (
                &[(ANNOTATION_PROMOTE, "true"), (ANNOTATION_ROLLBACK_TO, "1")],
                Some((ANNOTATION_ROLLBACK_TO, Control::RollbackTo(Target::Revision(1)))),
            ),
        ];
        for (pairs, want) in cases {
            assert_eq!(next_control(&annotations(pairs)), want, "{pairs:?}");
        }
    }

    #[test]
    fn removal_is_a_null_in_a_merge_patch() {
        assert_eq!(
            removal_patch(ANNOTATION_ABORT),
            serde_json::json!({"metadata": {"annotations": {"shortener.dev/abort": null}}})
        );
    }
}
