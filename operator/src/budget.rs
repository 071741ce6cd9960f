//! SLA downtime budget over a rolling year.
//!
//! Downtime is charged per UTC day, so the record kept in status is at most one entry per
//! day of the window (365 entries, about 15 KiB of JSON in the worst case) however many
//! outages there were. The window is day-granular: downtime charged on day D counts for the
//! 365 days D, D+1, ..., D+364 and is gone on D+365. It may therefore count up to a day
//! longer than an exact rolling window would, never shorter: the budget errs towards
//! protecting the SLA.
//!
//! Everything lives in [`BudgetStatus`], which the operator stores in the release's status
//! and reads back on every reconcile, so a restarted operator carries on where the last one
//! stopped. An outage in progress is charged up to a recorded instant
//! ([`OpenOutage::charged_until`]) and only the time after it is charged next, so charging
//! the same outage on every reconcile, or again after a restart, never charges a second
//! twice. Timestamps in the future (another replica's clock ahead of ours) are clamped to
//! now rather than trusted.

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

pub use crate::api::budget::{BudgetStatus, DayCharge, DowntimeLedger, OpenOutage};

/// Length of the rolling window.
pub const WINDOW_DAYS: i64 = 365;
/// The allowance when `spec.sla.allowedDowntimePerYear` is not set.
pub const DEFAULT_ALLOWED_DOWNTIME: &str = "15m";

const SECONDS_PER_DAY: i64 = 86_400;
const MAX_ALLOWED_SECONDS: i64 = WINDOW_DAYS * SECONDS_PER_DAY;

/// A downtime allowance that is not a valid duration string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationParseError {
    #[error("duration is empty; expected something like \"15m\", \"1h30m\" or \"90s\"")]
    Empty,
    #[error(
        "invalid character {found:?} in duration {input:?}; expected digits followed by d, h, m or s"
    )]
    InvalidCharacter { input: String, found: char },
    #[error("number without a unit in duration {input:?}; add d, h, m or s (e.g. \"15m\")")]
    MissingUnit { input: String },
    #[error("unit without a number in duration {input:?}")]
    MissingNumber { input: String },
    #[error("unknown unit {unit:?} in duration {input:?}; use d, h, m or s")]
    UnknownUnit { input: String, unit: String },
    #[error(
        "units in duration {input:?} must go from largest to smallest, each at most once (e.g. \"1h30m\")"
    )]
    UnitOrder { input: String },
    #[error("duration {input:?} is longer than the {WINDOW_DAYS}-day budget window")]
    TooLong { input: String },
}

/// Budget arithmetic that was handed impossible input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    #[error("downtime cannot be negative ({seconds}s)")]
    NegativeDuration { seconds: i64 },
}

/// Parses a downtime allowance such as `15m`, `1h30m`, `90s` or `1d` into seconds.
///
/// Units are `d`, `h`, `m` and `s`, largest first, each at most once; no fractions, signs or
/// spaces. `0s` is accepted and means any downtime exhausts the budget. More than the
/// window itself is rejected, since it could never be used up.
pub fn parse_allowed_downtime(input: &str) -> Result<i64, DurationParseError> {
    let text = input.trim();
    if text.is_empty() {
        return Err(DurationParseError::Empty);
    }
    let owned = || input.to_owned();
    let mut total: i64 = 0;
    let mut last_rank = usize::MAX;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits);
        let letters = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(letters);
        if number.is_empty() {
            if unit.is_empty() {
                let found = after.chars().next().unwrap_or(' ');
                return Err(DurationParseError::InvalidCharacter {
                    input: owned(),
                    found,
                });
            }
            return Err(DurationParseError::MissingNumber { input: owned() });
        }
        if unit.is_empty() {
            return match after.chars().next() {
                Some(found) => Err(DurationParseError::InvalidCharacter {
                    input: owned(),
                    found,
                }),
                None => Err(DurationParseError::MissingUnit { input: owned() }),
            };
        }
        let (rank, unit_seconds) = match unit {
            "d" => (3, SECONDS_PER_DAY),
            "h" => (2, 3_600),
            "m" => (1, 60),
            "s" => (0, 1),
            other => {
                return Err(DurationParseError::UnknownUnit {
                    input: owned(),
                    unit: other.to_owned(),
                });
            }
        };
        if rank >= last_rank {
            return Err(DurationParseError::UnitOrder { input: owned() });
        }
        last_rank = rank;
        let value: i64 = number
            .parse()
            .map_err(|_| DurationParseError::TooLong { input: owned() })?;
        total = value
            .checked_mul(unit_seconds)
            .and_then(|s| total.checked_add(s))
            .filter(|&s| s <= MAX_ALLOWED_SECONDS)
            .ok_or_else(|| DurationParseError::TooLong { input: owned() })?;
        rest = after;
    }
    Ok(total)
}

