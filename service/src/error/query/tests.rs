//! The translation table: every upstream error Veil can meet, what the
//! caller gets for it above a policy barrier and below one, and that no
//! value it quotes reaches the audit form or the log form. The barrier's
//! own tests (`crate::policy::barrier`) run the same table through a
//! stream that fails mid-way.

use super::*;
use datafusion::common::{Diagnostic, SchemaError};
use std::sync::Arc;
use tonic::Code;

/// A value from the data, quoted by upstream error text.
pub(crate) const SECRET: &str = "777-21-2703";

/// One upstream error and its translation.
pub(crate) struct Row {
    pub name: &'static str,
    pub error: fn() -> DataFusionError,
    /// Above a barrier: the caller's own query.
    pub above: Code,
    /// Raised below a barrier (a source or policy failure).
    pub below: Code,
    /// Does the caller read the upstream text (their own query's error)?
    pub detail: bool,
}

fn s() -> String {
    format!("'{SECRET}'")
}

fn boxed(msg: String) -> Box<dyn StdError + Send + Sync> {
    msg.into()
}

fn io(kind: ErrorKind) -> std::io::Error {
    std::io::Error::new(kind, s())
}

fn arrow(a: ArrowError) -> DataFusionError {
    DataFusionError::ArrowError(Box::new(a), None)
}

fn store(o: object_store::Error) -> DataFusionError {
    DataFusionError::ObjectStore(Box::new(o))
}

use Code::{FailedPrecondition as Fp, Internal as In, InvalidArgument as Ia};
use Code::{ResourceExhausted as Re, Unavailable as Un};

