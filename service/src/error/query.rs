//! Errors from running a query: DataFusion errors to Veil errors, by
//! variant (exhaustive: a new upstream variant is a compile error here
//! until its meaning is decided), and the error the policy barrier
//! (`crate::policy::barrier`) puts in place of anything raised below it.
//!
//! Upstream text can quote data values (`Cannot cast string '777-21-2703'
//! to value of Int64 type`). It reaches only the caller, behind
//! [`VeilError::detailed`]'s separator; the audit trail and the server log
//! get Veil's own words: the error's class from [`crate::redact`].

use datafusion::common::DataFusionError;
use std::fmt;

use crate::error::VeilError;
use crate::redact::class_of;

/// What the caller learns when something failed below a barrier.
#[derive(Debug)]
pub struct BelowBarrierError {
    pub dataset: String,
    pub kind: BelowBarrierKind,
}

/// What failed below a barrier, which is all the caller learns of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BelowBarrierKind {
    /// The query's memory limit: the caller can ask for less.
    Memory,
    /// The source (object store, file system, a file that doesn't decode).
    Source,
    /// Anything else: a mask or policy that could not be applied.
    Other,
}

impl BelowBarrierKind {
    pub fn of(e: &DataFusionError) -> Self {
        match e {
            DataFusionError::ResourcesExhausted(_) => Self::Memory,
            DataFusionError::ObjectStore(_)
            | DataFusionError::IoError(_)
            | DataFusionError::ParquetError(_) => Self::Source,
            DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
                Self::of(inner)
            }
            DataFusionError::Shared(inner) => Self::of(inner),
            _ => Self::Other,
        }
    }
}

impl fmt::Display for BelowBarrierError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            BelowBarrierKind::Memory => write!(
                f,
                "reading dataset '{}' needs more memory than Veil allows a query; select fewer columns or rows, or aggregate",
                self.dataset
            ),
            BelowBarrierKind::Source => write!(
                f,
                "reading dataset '{}' failed at its source; retry, and if it persists ask an administrator to check the server log",
                self.dataset
            ),
            BelowBarrierKind::Other => write!(
                f,
                "reading dataset '{}' failed while applying its source and policies; the details are in the Veil server log (ask an administrator)",
                self.dataset
            ),
        }
    }
}

impl std::error::Error for BelowBarrierError {}

/// Find a Veil error or a barrier error anywhere in the chain.
fn find_own(e: &(dyn std::error::Error + 'static)) -> Option<VeilError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(v) = err.downcast_ref::<VeilError>() {
            return Some(v.clone());
        }
        if let Some(b) = err.downcast_ref::<BelowBarrierError>() {
            return Some(match b.kind {
                BelowBarrierKind::Memory => VeilError::ResourceExhausted(b.to_string()),
                BelowBarrierKind::Source => VeilError::Unavailable(b.to_string()),
                BelowBarrierKind::Other => VeilError::FailedPrecondition(b.to_string()),
            });
        }
        if let Some(DataFusionError::External(inner)) = err.downcast_ref::<DataFusionError>()
            && let Some(v) = find_own(inner.as_ref())
        {
            return Some(v);
        }
        if let Some(DataFusionError::Shared(inner)) = err.downcast_ref::<DataFusionError>()
            && let Some(v) = find_own(inner.as_ref())
        {
            return Some(v);
        }
        cur = err.source();
    }
    None
}

/// Does an external error come from reading a source (store, file, I/O)?
fn is_source_error(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    e.is::<object_store::Error>()
        || e.is::<std::io::Error>()
        || e.is::<datafusion::parquet::errors::ParquetError>()
}

