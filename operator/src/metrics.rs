//! The operator's Prometheus metrics (names and labels per docs/contracts.md).

use std::time::Instant;

use prometheus::{
    Counter, CounterVec, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec,
    Opts, Registry,
};

use crate::api::FailureReason;
use crate::api::Phase;

/// Error classes for `reconcile_errors_total{kind}` and the backoff policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    Transient,
    Conflict,
    Permanent,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Permanent => "permanent",
        }
    }
}

#[derive(Clone)]
pub struct Metrics {
    pub reconciles: Counter,
    pub reconcile_errors: IntCounterVec,
    pub reconcile_duration: Histogram,
    pub rollbacks: IntCounterVec,
    pub time_to_restore: HistogramVec,
    pub release_phase: GaugeVec,
    pub incidents: IntCounterVec,
    pub downtime: CounterVec,
    pub budget_remaining: GaugeVec,
    pub webhook_deliveries: IntCounterVec,
    pub up: Gauge,
}

/// `webhook_deliveries_total{result}`: the alert was received (a 2xx), or every attempt failed
/// (refused target, timeouts, error answers).
pub const WEBHOOK_DELIVERED: &str = "delivered";
pub const WEBHOOK_FAILED: &str = "failed";

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let p = "shortener_operator_";
        let m = Metrics {
            reconciles: Counter::new(format!("{p}reconciles_total"), "Reconciliations run")?,
            reconcile_errors: IntCounterVec::new(
                Opts::new(
                    format!("{p}reconcile_errors_total"),
                    "Reconciliations that failed, by error class",
                ),
                &["kind"],
            )?,
            reconcile_duration: Histogram::with_opts(
                HistogramOpts::new(
                    format!("{p}reconcile_duration_seconds"),
                    "Time spent in one reconciliation",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
            )?,
            rollbacks: IntCounterVec::new(
                Opts::new(
                    format!("{p}rollbacks_total"),
                    "Revisions rolled back to the stable revision (traffic switched back, or never given), by release and failure reason",
                ),
                &["namespace", "name", "reason"],
            )?,
            time_to_restore: HistogramVec::new(
                HistogramOpts::new(
                    format!("{p}time_to_restore_seconds"),
                    "From failure detection to traffic restored on the stable revision, by release",
                )
                .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0]),
                &["namespace", "name"],
            )?,
            release_phase: GaugeVec::new(
                Opts::new(
                    format!("{p}release_phase"),
                    "1 for the current phase of each ShortenerRelease, 0 for the others",
                ),
                &["namespace", "name", "phase"],
            )?,
            incidents: IntCounterVec::new(
                Opts::new(
                    format!("{p}incidents_total"),
                    "Failed revisions, by release and reason",
                ),
                &["namespace", "name", "reason"],
            )?,
            downtime: CounterVec::new(
                Opts::new(
                    format!("{p}downtime_seconds_total"),
                    "User-visible downtime observed by the operator",
                ),
                &["namespace", "name"],
            )?,
            budget_remaining: GaugeVec::new(
                Opts::new(
                    format!("{p}downtime_budget_remaining_seconds"),
                    "SLA downtime budget left in the rolling year",
                ),
                &["namespace", "name"],
            )?,
            webhook_deliveries: IntCounterVec::new(
                Opts::new(
                    format!("{p}webhook_deliveries_total"),
                    "Incident webhook deliveries, by result (delivered, failed)",
                ),
                &["result"],
            )?,
            up: Gauge::new(format!("{p}up"), "1 while the controller runs")?,
        };
        registry.register(Box::new(m.reconciles.clone()))?;
        registry.register(Box::new(m.reconcile_errors.clone()))?;
        registry.register(Box::new(m.reconcile_duration.clone()))?;
        registry.register(Box::new(m.rollbacks.clone()))?;
        registry.register(Box::new(m.time_to_restore.clone()))?;
        registry.register(Box::new(m.release_phase.clone()))?;
        registry.register(Box::new(m.incidents.clone()))?;
        registry.register(Box::new(m.downtime.clone()))?;
        registry.register(Box::new(m.budget_remaining.clone()))?;
        registry.register(Box::new(m.webhook_deliveries.clone()))?;
        registry.register(Box::new(m.up.clone()))?;
        // Zero series for the fixed label sets, so dashboards and alerts see them from the start.
        for kind in [
            ErrorKind::Transient,
            ErrorKind::Conflict,
            ErrorKind::Permanent,
        ] {
            m.reconcile_errors.with_label_values(&[kind.as_str()]);
        }
        for result in [WEBHOOK_DELIVERED, WEBHOOK_FAILED] {
            m.webhook_deliveries.with_label_values(&[result]);
        }
        // The per-release rollback and incident series appear at their first increment (the
        // rollback alert has an arm for a series that appears at 1); zero series for every
        // reason of every release would be most of the operator's series at 1,000 releases.
        Ok(m)
    }

    /// Starts a reconcile timer that records when dropped.
    pub fn reconcile_timer(&self) -> ReconcileTimer {
        self.reconciles.inc();
        ReconcileTimer {
            start: Instant::now(),
            histogram: self.reconcile_duration.clone(),
        }
    }

    pub fn set_phase(&self, namespace: &str, name: &str, phase: Phase) {
        for p in Phase::ALL {
            let v = if p == phase { 1.0 } else { 0.0 };
            self.release_phase
                .with_label_values(&[namespace, name, p.as_str()])
                .set(v);
        }
    }

    /// Drops the per-release series of a deleted release.
    pub fn forget(&self, namespace: &str, name: &str) {
        for p in Phase::ALL {
            let _ = self
                .release_phase
                .remove_label_values(&[namespace, name, p.as_str()]);
        }
        for reason in FailureReason::ALL {
            let labels = [namespace, name, reason.as_str()];
            let _ = self.rollbacks.remove_label_values(&labels);
            let _ = self.incidents.remove_label_values(&labels);
        }
        let _ = self.time_to_restore.remove_label_values(&[namespace, name]);
        let _ = self.downtime.remove_label_values(&[namespace, name]);
        let _ = self
            .budget_remaining
            .remove_label_values(&[namespace, name]);
    }
}