/// Formats seconds the way [`parse_allowed_downtime`] reads them, e.g. `1h30m`; `0s` for zero.
pub fn format_duration(seconds: i64) -> String {
    let sign = if seconds < 0 { "-" } else { "" };
    let mut left = seconds.unsigned_abs();
    let mut out = String::from(sign);
    for (unit, size) in [("d", 86_400u64), ("h", 3_600), ("m", 60), ("s", 1)] {
        if left >= size {
            out.push_str(&format!("{}{unit}", left / size));
            left %= size;
        }
    }
    if out.len() == sign.len() {
        out.push_str("0s");
    }
    out
}

/// A finished outage, as returned by [`DowntimeLedger::observe_up`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClosedOutage {
    pub started_at: Timestamp,
    pub ended_at: Timestamp,
    /// Seconds charged for the whole outage: the value for `downtimeSeconds`.
    pub downtime_seconds: i64,
}

impl DowntimeLedger {
    /// Charges `seconds` of downtime that ended at `now`. Returns the seconds charged.
    pub fn charge(&mut self, now: Timestamp, seconds: i64) -> Result<i64, BudgetError> {
        if seconds < 0 {
            return Err(BudgetError::NegativeDuration { seconds });
        }
        let now = whole_seconds(now);
        let start = now
            .checked_sub(jiff::SignedDuration::from_secs(seconds))
            .unwrap_or(Timestamp::MIN);
        self.charge_interval(start, now, now)
    }

    /// Charges the downtime from `start` to `end`, as far as it lies in the window and in the
    /// past: an `end` after `now` is clamped to `now`. Time already charged for the open
    /// outage is not charged again. Returns the seconds charged.
    pub fn charge_interval(
        &mut self,
        start: Timestamp,
        end: Timestamp,
        now: Timestamp,
    ) -> Result<i64, BudgetError> {
        let (start, end, now) = (whole_seconds(start), whole_seconds(end), whole_seconds(now));
        if end < start {
            return Err(BudgetError::NegativeDuration {
                seconds: end.as_second() - start.as_second(),
            });
        }
        self.prune(now);
        let end = end.min(now);
        let mut charged = 0;
        match &self.open_outage {
            Some(open) if open.started_at < open.charged_until => {
                let (covered_from, covered_to) = (open.started_at, open.charged_until);
                charged += self.add(start, end.min(covered_from), now);
                charged += self.add(start.max(covered_to), end, now);
            }
            _ => charged += self.add(start, end, now),
        }
        Ok(charged)
    }

    /// Records that the active revision is down at `now`: opens an outage if none is open,
    /// else charges the time since it was last charged. Safe to call on every reconcile.
    /// Returns the seconds newly charged.
    pub fn observe_down(&mut self, now: Timestamp) -> i64 {
        self.observe_down_since(now, now)
    }

    /// Like [`observe_down`](Self::observe_down), for an outage known to have started at
    /// `started_at` (e.g. when the failure was detected); a start in the future counts as
    /// now. If an outage is already open its start is kept.
    pub fn observe_down_since(&mut self, started_at: Timestamp, now: Timestamp) -> i64 {
        let now = whole_seconds(now);
        self.prune(now);
        let open = self.open_outage.get_or_insert_with(|| {
            let start = whole_seconds(started_at).min(now);
            OpenOutage {
                started_at: start,
                charged_until: start,
                charged_seconds: 0,
            }
        });
        let from = open.charged_until;
        if now <= from {
            // Nothing new, or our clock is behind the one that charged last: whatever lies
            // before `charged_until` has been paid for already.
            return 0;
        }
        open.charged_until = now;
        let charged = self.add(from, now, now);
        if let Some(open) = &mut self.open_outage {
            open.charged_seconds += charged;
        }
        charged
    }

