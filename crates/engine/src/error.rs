//! What the engine answers when it cannot do what it was asked, by kind.
//!
//! The engine knows nothing of HTTP: the API maps each kind to its status
//! code at the edge (`api::error`), the CLI prints it.

use attune_runtime::PathError;
use attune_storage::{Refusal, StorageError};

/// An engine failure, by kind.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Something named does not exist (an action, a rule, an execution).
    #[error("{0}")]
    NotFound(String),
    /// It exists already, or is no longer in a state that allows this.
    #[error("{0}")]
    Conflict(String),
    /// The caller may not do this to this thing (another token's worker).
    #[error("{0}")]
    Denied(String),
    /// The input does not fit; every problem with its JSON path.
    #[error("{message}")]
    Invalid {
        /// What was invalid, in a sentence.
        message: String,
        /// Each problem, with its path inside the input.
        errors: Vec<PathError>,
    },
    /// The engine is stopping or overloaded; try again.
    #[error("{0}")]
    Unavailable(String),
    /// The database takes no writes now (a full disk, a read-only
    /// database, a data directory gone): a state logged where it begins
    /// and ends, not at each write it refuses.
    #[error("{0}")]
    Refused(Refusal),
    /// The database failed; logged, never shown to clients.
    #[error(transparent)]
    Database(StorageError),
    /// Anything else that is not the caller's fault.
    #[error("{0:#}")]
    Internal(anyhow::Error),
}

impl EngineError {
    /// The database could not be reached: a 503, worth retrying.
    pub fn database_unavailable() -> Self {
        EngineError::Unavailable("the database is unavailable; retry later".into())
    }

    /// Whether this is the database refusing writes (see
    /// [`EngineError::Refused`]): background tasks leave it out of their
    /// logs.
    pub fn is_refused(&self) -> bool {
        matches!(self, EngineError::Refused(_))
    }

    /// `no <what> `<key>``.
    pub fn not_found(what: &str, key: impl std::fmt::Display) -> Self {
        EngineError::NotFound(format!("no {what} `{key}`"))
    }

    /// Invalid input: `message` and `errors`, each path prefixed by `prefix`.
    pub fn invalid(message: impl Into<String>, prefix: &str, errors: Vec<PathError>) -> Self {
        EngineError::Invalid {
            message: message.into(),
            errors: errors
                .into_iter()
                .map(|e| PathError {
                    path: format!("{prefix}{}", e.path),
                    message: e.message,
                })
                .collect(),
        }
    }
}

impl From<StorageError> for EngineError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Conflict(m) => EngineError::Conflict(m),
            StorageError::NotFound(m) => EngineError::NotFound(m),
            StorageError::Refused(r) => EngineError::Refused(r),
            other if other.is_unavailable() => {
                tracing::warn!(error = %other, "the database is unavailable");
                EngineError::database_unavailable()
            }
            other => EngineError::Database(other),
        }
    }
}
