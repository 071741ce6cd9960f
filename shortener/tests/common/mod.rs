//! Runs the real `shortener` binary for black-box tests.
// Each test file uses a different part of this module.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const DEADLINE: Duration = Duration::from_secs(20);

/// Env variables a developer's shell might set; tests must not inherit them.
const CONTRACT_ENV: &[&str] = &[
    "SHORTENER_HOST",
    "SHORTENER_PORT",
    "SHORTENER_STORE",
    "SHORTENER_PUBLIC_URL",
    "SHORTENER_ALLOWED_HOSTS",
    "SHORTENER_LOG_FORMAT",
    "SHORTENER_FAULT",
    "SHORTENER_VERSION",
    "SHORTENER_REQUEST_TIMEOUT",
    "SHORTENER_SHUTDOWN_DELAY",
    "SHORTENER_API_TOKENS",
    "SHORTENER_API_TOKENS_FILE",
    "SHORTENER_OPERATOR_TOKEN",
    "SHORTENER_ALLOW_ANONYMOUS_WRITES",
    "SHORTENER_WRITE_RATE_LIMIT",
    "SHORTENER_WRITE_BURST",
    "SHORTENER_HEADER_READ_TIMEOUT",
    "SHORTENER_BODY_READ_TIMEOUT",
    "SHORTENER_IDLE_TIMEOUT",
    "SHORTENER_MAX_CONNECTIONS",
    "SHORTENER_REDIRECT_CACHE_TTL",
    "SHORTENER_REDIRECT_CACHE_MIB",
    "SHORTENER_GROUP_COMMIT",
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGDATABASE",
    "RUST_LOG",
];

/// The token every test server accepts and [`client`] sends.
pub const TOKEN: &str = "test-token-0123456789abcdef";

/// Defaults for test servers, before each test's own env (which may override them): a
/// token, and no write rate limit (tests create faster than a user would).
const TEST_DEFAULTS: &[(&str, &str)] = &[
    ("SHORTENER_API_TOKENS", TOKEN),
    ("SHORTENER_WRITE_RATE_LIMIT", "0"),
];

pub struct Server {
    child: Child,
    pub base: String,
    logs: Arc<Mutex<Vec<String>>>,
}

/// Spawns the binary and returns once it has exited or logged `needle`.
fn spawn(
    store: &TestStore,
    env: &[(&str, &str)],
    args: &[&str],
) -> (Child, Arc<Mutex<Vec<String>>>) {
    spawn_via(&[], store, env, args)
}

/// Spawns the binary, run by `wrapper` (e.g. `unshare ...`) when that is not empty.
fn spawn_via(
    wrapper: &[&str],
    store: &TestStore,
    env: &[(&str, &str)],
    args: &[&str],
) -> (Child, Arc<Mutex<Vec<String>>>) {
    let bin = env!("CARGO_BIN_EXE_shortener");
    let mut cmd = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    for k in CONTRACT_ENV {
        cmd.env_remove(k);
    }
    cmd.args(["--host", "127.0.0.1", "--port", "0", "--store"])
        .arg(&store.arg)
        .args(args)
        .envs(TEST_DEFAULTS.iter().copied())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn shortener");
    let logs = Arc::new(Mutex::new(Vec::new()));
    // Drain both pipes for the whole life of the process, or a full pipe would block it.
    pump(child.stdout.take().expect("stdout"), Arc::clone(&logs));
    pump(child.stderr.take().expect("stderr"), Arc::clone(&logs));
    (child, logs)
}

fn pump(stream: impl Read + Send + 'static, logs: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            logs.lock().unwrap().push(line);
        }
    });
}

impl Server {
    /// Starts a server on a free port and waits until it listens (not until it is ready).
    pub fn start(store: &TestStore, env: &[(&str, &str)]) -> Self {
        Self::start_with_args(store, env, &[])
    }

