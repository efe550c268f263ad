//! Errors from running a query, by cause: DataFusion's, Arrow's, Parquet's,
//! the object store's and I/O errors are classified by variant
//! ([`cause_of`]; exhaustive where the upstream enum is, so a new upstream
//! variant is a compile error here until its cause is decided), and each
//! cause has one answer ([`from_datafusion`]). The policy barrier
//! (`crate::policy::barrier`) replaces anything raised below it by a
//! [`BelowBarrierError`] ([`below_barrier`]) that keeps the cause and drops
//! the text.
//!
//! Upstream text can quote data values (`Cannot cast string '777-21-2703'
//! to value of Int64 type`). Only the caller's own query errors (their SQL,
//! their expressions over the values they read) carry it, behind
//! [`VeilError::detailed`]'s separator, and only to the caller; every other
//! answer is Veil's own words. The audit trail and the server log get
//! Veil's words and the error's class from [`crate::redact`].

use datafusion::arrow::error::ArrowError;
use datafusion::common::DataFusionError;
use datafusion::parquet::errors::ParquetError;
use std::error::Error as StdError;
use std::fmt;
use std::io::ErrorKind;

use crate::error::VeilError;
use crate::error::source::{SourceFailure, SourceFailureKind};
use crate::redact::{class_of, describe};

/// Why a query failed, as far as the caller's next step is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The query is not valid: SQL syntax, names, types, something the
    /// engine does not support. The caller changes the query.
    Query,
    /// An expression failed on a value while running: a cast, a division
    /// by zero, an overflow, a regular expression.
    Evaluation,
    /// The query's memory limit was reached.
    Memory,
    /// A source can't be reached right now (network, timeout, a store that
    /// is down, an object that changed while it was read): retry later.
    SourceUnreachable,
    /// A source answers but can't serve the data: a missing object,
    /// refused credentials, a file that doesn't decode. Its owner fixes it.
    SourceBroken,
    /// A bug in Veil or in the engine.
    Internal,
}

/// The cause of a DataFusion error, looking through its wrappers.
pub fn cause_of(e: &DataFusionError) -> Cause {
    match e {
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Configuration(_) => Cause::Query,
        DataFusionError::Execution(_) => Cause::Evaluation,
        DataFusionError::ResourcesExhausted(_) => Cause::Memory,
        DataFusionError::ArrowError(a, _) => arrow_cause(a),
        DataFusionError::ParquetError(p) => parquet_cause(p),
        DataFusionError::ObjectStore(o) => store_cause(o),
        DataFusionError::IoError(io) => io_cause(io),
        DataFusionError::External(x) => external_cause(x.as_ref()),
        // Constant folding evaluates the query's own literals while it is
        // planned (`age > 'abc'` casts 'abc'): the query is not valid.
        DataFusionError::Context(context, inner) if context.starts_with("Optimizer rule") => {
            match cause_of(inner) {
                Cause::Evaluation => Cause::Query,
                cause => cause,
            }
        }
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            cause_of(inner)
        }
        DataFusionError::Shared(inner) => cause_of(inner),
        DataFusionError::Collection(errs) => errs.first().map_or(Cause::Internal, cause_of),
        // DataFusion's `~` (and `regexp_like`, simplified to it) reports a
        // pattern that doesn't compile as an internal error: it is the
        // caller's pattern.
        DataFusionError::Internal(m) if m.contains("'regex_match_dyn_scalar'") => Cause::Evaluation,
        DataFusionError::Internal(_)
        | DataFusionError::ExecutionJoin(_)
        | DataFusionError::Substrait(_)
        | DataFusionError::Ffi(_) => Cause::Internal,
    }
}

