//! MySQL and MariaDB: discovering a relation's dictionary, and streaming a
//! statement's rows as Arrow batches.
//!
//! Every session is read-only (`SET SESSION TRANSACTION READ ONLY`), runs
//! in UTC with `utf8mb4` and `NO_BACKSLASH_ESCAPES` (so `sql`'s literals
//! mean what they say), and each statement under the connection's time
//! limit (`max_execution_time` on MySQL, `max_statement_time` on MariaDB).
//! Rows stream from the socket as they are read: memory stays bounded, and
//! a reader that leaves has its statement killed.

use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Float32Builder, Float64Builder,
    Int8Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder, UInt8Builder, UInt16Builder, UInt32Builder, UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Pool, PoolConstraints, PoolOpts, SslOpts, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OnceCell, mpsc};

use super::sql::from_clause;
use super::{Discovered, DiscoveredColumn, Password};
use crate::config::{ConnectionConfig, DatabaseTls};
use crate::error::source::{SourceFailure, SourceFailureKind};
use crate::error::{Result, VeilError};
use crate::model::dataset::{DatabaseEngine, DatabaseRelation};

type Failure = SourceFailure;

#[derive(Debug, Clone)]
pub struct Mysql {
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
    tls: Option<PathBuf>,
    tls_on: bool,
    max_connections: usize,
    connect_timeout: Duration,
    statement_timeout: Duration,
    pool: OnceCell<Pool>,
    /// MariaDB names the statement time limit differently.
    mariadb: OnceCell<bool>,
}

