//! PostgreSQL: discovering a relation's dictionary, and streaming a
//! statement's rows as Arrow batches.
//!
//! Every session is read-only (`default_transaction_read_only`), runs in
//! UTC with `standard_conforming_strings` (so `sql`'s literals mean what
//! they say) and under the connection's `statement_timeout`. A read runs in
//! a read-only transaction and fetches its rows through a portal,
//! `batch_size` rows at a time, so memory stays bounded whatever the table's
//! size and a reader that leaves stops the statement.

use datafusion::arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Float32Array, Float64Array, Int16Array,
    Int32Array, Int64Array, ListBuilder, PrimitiveBuilder, StringArray, StringBuilder,
    Time64MicrosecondArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Field, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type,
    SchemaRef, TimeUnit,
};
use datafusion::arrow::record_batch::RecordBatch;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OnceCell, mpsc};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, Kind, Type};
use tokio_postgres::{NoTls, Row};

use super::sql::from_clause;
use super::{Discovered, DiscoveredColumn, Password};
use crate::config::{ConnectionConfig, DatabaseTls};
use crate::error::source::{SourceFailure, SourceFailureKind};
use crate::error::{Result, VeilError};
use crate::model::dataset::{DatabaseEngine, DatabaseRelation};

type Failure = SourceFailure;

/// The TLS connector of a connection with `tls = "require"`.
#[derive(Clone)]
struct Tls(tokio_postgres_rustls::MakeRustlsConnect);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls(rustls)")
    }
}

#[derive(Debug, Clone)]
pub struct Postgres {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    connection: String,
    host: String,
    port: u16,
    user: String,
    database: String,
    password: Password,
    tls: Option<Tls>,
    max_connections: usize,
    connect_timeout: Duration,
    statement_timeout: Duration,
    /// Opened on first use; a failure is not kept (the next use retries).
    pool: OnceCell<Pool>,
}

