//! Fault injection (`SHORTENER_FAULT`), so game days and the operator's tests can produce the
//! failures a bad release produces, from the same binary. Off unless set; a value that is not
//! understood stops the process at start rather than silently running without the fault.

use std::fmt;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The incident of the post-incident report: healthy probes, every create/resolve 500s.
    Shorten500,
    CrashOnStart,
    NeverReady,
    ErrorsAfter(Duration),
    SlowStart(Duration),
    /// Start-up work done, the port is bound only this long after the process started (a
    /// schema migration, a cache warm-up): probes get connection refused until then.
    ListenAfter(Duration),
    Latency(Duration),
}

/// The longest `listen-after` accepted: longer than any startup budget worth testing, short
/// enough that a typo (`15m` for `15s`) is refused instead of hanging a test run.
pub const MAX_LISTEN_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FaultParseError {
    #[error(
        "unknown fault {0:?} (known: shorten-500, crash-on-start, never-ready, errors-after=<duration>, slow-start=<duration>, listen-after=<duration>, latency=<duration>)"
    )]
    Unknown(String),
    #[error("fault {name}={value}: at most {max} allowed")]
    TooLong {
        name: String,
        value: String,
        max: String,
    },
    #[error("fault {name}: invalid duration {value:?}: {reason}")]
    Duration {
        name: String,
        value: String,
        reason: String,
    },
}

/// The faults in force and the instant the process started, which the timed faults count from.
#[derive(Debug, Clone)]
pub struct Faults {
    faults: Vec<Fault>,
    started: Instant,
}

impl Faults {
    /// Parses a comma-separated list, e.g. `slow-start=3s,latency=50ms`. Empty, `none` and
    /// `off` mean no fault.
    pub fn parse(spec: Option<&str>, started: Instant) -> Result<Self, FaultParseError> {
        let mut faults = Vec::new();
        for item in spec.unwrap_or("").split(',').map(str::trim) {
            if item.is_empty() || item == "none" || item == "off" {
                continue;
            }
            faults.push(parse_one(item)?);
        }
        Ok(Self { faults, started })
    }

    pub fn is_empty(&self) -> bool {
        self.faults.is_empty()
    }

    pub fn crash_on_start(&self) -> bool {
        self.faults.contains(&Fault::CrashOnStart)
    }

    /// Why /readyz must say no, if a fault says so.
    pub fn not_ready_reason(&self) -> Option<String> {
        let elapsed = self.started.elapsed();
        self.faults.iter().find_map(|f| match f {
            Fault::NeverReady => Some("fault never-ready is set".to_owned()),
            Fault::SlowStart(d) if elapsed < *d => Some(format!(
                "fault slow-start: warming up for {}",
                humantime::format_duration(*d)
            )),
            _ => None,
        })
    }

    /// Whether creates and resolves must fail now (shorten-500, or errors-after has elapsed).
    pub fn breaks_requests(&self) -> bool {
        let elapsed = self.started.elapsed();
        self.faults.iter().any(|f| match f {
            Fault::Shorten500 => true,
            Fault::ErrorsAfter(d) => elapsed >= *d,
            _ => false,
        })
    }

    /// How long after the process started it may bind its port (`listen-after`).
    pub fn listen_after(&self) -> Option<Duration> {
        self.faults.iter().find_map(|f| match f {
            Fault::ListenAfter(d) => Some(*d),
            _ => None,
        })
    }

    /// What is left of the `listen-after` delay at `now` (zero once it has passed).
    pub fn listen_delay_left(&self, now: Instant) -> Option<Duration> {
        self.listen_after()
            .map(|d| (self.started + d).saturating_duration_since(now))
    }

    /// Added latency for API calls.
    pub fn latency(&self) -> Option<Duration> {
        self.faults.iter().find_map(|f| match f {
            Fault::Latency(d) => Some(*d),
            _ => None,
        })
    }
}

impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.faults.iter().map(ToString::to_string).collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = |d: &Duration| humantime::format_duration(*d).to_string();
        match self {
            Fault::Shorten500 => f.write_str("shorten-500"),
            Fault::CrashOnStart => f.write_str("crash-on-start"),
            Fault::NeverReady => f.write_str("never-ready"),
            Fault::ErrorsAfter(v) => write!(f, "errors-after={}", d(v)),
            Fault::SlowStart(v) => write!(f, "slow-start={}", d(v)),
            Fault::ListenAfter(v) => write!(f, "listen-after={}", d(v)),
            Fault::Latency(v) => write!(f, "latency={}", d(v)),
        }
    }
}

fn parse_one(item: &str) -> Result<Fault, FaultParseError> {
    let (name, value) = match item.split_once('=') {
        Some((n, v)) => (n.trim(), Some(v.trim())),
        None => (item, None),
    };
    let duration = |value: Option<&str>| -> Result<Duration, FaultParseError> {
        let value = value.unwrap_or("");
        humantime::parse_duration(value).map_err(|e| FaultParseError::Duration {
            name: name.to_owned(),
            value: value.to_owned(),
            reason: e.to_string(),
        })
    };
    match (name, value) {
        ("shorten-500", None) => Ok(Fault::Shorten500),
        ("crash-on-start", None) => Ok(Fault::CrashOnStart),
        ("never-ready", None) => Ok(Fault::NeverReady),
        ("errors-after", v) => duration(v).map(Fault::ErrorsAfter),
        ("slow-start", v) => duration(v).map(Fault::SlowStart),
        ("listen-after", v) => {
            let d = duration(v)?;
            if d > MAX_LISTEN_AFTER {
                return Err(FaultParseError::TooLong {
                    name: name.to_owned(),
                    value: v.unwrap_or("").to_owned(),
                    max: humantime::format_duration(MAX_LISTEN_AFTER).to_string(),
                });
            }
            Ok(Fault::ListenAfter(d))
        }
        ("latency", v) => duration(v).map(Fault::Latency),
        _ => Err(FaultParseError::Unknown(item.to_owned())),
    }
}

