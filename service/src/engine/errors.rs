//! DataFusion errors to Veil errors, by variant (exhaustive: a new upstream
//! variant is a compile error here until its meaning is decided).

use datafusion::common::DataFusionError;

use crate::error::VeilError;
use crate::policy::barrier::BelowBarrierError;

/// Find a Veil error or a barrier error anywhere in the chain.
fn find_own(e: &(dyn std::error::Error + 'static)) -> Option<VeilError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(v) = err.downcast_ref::<VeilError>() {
            return Some(v.clone());
        }
        if let Some(b) = err.downcast_ref::<BelowBarrierError>() {
            return Some(VeilError::FailedPrecondition(b.to_string()));
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

pub fn from_datafusion(e: DataFusionError) -> VeilError {
    if let Some(v) = find_own(&e) {
        return v;
    }
    let msg = e.message().to_string();
    match e {
        // The user's query is wrong: their SQL, their expression, their types.
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Configuration(_) => VeilError::InvalidArgument(msg),
        // Errors above the barrier come from the user's own expressions over
        // policy-applied values (errors below it were sanitised into a
        // BelowBarrierError, handled above).
        DataFusionError::Execution(_) | DataFusionError::ArrowError(..) => VeilError::InvalidArgument(msg),
        DataFusionError::ResourcesExhausted(_) => VeilError::ResourceExhausted(format!(
            "the query needs more memory than Veil allows; select fewer columns or rows, or aggregate: {msg}"
        )),
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => from_datafusion(*inner),
        DataFusionError::Collection(mut errs) => match errs.pop() {
            Some(first) => from_datafusion(first),
            None => VeilError::Internal("empty error collection".into()),
        },
        DataFusionError::Shared(inner) => from_datafusion(DataFusionError::Execution(inner.message().to_string())),
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
            tracing::error!(error = %msg, "internal query error");
            VeilError::Internal("an internal error occurred while running the query; it was logged".into())
        }
    }
}
