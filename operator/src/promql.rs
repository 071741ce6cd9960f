//! The Prometheus provider of the bake's analysis (`spec.analysis.prometheus`): each interval
//! the operator runs every query as an instant query (`GET /api/v1/query`) and judges the
//! number it returns against the query's bounds. The templating, the parsing of the answer
//! and the decision are pure and tested here; [`sample`] does the HTTP.
//!
//! An answer without a usable number (empty vector, NaN, an error, Prometheus unreachable)
//! is "no data": it neither fails nor passes the interval. A bake in which no interval
//! passed every query does not promote (see `rollout::progress`), so a query that never
//! matches anything cannot wave a revision through.

use std::time::Duration;

use serde::Deserialize;

use crate::api::{AnalysisStatus, PromQuery, PrometheusAnalysis, ShortenerReleaseSpec};

/// Largest answer read from Prometheus; one number is a few hundred bytes, so more means the
/// query selects far too much (a tenant's query against a shared server).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest message kept in the status for one interval's result.
const MAX_SUMMARY_CHARS: usize = 512;
/// Per-request deadline (the probe client's), sent to Prometheus too so it gives up as well.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// What the placeholders of a query stand for.
#[derive(Clone, Debug, PartialEq)]
pub struct Vars<'a> {
    pub namespace: &'a str,
    pub release: &'a str,
    /// The revision's pod template hash (its pods' `shortener.dev/revision` label).
    pub revision: &'a str,
}

/// The query with `{{namespace}}`, `{{release}}` and `{{revision}}` filled in, each value
/// escaped for a PromQL string literal (double or single quoted). An unknown placeholder is
/// an error (the schema refuses it; an object stored before that rule is caught here).
pub fn render(query: &str, vars: &Vars<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(query.len() + 64);
    let mut rest = query;
    while let Some(at) = rest.find("{{") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let Some(end) = after.find("}}") else {
            return Err("unclosed {{ in query".into());
        };
        let value = match &after[..end] {
            "namespace" => vars.namespace,
            "release" => vars.release,
            "revision" => vars.revision,
            other => return Err(format!("unknown placeholder {{{{{other}}}}} in query")),
        };
        out.push_str(&escape(value));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `value` safe inside a PromQL string literal, whichever quote it uses.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\'' => out.push_str("\\'"),
            '`' => out.push_str("\\`"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: serde_json::Value,
}

/// The one number of an instant query's answer (the JSON body of `/api/v1/query`). `Err`
/// says why there is none: an error answer, no series, several series, NaN, not a number.
pub fn parse(body: &[u8]) -> Result<f64, String> {
    let answer: Answer =
        serde_json::from_slice(body).map_err(|e| format!("not a Prometheus answer: {e}"))?;
    if answer.status != "success" {
        return Err(format!(
            "Prometheus answered {}: {}",
            answer.status,
            answer.error.unwrap_or_default()
        ));
    }
    let data = answer.data.ok_or("Prometheus answered without data")?;
    let sample = match data.result_type.as_str() {
        "scalar" => data.result,
        "vector" => {
            let series = data.result.as_array().ok_or("malformed vector")?;
            match series.as_slice() {
                [] => return Err("no data (empty result)".into()),
                [one] => one.get("value").cloned().ok_or("malformed vector")?,
                many => {
                    return Err(format!(
                        "{} series; the query must return one (aggregate it with sum, max...)",
                        many.len()
                    ));
                }
            }
        }
        other => return Err(format!("a {other}; the query must return one number")),
    };
    // A sample is [timestamp, "value"]; Prometheus writes the value as a string.
    let text = sample
        .get(1)
        .and_then(|v| v.as_str())
        .ok_or("malformed sample")?;
    let value: f64 = text
        .parse()
        .map_err(|_| format!("value {text:?} is not a number"))?;
    if value.is_nan() {
        return Err("no data (NaN, e.g. 0/0 without traffic)".into());
    }
    Ok(value)
}

/// One interval's PromQL result.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Every query answered a number within its bounds.
    Passed(String),
    /// A query answered a number outside its bounds: the interval fails.
    Failed(String),
    /// Nothing out of bounds, but a query gave no number: the interval is not judged.
    NoData(String),
}

impl Verdict {
    pub fn message(&self) -> &str {
        match self {
            Verdict::Passed(m) | Verdict::Failed(m) | Verdict::NoData(m) => m,
        }
    }
}

fn bounds(q: &PromQuery) -> String {
    match (q.min, q.max) {
        (Some(min), Some(max)) => format!("{min}..{max}"),
        (Some(min), None) => format!("min {min}"),
        (None, Some(max)) => format!("max {max}"),
        (None, None) => "no bounds".into(),
    }
}

/// Judges each query's result (in the order of `queries`) against its bounds. Infinities are
/// numbers (a ratio over zero requests with errors is +Inf, and fails a `max`).
pub fn judge(queries: &[PromQuery], results: &[Result<f64, String>]) -> Verdict {
    let mut failed = Vec::new();
    let mut no_data = Vec::new();
    let mut passed = Vec::new();
    for (q, result) in queries.iter().zip(results) {
        match result {
            Ok(v) => {
                let low = q.min.is_some_and(|min| *v < min);
                let high = q.max.is_some_and(|max| *v > max);
                let line = format!("query {} = {v} ({})", q.name, bounds(q));
                if low || high {
                    failed.push(line.replacen(" (", " outside (", 1));
                } else {
                    passed.push(line);
                }
            }
            Err(why) => no_data.push(format!("query {}: {why}", q.name)),
        }
    }
    let cut = |parts: Vec<String>| truncate(parts.join("; "));
    if !failed.is_empty() {
        Verdict::Failed(cut(failed))
    } else if !no_data.is_empty() || results.len() < queries.len() {
        Verdict::NoData(cut(no_data))
    } else {
        Verdict::Passed(cut(passed))
    }
}

