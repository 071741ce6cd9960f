//! Cuts a pod log down to the lines whoever is on call needs: the matching lines with a few
//! lines of context, in their original order and with their original line numbers.
//!
//! This is what the post-incident report's `grep -C 3 error | nl | sort -u -k2,2 | sort -n`
//! tried to do. That pipeline numbered grep's output rather than the log, and its `sort -u`
//! compared only the timestamp, so it kept INFO noise and dropped the ERROR line itself.
//! Here windows are merged by line number, and only *consecutive identical* lines are
//! collapsed (with a count), never lines that merely share a field.
//!
//! The filter is a single pass: it holds the last `context_lines` lines in a ring buffer
//! for "before" context, one line being read, and the excerpt so far, which is capped.
//! Each held line is capped too, so memory stays bounded however big the log or its
//! lines are. Input bytes need not be UTF-8; they are decoded lossily when a line is kept.

use std::collections::VecDeque;
use std::io::Read;

use memchr::memmem::Finder;

use super::excerpt::render_item;
pub use super::excerpt::{Excerpt, ExcerptItem, FilterStats, KeptLine, Limit, Truncation};

/// The default pattern. `traceback` is added to the issue's four words because a Python
/// traceback's opening line carries none of them, and a long traceback's frames can be more
/// than `context_lines` away from the final `...Error:` line.
pub const DEFAULT_PATTERN: &str = "error|panic|fatal|exception|traceback";
/// Lines of context kept before and after each matching line.
pub const DEFAULT_CONTEXT_LINES: usize = 3;
/// Upper bound on `context_lines`: the ring buffer holds this many lines at most.
pub const MAX_CONTEXT_LINES: usize = 100;
/// Rendered lines in an excerpt (separators count as lines).
pub const DEFAULT_MAX_LINES: usize = 2_000;
/// Rendered bytes in an excerpt, truncation marker included: a quarter of a ConfigMap's
/// 1 MiB limit, leaving room for several containers' excerpts and metadata.
pub const DEFAULT_MAX_BYTES: usize = 256 * 1024;
/// Bytes of one log line that are kept; the rest is counted and shown as dropped.
pub const DEFAULT_MAX_LINE_BYTES: usize = 4 * 1024;

/// Smallest accepted `max_bytes`, so the truncation marker always fits.
const MIN_MAX_BYTES: usize = 1024;
/// Bytes kept free for the truncation marker.
const MARKER_RESERVE: usize = 256;
/// Smallest accepted `max_line_bytes`.
const MIN_MAX_LINE_BYTES: usize = 64;
/// Read size for [`filter_reader`].
const READ_CHUNK: usize = 64 * 1024;

/// A bad pattern string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("the log filter pattern is empty")]
    Empty,
    #[error(
        "the log filter pattern {pattern:?} has an empty alternative (a leading, trailing or doubled '|')"
    )]
    EmptyAlternative { pattern: String },
}

/// Case-insensitive literal alternatives separated by `|`, such as `error|panic`.
///
/// Not a regular expression: each alternative is a plain substring. Case is folded for
/// ASCII letters only, which covers log levels and exception names.
#[derive(Clone, Debug)]
pub struct Pattern {
    source: String,
    finders: Vec<Finder<'static>>,
    longest: usize,
}

impl Pattern {
    /// Parses `a|b|c`; whitespace around each alternative is ignored.
    pub fn parse(source: &str) -> Result<Self, PatternError> {
        if source.trim().is_empty() {
            return Err(PatternError::Empty);
        }
        let mut finders = Vec::new();
        let mut longest = 0;
        for alternative in source.split('|') {
            let needle = alternative.trim().to_ascii_lowercase();
            if needle.is_empty() {
                return Err(PatternError::EmptyAlternative {
                    pattern: source.to_owned(),
                });
            }
            longest = longest.max(needle.len());
            finders.push(Finder::new(needle.as_bytes()).into_owned());
        }
        Ok(Self {
            source: source.to_owned(),
            finders,
            longest,
        })
    }

    /// The pattern as it was given.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether `text` (any bytes) contains one of the alternatives, ignoring ASCII case.
    pub fn is_match(&self, text: &[u8]) -> bool {
        self.matches_lowercase(&text.to_ascii_lowercase())
    }

    fn matches_lowercase(&self, lower: &[u8]) -> bool {
        self.finders.iter().any(|f| f.find(lower).is_some())
    }
}