    /// Records that the active revision serves again at `now`: charges the rest of the open
    /// outage and closes it. `None` when no outage was open.
    pub fn observe_up(&mut self, now: Timestamp) -> Option<ClosedOutage> {
        self.open_outage.as_ref()?;
        self.observe_down(now);
        let open = self.open_outage.take()?;
        Some(ClosedOutage {
            started_at: open.started_at,
            ended_at: open.charged_until.max(whole_seconds(now)),
            downtime_seconds: open.charged_seconds,
        })
    }

    /// Seconds of downtime within the window at `now`, including the part of an open outage
    /// not charged yet.
    pub fn used(&self, now: Timestamp) -> i64 {
        let now = whole_seconds(now);
        let first = first_day(now);
        let charged: i64 = self
            .days
            .iter()
            .filter(|d| d.day >= first)
            .map(|d| d.seconds.clamp(0, SECONDS_PER_DAY))
            .sum();
        let uncharged = self.open_outage.as_ref().map_or(0, |open| {
            (now.as_second() - open.charged_until.as_second()).max(0)
        });
        charged.saturating_add(uncharged)
    }

    /// Seconds left of `allowed` at `now`, never negative.
    pub fn remaining(&self, allowed: i64, now: Timestamp) -> i64 {
        (allowed - self.used(now)).max(0)
    }

    /// Whether the downtime used has reached the allowance. An allowance of zero is only
    /// exhausted once some downtime has been charged, so it does not freeze a release that
    /// has never been down.
    pub fn exhausted(&self, allowed: i64, now: Timestamp) -> bool {
        let used = self.used(now);
        used > 0 && used >= allowed
    }

    /// Drops days that have left the window, folds days dated after today (written under a
    /// clock that was ahead) into today, and repairs hand-edited entries: days out of order
    /// or repeated are merged, seconds are kept within 0..=86400.
    pub fn prune(&mut self, now: Timestamp) {
        let now = whole_seconds(now);
        let today = day_of(now);
        let first = first_day(now);
        let mut days = std::mem::take(&mut self.days);
        for d in &mut days {
            d.day = d.day.min(today);
        }
        days.retain(|d| d.day >= first);
        days.sort_by_key(|d| d.day);
        for d in days {
            let seconds = d.seconds.clamp(0, SECONDS_PER_DAY);
            match self.days.last_mut() {
                Some(last) if last.day == d.day => {
                    last.seconds = (last.seconds + seconds).min(SECONDS_PER_DAY);
                }
                _ => self.days.push(DayCharge {
                    day: d.day,
                    seconds,
                }),
            }
        }
        if let Some(open) = &mut self.open_outage {
            open.started_at = open.started_at.min(now);
            // `charged_until` is left ahead if it is: that time was charged already, and
            // moving it back would charge it twice.
        }
    }

    /// Adds [start, end) to the day buckets, clipped to the window. Returns seconds added.
    fn add(&mut self, start: Timestamp, end: Timestamp, now: Timestamp) -> i64 {
        let window_start = start_of_day(first_day(now));
        let mut from = start.max(window_start).as_second();
        let to = end.as_second();
        let mut added = 0;
        while from < to {
            let day_start = from.div_euclid(SECONDS_PER_DAY) * SECONDS_PER_DAY;
            let until = to.min(day_start + SECONDS_PER_DAY);
            let day = day_of(Timestamp::from_second(from).unwrap_or(now));
            added += self.add_to_day(day, until - from);
            from = until;
        }
        added
    }

    fn add_to_day(&mut self, day: Date, seconds: i64) -> i64 {
        let index = match self.days.binary_search_by_key(&day, |d| d.day) {
            Ok(i) => i,
            Err(i) => {
                self.days.insert(i, DayCharge { day, seconds: 0 });
                i
            }
        };
        let entry = &mut self.days[index];
        let before = entry.seconds;
        entry.seconds = (before + seconds).min(SECONDS_PER_DAY);
        entry.seconds - before
    }
}