impl Mysql {
    pub(super) fn new(
        c: &ConnectionConfig,
        password: Password,
        ca_file: Option<PathBuf>,
    ) -> Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                connection: c.name.clone(),
                host: c.host.clone(),
                port: c.port.unwrap_or(3306),
                user: c.user.clone(),
                database: c.database.clone(),
                password,
                tls: ca_file,
                tls_on: c.tls == DatabaseTls::Require,
                max_connections: c.max_connections,
                connect_timeout: Duration::from_secs(c.connect_timeout_secs.max(1)),
                statement_timeout: Duration::from_secs(c.statement_timeout_secs),
                pool: OnceCell::new(),
                mariadb: OnceCell::new(),
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
                let constraints = PoolConstraints::new(0, i.max_connections).ok_or_else(|| {
                    VeilError::FailedPrecondition(format!(
                        "connection '{}': max_connections must be at least 1",
                        i.connection
                    ))
                })?;
                let mut opts = OptsBuilder::default()
                    .ip_or_hostname(i.host.clone())
                    .tcp_port(i.port)
                    .user(Some(i.user.clone()))
                    .db_name(Some(i.database.clone()))
                    // The configured address, always: never switch to a
                    // local socket behind TLS's and the config's back.
                    .prefer_socket(false)
                    // On every new connection and after every reset (a
                    // pooled connection's reset reverts session settings;
                    // `init` would run once): string literals rely on
                    // NO_BACKSLASH_ESCAPES, reads on READ ONLY and UTC.
                    .setup(vec![
                        "SET NAMES utf8mb4".to_string(),
                        "SET SESSION time_zone = '+00:00'".to_string(),
                        "SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'".to_string(),
                        "SET SESSION TRANSACTION READ ONLY".to_string(),
                    ])
                    .pool_opts(PoolOpts::default().with_constraints(constraints));
                if let Some(p) = i.password.read()? {
                    opts = opts.pass(Some(p));
                }
                if i.tls_on {
                    let mut ssl = SslOpts::default();
                    if let Some(ca) = &i.tls {
                        ssl = ssl.with_root_certs(vec![ca.clone().into()]);
                    }
                    opts = opts.ssl_opts(Some(ssl));
                }
                Ok(Pool::new(opts))
            })
            .await
    }

    /// What a driver error means for the caller; its text (which may quote
    /// a value) stays out of the log, its code goes in.
    fn classify(&self, e: &mysql_async::Error, streaming: bool) -> Failure {
        let kind = match e {
            mysql_async::Error::Server(s) => match s.code {
                // MySQL's max_execution_time, MariaDB's max_statement_time.
                3024 | 1969 => SourceFailureKind::Timeout,
                1045 | 1044 | 1142 | 1143 | 1227 | 1698 => SourceFailureKind::CredentialsRefused,
                1040 | 1053 | 1077 | 1152 | 1158 | 1159 | 1160 | 1161 | 1927 => {
                    if streaming {
                        SourceFailureKind::Dropped
                    } else {
                        SourceFailureKind::Unreachable
                    }
                }
                // The query was killed (a reader that left, or an admin).
                1317 => SourceFailureKind::Dropped,
                _ => SourceFailureKind::Changed,
            },
            _ if streaming => SourceFailureKind::Dropped,
            _ => SourceFailureKind::Unreachable,
        };
        match e {
            mysql_async::Error::Server(s) => {
                tracing::warn!(connection = %self.inner.connection, code = s.code, ?kind, "a database statement failed")
            }
            // Only the class: a driver error can quote a packet's bytes.
            other => {
                tracing::warn!(connection = %self.inner.connection, class = error_class(other), ?kind, "a database connection failed")
            }
        }
        self.failure(kind)
    }

    /// A connection with this statement's time limit set, waiting for one
    /// while the pool is at its cap.
    async fn conn(&self) -> std::result::Result<Conn, Failure> {
        let pool = self.pool().await.map_err(|e| {
            tracing::warn!(connection = %self.inner.connection, error = %e.audit_message(), "a database connection could not be set up");
            self.failure(SourceFailureKind::Unreachable)
        })?;
        let wait = self.inner.connect_timeout
            + if self.inner.statement_timeout.is_zero() {
                Duration::from_secs(300)
            } else {
                self.inner.statement_timeout
            };
        let mut conn = match tokio::time::timeout(wait, pool.get_conn()).await {
            Err(_) => {
                tracing::warn!(connection = %self.inner.connection, "no database connection in time");
                return Err(self.failure(SourceFailureKind::Unreachable));
            }
            Ok(r) => r.map_err(|e| self.classify(&e, false))?,
        };
        let mariadb = *self
            .inner
            .mariadb
            .get_or_try_init(|| async {
                let v: Option<String> = conn.query_first("SELECT VERSION()").await?;
                Ok::<_, mysql_async::Error>(v.unwrap_or_default().contains("MariaDB"))
            })
            .await
            .map_err(|e| self.classify(&e, false))?;
        let t = self.inner.statement_timeout;
        let set = if mariadb {
            format!("SET SESSION max_statement_time = {}", t.as_secs_f64())
        } else {
            format!("SET SESSION max_execution_time = {}", t.as_millis())
        };
        conn.query_drop(set)
            .await
            .map_err(|e| self.classify(&e, false))?;
        Ok(conn)
    }

    pub(super) async fn discover(&self, relation: &DatabaseRelation) -> Result<Discovered> {
        let mut conn = self.conn().await.map_err(VeilError::from)?;
        let from = from_clause(DatabaseEngine::Mysql, relation);
        // Preparing describes the result without running it.
        let statement = conn
            .prep(format!("SELECT * FROM {from}"))
            .await
            .map_err(|e| describe_error(&self.inner.connection, relation, &e))?;
        let mut found = Discovered {
            columns: statement
                .columns()
                .iter()
                .map(|c| {
                    let (data_type, database_type) = result_column_type(c);
                    DiscoveredColumn {
                        name: c.name_str().into_owned(),
                        data_type,
                        nullable: true,
                        description: String::new(),
                        database_type,
                    }
                })
                .collect(),
            primary_key: vec![],
            description: String::new(),
        };
        if let DatabaseRelation::Table { schema, name } = relation {
            let rows: Vec<(String, String, String, String, String)> = conn
                .exec(
                    "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_COMMENT, COLUMN_KEY FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                    (schema, name),
                )
                .await
                .map_err(|e| VeilError::from(self.classify(&e, false)))?;
            for (col, column_type, nullable, comment, _key) in &rows {
                if let Some(c) = found.columns.iter_mut().find(|c| &c.name == col) {
                    c.data_type = declared_type(column_type);
                    c.database_type = column_type.clone();
                    c.nullable = nullable == "YES";
                    c.description = comment.clone();
                }
            }
            found.primary_key = conn
                .exec(
                    "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
                    (schema, name),
                )
                .await
                .map_err(|e| VeilError::from(self.classify(&e, false)))?;
            found.description = conn
                .exec_first::<String, _, _>(
                    "SELECT TABLE_COMMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                    (schema, name),
                )
                .await
                .map_err(|e| VeilError::from(self.classify(&e, false)))?
                .unwrap_or_default();
        }
        let _ = conn.close(statement).await;
        Ok(found)
    }

    pub(super) fn max_connections(&self) -> usize {
        self.inner.max_connections
    }

    /// The key's smallest and largest values and the table's estimated
    /// rows (`None`: an empty table, or no estimate).
    pub(super) async fn key_bounds(
        &self,
        schema: &str,
        table: &str,
        key: &str,
    ) -> std::result::Result<Option<(i64, i64, u64)>, Failure> {
        let mut conn = self.conn().await?;
        let from = from_clause(
            DatabaseEngine::Mysql,
            &DatabaseRelation::Table {
                schema: schema.into(),
                name: table.into(),
            },
        );
        let estimate: Option<Option<u64>> = conn
            .exec_first(
                "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (schema, table),
            )
            .await
            .map_err(|e| self.classify(&e, false))?;
        let bounds: Option<(Option<i64>, Option<i64>)> = conn
            .query_first(format!(
                "SELECT CAST(MIN({key}) AS SIGNED), CAST(MAX({key}) AS SIGNED) FROM {from}"
            ))
            .await
            .map_err(|e| self.classify(&e, false))?;
        Ok(match (bounds, estimate.flatten()) {
            (Some((Some(min), Some(max))), Some(rows)) if rows > 0 => Some((min, max, rows)),
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
        let mut conn = self.conn().await?;
        let id = conn.id();
        let left = {
            let mut result = conn
                .exec_iter(statement, ())
                .await
                .map_err(|e| self.classify(&e, false))?;
            let mut rows: Vec<Vec<Value>> = Vec::with_capacity(batch_size);
            let mut left = false;
            loop {
                let next = tokio::select! {
                    r = result.next() => r.map_err(|e| self.classify(&e, true))?,
                    _ = tx.closed() => { left = true; break; }
                };
                let done = next.is_none();
                if let Some(row) = next {
                    rows.push(row.unwrap());
                }
                if rows.len() >= batch_size || (done && !rows.is_empty()) {
                    let batch = super::to_batch(rows.len(), &schema, |i, dt| column(&rows, i, dt)).map_err(|kind| {
                        tracing::warn!(connection = %self.inner.connection, "a database value does not fit the dataset's dictionary");
                        self.failure(kind)
                    })?;
                    rows.clear();
                    if tx.send(Ok(batch)).await.is_err() {
                        left = true;
                        break;
                    }
                }
                if done {
                    break;
                }
            }
            left
        };
        if left {
            // The reader left: kill the statement rather than let the
            // database finish it for nobody (the connection is then
            // dropped, not reused).
            if let Ok(pool) = self.pool().await
                && let Ok(mut other) = pool.get_conn().await
            {
                let _ = other.query_drop(format!("KILL QUERY {id}")).await;
            }
            let _ = conn.disconnect().await;
        }
        Ok(())
    }
}

/// A driver error's class, for the log (never its text).
fn error_class(e: &mysql_async::Error) -> &'static str {
    match e {
        mysql_async::Error::Server(_) => "server",
        mysql_async::Error::Io(_) => "io",
        mysql_async::Error::Driver(_) => "driver",
        mysql_async::Error::Url(_) => "url",
        mysql_async::Error::Other(_) => "other",
    }
}