    pub fn start_with_args(store: &TestStore, env: &[(&str, &str)], args: &[&str]) -> Self {
        Self::wait_listening(spawn(store, env, args))
    }

    /// Starts the binary under `wrapper`, which must end by exec'ing its last argument (the
    /// binary) so that the pid is the server's.
    pub fn start_via(wrapper: &[&str], store: &TestStore, env: &[(&str, &str)]) -> Self {
        Self::wait_listening(spawn_via(wrapper, store, env, &[]))
    }

    fn wait_listening((mut child, logs): (Child, Arc<Mutex<Vec<String>>>)) -> Self {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let addr = logs.lock().unwrap().iter().find_map(|l| listening_addr(l));
            if let Some(addr) = addr {
                return Self {
                    child,
                    base: format!("http://{addr}"),
                    logs,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "shortener exited with {status} before listening:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "shortener did not start listening"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts `n` servers on one store at the same moment (replicas of a new release) and
    /// waits until each listens.
    pub fn start_together(store: &TestStore, n: usize) -> Vec<Self> {
        std::thread::scope(|s| {
            let starting: Vec<_> = (0..n)
                .map(|_| s.spawn(|| Self::start(store, &[])))
                .collect();
            starting.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    /// Starts a server and waits for /readyz to answer 200.
    pub async fn start_ready(store: &TestStore, env: &[(&str, &str)]) -> Self {
        let s = Self::start(store, env);
        s.wait_ready().await;
        s
    }

    pub async fn wait_ready(&self) {
        let c = client();
        let url = format!("{}/readyz", self.base);
        eventually("/readyz answers 200", || async {
            c.get(&url).send().await.is_ok_and(|r| r.status() == 200)
        })
        .await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -TERM failed");
    }

    pub fn sigkill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    pub fn wait_exit(&mut self) -> ExitStatus {
        wait_exit(&mut self.child)
    }
}

/// Spawns the binary without waiting for anything; its output is collected in the logs.
pub fn spawn_bare(store: &TestStore, env: &[(&str, &str)]) -> (Child, Arc<Mutex<Vec<String>>>) {
    spawn(store, env, &[])
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary expecting it to exit by itself; returns its status and output.
pub fn run_to_exit(store: &TestStore, env: &[(&str, &str)]) -> (ExitStatus, String) {
    let (mut child, logs) = spawn(store, env, &[]);
    let status = wait_exit(&mut child);
    // The pump threads may still hold the last lines; wait for the pipes to close.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut out = logs.lock().unwrap().join("\n");
    while out.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        out = logs.lock().unwrap().join("\n");
    }
    (status, out)
}

pub fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "shortener did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn listening_addr(line: &str) -> Option<String> {
    if !line.contains("listening") {
        return None;
    }
    if let Ok(v) = serde_json::from_str::<Value>(line) {
        return v["addr"].as_str().map(str::to_owned);
    }
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .map(str::to_owned)
}

/// A client sending the test servers' [`TOKEN`] with every request.
pub fn client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_str(&format!("Bearer {TOKEN}")).unwrap(),
    );
    client_builder()
        .default_headers(headers)
        .build()
        .expect("client")
}

/// A client without credentials.
pub fn anonymous_client() -> reqwest::Client {
    client_builder().build().expect("client")
}

fn client_builder() -> reqwest::ClientBuilder {
    // The workspace's reqwest brings rustls without a crypto provider (see Cargo.toml).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none())
}

pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a test passes as `--store`. One suite runs against both backends: a fresh SQLite
/// file by default, a fresh PostgreSQL database on the server `SHORTENER_TEST_PG_URL` names
/// (`make test` runs the suite both ways; scripts/test-store-pg.sh).
#[derive(Debug, Clone)]
pub struct TestStore {
    pub arg: String,
    /// The SQLite file, for the tests about SQLite itself (`None` on PostgreSQL).
    pub path: Option<PathBuf>,
}

impl TestStore {
    pub fn raw(arg: &str) -> Self {
        Self {
            arg: arg.to_owned(),
            path: None,
        }
    }

    pub fn sqlite(path: PathBuf) -> Self {
        Self {
            arg: path.display().to_string(),
            path: Some(path),
        }
    }

    /// The SQLite file; panics for a PostgreSQL store (such tests are named `sqlite_*` and
    /// skipped in the PostgreSQL run).
    pub fn sqlite_path(&self) -> &PathBuf {
        self.path.as_ref().expect("a SQLite store")
    }
}

pub fn pg_admin_url() -> Option<String> {
    std::env::var("SHORTENER_TEST_PG_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

pub fn temp_store() -> (tempfile::TempDir, TestStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = match pg_admin_url() {
        Some(admin) => TestStore::raw(&fresh_pg_database(&admin)),
        None => TestStore::sqlite(dir.path().join("shortener.db")),
    };
    (dir, store)
}

/// A SQLite store even in the PostgreSQL run, for tests about SQLite itself.
pub fn temp_sqlite_store() -> (tempfile::TempDir, TestStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = TestStore::sqlite(dir.path().join("shortener.db"));
    (dir, store)
}

/// Creates an empty database on the server `admin` points at and returns its URL. Runs on
/// its own thread and runtime so that sync and async tests can both call it.
pub fn fresh_pg_database(admin: &str) -> String {
    let admin = admin.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                .await
                .expect("connect to SHORTENER_TEST_PG_URL");
            tokio::spawn(conn);
            let name = format!("it_{}", uuid_like());
            client
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .expect("CREATE DATABASE");
            let mut url = url::Url::parse(&admin).expect("SHORTENER_TEST_PG_URL is a URL");
            url.set_path(&name);
            url.to_string()
        })
    })
    .join()
    .expect("create database")
}

/// A lowercase random name part (database names are case-folded).
fn uuid_like() -> String {
    use rand::Rng;
    rand::rng()
        .sample_iter(&rand::distr::Alphanumeric)
        .take(16)
        .map(|c| char::from(c).to_ascii_lowercase())
        .collect()
}

/// POSTs a create request and returns (status, body).
pub async fn create(c: &reqwest::Client, s: &Server, body: Value) -> (u16, Value) {
    let r = c
        .post(s.url("/api/v1/urls"))
        .json(&body)
        .send()
        .await
        .expect("POST /api/v1/urls");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

pub async fn create_ok(c: &reqwest::Client, s: &Server, url: &str, slug: Option<&str>) -> String {
    let mut body = serde_json::json!({ "url": url });
    if let Some(slug) = slug {
        body["slug"] = slug.into();
    }
    let (status, body) = create(c, s, body).await;
    assert_eq!(status, 201, "{body}");
    body["slug"].as_str().expect("slug").to_owned()
}

/// Follows nothing: returns (status, Location) of `GET /{slug}`.
pub async fn resolve(c: &reqwest::Client, s: &Server, slug: &str) -> (u16, Option<String>) {
    let r = c
        .get(s.url(&format!("/{slug}")))
        .send()
        .await
        .expect("GET /{slug}");
    let location = r
        .headers()
        .get("location")
        .map(|v| v.to_str().expect("ascii location").to_owned());
    (r.status().as_u16(), location)
}

/// `GET /api/v1/urls/{slug}`: (status, JSON body; `Null` when the body is not JSON).
pub async fn info(c: &reqwest::Client, s: &Server, slug: &str) -> (u16, Value) {
    let r = c
        .get(s.url(&format!("/api/v1/urls/{slug}")))
        .send()
        .await
        .expect("GET /api/v1/urls/{slug}");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

pub async fn metrics(c: &reqwest::Client, s: &Server) -> String {
    c.get(s.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body")
}

/// The value of one exposition line, e.g. `shortener_urls`.
pub fn metric_value(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}
