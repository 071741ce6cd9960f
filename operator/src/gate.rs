//! The promotion gate (`spec.promotion.requires`), as pure functions: whether another
//! release has proven an image, and which releases wait on a given one.
//!
//! The controller reads the gate release and hands what it found to [`evaluate`]; the
//! rollout treats anything but [`GateState::Open`] as "start nothing new".

use crate::api::reason;
use crate::api::{ReleaseRef, ShortenerRelease, ShortenerReleaseSpec};

/// Whether this release may roll its image out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum GateState {
    /// No gate, or the gate's stable revision runs the image.
    #[default]
    Open,
    /// The gate exists but its stable revision does not run the image (yet).
    Awaiting {
        gate: String,
        image: String,
        /// Image of the gate's stable revision, if it has one.
        gate_stable: Option<String>,
    },
    /// The gate release does not exist.
    NotFound { gate: String },
    /// The gate is this release, or the gate's own gate is this release.
    Cycle { gate: String },
    /// The operator may not read the gate (RBAC in the gate's namespace).
    Forbidden { gate: String },
}

impl GateState {
    pub fn is_open(&self) -> bool {
        matches!(self, GateState::Open)
    }

    pub fn reason(&self) -> Option<&'static str> {
        match self {
            GateState::Open => None,
            GateState::Awaiting { .. } => Some(reason::AWAITING_PROMOTION),
            GateState::NotFound { .. } => Some(reason::PROMOTION_GATE_NOT_FOUND),
            GateState::Cycle { .. } => Some(reason::PROMOTION_GATE_CYCLE),
            GateState::Forbidden { .. } => Some(reason::PROMOTION_GATE_FORBIDDEN),
        }
    }

    pub fn message(&self) -> String {
        match self {
            GateState::Open => String::new(),
            GateState::Awaiting {
                gate,
                image,
                gate_stable,
            } => format!(
                "waiting for promotion gate {gate} to run {image} as its stable revision (it runs {})",
                gate_stable.as_deref().unwrap_or("no stable revision yet")
            ),
            GateState::NotFound { gate } => {
                format!("promotion gate {gate} does not exist; nothing rolls out until it does")
            }
            GateState::Cycle { gate } => format!(
                "promotion gate {gate} leads back to this release; remove spec.promotion from one of them"
            ),
            GateState::Forbidden { gate } => format!(
                "the operator may not read promotion gate {gate}; grant it get on \
                 shortenerreleases in that namespace"
            ),
        }
    }
}

/// `namespace/name` of the gate a spec names, its namespace defaulting to `own_namespace`.
pub fn gate_of(spec: &ShortenerReleaseSpec, own_namespace: &str) -> Option<(String, String)> {
    spec.promotion
        .as_ref()
        .map(|p| resolve(&p.requires, own_namespace))
}

fn resolve(r: &ReleaseRef, own_namespace: &str) -> (String, String) {
    (
        r.namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| own_namespace.to_string()),
        r.name.clone(),
    )
}

/// What the controller read of the gate release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateView {
    /// The gate's own gate, resolved against the gate's namespace.
    pub requires: Option<(String, String)>,
    /// Image of the gate's stable revision.
    pub stable_image: Option<String>,
}

impl GateView {
    pub fn of(gate: &ShortenerRelease, gate_namespace: &str) -> Self {
        let stable_image = gate.status.as_ref().and_then(|st| {
            let stable = st.stable_revision?;
            st.history
                .iter()
                .find(|r| r.revision == stable)
                .map(|r| r.image.clone())
        });
        Self {
            requires: gate_of(&gate.spec, gate_namespace),
            stable_image,
        }
    }
}