pub fn from_datafusion(e: DataFusionError) -> VeilError {
    if let Some(v) = find_own(&e) {
        return v;
    }
    let msg = e.message().to_string();
    let class = class_of(&msg);
    match e {
        // The user's query is wrong: their SQL, their expression, their types.
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Configuration(_) => VeilError::InvalidArgument(VeilError::detailed(
            format!("the query is not valid ({class})"),
            msg,
        )),
        // Errors above the barrier come from the user's own expressions over
        // policy-applied values (errors below it were sanitised into a
        // BelowBarrierError, handled above): the caller may read the values
        // the text quotes, the audit may not.
        DataFusionError::Execution(_) | DataFusionError::ArrowError(..) => {
            VeilError::InvalidArgument(VeilError::detailed(
                format!("the query failed while running ({class})"),
                msg,
            ))
        }
        DataFusionError::ResourcesExhausted(_) => VeilError::ResourceExhausted(VeilError::detailed(
            "the query needs more memory than Veil allows; select fewer columns or rows, or aggregate",
            msg,
        )),
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            from_datafusion(*inner)
        }
        DataFusionError::Collection(mut errs) => match errs.pop() {
            Some(first) => from_datafusion(first),
            None => VeilError::Internal("empty error collection".into()),
        },
        DataFusionError::Shared(inner) => {
            from_datafusion(DataFusionError::Execution(inner.message().to_string()))
        }
        // An upstream library's own error inside a user expression (the
        // regex crate's, for one): the user's request, as above.
        DataFusionError::External(inner) if !is_source_error(inner.as_ref()) => {
            VeilError::InvalidArgument(VeilError::detailed(
                format!("the query failed while running ({class})"),
                msg,
            ))
        }
        DataFusionError::ParquetError(_)
        | DataFusionError::ObjectStore(_)
        | DataFusionError::IoError(_)
        | DataFusionError::External(_) => VeilError::Unavailable(
            "reading data failed; retry, and if it persists ask an administrator to check the server log".into(),
        ),
        DataFusionError::Internal(_)
        | DataFusionError::ExecutionJoin(_)
        | DataFusionError::Substrait(_)
        | DataFusionError::Ffi(_) => {
            tracing::error!(error = %class, "internal query error");
            VeilError::Internal(
                "an internal error occurred while running the query; it was logged".into(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::describe;
    use datafusion::arrow::error::ArrowError;

    /// Every kind of value-echoing failure keeps the value out of the audit
    /// form (and the log form) while the caller still reads it.
    #[test]
    fn values_stay_out_of_audit_and_log_forms() {
        let secret = "777-21-2703";
        let errors = [
            DataFusionError::ArrowError(
                Box::new(ArrowError::CastError(format!(
                    "Cannot cast string '{secret}' to value of Int64 type"
                ))),
                None,
            ),
            DataFusionError::Execution(format!("regexp_match failed on '{secret}'")),
            DataFusionError::ArrowError(
                Box::new(ArrowError::ComputeError(format!(
                    "Overflow happened on: {secret} * 10"
                ))),
                None,
            ),
            DataFusionError::ArrowError(
                Box::new(ArrowError::ParseError(format!(
                    "Error parsing timestamp from '{secret}'"
                ))),
                None,
            ),
            DataFusionError::Execution(format!("invalid JSON '{secret}'")),
            DataFusionError::Execution(format!("{secret} is out of range")),
            DataFusionError::ArrowError(Box::new(ArrowError::DivideByZero), None),
            DataFusionError::Plan(format!("cannot coerce '{secret}'")),
            DataFusionError::ResourcesExhausted(format!("{secret}")),
            DataFusionError::Internal(format!("bug near {secret}")),
        ];
        for e in errors {
            let log = describe(&e);
            let v = from_datafusion(e);
            assert!(!v.audit_message().contains(secret), "{v:?}");
            assert!(!v.to_string().contains(secret), "{v:?}");
            assert!(!log.contains(secret), "{log}");
        }
        let v = from_datafusion(DataFusionError::ArrowError(
            Box::new(ArrowError::CastError(format!(
                "Cannot cast string '{secret}'"
            ))),
            None,
        ));
        assert!(v.client_message().contains(secret));
        assert_eq!(
            v.audit_message(),
            "the query failed while running (a value could not be converted to another type)"
        );
    }

    #[test]
    fn below_barrier_memory_is_resource_exhausted() {
        let e = DataFusionError::External(Box::new(BelowBarrierError {
            dataset: "a.b".into(),
            kind: BelowBarrierKind::Memory,
        }));
        assert!(matches!(
            from_datafusion(e),
            VeilError::ResourceExhausted(_)
        ));
    }
}