/// Registration failed: say why, naming the relation (the owner's own
/// words) and the server's error code, never its text.
fn describe_error(
    connection: &str,
    relation: &DatabaseRelation,
    e: &mysql_async::Error,
) -> VeilError {
    let what = match relation {
        DatabaseRelation::Table { schema, name } => format!("table {schema}.{name}"),
        DatabaseRelation::Query { .. } => "the query".to_string(),
    };
    match e {
        mysql_async::Error::Server(s) if s.code == 1146 || s.code == 1049 => {
            VeilError::InvalidArgument(format!(
                "{what} does not exist on database connection '{connection}' (or Veil's user can't see it)"
            ))
        }
        mysql_async::Error::Server(s) if matches!(s.code, 1142 | 1143 | 1044) => {
            VeilError::PermissionDenied(format!(
                "database connection '{connection}' may not read {what}: grant SELECT on it to Veil's database user"
            ))
        }
        mysql_async::Error::Server(s) if s.code == 1792 => VeilError::InvalidArgument(format!(
            "{what} writes to the database; a dataset's query may only read"
        )),
        mysql_async::Error::Server(s) => VeilError::InvalidArgument(format!(
            "{what} is not a valid read on database connection '{connection}' (error {}); check it with the database's own client",
            s.code
        )),
        _ => VeilError::Unavailable(format!(
            "database connection '{connection}' could not describe {what}; retry later, and if it persists ask an administrator to check the Veil server log"
        )),
    }
}

