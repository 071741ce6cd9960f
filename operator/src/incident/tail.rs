//! Which part of a pod's log incident capture reads: the end, since the failed revision
//! started, within fixed bounds.
//!
//! The failure is at the end of the log, so reading its first megabytes (`limitBytes`
//! alone) loses it for any pod that logged more than that before failing. The API server is
//! asked for the last [`TAIL_LINES`] lines written since the revision started (`tailLines`,
//! `sinceTime`), with [`TRANSFER_LIMIT_BYTES`] as a bound on the transfer, and the reader
//! keeps only the last [`KEEP_BYTES`] of what arrives, so memory stays bounded whatever
//! the lines' length.

use std::pin::pin;

use futures::{AsyncRead, AsyncReadExt};
use jiff::Timestamp;
use kube::api::LogParams;

/// Lines asked for: the end of the log, enough for a long traceback and its lead-up.
pub const TAIL_LINES: i64 = 10_000;
/// Bytes the API server sends at most (bounds the transfer if lines are huge).
pub const TRANSFER_LIMIT_BYTES: i64 = 16 * 1024 * 1024;
/// Bytes kept of what arrives: the last ones.
pub const KEEP_BYTES: usize = 8 * 1024 * 1024;

/// Log request for one container: the end of its log since `since` (the revision's start).
pub fn log_params(previous: bool, since: Option<Timestamp>) -> LogParams {
    LogParams {
        previous,
        since_time: since,
        tail_lines: Some(TAIL_LINES),
        limit_bytes: Some(TRANSFER_LIMIT_BYTES),
        ..LogParams::default()
    }
}

/// The last bytes of a stream, starting at a line boundary.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tail {
    pub bytes: Vec<u8>,
    /// Bytes of the stream dropped from the front.
    pub dropped: u64,
}

/// Keeps the last `keep` bytes pushed into it, in amortised linear time.
#[derive(Debug)]
pub struct TailBuffer {
    keep: usize,
    buf: Vec<u8>,
    dropped: u64,
    /// Whether the kept bytes start right after a newline (or at the stream's start).
    at_line_start: bool,
}

impl TailBuffer {
    pub fn new(keep: usize) -> Self {
        Self {
            keep: keep.max(1),
            buf: Vec::new(),
            dropped: 0,
            at_line_start: true,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        // Compact once twice the budget is held, so each byte is moved O(1) times.
        if self.buf.len() >= 2 * self.keep {
            self.compact();
        }
    }

    fn compact(&mut self) {
        let excess = self.buf.len().saturating_sub(self.keep);
        if excess > 0 {
            self.at_line_start = self.buf[excess - 1] == b'\n';
            self.buf.drain(..excess);
            self.dropped += excess as u64;
        }
    }

    /// The kept bytes; if anything was dropped, from the first whole line on.
    pub fn finish(mut self) -> Tail {
        self.compact();
        if !self.at_line_start {
            // The first kept line is a fragment: it starts after the cut.
            let start = memchr::memchr(b'\n', &self.buf).map_or(self.buf.len(), |i| i + 1);
            self.buf.drain(..start);
            self.dropped += start as u64;
        }
        Tail {
            bytes: self.buf,
            dropped: self.dropped,
        }
    }
}

/// Reads `stream` to its end, keeping the last `keep` bytes.
pub async fn read_tail<R: AsyncRead>(stream: R, keep: usize) -> std::io::Result<Tail> {
    let mut stream = pin!(stream);
    let mut tail = TailBuffer::new(keep);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(tail.finish());
        }
        tail.push(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_asks_for_the_end_since_the_revision_started() {
        let since: Timestamp = "2026-11-30T10:00:00Z".parse().unwrap();
        let p = log_params(true, Some(since));
        assert!(p.previous);
        assert_eq!(p.since_time, Some(since));
        assert_eq!(p.tail_lines, Some(TAIL_LINES));
        assert_eq!(p.limit_bytes, Some(TRANSFER_LIMIT_BYTES));
        assert!(KEEP_BYTES as i64 <= TRANSFER_LIMIT_BYTES);
    }

    #[test]
    fn keeps_the_last_whole_lines() {
        // (input, keep, kept, dropped)
        let cases: &[(&str, usize, &str, u64)] = &[
            ("", 10, "", 0),
            ("a\nb\n", 10, "a\nb\n", 0),
            ("line1\nline2\nline3\n", 12, "line2\nline3\n", 6),
            ("line1\nline2\nline3\n", 6, "line3\n", 12),
            // The cut falls inside a line: that fragment goes.
            ("line1\nline2\nline3\n", 8, "line3\n", 12),
            // Nothing whole fits: nothing is kept rather than a fragment.
            ("0123456789\n", 4, "", 11),
            ("no newline at all", 4, "", 17),
        ];
        for (input, keep, kept, dropped) in cases {
            for chunk in [1, 3, 1000] {
                let mut t = TailBuffer::new(*keep);
                for piece in input.as_bytes().chunks(chunk) {
                    t.push(piece);
                }
                let tail = t.finish();
                assert_eq!(
                    (std::str::from_utf8(&tail.bytes).unwrap(), tail.dropped),
                    (*kept, *dropped),
                    "{input:?} keep {keep} chunk {chunk}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_failure_after_megabytes_of_log_is_kept() {
        // 20 MB of healthy traffic, then the failure: the excerpt must come from the end.
        let mut log = Vec::new();
        let mut n = 0u64;
        while log.len() < 20 * 1024 * 1024 {
            log.extend_from_slice(format!("[t] INFO web.1 GET /abc{n} 302\n").as_bytes());
            n += 1;
        }
        let sample = include_bytes!("testdata/incident-sample.log");
        log.extend_from_slice(sample);
        let tail = read_tail(futures::io::Cursor::new(log.clone()), KEEP_BYTES)
            .await
            .unwrap();
        assert!(tail.bytes.len() <= KEEP_BYTES);
        assert!(tail.bytes.ends_with(sample));
        assert_eq!(tail.dropped as usize + tail.bytes.len(), log.len());
        let excerpt = super::super::filter::filter_bytes(
            &tail.bytes,
            super::super::filter::FilterConfig::default(),
        )
        .render();
        assert!(excerpt.contains("TypeError: the JSON object"), "{excerpt}");
    }
}
