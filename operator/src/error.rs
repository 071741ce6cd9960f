//! The crate's error type and `Result` alias, and the class each error falls in.

use crate::metrics::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("object has no {0}")]
    MissingField(&'static str),
    #[error("serializing: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("setting up: {0}")]
    Setup(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The class that picks the backoff and the `kind` metric label.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Kube(kube::Error::Api(status)) => match status.code {
                409 => ErrorKind::Conflict,
                400 | 403 | 404 | 422 => ErrorKind::Permanent,
                _ => ErrorKind::Transient,
            },
            Error::Kube(_) => ErrorKind::Transient,
            Error::MissingField(_) | Error::Serialize(_) | Error::Setup(_) => ErrorKind::Permanent,
        }
    }
}
