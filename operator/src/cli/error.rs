//! The plugin's errors: each is printed as one line and exits with code 1.

use thiserror::Error;

pub type Result<T, E = CliError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum CliError {
    #[error("no ShortenerRelease {name:?} in namespace {namespace:?}")]
    NoSuchRelease { name: String, namespace: String },
    #[error(
        "not permitted: your account cannot {verb} {resource} in namespace {namespace:?} (ask for RBAC on it)"
    )]
    Forbidden {
        verb: &'static str,
        resource: &'static str,
        namespace: String,
    },
    #[error("nothing to roll back to: {0}")]
    NothingToRollBack(String),
    #[error("not connected: {0}")]
    NotConnected(String),
    #[error("no incident recorded for {name:?} in namespace {namespace:?}")]
    NoIncident { name: String, namespace: String },
    #[error("{verb} {resource} failed: {source}")]
    Api {
        verb: &'static str,
        resource: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("cannot render output: {0}")]
    Render(String),
    #[error("watch failed: {0}")]
    Watch(String),
}