/// The cause of an Arrow error.
pub fn arrow_cause(e: &ArrowError) -> Cause {
    match e {
        ArrowError::NotYetImplemented(_) | ArrowError::SchemaError(_) => Cause::Query,
        ArrowError::CastError(_)
        | ArrowError::ParseError(_)
        | ArrowError::ComputeError(_)
        | ArrowError::DivideByZero
        | ArrowError::ArithmeticOverflow(_)
        | ArrowError::InvalidArgumentError(_)
        | ArrowError::DictionaryKeyOverflowError
        | ArrowError::RunEndIndexOverflowError
        | ArrowError::OffsetOverflowError(_) => Cause::Evaluation,
        ArrowError::MemoryError(_) => Cause::Memory,
        // Decoding a file of the source.
        ArrowError::CsvError(_)
        | ArrowError::JsonError(_)
        | ArrowError::AvroError(_)
        | ArrowError::ParquetError(_) => Cause::SourceBroken,
        ArrowError::IoError(_, io) => io_cause(io),
        ArrowError::ExternalError(x) => external_cause(x.as_ref()),
        // Veil's own encodings (spill files, the C interface): a bug.
        ArrowError::IpcError(_) | ArrowError::CDataInterface(_) => Cause::Internal,
    }
}

/// The cause of a Parquet error: a file that doesn't decode, unless it
/// wraps the store's or the runtime's error.
pub fn parquet_cause(e: &ParquetError) -> Cause {
    match e {
        ParquetError::External(x) => external_cause(x.as_ref()),
        ParquetError::General(_)
        | ParquetError::NYI(_)
        | ParquetError::EOF(_)
        | ParquetError::ArrowError(_)
        | ParquetError::IndexOutOfBound(..)
        | ParquetError::NeedMoreData(_)
        | ParquetError::NeedMoreDataRange(_) => Cause::SourceBroken,
        // Non-exhaustive upstream: a new variant is about the file.
        _ => Cause::SourceBroken,
    }
}

/// The cause of an object store error. `Generic` is what the store
/// answers after its retries for a connection or a server that fails.
pub fn store_cause(e: &object_store::Error) -> Cause {
    use object_store::Error as S;
    match e {
        S::Generic { .. }
        | S::AlreadyExists { .. }
        | S::Precondition { .. }
        | S::NotModified { .. } => Cause::SourceUnreachable,
        S::NotFound { .. }
        | S::InvalidPath { .. }
        | S::NotSupported { .. }
        | S::NotImplemented { .. }
        | S::PermissionDenied { .. }
        | S::Unauthenticated { .. }
        | S::UnknownConfigurationKey { .. } => Cause::SourceBroken,
        S::JoinError { .. } => Cause::Internal,
        // Non-exhaustive upstream: retrying is the safe advice.
        _ => Cause::SourceUnreachable,
    }
}

/// The cause of an I/O error reading a source.
pub fn io_cause(e: &std::io::Error) -> Cause {
    // Readers that stream from a store wrap the store's error in an
    // `io::Error` of kind `Other` (object_store's own conversion): its
    // cause is the wrapped error's.
    if e.kind() == ErrorKind::Other
        && let Some(inner) = e.get_ref()
    {
        if let Some(o) = inner.downcast_ref::<object_store::Error>() {
            return store_cause(o);
        }
        if let Some(inner) = inner.downcast_ref::<std::io::Error>() {
            return io_cause(inner);
        }
    }
    match e.kind() {
        ErrorKind::TimedOut
        | ErrorKind::ConnectionRefused
        | ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::NotConnected
        | ErrorKind::BrokenPipe
        | ErrorKind::Interrupted
        | ErrorKind::WouldBlock
        | ErrorKind::HostUnreachable
        | ErrorKind::NetworkUnreachable
        | ErrorKind::NetworkDown
        | ErrorKind::ResourceBusy
        | ErrorKind::StaleNetworkFileHandle => Cause::SourceUnreachable,
        ErrorKind::OutOfMemory => Cause::Memory,
        _ => Cause::SourceBroken,
    }
}