impl Postgres {
    pub(super) fn new(
        c: &ConnectionConfig,
        password: Password,
        ca_file: Option<PathBuf>,
    ) -> Result<Self> {
        let tls = match c.tls {
            DatabaseTls::Disable => None,
            DatabaseTls::Require => {
                let roots = super::tls_roots(&c.name, ca_file.as_deref())?;
                Some(Tls(tokio_postgres_rustls::MakeRustlsConnect::new(
                    super::tls_config(&c.name, roots)?,
                )))
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                connection: c.name.clone(),
                host: c.host.clone(),
                port: c.port.unwrap_or(5432),
                user: c.user.clone(),
                database: c.database.clone(),
                password,
                tls,
                max_connections: c.max_connections,
                connect_timeout: Duration::from_secs(c.connect_timeout_secs.max(1)),
                statement_timeout: Duration::from_secs(c.statement_timeout_secs),
                pool: OnceCell::new(),
            }),
        })
    }

    fn failure(&self, kind: SourceFailureKind) -> Failure {
        SourceFailure::new(&self.inner.connection, kind)
    }

    async fn pool(&self) -> Result<&Pool> {
        let i = &self.inner;
        i.pool
            .get_or_try_init(|| async {
                let mut config = tokio_postgres::Config::new();
                config
                    .host(&i.host)
                    .port(i.port)
                    .user(&i.user)
                    .dbname(&i.database)
                    .application_name("veil")
                    .connect_timeout(i.connect_timeout);
                if let Some(p) = i.password.read()? {
                    config.password(p);
                }
                let mut options = String::from(
                    "-c default_transaction_read_only=on -c standard_conforming_strings=on -c TimeZone=UTC -c DateStyle=ISO -c extra_float_digits=3",
                );
                if !i.statement_timeout.is_zero() {
                    options.push_str(&format!(
                        " -c statement_timeout={}",
                        i.statement_timeout.as_millis()
                    ));
                }
                config.options(options);
                let manager_config = ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                };
                let manager = match &i.tls {
                    None => Manager::from_config(config, NoTls, manager_config),
                    Some(tls) => Manager::from_config(config, tls.0.clone(), manager_config),
                };
                Pool::builder(manager)
                    .max_size(i.max_connections)
                    .build()
                    .map_err(|e| VeilError::internal("a database connection pool", e))
            })
            .await
    }

    /// A connection, waiting for one while the pool is at its cap (for at
    /// most the statement timeout).
    async fn client(&self) -> std::result::Result<deadpool_postgres::Object, Failure> {
        let pool = self.pool().await.map_err(|e| {
            tracing::warn!(connection = %self.inner.connection, error = %e.audit_message(), "a database connection could not be set up");
            self.failure(SourceFailureKind::Unreachable)
        })?;
        let wait = if self.inner.statement_timeout.is_zero() {
            Duration::from_secs(300)
        } else {
            self.inner.statement_timeout
        };
        match tokio::time::timeout(wait, pool.get()).await {
            Err(_) => {
                tracing::warn!(connection = %self.inner.connection, "every connection to the database stayed busy");
                Err(self.failure(SourceFailureKind::Unreachable))
            }
            Ok(Ok(c)) => Ok(c),
            Ok(Err(deadpool_postgres::PoolError::Backend(e))) => Err(self.classify(&e, false)),
            Ok(Err(e)) => {
                tracing::warn!(connection = %self.inner.connection, error = %e, "no database connection");
                Err(self.failure(SourceFailureKind::Unreachable))
            }
        }
    }

    /// What a driver error means for the caller; its text (which may quote
    /// a value) stays out of the log, its SQLSTATE goes in.
    fn classify(&self, e: &tokio_postgres::Error, streaming: bool) -> Failure {
        let kind = match e.code() {
            Some(c) if *c == SqlState::QUERY_CANCELED => SourceFailureKind::Timeout,
            Some(c)
                if *c == SqlState::INVALID_PASSWORD
                    || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                    || *c == SqlState::INSUFFICIENT_PRIVILEGE =>
            {
                SourceFailureKind::CredentialsRefused
            }
            Some(c)
                if *c == SqlState::ADMIN_SHUTDOWN
                    || *c == SqlState::CRASH_SHUTDOWN
                    || *c == SqlState::CANNOT_CONNECT_NOW
                    || *c == SqlState::TOO_MANY_CONNECTIONS
                    || *c == SqlState::INVALID_CATALOG_NAME =>
            {
                if streaming {
                    SourceFailureKind::Dropped
                } else {
                    SourceFailureKind::Unreachable
                }
            }
            Some(_) => SourceFailureKind::Changed,
            None if streaming => SourceFailureKind::Dropped,
            None => SourceFailureKind::Unreachable,
        };
        match e.code() {
            Some(code) => {
                tracing::warn!(connection = %self.inner.connection, sqlstate = code.code(), ?kind, "a database statement failed")
            }
            // No SQLSTATE: a connection-level failure, whose text names
            // no value.
            None => {
                tracing::warn!(connection = %self.inner.connection, error = %e, ?kind, "a database connection failed")
            }
        }
        self.failure(kind)
    }

    pub(super) async fn discover(&self, relation: &DatabaseRelation) -> Result<Discovered> {
        let dataset_error = |f: Failure| VeilError::from(f);
        let client = self.client().await.map_err(dataset_error)?;
        let from = from_clause(DatabaseEngine::Postgres, relation);
        let statement = client
            .prepare(&format!("SELECT * FROM {from}"))
            .await
            .map_err(|e| describe_error(&self.inner.connection, relation, &e))?;
        let mut columns = Vec::new();
        for c in statement.columns() {
            let database_type: String = client
                .query_one(
                    "SELECT format_type($1::oid, $2::int4)",
                    &[&c.type_().oid(), &c.type_modifier()],
                )
                .await
                .map_err(|e| dataset_error(self.classify(&e, false)))?
                .get(0);
            columns.push(DiscoveredColumn {
                name: c.name().to_string(),
                data_type: arrow_type(c.type_(), c.type_modifier()),
                nullable: true,
                description: String::new(),
                database_type,
            });
        }
        let mut found = Discovered {
            columns,
            primary_key: vec![],
            description: String::new(),
        };
        if let DatabaseRelation::Table { schema, name } = relation {
            let oid: u32 = client
                .query_one(
                    "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
                    &[schema, name],
                )
                .await
                .map_err(|e| dataset_error(self.classify(&e, false)))?
                .get(0);
            let rows = client
                .query(
                    "SELECT a.attname::text, a.attnotnull, coalesce(col_description(a.attrelid, a.attnum), ''), coalesce((SELECT NOT c.collisdeterministic FROM pg_collation c WHERE c.oid = a.attcollation), false) FROM pg_attribute a WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped",
                    &[&oid],
                )
                .await
                .map_err(|e| dataset_error(self.classify(&e, false)))?;
            for r in rows {
                let (name, not_null, comment, nondeterministic): (String, bool, String, bool) =
                    (r.get(0), r.get(1), r.get(2), r.get(3));
                if let Some(c) = found.columns.iter_mut().find(|c| c.name == name) {
                    c.nullable = !not_null;
                    c.description = comment;
                    // Its `=` matches more than its bytes, and LIKE fails:
                    // filters on it compare loosely (`sql::source_column`).
                    if nondeterministic {
                        c.database_type.push_str(super::sql::NONDETERMINISTIC);
                    }
                }
            }
            found.description = client
                .query_one(
                    "SELECT coalesce(obj_description($1, 'pg_class'), '')",
                    &[&oid],
                )
                .await
                .map_err(|e| dataset_error(self.classify(&e, false)))?
                .get(0);
            found.primary_key = client
                .query(
                    "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = $1 AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)",
                    &[&oid],
                )
                .await
                .map_err(|e| dataset_error(self.classify(&e, false)))?
                .iter()
                .map(|r| r.get(0))
                .collect();
        }
        Ok(found)
    }

    pub(super) fn max_connections(&self) -> usize {
        self.inner.max_connections
    }

    /// The key's smallest and largest values and the table's estimated
    /// rows (`None`: an empty table, or no estimate yet).
    pub(super) async fn key_bounds(
        &self,
        schema: &str,
        table: &str,
        key: &str,
    ) -> std::result::Result<Option<(i64, i64, u64)>, Failure> {
        let client = self.client().await?;
        let from = from_clause(
            DatabaseEngine::Postgres,
            &DatabaseRelation::Table {
                schema: schema.into(),
                name: table.into(),
            },
        );
        let estimate: Option<f32> = client
            .query_opt(
                "SELECT c.reltuples FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
                &[&schema, &table],
            )
            .await
            .map_err(|e| self.classify(&e, false))?
            .map(|r| r.get(0));
        let row = client
            .query_one(
                &format!("SELECT min({key})::int8, max({key})::int8 FROM {from}"),
                &[],
            )
            .await
            .map_err(|e| self.classify(&e, false))?;
        let (min, max): (Option<i64>, Option<i64>) = (row.get(0), row.get(1));
        Ok(match (min, max, estimate) {
            (Some(min), Some(max), Some(rows)) if rows > 0.0 => Some((min, max, rows as u64)),
            _ => None,
        })
    }

    pub(super) async fn run(
        &self,
        statement: &str,
        schema: SchemaRef,
        batch_size: usize,
        tx: &mpsc::Sender<std::result::Result<RecordBatch, Failure>>,
    ) -> std::result::Result<(), Failure> {
        let mut client = self.client().await?;
        let cancel = client.cancel_token();
        let txn = client
            .build_transaction()
            .read_only(true)
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .start()
            .await
            .map_err(|e| self.classify(&e, false))?;
        let prepared = txn
            .prepare(statement)
            .await
            .map_err(|e| self.classify(&e, false))?;
        if prepared.columns().len() != schema.fields().len() && !schema.fields().is_empty() {
            tracing::warn!(connection = %self.inner.connection, "the statement's columns differ from the dataset's");
            return Err(self.failure(SourceFailureKind::Changed));
        }
        let portal = txn
            .bind(&prepared, &[])
            .await
            .map_err(|e| self.classify(&e, false))?;
        let chunk = i32::try_from(batch_size).unwrap_or(i32::MAX);
        loop {
            let rows = tokio::select! {
                r = txn.query_portal(&portal, chunk) => r.map_err(|e| self.classify(&e, true))?,
                _ = tx.closed() => {
                    // The reader left: stop the statement rather than let
                    // the database finish it for nobody.
                    let _ = match &self.inner.tls {
                        None => cancel.cancel_query(NoTls).await,
                        Some(tls) => cancel.cancel_query(tls.0.clone()).await,
                    };
                    return Ok(());
                }
            };
            let n = rows.len();
            if n > 0 {
                let batch = super::to_batch(rows.len(), &schema, |i, dt| column(&rows, i, dt)).map_err(|kind| {
                    tracing::warn!(connection = %self.inner.connection, "a database value does not fit the dataset's dictionary");
                    self.failure(kind)
                })?;
                if tx.send(Ok(batch)).await.is_err() {
                    return Ok(());
                }
            }
            if n < batch_size {
                break;
            }
        }
        // Read-only: nothing to keep; ending it frees the snapshot.
        let _ = txn.rollback().await;
        Ok(())
    }
}

