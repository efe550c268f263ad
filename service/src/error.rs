//! The engine's error type: one variant per kind of failure a caller must
//! handle differently, its gRPC code ([`VeilError::code`]) and the one word
//! the audit trail and the logs use for a status ([`status_word`]). Every
//! match is exhaustive, so adding a variant is a compile error here until
//! its code is decided. `query` turns DataFusion's, Arrow's, Parquet's and
//! the object store's errors into it by cause.

use std::fmt;
use tonic::Code;

pub mod hints;
pub mod query;
pub mod source;

/// The one word the audit trail and the logs use for a status: `ok`, or
/// the code's name in snake case.
pub fn status_word(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// Longest message a client ever receives; longer ones are cut.
pub const MAX_MESSAGE_LEN: usize = 1024;

/// Separates Veil's own words from upstream detail (a DataFusion, Arrow,
/// parser or store error's text) inside a message. Upstream text can carry
/// data values (`Cannot cast string '777-21-2703' ...`): the caller, who
/// ran the expression over values they may read, gets it; the audit trail
/// and the server log, read by people who may not be entitled to those
/// values, get only what precedes the first separator
/// ([`VeilError::audit_message`]). A control character, so no name Veil
/// echoes can contain it (names are stripped of control characters).
pub const DETAIL_SEPARATOR: char = '\u{1F}';

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VeilError {
    /// The caller's identity could not be established.
    Unauthenticated(String),
    /// The caller is known but a permission or policy forbids the action.
    PermissionDenied(String),
    /// Dataset (or other object) does not exist *or is hidden from the caller*.
    NotFound(String),
    /// The request itself is wrong: bad SQL, unknown column, malformed message.
    InvalidArgument(String),
    /// The request is well-formed but the system is not in a state to honour
    /// it (a mask on an unsupported type, a policy that cannot be evaluated).
    FailedPrecondition(String),
    /// A budget or memory limit was reached.
    ResourceExhausted(String),
    /// Something Veil depends on (the audit store) is unavailable; retry later.
    Unavailable(String),
    /// Something Veil waited on (a database statement) ran out of time.
    DeadlineExceeded(String),
    /// An object with that name already exists.
    AlreadyExists(String),
    /// Veil does not offer this operation (a write, a transaction): the
    /// message says what to do instead.
    Unimplemented(String),
    /// A bug in Veil.
    Internal(String),
}

impl VeilError {
    /// The message with its detail separator kept, capped at
    /// [`MAX_MESSAGE_LEN`]: what wraps it into another error's message.
    /// Answer clients with [`Self::client_message`], record with
    /// [`Self::audit_message`].
    pub fn message(&self) -> String {
        let m = match self {
            Self::Unauthenticated(m)
            | Self::PermissionDenied(m)
            | Self::NotFound(m)
            | Self::InvalidArgument(m)
            | Self::FailedPrecondition(m)
            | Self::ResourceExhausted(m)
            | Self::Unavailable(m)
            | Self::DeadlineExceeded(m)
            | Self::AlreadyExists(m)
            | Self::Unimplemented(m)
            | Self::Internal(m) => m,
        };
        cap(m)
    }

    /// What the caller reads: Veil's words, then any upstream detail.
    pub fn client_message(&self) -> String {
        self.message().replace(DETAIL_SEPARATOR, ": ")
    }

    /// What the audit trail and the server log keep: Veil's own words only,
    /// never upstream text that may carry data values.
    pub fn audit_message(&self) -> String {
        let m = self.message();
        match m.split_once(DETAIL_SEPARATOR) {
            Some((ours, _)) => ours.trim_end_matches([':', ' ']).to_string(),
            None => m,
        }
    }

    /// `words` (Veil's) followed by upstream `detail` that only the caller
    /// reads.
    pub fn detailed(words: impl fmt::Display, detail: impl fmt::Display) -> String {
        format!("{words}{DETAIL_SEPARATOR}{detail}")
    }

    /// The same kind of error with another message.
    pub fn with_message(self, message: String) -> Self {
        match self {
            Self::Unauthenticated(_) => Self::Unauthenticated(message),
            Self::PermissionDenied(_) => Self::PermissionDenied(message),
            Self::NotFound(_) => Self::NotFound(message),
            Self::InvalidArgument(_) => Self::InvalidArgument(message),
            Self::FailedPrecondition(_) => Self::FailedPrecondition(message),
            Self::ResourceExhausted(_) => Self::ResourceExhausted(message),
            Self::Unavailable(_) => Self::Unavailable(message),
            Self::DeadlineExceeded(_) => Self::DeadlineExceeded(message),
            Self::AlreadyExists(_) => Self::AlreadyExists(message),
            Self::Unimplemented(_) => Self::Unimplemented(message),
            Self::Internal(_) => Self::Internal(message),
        }
    }

    /// The gRPC code every protocol answers this error with.
    pub fn code(&self) -> Code {
        match self {
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::NotFound(_) => Code::NotFound,
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::ResourceExhausted(_) => Code::ResourceExhausted,
            Self::Unavailable(_) => Code::Unavailable,
            Self::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::Unimplemented(_) => Code::Unimplemented,
            Self::Internal(_) => Code::Internal,
        }
    }

    /// Short name of the kind, used in audit records: [`status_word`] of
    /// its code.
    pub fn kind(&self) -> &'static str {
        status_word(self.code())
    }

    /// The error a status received from a Veil server stands for (the CLI's
    /// view of an answer): every code is placed, none by a catch-all.
    pub fn from_code(code: Code, message: String) -> Self {
        match code {
            Code::Unauthenticated => Self::Unauthenticated(message),
            Code::PermissionDenied => Self::PermissionDenied(message),
            Code::NotFound => Self::NotFound(message),
            Code::AlreadyExists => Self::AlreadyExists(message),
            Code::FailedPrecondition => Self::FailedPrecondition(message),
            Code::InvalidArgument | Code::OutOfRange => Self::InvalidArgument(message),
            Code::ResourceExhausted => Self::ResourceExhausted(message),
            // Transient: the same call may succeed later.
            Code::Unavailable | Code::Cancelled | Code::Aborted => Self::Unavailable(message),
            Code::DeadlineExceeded => Self::DeadlineExceeded(message),
            // The server does not offer the call.
            Code::Unimplemented => Self::Unimplemented(message),
            // `Ok` carries no error; one that arrives as an error is a bug.
            Code::Ok | Code::Unknown | Code::Internal | Code::DataLoss => Self::Internal(message),
        }
    }

    /// The one answer for a dataset that does not exist or that the caller may
    /// not know about: identical bytes in both cases.
    pub fn dataset_not_found(name: &str) -> Self {
        Self::NotFound(format!(
            "dataset '{}' not found: check the name among the datasets you can see (list_datasets() in Python, `veil admin datasets`)",
            cap_name(name)
        ))
    }

    /// A dataset the caller can see but may read only after an approved
    /// access request.
    pub fn access_not_approved(name: &str) -> Self {
        Self::PermissionDenied(format!(
            "dataset '{}' is open on request: ask for access with a reason (conn.request_access(name, reason) in Python, `veil admin request-access`), then read it once approved",
            cap_name(name)
        ))
    }

    /// A bug in Veil, or a failure of something only Veil touches (its
    /// runtime, its own encoders). The caller reads `context` and an
    /// incident number; the server log has the upstream text under that
    /// number. Failures a caller or an owner can do something about are not
    /// internal: give them their own variant and words (the `query` module
    /// does for DataFusion's errors).
    pub fn internal(context: &str, e: impl fmt::Display) -> Self {
        let incident = uuid::Uuid::new_v4().simple().to_string();
        let incident = &incident[..12];
        tracing::error!(incident, context, error = %e, "internal error");
        Self::Internal(format!(
            "{context}: an internal error (incident {incident}); ask an administrator to look it up in the server log"
        ))
    }
}

