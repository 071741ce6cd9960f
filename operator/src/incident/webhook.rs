//! Incident alerts to an incoming webhook (Slack, Teams or plain JSON receivers).
//!
//! The payload carries a `text` field, which Slack's and Teams' incoming webhooks show as
//! the message, and the same facts as structured fields for receivers that parse JSON.
//!
//! Delivery runs on its own task ([`WebhookSender::spawn`]) so that a slow or dead
//! receiver never holds up reconciliation; it retries transport errors, timeouts, 429 and
//! 5xx with exponential backoff, a bounded number of times. The URL is a secret (a Slack
//! webhook URL is all it takes to post to the channel), so it is never logged nor put in an
//! error: only its host is.
//!
//! Targets are checked against an [`EgressPolicy`](super::egress): the URL is the tenant's,
//! the network position the operator's, so loopback, link-local, metadata and
//! cluster-internal targets are refused unless allow-listed.

use std::sync::{Arc, Once};
use std::time::Duration;

use jiff::Timestamp;
use reqwest::StatusCode;
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::api::Phase;

use super::egress::{EgressPolicy, GuardedResolver, Lookup, Refusal, system_lookup};

/// Bytes of log excerpt in the message `text`: chat clients show long messages badly and
/// Teams rejects messages over about 28 KB. The full excerpt is in the ConfigMap.
pub const DEFAULT_TEXT_EXCERPT_BYTES: usize = 3 * 1024;
/// Bytes of log excerpt in the structured `excerpt` field.
pub const DEFAULT_EXCERPT_BYTES: usize = 16 * 1024;

/// A webhook URL that was rejected or a delivery that failed. Never contains the URL.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook URL is not a valid http(s) URL with a host")]
    InvalidUrl,
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("building the webhook HTTP client failed: {0}")]
    Client(#[source] reqwest::Error),
    #[error("webhook at {host} answered {status} after {attempts} attempt(s)")]
    Status {
        host: String,
        status: u16,
        attempts: u32,
    },
    #[error("webhook at {host} timed out after {attempts} attempt(s)")]
    Timeout { host: String, attempts: u32 },
    #[error("webhook at {host} unreachable after {attempts} attempt(s): {source}")]
    Transport {
        host: String,
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },
}

/// A webhook URL. Its `Debug` and `Display` show only scheme and host.
#[derive(Clone)]
pub struct WebhookUrl(reqwest::Url);

impl WebhookUrl {
    /// Parses the URL read from the Secret (surrounding whitespace, as left by `echo` into
    /// a file, is ignored).
    pub fn parse(raw: &str) -> Result<Self, WebhookError> {
        let url = reqwest::Url::parse(raw.trim()).map_err(|_| WebhookError::InvalidUrl)?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(WebhookError::InvalidUrl);
        }
        Ok(Self(url))
    }

    /// The host, safe to log.
    pub fn host(&self) -> &str {
        self.0.host_str().unwrap_or("")
    }
}

impl std::fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookUrl({self})")
    }
}

impl std::fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}/<redacted>", self.0.scheme(), self.host())
    }
}

/// What happened, as the operator recorded it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Incident {
    pub namespace: String,
    /// The ShortenerRelease's name.
    pub release: String,
    /// The revision number that failed (`status.lastIncident.revision`).
    pub revision: i64,
    pub image: Option<String>,
    /// One of the failure reasons in docs/contracts.md, e.g. `AnalysisFailed`.
    pub reason: String,
    /// Human-readable detail, e.g. the condition message.
    pub message: Option<String>,
    pub detected_at: Option<Timestamp>,
    pub rolled_back_at: Option<Timestamp>,
    pub recovered_at: Option<Timestamp>,
    pub downtime_seconds: Option<f64>,
    pub failed_requests: Option<i64>,
    /// The ConfigMap holding the full excerpt.
    pub excerpt_config_map: Option<String>,
}

/// The JSON body posted to the webhook.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IncidentPayload {
    /// What this is: [`EVENT_INCIDENT`], [`EVENT_SUCCEEDED`] or [`EVENT_BLOCKED`], so one
    /// receiver can tell them apart. Added beside the incident fields, none renamed.
    pub event: &'static str,
    /// The whole summary as one message, for Slack/Teams incoming webhooks.
    pub text: String,
    pub namespace: String,
    pub release: String,
    pub revision: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detected_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolled_back_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downtime_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_requests: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excerpt_config_map: Option<String>,
    /// The start of the rendered log excerpt, cut at a line boundary.
    pub excerpt: String,
    /// Whether `excerpt` was cut (the ConfigMap has it all).
    pub excerpt_truncated: bool,
}

/// `event` of a failure alert.
pub const EVENT_INCIDENT: &str = "incident";
/// `event` when a revision became stable (promotion succeeded).
pub const EVENT_SUCCEEDED: &str = "succeeded";
/// `event` when the release became Blocked (promotion gate or frozen downtime budget).
pub const EVENT_BLOCKED: &str = "blocked";