/// Registration failed: say why, naming the relation (the owner's own
/// words) and the SQLSTATE, never the database's text.
fn describe_error(
    connection: &str,
    relation: &DatabaseRelation,
    e: &tokio_postgres::Error,
) -> VeilError {
    let what = match relation {
        DatabaseRelation::Table { schema, name } => format!("table {schema}.{name}"),
        DatabaseRelation::Query { .. } => "the query".to_string(),
    };
    match e.code() {
        Some(c) if *c == SqlState::UNDEFINED_TABLE => VeilError::InvalidArgument(format!(
            "{what} does not exist on database connection '{connection}' (or Veil's user can't see it)"
        )),
        Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => VeilError::PermissionDenied(format!(
            "database connection '{connection}' may not read {what}: grant SELECT on it to Veil's database user"
        )),
        Some(c) if c.code().starts_with("42") => VeilError::InvalidArgument(format!(
            "{what} is not a valid read on database connection '{connection}' (SQLSTATE {}); check it with the database's own client",
            c.code()
        )),
        Some(c) if c.code() == "25006" => VeilError::InvalidArgument(format!(
            "{what} writes to the database; a dataset's query may only read (SQLSTATE 25006)"
        )),
        _ => VeilError::Unavailable(format!(
            "database connection '{connection}' could not describe {what}; retry later, and if it persists ask an administrator to check the Veil server log"
        )),
    }
}

