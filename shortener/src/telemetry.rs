//! Log setup: human text or one JSON object per line, to stdout where kubelet collects it.
//!
//! Lines are formatted on the request's thread and written by a dedicated thread, so a slow
//! stdout (a pipe whose reader lags) does not stall request handling until its queue is full.
//! The queue does not drop lines: an error line must never be lost for speed.

use std::io::IsTerminal;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Lines queued for the writer thread at most; beyond, logging waits for it.
const QUEUED_LINES: usize = 64 * 1024;

#[must_use = "dropping the guard stops the log writer"]
pub fn init(format: LogFormat) -> WorkerGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("shortener-log")
        .finish(std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        // Colour codes would end up in `kubectl logs` and in the operator's incident excerpts.
        LogFormat::Text => builder.with_ansi(std::io::stdout().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    guard
}
