//! Leader election on a `coordination.k8s.io/v1` Lease, so that several operator replicas
//! can run (a rolling upgrade of the operator, a node drain) while only one reconciles.
//!
//! The decision is pure (`decide`) and table-tested; `Elector` does the API calls. Writes
//! use the Lease's resourceVersion (replace, not apply), so two candidates that both see
//! an expired Lease cannot both win: the second write gets 409 Conflict.
//!
//! A leader that cannot renew before its Lease expires stops reconciling at once (the
//! process then exits and Kubernetes restarts it as a candidate). Stopping early is the
//! safe side: two leaders would fight over every Service selector.
//!
//! A leader that stops gracefully (SIGTERM during a rolling upgrade of the operator) gives
//! the Lease up once its controller has stopped, as client-go's `ReleaseOnCancel` does, so a
//! standby takes over within one retry period instead of waiting out the whole Lease.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

/// What a candidate should do with the Lease it just read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds a valid Lease: take it (a new holder, so `leaseTransitions` + 1).
    Acquire,
    /// We hold it: renew it.
    Renew,
    /// Someone else holds a Lease that has not expired: wait and read again.
    Wait,
}

/// The parts of a Lease the decision depends on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    pub holder: Option<String>,
    pub renewed_at: Option<Timestamp>,
    pub duration_seconds: Option<i32>,
}

impl Observed {
    pub fn from_lease(lease: &Lease) -> Self {
        let spec = lease.spec.clone().unwrap_or_default();
        Observed {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            renewed_at: spec.renew_time.or(spec.acquire_time).map(|t| t.0),
            duration_seconds: spec.lease_duration_seconds,
        }
    }
}

/// Decides from the observed Lease (None: it does not exist yet) what `me` should do.
///
/// A Lease without a renew time or duration is treated as expired: a holder that never
/// said how long it holds cannot block everyone else forever. A renew time in the future
/// (the holder's clock ahead of ours) counts from now, which errs towards waiting.
pub fn decide(me: &str, lease: Option<&Observed>, now: Timestamp) -> Decision {
    let Some(lease) = lease else {
        return Decision::Acquire;
    };
    match lease.holder.as_deref() {
        Some(holder) if holder == me => Decision::Renew,
        None => Decision::Acquire,
        Some(_) => {
            let (Some(renewed), Some(secs)) = (lease.renewed_at, lease.duration_seconds) else {
                return Decision::Acquire;
            };
            let renewed = renewed.min(now);
            let expires = renewed.saturating_add(SignedDuration::from_secs(i64::from(secs.max(0))));
            match expires {
                Ok(expires) if expires > now => Decision::Wait,
                _ => Decision::Acquire,
            }
        }
    }
}

