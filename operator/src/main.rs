//! The operator binary: controller plus `/metrics`, `/healthz` and `/readyz`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use clap::{Parser, ValueEnum};
use futures::FutureExt as _;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use operator::context::Context;
use operator::controller;
use operator::incident::egress::EgressPolicy;
use operator::incident::webhook::{WebhookConfig, WebhookSender};
use operator::leader;
use operator::metrics::Metrics;
use operator::promql::allow::PrometheusAllow;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::sync::watch;
use tracing::info;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Kubernetes operator for ShortenerRelease: blue-green rollouts with automatic rollback.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, env = "OPERATOR_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Kubeconfig file; without it, $KUBECONFIG, ~/.kube/config or the in-cluster config.
    #[arg(long, env = "OPERATOR_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Watch only these namespaces, comma-separated (default: all namespaces). Each gets
    /// its own watches, so the operator needs rights in these namespaces only.
    #[arg(long, visible_alias = "watch-namespace", env = "OPERATOR_NAMESPACE")]
    namespace: Option<String>,
    /// Log format.
    #[arg(long, env = "OPERATOR_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Reconcile only while holding a Lease, so several replicas can run. Default off.
    #[arg(long, env = "OPERATOR_LEADER_ELECT")]
    leader_elect: bool,
    /// Namespace of the leader-election Lease (default: the pod's own, from POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "shortener-operator")]
    leader_election_id: String,
    /// This replica's identity in the Lease (default: POD_NAME, else the host name and pid).
    #[arg(long, env = "POD_NAME")]
    leader_election_identity: Option<String>,
    /// Address blocks incident webhooks may reach although not public (loopback, private,
    /// link-local...), comma-separated CIDRs, e.g. 10.96.0.0/12. Default: public only.
    #[arg(long, env = "OPERATOR_WEBHOOK_ALLOW_CIDR", default_value = "", value_parser = EgressPolicy::parse_list)]
    webhook_allow_cidr: EgressPolicy,
    /// Prometheus servers releases may name in spec.analysis.prometheus.address,
    /// comma-separated: origins (http://prometheus.monitoring.svc:9090), hosts
    /// (prometheus.monitoring.svc[:9090]), domains (*.monitoring.svc) or * for any.
    /// Default: none, so a release naming a Prometheus is Blocked (PrometheusAddressRefused)
    /// until the cluster admin allows it: the address is the tenant's, the request the
    /// operator's.
    #[arg(long, env = "OPERATOR_PROMETHEUS_ALLOW", default_value = "", value_parser = PrometheusAllow::parse_list)]
    prometheus_allow: PrometheusAllow,
}