#[rustfmt::skip]
pub(crate) fn table() -> Vec<Row> {
    let row = |name: &'static str, error: fn() -> DataFusionError, above: Code, below: Code, detail: bool| Row { name, error, above, below, detail };
    vec![
        // DataFusion's own variants.
        row("sql", || DataFusionError::SQL(Box::new(datafusion::sql::sqlparser::parser::ParserError::ParserError(s())), None), Ia, Fp, true),
        row("plan", || DataFusionError::Plan(s()), Ia, Fp, true),
        row("schema", || DataFusionError::SchemaError(Box::new(SchemaError::FieldNotFound { field: Box::new(datafusion::common::Column::from_name(s())), valid_fields: vec![] }), Box::new(None)), Ia, Fp, true),
        row("not implemented", || DataFusionError::NotImplemented(s()), Ia, Fp, true),
        row("configuration", || DataFusionError::Configuration(s()), Ia, Fp, true),
        row("execution", || DataFusionError::Execution(format!("regexp_match failed on {}", s())), Ia, Fp, true),
        row("resources exhausted", || DataFusionError::ResourcesExhausted(s()), Re, Re, false),
        row("internal", || DataFusionError::Internal(s()), In, In, false),
        row("join", || DataFusionError::ExecutionJoin(Box::new(join_error())), In, In, false),
        row("substrait", || DataFusionError::Substrait(s()), In, In, false),
        row("ffi", || DataFusionError::Ffi(s()), In, In, false),
        row("context", || DataFusionError::Context(s(), Box::new(DataFusionError::ResourcesExhausted(s()))), Re, Re, false),
        row("diagnostic", || DataFusionError::Diagnostic(Box::new(Diagnostic::new_error(s(), None)), Box::new(DataFusionError::Plan(s()))), Ia, Fp, true),
        row("shared", || DataFusionError::Shared(Arc::new(store(object_store::Error::Generic { store: "S3", source: boxed(s()) }))), Un, Un, false),
        row("collection", || DataFusionError::Collection(vec![DataFusionError::ResourcesExhausted(s()), DataFusionError::Plan(s())]), Re, Re, false),
        // Arrow's, every variant.
        row("arrow not yet implemented", || arrow(ArrowError::NotYetImplemented(s())), Ia, Fp, true),
        row("arrow cast", || arrow(ArrowError::CastError(format!("Cannot cast string {} to value of Int64 type", s()))), Ia, Fp, true),
        row("arrow memory", || arrow(ArrowError::MemoryError(s())), Re, Re, false),
        row("arrow parse", || arrow(ArrowError::ParseError(s())), Ia, Fp, true),
        row("arrow schema", || arrow(ArrowError::SchemaError(s())), Ia, Fp, true),
        row("arrow compute", || arrow(ArrowError::ComputeError(format!("Overflow happened on: {} * 10", s()))), Ia, Fp, true),
        row("arrow divide by zero", || arrow(ArrowError::DivideByZero), Ia, Fp, true),
        row("arrow overflow", || arrow(ArrowError::ArithmeticOverflow(s())), Ia, Fp, true),
        row("arrow invalid argument", || arrow(ArrowError::InvalidArgumentError(s())), Ia, Fp, true),
        row("arrow dictionary key overflow", || arrow(ArrowError::DictionaryKeyOverflowError), Ia, Fp, true),
        row("arrow run end overflow", || arrow(ArrowError::RunEndIndexOverflowError), Ia, Fp, true),
        row("arrow offset overflow", || arrow(ArrowError::OffsetOverflowError(7)), Ia, Fp, true),
        row("arrow csv", || arrow(ArrowError::CsvError(s())), Fp, Fp, false),
        row("arrow json", || arrow(ArrowError::JsonError(s())), Fp, Fp, false),
        row("arrow avro", || arrow(ArrowError::AvroError(s())), Fp, Fp, false),
        row("arrow parquet", || arrow(ArrowError::ParquetError(s())), Fp, Fp, false),
        row("arrow io timeout", || arrow(ArrowError::IoError(s(), io(ErrorKind::TimedOut))), Un, Un, false),
        row("arrow io not found", || arrow(ArrowError::IoError(s(), io(ErrorKind::NotFound))), Fp, Fp, false),
        row("arrow ipc", || arrow(ArrowError::IpcError(s())), In, In, false),
        row("arrow c data", || arrow(ArrowError::CDataInterface(s())), In, In, false),
        row("arrow external store", || arrow(ArrowError::ExternalError(Box::new(object_store::Error::Generic { store: "S3", source: boxed(s()) }))), Un, Un, false),
        row("arrow external regex", || arrow(ArrowError::ExternalError(boxed(s()))), Ia, Fp, true),
        // Parquet's.
        row("parquet general", || DataFusionError::ParquetError(Box::new(ParquetError::General(s()))), Fp, Fp, false),
        row("parquet eof", || DataFusionError::ParquetError(Box::new(ParquetError::EOF(s()))), Fp, Fp, false),
        row("parquet nyi", || DataFusionError::ParquetError(Box::new(ParquetError::NYI(s()))), Fp, Fp, false),
        row("parquet arrow", || DataFusionError::ParquetError(Box::new(ParquetError::ArrowError(s()))), Fp, Fp, false),
        row("parquet index", || DataFusionError::ParquetError(Box::new(ParquetError::IndexOutOfBound(1, 0))), Fp, Fp, false),
        row("parquet need more", || DataFusionError::ParquetError(Box::new(ParquetError::NeedMoreData(8))), Fp, Fp, false),
        row("parquet need range", || DataFusionError::ParquetError(Box::new(ParquetError::NeedMoreDataRange(0..8))), Fp, Fp, false),
        row("parquet external store", || DataFusionError::ParquetError(Box::new(ParquetError::External(Box::new(object_store::Error::Generic { store: "S3", source: boxed(s()) })))), Un, Un, false),
        // The object store's.
        row("store unreachable", || store(object_store::Error::Generic { store: "S3", source: boxed(format!("error sending request for 127.0.0.1:9000 {}", s())) }), Un, Un, false),
        row("store not found", || store(object_store::Error::NotFound { path: s(), source: boxed(s()) }), Fp, Fp, false),
        row("store invalid path", || store(object_store::Error::InvalidPath { source: object_store::path::Path::parse("a//b").unwrap_err() }), Fp, Fp, false),
        row("store not supported", || store(object_store::Error::NotSupported { source: boxed(s()) }), Fp, Fp, false),
        row("store already exists", || store(object_store::Error::AlreadyExists { path: s(), source: boxed(s()) }), Un, Un, false),
        row("store precondition", || store(object_store::Error::Precondition { path: s(), source: boxed(s()) }), Un, Un, false),
        row("store not modified", || store(object_store::Error::NotModified { path: s(), source: boxed(s()) }), Un, Un, false),
        row("store not implemented", || store(object_store::Error::NotImplemented { operation: s(), implementer: s() }), Fp, Fp, false),
        row("store permission", || store(object_store::Error::PermissionDenied { path: s(), source: boxed(s()) }), Fp, Fp, false),
        row("store credentials", || store(object_store::Error::Unauthenticated { path: s(), source: boxed(s()) }), Fp, Fp, false),
        row("store config key", || store(object_store::Error::UnknownConfigurationKey { store: "S3", key: s() }), Fp, Fp, false),
        // I/O.
        row("io timeout", || DataFusionError::IoError(io(ErrorKind::TimedOut)), Un, Un, false),
        row("io refused", || DataFusionError::IoError(io(ErrorKind::ConnectionRefused)), Un, Un, false),
        row("io not found", || DataFusionError::IoError(io(ErrorKind::NotFound)), Fp, Fp, false),
        row("io permission", || DataFusionError::IoError(io(ErrorKind::PermissionDenied)), Fp, Fp, false),
        row("io invalid data", || DataFusionError::IoError(io(ErrorKind::InvalidData)), Fp, Fp, false),
        // Readers that stream a store's bytes (CSV, JSON) see its error
        // through an io::Error of kind Other.
        row("io wrapping store unreachable", || arrow(ArrowError::ExternalError(Box::new(std::io::Error::other(object_store::Error::Generic { store: "S3", source: boxed(s()) })))), Un, Un, false),
        row("io wrapping store not found", || DataFusionError::IoError(std::io::Error::other(object_store::Error::NotFound { path: s(), source: boxed(s()) })), Fp, Fp, false),
        row("io other", || DataFusionError::IoError(io(ErrorKind::Other)), Fp, Fp, false),
        row("io out of memory", || DataFusionError::IoError(io(ErrorKind::OutOfMemory)), Re, Re, false),
        // Boxed by a layer.
        row("external io", || DataFusionError::External(Box::new(io(ErrorKind::TimedOut))), Un, Un, false),
        row("external parquet", || DataFusionError::External(Box::new(ParquetError::General(s()))), Fp, Fp, false),
        row("external store", || DataFusionError::External(Box::new(object_store::Error::NotFound { path: s(), source: boxed(s()) })), Fp, Fp, false),
        row("external datafusion", || DataFusionError::External(Box::new(DataFusionError::ResourcesExhausted(s()))), Re, Re, false),
        row("external library", || DataFusionError::External(boxed(format!("regex parse error {}", s()))), Ia, Fp, true),
    ]
}