/// Decides the gate of release `own` (namespace, name) rolling out `image`. `gate` is what
/// was read of the release `spec.promotion.requires` names (`None`: it does not exist);
/// unused when the spec names no gate.
pub fn evaluate(
    own: (&str, &str),
    spec: &ShortenerReleaseSpec,
    gate: Option<&GateView>,
) -> GateState {
    let Some((gns, gname)) = gate_of(spec, own.0) else {
        return GateState::Open;
    };
    let label = format!("{gns}/{gname}");
    let is_own = |ns: &str, name: &str| ns == own.0 && name == own.1;
    if is_own(&gns, &gname) {
        return GateState::Cycle { gate: label };
    }
    let Some(view) = gate else {
        return GateState::NotFound { gate: label };
    };
    if view
        .requires
        .as_ref()
        .is_some_and(|(ns, name)| is_own(ns, name))
    {
        return GateState::Cycle { gate: label };
    }
    match &view.stable_image {
        Some(stable) if same_image(&spec.image, stable) => GateState::Open,
        other => GateState::Awaiting {
            gate: label,
            image: spec.image.clone(),
            gate_stable: other.clone(),
        },
    }
}

/// Same image: by digest when `wanted` names one (a tag is only a pointer), else by the
/// full reference.
pub fn same_image(wanted: &str, have: &str) -> bool {
    match digest(wanted) {
        Some(d) => digest(have) == Some(d),
        None => wanted == have,
    }
}

fn digest(image: &str) -> Option<&str> {
    image.split_once("@sha256:").map(|(_, d)| d)
}