/// The cause of an error boxed by some layer: a known error inside, or
/// else an upstream library's own error inside an expression (the regex
/// crate's, for one).
fn external_cause(e: &(dyn StdError + Send + Sync + 'static)) -> Cause {
    if let Some(d) = e.downcast_ref::<DataFusionError>() {
        cause_of(d)
    } else if let Some(a) = e.downcast_ref::<ArrowError>() {
        arrow_cause(a)
    } else if let Some(p) = e.downcast_ref::<ParquetError>() {
        parquet_cause(p)
    } else if let Some(o) = e.downcast_ref::<object_store::Error>() {
        store_cause(o)
    } else if let Some(io) = e.downcast_ref::<std::io::Error>() {
        io_cause(io)
    } else if let Some(b) = e.downcast_ref::<BelowBarrierError>() {
        b.cause
    } else if let Some(f) = e.downcast_ref::<SourceFailure>() {
        match f.kind {
            SourceFailureKind::Changed => Cause::SourceBroken,
            _ => Cause::SourceUnreachable,
        }
    } else if let Some(v) = e.downcast_ref::<VeilError>() {
        match v {
            VeilError::ResourceExhausted(_) => Cause::Memory,
            VeilError::Unavailable(_) => Cause::SourceUnreachable,
            VeilError::Internal(_) => Cause::Internal,
            _ => Cause::Query,
        }
    } else {
        Cause::Evaluation
    }
}

/// What the caller learns when something failed below a barrier: the
/// dataset and the cause, never the text.
#[derive(Debug)]
pub struct BelowBarrierError {
    pub dataset: String,
    pub cause: Cause,
    /// A database's failure: its connection and kind (Veil's words, no
    /// value), which the caller reads in full.
    pub failure: Option<SourceFailure>,
}

/// The barrier's replacement for an error raised below it. The log gets
/// the error's value-free description; the error keeps only its cause.
pub fn below_barrier(dataset: &str, e: &DataFusionError) -> DataFusionError {
    let cause = cause_of(e);
    tracing::warn!(dataset = %dataset, ?cause, error = %describe(e), "error below a policy barrier (not shown to the client)");
    DataFusionError::External(Box::new(BelowBarrierError {
        dataset: dataset.to_string(),
        cause,
        failure: find_failure(e),
    }))
}

/// A database failure anywhere in the chain.
fn find_failure(e: &(dyn StdError + 'static)) -> Option<SourceFailure> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(f) = err.downcast_ref::<SourceFailure>() {
            return Some(f.clone());
        }
        if let Some(b) = err.downcast_ref::<BelowBarrierError>() {
            return b.failure.clone();
        }
        let inner: Option<&(dyn StdError + 'static)> = match err.downcast_ref::<DataFusionError>() {
            Some(DataFusionError::External(inner)) => Some(inner.as_ref()),
            Some(DataFusionError::Shared(inner)) => Some(inner.as_ref()),
            Some(DataFusionError::Context(_, inner)) => Some(inner.as_ref()),
            Some(DataFusionError::ArrowError(a, _)) => match a.as_ref() {
                ArrowError::ExternalError(inner) => Some(inner.as_ref()),
                _ => None,
            },
            _ => None,
        };
        if let Some(f) = inner.and_then(find_failure) {
            return Some(f);
        }
        cur = err.source();
    }
    None
}

impl BelowBarrierError {
    fn to_veil(&self) -> VeilError {
        if let Some(f) = &self.failure {
            return f.for_dataset(&self.dataset);
        }
        let text = self.to_string();
        match self.cause {
            Cause::Memory => VeilError::ResourceExhausted(text),
            Cause::SourceUnreachable => VeilError::Unavailable(text),
            Cause::SourceBroken | Cause::Query | Cause::Evaluation => {
                VeilError::FailedPrecondition(text)
            }
            Cause::Internal => VeilError::Internal(text),
        }
    }
}

impl fmt::Display for BelowBarrierError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.dataset;
        if let Some(failure) = &self.failure {
            return write!(f, "reading dataset '{d}' failed: {failure}");
        }
        match self.cause {
            Cause::Memory => write!(
                f,
                "reading dataset '{d}' needs more memory than Veil allows a query; select fewer columns or rows, or aggregate"
            ),
            Cause::SourceUnreachable => write!(
                f,
                "reading dataset '{d}' failed: its source can't be reached right now; retry later, and if it persists ask an administrator to check the server log"
            ),
            Cause::SourceBroken => write!(
                f,
                "reading dataset '{d}' failed at its source (a file is missing, unreadable or not valid); ask its owner to check the dataset's files"
            ),
            Cause::Query | Cause::Evaluation => write!(
                f,
                "reading dataset '{d}' failed while applying its source and policies; the details are in the Veil server log (ask an administrator)"
            ),
            Cause::Internal => write!(
                f,
                "reading dataset '{d}' failed on an internal error; it was logged (ask an administrator)"
            ),
        }
    }
}

impl StdError for BelowBarrierError {}

