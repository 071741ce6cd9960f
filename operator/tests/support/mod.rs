//! Helpers shared by the end-to-end test binaries (`e2e.rs`, `plugin.rs`): polling, the
//! cluster, and the e2e harness ([`env::Env`], [`traffic::Traffic`]).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod env;
pub mod traffic;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The repository root (testenv's files live under it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn kubeconfig() -> PathBuf {
    root().join(".testenv/kubeconfig")
}

/// A namespace name unique to this run, e.g. `e2e-s4-123456`.
pub fn unique_namespace(prefix: &str) -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    format!("{prefix}-{}", millis % 1_000_000)
}

/// Polls `f` until it returns `Some`, failing the test after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    match within(timeout, f).await {
        Some(v) => v,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// Polls `f` until it returns `Some`; `None` once `timeout` has passed, so the caller can
/// say what it saw before failing.
pub async fn within<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `make cluster-up`: starts testenv unless it is already up.
pub async fn cluster_up() {
    let status = tokio::process::Command::new("make")
        .arg("cluster-up")
        .current_dir(root())
        .status()
        .await
        .expect("make cluster-up");
    assert!(status.success(), "make cluster-up failed");
}