/// How long a Lease holds without renewal (client-go's default).
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews and a candidate reads the Lease again (client-go's default).
/// A leader killed without warning is replaced within `LEASE_DURATION + RETRY_PERIOD`.
pub const RETRY_PERIOD: Duration = Duration::from_secs(5);

/// Lease settings. Defaults follow client-go's leader election: 15 s lease, renew every 5 s.
#[derive(Clone, Debug)]
pub struct Settings {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub retry_period: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("lease {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Held while leading.
pub struct Leadership {
    /// `true` while leading; turns `false` once leadership is lost, and never turns back.
    pub leading: watch::Receiver<bool>,
    stop: oneshot::Sender<()>,
    keeper: tokio::task::JoinHandle<()>,
}

impl Leadership {
    /// Stops renewing and gives the Lease up. Call only once reconciling has stopped: the
    /// next leader may start the moment the Lease is free.
    pub async fn release(self) {
        let _ = self.stop.send(());
        let _ = self.keeper.await;
    }
}

pub struct Elector {
    api: Api<Lease>,
    settings: Settings,
}

impl Elector {
    pub fn new(client: Client, settings: Settings) -> Self {
        Elector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
        }
    }

    /// Waits until this candidate holds the Lease, then renews it in the background.
    pub async fn acquire(self) -> Leadership {
        loop {
            match self.try_once().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => warn!(error = %e, "leader election: could not read or write the lease"),
            }
            tokio::time::sleep(self.settings.retry_period).await;
        }
        info!(identity = %self.settings.identity, lease = %self.settings.name, "became leader");
        let (tx, rx) = watch::channel(true);
        let (stop, stopped) = oneshot::channel();
        let keeper = tokio::spawn(async move { self.keep(tx, stopped).await });
        Leadership {
            leading: rx,
            stop,
            keeper,
        }
    }

    /// Renews until a renewal has not succeeded for a whole lease duration, or until told to
    /// stop, in which case it gives the Lease up.
    async fn keep(self, leading: watch::Sender<bool>, mut stop: oneshot::Receiver<()>) {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.settings.retry_period) => {}
                _ = &mut stop => {
                    let _ = leading.send(false);
                    // Bounded: an API server that does not answer must not hold up the exit;
                    // the Lease then expires by itself.
                    let bound = self.settings.retry_period;
                    if tokio::time::timeout(bound, self.release()).await.is_err() {
                        warn!("leader election: releasing the lease timed out; it will expire");
                    }
                    return;
                }
            }
            match self.try_once().await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => {
                    warn!("leader election: another candidate holds the lease");
                    let _ = leading.send(false);
                    return;
                }
                Err(e) => warn!(error = %e, "leader election: renewal failed"),
            }
            // Give up a little before the lease could have been taken by someone else.
            if last_renewed.elapsed() + self.settings.retry_period >= self.settings.lease_duration {
                warn!("leader election: could not renew in time; stepping down");
                let _ = leading.send(false);
                return;
            }
        }
    }

    /// Clears the holder if it is still us, so the next candidate need not wait for expiry.
    /// Best effort: if it fails, the Lease simply expires.
    async fn release(&self) {
        let s = &self.settings;
        let result = async {
            let Some(mut lease) = self.api.get_opt(&s.name).await? else {
                return Ok(false);
            };
            let spec = lease.spec.get_or_insert_with(Default::default);
            if spec.holder_identity.as_deref() != Some(s.identity.as_str()) {
                return Ok(false);
            }
            let now = MicroTime(Timestamp::now());
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.acquire_time = Some(now.clone());
            spec.renew_time = Some(now);
            self.api
                .replace(&s.name, &PostParams::default(), &lease)
                .await
                .map(|_| true)
        }
        .await;
        match result {
            Ok(true) => info!(lease = %s.name, "released the leader-election lease"),
            Ok(false) => {}
            Err(e) => {
                warn!(error = %self.err(e), "leader election: could not release the lease; it will expire")
            }
        }
    }

    /// One read-decide-write round. Ok(true): we hold the Lease now.
    async fn try_once(&self) -> Result<bool, Error> {
        let s = &self.settings;
        let current = self.api.get_opt(&s.name).await.map_err(|e| self.err(e))?;
        let observed = current.as_ref().map(Observed::from_lease);
        let now = Timestamp::now();
        let decision = decide(&s.identity, observed.as_ref(), now);
        if decision == Decision::Wait {
            return Ok(false);
        }
        let secs = i32::try_from(s.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let result = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(s.name.clone()),
                        namespace: Some(s.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(s.identity.clone()),
                        lease_duration_seconds: Some(secs),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                let spec = lease.spec.get_or_insert_with(Default::default);
                if decision == Decision::Acquire {
                    spec.holder_identity = Some(s.identity.clone());
                    spec.acquire_time = Some(MicroTime(now));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.lease_duration_seconds = Some(secs);
                spec.renew_time = Some(MicroTime(now));
                // resourceVersion is kept from the read: a concurrent writer makes this 409.
                self.api
                    .replace(&s.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(ae)) if ae.code == 409 => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }

    fn err(&self, source: kube::Error) -> Error {
        Error::Api {
            namespace: self.settings.namespace.clone(),
            name: self.settings.name.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn held(holder: &str, renewed: i64, duration: i32) -> Observed {
        Observed {
            holder: Some(holder.into()),
            renewed_at: Some(at(renewed)),
            duration_seconds: Some(duration),
        }
    }

    #[test]
    fn decisions() {
        let cases: Vec<(&str, Option<Observed>, i64, Decision)> = vec![
            ("no lease yet", None, 0, Decision::Acquire),
            (
                "empty holder",
                Some(Observed::default()),
                0,
                Decision::Acquire,
            ),
            ("ours, fresh", Some(held("me", 0, 15)), 1, Decision::Renew),
            (
                "ours, expired: still ours to renew",
                Some(held("me", 0, 15)),
                60,
                Decision::Renew,
            ),
            (
                "theirs, fresh",
                Some(held("other", 0, 15)),
                10,
                Decision::Wait,
            ),
            (
                "theirs, expires exactly now",
                Some(held("other", 0, 15)),
                15,
                Decision::Acquire,
            ),
            (
                "theirs, expired",
                Some(held("other", 0, 15)),
                16,
                Decision::Acquire,
            ),
            (
                "theirs, clock ahead of ours",
                Some(held("other", 100, 15)),
                0,
                Decision::Wait,
            ),
            (
                "theirs without renew time",
                Some(Observed {
                    holder: Some("other".into()),
                    renewed_at: None,
                    duration_seconds: Some(15),
                }),
                0,
                Decision::Acquire,
            ),
            (
                "theirs without duration",
                Some(Observed {
                    holder: Some("other".into()),
                    renewed_at: Some(at(0)),
                    duration_seconds: None,
                }),
                0,
                Decision::Acquire,
            ),
            (
                "theirs, negative duration",
                Some(held("other", 0, -5)),
                0,
                Decision::Acquire,
            ),
        ];
        for (name, lease, now, want) in cases {
            assert_eq!(decide("me", lease.as_ref(), at(now)), want, "{name}");
        }
    }

    #[test]
    fn observed_from_lease_falls_back_to_acquire_time() {
        let lease = Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(String::new()),
                acquire_time: Some(MicroTime(at(3))),
                lease_duration_seconds: Some(15),
                ..Default::default()
            }),
            ..Default::default()
        };
        let o = Observed::from_lease(&lease);
        assert_eq!(o.holder, None, "an empty holder is no holder");
        assert_eq!(o.renewed_at, Some(at(3)));
    }
}