/// How Veil serves a PostgreSQL type (`typmod`: its modifier, -1 if none).
pub fn arrow_type(ty: &Type, typmod: i32) -> DataType {
    if let Kind::Array(item) = ty.kind() {
        let item_type = match scalar_type(item, -1) {
            t @ (DataType::Boolean
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Float32
            | DataType::Float64
            | DataType::Utf8) => t,
            _ => return DataType::Utf8,
        };
        return DataType::List(Arc::new(Field::new("item", item_type, true)));
    }
    scalar_type(ty, typmod)
}

fn scalar_type(ty: &Type, typmod: i32) -> DataType {
    match *ty {
        Type::BOOL => DataType::Boolean,
        Type::INT2 => DataType::Int16,
        Type::INT4 => DataType::Int32,
        Type::INT8 => DataType::Int64,
        Type::FLOAT4 => DataType::Float32,
        Type::FLOAT8 => DataType::Float64,
        Type::BYTEA => DataType::Binary,
        Type::DATE => DataType::Date32,
        Type::TIMESTAMP => DataType::Timestamp(TimeUnit::Microsecond, None),
        Type::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        Type::TIME => DataType::Time64(TimeUnit::Microsecond),
        Type::NUMERIC if typmod >= 4 => {
            let precision = ((typmod - 4) >> 16) & 0xffff;
            let scale = (typmod - 4) & 0xffff;
            if (1..=38).contains(&precision) && scale <= precision {
                DataType::Decimal128(precision as u8, scale as i8)
            } else {
                DataType::Utf8
            }
        }
        // Text, and everything else (uuid, json, numeric without a
        // precision, intervals, enums...) as its text.
        _ => DataType::Utf8,
    }
}

fn values<'a, T: FromSql<'a>>(
    rows: &'a [Row],
    i: usize,
) -> std::result::Result<Vec<Option<T>>, SourceFailureKind> {
    rows.iter()
        .map(|r| r.try_get::<_, Option<T>>(i))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| SourceFailureKind::Changed)
}

