//! The durable store behind the API. `--store` chooses it: a SQLite file (the embedded
//! default: nothing to run, one host) or a PostgreSQL URL (for real clusters, where pods share
//! no filesystem). Both keep the same promises: a create is committed before its 201, the
//! slug is unique across every process, and `check` (behind `/readyz`) fails while the store
//! cannot take a write. Creates are group-committed (`batch`) unless turned off.

mod batch;
mod location;
mod postgres;
mod sqlite;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

pub use location::{Location, LocationError, StoreArg};

use self::batch::Batcher;
use self::postgres::Postgres;
use self::sqlite::Sqlite;

/// Four SQLite connections keep both cores busy while one waits on a disk sync.
const SQLITE_CONNECTIONS: usize = 4;
/// Network round trips overlap, so PostgreSQL gets a few more.
const POSTGRES_CONNECTIONS: usize = 8;
/// SQLite has one writer at a time anyway; PostgreSQL commits two batches in parallel, so a
/// batch fills while the previous one waits for the server's fsync.
const SQLITE_WRITERS: usize = 1;
const POSTGRES_WRITERS: usize = 2;

/// The server's own message when there is one (`tokio_postgres::Error` alone prints just
/// "db error", which tells an operator nothing about a wrong database or role).
fn postgres_detail(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("slug {0:?} is already taken")]
    SlugTaken(String),
    #[error("store file {0} is gone")]
    Missing(PathBuf),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {}", postgres_detail(.0))]
    Postgres(tokio_postgres::Error),
    /// The database cannot serve now (unreachable, restarting, read-only, schema not set up
    /// yet): answered 503, and `/readyz` says so.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The group commit that held this request failed.
    #[error("group commit failed: {0}")]
    BatchFailed(String),
    #[error("store worker failed: {0}")]
    Worker(String),
    #[error("store is closed")]
    Closed,
}

impl StoreError {
    /// The error each request of a failed batch gets (the original is not `Clone`); keeps
    /// the class that decides the HTTP status.
    fn for_each_request(&self) -> Self {
        match self {
            Self::Unavailable(m) => Self::Unavailable(m.clone()),
            Self::Missing(p) => Self::Missing(p.clone()),
            other => Self::BatchFailed(other.to_string()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlRecord {
    pub slug: String,
    pub url: String,
    pub hits: u64,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUrl {
    pub slug: String,
    pub url: String,
}

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(Sqlite),
    Postgres(Postgres),
}

impl Backend {
    async fn insert_batch(&self, rows: Vec<NewUrl>) -> Result<Vec<bool>, StoreError> {
        match self {
            Self::Sqlite(s) => s.insert_batch(rows).await,
            Self::Postgres(p) => p.insert_batch(rows).await,
        }
    }
}

#[derive(Debug)]
pub struct Store {
    backend: Backend,
    /// `None`: one commit per create (`--group-commit=false`, the benchmark's baseline).
    batcher: Option<Batcher>,
    location: Location,
}

impl Store {
    /// Opens the store. SQLite fails here if the file cannot be opened; PostgreSQL only if
    /// the pool cannot be built, and otherwise retries an unreachable server in the
    /// background (see `postgres`).
    pub async fn open(location: Location, group_commit: bool) -> Result<Arc<Self>, StoreError> {
        let (backend, writers) = match &location {
            Location::Sqlite(path) => {
                let path = path.clone();
                // Opening may wait for other processes on the same file: off the runtime.
                let s =
                    tokio::task::spawn_blocking(move || Sqlite::open(&path, SQLITE_CONNECTIONS))
                        .await
                        .map_err(|e| StoreError::Worker(e.to_string()))??;
                (Backend::Sqlite(s), SQLITE_WRITERS)
            }
            Location::Postgres(config) => {
                let p = Postgres::open((**config).clone(), POSTGRES_CONNECTIONS).await?;
                (Backend::Postgres(p), POSTGRES_WRITERS)
            }
        };
        let batcher = group_commit.then(|| {
            let backend = backend.clone();
            Batcher::spawn(writers, move |rows| {
                let backend = backend.clone();
                async move { backend.insert_batch(rows).await }
            })
        });
        Ok(Arc::new(Self {
            backend,
            batcher,
            location,
        }))
    }

    /// Where the store is, safe to log (no password).
    pub fn location(&self) -> &Location {
        &self.location
    }

    pub fn group_commit(&self) -> bool {
        self.batcher.is_some()
    }

    /// Inserts a new short URL; returns once it is committed to disk.
    pub async fn insert(self: &Arc<Self>, slug: String, url: String) -> Result<(), StoreError> {
        let row = NewUrl { slug, url };
        if let Some(batcher) = &self.batcher {
            return batcher.insert(row).await;
        }
        let slug = row.slug.clone();
        match self.backend.insert_batch(vec![row]).await?.first() {
            Some(true) => Ok(()),
            Some(false) => Err(StoreError::SlugTaken(slug)),
            None => Err(StoreError::Worker("insert reported no outcome".into())),
        }
    }

    pub async fn resolve(self: &Arc<Self>, slug: String) -> Result<Option<String>, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.resolve(slug).await,
            Backend::Postgres(p) => p.resolve(slug).await,
        }
    }

    pub async fn get(self: &Arc<Self>, slug: String) -> Result<Option<UrlRecord>, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.get(slug).await,
            Backend::Postgres(p) => p.get(slug).await,
        }
    }

    /// Returns whether a row was deleted.
    pub async fn delete(self: &Arc<Self>, slug: String) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.delete(slug).await,
            Backend::Postgres(p) => p.delete(slug).await,
        }
    }

    pub async fn count(self: &Arc<Self>) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.count().await,
            Backend::Postgres(p) => p.count().await,
        }
    }

    /// Adds counted hits in one transaction.
    pub async fn add_hits(self: &Arc<Self>, hits: HashMap<String, u64>) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.add_hits(hits).await,
            Backend::Postgres(p) => p.add_hits(hits).await,
        }
    }

    /// The readiness check: the store answers and takes a real write, through the same pool
    /// requests use.
    pub async fn check(self: &Arc<Self>) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.check().await,
            Backend::Postgres(p) => p.check().await,
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