/// A non-failure transition worth a message: promotion succeeded, or the release became
/// Blocked.
#[derive(Clone, Debug, PartialEq)]
pub struct Notice {
    /// [`EVENT_SUCCEEDED`] or [`EVENT_BLOCKED`].
    pub event: &'static str,
    /// The Event reason, e.g. `RolloutSucceeded`, `BudgetExhausted`.
    pub reason: String,
    pub message: String,
}

/// The notice for one reconcile, decided from the persisted phase before it (`before`),
/// the phase it writes (`after`), its message and the Event reasons it emits. Once per
/// transition: the rollout emits `RolloutSucceeded` only on the step that promotes, and
/// Blocked counts only when the phase enters it, so a release that stays Blocked is not
/// announced again. The Blocked reason is the Event's (`AwaitingPromotion`,
/// `BudgetExhausted`...).
pub fn notice(
    before: Phase,
    after: Phase,
    message: &str,
    event_reasons: &[&str],
) -> Option<Notice> {
    if event_reasons.contains(&crate::api::reason::ROLLOUT_SUCCEEDED) {
        return Some(Notice {
            event: EVENT_SUCCEEDED,
            reason: crate::api::reason::ROLLOUT_SUCCEEDED.to_owned(),
            message: message.to_owned(),
        });
    }
    (after == Phase::Blocked && before != Phase::Blocked).then(|| Notice {
        event: EVENT_BLOCKED,
        reason: event_reasons
            .first()
            .copied()
            .unwrap_or("Blocked")
            .to_owned(),
        message: message.to_owned(),
    })
}

/// The payload of a [`Notice`]: same shape as an incident's, without the failure facts.
pub fn build_notice(
    notice: &Notice,
    namespace: &str,
    release: &str,
    revision: i64,
    image: Option<String>,
) -> IncidentPayload {
    let what = if notice.event == EVENT_SUCCEEDED {
        format!("revision {revision} is stable")
    } else {
        format!("is Blocked ({})", notice.reason)
    };
    let mut text = format!("ShortenerRelease {namespace}/{release} {what}.");
    if !notice.message.is_empty() {
        text.push('\n');
        text.push_str(&notice.message);
    }
    if let Some(image) = &image {
        text.push_str("\nImage: ");
        text.push_str(image);
    }
    IncidentPayload {
        event: notice.event,
        text,
        namespace: namespace.to_owned(),
        release: release.to_owned(),
        revision,
        image,
        reason: notice.reason.clone(),
        message: Some(notice.message.clone()).filter(|m| !m.is_empty()),
        detected_at: None,
        rolled_back_at: None,
        recovered_at: None,
        downtime_seconds: None,
        failed_requests: None,
        excerpt_config_map: None,
        excerpt: String::new(),
        excerpt_truncated: false,
    }
}

/// How much of the excerpt goes into the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadLimits {
    pub text_excerpt_bytes: usize,
    pub excerpt_bytes: usize,
}

impl Default for PayloadLimits {
    fn default() -> Self {
        Self {
            text_excerpt_bytes: DEFAULT_TEXT_EXCERPT_BYTES,
            excerpt_bytes: DEFAULT_EXCERPT_BYTES,
        }
    }
}

/// Builds the payload from the incident and the rendered excerpt
/// ([`Excerpt::render`](super::filter::Excerpt::render)).
pub fn build_payload(incident: &Incident, excerpt: &str, limits: PayloadLimits) -> IncidentPayload {
    let (structured, excerpt_truncated) = trim_lines(excerpt, limits.excerpt_bytes);
    IncidentPayload {
        event: EVENT_INCIDENT,
        text: summary_text(incident, excerpt, limits.text_excerpt_bytes),
        namespace: incident.namespace.clone(),
        release: incident.release.clone(),
        revision: incident.revision,
        image: incident.image.clone(),
        reason: incident.reason.clone(),
        message: incident.message.clone(),
        detected_at: incident.detected_at,
        rolled_back_at: incident.rolled_back_at,
        recovered_at: incident.recovered_at,
        downtime_seconds: incident.downtime_seconds,
        failed_requests: incident.failed_requests,
        excerpt_config_map: incident.excerpt_config_map.clone(),
        excerpt: structured.to_owned(),
        excerpt_truncated,
    }
}

