//! Group commit for creates: concurrent inserts wait in a queue, and one writer commits
//! everything queued in one transaction (one fsync), then answers each request. A request is
//! answered only after the commit that contains it, so "201 means durable" holds; a failed
//! commit fails every request in it, and the unique slug key still decides who gets a slug
//! (a duplicate within a batch loses like a duplicate across batches).
//!
//! While one batch commits, the next one fills: the batch size follows the load by itself,
//! with no timer adding latency when the service is idle.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

use super::{NewUrl, StoreError};

/// Upper bound of one transaction, so one commit cannot grow without limit.
pub const MAX_BATCH: usize = 512;

/// Requests waiting beyond this make callers wait to enqueue (back-pressure).
const QUEUE: usize = 4 * MAX_BATCH;

type Reply = oneshot::Sender<Result<(), StoreError>>;

#[derive(Debug, Clone)]
pub struct Batcher {
    queue: mpsc::Sender<(NewUrl, Reply)>,
}

impl Batcher {
    /// Starts `writers` tasks that each take what is queued (at most `MAX_BATCH`) and pass
    /// it to `commit`, which returns per row whether it was inserted (`false`: slug taken).
    pub fn spawn<C, F>(writers: usize, commit: C) -> Self
    where
        C: Fn(Vec<NewUrl>) -> F + Send + Sync + 'static,
        F: Future<Output = Result<Vec<bool>, StoreError>> + Send + 'static,
    {
        let (queue, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let commit = Arc::new(commit);
        for _ in 0..writers.max(1) {
            let (rx, commit) = (Arc::clone(&rx), Arc::clone(&commit));
            tokio::spawn(async move {
                let mut taken = Vec::with_capacity(MAX_BATCH);
                loop {
                    // One writer waits for work at a time; the others are committing.
                    if rx.lock().await.recv_many(&mut taken, MAX_BATCH).await == 0 {
                        return; // every sender is gone: the store was dropped
                    }
                    let (rows, replies): (Vec<NewUrl>, Vec<Reply>) = taken.drain(..).unzip();
                    answer(&rows, replies, commit(rows.clone()).await);
                }
            });
        }
        Self { queue }
    }

    /// Queues the row and waits for the commit that contains it.
    pub async fn insert(&self, row: NewUrl) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((row, reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer
            .await
            .map_err(|_| StoreError::Worker("the batch writer stopped".into()))?
    }
}

/// Answers each request of a batch from the outcome of its commit. A caller that has gone
/// away (timed out) is skipped: its row is committed all the same, as it would have been
/// without batching.
fn answer(rows: &[NewUrl], replies: Vec<Reply>, outcome: Result<Vec<bool>, StoreError>) {
    match outcome {
        Ok(inserted) if inserted.len() == rows.len() => {
            for ((row, reply), ok) in rows.iter().zip(replies).zip(inserted) {
                let _ = reply.send(if ok {
                    Ok(())
                } else {
                    Err(StoreError::SlugTaken(row.slug.clone()))
                });
            }
        }
        Ok(inserted) => {
            let e = StoreError::Worker(format!(
                "batch of {} rows reported {} outcomes",
                rows.len(),
                inserted.len()
            ));
            fail_all(replies, &e);
        }
        Err(e) => fail_all(replies, &e),
    }
}

fn fail_all(replies: Vec<Reply>, e: &StoreError) {
    tracing::warn!(error = %e, rows = replies.len(), "group commit failed");
    for reply in replies {
        let _ = reply.send(Err(e.for_each_request()));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn row(slug: &str) -> NewUrl {
        NewUrl {
            slug: slug.into(),
            url: format!("https://example.com/{slug}"),
        }
    }

    /// A fake commit that holds the first batch until released (so requests pile up behind
    /// it) and decides free slugs like a unique key does.
    #[tokio::test]
    async fn waiting_requests_share_one_commit_and_duplicates_lose() {
        let commits = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(AtomicUsize::new(0));
        let (release, gate) = tokio::sync::watch::channel(false);
        let taken = Arc::new(std::sync::Mutex::new(HashSet::<String>::new()));
        let b = {
            let (commits, held, taken) =
                (Arc::clone(&commits), Arc::clone(&held), Arc::clone(&taken));
            Batcher::spawn(1, move |rows: Vec<NewUrl>| {
                let (commits, held, taken, mut gate) = (
                    Arc::clone(&commits),
                    Arc::clone(&held),
                    Arc::clone(&taken),
                    gate.clone(),
                );
                async move {
                    held.fetch_add(rows.len(), Ordering::SeqCst);
                    gate.wait_for(|open| *open).await.unwrap();
                    commits.fetch_add(1, Ordering::SeqCst);
                    let mut taken = taken.lock().unwrap();
                    Ok(rows.iter().map(|r| taken.insert(r.slug.clone())).collect())
                }
            })
        };
        let mut tasks = tokio::task::JoinSet::new();
        for slug in ["a", "b", "c", "b", "d"] {
            let b = b.clone();
            tasks.spawn(async move { (slug, b.insert(row(slug)).await) });
        }
        // Every request is either held by the writer or queued before anything commits.
        while held.load(Ordering::SeqCst) + (QUEUE - b.queue.capacity()) < 5 {
            tokio::task::yield_now().await;
        }
        release.send(true).unwrap();
        let mut results: Vec<(&str, bool)> = tasks
            .join_all()
            .await
            .into_iter()
            .map(|(s, r)| {
                assert!(r.is_ok() || matches!(r, Err(StoreError::SlugTaken(ref t)) if t == s));
                (s, r.is_ok())
            })
            .collect();
        results.sort_unstable();
        assert_eq!(
            results,
            [
                ("a", true),
                ("b", false),
                ("b", true),
                ("c", true),
                ("d", true)
            ]
        );
        assert!(
            commits.load(Ordering::SeqCst) <= 2,
            "the held batch, then one commit for everything that queued behind it"
        );
    }

    #[tokio::test]
    async fn a_failed_commit_fails_every_request_in_it() {
        let b = Batcher::spawn(1, |_rows: Vec<NewUrl>| async {
            Err(StoreError::Unavailable("disk full".into()))
        });
        let (x, y) = tokio::join!(b.insert(row("x")), b.insert(row("y")));
        for r in [x, y] {
            assert!(
                matches!(r, Err(StoreError::Unavailable(ref m)) if m == "disk full"),
                "{r:?}"
            );
        }
    }
}
