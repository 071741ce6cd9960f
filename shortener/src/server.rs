//! Process lifecycle: bind, serve, and on SIGTERM/SIGINT stop accepting, finish the requests
//! in flight, save pending hit counts, exit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::app::{self, AppState, Shared};
use crate::auth::{TokenError, Tokens, WriteLimiter};
use crate::cache::RedirectCache;
use crate::config::Config;
use crate::fault::{FaultParseError, Faults};
use crate::hits::HitCounter;
use crate::metrics::{Metrics, MetricsError};
use crate::routes::ShortUrls;
use crate::serve::Limits;
use crate::store::{Location, LocationError, Store, StoreError};
use crate::workers::{self, Workers};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("SHORTENER_FAULT: {0}")]
    Fault(#[from] FaultParseError),
    #[error("fault crash-on-start is set: refusing to start")]
    CrashOnStart,
    #[error("--store/SHORTENER_STORE: {0}")]
    Location(#[from] LocationError),
    /// `location` is the redacted form: no password.
    #[error("cannot open store {location}: {source}")]
    Store {
        location: String,
        source: StoreError,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid --public-url {0:?}: must be an absolute http(s) URL")]
    PublicUrl(String),
    #[error(transparent)]
    Tokens(#[from] TokenError),
    #[error("--max-connections must be at least 1")]
    NoConnections,
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("server: {0}")]
    Serve(std::io::Error),
}

pub async fn run(config: Config) -> Result<(), StartError> {
    let started = Instant::now();
    let faults = Faults::parse(config.fault.as_deref(), started)?;
    if faults.crash_on_start() {
        return Err(StartError::CrashOnStart);
    }
    let public_url = config
        .public_url
        .as_deref()
        .map(|u| {
            let trimmed = u.trim_end_matches('/');
            match url::Url::parse(trimmed) {
                Ok(p) if matches!(p.scheme(), "http" | "https") => Ok(trimmed.to_owned()),
                _ => Err(StartError::PublicUrl(u.to_owned())),
            }
        })
        .transpose()?;
    let tokens = Tokens::new(
        &config.api_tokens,
        config.api_tokens_file.as_deref(),
        config.operator_token.as_ref(),
        config.allow_anonymous_writes,
    )?;
    if config.max_connections == 0 {
        return Err(StartError::NoConnections);
    }
    let location = Location::from_arg(&config.store)?;
    let shown = location.to_string();
    let store = Store::open(location, config.group_commit)
        .await
        .map_err(|source| StartError::Store {
            location: shown,
            source,
        })?;
    let metrics = Arc::new(Metrics::new(&config.release_version)?);
    let hits = Arc::new(HitCounter::default());
    let flusher = hits.spawn_flusher(Arc::clone(&store));

    let write_limiter = WriteLimiter::new(config.write_rate_limit, config.write_burst);
    let sweeper = write_limiter.spawn_sweeper();
    if let Some(left) = faults.listen_delay_left(Instant::now()) {
        // Start-up work is done; the port stays closed, as during a long migration. Signals
        // keep their default action meanwhile: SIGTERM ends the process (exit 143).
        tracing::warn!(
            fault = %faults,
            wait = %humantime::format_duration(left),
            "fault listen-after: not listening yet"
        );
        tokio::time::sleep(left).await;
    }
    let addr = SocketAddr::new(config.host, config.port);
    let workers = config.http_workers.map_or_else(
        || std::thread::available_parallelism().map_or(1, usize::from),
        usize::from,
    );
    let listeners =
        workers::bind(addr, workers).map_err(|source| StartError::Bind { addr, source })?;
    let local = listeners[0].local_addr().map_err(StartError::Serve)?;
    let short_urls = ShortUrls {
        public: public_url,
        allowed_hosts: config
            .allowed_hosts
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect(),
        // The port actually bound (`--port 0` picks one).
        fallback: format!("http://localhost:{}", local.port()),
    };
    let state = AppState::new(Shared {
        store: Arc::clone(&store),
        hits: Arc::clone(&hits),
        metrics: Arc::clone(&metrics),
        faults: Arc::new(faults),
        short_urls: Arc::new(short_urls),
        tokens,
        write_limiter,
        redirects: RedirectCache::new(
            config.redirect_cache_mib.saturating_mul(1024 * 1024),
            config.redirect_cache_ttl,
        ),
        request_timeout: config.request_timeout,
        body_read_timeout: config.body_read_timeout,
        draining: Arc::default(),
    });
    let draining = Arc::clone(&state.draining);
    if !state.faults.is_empty() {
        tracing::warn!(fault = %state.faults, "fault injection is on");
    }
    if state.tokens.is_empty() {
        tracing::warn!(
            "--allow-anonymous-writes: creates and deletes need no token; anyone who reaches this port can change links"
        );
    }
    tracing::info!(
        addr = %local,
        version = config.release_version,
        store = %store.location(),
        group_commit = store.group_commit(),
        api_tokens = state.tokens.len(),
        http_workers = workers,
        "listening"
    );

    let limits = Limits {
        header_read_timeout: config.header_read_timeout,
        idle_timeout: config.idle_timeout,
        max_connections: config.max_connections,
    };
    let app = app::App::new(state);
    let workers = Workers::start(listeners, &app, limits, &metrics).map_err(StartError::Serve)?;
    shutdown_signal().await;
    draining.store(true, std::sync::atomic::Ordering::SeqCst);
    if !config.shutdown_delay.is_zero() {
        tracing::info!(
            delay = ?config.shutdown_delay,
            "not ready; serving on until the load balancer has let go"
        );
        tokio::time::sleep(config.shutdown_delay).await;
    }
    tracing::info!("draining in-flight requests");
    workers.stop().await;

    flusher.abort();
    if let Some(sweeper) = sweeper {
        sweeper.abort();
    }
    if let Err(e) = hits.flush(&store).await {
        tracing::warn!(error = %e, "could not save the last hit counts");
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}
