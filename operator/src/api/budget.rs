//! The SLA budget as it appears in `status.budget`. The arithmetic on it is in
//! `crate::budget`, in `impl` blocks on these types.

use jiff::Timestamp;
use jiff::civil::Date;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Downtime charged on one UTC day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DayCharge {
    /// The UTC day, `YYYY-MM-DD`.
    pub day: Date,
    /// Seconds of downtime charged on that day, at most 86400.
    pub seconds: i64,
}

/// An outage of the active revision that is still going on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpenOutage {
    /// When the outage was first observed.
    pub started_at: Timestamp,
    /// The outage has been charged to the budget up to this instant; only time after it is
    /// charged next.
    pub charged_until: Timestamp,
    /// Seconds of this outage charged so far.
    pub charged_seconds: i64,
}

/// The charged downtime in the rolling window, plus the outage in progress if any.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DowntimeLedger {
    /// Downtime per UTC day within the window, oldest first, at most one entry per day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<DayCharge>,
    /// Set while the active revision is down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_outage: Option<OpenOutage>,
}

/// What `status.budget` holds: the figures users read, and the ledger they come from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetStatus {
    /// Downtime allowed in the rolling 365 days (from `spec.sla.allowedDowntimePerYear`).
    pub allowed_seconds: i64,
    /// Downtime charged in the rolling 365 days.
    pub used_seconds: i64,
    /// `allowedSeconds - usedSeconds`, never below zero.
    pub remaining_seconds: i64,
    /// Where the figures come from; kept so a restarted operator goes on charging correctly.
    #[serde(default)]
    pub ledger: DowntimeLedger,
}
