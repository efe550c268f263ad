//! Veil errors to gRPC statuses: the error's code (chosen exhaustively in
//! `crate::error`) and the message its caller may read.

use tonic::Status;

use crate::error::VeilError;

pub fn to_status(e: &VeilError) -> Status {
    Status::new(e.code(), e.client_message())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::status_word;
    use tonic::Code;

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
            assert_eq!(status_word(c), e.kind());
            assert_eq!(to_status(&e).code(), c);
            assert_eq!(to_status(&e).message(), "x");
        }
    }
}
