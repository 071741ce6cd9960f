//! Pure rendering of releases as tables, JSON or YAML: no I/O, so golden tests pin it.

use serde::Serialize;

use crate::api::budget::BudgetStatus;
use crate::api::{LastIncident, RevisionRecord, ShortenerRelease, ShortenerReleaseStatus};
use kube::ResourceExt;

use super::args::Output;
use super::error::{CliError, Result};

/// What `status` shows of one release; also its JSON/YAML shape.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseView {
    pub name: String,
    pub namespace: String,
    /// `spec.image`: what the user asked for.
    pub image: String,
    pub generation: Option<i64>,
    pub status: Option<ShortenerReleaseStatus>,
}

impl ReleaseView {
    pub fn of(sr: &ShortenerRelease) -> Self {
        Self {
            name: sr.name_any(),
            namespace: sr.namespace().unwrap_or_default(),
            image: sr.spec.image.clone(),
            generation: sr.metadata.generation,
            status: sr.status.clone(),
        }
    }
}

/// What `incidents` shows; also its JSON/YAML shape.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IncidentView {
    pub name: String,
    pub namespace: String,
    pub incident: LastIncident,
    /// The failed revision's history record, when still kept.
    pub revision: Option<RevisionRecord>,
    /// The filtered log excerpt, when captured and its ConfigMap still exists.
    pub excerpt: Option<String>,
}

pub fn structured<T: Serialize>(value: &T, output: Output) -> Result<String> {
    match output {
        Output::Json => serde_json::to_string_pretty(value)
            .map(|s| s + "\n")
            .map_err(|e| CliError::Render(e.to_string())),
        Output::Yaml | Output::Table => {
            serde_yaml::to_string(value).map_err(|e| CliError::Render(e.to_string()))
        }
    }
}

/// Columns padded to their widest cell, separated by three spaces, like kubectl.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < row.len() {
                line.push_str(&format!("{cell:<width$}   ", width = widths[i]));
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `90` -> `1m30s`, `0` -> `0s`, `86400` -> `1d`.
pub fn duration(seconds: i64) -> String {
    if seconds <= 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = seconds;
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn image_of(st: &ShortenerReleaseStatus, revision: Option<i64>) -> Option<&str> {
    let n = revision?;
    st.history
        .iter()
        .find(|r| r.revision == n)
        .map(|r| r.image.as_str())
}

fn revision_line(st: &ShortenerReleaseStatus, revision: Option<i64>) -> String {
    match (revision, image_of(st, revision)) {
        (Some(n), Some(image)) => format!("{n} ({image})"),
        (Some(n), None) => n.to_string(),
        (None, _) => "-".into(),
    }
}

/// One line per release: `status` without a name.
pub fn status_list(views: &[ReleaseView]) -> String {
    if views.is_empty() {
        return "No ShortenerReleases found.\n".into();
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            let st = v.status.clone().unwrap_or_default();
            let ready = st
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready")
                .map_or("-", |c| c.status.as_str())
                .to_string();
            vec![
                v.name.clone(),
                st.phase.as_str().into(),
                opt(st.stable_revision),
                opt(st.current_revision),
                v.image.clone(),
                ready,
                st.budget
                    .as_ref()
                    .map_or_else(|| "-".into(), |b| duration(b.remaining_seconds)),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "PHASE",
            "STABLE",
            "CURRENT",
            "IMAGE",
            "READY",
            "BUDGET LEFT",
        ],
        &rows,
    )
}

/// The full picture of one release: `status NAME`.
pub fn status_detail(v: &ReleaseView) -> String {
    let st = v.status.clone().unwrap_or_default();
    let mut out = format!("Name:       {}\nNamespace:  {}\n", v.name, v.namespace);
    let stale = v.status.is_none()
        || (st.observed_generation.is_some() && st.observed_generation != v.generation);
    out.push_str(&format!(
        "Phase:      {}{}\n",
        st.phase.as_str(),
        if stale {
            " (spec changed; not reconciled yet)"
        } else {
            ""
        }
    ));
    if !st.message.is_empty() {
        out.push_str(&format!("Message:    {}\n", st.message));
    }
    out.push_str(&format!("Image:      {}\n", v.image));
    out.push_str(&format!(
        "Stable:     {}\n",
        revision_line(&st, st.stable_revision)
    ));
    out.push_str(&format!(
        "Current:    {}\n",
        revision_line(&st, st.current_revision)
    ));
    if let Some(a) = &st.analysis {
        out.push_str(&format!(
            "Analysis:   promoted {}, {} requests, {} errors, {} failing intervals in a row\n",
            a.promoted_at, a.requests, a.errors, a.failed_intervals
        ));
    }
    out.push_str("Conditions:\n");
    if st.conditions.is_empty() {
        out.push_str("  none\n");
    } else {
        let rows: Vec<Vec<String>> = st
            .conditions
            .iter()
            .map(|c| {
                vec![
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    c.message.clone(),
                ]
            })
            .collect();
        for line in table(&["TYPE", "STATUS", "REASON", "MESSAGE"], &rows).lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out.push_str(&format!(
        "Last incident: {}\n",
        st.last_incident
            .as_ref()
            .map_or_else(|| "none".into(), incident_summary)
    ));
    out.push_str(&format!(
        "Budget:     {}\n",
        st.budget
            .as_ref()
            .map_or_else(|| "not computed yet".into(), budget_summary)
    ));
    out
}

pub fn incident_summary(i: &LastIncident) -> String {
    let mut s = format!("revision {} {} at {}", i.revision, i.reason, i.detected_at);
    if let Some(t) = i.rolled_back_at {
        s.push_str(&format!(", rolled back at {t}"));
    }
    s.push_str(&format!(
        ", {} failed requests, {} downtime",
        i.failed_requests,
        duration(i.downtime_seconds.ceil() as i64)
    ));
    if let Some(cm) = &i.log_excerpt_ref {
        s.push_str(&format!(", log excerpt in ConfigMap {cm}"));
    }
    s
}

pub fn budget_summary(b: &BudgetStatus) -> String {
    format!(
        "{} used of {} a year, {} left",
        duration(b.used_seconds),
        duration(b.allowed_seconds),
        duration(b.remaining_seconds)
    )
}

/// `budget NAME`.
pub fn budget(name: &str, b: Option<&BudgetStatus>) -> String {
    match b {
        None => format!("{name}: budget not computed yet\n"),
        Some(b) => {
            let used_pct = if b.allowed_seconds > 0 {
                b.used_seconds as f64 * 100.0 / b.allowed_seconds as f64
            } else {
                100.0
            };
            format!(
                "Allowed:    {} per rolling year\nUsed:       {} ({used_pct:.1}%)\nRemaining:  {}{}\n",
                duration(b.allowed_seconds),
                duration(b.used_seconds),
                duration(b.remaining_seconds),
                if b.remaining_seconds == 0 {
                    " (exhausted)"
                } else {
                    ""
                }
            )
        }
    }
}

/// `history NAME`, oldest first.
pub fn history(records: &[RevisionRecord]) -> String {
    if records.is_empty() {
        return "No revisions yet.\n".into();
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                r.revision.to_string(),
                r.image.clone(),
                format!("{:?}", r.outcome),
                r.reason.clone().unwrap_or_else(|| "-".into()),
                r.started_at.to_string(),
                opt(r.promoted_at),
                opt(r.finished_at),
            ]
        })
        .collect();
    table(
        &[
            "REVISION", "IMAGE", "OUTCOME", "REASON", "STARTED", "PROMOTED", "FINISHED",
        ],
        &rows,
    )
}

