//! The plugin's errors: each is printed as one line and exits with code 1, except the
//! outcomes of `status --wait` (see [`CliError::exit_code`]).

use thiserror::Error;

use super::wait::{EXIT_TIMEOUT, Verdict};

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
    #[error("ShortenerRelease {name:?} is {phase}: {message}")]
    NotHealthy {
        name: String,
        phase: &'static str,
        message: String,
        verdict: Verdict,
    },
    #[error(
        "timed out after {secs}s waiting for {name:?} to finish rolling out generation {generation} (last seen: {last})"
    )]
    Timeout {
        name: String,
        secs: u64,
        generation: i64,
        last: String,
    },
}

impl CliError {
    /// The process exit code: `status --wait`'s outcomes have their own (see
    /// [`Verdict::exit_code`]), every other error is 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::NotHealthy { verdict, .. } => verdict.exit_code(),
            CliError::Timeout { .. } => EXIT_TIMEOUT,
            _ => 1,
        }
    }
}