/// A real task failure, as DataFusion reports a panicked or cancelled task.
fn join_error() -> tokio::task::JoinError {
    // On a thread of its own: the caller may already be inside a runtime.
    std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let task = tokio::spawn(std::future::pending::<()>());
            task.abort();
            task.await.unwrap_err()
        })
    })
    .join()
    .unwrap()
}

/// Veil's own error inside DataFusion's is answered as itself.
#[test]
fn veil_errors_pass_through_every_wrapper() {
    let own = || VeilError::PermissionDenied("no".into());
    let wrapped = [
        DataFusionError::External(Box::new(own())),
        DataFusionError::Context(
            "c".into(),
            Box::new(DataFusionError::External(Box::new(own()))),
        ),
        DataFusionError::Shared(Arc::new(DataFusionError::External(Box::new(own())))),
        arrow(ArrowError::ExternalError(Box::new(own()))),
    ];
    for e in wrapped {
        assert_eq!(from_datafusion(e), own());
    }
}

/// One check of one translated error.
pub(crate) fn check(row: &Row, v: &VeilError, expected: Code, where_: &str) {
    let name = row.name;
    assert_eq!(v.code(), expected, "{name} ({where_}): {v:?}");
    assert!(
        !v.audit_message().contains(SECRET),
        "{name} ({where_}) audit: {v:?}"
    );
    assert!(
        !v.to_string().contains(SECRET),
        "{name} ({where_}) log: {v:?}"
    );
    // Only the caller's own query errors, above the barrier, quote
    // upstream text, and only for the caller.
    let shown = v.client_message().contains(SECRET);
    let upstream = (row.error)().to_string().contains(SECRET);
    let allowed = row.detail && where_ == "above";
    assert_eq!(
        shown,
        allowed && upstream,
        "{name} ({where_}) client: {v:?}"
    );
    assert!(!v.client_message().contains("127.0.0.1"), "{name}: {v:?}");
}