/// A Veil error or a barrier error anywhere in the chain.
fn find_own(e: &(dyn StdError + 'static)) -> Option<VeilError> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(v) = err.downcast_ref::<VeilError>() {
            return Some(v.clone());
        }
        if let Some(b) = err.downcast_ref::<BelowBarrierError>() {
            return Some(b.to_veil());
        }
        if let Some(f) = err.downcast_ref::<SourceFailure>() {
            return Some(VeilError::from(f.clone()));
        }
        let inner: Option<&(dyn StdError + 'static)> = match err.downcast_ref::<DataFusionError>() {
            Some(DataFusionError::External(inner)) => Some(inner.as_ref()),
            Some(DataFusionError::Shared(inner)) => Some(inner.as_ref()),
            Some(DataFusionError::ArrowError(a, _)) => match a.as_ref() {
                ArrowError::ExternalError(inner) => Some(inner.as_ref()),
                _ => None,
            },
            _ => None,
        };
        if let Some(v) = inner.and_then(find_own) {
            return Some(v);
        }
        cur = err.source();
    }
    None
}

/// The answer for a query error: its cause decides the code and Veil's
/// words; only the caller's own query errors keep the upstream text, as
/// detail for the caller.
pub fn from_datafusion(e: DataFusionError) -> VeilError {
    if let Some(v) = find_own(&e) {
        return v;
    }
    let cause = cause_of(&e);
    // `message()` panics on an empty collection: read it only for the
    // caller's own query errors, which always have one.
    let text = || {
        let msg = e.message();
        // DataFusion's internal errors ask to report a bug in it; the
        // ones classified as the caller's (a pattern that doesn't
        // compile) are not.
        let msg = msg
            .split("\nThis issue was likely caused by a bug in DataFusion")
            .next()
            .unwrap_or_default()
            .to_string();
        (class_of(&msg), crate::error::hints::plain_words(&msg))
    };
    match cause {
        // The caller's query, over values the caller may read (errors
        // below a barrier became a BelowBarrierError, handled above).
        Cause::Query => {
            let (class, msg) = text();
            VeilError::InvalidArgument(VeilError::detailed(
                format!("the query is not valid ({class})"),
                msg,
            ))
        }
        Cause::Evaluation => {
            let (class, msg) = text();
            VeilError::InvalidArgument(VeilError::detailed(
                format!("the query failed while running ({class})"),
                msg,
            ))
        }
        Cause::Memory => VeilError::ResourceExhausted(
            "the query needs more memory than Veil allows; select fewer columns or rows, or aggregate"
                .into(),
        ),
        Cause::SourceUnreachable => {
            tracing::warn!(error = %describe(&e), "a source could not be reached");
            VeilError::Unavailable(
                "reading data failed: its source can't be reached right now; retry later, and if it persists ask an administrator to check the server log"
                    .into(),
            )
        }
        Cause::SourceBroken => {
            tracing::warn!(error = %describe(&e), "a source could not be read");
            VeilError::FailedPrecondition(
                "reading data failed at its source (a file is missing, unreadable or not valid); ask the dataset's owner to check its files"
                    .into(),
            )
        }
        Cause::Internal => {
            tracing::error!(error = %describe(&e), "internal query error");
            VeilError::Internal(
                "an internal error occurred while running the query; it was logged".into(),
            )
        }
    }
}

/// [`from_datafusion`] for an Arrow error (one raised while encoding a
/// stream, say).
pub fn from_arrow(e: ArrowError) -> VeilError {
    from_datafusion(DataFusionError::ArrowError(Box::new(e), None))
}

/// The store's answer when a dataset's files can't be listed: unreachable
/// stores are retried later, the rest is for the owner. The store's text
/// (it names the store and the path) goes to the log only.
pub fn listing_failed(e: &object_store::Error) -> VeilError {
    tracing::warn!(error = %e, "listing a remote dataset failed");
    match store_cause(e) {
        Cause::SourceUnreachable => VeilError::Unavailable(
            "the dataset's store can't be reached right now; retry later, and if it persists ask an administrator to check the server log"
                .into(),
        ),
        Cause::Internal => VeilError::internal("listing a dataset", e),
        _ => VeilError::FailedPrecondition(
            "the dataset's files are not readable right now; ask its owner to check the location"
                .into(),
        ),
    }
}

#[cfg(test)]
pub(crate) mod tests;
