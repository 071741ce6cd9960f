//! Hit counting off the redirect's hot path. A redirect only bumps an in-memory counter; a
//! background task adds the counts to the store in one transaction every second, and once more
//! at shutdown. A durable write per redirect would cap redirects at the disk's fsync rate, and
//! hits are analytics: a SIGKILL may lose up to a second of them, never a URL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::RwLock;

use crate::store::{Store, StoreError, UrlRecord};

pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct HitCounter {
    pending: Mutex<HashMap<String, u64>>,
    /// Held for writing while a batch is being committed, so a reader never sees the batch
    /// both in the store and still pending (or in neither).
    flushing: RwLock<()>,
}

impl HitCounter {
    pub fn record(&self, slug: &str) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        // No allocation for a slug already counted since the last flush (the common case).
        match pending.get_mut(slug) {
            Some(n) => *n += 1,
            None => {
                pending.insert(slug.to_owned(), 1);
            }
        }
    }

    pub fn forget(&self, slug: &str) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(slug);
    }

    /// The stored record with this process's not-yet-flushed hits added.
    pub async fn get(
        &self,
        store: &Arc<Store>,
        slug: &str,
    ) -> Result<Option<UrlRecord>, StoreError> {
        let _guard = self.flushing.read().await;
        let record = store.get(slug.to_owned()).await?;
        Ok(record.map(|mut r| {
            let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            r.hits += pending.get(slug).copied().unwrap_or(0);
            r
        }))
    }

    pub async fn flush(&self, store: &Arc<Store>) -> Result<(), StoreError> {
        let _guard = self.flushing.write().await;
        let batch =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        if batch.is_empty() {
            return Ok(());
        }
        if let Err(e) = store.add_hits(batch.clone()).await {
            // Keep the counts for the next attempt.
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            for (slug, n) in batch {
                *pending.entry(slug).or_default() += n;
            }
            return Err(e);
        }
        Ok(())
    }

    /// Flushes every `FLUSH_INTERVAL` until the returned task is aborted.
    pub fn spawn_flusher(self: &Arc<Self>, store: Arc<Store>) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = this.flush(&store).await {
                    tracing::warn!(error = %e, "could not save hit counts; will retry");
                }
            }
        })
    }
}