impl Default for Pattern {
    fn default() -> Self {
        // The default is a constant known to parse; fall back to a single word rather than
        // panic so this can never take the operator down.
        Self::parse(DEFAULT_PATTERN).unwrap_or_else(|_| Self {
            source: "error".to_owned(),
            finders: vec![Finder::new(b"error").into_owned()],
            longest: 5,
        })
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// What to keep and how much.
#[derive(Clone, Debug, PartialEq)]
pub struct FilterConfig {
    pub pattern: Pattern,
    /// Lines kept before and after each matching line; clamped to [`MAX_CONTEXT_LINES`].
    pub context_lines: usize,
    /// Rendered lines at most, gap separators included; the truncation marker is extra.
    pub max_lines: usize,
    /// Rendered bytes at most, truncation marker included; raised to 1 KiB if smaller.
    pub max_bytes: usize,
    /// Bytes of one log line kept before the rest is dropped; raised to 64 if smaller.
    pub max_line_bytes: usize,
    /// Lines whose logger-written level is TRACE, DEBUG or INFO never match, whatever
    /// their text ([`super::level`]): request paths a client chose cannot pose as errors.
    pub ignore_quiet_levels: bool,
}

impl Default for FilterConfig {
    fn default() -> Self {
        Self {
            pattern: Pattern::default(),
            context_lines: DEFAULT_CONTEXT_LINES,
            max_lines: DEFAULT_MAX_LINES,
            max_bytes: DEFAULT_MAX_BYTES,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            ignore_quiet_levels: true,
        }
    }
}

/// A log line as read: its first `max_line_bytes` bytes, and a fingerprint of the rest so
/// that two long lines differing only past the cap are not taken for repeats.
#[derive(Debug, Default)]
struct RawLine {
    number: u64,
    kept: Vec<u8>,
    overflow_len: u64,
    overflow_hash: u64,
    matched: bool,
}

impl RawLine {
    fn same_text(&self, other: &RawLine) -> bool {
        self.kept == other.kept
            && self.overflow_len == other.overflow_len
            && self.overflow_hash == other.overflow_hash
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A run of identical lines waiting to be committed to the excerpt.
#[derive(Debug)]
struct Run {
    first: RawLine,
    last_number: u64,
    repeats: u64,
}

/// The streaming filter: [`push`](LogFilter::push) bytes in any chunking, then
/// [`finish`](LogFilter::finish). Results do not depend on how the input is chunked.
///
/// Reading a pod log stream with it, e.g. from `kube`'s `log_stream`:
/// ```ignore
/// let mut filter = LogFilter::new(config);
/// loop {
///     let chunk = reader.fill_buf().await?;
///     if chunk.is_empty() { break; }
///     filter.push(chunk);
///     let n = chunk.len();
///     reader.consume(n);
/// }
/// let excerpt = filter.finish();
/// ```
#[derive(Debug)]
pub struct LogFilter {
    pattern: Pattern,
    ignore_quiet_levels: bool,
    context: usize,
    max_lines: usize,
    byte_budget: usize,
    max_bytes: usize,
    max_line_bytes: usize,

    line: RawLine,
    line_open: bool,
    last_byte: u8,
    /// Lower-cased tail of the current line, so a match split across chunks is found.
    carry: Vec<u8>,
    scratch: Vec<u8>,
    before: VecDeque<RawLine>,
    spare: Vec<Vec<u8>>,
    after_left: usize,
    last_emitted: Option<u64>,
    pending: Option<Run>,

    items: Vec<ExcerptItem>,
    out_lines: usize,
    out_bytes: usize,
    render_buf: String,
    truncation: Option<Truncation>,
    stats: FilterStats,
}

impl LogFilter {
    pub fn new(config: FilterConfig) -> Self {
        let max_bytes = config.max_bytes.max(MIN_MAX_BYTES);
        let context = config.context_lines.min(MAX_CONTEXT_LINES);
        Self {
            max_line_bytes: config.max_line_bytes.max(MIN_MAX_LINE_BYTES),
            max_lines: config.max_lines,
            byte_budget: max_bytes - MARKER_RESERVE,
            max_bytes,
            context,
            pattern: config.pattern,
            ignore_quiet_levels: config.ignore_quiet_levels,
            line: RawLine {
                number: 1,
                overflow_hash: FNV_OFFSET,
                ..RawLine::default()
            },
            line_open: false,
            last_byte: 0,
            carry: Vec::new(),
            scratch: Vec::new(),
            before: VecDeque::with_capacity(context),
            spare: Vec::new(),
            after_left: 0,
            last_emitted: None,
            pending: None,
            items: Vec::new(),
            out_lines: 0,
            out_bytes: 0,
            render_buf: String::new(),
            truncation: None,
            stats: FilterStats::default(),
        }
    }

    /// Feeds the next bytes of the log.
    pub fn push(&mut self, mut bytes: &[u8]) {
        self.stats.bytes_read += bytes.len() as u64;
        while !bytes.is_empty() {
            match memchr::memchr(b'\n', bytes) {
                Some(end) => {
                    self.append(&bytes[..end]);
                    self.end_line();
                    bytes = &bytes[end + 1..];
                }
                None => {
                    self.append(bytes);
                    break;
                }
            }
        }
    }

    /// Ends the input (a last line without a newline counts) and returns the excerpt.
    pub fn finish(mut self) -> Excerpt {
        if self.line_open {
            self.end_line();
        }
        self.commit_pending();
        Excerpt {
            items: self.items,
            truncation: self.truncation,
            stats: self.stats,
        }
    }

    /// Bytes of heap the filter holds now, excerpt included. Stays within
    /// `(context_lines + 3) * max_line_bytes + O(max_bytes)` whatever the input size.
    pub fn held_bytes(&self) -> usize {
        let line = |l: &RawLine| l.kept.capacity();
        let items: usize = self
            .items
            .iter()
            .map(|item| match item {
                ExcerptItem::Line(l) => l.text.capacity() + size_of::<ExcerptItem>(),
                ExcerptItem::Gap { .. } => size_of::<ExcerptItem>(),
            })
            .sum::<usize>()
            + (self.items.capacity() - self.items.len()) * size_of::<ExcerptItem>();
        line(&self.line)
            + self.before.iter().map(line).sum::<usize>()
            + self.before.capacity() * size_of::<RawLine>()
            + self.spare.iter().map(Vec::capacity).sum::<usize>()
            + self.pending.as_ref().map_or(0, |run| line(&run.first))
            + self.carry.capacity()
            + self.scratch.capacity()
            + self.render_buf.capacity()
            + items
    }

    fn append(&mut self, segment: &[u8]) {
        if segment.is_empty() {
            return;
        }
        self.line_open = true;
        self.last_byte = segment[segment.len() - 1];
        // Bounded pieces, so the scratch buffer stays small even for a huge line in one push.
        for piece in segment.chunks(READ_CHUNK) {
            if self.line.matched {
                break;
            }
            self.scratch.clear();
            self.scratch.extend_from_slice(&self.carry);
            self.scratch
                .extend(piece.iter().map(u8::to_ascii_lowercase));
            self.line.matched = self.pattern.matches_lowercase(&self.scratch);
            let keep = self.pattern.longest.saturating_sub(1);
            let start = self.scratch.len().saturating_sub(keep);
            self.carry.clear();
            self.carry.extend_from_slice(&self.scratch[start..]);
        }
        if self.truncation.is_some() {
            // Only counting from here on: nothing else will be shown.
            return;
        }
        let room = self.max_line_bytes.saturating_sub(self.line.kept.len());
        let (kept, overflow) = segment.split_at(room.min(segment.len()));
        self.line.kept.extend_from_slice(kept);
        if !overflow.is_empty() {
            self.line.overflow_len += overflow.len() as u64;
            for &b in overflow {
                self.line.overflow_hash =
                    (self.line.overflow_hash ^ u64::from(b)).wrapping_mul(FNV_PRIME);
            }
        }
    }

    fn end_line(&mut self) {
        self.stats.lines_read += 1;
        let number = self.stats.lines_read;
        let mut line = std::mem::replace(
            &mut self.line,
            RawLine {
                number: number + 1,
                kept: self.spare.pop().unwrap_or_default(),
                overflow_hash: FNV_OFFSET,
                ..RawLine::default()
            },
        );
        if self.line_open && self.last_byte == b'\r' {
            // CRLF: the '\r' is the last byte read, kept or counted as overflow.
            if line.overflow_len > 0 {
                line.overflow_len -= 1;
            } else {
                line.kept.pop();
            }
        }
        self.line_open = false;
        self.carry.clear();
        line.number = number;
        if line.matched && self.ignore_quiet_levels && super::level::is_quiet(&line.kept) {
            line.matched = false;
        }
        if line.matched {
            self.stats.matching_lines += 1;
        }
        if self.truncation.is_some() {
            self.recycle(line);
            return;
        }

        if line.matched {
            let first = self.before.front().map_or(number, |l| l.number);
            if let Some(last) = self.last_emitted
                && first > last + 1
            {
                self.commit_pending();
                self.commit(ExcerptItem::Gap {
                    skipped: first - last - 1,
                });
            }
            while let Some(before) = self.before.pop_front() {
                self.emit(before);
            }
            self.emit(line);
            self.after_left = self.context;
        } else if self.after_left > 0 {
            self.after_left -= 1;
            self.emit(line);
        } else if self.context > 0 {
            if self.before.len() == self.context
                && let Some(oldest) = self.before.pop_front()
            {
                self.recycle(oldest);
            }
            self.before.push_back(line);
        } else {
            self.recycle(line);
        }
    }

    fn recycle(&mut self, mut line: RawLine) {
        // Enough spares for the ring and the line being read; more would only hold memory.
        if self.spare.len() <= self.context + 1 {
            line.kept.clear();
            self.spare.push(line.kept);
        }
    }

    fn emit(&mut self, line: RawLine) {
        self.last_emitted = Some(line.number);
        if self.truncation.is_some() {
            return;
        }
        if let Some(run) = &mut self.pending
            && run.last_number + 1 == line.number
            && run.first.same_text(&line)
        {
            run.repeats += 1;
            run.last_number = line.number;
            self.recycle(line);
            return;
        }
        self.commit_pending();
        self.pending = Some(Run {
            last_number: line.number,
            first: line,
            repeats: 1,
        });
    }

    fn commit_pending(&mut self) {
        let Some(run) = self.pending.take() else {
            return;
        };
        let matched = run.first.matched;
        let repeats = run.repeats;
        let item = ExcerptItem::Line(decode(run.first, repeats));
        if self.commit(item) && matched {
            self.stats.matching_lines_shown += repeats;
        }
    }

    /// Adds an item if it fits; otherwise marks the excerpt truncated. Returns whether added.
    fn commit(&mut self, item: ExcerptItem) -> bool {
        if self.truncation.is_some() {
            return false;
        }
        self.render_buf.clear();
        render_item(&item, &mut self.render_buf);
        let limit = if self.out_lines + 1 > self.max_lines {
            Some(Limit::Lines(self.max_lines))
        } else if self.out_bytes + self.render_buf.len() > self.byte_budget {
            Some(Limit::Bytes(self.max_bytes))
        } else {
            None
        };
        if let Some(limit) = limit {
            let at_line = match &item {
                ExcerptItem::Line(line) => line.number,
                // The gap is committed before the window after it: that window is cut.
                ExcerptItem::Gap { skipped } => self.last_emitted.unwrap_or(0) + skipped + 1,
            };
            self.truncation = Some(Truncation { limit, at_line });
            self.pending = None;
            self.before.clear();
            self.spare.clear();
            self.render_buf = String::new();
            return false;
        }
        self.out_lines += 1;
        self.out_bytes += self.render_buf.len();
        self.items.push(item);
        true
    }
}

/// Decodes a kept line lossily; a multi-byte character cut by the line cap is dropped
/// whole rather than shown as a replacement character.
fn decode(line: RawLine, repeats: u64) -> KeptLine {
    let mut kept: &[u8] = &line.kept;
    let mut dropped = line.overflow_len;
    if dropped > 0 {
        let cut = incomplete_utf8_suffix(kept);
        kept = &kept[..kept.len() - cut];
        dropped += cut as u64;
    }
    KeptLine {
        number: line.number,
        repeats,
        matched: line.matched,
        text: String::from_utf8_lossy(kept).into_owned(),
        dropped_bytes: dropped,
    }
}

/// Length of a UTF-8 sequence started but not finished at the end of `bytes`.
fn incomplete_utf8_suffix(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(3) {
        let b = bytes[bytes.len() - back];
        if b & 0b1100_0000 == 0b1000_0000 {
            continue; // continuation byte: keep looking for the lead byte
        }
        let needed = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return 0,
        };
        return if needed > back { back } else { 0 };
    }
    0
}

/// Filters a whole log held in memory.
pub fn filter_bytes(input: &[u8], config: FilterConfig) -> Excerpt {
    let mut filter = LogFilter::new(config);
    filter.push(input);
    filter.finish()
}

/// Filters a log read from `reader` in fixed-size chunks.
pub fn filter_reader<R: Read>(mut reader: R, config: FilterConfig) -> std::io::Result<Excerpt> {
    let mut filter = LogFilter::new(config);
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => filter.push(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filter.finish())
}

/// Filters a log from an async reader, such as the one `kube`'s `Api::<Pod>::log_stream`
/// returns, without holding the log in memory.
pub async fn filter_async_read<R>(mut reader: R, config: FilterConfig) -> std::io::Result<Excerpt>
where
    R: futures::io::AsyncRead + Unpin,
{
    use futures::io::AsyncReadExt as _;
    let mut filter = LogFilter::new(config);
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => filter.push(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filter.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(context_lines: usize) -> FilterConfig {
        FilterConfig {
            context_lines,
            ..FilterConfig::default()
        }
    }

    /// Runs the filter with several chunkings and checks they agree, since the operator
    /// feeds it whatever chunks the log stream yields.
    fn run(input: &[u8], config: &FilterConfig) -> Excerpt {
        let whole = filter_bytes(input, config.clone());
        for chunk in [1, 2, 7, 64] {
            let mut filter = LogFilter::new(config.clone());
            for piece in input.chunks(chunk) {
                filter.push(piece);
            }
            assert_eq!(
                filter.finish(),
                whole,
                "chunk size {chunk} changed the result"
            );
        }
        whole
    }

    /// Compact view: `n` for a line, `n*r` for a run of r repeats, `-k` for a gap of k lines.
    fn shape(excerpt: &Excerpt) -> Vec<String> {
        excerpt
            .items
            .iter()
            .map(|item| match item {
                ExcerptItem::Gap { skipped } => format!("-{skipped}"),
                ExcerptItem::Line(l) if l.repeats > 1 => format!("{}*{}", l.number, l.repeats),
                ExcerptItem::Line(l) => l.number.to_string(),
            })
            .collect()
    }

    /// A log of `total` numbered INFO lines with ERROR at the given 1-based line numbers.
    fn log(total: u64, errors: &[u64]) -> String {
        (1..=total)
            .map(|n| {
                if errors.contains(&n) {
                    format!("line {n} ERROR boom\n")
                } else {
                    format!("line {n} INFO ok\n")
                }
            })
            .collect()
    }

    #[test]
    fn windows_are_merged_in_original_order() {
        struct Case {
            name: &'static str,
            total: u64,
            errors: &'static [u64],
            context: usize,
            want: &'static [&'static str],
        }
        let cases = [
            Case {
                name: "no match",
                total: 20,
                errors: &[],
                context: 3,
                want: &[],
            },
            Case {
                name: "one match mid-file",
                total: 20,
                errors: &[10],
                context: 3,
                want: &["7", "8", "9", "10", "11", "12", "13"],
            },
            Case {
                name: "context clipped at file start",
                total: 20,
                errors: &[1],
                context: 3,
                want: &["1", "2", "3", "4"],
            },
            Case {
                name: "context clipped at file end",
                total: 20,
                errors: &[20],
                context: 3,
                want: &["17", "18", "19", "20"],
            },
            Case {
                name: "overlapping windows merge",
                total: 20,
                errors: &[5, 8],
                context: 3,
                want: &["2", "3", "4", "5", "6", "7", "8", "9", "10", "11"],
            },
            Case {
                name: "adjacent windows merge without a separator",
                total: 20,
                errors: &[5, 12],
                context: 3,
                want: &[
                    "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15",
                ],
            },
            Case {
                name: "one skipped line gives a separator",
                total: 20,
                errors: &[5, 13],
                context: 3,
                want: &[
                    "2", "3", "4", "5", "6", "7", "8", "-1", "10", "11", "12", "13", "14", "15",
                    "16",
                ],
            },
            Case {
                name: "far apart windows",
                total: 100,
                errors: &[2, 90],
                context: 1,
                want: &["1", "2", "3", "-85", "89", "90", "91"],
            },
            Case {
                name: "zero context keeps only matches",
                total: 10,
                errors: &[3, 4, 8],
                context: 0,
                want: &["3", "4", "-3", "8"],
            },
            Case {
                name: "every line matches",
                total: 5,
                errors: &[1, 2, 3, 4, 5],
                context: 3,
                want: &["1", "2", "3", "4", "5"],
            },
            Case {
                name: "context larger than the file",
                total: 3,
                errors: &[2],
                context: 50,
                want: &["1", "2", "3"],
            },
        ];
        for case in cases {
            let excerpt = run(
                log(case.total, case.errors).as_bytes(),
                &config(case.context),
            );
            assert_eq!(shape(&excerpt), case.want, "{}", case.name);
            assert_eq!(excerpt.stats.lines_read, case.total, "{}", case.name);
            assert_eq!(
                excerpt.stats.matching_lines,
                case.errors.len() as u64,
                "{}",
                case.name
            );
            assert!(excerpt.truncation.is_none(), "{}", case.name);
            for line in excerpt.lines() {
                assert_eq!(
                    line.matched,
                    case.errors.contains(&line.number),
                    "{}: line {}",
                    case.name,
                    line.number
                );
                assert!(
                    line.text.starts_with(&format!("line {} ", line.number)),
                    "{}: line {} has text {:?}",
                    case.name,
                    line.number,
                    line.text
                );
            }
        }
    }

    #[test]
    fn identical_consecutive_lines_collapse_into_one_with_a_count() {
        struct Case {
            name: &'static str,
            input: String,
            context: usize,
            want: &'static [&'static str],
        }
        let cases = [
            Case {
                name: "17 identical errors",
                input: "start\n".to_owned() + &"ERROR db down\n".repeat(17) + "end\n",
                context: 1,
                want: &["1", "2*17", "19"],
            },
            Case {
                name: "identical context lines collapse too",
                input: "tick\n".repeat(10) + "panic: boom\n" + &"tick\n".repeat(10),
                context: 3,
                want: &["8*3", "11", "12*3"],
            },
            Case {
                name: "identical lines across a gap stay apart",
                input: "ERROR x\n".to_owned() + &"ok\n".repeat(5) + "ERROR x\n",
                context: 0,
                want: &["1", "-5", "7"],
            },
            Case {
                name: "alternating lines are not repeats",
                input: "ERROR a\nERROR b\nERROR a\nERROR b\n".to_owned(),
                context: 0,
                want: &["1", "2", "3", "4"],
            },
        ];
        for case in cases {
            let excerpt = run(case.input.as_bytes(), &config(case.context));
            assert_eq!(shape(&excerpt), case.want, "{}", case.name);
        }
        let excerpt = run(
            ("ERROR db down\n".repeat(17)).as_bytes(),
            &FilterConfig::default(),
        );
        assert_eq!(
            excerpt.render(),
            "     1: ERROR db down (repeated 17 times)\n"
        );
        assert_eq!(excerpt.stats.matching_lines_shown, 17);
    }

    #[test]
    fn pattern_is_case_insensitive_and_configurable() {
        let cases: &[(&str, &str, bool)] = &[
            (
                "error|panic|fatal|exception",
                "thread 'main' PANICKED at x",
                true,
            ),
            ("error|panic|fatal|exception", "Fatal: out of memory", true),
            (
                "error|panic|fatal|exception",
                "java.lang.NullPointerException",
                true,
            ),
            ("error|panic|fatal|exception", "INFO request served", false),
            (DEFAULT_PATTERN, "Traceback (most recent call last):", true),
            ("timeout | refused", "connection REFUSED", true),
            ("timeout|refused", "error", false),
        ];
        for (pattern, line, want) in cases {
            let pattern = Pattern::parse(pattern).expect("valid pattern");
            assert_eq!(
                pattern.is_match(line.as_bytes()),
                *want,
                "{pattern:?} on {line:?}"
            );
            let excerpt = run(
                format!("{line}\n").as_bytes(),
                &FilterConfig {
                    pattern,
                    ..FilterConfig::default()
                },
            );
            assert_eq!(!excerpt.is_empty(), *want, "{line:?}");
        }
    }

    #[test]
    fn bad_patterns_are_rejected_with_a_clear_error() {
        let cases: &[(&str, PatternError)] = &[
            ("", PatternError::Empty),
            ("   ", PatternError::Empty),
            (
                "error||panic",
                PatternError::EmptyAlternative {
                    pattern: "error||panic".into(),
                },
            ),
            (
                "error|",
                PatternError::EmptyAlternative {
                    pattern: "error|".into(),
                },
            ),
            (
                "|error",
                PatternError::EmptyAlternative {
                    pattern: "|error".into(),
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                Pattern::parse(input).err().as_ref(),
                Some(want),
                "{input:?}"
            );
        }
    }

    #[test]
    fn a_match_split_across_pushes_is_found() {
        // `run` already pushes byte by byte; this pins the carry-over explicitly.
        let mut filter = LogFilter::new(FilterConfig::default());
        filter.push(b"all good\nsomething went wr");
        filter.push(b"ong: ERR");
        filter.push(b"OR here\nok\n");
        let excerpt = filter.finish();
        let matched: Vec<u64> = excerpt
            .lines()
            .filter(|l| l.matched)
            .map(|l| l.number)
            .collect();
        assert_eq!(matched, [2]);
    }

    #[test]
    fn line_endings_and_a_missing_final_newline() {
        let lf = run(b"a\nb ERROR\nc", &config(1));
        let crlf = run(b"a\r\nb ERROR\r\nc", &config(1));
        assert_eq!(lf.items, crlf.items);
        assert_eq!(
            lf.lines().map(|l| l.text.as_str()).collect::<Vec<_>>(),
            ["a", "b ERROR", "c"]
        );
        // A bare '\r' inside a line is content, not a line ending.
        let cr = run(b"progress 10%\rprogress 20% error\n", &config(0));
        assert_eq!(cr.stats.lines_read, 1);
        // Empty lines are lines: numbering must match `nl -ba` / an editor.
        let blank = run(b"\n\nerror\n\n", &config(1));
        assert_eq!(shape(&blank), ["2", "3", "4"]);
        assert_eq!(blank.stats.lines_read, 4);
        assert!(run(b"", &config(3)).is_empty());
    }

    #[test]
    fn invalid_utf8_is_decoded_lossily_and_still_matched() {
        let input = b"ok \xff\xfe\n\xc3\x28 ERROR bad bytes \xe2\x82\n\xf0\x9f\x92\xa5 fatal\n";
        let excerpt = run(input, &config(1));
        let texts: Vec<&str> = excerpt.lines().map(|l| l.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "ok \u{fffd}\u{fffd}",
                "\u{fffd}( ERROR bad bytes \u{fffd}",
                "\u{1f4a5} fatal"
            ]
        );
        assert_eq!(excerpt.stats.matching_lines, 2);
    }

    #[test]
    fn a_very_long_line_is_cut_but_matched_anywhere() {
        let cfg = FilterConfig {
            max_line_bytes: 100,
            context_lines: 0,
            ..FilterConfig::default()
        };
        // The keyword sits 1 MB into the line, far past the cap.
        let mut input = "x".repeat(1_000_000).into_bytes();
        input.extend_from_slice(b" FATAL\nnext\n");
        let excerpt = filter_bytes(&input, cfg.clone());
        let lines: Vec<&KeptLine> = excerpt.lines().collect();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].text.len(), 100);
        assert_eq!(lines[0].dropped_bytes, 1_000_006 - 100);
        assert!(excerpt.render().contains("[... 999906 more bytes]"));

        // A cut inside a multi-byte character drops the whole character.
        let mut input = "y".repeat(99).into_bytes();
        input.extend_from_slice("é error\n".as_bytes());
        let excerpt = run(&input, &cfg);
        let line = excerpt.lines().next().expect("one line");
        assert_eq!(line.text, "y".repeat(99));
        assert_eq!(line.dropped_bytes, 8);

        // Two long lines that differ only past the cap are not repeats.
        let a = format!("{} error a\n", "z".repeat(200));
        let b = format!("{} error b\n", "z".repeat(200));
        let excerpt = run(format!("{a}{b}{b}").as_bytes(), &cfg);
        assert_eq!(shape(&excerpt), ["1", "2*2"]);
    }

