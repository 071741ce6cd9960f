//! Process lifecycle: bind, serve, and on SIGTERM/SIGINT stop accepting, finish the requests
//! in flight, save pending hit counts, exit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::app::{self, AppState};
use crate::config::Config;
use crate::fault::{FaultParseError, Faults};
use crate::hits::HitCounter;
use crate::metrics::{Metrics, MetricsError};
use crate::store::{Location, LocationError, Store, StoreError};

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
                Ok(p) if matches!(p.scheme(), "http" | "https") => Ok(Arc::from(trimmed)),
                _ => Err(StartError::PublicUrl(u.to_owned())),
            }
        })
        .transpose()?;
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

    let state = AppState {
        store: Arc::clone(&store),
        hits: Arc::clone(&hits),
        metrics,
        faults: Arc::new(faults),
        public_url,
        request_timeout: config.request_timeout,
        draining: Arc::default(),
    };
    let draining = Arc::clone(&state.draining);
    if let Some(left) = state.faults.listen_delay_left(Instant::now()) {
        // Start-up work is done; the port stays closed, as during a long migration. Signals
        // keep their default action meanwhile: SIGTERM ends the process (exit 143).
        tracing::warn!(
            fault = %state.faults,
            wait = %humantime::format_duration(left),
            "fault listen-after: not listening yet"
        );
        tokio::time::sleep(left).await;
    }
    let addr = SocketAddr::new(config.host, config.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(StartError::Serve)?;
    if !state.faults.is_empty() {
        tracing::warn!(fault = %state.faults, "fault injection is on");
    }
    tracing::info!(
        addr = %local,
        version = config.release_version,
        store = %store.location(),
        group_commit = store.group_commit(),
        "listening"
    );

    axum::serve(listener, app::router(state))
        .with_graceful_shutdown(async move {
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
        })
        .await
        .map_err(StartError::Serve)?;

    flusher.abort();
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