/// The error text a broken release logs, modelled on the incident in
/// `shared/seeds/incident-sample.log`: a headline naming the request, then a traceback whose
/// indented lines carry no log prefix. The operator's incident capture has to cut exactly this
/// kind of multi-line record out of ordinary request logs.
pub fn traceback(method: &str, route: &str) -> String {
    format!(
        "Exception on {route} [{method}]: failed to load the URL table\n\
         Traceback (most recent call last):\n  \
         File \"shortener/src/store.rs\", line 31, in load_urls\n    \
         urls = json.loads(urls_file)\n  \
         File \"shortener/src/json.rs\", line 346, in loads\n    \
         raise TypeError(f\"the JSON object must be str, bytes or bytearray, not {{type}}\")\n\
         TypeError: the JSON object must be str, bytes or bytearray, not TextIOWrapper"
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Vec<Fault>, FaultParseError> {
        Faults::parse(Some(s), Instant::now()).map(|f| f.faults)
    }

    #[test]
    fn parses_every_documented_fault() {
        let cases = [
            ("shorten-500", Fault::Shorten500),
            ("crash-on-start", Fault::CrashOnStart),
            ("never-ready", Fault::NeverReady),
            (
                "errors-after=2m",
                Fault::ErrorsAfter(Duration::from_secs(120)),
            ),
            ("slow-start=3s", Fault::SlowStart(Duration::from_secs(3))),
            (
                "listen-after=15s",
                Fault::ListenAfter(Duration::from_secs(15)),
            ),
            ("listen-after=10m", Fault::ListenAfter(MAX_LISTEN_AFTER)),
            ("listen-after=0s", Fault::ListenAfter(Duration::ZERO)),
            ("latency=500ms", Fault::Latency(Duration::from_millis(500))),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input), Ok(vec![want]), "{input}");
        }
    }

    #[test]
    fn empty_none_and_off_mean_no_fault() {
        for input in ["", "none", "off", " , "] {
            assert_eq!(parse(input), Ok(vec![]), "{input:?}");
        }
        assert!(Faults::parse(None, Instant::now()).is_ok_and(|f| f.is_empty()));
    }

    #[test]
    fn combines_faults() {
        assert_eq!(
            parse("slow-start=1s, latency=10ms"),
            Ok(vec![
                Fault::SlowStart(Duration::from_secs(1)),
                Fault::Latency(Duration::from_millis(10))
            ])
        );
    }

    #[test]
    fn rejects_unknown_names_and_bad_durations() {
        assert!(matches!(
            parse("shorten-404"),
            Err(FaultParseError::Unknown(_))
        ));
        assert!(matches!(
            parse("shorten-500=1s"),
            Err(FaultParseError::Unknown(_))
        ));
        assert!(matches!(
            parse("latency"),
            Err(FaultParseError::Duration { .. })
        ));
        assert!(matches!(
            parse("latency=fast"),
            Err(FaultParseError::Duration { .. })
        ));
    }

    #[test]
    fn errors_after_and_slow_start_depend_on_elapsed_time() {
        let long_ago = Instant::now().checked_sub(Duration::from_secs(10)).unwrap();
        let f = Faults::parse(Some("errors-after=5s,slow-start=5s"), long_ago).unwrap();
        assert!(f.breaks_requests());
        assert_eq!(f.not_ready_reason(), None);
        let fresh = Faults::parse(Some("errors-after=1h,slow-start=1h"), Instant::now()).unwrap();
        assert!(!fresh.breaks_requests());
        assert!(fresh.not_ready_reason().is_some());
    }

    #[test]
    fn listen_after_is_bounded_and_its_errors_are_clear() {
        let too_long = parse("listen-after=11m").unwrap_err();
        assert_eq!(
            too_long,
            FaultParseError::TooLong {
                name: "listen-after".into(),
                value: "11m".into(),
                max: "10m".into()
            }
        );
        assert_eq!(
            too_long.to_string(),
            "fault listen-after=11m: at most 10m allowed"
        );
        let bad = parse("listen-after=soon").unwrap_err();
        assert!(
            bad.to_string()
                .starts_with("fault listen-after: invalid duration \"soon\""),
            "{bad}"
        );
        for missing in ["listen-after", "listen-after="] {
            assert!(
                matches!(parse(missing), Err(FaultParseError::Duration { .. })),
                "{missing}"
            );
        }
        assert!(
            FaultParseError::Unknown("x".into())
                .to_string()
                .contains("listen-after=<duration>")
        );
    }

    #[test]
    fn listen_delay_counts_from_the_start_and_round_trips() {
        let started = Instant::now();
        let f = Faults::parse(Some("listen-after=15s,latency=1ms"), started).unwrap();
        assert_eq!(f.listen_after(), Some(Duration::from_secs(15)));
        assert_eq!(
            f.listen_delay_left(started + Duration::from_secs(5)),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            f.listen_delay_left(started + Duration::from_secs(20)),
            Some(Duration::ZERO)
        );
        assert_eq!(f.to_string(), "listen-after=15s,latency=1ms");
        assert_eq!(
            f.not_ready_reason(),
            None,
            "it does not listen at all instead"
        );
        let none = Faults::parse(None, started).unwrap();
        assert_eq!(none.listen_after(), None);
        assert_eq!(none.listen_delay_left(started), None);
    }

    #[test]
    fn traceback_is_multi_line_and_names_the_error() {
        let t = traceback("POST", "/api/v1/urls");
        assert!(t.lines().count() >= 5);
        assert!(t.starts_with("Exception on /api/v1/urls [POST]"));
        assert!(t.contains("Traceback (most recent call last):"));
        assert!(t.lines().last().is_some_and(|l| l.starts_with("TypeError")));
    }
}