fn column(
    rows: &[Row],
    i: usize,
    dt: &DataType,
) -> std::result::Result<ArrayRef, SourceFailureKind> {
    use chrono::{NaiveDate, NaiveDateTime, NaiveTime, Timelike};
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date");
    Ok(match dt {
        DataType::Boolean => Arc::new(BooleanArray::from(values::<bool>(rows, i)?)),
        DataType::Int16 => Arc::new(Int16Array::from(values::<i16>(rows, i)?)),
        DataType::Int32 => Arc::new(Int32Array::from(values::<i32>(rows, i)?)),
        DataType::Int64 => Arc::new(Int64Array::from(values::<i64>(rows, i)?)),
        DataType::Float32 => Arc::new(Float32Array::from(values::<f32>(rows, i)?)),
        DataType::Float64 => Arc::new(Float64Array::from(values::<f64>(rows, i)?)),
        DataType::Utf8 => Arc::new(StringArray::from(values::<&str>(rows, i)?)),
        DataType::Binary => Arc::new(BinaryArray::from(values::<&[u8]>(rows, i)?)),
        DataType::Date32 => {
            let v = values::<NaiveDate>(rows, i)?
                .into_iter()
                .map(|d| d.map(|d| i32::try_from((d - epoch).num_days())).transpose())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|_| SourceFailureKind::Changed)?;
            Arc::new(Date32Array::from(v))
        }
        DataType::Timestamp(TimeUnit::Microsecond, None) => {
            let v: Vec<Option<i64>> = values::<NaiveDateTime>(rows, i)?
                .into_iter()
                .map(|t| t.map(|t| t.and_utc().timestamp_micros()))
                .collect();
            Arc::new(TimestampMicrosecondArray::from(v))
        }
        DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) => {
            let v: Vec<Option<i64>> = values::<chrono::DateTime<chrono::Utc>>(rows, i)?
                .into_iter()
                .map(|t| t.map(|t| t.timestamp_micros()))
                .collect();
            Arc::new(TimestampMicrosecondArray::from(v).with_timezone(Arc::clone(tz)))
        }
        DataType::Time64(TimeUnit::Microsecond) => {
            let v: Vec<Option<i64>> = values::<NaiveTime>(rows, i)?
                .into_iter()
                .map(|t| {
                    t.map(|t| {
                        i64::from(t.num_seconds_from_midnight()) * 1_000_000
                            + i64::from(t.nanosecond() / 1000)
                    })
                })
                .collect();
            Arc::new(Time64MicrosecondArray::from(v))
        }
        DataType::Decimal128(..) => {
            // Read as text (`numeric::text`), parsed exactly; a value that
            // doesn't fit (NaN, too many digits) fails the read.
            let text = StringArray::from(values::<&str>(rows, i)?);
            datafusion::arrow::compute::cast_with_options(
                &text,
                dt,
                &datafusion::arrow::compute::CastOptions {
                    safe: false,
                    ..Default::default()
                },
            )
            .map_err(|_| SourceFailureKind::Changed)?
        }
        DataType::List(item) => match item.data_type() {
            DataType::Boolean => {
                let mut b = ListBuilder::new(datafusion::arrow::array::BooleanBuilder::new());
                for v in values::<Vec<Option<bool>>>(rows, i)? {
                    match v {
                        Some(items) => {
                            b.values().extend(items);
                            b.append(true);
                        }
                        None => b.append(false),
                    }
                }
                Arc::new(b.finish())
            }
            DataType::Int16 => primitive_list::<Int16Type, i16>(rows, i)?,
            DataType::Int32 => primitive_list::<Int32Type, i32>(rows, i)?,
            DataType::Int64 => primitive_list::<Int64Type, i64>(rows, i)?,
            DataType::Float32 => primitive_list::<Float32Type, f32>(rows, i)?,
            DataType::Float64 => primitive_list::<Float64Type, f64>(rows, i)?,
            DataType::Utf8 => {
                let mut b = ListBuilder::new(StringBuilder::new());
                for v in values::<Vec<Option<&str>>>(rows, i)? {
                    match v {
                        Some(items) => {
                            for s in items {
                                b.values().append_option(s);
                            }
                            b.append(true);
                        }
                        None => b.append(false),
                    }
                }
                Arc::new(b.finish())
            }
            _ => return Err(SourceFailureKind::Changed),
        },
        _ => return Err(SourceFailureKind::Changed),
    })
}

fn primitive_list<T, N>(rows: &[Row], i: usize) -> std::result::Result<ArrayRef, SourceFailureKind>
where
    T: ArrowPrimitiveType<Native = N>,
    N: for<'a> FromSql<'a>,
{
    let mut b = ListBuilder::new(PrimitiveBuilder::<T>::new());
    for v in values::<Vec<Option<N>>>(rows, i)? {
        match v {
            Some(items) => {
                b.values().extend(items);
                b.append(true);
            }
            None => b.append(false),
        }
    }
    Ok(Arc::new(b.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    /// Every type discovery can produce survives the dictionary's text form.
    #[test]
    fn served_types_round_trip_through_the_dictionary() {
        for (ty, typmod) in [
            (Type::NUMERIC, (10 << 16) + 2 + 4),
            (Type::INT4_ARRAY, -1),
            (Type::TEXT_ARRAY, -1),
            (Type::TIMESTAMPTZ, -1),
            (Type::TIME, -1),
        ] {
            let dt = arrow_type(&ty, typmod);
            assert_eq!(DataType::from_str(&dt.to_string()).unwrap(), dt, "{ty}");
        }
        assert_eq!(arrow_type(&Type::NUMERIC, -1), DataType::Utf8);
        assert_eq!(
            arrow_type(&Type::NUMERIC, (10 << 16) + 2 + 4),
            DataType::Decimal128(10, 2)
        );
        assert_eq!(arrow_type(&Type::UUID, -1), DataType::Utf8);
        assert_eq!(
            arrow_type(&Type::JSONB_ARRAY, -1),
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
        );
    }
}