impl BudgetStatus {
    /// Prunes the ledger and recomputes the figures for `allowed_seconds` at `now`; call it
    /// after charging and before writing status.
    pub fn refresh(&mut self, allowed_seconds: i64, now: Timestamp) {
        self.ledger.prune(now);
        self.allowed_seconds = allowed_seconds;
        self.used_seconds = self.ledger.used(now);
        self.remaining_seconds = self.ledger.remaining(allowed_seconds, now);
    }

    /// Whether promotions should stop (with `spec.sla.freezeWhenExhausted`).
    pub fn exhausted(&self, now: Timestamp) -> bool {
        self.ledger.exhausted(self.allowed_seconds, now)
    }
}

/// Status timestamps have whole seconds, like Kubernetes' own `Time`.
fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

fn day_of(t: Timestamp) -> Date {
    t.to_zoned(TimeZone::UTC).date()
}

/// First day still in the window on the day of `now`.
fn first_day(now: Timestamp) -> Date {
    let today = day_of(now);
    today
        .checked_sub(jiff::Span::new().days(WINDOW_DAYS - 1))
        .unwrap_or(Date::MIN)
}

fn start_of_day(day: Date) -> Timestamp {
    day.to_zoned(TimeZone::UTC)
        .map(|z| z.timestamp())
        .unwrap_or(Timestamp::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("valid timestamp")
    }

    fn date(s: &str) -> Date {
        s.parse().expect("valid date")
    }

    fn plus(t: Timestamp, seconds: i64) -> Timestamp {
        t.checked_add(jiff::SignedDuration::from_secs(seconds))
            .expect("in range")
    }

    const DAY: i64 = SECONDS_PER_DAY;

    #[test]
    fn parses_allowed_downtime() {
        let ok: &[(&str, i64)] = &[
            ("15m", 900),
            ("1h30m", 5_400),
            ("90s", 90),
            ("1d", 86_400),
            ("2h0m5s", 7_205),
            ("1d2h3m4s", 93_784),
            (" 15m ", 900),
            ("0s", 0),
            ("365d", 31_536_000),
        ];
        for (input, want) in ok {
            assert_eq!(parse_allowed_downtime(input), Ok(*want), "{input:?}");
        }
        let s = |v: &str| v.to_owned();
        let bad: &[(&str, DurationParseError)] = &[
            ("", DurationParseError::Empty),
            ("  ", DurationParseError::Empty),
            ("15", DurationParseError::MissingUnit { input: s("15") }),
            ("1h30", DurationParseError::MissingUnit { input: s("1h30") }),
            ("m", DurationParseError::MissingNumber { input: s("m") }),
            (
                "1hm",
                DurationParseError::UnknownUnit {
                    input: s("1hm"),
                    unit: s("hm"),
                },
            ),
            (
                "15x",
                DurationParseError::UnknownUnit {
                    input: s("15x"),
                    unit: s("x"),
                },
            ),
            (
                "15min",
                DurationParseError::UnknownUnit {
                    input: s("15min"),
                    unit: s("min"),
                },
            ),
            (
                "15M",
                DurationParseError::UnknownUnit {
                    input: s("15M"),
                    unit: s("M"),
                },
            ),
            ("30m1h", DurationParseError::UnitOrder { input: s("30m1h") }),
            ("1h1h", DurationParseError::UnitOrder { input: s("1h1h") }),
            (
                "1.5h",
                DurationParseError::InvalidCharacter {
                    input: s("1.5h"),
                    found: '.',
                },
            ),
            (
                "-15m",
                DurationParseError::InvalidCharacter {
                    input: s("-15m"),
                    found: '-',
                },
            ),
            (
                "15 m",
                DurationParseError::InvalidCharacter {
                    input: s("15 m"),
                    found: ' ',
                },
            ),
            ("366d", DurationParseError::TooLong { input: s("366d") }),
            ("365d1s", DurationParseError::TooLong { input: s("365d1s") }),
            (
                "99999999999999999999s",
                DurationParseError::TooLong {
                    input: s("99999999999999999999s"),
                },
            ),
        ];
        for (input, want) in bad {
            assert_eq!(
                parse_allowed_downtime(input).as_ref(),
                Err(want),
                "{input:?}"
            );
        }
        // The message names the input so a user can find the field.
        let message = parse_allowed_downtime("15").err().map(|e| e.to_string());
        assert_eq!(
            message.as_deref(),
            Some("number without a unit in duration \"15\"; add d, h, m or s (e.g. \"15m\")")
        );
    }

    #[test]
    fn formats_durations_the_way_they_parse() {
        for (seconds, text) in [
            (0, "0s"),
            (59, "59s"),
            (900, "15m"),
            (5_400, "1h30m"),
            (93_784, "1d2h3m4s"),
            (-90, "-1m30s"),
        ] {
            assert_eq!(format_duration(seconds), text);
            if seconds >= 0 {
                assert_eq!(parse_allowed_downtime(text), Ok(seconds));
            }
        }
    }

    #[test]
    fn downtime_leaves_the_window_after_365_days() {
        let charged_at = ts("2026-03-01T12:00:00Z");
        let mut ledger = DowntimeLedger::default();
        assert_eq!(ledger.charge(charged_at, 600), Ok(600));
        let cases: &[(&str, i64)] = &[
            ("2026-03-01T12:00:00Z", 600),
            ("2026-03-02T00:00:00Z", 600),
            // Day 364 after the charge is the last one it counts on ...
            ("2027-02-28T23:59:59Z", 600),
            // ... and it is gone on day 365.
            ("2027-03-01T00:00:00Z", 0),
            ("2030-01-01T00:00:00Z", 0),
        ];
        for (now, used) in cases {
            let now = ts(now);
            assert_eq!(ledger.used(now), *used, "used at {now}");
            assert_eq!(ledger.remaining(900, now), 900 - used, "remaining at {now}");
        }
        ledger.prune(ts("2027-03-01T00:00:00Z"));
        assert!(ledger.days.is_empty());
    }

    #[test]
    fn downtime_across_midnight_is_split_between_days() {
        let mut ledger = DowntimeLedger::default();
        let charged = ledger.charge_interval(
            ts("2026-03-01T23:50:00Z"),
            ts("2026-03-02T00:10:00Z"),
            ts("2026-03-02T01:00:00Z"),
        );
        assert_eq!(charged, Ok(1_200));
        assert_eq!(
            ledger.days,
            [
                DayCharge {
                    day: date("2026-03-01"),
                    seconds: 600
                },
                DayCharge {
                    day: date("2026-03-02"),
                    seconds: 600
                },
            ]
        );
        assert_eq!(ledger.used(ts("2027-02-28T12:00:00Z")), 1_200);
        // The first half expires a day before the second.
        assert_eq!(ledger.used(ts("2027-03-01T12:00:00Z")), 600);
        assert_eq!(ledger.used(ts("2027-03-02T12:00:00Z")), 0);
    }

    #[test]
    fn the_ledger_stays_bounded_to_one_entry_per_day() {
        let mut ledger = DowntimeLedger::default();
        let start = ts("2026-01-01T00:00:00Z");
        for hour in 0..(3 * 365 * 24) {
            let now = plus(start, hour * 3_600 + 1_800);
            ledger.charge(now, 1).expect("positive");
        }
        assert!(ledger.days.len() <= 365, "{} entries", ledger.days.len());
        // At midnight after the last charge, today has nothing yet: 364 charged days count.
        assert_eq!(ledger.used(plus(start, 3 * 365 * DAY)), 364 * 24);
        assert_eq!(ledger.used(plus(start, 3 * 365 * DAY - 1)), 365 * 24);
        let json = serde_json::to_string(&ledger).expect("serializes");
        assert!(json.len() < 16 * 1024, "{} bytes", json.len());
    }

    #[test]
    fn impossible_input_is_rejected_or_clamped() {
        let now = ts("2026-06-01T12:00:00Z");
        let mut ledger = DowntimeLedger::default();
        assert_eq!(
            ledger.charge(now, -5),
            Err(BudgetError::NegativeDuration { seconds: -5 })
        );
        assert_eq!(
            ledger.charge_interval(now, plus(now, -60), now),
            Err(BudgetError::NegativeDuration { seconds: -60 })
        );
        assert!(ledger.days.is_empty());

        struct Case {
            name: &'static str,
            start: i64,
            end: i64,
            charged: i64,
        }
        let cases = [
            Case {
                name: "in the past",
                start: -60,
                end: 0,
                charged: 60,
            },
            Case {
                name: "end in the future is clamped to now",
                start: -60,
                end: 3_600,
                charged: 60,
            },
            Case {
                name: "wholly in the future charges nothing",
                start: 60,
                end: 120,
                charged: 0,
            },
            Case {
                name: "zero length",
                start: -10,
                end: -10,
                charged: 0,
            },
            Case {
                name: "before the window is clipped",
                start: -400 * DAY,
                end: -364 * DAY,
                charged: DAY / 2,
            },
            Case {
                name: "sub-second parts are ignored",
                start: -1,
                end: 0,
                charged: 1,
            },
        ];
        for case in cases {
            let mut ledger = DowntimeLedger::default();
            let charged = ledger.charge_interval(plus(now, case.start), plus(now, case.end), now);
            assert_eq!(charged, Ok(case.charged), "{}", case.name);
            assert_eq!(ledger.used(now), case.charged, "{}", case.name);
        }
    }

    #[test]
    fn an_open_outage_is_charged_once_however_often_it_is_observed() {
        let t0 = ts("2026-06-01T12:00:00Z");
        let mut ledger = DowntimeLedger::default();
        let steps: &[(i64, i64, i64)] = &[
            // (seconds after t0, newly charged, used after)
            (0, 0, 0),
            (30, 30, 30),
            (30, 0, 30),
            (90, 60, 90),
            (90, 0, 90),
        ];
        for (at, charged, used) in steps {
            let now = plus(t0, *at);
            assert_eq!(ledger.observe_down(now), *charged, "at +{at}s");
            assert_eq!(ledger.used(now), *used, "at +{at}s");
        }
        // Not yet charged time still counts for what's left of the budget.
        assert_eq!(ledger.used(plus(t0, 95)), 95);
        let closed = ledger.observe_up(plus(t0, 100));
        assert_eq!(
            closed,
            Some(ClosedOutage {
                started_at: t0,
                ended_at: plus(t0, 100),
                downtime_seconds: 100
            })
        );
        assert_eq!(ledger.used(plus(t0, 200)), 100);
        assert_eq!(ledger.observe_up(plus(t0, 200)), None);
        assert_eq!(ledger.used(plus(t0, 200)), 100);
    }

    #[test]
    fn an_outage_with_a_known_start_is_charged_from_it() {
        let detected = ts("2026-06-01T12:00:00Z");
        let mut ledger = DowntimeLedger::default();
        assert_eq!(ledger.observe_down_since(detected, plus(detected, 40)), 40);
        // A later call with another start keeps the first.
        assert_eq!(
            ledger.observe_down_since(plus(detected, -500), plus(detected, 50)),
            10
        );
        let closed = ledger.observe_up(plus(detected, 60)).expect("was open");
        assert_eq!((closed.started_at, closed.downtime_seconds), (detected, 60));
        // A start in the future counts as now.
        let mut ledger = DowntimeLedger::default();
        assert_eq!(
            ledger.observe_down_since(plus(detected, 3_600), detected),
            0
        );
        assert_eq!(
            ledger.open_outage.as_ref().map(|o| o.started_at),
            Some(detected)
        );
    }

    #[test]
    fn a_restarted_operator_continues_the_outage_without_charging_twice() {
        let t0 = ts("2026-06-01T23:59:00Z");
        let mut status = BudgetStatus::default();
        status.ledger.observe_down(t0);
        status.ledger.observe_down(plus(t0, 45));
        status.refresh(900, plus(t0, 45));
        let stored = serde_json::to_value(&status).expect("serializes");

        // The new process knows only what status said.
        let mut restarted: BudgetStatus = serde_json::from_value(stored).expect("deserializes");
        assert_eq!(restarted, status);
        assert_eq!(restarted.ledger.observe_down(plus(t0, 45)), 0);
        assert_eq!(restarted.ledger.observe_down(plus(t0, 120)), 75);
        let closed = restarted
            .ledger
            .observe_up(plus(t0, 120))
            .expect("was open");
        assert_eq!(closed.downtime_seconds, 120);
        restarted.refresh(900, plus(t0, 120));
        assert_eq!(
            (restarted.used_seconds, restarted.remaining_seconds),
            (120, 780)
        );
        // The outage crossed midnight: one entry per day.
        assert_eq!(
            restarted.ledger.days,
            [
                DayCharge {
                    day: date("2026-06-01"),
                    seconds: 60
                },
                DayCharge {
                    day: date("2026-06-02"),
                    seconds: 60
                },
            ]
        );
    }

    #[test]
    fn clock_skew_between_replicas_never_charges_twice() {
        let real = ts("2026-06-01T12:00:00Z");
        // Replica A's clock is 300s ahead: it opened and charged up to its own "now".
        let mut ledger = DowntimeLedger::default();
        ledger.observe_down(real);
        ledger.observe_down(plus(real, 300));
        assert_eq!(ledger.used(plus(real, 300)), 300);
        // Replica B, with the right clock, takes over 100s later.
        assert_eq!(ledger.observe_down(plus(real, 100)), 0);
        assert_eq!(ledger.used(plus(real, 100)), 300);
        assert_eq!(ledger.observe_down(plus(real, 400)), 100);
        let closed = ledger.observe_up(plus(real, 400)).expect("was open");
        assert_eq!(closed.downtime_seconds, 400);

        // A day written by a clock a day ahead counts today, and is filed under today.
        let now = ts("2026-06-01T12:00:00Z");
        let mut ledger: DowntimeLedger = serde_json::from_str(
            r#"{"days":[{"day":"2026-06-02","seconds":50},{"day":"2026-06-01","seconds":10}]}"#,
        )
        .expect("valid");
        assert_eq!(ledger.used(now), 60);
        ledger.prune(now);
        assert_eq!(
            ledger.days,
            [DayCharge {
                day: date("2026-06-01"),
                seconds: 60
            }]
        );

        // An outage opened by a clock ahead is moved back to now, never left in the future.
        let mut ledger = DowntimeLedger::default();
        ledger.observe_down(plus(now, 600));
        ledger.prune(now);
        assert_eq!(ledger.open_outage.as_ref().map(|o| o.started_at), Some(now));
    }

    #[test]
    fn hand_edited_ledgers_are_repaired() {
        let now = ts("2026-06-10T12:00:00Z");
        let mut ledger: DowntimeLedger = serde_json::from_str(
            r#"{"days":[
                {"day":"2026-06-05","seconds":10},
                {"day":"2026-06-01","seconds":-50},
                {"day":"2026-06-05","seconds":20},
                {"day":"2026-06-03","seconds":999999},
                {"day":"2020-01-01","seconds":30}
            ]}"#,
        )
        .expect("valid");
        assert_eq!(ledger.used(now), DAY + 30);
        ledger.prune(now);
        assert_eq!(
            ledger.days,
            [
                DayCharge {
                    day: date("2026-06-01"),
                    seconds: 0
                },
                DayCharge {
                    day: date("2026-06-03"),
                    seconds: DAY
                },
                DayCharge {
                    day: date("2026-06-05"),
                    seconds: 30
                },
            ]
        );
        // A day cannot hold more than a day of downtime.
        assert_eq!(
            ledger.charge_interval(ts("2026-06-03T10:00:00Z"), ts("2026-06-03T11:00:00Z"), now),
            Ok(0)
        );
        assert_eq!(ledger.charge(now, 2 * DAY), Ok(2 * DAY));
        assert_eq!(ledger.used(now), DAY + 30 + 2 * DAY);
    }

    #[test]
    fn charging_an_interval_skips_what_the_open_outage_already_charged() {
        let t0 = ts("2026-06-01T12:00:00Z");
        let mut ledger = DowntimeLedger::default();
        ledger.observe_down(t0);
        ledger.observe_down(plus(t0, 60));
        // [t0-30, t0+90): only the 30s before and the 30s after the charged part are new.
        assert_eq!(
            ledger.charge_interval(plus(t0, -30), plus(t0, 90), plus(t0, 90)),
            Ok(60)
        );
        assert_eq!(ledger.used(plus(t0, 60)), 120);
    }

    #[test]
    fn exhaustion_boundary() {
        let now = ts("2026-06-01T12:00:00Z");
        struct Case {
            allowed: i64,
            used: i64,
            remaining: i64,
            exhausted: bool,
        }
        let cases = [
            Case {
                allowed: 900,
                used: 0,
                remaining: 900,
                exhausted: false,
            },
            Case {
                allowed: 900,
                used: 899,
                remaining: 1,
                exhausted: false,
            },
            Case {
                allowed: 900,
                used: 900,
                remaining: 0,
                exhausted: true,
            },
            Case {
                allowed: 900,
                used: 1_000,
                remaining: 0,
                exhausted: true,
            },
            Case {
                allowed: 0,
                used: 0,
                remaining: 0,
                exhausted: false,
            },
            Case {
                allowed: 0,
                used: 1,
                remaining: 0,
                exhausted: true,
            },
        ];
        for case in cases {
            let mut ledger = DowntimeLedger::default();
            ledger.charge(now, case.used).expect("positive");
            let label = format!("allowed {} used {}", case.allowed, case.used);
            assert_eq!(ledger.used(now), case.used, "{label}");
            assert_eq!(
                ledger.remaining(case.allowed, now),
                case.remaining,
                "{label}"
            );
            assert_eq!(
                ledger.exhausted(case.allowed, now),
                case.exhausted,
                "{label}"
            );
            let mut status = BudgetStatus {
                ledger,
                ..BudgetStatus::default()
            };
            status.refresh(case.allowed, now);
            assert_eq!(status.exhausted(now), case.exhausted, "{label}");
        }
        // An outage in progress exhausts the budget before it is charged.
        let mut ledger = DowntimeLedger::default();
        ledger.observe_down(plus(now, -900));
        assert!(!ledger.exhausted(900, plus(now, -1)));
        assert!(ledger.exhausted(900, now));
        // And the budget recovers once that downtime leaves the window.
        ledger.observe_up(now);
        assert!(ledger.exhausted(900, plus(now, 364 * DAY)));
        assert!(!ledger.exhausted(900, plus(now, 365 * DAY)));
    }

    #[test]
    fn status_serializes_in_camel_case_with_a_schema() {
        let now = ts("2026-06-01T12:00:30.750Z");
        let mut status = BudgetStatus::default();
        status.ledger.observe_down(plus(now, -30));
        status.ledger.observe_down(now);
        status.refresh(900, now);
        let json = serde_json::to_value(&status).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({
                "allowedSeconds": 900,
                "usedSeconds": 30,
                "remainingSeconds": 870,
                "ledger": {
                    "days": [{"day": "2026-06-01", "seconds": 30}],
                    "openOutage": {
                        "startedAt": "2026-06-01T12:00:00Z",
                        "chargedUntil": "2026-06-01T12:00:30Z",
                        "chargedSeconds": 30
                    }
                }
            })
        );
        // An empty ledger (never down) is a small object, and old status without one loads.
        let empty: BudgetStatus = serde_json::from_str(
            r#"{"allowedSeconds":900,"usedSeconds":0,"remainingSeconds":900}"#,
        )
        .expect("ledger defaults");
        assert_eq!(empty.ledger, DowntimeLedger::default());
        let schema = serde_json::to_value(schemars::schema_for!(BudgetStatus)).expect("schema");
        let text = schema.to_string();
        for field in [
            "allowedSeconds",
            "usedSeconds",
            "remainingSeconds",
            "openOutage",
            "chargedUntil",
        ] {
            assert!(text.contains(field), "{field} missing from {text}");
        }
    }
}