#[derive(Clone)]
struct Web {
    registry: Registry,
    ready: Arc<AtomicBool>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing(args.log_format);

    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?
        }
        None => Config::infer().await?,
    };
    let registry = Registry::new();
    let metrics = Metrics::new(&registry)?;
    let client = counting_client(config, &registry)?;
    metrics.up.set(1.0);
    let mut ctx = Context::new(client, metrics)?;
    ctx.webhook =
        WebhookSender::with_policy(WebhookConfig::default(), args.webhook_allow_cidr.clone())?
            .counting(ctx.metrics.webhook_deliveries.clone());
    ctx.prometheus_allow = args.prometheus_allow.clone();
    let ctx = Arc::new(ctx);

    let (stop_tx, stop_rx) = watch::channel(false);
    let ready = Arc::new(AtomicBool::new(false));
    let web = Web {
        registry,
        ready: ready.clone(),
    };
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(web);
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding {}", args.metrics_addr))?;
    info!(addr = %listener.local_addr()?, "serving /metrics, /healthz, /readyz");
    let mut web_stop = stop_rx.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = web_stop.wait_for(|s| *s).await;
            })
            .await
    });

    tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutting down");
        let _ = stop_tx.send(true);
    });

    // A standby replica is ready (it serves metrics and could take over); only the
    // leader reconciles.
    ready.store(true, Ordering::SeqCst);
    let mut leading = match leader_settings(&args)? {
        Some(settings) => {
            let elector = leader::Elector::new(ctx.client.clone(), settings);
            let mut wait_stop = stop_rx.clone();
            tokio::select! {
                rx = elector.acquire() => Some(rx),
                _ = wait_stop.wait_for(|s| *s) => None,
            }
        }
        None => None,
    };
    let mut ctl_stop = stop_rx.clone();
    let lost = Arc::new(AtomicBool::new(false));
    let lost_flag = lost.clone();
    let mut lost_rx = leading.as_ref().map(|l| l.leading.clone());
    if !*stop_rx.borrow() {
        let shutdown = async move {
            tokio::select! {
                _ = ctl_stop.wait_for(|s| *s) => {}
                _ = async {
                    match lost_rx.as_mut() {
                        Some(rx) => { let _ = rx.wait_for(|l| !*l).await; }
                        None => std::future::pending::<()>().await,
                    }
                } => lost_flag.store(true, Ordering::SeqCst),
            }
        }
        .boxed()
        .shared();
        // One controller per watched namespace (namespaced RBAC allows no cross-namespace
        // watch), all stopped by the same signal.
        let runs = watched_namespaces(args.namespace.as_deref())
            .into_iter()
            .map(|ns| controller::run(ctx.clone(), ns, shutdown.clone()));
        futures::future::join_all(runs).await;
    }
    ready.store(false, Ordering::SeqCst);
    if lost.load(Ordering::SeqCst) {
        // Exit non-zero so Kubernetes restarts this replica as a fresh candidate.
        anyhow::bail!("lost the leader-election lease");
    }
    // The controller has stopped: hand the Lease over now rather than let it expire.
    if let Some(leadership) = leading.take() {
        leadership.release().await;
    }
    server.await??;
    info!("stopped");
    Ok(())
}

/// A client that counts every request it sends to the API server (watches included) in
/// `shortener_operator_kube_requests_total`, so `make bench` can report API requests per
/// reconcile (the API server's own metrics do not say who asked).
fn counting_client(config: Config, registry: &Registry) -> anyhow::Result<Client> {
    let requests = prometheus::IntCounter::new(
        "shortener_operator_kube_requests_total",
        "Requests sent to the Kubernetes API server",
    )?;
    registry.register(Box::new(requests.clone()))?;
    let count = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        requests.inc();
        req
    });
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&count)
        .build())
}

/// `--namespace a,b`: one entry per namespace; none given: one entry for all namespaces.
fn watched_namespaces(arg: Option<&str>) -> Vec<Option<String>> {
    let list: Vec<Option<String>> = arg
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| Some(s.to_string()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if list.is_empty() { vec![None] } else { list }
}

/// Lease settings when `--leader-elect` is on.
fn leader_settings(args: &Args) -> anyhow::Result<Option<leader::Settings>> {
    if !args.leader_elect {
        return Ok(None);
    }
    let namespace = args
        .leader_election_namespace
        .clone()
        .or_else(|| {
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .filter(|s| !s.is_empty())
        .context("--leader-elect needs the Lease's namespace: set POD_NAMESPACE or --leader-election-namespace")?;
    let identity = args.leader_election_identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    Ok(Some(leader::Settings {
        namespace,
        name: args.leader_election_id.clone(),
        identity,
        lease_duration: leader::LEASE_DURATION,
        retry_period: leader::RETRY_PERIOD,
    }))
}

async fn metrics_handler(State(web): State<Web>) -> impl IntoResponse {
    let mut buf = Vec::new();
    match TextEncoder::new().encode(&web.registry.gather(), &mut buf) {
        Ok(()) => (StatusCode::OK, buf).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn readyz(State(web): State<Web>) -> impl IntoResponse {
    if web.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    // Colour only on a terminal: `kubectl logs` would otherwise show escape codes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::watched_namespaces;

    #[test]
    fn namespace_lists() {
        let some = |v: &[&str]| v.iter().map(|s| Some(s.to_string())).collect::<Vec<_>>();
        let cases: &[(Option<&str>, Vec<Option<String>>)] = &[
            (None, vec![None]),
            (Some(""), vec![None]),
            (Some("team-a"), some(&["team-a"])),
            (Some("team-b, team-a,,team-b"), some(&["team-a", "team-b"])),
        ];
        for (arg, want) in cases {
            assert_eq!(&watched_namespaces(*arg), want, "{arg:?}");
        }
    }
}
