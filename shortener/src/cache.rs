//! Redirects served from memory: a bounded cache of slug -> `Location` in front of the store.
//!
//! Consistency: a delete through this process removes its entry at once. Other processes
//! (replicas) sharing the store keep serving a cached redirect for at most the TTL after a
//! delete; that bound is `--redirect-cache-ttl`. Only found slugs are cached, so a slug
//! created anywhere resolves everywhere at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::HeaderValue;
use moka::sync::Cache;

/// Bytes an entry costs beyond its slug and URL (key, value and moka's own bookkeeping).
const ENTRY_OVERHEAD: usize = 128;

#[derive(Debug, Clone, Default)]
pub struct RedirectCache {
    entries: Option<Cache<String, HeaderValue>>,
    /// Bumped by every delete. A lookup that started before a delete does not cache what it
    /// read, or it could put back the entry the delete just removed.
    deletes: Arc<AtomicU64>,
}

/// Taken before asking the store; see [`RedirectCache::insert`].
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

impl RedirectCache {
    /// `max_bytes` 0 turns the cache off.
    pub fn new(max_bytes: u64, ttl: Duration) -> Self {
        let entries = (max_bytes > 0 && !ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|slug: &String, url: &HeaderValue| {
                    u32::try_from(slug.len() + url.len() + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
                })
                .time_to_live(ttl)
                .build()
        });
        Self {
            entries,
            deletes: Arc::default(),
        }
    }

    pub fn get(&self, slug: &str) -> Option<HeaderValue> {
        self.entries.as_ref()?.get(slug)
    }

    pub fn ticket(&self) -> Ticket {
        Ticket(self.deletes.load(Ordering::SeqCst))
    }

    /// Caches what the store said, unless a delete happened since `ticket` was taken.
    pub fn insert(&self, ticket: Ticket, slug: &str, location: HeaderValue) {
        let Some(entries) = &self.entries else {
            return;
        };
        if self.deletes.load(Ordering::SeqCst) == ticket.0 {
            entries.insert(slug.to_owned(), location);
        }
    }

    pub fn invalidate(&self, slug: &str) {
        self.deletes.fetch_add(1, Ordering::SeqCst);
        if let Some(entries) = &self.entries {
            entries.invalidate(slug);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn url(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    #[test]
    fn a_delete_removes_the_entry_and_wins_over_a_lookup_in_flight() {
        let cache = RedirectCache::new(1 << 20, Duration::from_secs(60));
        let t = cache.ticket();
        cache.insert(t, "abc", url("https://a.example/"));
        assert_eq!(cache.get("abc"), Some(url("https://a.example/")));
        cache.invalidate("abc");
        assert_eq!(cache.get("abc"), None);
        // A lookup that read the store before the delete must not put the URL back.
        let before = cache.ticket();
        cache.invalidate("xyz");
        cache.insert(before, "xyz", url("https://stale.example/"));
        assert_eq!(cache.get("xyz"), None);
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let cache = RedirectCache::new(1 << 20, Duration::from_millis(50));
        cache.insert(cache.ticket(), "abc", url("https://a.example/"));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while cache.get("abc").is_some() {
            assert!(std::time::Instant::now() < deadline, "entry never expired");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn memory_is_bounded() {
        let cache = RedirectCache::new(64 * 1024, Duration::from_secs(60));
        let long =
            HeaderValue::from_str(&format!("https://a.example/{}", "x".repeat(2000))).unwrap();
        for i in 0..1000 {
            cache.insert(cache.ticket(), &format!("slug{i}"), long.clone());
        }
        let entries = cache.entries.as_ref().unwrap();
        entries.run_pending_tasks();
        assert!(
            entries.weighted_size() <= 64 * 1024,
            "{}",
            entries.weighted_size()
        );
        assert!(entries.entry_count() < 40, "{}", entries.entry_count());
    }

    #[test]
    fn off_caches_nothing() {
        let cache = RedirectCache::new(0, Duration::from_secs(60));
        cache.insert(cache.ticket(), "abc", url("https://a.example/"));
        assert_eq!(cache.get("abc"), None);
    }
}