    #[test]
    fn output_is_capped_by_lines_and_bytes_with_a_marker() {
        let input = log(10_000, &(1..=10_000).step_by(10).collect::<Vec<_>>());
        let by_lines = run(
            input.as_bytes(),
            &FilterConfig {
                max_lines: 20,
                ..config(1)
            },
        );
        assert_eq!(by_lines.items.len(), 20);
        let truncation = by_lines.truncation.clone().expect("truncated");
        assert_eq!(truncation.limit, Limit::Lines(20));
        assert_eq!(by_lines.stats.matching_lines, 1_000);
        assert_eq!(by_lines.stats.lines_read, 10_000);
        let rendered = by_lines.render();
        assert!(
            rendered.ends_with(&format!(
                "[truncated: excerpt limit of 20 lines reached at log line {}; {} of 1000 matching lines shown]\n",
                truncation.at_line, by_lines.stats.matching_lines_shown
            )),
            "{rendered}"
        );

        let by_bytes = run(
            input.as_bytes(),
            &FilterConfig {
                max_bytes: 4_096,
                ..config(1)
            },
        );
        let rendered = by_bytes.render();
        assert!(rendered.len() <= 4_096, "{} bytes", rendered.len());
        assert!(
            rendered.len() > 3_000,
            "cap should be used, got {}",
            rendered.len()
        );
        assert_eq!(
            by_bytes.truncation.as_ref().map(|t| t.limit),
            Some(Limit::Bytes(4_096))
        );
        assert!(rendered.contains("[truncated: excerpt limit of 4096 bytes"));
        // Cut at a gap: the marker names the first line of the window that is left out.
        let at_gap = run(
            log(12, &[3, 11]).as_bytes(),
            &FilterConfig {
                max_lines: 3,
                ..config(1)
            },
        );
        assert_eq!(shape(&at_gap), ["2", "3", "4"]);
        assert_eq!(at_gap.truncation.map(|t| t.at_line), Some(10));
        assert_eq!(at_gap.stats.matching_lines_shown, 1);
        assert_eq!(at_gap.stats.matching_lines, 2);

        // What is shown is the start of the untruncated excerpt, unchanged.
        let full = run(input.as_bytes(), &config(1));
        assert!(full.items.starts_with(&by_bytes.items));
    }

