//! The store as a deployment relies on it, against the real binary: credentials never
//! logged, several processes creating on one store, and readiness that follows the store
//! (a full disk for SQLite, a database restart under load for PostgreSQL).
// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    Server, TestStore, client, create, eventually, metric_value, metrics, resolve,
    temp_sqlite_store, temp_store,
};
use serde_json::{Value, json};

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

async fn readyz(c: &reqwest::Client, s: &Server) -> (u16, Value) {
    let r = c.get(s.url("/readyz")).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The URL (or PGPASSWORD) carries the database password; it must appear in no log line,
/// no error body and not in `--help` (clap would print env values there). The database is
/// unreachable, so the store's errors are logged too.
#[tokio::test]
async fn the_database_password_reaches_no_log_and_no_response() {
    const SECRET: &str = "hunter2-in-the-url";
    let port = closed_port();
    let c = client();
    for (arg, env) in [
        (
            format!("postgres://app:{SECRET}@127.0.0.1:{port}/links"),
            vec![],
        ),
        (
            format!("postgres://app@127.0.0.1:{port}/links"),
            vec![("PGPASSWORD", SECRET)],
        ),
    ] {
        let s = Server::start(&TestStore::raw(&arg), &env);
        let (status, body) = readyz(&c, &s).await;
        assert_eq!(status, 503, "{body}");
        let (status, body) = create(&c, &s, json!({ "url": "https://example.com/" })).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "store_unavailable");
        eventually("the unreachable database is logged", || async {
            s.logs()
                .iter()
                .any(|l| l.contains("cannot set up the schema"))
        })
        .await;
        let logs = s.logs().join("\n");
        assert!(
            logs.contains(&format!("postgres://app:***@127.0.0.1:{port}/links")),
            "the redacted URL is logged:\n{logs}"
        );
        assert!(!logs.contains(SECRET), "password in the log:\n{logs}");
        assert!(!body.to_string().contains(SECRET));
    }
    let help = Command::new(env!("CARGO_BIN_EXE_shortener"))
        .arg("--help")
        .env(
            "SHORTENER_STORE",
            format!("postgres://app:{SECRET}@127.0.0.1:{port}/links"),
        )
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.status.success() && out.contains("SHORTENER_STORE"),
        "{out}"
    );
    assert!(!out.contains(SECRET), "{out}");
}

/// Three processes on one store, creating concurrently: each custom slug is won by exactly
/// one request (the others get 409), generated slugs never repeat, and every 201 is
/// readable from every process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_from_several_processes_lose_nothing_and_never_share_a_slug() {
    let (_dir, store) = temp_store();
    let servers = Server::start_together(&store, 3);
    for s in &servers {
        s.wait_ready().await;
    }
    let c = client();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..300 {
        let (c, base) = (c.clone(), servers[i % 3].base.clone());
        tasks.spawn(async move {
            let url = format!("https://example.com/p/{i}");
            // Every other request wants one of 50 custom slugs, each wanted three times.
            let mut body = json!({ "url": url });
            if i % 2 == 0 {
                body["slug"] = format!("custom-{}", (i / 2) % 50).into();
            }
            let r = c
                .post(format!("{base}/api/v1/urls"))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            (status, body["slug"].as_str().map(str::to_owned), url)
        });
    }
    let mut created: HashMap<String, String> = HashMap::new();
    let mut conflicts = 0;
    for (status, slug, url) in tasks.join_all().await {
        match status {
            201 => {
                let slug = slug.unwrap();
                assert!(
                    created.insert(slug.clone(), url).is_none(),
                    "{slug} given twice"
                );
            }
            409 => conflicts += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(
        created.len(),
        150 + 50,
        "every generated and one per custom slug"
    );
    assert_eq!(conflicts, 100);
    for s in &servers {
        for (slug, url) in &created {
            assert_eq!(
                resolve(&c, s, slug).await,
                (308, Some(url.clone())),
                "{slug}"
            );
        }
    }
    assert_eq!(
        metric_value(&metrics(&c, &servers[0]).await, "shortener_urls"),
        Some(200.0)
    );
}

/// A full disk makes the SQLite store unwritable: creates fail and `/readyz` says so; once
/// space is freed it is ready again by itself, and nothing acknowledged was lost. The server
/// runs in its own mount namespace on a small tmpfs, filled from outside through
/// /proc/PID/root (needs root, as CI has).
#[tokio::test]
async fn sqlite_full_disk_makes_it_unready_until_space_is_freed() {
    let (dir, _) = temp_sqlite_store();
    let disk = dir.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let store = TestStore::sqlite(disk.join("s.db"));
    let disk_arg = disk.display().to_string();
    let s = Server::start_via(
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            r#"mount -t tmpfs -o size=4m tmpfs "$0" && exec "$@""#,
            disk_arg.as_str(),
        ],
        &store,
        &[],
    );
    s.wait_ready().await;
    let c = client();
    let filler = format!("/proc/{}/root{}/filler", s.pid(), disk.display());
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        // Write until the disk is full (ENOSPC is the expected end).
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let mut acknowledged = Vec::new();
    let mut failed = false;
    for i in 0..2000 {
        let url = format!("https://example.com/full/{i}/{}", "x".repeat(1500));
        let (status, body) = create(&c, &s, json!({ "url": url })).await;
        if status == 201 {
            acknowledged.push((body["slug"].as_str().unwrap().to_owned(), url));
        } else {
            failed = true;
            break;
        }
    }
    assert!(failed, "creates kept succeeding on a full disk");
    eventually("/readyz answers 503 on a full disk", || async {
        readyz(&c, &s).await.0 == 503
    })
    .await;
    assert_eq!(c.get(s.url("/healthz")).send().await.unwrap().status(), 200);

    std::fs::remove_file(&filler).unwrap();
    eventually("/readyz recovers once space is freed", || async {
        readyz(&c, &s).await.0 == 200
    })
    .await;
    let (status, _) = create(&c, &s, json!({ "url": "https://example.com/after" })).await;
    assert_eq!(status, 201);
    for (slug, url) in &acknowledged {
        assert_eq!(resolve(&c, &s, slug).await, (308, Some(url.clone())));
    }
}