/// `incidents NAME`: the timeline, then the log excerpt.
pub fn incident(v: &IncidentView) -> String {
    let i = &v.incident;
    let mut events: Vec<(String, String)> = Vec::new();
    if let Some(r) = &v.revision {
        events.push((
            r.started_at.to_string(),
            format!("revision {} ({}) started", r.revision, r.image),
        ));
        if let Some(t) = r.promoted_at {
            events.push((t.to_string(), "took user traffic".into()));
        }
    }
    events.push((i.detected_at.to_string(), format!("failed: {}", i.reason)));
    if let Some(t) = i.rolled_back_at {
        events.push((t.to_string(), "traffic back on the stable revision".into()));
    }
    if let Some(t) = i.recovered_at {
        events.push((t.to_string(), "a healthy revision serves again".into()));
    }
    // RFC 3339 UTC strings of one format sort chronologically.
    events.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = format!(
        "Incident:   revision {} of {} ({}), {}\n",
        i.revision, v.name, v.namespace, i.reason
    );
    out.push_str(&format!(
        "Impact:     {} failed requests, {} downtime charged\n",
        i.failed_requests,
        duration(i.downtime_seconds.ceil() as i64)
    ));
    out.push_str("Timeline:\n");
    for (t, what) in &events {
        out.push_str(&format!("  {t}  {what}\n"));
    }
    match (&i.log_excerpt_ref, &v.excerpt) {
        (Some(cm), Some(excerpt)) => {
            out.push_str(&format!("Log excerpt (ConfigMap {cm}):\n"));
            for line in excerpt.lines() {
                out.push_str(&format!("  {line}\n"));
            }
        }
        (Some(cm), None) => out.push_str(&format!(
            "Log excerpt: ConfigMap {cm} not found (pruned?)\n"
        )),
        (None, _) => out.push_str("Log excerpt: none captured\n"),
    }
    out
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
