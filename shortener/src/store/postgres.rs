//! The PostgreSQL store, for real clusters where pods share no filesystem: tokio-postgres
//! (pure Rust, no libpq or OpenSSL, so the static image keeps working) behind a deadpool pool.
//!
//! The pool never holds the process hostage: a dead connection is dropped when it is next
//! taken (and a new one is made), so after a database restart the store recovers by itself;
//! while the database is unreachable every call fails fast as [`StoreError::Unavailable`]
//! and `/readyz` answers 503. PostgreSQL's default `synchronous_commit = on` means a
//! committed insert is on the server's disk before the 201.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use super::{NewUrl, StoreError, UrlRecord};

/// Bounds every wait on the database, so a request fails (503) rather than hangs while the
/// server is away.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Key of the advisory lock that serialises migrations across replicas starting together
/// ("shorten" in ASCII).
const MIGRATION_LOCK: i64 = 0x0073_686f_7274_656e;

/// The schema, one step per version; `shortener_schema` records how many have run. Append
/// only: a step that has shipped is never edited.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE urls (
         slug       TEXT PRIMARY KEY,
         url        TEXT NOT NULL,
         hits       BIGINT NOT NULL DEFAULT 0,
         created_at TIMESTAMPTZ NOT NULL DEFAULT now()
     )",
    "CREATE TABLE shortener_probe (id INTEGER PRIMARY KEY, at TIMESTAMPTZ NOT NULL)",
];

#[derive(Debug, Clone)]
pub struct Postgres {
    pool: Pool,
    schema: Arc<Schema>,
}

/// Whether the migrations have run, and if not, why not (for `/readyz`).
#[derive(Debug, Default)]
struct Schema {
    ready: AtomicBool,
    last_error: Mutex<String>,
}

