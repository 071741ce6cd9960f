//! The promotion gate (`spec.promotion.requires`), as pure functions: whether another
//! release has proven an image, and which releases wait on a given one.
//!
//! The controller reads the gate release and hands what it found to [`evaluate`]; the
//! rollout treats anything but [`GateState::Open`] as "start nothing new".
//!
//! A gate in another namespace is another tenant's release: its status (exists? which
//! image is stable?) is shown to this release only if the gate opts in with the annotation
//! [`SHARED_WITH`] listing this release's namespace (or `*`). Otherwise a missing gate, one
//! the operator may not read and one not shared all read the same,
//! [`GateState::Unavailable`], so the tenant learns nothing about the other namespace.

use crate::api::reason;
use crate::api::{ReleaseRef, ShortenerRelease, ShortenerReleaseSpec};

/// Annotation on a release naming the other namespaces whose releases may use it as
/// their promotion gate.
pub use crate::api::annotations::ANNOTATION_PROMOTION_GATE_FOR as SHARED_WITH;

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
    /// A gate in another namespace that is missing, unreadable or not shared with this
    /// release's namespace: the three are told apart to no one.
    Unavailable { gate: String, namespace: String },
    /// Not a promotion gate, but the same hold: `spec.analysis.prometheus.address` is not in
    /// the operator's `--prometheus-allow` list, so the revision could not be analysed and
    /// nothing new starts. Holds the refusal, which names the address and the flag.
    PrometheusRefused(String),
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
            GateState::Unavailable { .. } => Some(reason::PROMOTION_GATE_NOT_FOUND),
            GateState::PrometheusRefused(_) => Some(reason::PROMETHEUS_ADDRESS_REFUSED),
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
            GateState::Unavailable { gate, namespace } => format!(
                "promotion gate {gate} was not found or is not shared with namespace {namespace} \
                 (its owners opt in with the annotation {SHARED_WITH}); nothing rolls out until it is"
            ),
            GateState::PrometheusRefused(why) => {
                format!("{why}; nothing rolls out until it is allowed or the address changes")
            }
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
        if gns != own.0 {
            return GateState::Unavailable {
                gate: label,
                namespace: own.0.to_string(),
            };
        }
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

/// Whether `gate` (in `gate_namespace`) may be seen by a release in `namespace`: always in
/// its own namespace, else only if its [`SHARED_WITH`] annotation lists `namespace` or `*`.
pub fn shared_with(gate: &ShortenerRelease, gate_namespace: &str, namespace: &str) -> bool {
    if gate_namespace == namespace {
        return true;
    }
    gate.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SHARED_WITH))
        .is_some_and(|list| {
            list.split(',')
                .map(str::trim)
                .any(|n| n == "*" || n == namespace)
        })
}