fn summary_text(incident: &Incident, excerpt: &str, excerpt_bytes: usize) -> String {
    use std::fmt::Write as _;
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = write!(
        text,
        "Incident: ShortenerRelease {}/{} revision {} failed ({})",
        incident.namespace, incident.release, incident.revision, incident.reason
    );
    if incident.rolled_back_at.is_some() {
        text.push_str(" and was rolled back");
    }
    text.push('.');
    if let Some(message) = &incident.message {
        let _ = write!(text, "\n{message}");
    }
    if let Some(image) = &incident.image {
        let _ = write!(text, "\nImage: {image}");
    }
    let mut timeline = Vec::new();
    for (label, at) in [
        ("detected", incident.detected_at),
        ("rolled back", incident.rolled_back_at),
        ("recovered", incident.recovered_at),
    ] {
        if let Some(at) = at {
            timeline.push(format!("{label} {at}"));
        }
    }
    if let Some(seconds) = incident.downtime_seconds {
        // Whole seconds unless there is a fraction worth showing.
        timeline.push(format!("downtime {}s", (seconds * 10.0).round() / 10.0));
    }
    if let Some(failed) = incident.failed_requests {
        timeline.push(format!("{failed} failed requests"));
    }
    if !timeline.is_empty() {
        let _ = write!(text, "\nTimeline: {}", timeline.join(", "));
    }
    if excerpt.is_empty() {
        text.push_str("\nNo log lines matched.");
        return text;
    }
    let (shown, cut) = trim_lines(excerpt, excerpt_bytes);
    text.push_str("\nLog excerpt");
    if let Some(name) = &incident.excerpt_config_map {
        let _ = write!(text, " (full excerpt in ConfigMap {name})");
    }
    // A fence inside the log would end the code block early.
    let _ = write!(text, ":\n```\n{}", shown.replace("```", "'''"));
    if cut {
        let more = excerpt[shown.len()..].lines().count();
        let _ = writeln!(text, "... {more} more lines");
    }
    text.push_str("```");
    text
}

/// The longest prefix of `text` of at most `max` bytes that ends at a line end (or, for a
/// single overlong first line, at a character boundary). Returns whether it was cut.
fn trim_lines(text: &str, max: usize) -> (&str, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = text[..end].rfind('\n').map_or(end, |i| i + 1);
    (&text[..cut], true)
}

/// Timeouts and retry policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Whole-request timeout for one attempt.
    pub timeout: Duration,
    /// Attempts in total, the first included; at least 1.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled for each further one.
    pub initial_backoff: Duration,
    /// Longest wait between attempts, also for a server's `Retry-After`.
    pub max_backoff: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// A delivered alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub attempts: u32,
    pub status: u16,
}

/// Posts incident payloads. Cheap to clone; make one and keep it (it pools connections).
#[derive(Clone, Debug)]
pub struct WebhookSender {
    client: reqwest::Client,
    config: WebhookConfig,
    policy: Arc<EgressPolicy>,
    /// `webhook_deliveries_total{result}`, counted by [`Self::spawn`] when set.
    deliveries: Option<prometheus::IntCounterVec>,
}

static CRYPTO_PROVIDER: Once = Once::new();

impl WebhookSender {
    /// A sender under the default policy: public targets only.
    pub fn new(config: WebhookConfig) -> Result<Self, WebhookError> {
        Self::with_policy(config, EgressPolicy::default())
    }

    /// A sender that reaches public targets and the policy's allow-listed blocks.
    pub fn with_policy(config: WebhookConfig, policy: EgressPolicy) -> Result<Self, WebhookError> {
        Self::with_lookup(config, policy, system_lookup())
    }