    #[test]
    fn render_format() {
        let excerpt = run(log(12, &[3, 11]).as_bytes(), &config(1));
        assert_eq!(
            excerpt.render(),
            "     2- line 2 INFO ok\n     3: line 3 ERROR boom\n     4- line 4 INFO ok\n   --- 5 lines skipped ---\n    10- line 10 INFO ok\n    11: line 11 ERROR boom\n    12- line 12 INFO ok\n"
        );
    }

    const SAMPLE: &[u8] = include_bytes!("testdata/incident-sample.log");

    /// A client floods the log with request lines whose paths carry every keyword; the
    /// excerpt, capped at a few lines, still shows the real error records.
    #[test]
    fn injected_paths_cannot_crowd_out_the_errors() {
        let mut input = String::new();
        for i in 0..5_000 {
            input.push_str(&format!(
                "[2023-09-22 20:59:{:02}] INFO web.1 GET /ERROR-Exception-Traceback-panic-fatal/{i} 404\n",
                i % 60
            ));
        }
        let sample = std::str::from_utf8(SAMPLE).expect("sample is UTF-8");
        input.push_str(sample);
        let cfg = FilterConfig {
            max_lines: 30,
            ..config(1)
        };
        let excerpt = run(input.as_bytes(), &cfg);
        let rendered = excerpt.render();
        assert!(excerpt.truncation.is_none(), "{rendered}");
        for wanted in [
            "ERROR web.1 Exception on /shorten [POST]",
            "Traceback (most recent call last):",
            "TypeError: the JSON object must be str",
        ] {
            assert!(
                rendered.contains(wanted),
                "missing {wanted:?} in\n{rendered}"
            );
        }
        // Only the line just before the sample shows, as context, not as a match.
        let injected: Vec<&KeptLine> = excerpt
            .lines()
            .filter(|l| l.text.contains("/ERROR-Exception"))
            .collect();
        assert!(injected.iter().all(|l| !l.matched), "{rendered}");
        assert!(injected.len() <= 1, "{rendered}");

        // Without the level check (the old behaviour) the flood fills the excerpt.
        let naive = run(
            input.as_bytes(),
            &FilterConfig {
                ignore_quiet_levels: false,
                ..cfg
            },
        );
        assert!(naive.truncation.is_some());
        assert!(!naive.render().contains("TypeError"));
    }