pub struct ReconcileTimer {
    start: Instant,
    histogram: Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Encoder;

    #[test]
    fn exposes_contract_names() {
        let registry = Registry::new();
        let m = Metrics::new(&registry).unwrap();
        m.set_phase("ns", "web", Phase::Healthy);
        m.rollbacks
            .with_label_values(&["ns", "web", "AnalysisFailed"])
            .inc();
        m.incidents
            .with_label_values(&["ns", "web", "AnalysisFailed"])
            .inc();
        m.time_to_restore
            .with_label_values(&["ns", "web"])
            .observe(0.5);
        drop(m.reconcile_timer());
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        for name in [
            "shortener_operator_reconciles_total 1",
            "shortener_operator_reconcile_errors_total{kind=\"conflict\"} 0",
            "shortener_operator_reconcile_duration_seconds_count 1",
            "shortener_operator_rollbacks_total{name=\"web\",namespace=\"ns\",reason=\"AnalysisFailed\"} 1",
            "shortener_operator_time_to_restore_seconds_count{name=\"web\",namespace=\"ns\"} 1",
            "shortener_operator_webhook_deliveries_total{result=\"failed\"} 0",
            "shortener_operator_release_phase{name=\"web\",namespace=\"ns\",phase=\"Healthy\"} 1",
            "shortener_operator_release_phase{name=\"web\",namespace=\"ns\",phase=\"Degraded\"} 0",
            "shortener_operator_incidents_total{name=\"web\",namespace=\"ns\",reason=\"AnalysisFailed\"} 1",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }

    #[test]
    fn a_deleted_release_leaves_no_series() {
        let registry = Registry::new();
        let m = Metrics::new(&registry).unwrap();
        for name in ["web", "other"] {
            m.set_phase("ns", name, Phase::RolledBack);
            m.rollbacks
                .with_label_values(&["ns", name, "CrashLoop"])
                .inc();
            m.incidents
                .with_label_values(&["ns", name, "CrashLoop"])
                .inc();
            m.time_to_restore
                .with_label_values(&["ns", name])
                .observe(1.0);
            m.downtime.with_label_values(&["ns", name]).inc_by(1.0);
            m.budget_remaining.with_label_values(&["ns", name]).set(5.0);
        }
        m.forget("ns", "web");
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            !text.contains("name=\"web\""),
            "series of the deleted release:\n{text}"
        );
        for family in [
            "release_phase",
            "rollbacks_total",
            "incidents_total",
            "time_to_restore_seconds_count",
            "downtime_seconds_total",
            "downtime_budget_remaining_seconds",
        ] {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("shortener_operator_{family}"))
                        && l.contains("name=\"other\"")),
                "{family} of the other release is gone:\n{text}"
            );
        }
    }
}