    /// As [`Self::with_policy`], resolving names with `lookup` (tests use a fixed table).
    pub fn with_lookup(
        config: WebhookConfig,
        policy: EgressPolicy,
        lookup: Lookup,
    ) -> Result<Self, WebhookError> {
        let policy = Arc::new(policy);
        // reqwest is built without a crypto provider of its own so the binary carries only
        // ring, which kube uses too; rustls needs it installed as the process default.
        CRYPTO_PROVIDER.call_once(|| {
            // Err means another provider is installed already, which is as good.
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            // A redirect could send the payload somewhere the Secret did not name.
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve and connect on our behalf, past the policy.
            .no_proxy()
            .dns_resolver(GuardedResolver {
                policy: policy.clone(),
                lookup,
            })
            .user_agent(concat!("shortener-operator/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WebhookError::Client(e.without_url()))?;
        Ok(Self {
            client,
            config: WebhookConfig {
                max_attempts: config.max_attempts.max(1),
                ..config
            },
            policy,
            deliveries: None,
        })
    }

    /// Counts each spawned delivery's result in `deliveries` (`delivered` or `failed`), so a
    /// webhook that fails is seen by an alert, not only in the log.
    pub fn counting(mut self, deliveries: prometheus::IntCounterVec) -> Self {
        self.deliveries = Some(deliveries);
        self
    }

    /// Sends in the background and logs the outcome; reconciliation goes on at once. The
    /// handle may be dropped; awaiting it gives the result.
    pub fn spawn(
        &self,
        url: WebhookUrl,
        payload: IncidentPayload,
    ) -> JoinHandle<Result<Delivery, WebhookError>> {
        let sender = self.clone();
        tokio::spawn(async move {
            let result = sender.send(&url, &payload).await;
            if let Some(counter) = &sender.deliveries {
                let outcome = if result.is_ok() {
                    crate::metrics::WEBHOOK_DELIVERED
                } else {
                    crate::metrics::WEBHOOK_FAILED
                };
                counter.with_label_values(&[outcome]).inc();
            }
            match &result {
                Ok(delivery) => tracing::info!(
                    host = url.host(),
                    release = %payload.release,
                    revision = payload.revision,
                    event = payload.event,
                    attempts = delivery.attempts,
                    "incident webhook delivered"
                ),
                Err(error) => tracing::warn!(
                    host = url.host(),
                    release = %payload.release,
                    revision = payload.revision,
                    event = payload.event,
                    %error,
                    "incident webhook failed"
                ),
            }
            result
        })
    }

    /// Posts `payload`, retrying as configured. One successful POST at most.
    pub async fn send(
        &self,
        url: &WebhookUrl,
        payload: &IncidentPayload,
    ) -> Result<Delivery, WebhookError> {
        let host = url.host().to_owned();
        // An address literal never reaches the resolver: check it here. A name is checked
        // by the resolver, on the addresses the client then connects to.
        match host.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
            Ok(ip) => self.policy.check(&host, ip)?,
            Err(_) => self.policy.precheck_name(&host)?,
        }
        let mut backoff = self.config.initial_backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = self.client.post(url.0.clone()).json(payload).send().await;
            let (error, retry_after) = match outcome {
                Ok(response) if response.status().is_success() => {
                    return Ok(Delivery {
                        attempts: attempt,
                        status: response.status().as_u16(),
                    });
                }
                Ok(response) => {
                    let status = response.status();
                    let error = WebhookError::Status {
                        host: host.clone(),
                        status: status.as_u16(),
                        attempts: attempt,
                    };
                    if !retryable(status) {
                        return Err(error);
                    }
                    (error, retry_after(&response))
                }
                Err(e) if e.is_timeout() => (
                    WebhookError::Timeout {
                        host: host.clone(),
                        attempts: attempt,
                    },
                    None,
                ),
                Err(e) => {
                    // The resolver refused every address: retrying changes nothing.
                    if let Some(refused) = refusal(&e) {
                        return Err(WebhookError::Refused(refused.clone()));
                    }
                    (
                        WebhookError::Transport {
                            host: host.clone(),
                            attempts: attempt,
                            source: e.without_url(),
                        },
                        None,
                    )
                }
            };
            if attempt >= self.config.max_attempts {
                return Err(error);
            }
            let wait = retry_after.unwrap_or(backoff).min(self.config.max_backoff);
            tracing::debug!(host = %host, attempt, %error, ?wait, "incident webhook attempt failed; retrying");
            tokio::time::sleep(wait).await;
            backoff = backoff.saturating_mul(2).min(self.config.max_backoff);
        }
    }
}

/// The policy's refusal inside a transport error, if that is what it is.
fn refusal(error: &reqwest::Error) -> Option<&Refusal> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(r) = e.downcast_ref::<Refusal>() {
            return Some(r);
        }
        source = e.source();
    }
    None
}