    /// The post-incident report's log: the pipeline it used dropped the ERROR lines.
    #[test]
    fn incident_sample_keeps_the_errors_and_tracebacks() {
        // Unrelated traffic far from the failure, before and after it.
        let mut input = String::new();
        for i in 0..50 {
            input.push_str(&format!(
                "[2023-09-22 20:{:02}:00] INFO web.1 GET /abc{i} 302\n",
                i
            ));
        }
        let sample = std::str::from_utf8(SAMPLE).expect("sample is UTF-8");
        input.push_str(sample);
        for i in 0..50 {
            input.push_str(&format!(
                "[2023-09-22 21:{:02}:30] INFO web.1 GET /xyz{i} 302\n",
                i + 2
            ));
        }
        let excerpt = run(input.as_bytes(), &FilterConfig::default());
        let rendered = excerpt.render();
        for wanted in [
            "ERROR web.1 Exception on /shorten [POST]",
            "Traceback (most recent call last):",
            "urls = json.loads(urls_file)",
            "TypeError: the JSON object must be str, bytes or bytearray, not TextIOWrapper",
        ] {
            assert!(
                rendered.contains(wanted),
                "missing {wanted:?} in\n{rendered}"
            );
        }
        // Both failing requests, with their original line numbers (sample lines 3 and 10).
        let errors: Vec<u64> = excerpt
            .lines()
            .filter(|l| l.text.contains("ERROR web.1"))
            .map(|l| l.number)
            .collect();
        assert_eq!(errors, [53, 60]);
        assert!(!rendered.contains("GET /abc0 302"), "{rendered}");
        assert!(!rendered.contains("GET /xyz49 302"), "{rendered}");
        // Three lines of context either side of the first and last matches.
        assert_eq!(excerpt.lines().next().map(|l| l.number), Some(50));
        assert_eq!(excerpt.lines().last().map(|l| l.number), Some(67));

        // On the sample alone with one line of context, the first line (an unrelated
        // health check) goes; every error and traceback line stays.
        let alone = run(SAMPLE, &config(1));
        assert_eq!(alone.lines().next().map(|l| l.number), Some(2));
        let kept: Vec<u64> = alone.lines().map(|l| l.number).collect();
        assert_eq!(kept, (2..=15).collect::<Vec<_>>());
    }