/// How Veil serves a column declared `column_type` (information_schema's
/// `COLUMN_TYPE`: `int(11) unsigned`, `decimal(10,2)`, `varchar(20)`).
pub fn declared_type(column_type: &str) -> DataType {
    let t = column_type.to_ascii_lowercase();
    let base = t.split(['(', ' ']).next().unwrap_or_default();
    let unsigned = t.contains("unsigned");
    let args: Vec<i64> = t
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(inside, _)| {
            inside
                .split(',')
                .filter_map(|x| x.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default();
    match (base, unsigned) {
        ("tinyint", false) => DataType::Int8,
        ("tinyint", true) => DataType::UInt8,
        ("smallint", false) => DataType::Int16,
        ("smallint", true) => DataType::UInt16,
        ("mediumint" | "int" | "integer", false) => DataType::Int32,
        ("mediumint" | "int" | "integer", true) => DataType::UInt32,
        ("bigint", false) => DataType::Int64,
        ("bigint", true) => DataType::UInt64,
        ("year", _) => DataType::Int16,
        ("float", _) => DataType::Float32,
        ("double" | "real", _) => DataType::Float64,
        ("decimal" | "numeric", _) => match args.as_slice() {
            [p, s] if (1..=38).contains(p) && (0..=*p).contains(s) => {
                DataType::Decimal128(*p as u8, *s as i8)
            }
            [p] if (1..=38).contains(p) => DataType::Decimal128(*p as u8, 0),
            _ => DataType::Utf8,
        },
        ("date", _) => DataType::Date32,
        ("datetime", _) => DataType::Timestamp(TimeUnit::Microsecond, None),
        ("timestamp", _) => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        ("binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob", _) => {
            DataType::Binary
        }
        (
            "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
            | "multipolygon" | "geometrycollection",
            _,
        ) => DataType::Binary,
        ("bit", _) => DataType::UInt64,
        // Strings, enums, sets, JSON, TIME, UUID, INET...: as text.
        _ => DataType::Utf8,
    }
}

/// The type of a result column (a query's), from the protocol's metadata.
fn result_column_type(c: &mysql_async::Column) -> (DataType, String) {
    use mysql_async::consts::{ColumnFlags, ColumnType as T};
    let unsigned = c.flags().contains(ColumnFlags::UNSIGNED_FLAG);
    let binary = c.flags().contains(ColumnFlags::BINARY_FLAG) && c.character_set() == 63;
    let sign = if unsigned { " unsigned" } else { "" };
    let declared = match c.column_type() {
        T::MYSQL_TYPE_TINY => format!("tinyint{sign}"),
        T::MYSQL_TYPE_SHORT => format!("smallint{sign}"),
        T::MYSQL_TYPE_INT24 | T::MYSQL_TYPE_LONG => format!("int{sign}"),
        T::MYSQL_TYPE_LONGLONG => format!("bigint{sign}"),
        T::MYSQL_TYPE_YEAR => "year".into(),
        T::MYSQL_TYPE_FLOAT => "float".into(),
        T::MYSQL_TYPE_DOUBLE => "double".into(),
        T::MYSQL_TYPE_NEWDECIMAL | T::MYSQL_TYPE_DECIMAL => {
            let scale = i64::from(c.decimals());
            // The display length counts the sign and the point.
            let len = i64::from(c.column_length());
            let precision = len - i64::from(scale > 0) - i64::from(!unsigned);
            format!("decimal({precision},{scale})")
        }
        T::MYSQL_TYPE_DATE | T::MYSQL_TYPE_NEWDATE => "date".into(),
        T::MYSQL_TYPE_DATETIME | T::MYSQL_TYPE_DATETIME2 => "datetime".into(),
        T::MYSQL_TYPE_TIMESTAMP | T::MYSQL_TYPE_TIMESTAMP2 => "timestamp".into(),
        T::MYSQL_TYPE_TIME | T::MYSQL_TYPE_TIME2 => "time".into(),
        T::MYSQL_TYPE_BIT => "bit".into(),
        T::MYSQL_TYPE_JSON => "json".into(),
        T::MYSQL_TYPE_GEOMETRY => "geometry".into(),
        T::MYSQL_TYPE_ENUM => "enum".into(),
        T::MYSQL_TYPE_SET => "set".into(),
        T::MYSQL_TYPE_VAR_STRING | T::MYSQL_TYPE_VARCHAR if binary => "varbinary".into(),
        T::MYSQL_TYPE_STRING if binary => "binary".into(),
        T::MYSQL_TYPE_TINY_BLOB
        | T::MYSQL_TYPE_BLOB
        | T::MYSQL_TYPE_MEDIUM_BLOB
        | T::MYSQL_TYPE_LONG_BLOB
            if binary =>
        {
            "blob".into()
        }
        T::MYSQL_TYPE_TINY_BLOB
        | T::MYSQL_TYPE_BLOB
        | T::MYSQL_TYPE_MEDIUM_BLOB
        | T::MYSQL_TYPE_LONG_BLOB => "text".into(),
        T::MYSQL_TYPE_STRING => "char".into(),
        _ => "varchar".into(),
    };
    (declared_type(&declared), declared)
}

const CHANGED: SourceFailureKind = SourceFailureKind::Changed;

fn int(v: &Value) -> std::result::Result<Option<i128>, SourceFailureKind> {
    match v {
        Value::NULL => Ok(None),
        Value::Int(x) => Ok(Some(i128::from(*x))),
        Value::UInt(x) => Ok(Some(i128::from(*x))),
        // BIT(n) arrives as big-endian bytes.
        Value::Bytes(b) if b.len() <= 8 => Ok(Some(
            b.iter().fold(0i128, |acc, x| (acc << 8) | i128::from(*x)),
        )),
        _ => Err(CHANGED),
    }
}

/// A DATE/DATETIME/TIMESTAMP value as microseconds since the epoch;
/// MySQL's zero date ('0000-00-00') is served as null, as MySQL's own
/// connectors do.
fn micros(v: &Value) -> std::result::Result<Option<i64>, SourceFailureKind> {
    match v {
        Value::NULL => Ok(None),
        Value::Date(0, 0, 0, _, _, _, _) => Ok(None),
        Value::Date(y, mo, d, h, mi, s, us) => {
            let date =
                chrono::NaiveDate::from_ymd_opt(i32::from(*y), u32::from(*mo), u32::from(*d))
                    .ok_or(CHANGED)?;
            let t = date
                .and_hms_micro_opt(u32::from(*h), u32::from(*mi), u32::from(*s), *us)
                .ok_or(CHANGED)?;
            Ok(Some(t.and_utc().timestamp_micros()))
        }
        _ => Err(CHANGED),
    }
}

fn column(
    rows: &[Vec<Value>],
    i: usize,
    dt: &DataType,
) -> std::result::Result<ArrayRef, SourceFailureKind> {
    fn at(r: &[Value], i: usize) -> &Value {
        static NULL: Value = Value::NULL;
        r.get(i).unwrap_or(&NULL)
    }
    macro_rules! ints {
        ($builder:ty, $native:ty) => {{
            let mut b = <$builder>::with_capacity(rows.len());
            for r in rows {
                match int(at(r, i))? {
                    None => b.append_null(),
                    Some(x) => b.append_value(<$native>::try_from(x).map_err(|_| CHANGED)?),
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    Ok(match dt {
        DataType::Int8 => ints!(Int8Builder, i8),
        DataType::Int16 => ints!(Int16Builder, i16),
        DataType::Int32 => ints!(Int32Builder, i32),
        DataType::Int64 => ints!(Int64Builder, i64),
        DataType::UInt8 => ints!(UInt8Builder, u8),
        DataType::UInt16 => ints!(UInt16Builder, u16),
        DataType::UInt32 => ints!(UInt32Builder, u32),
        DataType::UInt64 => ints!(UInt64Builder, u64),
        DataType::Boolean => {
            let mut b = BooleanBuilder::with_capacity(rows.len());
            for r in rows {
                b.append_option(int(at(r, i))?.map(|x| x != 0));
            }
            Arc::new(b.finish())
        }
        DataType::Float32 => {
            let mut b = Float32Builder::with_capacity(rows.len());
            for r in rows {
                match at(r, i) {
                    Value::NULL => b.append_null(),
                    Value::Float(x) => b.append_value(*x),
                    _ => return Err(CHANGED),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Float64 => {
            let mut b = Float64Builder::with_capacity(rows.len());
            for r in rows {
                match at(r, i) {
                    Value::NULL => b.append_null(),
                    Value::Double(x) => b.append_value(*x),
                    Value::Float(x) => b.append_value(f64::from(*x)),
                    _ => return Err(CHANGED),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Utf8 | DataType::Decimal128(..) => {
            let mut b = StringBuilder::new();
            for r in rows {
                match at(r, i) {
                    Value::NULL => b.append_null(),
                    Value::Bytes(bytes) => {
                        b.append_value(std::str::from_utf8(bytes).map_err(|_| CHANGED)?)
                    }
                    Value::Int(x) => b.append_value(x.to_string()),
                    Value::UInt(x) => b.append_value(x.to_string()),
                    _ => return Err(CHANGED),
                }
            }
            let text = b.finish();
            if matches!(dt, DataType::Utf8) {
                Arc::new(text)
            } else {
                datafusion::arrow::compute::cast_with_options(
                    &text,
                    dt,
                    &datafusion::arrow::compute::CastOptions {
                        safe: false,
                        ..Default::default()
                    },
                )
                .map_err(|_| CHANGED)?
            }
        }
        DataType::Binary => {
            let mut b = BinaryBuilder::new();
            for r in rows {
                match at(r, i) {
                    Value::NULL => b.append_null(),
                    Value::Bytes(bytes) => b.append_value(bytes),
                    _ => return Err(CHANGED),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Date32 => {
            let mut b = Date32Builder::with_capacity(rows.len());
            for r in rows {
                match micros(at(r, i))? {
                    None => b.append_null(),
                    Some(us) => b.append_value(
                        i32::try_from(us.div_euclid(86_400_000_000)).map_err(|_| CHANGED)?,
                    ),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            let mut b = TimestampMicrosecondBuilder::with_capacity(rows.len());
            for r in rows {
                b.append_option(micros(at(r, i))?);
            }
            Arc::new(b.finish().with_timezone_opt(tz.clone()))
        }
        _ => return Err(CHANGED),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_types_map_to_arrow() {
        assert_eq!(declared_type("int(11)"), DataType::Int32);
        assert_eq!(declared_type("int(10) unsigned"), DataType::UInt32);
        assert_eq!(declared_type("tinyint(1)"), DataType::Int8);
        assert_eq!(declared_type("decimal(10,2)"), DataType::Decimal128(10, 2));
        assert_eq!(declared_type("decimal(65,2)"), DataType::Utf8);
        assert_eq!(declared_type("varchar(20)"), DataType::Utf8);
        assert_eq!(declared_type("longtext"), DataType::Utf8);
        assert_eq!(declared_type("json"), DataType::Utf8);
        assert_eq!(declared_type("time"), DataType::Utf8);
        assert_eq!(declared_type("blob"), DataType::Binary);
        assert_eq!(
            declared_type("timestamp(6)"),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert_eq!(
            declared_type("datetime"),
            DataType::Timestamp(TimeUnit::Microsecond, None)
        );
    }

    #[test]
    fn values_become_arrays_or_fail_closed() {
        let rows = vec![
            vec![Value::Int(5), Value::Date(2024, 2, 29, 13, 0, 1, 5)],
            vec![Value::NULL, Value::Date(0, 0, 0, 0, 0, 0, 0)],
        ];
        let a = column(&rows, 0, &DataType::Int8).unwrap();
        assert_eq!(a.null_count(), 1);
        let t = column(&rows, 1, &DataType::Timestamp(TimeUnit::Microsecond, None)).unwrap();
        assert_eq!(t.null_count(), 1);
        // 300 doesn't fit an Int8: the read fails rather than wrap.
        let big = vec![vec![Value::Int(300)]];
        assert_eq!(column(&big, 0, &DataType::Int8).unwrap_err(), CHANGED);
        let bad = vec![vec![Value::Bytes(vec![0xff])]];
        assert_eq!(column(&bad, 0, &DataType::Utf8).unwrap_err(), CHANGED);
        let dec = vec![vec![Value::Bytes(b"-12.50".to_vec())]];
        let d = column(&dec, 0, &DataType::Decimal128(10, 2)).unwrap();
        assert_eq!(
            d.as_any()
                .downcast_ref::<datafusion::arrow::array::Decimal128Array>()
                .unwrap()
                .value(0),
            -1250
        );
    }
}