/// What a release in `namespace` may see of the gate read from `gate_namespace`: `None`
/// (absent) when it is missing, not shared with `namespace`, or, in another namespace,
/// the operator may not read it. Other read errors are returned, to be retried.
pub fn visible(
    read: Result<Option<ShortenerRelease>, kube::Error>,
    gate_namespace: &str,
    namespace: &str,
) -> Result<Option<GateView>, kube::Error> {
    let gate = match read {
        Ok(gate) => gate,
        Err(kube::Error::Api(status)) if status.code == 403 && gate_namespace != namespace => None,
        Err(e) => return Err(e),
    };
    Ok(gate
        .filter(|g| shared_with(g, gate_namespace, namespace))
        .map(|g| GateView::of(&g, gate_namespace)))
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
                "gate in another namespace missing, unreadable or not shared",
                spec("shortener:v2", Some(staging.clone())),
                None,
                GateState::Unavailable {
                    gate: "staging/web".into(),
                    namespace: "prod".into(),
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

    fn gate_release(annotation: Option<&str>) -> ShortenerRelease {
        let mut v = serde_json::json!({
            "apiVersion": "shortener.dev/v1alpha1", "kind": "ShortenerRelease",
            "metadata": {"name": "web", "namespace": "staging"},
            "spec": {"image": "shortener:v3"},
            "status": {"phase": "Healthy", "stableRevision": 1, "currentRevision": 1,
                "history": [{"revision": 1, "podTemplateHash": "a", "image": "shortener:v3",
                    "outcome": "Promoted", "startedAt": "2026-01-01T00:00:00Z"}]}
        });
        if let Some(a) = annotation {
            v["metadata"]["annotations"] = serde_json::json!({ SHARED_WITH: a });
        }
        serde_json::from_value(v).unwrap()
    }

    fn api_error(code: u16) -> kube::Error {
        let status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "message": "m", "reason": "r", "code": code
        }))
        .unwrap();
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn a_gate_in_another_namespace_is_seen_only_if_it_opts_in() {
        type Read = fn() -> Result<Option<ShortenerRelease>, kube::Error>;
        // (case, what was read, namespace of the waiting release, visible?)
        let cases: &[(&str, Read, &str, bool)] = &[
            (
                "same namespace, no annotation",
                || Ok(Some(gate_release(None))),
                "staging",
                true,
            ),
            (
                "other namespace, no annotation",
                || Ok(Some(gate_release(None))),
                "prod",
                false,
            ),
            (
                "listed",
                || Ok(Some(gate_release(Some("dev, prod")))),
                "prod",
                true,
            ),
            (
                "not listed",
                || Ok(Some(gate_release(Some("dev,qa")))),
                "prod",
                false,
            ),
            (
                "a prefix is not a match",
                || Ok(Some(gate_release(Some("prod-eu")))),
                "prod",
                false,
            ),
            (
                "everyone",
                || Ok(Some(gate_release(Some("*")))),
                "prod",
                true,
            ),
            (
                "empty list",
                || Ok(Some(gate_release(Some("")))),
                "prod",
                false,
            ),
            ("missing", || Ok(None), "prod", false),
            (
                "operator may not read it",
                || Err(api_error(403)),
                "prod",
                false,
            ),
        ];
        for (name, read, ns, seen) in cases {
            let view = visible(read(), "staging", ns).expect(name);
            assert_eq!(view.is_some(), *seen, "{name}");
        }
        // Other failures are errors to retry, not an absent gate.
        assert!(visible(Err(api_error(500)), "staging", "prod").is_err());
        // In its own namespace a 403 is the operator's misconfiguration: an error.
        assert!(visible(Err(api_error(403)), "staging", "staging").is_err());
    }

    #[test]
    fn an_unshared_gate_reads_exactly_like_a_missing_one() {
        let spec = spec(
            "shortener:v2",
            Some(serde_json::json!({"namespace": "staging", "name": "web"})),
        );
        let judge = |read: Result<Option<ShortenerRelease>, kube::Error>| {
            let view = visible(read, "staging", "prod").unwrap();
            let state = evaluate(("prod", "web"), &spec, view.as_ref());
            (state.reason(), state.message())
        };
        let missing = judge(Ok(None));
        for (name, other) in [
            ("exists, not shared", judge(Ok(Some(gate_release(None))))),
            (
                "exists, shared elsewhere",
                judge(Ok(Some(gate_release(Some("dev"))))),
            ),
            ("forbidden", judge(Err(api_error(403)))),
        ] {
            assert_eq!(other, missing, "{name}");
        }
        assert_eq!(missing.0, Some("PromotionGateNotFound"));
        assert!(!missing.1.contains("shortener:v3"), "{}", missing.1);
        assert!(missing.1.contains(SHARED_WITH), "{}", missing.1);
        // Shared: the gate's state is used (it runs v3 as stable, so v2 waits).
        let shared = judge(Ok(Some(gate_release(Some("prod")))));
        assert_eq!(shared.0, Some("AwaitingPromotion"));
    }
}
