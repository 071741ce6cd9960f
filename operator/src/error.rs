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
    /// A setup failure with its whole chain of causes: reqwest alone says just "builder
    /// error" where the cause says what is missing (e.g. no CA certificates in the image).
    pub fn setup(error: &(dyn std::error::Error + 'static)) -> Self {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Error::Setup(message)
    }
}

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

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("builder error")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn setup_errors_carry_their_causes() {
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no CA certificates",
        ));
        assert_eq!(
            super::Error::setup(&e).to_string(),
            "setting up: builder error: no CA certificates"
        );
    }
}
