//! A database source's failure, as Veil's own words: which connection, and
//! what kind of failure. It never carries the database's message (which may
//! quote a value, a statement or a user name), so it passes a policy
//! barrier with its kind and connection intact; the database's text goes to
//! the server log only, where it is logged at the failure.

use std::fmt;

use super::VeilError;

/// What went wrong at a database, in the terms a caller can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFailureKind {
    /// The database can't be reached (refused, unresolvable, timed out
    /// while connecting) or every connection to it is busy for too long.
    Unreachable,
    /// The database refused Veil's credentials or its right to read.
    CredentialsRefused,
    /// A statement ran longer than the connection's `statement_timeout_secs`.
    Timeout,
    /// The connection broke while rows were streaming: what was read is
    /// not the whole answer.
    Dropped,
    /// The relation no longer matches the dataset's dictionary (a column
    /// dropped or retyped, a table gone), or a value doesn't fit its type.
    Changed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFailure {
    /// The connection's name (from the config; never a secret).
    pub connection: String,
    pub kind: SourceFailureKind,
}

impl SourceFailure {
    pub fn new(connection: &str, kind: SourceFailureKind) -> Self {
        Self {
            connection: connection.to_string(),
            kind,
        }
    }

    /// The error a caller gets when reading `dataset` failed this way.
    pub fn for_dataset(&self, dataset: &str) -> VeilError {
        VeilError::from(self.clone())
            .with_message(format!("reading dataset '{dataset}' failed: {self}"))
    }
}

impl fmt::Display for SourceFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.connection;
        match self.kind {
            SourceFailureKind::Unreachable => write!(
                f,
                "database connection '{c}' can't be reached right now; retry later, and if it persists ask an administrator to check the database and the Veil server log"
            ),
            SourceFailureKind::CredentialsRefused => write!(
                f,
                "database connection '{c}' refused Veil's credentials or its right to read; an administrator must check the connection's user and password"
            ),
            SourceFailureKind::Timeout => write!(
                f,
                "the statement on database connection '{c}' ran past its time limit (statement_timeout_secs); read fewer rows (a filter or a limit), or ask an administrator to raise the limit"
            ),
            SourceFailureKind::Dropped => write!(
                f,
                "the connection to database '{c}' broke while rows were being read; the rows already sent are not the whole answer: read again"
            ),
            SourceFailureKind::Changed => write!(
                f,
                "the table behind it on database connection '{c}' no longer matches the dataset's data dictionary (a column dropped or retyped, or a value that doesn't fit its type); ask the dataset's owner to re-register it"
            ),
        }
    }
}

impl std::error::Error for SourceFailure {}

impl From<SourceFailure> for VeilError {
    fn from(s: SourceFailure) -> Self {
        let m = s.to_string();
        match s.kind {
            SourceFailureKind::Unreachable
            | SourceFailureKind::CredentialsRefused
            | SourceFailureKind::Dropped => VeilError::Unavailable(m),
            SourceFailureKind::Timeout => VeilError::DeadlineExceeded(m),
            SourceFailureKind::Changed => VeilError::FailedPrecondition(m),
        }
    }
}
