//! The embedded store: one SQLite file in WAL mode, shared safely by several processes on one
//! host (blue-green runs two revisions on the same file).
//!
//! SQLite calls block, so each runs on tokio's blocking pool with a connection taken from a
//! small pool. `synchronous=FULL` makes every commit reach the disk before the call returns,
//! which is what lets the API answer 201 only for a URL that survives a SIGKILL.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};
use tokio::sync::Semaphore;

use super::{NewUrl, StoreError, UrlRecord};

/// How long a statement waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

#[derive(Debug, Clone)]
pub struct Sqlite {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl Sqlite {
    /// Opens (creating if needed) the store and its schema, and checks it answers a query,
    /// so a bad path fails at start with a clear message.
    ///
    /// Blocks for at most [`BUSY_TIMEOUT`] while other processes open the same file.
    pub fn open(path: &Path, connections: usize) -> Result<Self, StoreError> {
        let deadline = Instant::now() + BUSY_TIMEOUT;
        let mut idle = Vec::with_capacity(connections);
        for _ in 0..connections.max(1) {
            idle.push(retry_while_locked(deadline, || open_connection(path))?);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                idle: Mutex::new(idle),
                permits: Semaphore::new(connections.max(1)),
            }),
        })
    }

    /// Runs `f` with a pooled connection on the blocking pool.
    async fn with_conn<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let _permit = self
            .inner
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let taken = self
            .inner
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let inner = Arc::clone(&self.inner);
        let (conn, result) = tokio::task::spawn_blocking(move || {
            // A connection lost to a panicking closure is replaced here rather than shrinking
            // the pool for good.
            let mut conn = match taken {
                Some(c) => c,
                None => open_connection(&inner.path)?,
            };
            let result = f(&mut conn);
            Ok::<_, StoreError>((conn, result))
        })
        .await
        .map_err(|e| StoreError::Worker(e.to_string()))??;
        self.inner
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
        result
    }

    /// Inserts the rows in one transaction, one commit (one fsync): `true` for each row
    /// inserted, `false` for a slug already taken (before, or earlier in the same batch).
    pub async fn insert_batch(&self, rows: Vec<NewUrl>) -> Result<Vec<bool>, StoreError> {
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut inserted = Vec::with_capacity(rows.len());
            {
                let mut stmt = tx.prepare_cached(&format!(
                    "INSERT INTO urls (slug, url, created_at) VALUES (?1, ?2, {NOW})
                     ON CONFLICT (slug) DO NOTHING"
                ))?;
                for row in &rows {
                    inserted.push(stmt.execute(params![row.slug, row.url])? == 1);
                }
            }
            tx.commit()?;
            Ok(inserted)
        })
        .await
    }

    pub async fn resolve(&self, slug: String) -> Result<Option<String>, StoreError> {
        self.with_conn(move |conn| {
            let url = conn
                .prepare_cached("SELECT url FROM urls WHERE slug = ?1")?
                .query_row([slug], |row| row.get(0))
                .optional()?;
            Ok(url)
        })
        .await
    }

    pub async fn get(&self, slug: String) -> Result<Option<UrlRecord>, StoreError> {
        self.with_conn(move |conn| {
            let record = conn
                .prepare_cached("SELECT slug, url, hits, created_at FROM urls WHERE slug = ?1")?
                .query_row([slug], |row| {
                    Ok(UrlRecord {
                        slug: row.get(0)?,
                        url: row.get(1)?,
                        hits: u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
                        created_at: row.get(3)?,
                    })
                })
                .optional()?;
            Ok(record)
        })
        .await
    }

    pub async fn delete(&self, slug: String) -> Result<bool, StoreError> {
        self.with_conn(
            move |conn| Ok(conn.execute("DELETE FROM urls WHERE slug = ?1", [slug])? > 0),
        )
        .await
    }

    pub async fn count(&self) -> Result<u64, StoreError> {
        self.with_conn(|conn| {
            let n: i64 = conn.query_row("SELECT count(*) FROM urls", [], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    pub async fn add_hits(&self, hits: HashMap<String, u64>) -> Result<(), StoreError> {
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut stmt =
                    tx.prepare_cached("UPDATE urls SET hits = hits + ?1 WHERE slug = ?2")?;
                for (slug, n) in &hits {
                    stmt.execute(params![i64::try_from(*n).unwrap_or(i64::MAX), slug])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// The readiness check: the file is still where other processes will look for it, and a
    /// real write commits through the same pool requests use (a full disk or a read-only
    /// file fails here, not only on the next create).
    pub async fn check(&self) -> Result<(), StoreError> {
        let path = self.inner.path.clone();
        self.with_conn(move |conn| {
            if !path.exists() {
                return Err(StoreError::Missing(path));
            }
            conn.query_row("SELECT EXISTS (SELECT 1 FROM urls)", [], |r| {
                r.get::<_, bool>(0)
            })?;
            conn.prepare_cached(&format!(
                "INSERT INTO shortener_probe (id, at) VALUES (1, {NOW})
                 ON CONFLICT (id) DO UPDATE SET at = excluded.at"
            ))?
            .execute([])?;
            Ok(())
        })
        .await
    }
}

/// Runs `f` again while SQLite says the file is busy or locked, until `deadline`.
///
/// The busy timeout covers ordinary statements, but SQLite answers "database is locked" at
/// once, without calling the busy handler, to a connection that finds another one creating the
/// file or switching it to WAL. Replicas starting together on a new store hit exactly that.
fn retry_while_locked<T>(
    deadline: Instant,
    mut f: impl FnMut() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut pause = Duration::from_millis(5);
    loop {
        match f() {
            Err(StoreError::Sqlite(e)) if is_locked(&e) && Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

fn is_locked(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Opens one connection: WAL, durable commits, and the schema (idempotent; SQLite runs DDL
/// under its write lock, so replicas creating it together are safe).
fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    // busy_timeout first: switching to WAL takes a lock another process may hold.
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Worker(format!(
            "could not switch {} to WAL (journal_mode is {mode})",
            path.display()
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS urls (
             slug       TEXT PRIMARY KEY NOT NULL,
             url        TEXT NOT NULL,
             hits       INTEGER NOT NULL DEFAULT 0,
             created_at TEXT NOT NULL
         );
         CREATE TABLE IF NOT EXISTS shortener_probe (
             id INTEGER PRIMARY KEY CHECK (id = 1),
             at TEXT NOT NULL
         );",
    )?;
    Ok(conn)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn check_fails_when_the_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = Sqlite::open(&path, 1).unwrap();
        store.check().await.unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(store.check().await, Err(StoreError::Missing(_))));
    }

    /// Blue-green starts several replicas at once on a store that may not exist yet; SQLite
    /// answers "database is locked" to some of them without waiting (its busy handler is
    /// skipped when creating the file and switching it to WAL), which once crashed healthy
    /// pods on start. Every opener must get through.
    #[test]
    fn many_processes_opening_a_new_store_at_once_all_succeed() {
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.db");
            let start = Arc::new(std::sync::Barrier::new(6));
            let openers: Vec<_> = (0..6)
                .map(|_| {
                    let (path, start) = (path.clone(), Arc::clone(&start));
                    std::thread::spawn(move || {
                        start.wait();
                        Sqlite::open(&path, 2).map(|_| ())
                    })
                })
                .collect();
            for opener in openers {
                let opened = opener.join().unwrap();
                assert!(opened.is_ok(), "round {round}: {opened:?}");
            }
        }
    }

    #[test]
    fn open_fails_clearly_for_a_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let err = Sqlite::open(&dir.path().join("no/such/dir/s.db"), 1).unwrap_err();
        assert!(err.to_string().contains("sqlite"), "{err}");
    }
}