impl Postgres {
    /// Builds the pool and runs the migrations once; if the database is not reachable yet,
    /// keeps retrying in the background while the process serves (unready) instead of
    /// exiting, so a database that starts after the pods is not a crash loop.
    pub async fn open(
        mut config: tokio_postgres::Config,
        connections: usize,
    ) -> Result<Self, StoreError> {
        config
            .connect_timeout(TIMEOUT)
            .application_name("shortener");
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(connections.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(TIMEOUT))
            .create_timeout(Some(TIMEOUT))
            .recycle_timeout(Some(TIMEOUT))
            .build()
            .map_err(|e| StoreError::Worker(e.to_string()))?;
        let this = Self {
            pool,
            schema: Arc::default(),
        };
        if let Err(e) = this.migrate().await {
            tracing::warn!(error = %e, "cannot set up the schema yet; retrying in the background");
            let retry = this.clone();
            tokio::spawn(async move {
                let mut pause = Duration::from_millis(200);
                loop {
                    tokio::time::sleep(pause).await;
                    match retry.migrate().await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot set up the schema yet; retrying")
                        }
                    }
                    pause = (pause * 2).min(TIMEOUT);
                }
            });
        }
        Ok(this)
    }

    /// Runs the missing migrations in one transaction under an advisory lock: replicas
    /// starting together wait for each other instead of racing on `CREATE TABLE`.
    async fn migrate(&self) -> Result<(), StoreError> {
        let result = async {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS shortener_schema (version INTEGER NOT NULL)",
            )
            .await?;
            let done: i32 = tx
                .query_one(
                    "SELECT coalesce(max(version), 0) FROM shortener_schema",
                    &[],
                )
                .await?
                .get(0);
            let done = usize::try_from(done).unwrap_or(0);
            for (i, step) in MIGRATIONS.iter().enumerate().skip(done) {
                tx.batch_execute(step).await?;
                let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
                tx.execute(
                    "INSERT INTO shortener_schema (version) VALUES ($1)",
                    &[&version],
                )
                .await?;
            }
            tx.commit().await?;
            Ok::<_, StoreError>(MIGRATIONS.len().saturating_sub(done))
        }
        .await;
        match result {
            Ok(applied) => {
                self.schema.ready.store(true, Ordering::SeqCst);
                tracing::info!(applied, version = MIGRATIONS.len(), "schema ready");
                Ok(())
            }
            Err(e) => {
                *self
                    .schema
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = e.to_string();
                Err(e)
            }
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        if !self.schema.ready.load(Ordering::SeqCst) {
            let why = self
                .schema
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            return Err(StoreError::Unavailable(format!(
                "schema not set up yet: {why}"
            )));
        }
        Ok(self.pool.get().await?)
    }

    /// One statement, so one transaction and one commit for the whole batch; `RETURNING`
    /// says which slugs were free.
    pub async fn insert_batch(&self, rows: Vec<NewUrl>) -> Result<Vec<bool>, StoreError> {
        let client = self.client().await?;
        let (slugs, urls): (Vec<&str>, Vec<&str>) = rows
            .iter()
            .map(|r| (r.slug.as_str(), r.url.as_str()))
            .unzip();
        let stmt = client
            .prepare_cached(
                "INSERT INTO urls (slug, url)
                 SELECT * FROM unnest($1::text[], $2::text[])
                 ON CONFLICT (slug) DO NOTHING RETURNING slug",
            )
            .await?;
        let mut free: HashSet<String> = client
            .query(&stmt, &[&slugs, &urls])
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        // A slug twice in one batch was inserted once: the first request gets it.
        Ok(rows.iter().map(|r| free.remove(&r.slug)).collect())
    }

    pub async fn resolve(&self, slug: String) -> Result<Option<String>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT url FROM urls WHERE slug = $1")
            .await?;
        Ok(client.query_opt(&stmt, &[&slug]).await?.map(|r| r.get(0)))
    }

    pub async fn get(&self, slug: String) -> Result<Option<UrlRecord>, StoreError> {
        let client = self.client().await?;
        // The same created_at shape as the SQLite store's.
        let stmt = client
            .prepare_cached(
                r#"SELECT slug, url, hits,
                          to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
                   FROM urls WHERE slug = $1"#,
            )
            .await?;
        Ok(client
            .query_opt(&stmt, &[&slug])
            .await?
            .map(|row| UrlRecord {
                slug: row.get(0),
                url: row.get(1),
                hits: u64::try_from(row.get::<_, i64>(2)).unwrap_or(0),
                created_at: row.get(3),
            }))
    }

    pub async fn delete(&self, slug: String) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("DELETE FROM urls WHERE slug = $1")
            .await?;
        Ok(client.execute(&stmt, &[&slug]).await? > 0)
    }

    pub async fn count(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let n: i64 = client
            .query_one("SELECT count(*) FROM urls", &[])
            .await?
            .get(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    pub async fn add_hits(&self, hits: HashMap<String, u64>) -> Result<(), StoreError> {
        let client = self.client().await?;
        // Sorted, so two replicas flushing the same slugs lock rows in the same order.
        let mut hits: Vec<(String, i64)> = hits
            .into_iter()
            .map(|(s, n)| (s, i64::try_from(n).unwrap_or(i64::MAX)))
            .collect();
        hits.sort_unstable();
        let (slugs, counts): (Vec<String>, Vec<i64>) = hits.into_iter().unzip();
        let stmt = client
            .prepare_cached(
                "UPDATE urls AS u SET hits = u.hits + v.n
                 FROM unnest($1::text[], $2::bigint[]) AS v(slug, n)
                 WHERE u.slug = v.slug",
            )
            .await?;
        client.execute(&stmt, &[&slugs, &counts]).await?;
        Ok(())
    }

    /// The readiness check: a real write commits (a read-only database, e.g. a standby after
    /// a failover, or a full disk fails here).
    pub async fn check(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO shortener_probe (id, at) VALUES (1, now())
                 ON CONFLICT (id) DO UPDATE SET at = excluded.at",
            )
            .await?;
        client.execute(&stmt, &[]).await?;
        Ok(())
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.code().map(tokio_postgres::error::SqlState::code) {
            // Connection exceptions (08), server shutting down or starting (57), out of
            // resources such as disk or connections (53), a read-only server (25006): the
            // database cannot serve now, which is not a bug in the request.
            Some(code)
                if code.starts_with("08")
                    || code.starts_with("57")
                    || code.starts_with("53")
                    || code == "25006" =>
            {
                Self::Unavailable(e.to_string())
            }
            Some(_) => Self::Postgres(e),
            // No SQLSTATE: the connection broke or timed out.
            None => Self::Unavailable(e.to_string()),
        }
    }
}

impl From<PoolError> for StoreError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) => e.into(),
            other => Self::Unavailable(other.to_string()),
        }
    }
}
