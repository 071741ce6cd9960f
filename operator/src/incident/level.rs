//! A log line's own severity, read from its structure rather than from its text.
//!
//! Request logs carry client-chosen text: the shortener logs every request's path verbatim,
//! so `GET /ERROR-Exception-Traceback` puts the filter's keywords into as many INFO lines as
//! a client cares to send, and they would crowd the real traceback out of the excerpt. A
//! record's level is written by the logger *before* the message, so it cannot be forged
//! from the message: a line whose leading level is TRACE, DEBUG or INFO is never an error
//! record, whatever its text says. Lines without a recognisable level (traceback frames,
//! panics, plain output) are still matched by keyword.
//!
//! Recognised: tracing's text format (`2026-01-01T00:00:00Z  INFO target: msg`), the
//! common `[date time] LEVEL ...` and `LEVEL:name:msg` forms, logfmt `level=info`, and
//! JSON objects with a `"level"` field (tracing's JSON, most structured loggers).

/// Whether the line is a record at a level below WARN.
pub fn is_quiet(line: &[u8]) -> bool {
    leading_level(line).is_some_and(|l| l == Severity::Quiet)
}

/// Coarse severity: enough to tell an informational record from a warning or an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// TRACE, DEBUG, INFO, NOTICE.
    Quiet,
    /// WARN and above.
    Loud,
}

/// Leading tokens searched for a level: a timestamp takes up to three, a thread or
/// process name one more.
const MAX_TOKENS: usize = 5;
/// Bytes of the line searched: levels sit at the start.
const HEAD_BYTES: usize = 160;

/// The level the line's logger wrote, if the line has one where loggers put it.
pub fn leading_level(line: &[u8]) -> Option<Severity> {
    let head = &line[..line.len().min(HEAD_BYTES)];
    let trimmed = head.trim_ascii_start();
    if trimmed.first() == Some(&b'{') {
        return json_level(trimmed);
    }
    for token in trimmed
        .split(|b| b.is_ascii_whitespace())
        .filter(|t| !t.is_empty())
        .take(MAX_TOKENS)
    {
        if let Some(value) = strip_prefix_ci(token, b"level=") {
            return severity(trim_punct(value), true);
        }
        // `ERROR:root:message` (Python's default format).
        let word = token.split(|&b| b == b':').next().unwrap_or(token);
        if let Some(s) = severity(trim_punct(word), false) {
            return Some(s);
        }
    }
    None
}

/// The value of the first `"level":"..."` in a JSON object. Inside a JSON string every `"`
/// is escaped, so the unescaped sequence cannot come from a message or a path.
fn json_level(object: &[u8]) -> Option<Severity> {
    let key = b"\"level\"";
    let at = object.windows(key.len()).position(|w| w == key)?;
    let rest = object[at + key.len()..].trim_ascii_start();
    let rest = rest.strip_prefix(b":")?.trim_ascii_start();
    let rest = rest.strip_prefix(b"\"")?;
    let end = rest.iter().position(|&b| b == b'"')?;
    severity(&rest[..end], true)
}

fn trim_punct(token: &[u8]) -> &[u8] {
    let is_punct = |b: &u8| matches!(b, b'[' | b']' | b'(' | b')' | b'<' | b'>' | b',' | b'"');
    let start = token
        .iter()
        .position(|b| !is_punct(b))
        .unwrap_or(token.len());
    let end = token
        .iter()
        .rposition(|b| !is_punct(b))
        .map_or(start, |e| e + 1);
    &token[start..end.max(start)]
}

fn strip_prefix_ci<'a>(token: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (token.len() >= prefix.len() && token[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &token[prefix.len()..])
}

/// A level word. Bare words count only in capitals (`INFO`, not the word "info" in a
/// sentence); a `level=` or JSON value in any case.
fn severity(word: &[u8], any_case: bool) -> Option<Severity> {
    if !any_case && word.iter().any(u8::is_ascii_lowercase) {
        return None;
    }
    let upper = word.to_ascii_uppercase();
    match upper.as_slice() {
        b"TRACE" | b"DEBUG" | b"INFO" | b"NOTICE" => Some(Severity::Quiet),
        b"WARN" | b"WARNING" | b"ERROR" | b"ERR" | b"FATAL" | b"PANIC" | b"CRITICAL" | b"CRIT"
        | b"ALERT" | b"EMERG" | b"SEVERE" => Some(Severity::Loud),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_read_where_loggers_write_them() {
        use Severity::*;
        let cases: &[(&str, Option<Severity>)] = &[
            // The sample log's format.
            (
                "[2023-09-22 21:01:01] INFO web.1 GET /health 200",
                Some(Quiet),
            ),
            (
                "[2023-09-22 21:01:02] ERROR web.1 Exception on /shorten [POST]",
                Some(Loud),
            ),
            // Client-chosen paths in an INFO record: still INFO.
            (
                "[2023-09-22 21:01:01] INFO web.1 GET /ERROR-Exception-Traceback 404",
                Some(Quiet),
            ),
            (
                "[2023-09-22 21:01:01] INFO web.1 GET /x ERROR panic 404",
                Some(Quiet),
            ),
            // tracing's text format (the shortener's default).
            (
                "2026-11-30T11:00:00.123456Z  INFO http{method=GET route=/{code}}: shortener::app: GET /ERROR 404 latency_ms=0.1",
                Some(Quiet),
            ),
            (
                "2026-11-30T11:00:00.123456Z ERROR shortener::app: store failed",
                Some(Loud),
            ),
            (
                "2026-11-30T11:00:00.123456Z  WARN shortener: slow",
                Some(Loud),
            ),
            ("2026-11-30T11:00:00.123456Z DEBUG h2: frame", Some(Quiet)),
            // tracing's JSON format.
            (
                r#"{"timestamp":"2026-11-30T11:00:00Z","level":"INFO","message":"GET /ERROR-Traceback 404"}"#,
                Some(Quiet),
            ),
            (
                r#"{"timestamp":"2026-11-30T11:00:00Z","level":"ERROR","message":"boom"}"#,
                Some(Loud),
            ),
            (r#"{"level": "warn", "msg": "x"}"#, Some(Loud)),
            // A forged level inside the message is escaped and does not count.
            (
                r#"{"timestamp":"t","message":"GET /\"level\":\"ERROR\" 404","level":"INFO"}"#,
                Some(Quiet),
            ),
            // logfmt and Python's default.
            (
                "time=2026-11-30T11:00:00Z level=info msg=\"GET /error\"",
                Some(Quiet),
            ),
            ("ts=1 level=ERROR msg=boom", Some(Loud)),
            ("ERROR:root:division by zero", Some(Loud)),
            ("INFO:werkzeug:GET /error 404", Some(Quiet)),
            // No level: matched by keyword as before.
            ("Traceback (most recent call last):", None),
            ("  File \"application.py\", line 31, in shorten", None),
            ("TypeError: the JSON object must be str", None),
            ("thread 'main' panicked at src/main.rs:3:5:", None),
            ("", None),
            // A lowercase word is prose, not a level.
            ("the info desk reported an error", None),
            // Levels far into the line are message text.
            ("a b c d e f ERROR", None),
        ];
        for (line, want) in cases {
            assert_eq!(leading_level(line.as_bytes()), *want, "{line}");
        }
        assert!(is_quiet(b"[t] INFO GET /ERROR"));
        assert!(!is_quiet(b"[t] ERROR boom"));
        assert!(!is_quiet(b"Traceback (most recent call last):"));
    }
}