/// Server trouble is worth another try; other client errors (bad URL, revoked hook,
/// rejected payload) will not get better.
fn retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// `Retry-After` in seconds (the HTTP-date form is rare for webhooks and is ignored).
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?;
    let seconds: u64 = value.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use axum::extract::State;
    use axum::http::{HeaderMap, HeaderValue, StatusCode as AxumStatus};

    use super::*;

    const SECRET_PATH: &str = "/services/T0001/B0001/s3cr3tT0k3n";

    /// Content type and body of each request received.
    type Requests = Arc<Mutex<Vec<(Option<String>, serde_json::Value)>>>;

    /// A loopback webhook receiver that answers with scripted statuses (then 200).
    #[derive(Clone, Default)]
    struct Receiver {
        requests: Requests,
        statuses: Arc<Mutex<VecDeque<u16>>>,
        slow_first: Option<Duration>,
    }

    impl Receiver {
        fn count(&self) -> usize {
            self.requests.lock().expect("lock").len()
        }

        fn bodies(&self) -> Vec<serde_json::Value> {
            let requests = self.requests.lock().expect("lock");
            requests.iter().map(|(_, body)| body.clone()).collect()
        }
    }

    async fn receive(
        State(receiver): State<Receiver>,
        headers: HeaderMap,
        body: String,
    ) -> (AxumStatus, HeaderMap) {
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let value = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
        let first = {
            let mut requests = receiver.requests.lock().expect("lock");
            requests.push((content_type, value));
            requests.len() == 1
        };
        if let (true, Some(delay)) = (first, receiver.slow_first) {
            // Simulates a receiver slower than the client's timeout.
            tokio::time::sleep(delay).await;
        }
        let status = receiver
            .statuses
            .lock()
            .expect("lock")
            .pop_front()
            .unwrap_or(200);
        let mut response_headers = HeaderMap::new();
        if status == 429 {
            response_headers.insert("retry-after", HeaderValue::from_static("0"));
        }
        (
            AxumStatus::from_u16(status).expect("valid status"),
            response_headers,
        )
    }

    async fn start(statuses: &[u16], slow_first: Option<Duration>) -> (Receiver, WebhookUrl) {
        let receiver = Receiver {
            statuses: Arc::new(Mutex::new(statuses.iter().copied().collect())),
            slow_first,
            ..Receiver::default()
        };
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr: SocketAddr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let url = WebhookUrl::parse(&format!("http://{addr}{SECRET_PATH}")).expect("valid url");
        (receiver, url)
    }

    /// The receivers listen on loopback, which the default policy refuses.
    fn loopback_sender(config: WebhookConfig) -> Result<WebhookSender, WebhookError> {
        let policy = EgressPolicy::parse_list("127.0.0.0/8").expect("cidr");
        WebhookSender::with_policy(config, policy)
    }

    fn fast_config(max_attempts: u32) -> WebhookConfig {
        WebhookConfig {
            timeout: Duration::from_secs(5),
            max_attempts,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
        }
    }

    fn incident() -> Incident {
        Incident {
            namespace: "demo".into(),
            release: "shortener".into(),
            revision: 2,
            image: Some("shortener:v2".into()),
            reason: "AnalysisFailed".into(),
            message: Some("error rate 100% over 3 intervals".into()),
            detected_at: Some("2026-11-25T19:00:00Z".parse().expect("ts")),
            rolled_back_at: Some("2026-11-25T19:00:02Z".parse().expect("ts")),
            recovered_at: Some("2026-11-25T19:00:04Z".parse().expect("ts")),
            downtime_seconds: Some(4.0),
            failed_requests: Some(37),
            excerpt_config_map: Some("shortener-incident-2".into()),
        }
    }

    const EXCERPT: &str = "     3: ERROR web.1 Exception on /shorten [POST]\n     4: Traceback (most recent call last):\n";

    #[test]
    fn payload_has_slack_text_and_structured_fields() {
        let payload = build_payload(&incident(), EXCERPT, PayloadLimits::default());
        let json = serde_json::to_value(&payload).expect("serializes");
        assert_eq!(json["release"], "shortener");
        assert_eq!(json["namespace"], "demo");
        assert_eq!(json["revision"], 2);
        assert_eq!(json["reason"], "AnalysisFailed");
        assert_eq!(json["detectedAt"], "2026-11-25T19:00:00Z");
        assert_eq!(json["rolledBackAt"], "2026-11-25T19:00:02Z");
        assert_eq!(json["recoveredAt"], "2026-11-25T19:00:04Z");
        assert_eq!(json["downtimeSeconds"], 4.0);
        assert_eq!(json["failedRequests"], 37);
        assert_eq!(json["excerptConfigMap"], "shortener-incident-2");
        assert_eq!(json["excerpt"], EXCERPT);
        assert_eq!(json["excerptTruncated"], false);
        assert_eq!(json["event"], "incident");
        assert_eq!(
            payload.text,
            "Incident: ShortenerRelease demo/shortener revision 2 failed (AnalysisFailed) and was rolled back.\n\
             error rate 100% over 3 intervals\n\
             Image: shortener:v2\n\
             Timeline: detected 2026-11-25T19:00:00Z, rolled back 2026-11-25T19:00:02Z, recovered 2026-11-25T19:00:04Z, downtime 4s, 37 failed requests\n\
             Log excerpt (full excerpt in ConfigMap shortener-incident-2):\n```\n\
             \x20    3: ERROR web.1 Exception on /shorten [POST]\n\
             \x20    4: Traceback (most recent call last):\n```"
        );

        // Unknown facts are left out rather than sent as null.
        let minimal = Incident {
            namespace: "demo".into(),
            release: "shortener".into(),
            revision: 3,
            reason: "CrashLoop".into(),
            ..Incident::default()
        };
        let payload = build_payload(&minimal, "", PayloadLimits::default());
        let json = serde_json::to_value(&payload).expect("serializes");
        let object = json.as_object().expect("object");
        for absent in [
            "image",
            "detectedAt",
            "downtimeSeconds",
            "failedRequests",
            "excerptConfigMap",
        ] {
            assert!(
                !object.contains_key(absent),
                "{absent} should be absent: {json}"
            );
        }
        assert_eq!(
            payload.text,
            "Incident: ShortenerRelease demo/shortener revision 3 failed (CrashLoop).\nNo log lines matched."
        );
    }

    /// Once per transition: success on the promoting step's Event, Blocked on entry only.
    #[test]
    fn notices_fire_once_per_transition() {
        use crate::api::reason::{
            AWAITING_PROMOTION, BUDGET_EXHAUSTED, PROMOTED, ROLLOUT_SUCCEEDED,
        };
        use Phase::*;
        // (phase before, phase after, the step's Event reasons, expected (event, reason))
        type Case = (
            Phase,
            Phase,
            &'static [&'static str],
            Option<(&'static str, &'static str)>,
        );
        let cases: [Case; 8] = [
            (
                Analyzing,
                Healthy,
                &[ROLLOUT_SUCCEEDED],
                Some((EVENT_SUCCEEDED, ROLLOUT_SUCCEEDED)),
            ),
            (
                Progressing,
                Healthy,
                &[PROMOTED, ROLLOUT_SUCCEEDED],
                Some((EVENT_SUCCEEDED, ROLLOUT_SUCCEEDED)),
            ),
            // Staying Healthy, re-reconciled: nothing new.
            (Healthy, Healthy, &[], None),
            (Analyzing, Analyzing, &[PROMOTED], None),
            (
                Healthy,
                Blocked,
                &[BUDGET_EXHAUSTED],
                Some((EVENT_BLOCKED, BUDGET_EXHAUSTED)),
            ),
            (
                Pending,
                Blocked,
                &[AWAITING_PROMOTION],
                Some((EVENT_BLOCKED, AWAITING_PROMOTION)),
            ),
            // Still Blocked (even with a new gate message and Event): announced already.
            (Blocked, Blocked, &[AWAITING_PROMOTION], None),
            (Blocked, Progressing, &[], None),
        ];
        for (before, after, events, want) in cases {
            let got = notice(before, after, "why", events);
            assert_eq!(
                got.as_ref().map(|n| (n.event, n.reason.as_str())),
                want,
                "{before:?} -> {after:?} with {events:?}"
            );
        }
    }

    #[test]
    fn notice_payloads_name_the_event() {
        let ok = Notice {
            event: EVENT_SUCCEEDED,
            reason: "RolloutSucceeded".into(),
            message: "revision 4 is stable".into(),
        };
        let payload = build_notice(&ok, "demo", "shortener", 4, Some("shortener:v4".into()));
        let json = serde_json::to_value(&payload).expect("serializes");
        assert_eq!(json["event"], "succeeded");
        assert_eq!(json["revision"], 4);
        assert_eq!(json["reason"], "RolloutSucceeded");
        assert_eq!(json["image"], "shortener:v4");
        assert!(json.get("detectedAt").is_none(), "{json}");
        assert_eq!(
            payload.text,
            "ShortenerRelease demo/shortener revision 4 is stable.\nrevision 4 is stable\nImage: shortener:v4"
        );
        let blocked = Notice {
            event: EVENT_BLOCKED,
            reason: "BudgetExhausted".into(),
            message: String::new(),
        };
        let payload = build_notice(&blocked, "demo", "shortener", 3, None);
        let json = serde_json::to_value(&payload).expect("serializes");
        assert_eq!(json["event"], "blocked");
        assert_eq!(json["reason"], "BudgetExhausted");
        assert!(json.get("message").is_none(), "{json}");
        assert_eq!(
            payload.text,
            "ShortenerRelease demo/shortener is Blocked (BudgetExhausted)."
        );
    }

    #[test]
    fn long_excerpts_are_cut_at_line_boundaries() {
        let excerpt: String = (1..=1000)
            .map(|n| format!("{n:>6}: ERROR boom {n}\n"))
            .collect();
        let limits = PayloadLimits {
            text_excerpt_bytes: 200,
            excerpt_bytes: 1_000,
        };
        let payload = build_payload(&incident(), &excerpt, limits);
        assert!(payload.excerpt_truncated);
        assert!(payload.excerpt.len() <= 1_000);
        assert!(payload.excerpt.ends_with('\n'));
        assert!(excerpt.starts_with(&payload.excerpt));
        let fenced = payload.text.split("```\n").nth(1).expect("code block");
        assert!(fenced.ends_with("more lines\n```"), "{fenced}");
        let shown = fenced.lines().filter(|l| l.contains("ERROR boom")).count();
        assert_eq!(shown, 200 / 22);
        assert!(fenced.contains(&format!("... {} more lines", 1000 - shown)));

        // A log line with a code fence cannot close the message's code block.
        let payload = build_payload(&incident(), "     1: ERROR ```rm -rf```\n", limits);
        assert_eq!(payload.text.matches("```").count(), 2);
        // A multi-byte character at the cut is not split.
        let (cut, truncated) = trim_lines("ééé", 3);
        assert_eq!((cut, truncated), ("é", true));
    }

    #[test]
    fn the_url_is_never_shown() {
        let url =
            WebhookUrl::parse(" https://hooks.example.com/services/T0/B0/s3cr3t\n").expect("valid");
        assert_eq!(url.host(), "hooks.example.com");
        assert_eq!(url.to_string(), "https://hooks.example.com/<redacted>");
        assert!(!format!("{url:?}").contains("s3cr3t"));
        for bad in [
            "",
            "not a url",
            "ftp://example.com/x",
            "file:///etc/passwd",
            "https://",
        ] {
            let error = WebhookUrl::parse(bad).err().map(|e| e.to_string());
            assert_eq!(
                error.as_deref(),
                Some("webhook URL is not a valid http(s) URL with a host"),
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn one_post_per_incident_with_the_payload() {
        let (receiver, url) = start(&[], None).await;
        let sender = loopback_sender(fast_config(3)).expect("client");
        let payload = build_payload(&incident(), EXCERPT, PayloadLimits::default());
        let delivery = sender.spawn(url, payload.clone()).await.expect("task ran");
        assert_eq!(
            delivery.expect("delivered"),
            Delivery {
                attempts: 1,
                status: 200
            }
        );
        let requests = receiver.requests.lock().expect("lock").clone();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].0.as_deref(), Some("application/json"));
        assert_eq!(
            requests[0].1,
            serde_json::to_value(&payload).expect("serializes")
        );
    }

    #[tokio::test]
    async fn retries_server_errors_then_succeeds() {
        let cases: &[(&str, &[u16], u32)] = &[
            ("500 then success", &[500], 2),
            ("two 503s then success", &[503, 502], 3),
            ("429 honours Retry-After", &[429], 2),
            ("408 request timeout", &[408], 2),
        ];
        for (name, statuses, attempts) in cases {
            let (receiver, url) = start(statuses, None).await;
            let sender = loopback_sender(fast_config(5)).expect("client");
            let payload = build_payload(&incident(), EXCERPT, PayloadLimits::default());
            let delivery = sender.send(&url, &payload).await;
            assert_eq!(
                delivery.ok(),
                Some(Delivery {
                    attempts: *attempts,
                    status: 200
                }),
                "{name}"
            );
            assert_eq!(receiver.count(), *attempts as usize, "{name}");
            let bodies = receiver.bodies();
            assert!(
                bodies.iter().all(|b| b == &bodies[0]),
                "{name}: same payload each time"
            );
        }
    }

    #[tokio::test]
    async fn gives_up_after_the_last_attempt() {
        let (receiver, url) = start(&[500; 10], None).await;
        let sender = loopback_sender(fast_config(3)).expect("client");
        let payload = build_payload(&incident(), EXCERPT, PayloadLimits::default());
        let error = sender.send(&url, &payload).await.expect_err("always 500");
        assert!(
            matches!(
                error,
                WebhookError::Status {
                    status: 500,
                    attempts: 3,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(receiver.count(), 3);
    }

    #[tokio::test]
    async fn each_spawned_delivery_is_counted_by_its_result() {
        let deliveries = prometheus::IntCounterVec::new(
            prometheus::Opts::new("deliveries", "test"),
            &["result"],
        )
        .expect("counter");
        let count = |result: &str| deliveries.with_label_values(&[result]).get();
        let payload = build_payload(&incident(), EXCERPT, PayloadLimits::default());

        let (_ok, url) = start(&[], None).await;
        let sender = loopback_sender(fast_config(2))
            .expect("client")
            .counting(deliveries.clone());
        let result = sender.spawn(url, payload.clone()).await.expect("task ran");
        assert!(result.is_ok(), "{result:?}");
        assert_eq!((count("delivered"), count("failed")), (1, 0));

        let (_failing, url) = start(&[500; 10], None).await;
        let result = sender.spawn(url, payload).await.expect("task ran");
        assert!(result.is_err());
        assert_eq!((count("delivered"), count("failed")), (1, 1));
    }

    #[tokio::test]
    async fn client_errors_are_not_retried() {
        for status in [400u16, 403, 404, 410] {
            let (receiver, url) = start(&[status], None).await;
            let sender = loopback_sender(fast_config(5)).expect("client");
            let payload = build_payload(&incident(), EXCERPT, PayloadLimits::default());
            let error = sender.send(&url, &payload).await.expect_err("client error");
            assert!(
                matches!(error, WebhookError::Status { status: s, attempts: 1, .. } if s == status),
                "{error:?}"
            );
            assert_eq!(receiver.count(), 1, "{status}");
        }
    }

    #[tokio::test]
    async fn a_slow_receiver_times_out_and_is_retried() {
        let (receiver, url) = start(&[], Some(Duration::from_secs(5))).await;
        let sender = loopback_sender(WebhookConfig {
            timeout: Duration::from_millis(200),
            ..fast_config(3)
        })
        .expect("client");
        let payload = build_payload(&incident(), EXCERPT, PayloadLimits::default());
        let delivery = sender.send(&url, &payload).await;
        assert_eq!(
            delivery.ok(),
            Some(Delivery {
                attempts: 2,
                status: 200
            })
        );
        assert_eq!(receiver.count(), 2);
    }

    /// Captures log output for the current thread.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn failures_are_logged_and_reported_without_the_url() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish();
        // Current-thread test runtime: the spawned task logs on this thread.
        let _guard = tracing::subscriber::set_default(subscriber);

        // Nothing listens on a port we just released: connection refused.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("address").port()
        };
        let url =
            WebhookUrl::parse(&format!("http://127.0.0.1:{port}{SECRET_PATH}")).expect("valid");
        let sender = loopback_sender(fast_config(2)).expect("client");
        let payload = build_payload(&incident(), EXCERPT, PayloadLimits::default());
        // Another test thread may have registered the log line's callsite with no subscriber
        // while ours was being set (tracing caches "never" then): recompute, or the line can
        // be lost and this test flakes under load. The cache can still lose that race to a
        // registration already under way, so a send whose line is missing is retried once.
        let mut error = None;
        for _ in 0..2 {
            tracing::callsite::rebuild_interest_cache();
            let sent = sender.spawn(url.clone(), payload.clone()).await;
            error = Some(sent.expect("task ran").expect_err("nothing listening"));
            if !captured.0.lock().expect("lock").is_empty() {
                break;
            }
        }
        let error = error.expect("sent at least once");
        assert!(
            matches!(error, WebhookError::Transport { attempts: 2, .. }),
            "{error:?}"
        );

        let mut report = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            report.push_str(&format!(": {cause} / {cause:?}"));
            source = cause.source();
        }
        report.push_str(&format!("{error:?}"));
        assert!(report.contains("127.0.0.1"), "{report}");
        assert!(!report.contains("s3cr3t"), "{report}");

        let logs = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
        assert!(logs.contains("incident webhook failed"), "{logs}");
        assert!(logs.contains("127.0.0.1"), "{logs}");
        assert!(!logs.contains("s3cr3t"), "{logs}");
    }

    /// Resolves every name to the given addresses.
    fn fixed_lookup(addrs: Vec<std::net::IpAddr>) -> Lookup {
        Arc::new(move |_name: String| {
            let addrs = addrs.clone();
            Box::pin(async move { Ok(addrs) })
        })
    }

    #[tokio::test]
    async fn non_public_targets_are_refused_without_a_request() {
        use super::super::egress::Class;
        let (receiver, url) = start(&[], None).await;
        let port = url.0.port().expect("port");
        let payload = build_payload(&incident(), EXCERPT, PayloadLimits::default());
        let loopback: std::net::IpAddr = "127.0.0.1".parse().expect("ip");
        let cases: Vec<(&str, String, Vec<std::net::IpAddr>, Class)> = vec![
            (
                "address literal",
                url.0.to_string(),
                vec![],
                Class::Loopback,
            ),
            (
                "public-looking name resolving to loopback (rebinding)",
                format!("http://hooks.example.com:{port}{SECRET_PATH}"),
                vec![loopback],
                Class::Loopback,
            ),
            (
                "cluster Service name",
                format!("http://hooks.monitoring.svc.cluster.local:{port}{SECRET_PATH}"),
                vec![loopback],
                Class::ClusterName,
            ),
            (
                "name resolving to metadata and loopback",
                format!("http://hooks.example.com:{port}{SECRET_PATH}"),
                vec!["169.254.169.254".parse().expect("ip"), loopback],
                Class::Metadata,
            ),
        ];
        for (name, raw, resolved, class) in cases {
            let sender = WebhookSender::with_lookup(
                fast_config(3),
                EgressPolicy::default(),
                fixed_lookup(resolved),
            )
            .expect("client");
            let target = WebhookUrl::parse(&raw).expect("valid url");
            let error = sender.send(&target, &payload).await.expect_err(name);
            assert!(
                matches!(&error, WebhookError::Refused(r) if r.class == class),
                "{name}: {error:?}"
            );
            assert!(!error.to_string().contains("s3cr3t"), "{name}: {error}");
        }
        assert_eq!(receiver.count(), 0, "no request reached the receiver");
    }

    #[tokio::test]
    async fn a_name_is_connected_to_at_the_checked_address() {
        let (receiver, url) = start(&[], None).await;
        let port = url.0.port().expect("port");
        let target = WebhookUrl::parse(&format!("http://hooks.example.com:{port}{SECRET_PATH}"))
            .expect("valid url");
        // Loopback allow-listed: the name resolves there and the POST arrives.
        let sender = WebhookSender::with_lookup(
            fast_config(1),
            EgressPolicy::parse_list("127.0.0.0/8").expect("cidr"),
            fixed_lookup(vec![
                "169.254.169.254".parse().expect("ip"),
                "127.0.0.1".parse().expect("ip"),
            ]),
        )
        .expect("client");
        let payload = build_payload(&incident(), EXCERPT, PayloadLimits::default());
        let delivery = sender.send(&target, &payload).await.expect("delivered");
        assert_eq!(delivery.attempts, 1);
        assert_eq!(receiver.count(), 1);
    }
}
