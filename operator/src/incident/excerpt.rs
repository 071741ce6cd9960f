//! What [`super::filter`] produces: the kept lines with their numbers, the gaps between
//! them, where and why it stopped early, and its `grep -n` style rendering.

use std::fmt::Write as _;

/// One entry of an excerpt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExcerptItem {
    /// A kept log line, or a run of identical consecutive lines.
    Line(KeptLine),
    /// Lines left out between two windows.
    Gap { skipped: u64 },
}

/// A kept line (or run of identical lines) of the original log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptLine {
    /// 1-based line number in the original log of the first line of the run.
    pub number: u64,
    /// How many identical consecutive lines this stands for (1 if not repeated).
    pub repeats: u64,
    /// Whether the line matched the pattern (otherwise it is context).
    pub matched: bool,
    /// The line, decoded lossily, without its line ending, cut to `max_line_bytes`.
    pub text: String,
    /// Bytes of the original line left out of `text`.
    pub dropped_bytes: u64,
}

/// Which cap cut the excerpt short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Lines(usize),
    Bytes(usize),
}

/// Why and where the excerpt stops early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncation {
    pub limit: Limit,
    /// First log line that is not shown.
    pub at_line: u64,
}

/// Counts over the whole input, shown or not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilterStats {
    pub bytes_read: u64,
    pub lines_read: u64,
    pub matching_lines: u64,
    pub matching_lines_shown: u64,
}

/// The filtered log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Excerpt {
    pub items: Vec<ExcerptItem>,
    pub truncation: Option<Truncation>,
    pub stats: FilterStats,
}

impl Excerpt {
    /// True when no line matched.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The kept lines (runs of repeats count once).
    pub fn lines(&self) -> impl Iterator<Item = &KeptLine> {
        self.items.iter().filter_map(|item| match item {
            ExcerptItem::Line(line) => Some(line),
            ExcerptItem::Gap { .. } => None,
        })
    }

    /// Text for a ConfigMap or a message: one line per item, `grep -n` style (`:` after
    /// the number of a matching line, `-` after a context line), then the truncation
    /// marker if any. Empty when nothing matched.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for item in &self.items {
            render_item(item, &mut out);
        }
        if let Some(truncation) = &self.truncation {
            render_marker(truncation, &self.stats, &mut out);
        }
        out
    }
}

pub(super) fn render_item(item: &ExcerptItem, out: &mut String) {
    // Writing to a String cannot fail.
    let _ = match item {
        ExcerptItem::Gap { skipped } => {
            let noun = if *skipped == 1 { "line" } else { "lines" };
            writeln!(out, "   --- {skipped} {noun} skipped ---")
        }
        ExcerptItem::Line(line) => {
            let mark = if line.matched { ':' } else { '-' };
            let _ = write!(out, "{:>6}{mark} {}", line.number, line.text);
            if line.dropped_bytes > 0 {
                let _ = write!(out, " [... {} more bytes]", line.dropped_bytes);
            }
            if line.repeats > 1 {
                let _ = write!(out, " (repeated {} times)", line.repeats);
            }
            writeln!(out)
        }
    };
}

fn render_marker(truncation: &Truncation, stats: &FilterStats, out: &mut String) {
    let limit = match truncation.limit {
        Limit::Lines(n) => format!("{n} lines"),
        Limit::Bytes(n) => format!("{n} bytes"),
    };
    let _ = writeln!(
        out,
        "[truncated: excerpt limit of {limit} reached at log line {}; {} of {} matching lines shown]",
        truncation.at_line, stats.matching_lines_shown, stats.matching_lines
    );
}
