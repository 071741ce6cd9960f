//! Judging one interval of a bake: the absolute limits (`maxErrorRate`, `maxLatencyP99Ms`,
//! PromQL), then those relative to the stable revision's recorded bake
//! (`relativeToStable`), and the message that says which one failed. Pure.

use super::AnalysisSample;
use crate::api::{BakeFigures, ShortenerReleaseSpec};
use crate::promql::Verdict;

/// The stable revision a bake is compared with, and what its own bake measured.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Baseline {
    pub revision: i64,
    pub figures: BakeFigures,
}

/// The check that failed an interval (the first, in the order the message reports them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FailedCheck {
    PromQL,
    ErrorRate,
    Latency,
    ErrorRateVsStable,
    LatencyVsStable,
}

pub(super) fn failed_check(
    spec: &ShortenerReleaseSpec,
    sample: &AnalysisSample,
    baseline: Option<&Baseline>,
) -> Option<FailedCheck> {
    if matches!(sample.prometheus, Some(Verdict::Failed(_))) {
        Some(FailedCheck::PromQL)
    } else if error_rate_failed(spec, sample) {
        Some(FailedCheck::ErrorRate)
    } else if latency_failed(spec, sample) {
        Some(FailedCheck::Latency)
    } else if error_rate_limit_vs_stable(spec, baseline)
        .is_some_and(|limit| rate_above(sample, limit, spec.analysis.min_requests))
    {
        Some(FailedCheck::ErrorRateVsStable)
    } else if latency_limit_vs_stable(spec, baseline)
        .zip(judged_p99_ms(spec, sample))
        .is_some_and(|(limit, p99)| p99 > limit)
    {
        Some(FailedCheck::LatencyVsStable)
    } else {
        None
    }
}

/// The error rate (percent) an interval may reach: the stable revision's plus the increase.
fn error_rate_limit_vs_stable(spec: &ShortenerReleaseSpec, b: Option<&Baseline>) -> Option<f64> {
    let increase = spec
        .analysis
        .relative_to_stable
        .as_ref()?
        .max_error_rate_increase?;
    Some(b?.figures.error_rate() + increase)
}

/// The p99 (milliseconds) an interval may reach: the stable revision's peak, raised by the
/// percentage.
fn latency_limit_vs_stable(spec: &ShortenerReleaseSpec, b: Option<&Baseline>) -> Option<f64> {
    let percent = spec
        .analysis
        .relative_to_stable
        .as_ref()?
        .max_latency_p99_increase_percent?;
    let peak = b?.figures.peak_latency_p99_ms?;
    Some(peak * (1.0 + percent as f64 / 100.0))
}

/// The interval's p99 in milliseconds, when it timed enough requests to be judged.
pub(super) fn judged_p99_ms(spec: &ShortenerReleaseSpec, sample: &AnalysisSample) -> Option<f64> {
    let latency = sample.latency.as_ref()?;
    (latency.observed >= spec.analysis.min_requests.max(1)).then_some(latency.p99_seconds * 1000.0)
}

/// errors/requests above `limit` percent, from `min_requests` requests on (without
/// floating the ratio).
fn rate_above(sample: &AnalysisSample, limit: f64, min_requests: i64) -> bool {
    sample.requests >= min_requests
        && sample.requests > 0
        && (sample.errors as f64) * 100.0 > limit * (sample.requests as f64)
}

fn error_rate_failed(spec: &ShortenerReleaseSpec, sample: &AnalysisSample) -> bool {
    let a = &spec.analysis;
    rate_above(sample, a.max_error_rate, a.min_requests)
}

/// The interval's p99 above `maxLatencyP99Ms`, judged from `minRequests` timed requests on.
fn latency_failed(spec: &ShortenerReleaseSpec, sample: &AnalysisSample) -> bool {
    spec.analysis
        .max_latency_p99_ms
        .zip(judged_p99_ms(spec, sample))
        .is_some_and(|(max_ms, p99)| p99 > max_ms as f64)
}

/// What made the last interval fail, for the status, the Event and the incident. `None`
/// (the limit was lowered mid-bake, the interval itself passed): the error-rate figures.
pub(super) fn failure_detail(
    spec: &ShortenerReleaseSpec,
    sample: &AnalysisSample,
    failed: Option<FailedCheck>,
    baseline: Option<&Baseline>,
) -> String {
    let a = &spec.analysis;
    if let (Some(check), Some(b)) = (failed, baseline) {
        let stable = format!("stable revision {}'s bake", b.revision);
        match check {
            FailedCheck::ErrorRateVsStable => {
                let rate = (sample.errors as f64) * 100.0 / (sample.requests.max(1) as f64);
                let increase = error_rate_limit_vs_stable(spec, baseline).unwrap_or(0.0)
                    - b.figures.error_rate();
                return format!(
                    "{} of {} requests failed in the last {}s ({rate:.2}%), more than {increase} \
                     points above the {:.2}% of {stable} (relativeToStable)",
                    sample.errors,
                    sample.requests,
                    a.interval_seconds,
                    b.figures.error_rate()
                );
            }
            FailedCheck::LatencyVsStable => {
                let p99 = judged_p99_ms(spec, sample).unwrap_or(0.0);
                let limit = latency_limit_vs_stable(spec, baseline).unwrap_or(0.0);
                return format!(
                    "p99 latency {p99:.1}ms in the last {}s, above {limit:.1}ms: more than \
                     the allowed rise over the {:.1}ms peak of {stable} (relativeToStable)",
                    a.interval_seconds,
                    b.figures.peak_latency_p99_ms.unwrap_or(0.0)
                );
            }
            _ => {}
        }
    }
    match (
        failed,
        &sample.prometheus,
        a.max_latency_p99_ms,
        &sample.latency,
    ) {
        (Some(FailedCheck::PromQL), Some(Verdict::Failed(why)), _, _) => {
            format!("PromQL check failed: {why}")
        }
        (Some(FailedCheck::Latency), _, Some(max_ms), Some(latency)) => format!(
            "p99 latency {:.0}ms over {} requests in the last {}s (limit {max_ms}ms)",
            latency.p99_seconds * 1000.0,
            latency.observed,
            a.interval_seconds
        ),
        _ => format!(
            "{} of {} requests failed in the last {}s (limit {}%)",
            sample.errors, sample.requests, a.interval_seconds, a.max_error_rate
        ),
    }
}
