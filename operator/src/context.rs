//! What every reconcile shares: the API client, metrics, the Event recorder, the HTTP client
//! for probes and the webhook sender.

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

use crate::error::{Error, Result};
use crate::incident::webhook::{WebhookConfig, WebhookSender};
use crate::metrics::Metrics;
use crate::resources::MANAGER;

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub metrics: Metrics,
    pub recorder: Recorder,
    pub http: reqwest::Client,
    pub webhook: WebhookSender,
    /// The Prometheus servers releases may name (`--prometheus-allow`); default none.
    pub prometheus_allow: crate::promql::allow::PrometheusAllow,
}

impl Context {
    pub fn new(client: Client, metrics: Metrics) -> Result<Self> {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Ok(Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            http: crate::probes::client().map_err(|e| Error::setup(&e))?,
            webhook: WebhookSender::new(WebhookConfig::default()).map_err(|e| Error::setup(&e))?,
            prometheus_allow: Default::default(),
        })
    }
}
