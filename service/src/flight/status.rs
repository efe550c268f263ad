//! Veil errors to gRPC statuses. Exhaustive, no catch-all: a new error kind
//! does not compile until its code is chosen here.

use tonic::{Code, Status};

use crate::error::VeilError;

pub fn code_of(e: &VeilError) -> Code {
    match e {
        VeilError::Unauthenticated(_) => Code::Unauthenticated,
        VeilError::PermissionDenied(_) => Code::PermissionDenied,
        VeilError::NotFound(_) => Code::NotFound,
        VeilError::InvalidArgument(_) => Code::InvalidArgument,
        VeilError::FailedPrecondition(_) => Code::FailedPrecondition,
        VeilError::ResourceExhausted(_) => Code::ResourceExhausted,
        VeilError::Unavailable(_) => Code::Unavailable,
        VeilError::AlreadyExists(_) => Code::AlreadyExists,
        VeilError::Internal(_) => Code::Internal,
    }
}

/// The audit's status word for a code: the same words as
/// [`VeilError::kind`], so one vocabulary names outcomes whichever layer
/// recorded them.
pub fn kind_of(code: Code) -> &'static str {
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

pub fn to_status(e: &VeilError) -> Status {
    Status::new(code_of(e), e.client_message())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the mapping the README documents.
    #[test]
    fn every_kind_has_its_code() {
        let table = [
            (
                VeilError::Unauthenticated("x".into()),
                Code::Unauthenticated,
            ),
            (
                VeilError::PermissionDenied("x".into()),
                Code::PermissionDenied,
            ),
            (VeilError::NotFound("x".into()), Code::NotFound),
            (
                VeilError::InvalidArgument("x".into()),
                Code::InvalidArgument,
            ),
            (
                VeilError::FailedPrecondition("x".into()),
                Code::FailedPrecondition,
            ),
            (
                VeilError::ResourceExhausted("x".into()),
                Code::ResourceExhausted,
            ),
            (VeilError::Unavailable("x".into()), Code::Unavailable),
            (VeilError::AlreadyExists("x".into()), Code::AlreadyExists),
            (VeilError::Internal("x".into()), Code::Internal),
        ];
        for (e, c) in table {
            assert_eq!(kind_of(c), e.kind());
            assert_eq!(to_status(&e).code(), c);
            assert_eq!(to_status(&e).message(), "x");
        }
    }
}