/// The audit form: what logs print (`error = %e`).
impl fmt::Display for VeilError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind(), self.audit_message())
    }
}

impl std::error::Error for VeilError {}

pub type Result<T, E = VeilError> = std::result::Result<T, E>;

fn cap(m: &str) -> String {
    if m.len() <= MAX_MESSAGE_LEN {
        return m.to_string();
    }
    let mut end = MAX_MESSAGE_LEN;
    while !m.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &m[..end])
}

/// Names echoed back to a caller are short and printable.
pub(crate) fn cap_name(name: &str) -> String {
    name.chars().filter(|c| !c.is_control()).take(128).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_capped_on_a_char_boundary() {
        let e = VeilError::InvalidArgument("é".repeat(2000));
        assert!(e.message().len() <= MAX_MESSAGE_LEN + "…".len());
    }

    #[test]
    fn upstream_detail_reaches_the_caller_only() {
        let e = VeilError::InvalidArgument(VeilError::detailed(
            "a value could not be cast",
            "Cannot cast string '777-21-2703' to value of Int64 type",
        ));
        assert_eq!(
            e.client_message(),
            "a value could not be cast: Cannot cast string '777-21-2703' to value of Int64 type"
        );
        assert_eq!(e.audit_message(), "a value could not be cast");
        assert!(!e.to_string().contains("777"));
        // Wrapped again, the detail stays behind the separator.
        let outer = VeilError::FailedPrecondition(format!("policy 'p': {}", e.message()));
        assert_eq!(
            outer.audit_message(),
            "policy 'p': a value could not be cast"
        );
        assert!(outer.client_message().contains("777-21-2703"));
        // Not digits: the incident number is hex and may hold any.
        let internal = VeilError::internal("ctx", "secret sauce");
        assert!(!internal.client_message().contains("sauce"), "{internal:?}");
        assert!(
            internal
                .client_message()
                .starts_with("ctx: an internal error (incident ")
        );
    }

    /// Every code has one word, and each error kind's word is its code's.
    #[test]
    fn one_word_per_status() {
        let codes = [
            Code::Ok,
            Code::Cancelled,
            Code::Unknown,
            Code::InvalidArgument,
            Code::DeadlineExceeded,
            Code::NotFound,
            Code::AlreadyExists,
            Code::PermissionDenied,
            Code::ResourceExhausted,
            Code::FailedPrecondition,
            Code::Aborted,
            Code::OutOfRange,
            Code::Unimplemented,
            Code::Internal,
            Code::Unavailable,
            Code::DataLoss,
            Code::Unauthenticated,
        ];
        let words: std::collections::BTreeSet<_> = codes.iter().map(|c| status_word(*c)).collect();
        assert_eq!(words.len(), codes.len());
        for w in &words {
            assert!(w.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{w}");
        }
        for c in codes {
            let e = VeilError::from_code(c, "m".into());
            // What a client maps back answers with a code of the same class.
            if c != Code::Ok {
                assert_eq!(VeilError::from_code(e.code(), "m".into()), e, "{c:?}");
            }
        }
        for e in [
            VeilError::Unauthenticated("m".into()),
            VeilError::PermissionDenied("m".into()),
            VeilError::NotFound("m".into()),
            VeilError::InvalidArgument("m".into()),
            VeilError::FailedPrecondition("m".into()),
            VeilError::ResourceExhausted("m".into()),
            VeilError::Unavailable("m".into()),
            VeilError::AlreadyExists("m".into()),
            VeilError::Internal("m".into()),
        ] {
            assert_eq!(VeilError::from_code(e.code(), "m".into()), e);
            assert_eq!(e.kind(), status_word(e.code()));
        }
    }

    #[test]
    fn not_found_strips_control_characters() {
        let e = VeilError::dataset_not_found("a\nb\u{7}");
        assert_eq!(
            e.message(),
            "dataset 'ab' not found: check the name among the datasets you can see (list_datasets() in Python, `veil admin datasets`)"
        );
    }
}