/// Whether `release` names `namespace/name` as its gate: the releases to requeue when that
/// one changes.
pub fn waits_on(release: &ShortenerRelease, namespace: &str, name: &str) -> bool {
    let own = release.metadata.namespace.as_deref().unwrap_or_default();
    gate_of(&release.spec, own).is_some_and(|(ns, n)| ns == namespace && n == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const D2: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn spec(image: &str, requires: Option<serde_json::Value>) -> ShortenerReleaseSpec {
        let mut v = serde_json::json!({ "image": image });
        if let Some(r) = requires {
            v["promotion"] = serde_json::json!({ "requires": r });
        }
        serde_json::from_value(v).unwrap()
    }

    fn view(requires: Option<(&str, &str)>, stable: Option<&str>) -> GateView {
        GateView {
            requires: requires.map(|(a, b)| (a.to_string(), b.to_string())),
            stable_image: stable.map(str::to_string),
        }
    }

    #[test]
    fn image_identity() {
        let d1 = format!("reg:5000/shortener@sha256:{D1}");
        let d1_other_repo = format!("mirror/shortener@sha256:{D1}");
        let d2 = format!("reg:5000/shortener@sha256:{D2}");
        let cases: [(&str, &str, bool); 7] = [
            ("shortener:v2", "shortener:v2", true),
            ("shortener:v2", "shortener:v1", false),
            ("shortener:v2", "registry/shortener:v2", false),
            (&d1, &d1, true),
            (&d1, &d1_other_repo, true),
            (&d1, &d2, false),
            (&d1, "shortener:v2", false),
        ];
        for (wanted, have, same) in cases {
            assert_eq!(same_image(wanted, have), same, "{wanted} vs {have}");
        }
    }

    #[test]
    fn gate_states() {
        let own = ("prod", "web");
        let staging = serde_json::json!({"namespace": "staging", "name": "web"});
        let cases: Vec<(&str, ShortenerReleaseSpec, Option<GateView>, GateState)> = vec![
            ("no gate", spec("shortener:v2", None), None, GateState::Open),
            (
                "gate runs the image as stable",
                spec("shortener:v2", Some(staging.clone())),
                Some(view(None, Some("shortener:v2"))),
                GateState::Open,
            ),
            (
                "gate runs an older image",
                spec("shortener:v2", Some(staging.clone())),
                Some(view(None, Some("shortener:v1"))),
                GateState::Awaiting {
                    gate: "staging/web".into(),
                    image: "shortener:v2".into(),
                    gate_stable: Some("shortener:v1".into()),
                },
            ),
            (
                "gate has no stable revision (first release, or its image failed)",
                spec("shortener:v2", Some(staging.clone())),
                Some(view(None, None)),
                GateState::Awaiting {
                    gate: "staging/web".into(),
                    image: "shortener:v2".into(),
                    gate_stable: None,
                },
            ),
            (
                "gate missing",
                spec("shortener:v2", Some(staging.clone())),
                None,
                GateState::NotFound {
                    gate: "staging/web".into(),
                },
            ),
            (
                "namespace defaults to our own",
                spec("shortener:v2", Some(serde_json::json!({"name": "canary"}))),
                None,
                GateState::NotFound {
                    gate: "prod/canary".into(),
                },
            ),
            (
                "gate on itself",
                spec("shortener:v2", Some(serde_json::json!({"name": "web"}))),
                Some(view(None, Some("shortener:v2"))),
                GateState::Cycle {
                    gate: "prod/web".into(),
                },
            ),
            (
                "gate on itself, namespace spelt out",
                spec(
                    "shortener:v2",
                    Some(serde_json::json!({"namespace": "prod", "name": "web"})),
                ),
                None,
                GateState::Cycle {
                    gate: "prod/web".into(),
                },
            ),
            (
                "two-release cycle",
                spec("shortener:v2", Some(staging.clone())),
                Some(view(Some(("prod", "web")), Some("shortener:v2"))),
                GateState::Cycle {
                    gate: "staging/web".into(),
                },
            ),
            (
                "gate has its own, different gate",
                spec("shortener:v2", Some(staging.clone())),
                Some(view(Some(("dev", "web")), Some("shortener:v2"))),
                GateState::Open,
            ),
            (
                "digest matches through another tag-less reference",
                spec(&format!("reg/shortener@sha256:{D1}"), Some(staging.clone())),
                Some(view(None, Some(&format!("mirror/shortener@sha256:{D1}")))),
                GateState::Open,
            ),
        ];
        for (name, spec, gate, want) in cases {
            let got = evaluate(own, &spec, gate.as_ref());
            assert_eq!(got, want, "{name}");
            assert_eq!(got.is_open(), got.reason().is_none(), "{name}");
        }
    }

    #[test]
    fn messages_name_the_gate_and_the_image() {
        let awaiting = GateState::Awaiting {
            gate: "staging/web".into(),
            image: "shortener:v2".into(),
            gate_stable: None,
        };
        let msg = awaiting.message();
        assert!(
            msg.contains("staging/web") && msg.contains("shortener:v2"),
            "{msg}"
        );
        assert_eq!(awaiting.reason(), Some("AwaitingPromotion"));
        let forbidden = GateState::Forbidden {
            gate: "staging/web".into(),
        };
        assert_eq!(forbidden.reason(), Some("PromotionGateForbidden"));
        assert!(forbidden.message().contains("staging/web"));
    }

    #[test]
    fn view_reads_the_stable_image_not_the_current_one() {
        let gate: ShortenerRelease = serde_json::from_value(serde_json::json!({
            "apiVersion": "shortener.dev/v1alpha1", "kind": "ShortenerRelease",
            "metadata": {"name": "web", "namespace": "staging"},
            "spec": {"image": "shortener:v3", "promotion": {"requires": {"name": "dev"}}},
            "status": {"phase": "RolledBack", "stableRevision": 1, "currentRevision": 2,
                "history": [
                    {"revision": 1, "podTemplateHash": "a", "image": "shortener:v1",
                     "outcome": "Promoted", "startedAt": "2026-01-01T00:00:00Z"},
                    {"revision": 2, "podTemplateHash": "b", "image": "shortener:v3",
                     "outcome": "Failed", "reason": "AnalysisFailed",
                     "startedAt": "2026-01-01T00:01:00Z"}
                ]}
        }))
        .unwrap();
        let v = GateView::of(&gate, "staging");
        assert_eq!(v.stable_image.as_deref(), Some("shortener:v1"));
        assert_eq!(v.requires, Some(("staging".into(), "dev".into())));
    }

    #[test]
    fn waits_on_matches_resolved_gates_only() {
        let release = |ns: &str, requires: serde_json::Value| -> ShortenerRelease {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "shortener.dev/v1alpha1", "kind": "ShortenerRelease",
                "metadata": {"name": "web", "namespace": ns},
                "spec": {"image": "shortener:v1", "promotion": {"requires": requires}}
            }))
            .unwrap()
        };
        let same_ns = release("prod", serde_json::json!({"name": "staging"}));
        assert!(waits_on(&same_ns, "prod", "staging"));
        assert!(!waits_on(&same_ns, "other", "staging"));
        let cross = release(
            "prod",
            serde_json::json!({"namespace": "staging", "name": "web"}),
        );
        assert!(waits_on(&cross, "staging", "web"));
        assert!(!waits_on(&cross, "prod", "web"));
    }
}
