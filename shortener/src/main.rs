//! The URL shortener the ShortenerRelease operator deploys. See shortener/README.md.

mod app;
mod auth;
mod cache;
mod config;
mod error;
mod fault;
mod hits;
mod metrics;
mod middleware;
mod routes;
mod serve;
mod server;
mod slug;
mod store;
mod target;
mod telemetry;
mod workers;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than glibc's malloc: a redirect makes a few dozen small, short-lived
/// allocations (request parts, extensions, headers, futures), and glibc's malloc and free were
/// about a third of its instructions (callgrind; shortener/README.md has the figures).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let config = config::Config::parse();
    // Held to the end: dropping it flushes the log lines still queued.
    let _log_writer = telemetry::init(config.log_format);
    match server::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