fn truncate(mut s: String) -> String {
    if s.chars().count() > MAX_SUMMARY_CHARS {
        s = s.chars().take(MAX_SUMMARY_CHARS - 1).collect();
        s.push('…');
    }
    s
}

/// Keeps an interval's verdict in the bake's status; true when every query passed.
pub fn record(analysis: &mut AnalysisStatus, verdict: Option<&Verdict>) -> bool {
    let Some(verdict) = verdict else {
        return false;
    };
    analysis.prometheus = Some(match verdict {
        Verdict::NoData(m) => format!("no data: {m}"),
        other => other.message().to_string(),
    });
    let passed = matches!(verdict, Verdict::Passed(_));
    if passed {
        analysis.prometheus_passed_intervals =
            analysis.prometheus_passed_intervals.saturating_add(1);
    }
    passed
}

/// Why a bake that has run its course must not end stable: PromQL queries are configured
/// but no interval passed them all (no data throughout, e.g. a query matching no series or
/// an unreachable Prometheus). A bake of 0 seconds asks for no analysis, so it is exempt.
pub fn unproven(spec: &ShortenerReleaseSpec, analysis: &AnalysisStatus) -> Option<String> {
    spec.analysis.prometheus.as_ref()?;
    if spec.analysis.bake_seconds == 0 || analysis.prometheus_passed_intervals > 0 {
        return None;
    }
    Some(format!(
        "no interval of the {}s bake passed every PromQL query; last: {}",
        spec.analysis.bake_seconds,
        analysis
            .prometheus
            .as_deref()
            .unwrap_or("no answer from Prometheus yet")
    ))
}

/// Where and how to ask.
pub struct Target<'a> {
    pub spec: &'a PrometheusAnalysis,
    pub namespace: &'a str,
    pub release: &'a str,
    /// From `bearerTokenSecret`; sent, never logged. `Err`: why it could not be read.
    pub token: Result<Option<String>, String>,
    /// Why the address may not be queried (`--prometheus-allow`); then nothing is sent and
    /// every interval is "no data" with this reason.
    pub refused: Option<String>,
}

/// The bearer token `bearerTokenSecret` names, read from the release's namespace. An error
/// says which Secret and key, never what is in it.
pub async fn read_token(
    client: &kube::Client,
    namespace: &str,
    spec: &PrometheusAnalysis,
) -> Result<Option<String>, String> {
    let Some(r) = &spec.bearer_token_secret else {
        return Ok(None);
    };
    let what = format!("bearerTokenSecret {}/{}", r.name, r.key);
    let secret =
        kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), namespace)
            .get_opt(&r.name)
            .await
            .map_err(|e| format!("{what}: {e}"))?
            .ok_or_else(|| format!("{what}: no such Secret"))?;
    let raw = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&r.key))
        .ok_or_else(|| format!("{what}: no such key"))?;
    let token = std::str::from_utf8(&raw.0)
        .ok()
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| format!("{what}: not a token (empty or not printable ASCII)"))?;
    Ok(Some(token.to_owned()))
}

/// Runs every query for the revision `hash` and judges the answers.
pub async fn sample(client: &reqwest::Client, target: &Target<'_>, hash: &str) -> Verdict {
    let vars = Vars {
        namespace: target.namespace,
        release: target.release,
        revision: hash,
    };
    if let Some(why) = &target.refused {
        return judge(
            &target.spec.queries,
            &vec![Err(why.clone()); target.spec.queries.len()],
        );
    }
    let mut results = Vec::with_capacity(target.spec.queries.len());
    for q in &target.spec.queries {
        let result = match (&target.token, &render(&q.query, &vars)) {
            (Err(e), _) | (_, Err(e)) => Err(e.clone()),
            (Ok(token), Ok(query)) => {
                instant_query(client, &target.spec.address, token.as_deref(), query).await
            }
        };
        if let Err(e) = &result {
            tracing::info!(query = %q.name, reason = %e, "PromQL query gave no number");
        }
        results.push(result);
    }
    judge(&target.spec.queries, &results)
}

async fn instant_query(
    client: &reqwest::Client,
    address: &str,
    token: Option<&str>,
    query: &str,
) -> Result<f64, String> {
    let base = address.trim_end_matches('/');
    let timeout = format!("{}s", QUERY_TIMEOUT.as_secs());
    let url = reqwest::Url::parse_with_params(
        &format!("{base}/api/v1/query"),
        [("query", query), ("timeout", timeout.as_str())],
    )
    .map_err(|e| format!("bad address: {e}"))?;
    let mut req = client.get(url).timeout(QUERY_TIMEOUT);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    // The address is the user's and carries no credentials (the schema refuses them); the
    // error names it so a typo is visible.
    let mut resp = req
        .send()
        .await
        .map_err(|e| format!("GET {base}/api/v1/query: {e}"))?;
    let status = resp.status();
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("GET {base}/api/v1/query: {e}"))?
    {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(format!(
                "answer larger than {} KiB; the query must return one number",
                MAX_BODY_BYTES / 1024
            ));
        }
        body.extend_from_slice(&chunk);
    }
    // Prometheus answers a bad query with 400 and an error body: parse says which.
    match parse(&body) {
        Err(e) if !status.is_success() => Err(format!("{status}: {e}")),
        other => other,
    }
}

pub mod allow;

#[cfg(test)]
mod tests;