    #[test]
    fn readers_give_the_same_excerpt_as_bytes() {
        let input = log(500, &[3, 250, 499]);
        let want = filter_bytes(input.as_bytes(), FilterConfig::default());
        let from_reader = filter_reader(input.as_bytes(), FilterConfig::default()).expect("read");
        assert_eq!(from_reader, want);
        let from_async = futures::executor::block_on(filter_async_read(
            futures::io::Cursor::new(input.as_bytes()),
            FilterConfig::default(),
        ))
        .expect("read");
        assert_eq!(from_async, want);
        // A failing reader is reported, not turned into an empty excerpt.
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("connection reset"))
            }
        }
        assert!(filter_reader(Broken, FilterConfig::default()).is_err());
    }

    /// Generates `total` bytes of log lines, chunk by chunk, without holding them.
    fn generated_log(total: usize, mut push: impl FnMut(&[u8])) {
        let mut chunk = Vec::with_capacity(READ_CHUNK);
        let mut written = 0;
        let mut n = 0u64;
        while written < total {
            chunk.clear();
            while chunk.len() < READ_CHUNK - 200 {
                n += 1;
                let line = match n % 1000 {
                    0 => format!("{n} ERROR request failed id={n}\n"),
                    1..=3 => "INFO heartbeat\n".to_owned(),
                    _ => format!("{n} INFO GET /abc{} 302 in {}ms\n", n % 97, n % 13),
                };
                chunk.extend_from_slice(line.as_bytes());
            }
            written += chunk.len();
            push(&chunk);
        }
    }

    #[test]
    fn a_50_mb_log_stays_within_the_output_cap_and_a_memory_bound() {
        let cfg = FilterConfig::default();
        let bound =
            (cfg.context_lines + 3) * cfg.max_line_bytes + 3 * cfg.max_bytes + 4 * READ_CHUNK;
        let mut filter = LogFilter::new(cfg.clone());
        let mut peak = 0;
        generated_log(50 * 1024 * 1024, |chunk| {
            filter.push(chunk);
            peak = peak.max(filter.held_bytes());
        });
        assert!(peak <= bound, "filter held {peak} bytes, bound {bound}");
        let excerpt = filter.finish();
        assert!(excerpt.stats.bytes_read >= 50 * 1024 * 1024);
        let rendered = excerpt.render();
        assert!(rendered.len() <= cfg.max_bytes, "{} bytes", rendered.len());
        assert!(excerpt.truncation.is_some());
        // One ERROR per thousand lines of ~30 bytes.
        assert!(excerpt.stats.matching_lines > 1_000, "{:?}", excerpt.stats);
        assert!(
            rendered.starts_with("   997- 997 INFO GET"),
            "{}",
            &rendered[..200]
        );
    }
}
