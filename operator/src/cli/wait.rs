//! `status NAME --wait`: when the rollout of the release's current spec has an outcome, and
//! the exit code that tells a CI pipeline which one. Pure; [`super::commands`] watches.

use std::time::Duration;

use crate::api::{Phase, ShortenerReleaseStatus};
use crate::budget;

/// How the rollout of the current spec ended, as `status --wait` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The spec's revision is stable and serving: exit 0.
    Healthy,
    /// It failed; the stable revision serves.
    RolledBack,
    /// It failed and nothing healthy serves in its place.
    Degraded,
    /// The operator does not roll it out (promotion gate, SLA freeze).
    Blocked,
    /// `shortener.dev/paused` holds it.
    Paused,
}

/// Exit code of `status --wait` when the timeout passed without an outcome.
pub const EXIT_TIMEOUT: u8 = 6;

impl Verdict {
    /// The process exit code: 0 only for `Healthy`; 1 stays every other error's.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Healthy => 0,
            Verdict::RolledBack => 2,
            Verdict::Degraded => 3,
            Verdict::Blocked => 4,
            Verdict::Paused => 5,
        }
    }
}

/// The outcome the status reports for `generation`, or `None` while there is none yet: a
/// status of an older generation (the operator has not seen the latest spec, so its phase
/// is the previous rollout's), or a rollout still under way.
pub fn verdict(
    generation: Option<i64>,
    status: Option<&ShortenerReleaseStatus>,
) -> Option<Verdict> {
    let status = status?;
    if generation.is_none() || status.observed_generation != generation {
        return None;
    }
    match status.phase {
        Phase::Pending | Phase::Progressing | Phase::Analyzing => None,
        Phase::Healthy => Some(Verdict::Healthy),
        Phase::RolledBack => Some(Verdict::RolledBack),
        Phase::Degraded => Some(Verdict::Degraded),
        Phase::Blocked => Some(Verdict::Blocked),
        Phase::Paused => Some(Verdict::Paused),
    }
}

/// `--timeout`: `90s`, `5m`, `1h30m` (units d, h, m, s, largest first).
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let secs = budget::parse_allowed_downtime(text).map_err(|e| e.to_string())?;
    u64::try_from(secs)
        .map(Duration::from_secs)
        .map_err(|_| format!("{text:?} is not a duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(phase: Phase, observed: i64) -> ShortenerReleaseStatus {
        ShortenerReleaseStatus {
            phase,
            observed_generation: Some(observed),
            ..Default::default()
        }
    }

    #[test]
    fn each_phase_of_the_current_generation() {
        let table = [
            (Phase::Pending, None),
            (Phase::Progressing, None),
            (Phase::Analyzing, None),
            (Phase::Healthy, Some(Verdict::Healthy)),
            (Phase::RolledBack, Some(Verdict::RolledBack)),
            (Phase::Degraded, Some(Verdict::Degraded)),
            (Phase::Blocked, Some(Verdict::Blocked)),
            (Phase::Paused, Some(Verdict::Paused)),
        ];
        assert_eq!(table.len(), Phase::ALL.len());
        for (phase, expected) in table {
            assert_eq!(
                verdict(Some(3), Some(&status(phase, 3))),
                expected,
                "{phase:?}"
            );
        }
    }

    #[test]
    fn an_older_generation_is_the_previous_rollout_and_not_an_outcome() {
        for phase in Phase::ALL {
            assert_eq!(verdict(Some(4), Some(&status(phase, 3))), None, "{phase:?}");
        }
        assert_eq!(verdict(Some(1), None), None, "not reconciled yet");
        assert_eq!(verdict(None, Some(&status(Phase::Healthy, 1))), None);
        let unobserved = ShortenerReleaseStatus {
            phase: Phase::Healthy,
            ..Default::default()
        };
        assert_eq!(verdict(Some(1), Some(&unobserved)), None);
    }

    #[test]
    fn exit_codes_are_distinct_and_zero_only_when_healthy() {
        let all = [
            Verdict::Healthy,
            Verdict::RolledBack,
            Verdict::Degraded,
            Verdict::Blocked,
            Verdict::Paused,
        ];
        let mut codes: Vec<u8> = all.iter().map(|v| v.exit_code()).collect();
        codes.push(EXIT_TIMEOUT);
        codes.push(1);
        let n = codes.len();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), n, "distinct, and none is 1 (other errors)");
        assert_eq!(Verdict::Healthy.exit_code(), 0);
    }

    #[test]
    fn timeouts_parse_like_durations() {
        assert_eq!(parse_timeout("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_timeout("1h30s"), Ok(Duration::from_secs(3630)));
        assert!(parse_timeout("five").is_err());
        assert!(parse_timeout("").is_err());
    }
}
