//! The steady client of the e2e scenarios: a user creating a URL and following it, every
//! 20 ms, through the active Service, and what it saw.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Mutex;

use super::env::Env;
use super::eventually;

/// What the steady client saw.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub ok: u64,
    pub failed: u64,
    pub first_failure: Option<Instant>,
    pub last_failure: Option<Instant>,
}

/// A user creating a URL and following it, every 20 ms, through the active Service.
pub struct Traffic {
    tally: Arc<Mutex<Tally>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    /// Starts against the release's active Service, with the API token the operator made
    /// for the release (writes need one).
    pub async fn start(env: &Env) -> Traffic {
        let addr = env.active_address().await;
        let token = env.api_token().await;
        Self::start_at(addr, token)
    }

    pub fn start_at(addr: String, token: String) -> Traffic {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, s) = (tally.clone(), stop.clone());
        let task = tokio::spawn(async move {
            // A new connection per request, like many users: a kept-alive connection stays
            // on the pod it first reached, whatever the Service selects afterwards.
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(2))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            let mut i = 0u64;
            while !s.load(Ordering::SeqCst) {
                i += 1;
                let ok = one_request(&http, &addr, &token, i).await;
                let mut tally = t.lock().await;
                if ok {
                    tally.ok += 1;
                } else {
                    let now = Instant::now();
                    tally.failed += 1;
                    tally.first_failure.get_or_insert(now);
                    tally.last_failure = Some(now);
                }
                drop(tally);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Traffic { tally, stop, task }
    }

    pub async fn tally(&self) -> Tally {
        self.tally.lock().await.clone()
    }

    /// Lets at least `n` more requests through, so "no failures" covers time after the event.
    pub async fn more(&self, n: u64) {
        let start = self.tally().await;
        eventually("more client requests", Duration::from_secs(30), || async {
            let t = self.tally().await;
            (t.ok + t.failed >= start.ok + start.failed + n).then_some(())
        })
        .await;
    }

    pub async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        self.tally.lock().await.clone()
    }
}

pub async fn one_request(http: &reqwest::Client, addr: &str, token: &str, i: u64) -> bool {
    let target = format!("https://example.com/e2e/{i}");
    let Ok(resp) = http
        .post(format!("http://{addr}/api/v1/urls"))
        .bearer_auth(token)
        .json(&json!({ "url": target }))
        .send()
        .await
    else {
        return false;
    };
    if resp.status().as_u16() != 201 {
        return false;
    }
    let Ok(body) = resp.json::<serde_json::Value>().await else {
        return false;
    };
    let Some(slug) = body["slug"].as_str() else {
        return false;
    };
    let Ok(resp) = http.get(format!("http://{addr}/{slug}")).send().await else {
        return false;
    };
    resp.status().is_redirection()
        && resp.headers().get("location").and_then(|v| v.to_str().ok()) == Some(target.as_str())
}
