//! The store's promises, run against every backend: SQLite always, and PostgreSQL too when
//! `SHORTENER_TEST_PG_URL` names a server (`make test` starts one; see scripts/pg.sh). Each
//! test gets a fresh SQLite file and a fresh PostgreSQL database.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use rand::Rng;
use rand::distr::Alphanumeric;

use super::*;

/// A store location per backend; the guard keeps the SQLite file's directory alive.
async fn locations() -> Vec<(Location, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let mut all = vec![(Location::Sqlite(dir.path().join("s.db")), Some(dir))];
    if let Ok(admin) = std::env::var("SHORTENER_TEST_PG_URL") {
        let url = fresh_pg_database(&admin).await;
        all.push((Location::parse(&url, |_| None).unwrap(), None));
    }
    all
}

async fn fresh_pg_database(admin: &str) -> String {
    let (client, conn) = tokio_postgres::connect(admin, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let name: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(12)
        .map(|c| char::from(c).to_ascii_lowercase())
        .collect();
    let name = format!("unit_{name}");
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let mut url = url::Url::parse(admin).unwrap();
    url.set_path(&name);
    url.to_string()
}

#[tokio::test]
async fn insert_get_delete_and_conflict() {
    for (location, _guard) in locations().await {
        for group_commit in [true, false] {
            let store = Store::open(location.clone(), group_commit).await.unwrap();
            let at = format!("{location} group_commit={group_commit}");
            let slug = format!("abc{group_commit}");
            store
                .insert(slug.clone(), "https://a.example/".into())
                .await
                .unwrap();
            let taken = store
                .insert(slug.clone(), "https://b.example/".into())
                .await;
            assert!(
                matches!(taken, Err(StoreError::SlugTaken(ref s)) if *s == slug),
                "{at}: {taken:?}"
            );
            let rec = store.get(slug.clone()).await.unwrap().unwrap();
            assert_eq!(rec.url, "https://a.example/", "{at}");
            assert_eq!(rec.hits, 0, "{at}");
            assert!(
                rec.created_at.ends_with('Z') && rec.created_at.len() == 24,
                "{at}: {}",
                rec.created_at
            );
            store
                .add_hits(HashMap::from([(slug.clone(), 3), ("nope".to_owned(), 1)]))
                .await
                .unwrap();
            assert_eq!(
                store.get(slug.clone()).await.unwrap().unwrap().hits,
                3,
                "{at}"
            );
            assert_eq!(store.count().await.unwrap(), 1, "{at}");
            store.check().await.unwrap();
            assert!(store.delete(slug.clone()).await.unwrap(), "{at}");
            assert!(!store.delete(slug.clone()).await.unwrap(), "{at}");
            assert_eq!(store.resolve(slug).await.unwrap(), None, "{at}");
            assert_eq!(store.count().await.unwrap(), 0, "{at}");
        }
    }
}

/// Many concurrent creates, each slug wanted by four of them: exactly one wins each slug,
/// the others are told it is taken, and the winner's URL is what the slug resolves to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_give_each_slug_to_exactly_one() {
    for (location, _guard) in locations().await {
        for group_commit in [true, false] {
            let store = Store::open(location.clone(), group_commit).await.unwrap();
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..200 {
                let store = Arc::clone(&store);
                tasks.spawn(async move {
                    let (slug, url) = (format!("s{}", i % 50), format!("https://example.com/{i}"));
                    let r = store.insert(slug.clone(), url.clone()).await;
                    (slug, url, r)
                });
            }
            let mut winners = HashMap::new();
            for (slug, url, r) in tasks.join_all().await {
                match r {
                    Ok(()) => assert!(winners.insert(slug, url).is_none(), "two winners"),
                    Err(StoreError::SlugTaken(s)) => assert_eq!(s, slug),
                    Err(e) => panic!("{location}: {e}"),
                }
            }
            assert_eq!(winners.len(), 50, "{location}");
            for (slug, url) in winners {
                assert_eq!(store.resolve(slug.clone()).await.unwrap(), Some(url));
                assert!(store.delete(slug).await.unwrap());
            }
        }
    }
}