/// A private PostgreSQL server (scripts/pg.sh), deleted on drop.
struct PgServer {
    dir: tempfile::TempDir,
    url: String,
}

impl PgServer {
    fn script(args: &[&str]) -> String {
        let out = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/pg.sh"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn up() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = Self::script(&["up", dir.path().to_str().unwrap()]);
        Self { dir, url }
    }

    fn path(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/pg.sh"))
            .args(["down", self.path()])
            .output();
    }
}

/// The database crashes and comes back while two replicas take creates: both go unready
/// while it is away and ready again by themselves, creates succeed again, and every create
/// that was answered 201 (before, during or after) is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL binaries; run by scripts/test-store-pg.sh"]
async fn pg_database_restart_under_load_loses_no_acknowledged_write() {
    let pg = PgServer::up();
    let store = TestStore::raw(&common::fresh_pg_database(&pg.url));
    let servers = [
        Server::start_ready(&store, &[]).await,
        Server::start_ready(&store, &[]).await,
    ];
    let c = client();
    let acknowledged = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = tokio::task::JoinSet::new();
    for w in 0..8 {
        let (c, base) = (c.clone(), servers[w % 2].base.clone());
        let (acknowledged, stop) = (Arc::clone(&acknowledged), Arc::clone(&stop));
        load.spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let url = format!("https://example.com/load/{w}/{i}");
                let sent = c
                    .post(format!("{base}/api/v1/urls"))
                    .json(&json!({ "url": url }))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 201 => {
                        let body: Value = r.json().await.unwrap();
                        let slug = body["slug"].as_str().unwrap().to_owned();
                        acknowledged.lock().unwrap().push((slug, url));
                    }
                    // Refused fast while the database is away: pace the retries.
                    _ => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
    }
    let acked = || acknowledged.lock().unwrap().len();
    eventually("creates are being acknowledged", || async {
        acked() >= 100
    })
    .await;

    PgServer::script(&["stop", pg.path()]);
    for s in &servers {
        eventually("/readyz answers 503 while the database is down", || async {
            readyz(&c, s).await.0 == 503
        })
        .await;
    }
    let during = acked();
    PgServer::script(&["start", pg.path()]);
    for s in &servers {
        eventually("/readyz recovers by itself", || async {
            readyz(&c, s).await.0 == 200
        })
        .await;
    }
    eventually("creates are acknowledged again", || async {
        acked() >= during + 100
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    load.join_all().await;

    let all = acknowledged.lock().unwrap().clone();
    let slugs: HashSet<&String> = all.iter().map(|(s, _)| s).collect();
    assert_eq!(slugs.len(), all.len(), "a slug was acknowledged twice");
    for s in &servers {
        for (slug, url) in &all {
            assert_eq!(
                resolve(&c, s, slug).await,
                (308, Some(url.clone())),
                "{slug}"
            );
        }
    }
}
