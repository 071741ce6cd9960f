//! Per-object backoff for failing reconciles: exponential with jitter, capped, and reset
//! by the object's next successful reconcile.
//!
//! A fixed retry interval turns an API server outage into a steady load of every failing
//! release times the retry rate, all in step; doubling per object with jitter spreads the
//! retries out and lets an outage cost a few requests per release, while a release that
//! fails once is retried within seconds.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// First retry after 2 to 4 s.
pub const MIN_DELAY: Duration = Duration::from_secs(2);
/// Base delays stop doubling here; jitter adds up to as much again, so every delay is
/// under [`MAX_DELAY`].
const MAX_BASE_DELAY: Duration = Duration::from_secs(150);
/// No retry waits longer than this (5 minutes).
pub const MAX_DELAY: Duration = Duration::from_secs(300);
/// Objects tracked at most; beyond it the map is cleared (every object starts over at
/// [`MIN_DELAY`]), so objects deleted while failing cannot grow it without bound.
const MAX_TRACKED: usize = 10_000;

/// The schedule: 2 s, 4 s, 8 s ... doubling up to 150 s, each plus a random 0-100 %.
pub fn schedule(seed: Option<u64>) -> ExponentialBackoff {
    let builder = ExponentialBuilder::default()
        .with_min_delay(MIN_DELAY)
        .with_max_delay(MAX_BASE_DELAY)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    match seed {
        Some(seed) => builder.with_jitter_seed(seed).build(),
        None => builder.build(),
    }
}

/// Backoff state per object (keyed by its `ObjectRef`).
pub struct Backoffs<K> {
    state: Mutex<HashMap<K, ExponentialBackoff>>,
}

impl<K> Default for Backoffs<K> {
    fn default() -> Self {
        Self {
            state: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq> Backoffs<K> {
    /// The wait before retrying `key` after one more failure.
    pub fn next(&self, key: K) -> Duration {
        // A poisoned lock only means another reconcile panicked mid-update; the map is
        // still a valid map.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.len() >= MAX_TRACKED && !state.contains_key(&key) {
            state.clear();
        }
        let delay = state
            .entry(key)
            .or_insert_with(|| schedule(None))
            .next()
            .unwrap_or(MAX_DELAY);
        delay.min(MAX_DELAY)
    }

    /// `key` reconciled successfully: its next failure starts over at [`MIN_DELAY`].
    pub fn reset(&self, key: &K) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.remove(key);
    }

    pub fn tracked(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_with_jitter_up_to_the_cap() {
        for seed in [1u64, 42, 0xdead_beef, u64::MAX] {
            let delays: Vec<Duration> = schedule(Some(seed)).take(20).collect();
            // (retry, lowest, highest exclusive): base 2^n s capped at 150 s, plus < 100 %.
            let bases = [2u64, 4, 8, 16, 32, 64, 128, 150, 150, 150];
            for (i, base) in bases.iter().enumerate() {
                let d = delays[i];
                let lo = Duration::from_secs(*base);
                assert!(
                    d >= lo && d < lo * 2,
                    "seed {seed}: retry {} waited {d:?}, expected [{lo:?}, {:?})",
                    i + 1,
                    lo * 2
                );
            }
            assert!(delays.iter().all(|d| *d < MAX_DELAY), "{delays:?}");
        }
    }

    #[test]
    fn jitter_spreads_objects_that_fail_together() {
        // Many releases failing in the same instant do not retry in step.
        let firsts: std::collections::BTreeSet<u128> = (0..50u64)
            .map(|seed| {
                schedule(Some(seed))
                    .next()
                    .map(|d| d.as_millis())
                    .unwrap_or_default()
            })
            .collect();
        assert!(firsts.len() > 40, "{firsts:?}");
    }

    #[test]
    fn per_object_state_resets_on_success() {
        let backoffs = Backoffs::<&str>::default();
        let a1 = backoffs.next("a");
        let a2 = backoffs.next("a");
        let a3 = backoffs.next("a");
        assert!(a1 >= MIN_DELAY && a1 < 2 * MIN_DELAY, "{a1:?}");
        assert!(a2 >= 2 * MIN_DELAY && a2 < 4 * MIN_DELAY, "{a2:?}");
        assert!(a3 >= 4 * MIN_DELAY && a3 < 8 * MIN_DELAY, "{a3:?}");
        // Another object is not slowed by a's failures.
        let b1 = backoffs.next("b");
        assert!(b1 < 2 * MIN_DELAY, "{b1:?}");
        assert_eq!(backoffs.tracked(), 2);
        backoffs.reset(&"a");
        assert_eq!(backoffs.tracked(), 1);
        let again = backoffs.next("a");
        assert!(again < 2 * MIN_DELAY, "{again:?}");
    }

    #[test]
    fn the_map_is_bounded() {
        let backoffs = Backoffs::<usize>::default();
        for key in 0..MAX_TRACKED + 5 {
            backoffs.next(key);
        }
        assert!(backoffs.tracked() <= MAX_TRACKED);
    }
}