#[test]
fn every_upstream_error_translates_by_its_cause() {
    for row in table() {
        let e = (row.error)();
        // The log keeps the text of store and I/O errors only (they name
        // paths, for operators), never of the others.
        assert!(
            !describe(&e).contains(SECRET)
                || matches!(
                    e,
                    DataFusionError::IoError(_) | DataFusionError::ObjectStore(_)
                )
                || matches!(cause_of(&e), Cause::SourceUnreachable | Cause::SourceBroken),
            "{}: log form {}",
            row.name,
            describe(&e)
        );
        check(&row, &from_datafusion((row.error)()), row.above, "above");
        let below = below_barrier("sales.orders", &(row.error)());
        let v = from_datafusion(below);
        check(&row, &v, row.below, "below");
        assert!(
            v.client_message().contains("sales.orders"),
            "{}: {v:?}",
            row.name
        );
    }
}

#[test]
fn an_arrow_error_from_encoding_translates_like_one_from_running() {
    let v = from_arrow(ArrowError::MemoryError(s()));
    assert_eq!(v.code(), Code::ResourceExhausted);
    let v = from_arrow(ArrowError::CastError(s()));
    assert_eq!(v.code(), Code::InvalidArgument);
}

#[test]
fn listing_failures_say_whether_to_retry() {
    let down = object_store::Error::Generic {
        store: "S3",
        source: boxed("connect 127.0.0.1:9".into()),
    };
    let v = listing_failed(&down);
    assert_eq!(v.code(), Code::Unavailable);
    assert!(!v.client_message().contains("127.0.0.1"));
    let refused = object_store::Error::PermissionDenied {
        path: "lake/x".into(),
        source: boxed("403".into()),
    };
    assert_eq!(listing_failed(&refused).code(), Code::FailedPrecondition);
}

/// The audit words keep the class of the failure, never its text.
#[test]
fn audit_form_names_the_class() {
    let v = from_datafusion(arrow(ArrowError::CastError(format!(
        "Cannot cast string {}",
        s()
    ))));
    assert!(v.client_message().contains(SECRET));
    assert_eq!(
        v.audit_message(),
        "the query failed while running (a value could not be converted to another type)"
    );
}

#[test]
fn a_literal_the_optimizer_cannot_fold_is_a_query_error_in_plain_words() {
    let folded = DataFusionError::Context(
        "Optimizer rule 'simplify_expressions' failed".into(),
        Box::new(arrow(ArrowError::CastError(
            "Cannot cast string 'abc' to value of Int32 type".into(),
        ))),
    );
    assert_eq!(cause_of(&folded), Cause::Query);
    let v = from_datafusion(folded);
    let m = v.client_message();
    assert!(m.starts_with("the query is not valid ("), "{m}");
    assert!(!m.contains("Optimizer rule"), "{m}");
    assert!(m.contains("Cannot cast string 'abc'"), "{m}");
    assert!(!v.audit_message().contains("abc"), "{}", v.audit_message());
    // Other contexts keep their inner error's cause.
    let running = DataFusionError::Context(
        "reading".into(),
        Box::new(arrow(ArrowError::CastError("x".into()))),
    );
    assert_eq!(cause_of(&running), Cause::Evaluation);
}
