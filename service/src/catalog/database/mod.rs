//! Datasets backed by databases (PostgreSQL, MySQL/MariaDB): the
//! connections the config declares, what a relation's dictionary is, and
//! reading its rows as Arrow batches.
//!
//! Veil reads databases through a provider of its own (`table`) rather
//! than `datafusion-table-providers`: that crate reports every filter it
//! can render as `Exact` (so DataFusion drops its own check) and federates
//! whole sub-plans, while Veil must decide, filter by filter, what may go
//! below a policy barrier and keep checking it above (`sql`).

pub mod mysql;
pub mod postgres;
pub mod sql;
pub mod table;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{Config, ConnectionConfig};
use crate::error::source::SourceFailure;
use crate::error::{Result, VeilError};
use crate::model::dataset::{DatabaseEngine, DatabaseRelation, DatabaseSource};

/// One column of a relation, as the database describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveredColumn {
    pub name: String,
    /// How Veil serves it.
    pub data_type: DataType,
    pub nullable: bool,
    /// The database's comment on the column.
    pub description: String,
    /// The database's own type name (`character varying(20)`, `jsonb`).
    pub database_type: String,
}

/// A relation's dictionary, from the database.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovered {
    pub columns: Vec<DiscoveredColumn>,
    pub primary_key: Vec<String>,
    /// The database's comment on the table or view.
    pub description: String,
}

/// One declared connection, opened on first use (a database that is down
/// when Veil starts doesn't stop Veil; the reads that need it fail).
#[derive(Debug)]
pub struct Database {
    pub name: String,
    pub engine: DatabaseEngine,
    /// Where it points, without credentials (`postgres://user@host:port/db`):
    /// what a copy of its data was made from.
    pub target: String,
    client: Client,
    /// A table's key bounds and size estimate, by (schema, table, key),
    /// reused for [`BOUNDS_TTL`]: a split needs them at every GetFlightInfo,
    /// and stale bounds only unbalance the ranges (the first and last are
    /// open, so every row is still read once).
    bounds: moka::sync::Cache<(String, String, String), Option<KeyBounds>>,
}

/// A key's smallest and largest values and the table's estimated rows.
type KeyBounds = (i64, i64, u64);

/// How long a table's key bounds are reused.
const BOUNDS_TTL: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, Clone)]
enum Client {
    Postgres(postgres::Postgres),
    Mysql(mysql::Mysql),
}

impl Database {
    fn open(c: &ConnectionConfig, base_dir: &std::path::Path) -> Result<Self> {
        let engine = DatabaseEngine::parse(&c.kind).ok_or_else(|| {
            VeilError::FailedPrecondition(format!(
                "connection '{}': kind '{}' is not a database Veil reads; use postgres or mysql",
                c.name, c.kind
            ))
        })?;
        if c.max_connections == 0 {
            return Err(VeilError::FailedPrecondition(format!(
                "connection '{}': max_connections must be at least 1",
                c.name
            )));
        }
        let password = Password {
            env: c.password_env.clone(),
            file: c.password_file.as_ref().map(|p| {
                if p.is_absolute() {
                    p.clone()
                } else {
                    base_dir.join(p)
                }
            }),
            connection: c.name.clone(),
        };
        let ca_file = c.ca_file.as_ref().map(|p| {
            if p.is_absolute() {
                p.clone()
            } else {
                base_dir.join(p)
            }
        });
        let client = match engine {
            DatabaseEngine::Postgres => {
                Client::Postgres(postgres::Postgres::new(c, password, ca_file)?)
            }
            DatabaseEngine::Mysql => Client::Mysql(mysql::Mysql::new(c, password, ca_file)?),
        };
        Ok(Self {
            name: c.name.clone(),
            engine,
            target: format!(
                "{}://{}@{}:{}/{}",
                engine.as_str(),
                c.user,
                c.host,
                c.port
                    .map_or_else(|| "default".to_string(), |p| p.to_string()),
                c.database
            ),
            client,
            bounds: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(BOUNDS_TTL)
                .build(),
        })
    }

    /// The relation's columns, key and comments, read from the database.
    pub async fn discover(&self, relation: &DatabaseRelation) -> Result<Discovered> {
        match &self.client {
            Client::Postgres(p) => p.discover(relation).await,
            Client::Mysql(m) => m.discover(relation).await,
        }
    }

    /// How `source`'s reads split over endpoints: key ranges of about
    /// `rows_per_part` rows (at most `max_parts`, and no more than the
    /// connection runs statements at once), from the key's bounds and the
    /// database's estimate of the table's size (never a count, which would
    /// read the whole table). One range (everything) for a view or a query,
    /// or without an integer key.
    pub async fn key_ranges(
        &self,
        source: &DatabaseSource,
        columns: &[crate::model::dataset::ColumnRecord],
        rows_per_part: u64,
        max_parts: usize,
    ) -> Result<Vec<veil_proto::KeyRange>> {
        let whole = |column: &str| {
            vec![veil_proto::KeyRange {
                column: column.to_string(),
                low: None,
                high: None,
                with_nulls: true,
            }]
        };
        let Some(column) = source.split_column(columns) else {
            return Ok(vec![]);
        };
        let DatabaseRelation::Table { schema, name } = &source.relation else {
            return Ok(whole(column));
        };
        let key = sql::quote(self.engine, column);
        let cache_key = (schema.clone(), name.clone(), key.clone());
        let bounds = match self.bounds.get(&cache_key) {
            Some(b) => b,
            None => {
                let b = match &self.client {
                    Client::Postgres(p) => p.key_bounds(schema, name, &key).await,
                    Client::Mysql(m) => m.key_bounds(schema, name, &key).await,
                }
                .map_err(VeilError::from)?;
                self.bounds.insert(cache_key, b);
                b
            }
        };
        Ok(match bounds {
            Some((min, max, rows)) => sql::key_ranges(
                column,
                min,
                max,
                rows,
                rows_per_part,
                max_parts.min(self.max_connections()),
            ),
            None => whole(column),
        })
    }

    fn max_connections(&self) -> usize {
        match &self.client {
            Client::Postgres(p) => p.max_connections(),
            Client::Mysql(m) => m.max_connections(),
        }
    }

    /// Run `statement` (rendered by [`sql::Select`]) and stream its rows as
    /// batches of `schema` (at most `batch_size` rows each). Errors are
    /// [`SourceFailure`]s; dropping the stream stops the statement.
    pub fn stream(
        &self,
        statement: String,
        schema: SchemaRef,
        batch_size: usize,
    ) -> futures::stream::BoxStream<'static, std::result::Result<RecordBatch, SourceFailure>> {
        use futures::StreamExt;
        // A task of its own feeds a channel of two batches: the database is
        // read only as fast as the reader takes them, and a reader that
        // leaves closes the channel, which stops the statement.
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let client = self.client.clone();
        let batch_size = batch_size.max(1);
        tokio::spawn(async move {
            let done = match &client {
                Client::Postgres(p) => p.run(&statement, schema, batch_size, &tx).await,
                Client::Mysql(m) => m.run(&statement, schema, batch_size, &tx).await,
            };
            if let Err(f) = done {
                let _ = tx.send(Err(f)).await;
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
    }
}

/// Every connection of the config, by name.
#[derive(Debug, Default)]
pub struct Databases {
    by_name: BTreeMap<String, Arc<Database>>,
}

impl Databases {
    /// The config's connections (none is opened yet).
    pub fn from_config(cfg: &Config) -> Result<Self> {
        let mut by_name = BTreeMap::new();
        for c in &cfg.connections {
            if c.name.is_empty()
                || !c
                    .name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
            {
                return Err(VeilError::FailedPrecondition(format!(
                    "connection name '{}' must be letters, digits, '_' and '-'",
                    c.name
                )));
            }
            if by_name
                .insert(c.name.clone(), Arc::new(Database::open(c, &cfg.base_dir)?))
                .is_some()
            {
                return Err(VeilError::FailedPrecondition(format!(
                    "connection '{}' is declared twice",
                    c.name
                )));
            }
        }
        Ok(Self { by_name })
    }

    /// No connections (tests, and configs that declare none).
    pub fn none() -> Self {
        Self::default()
    }

    /// The connection named `name`.
    pub fn get(&self, name: &str) -> Result<Arc<Database>> {
        self.by_name.get(name).cloned().ok_or_else(|| {
            let known: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
            VeilError::FailedPrecondition(format!(
                "no database connection named '{}' is configured{}; an administrator declares connections in the config file ([[connections]])",
                name.chars().take(64).collect::<String>(),
                if known.is_empty() {
                    String::new()
                } else {
                    format!(" (configured: {})", known.join(", "))
                }
            ))
        })
    }
}

/// Rows as a batch of `schema`, each column built by `column(index, type)`;
/// a schema without columns (a count) is a batch of row count only.
fn to_batch(
    rows: usize,
    schema: &SchemaRef,
    column: impl Fn(
        usize,
        &DataType,
    ) -> std::result::Result<
        datafusion::arrow::array::ArrayRef,
        crate::error::source::SourceFailureKind,
    >,
) -> std::result::Result<RecordBatch, crate::error::source::SourceFailureKind> {
    use crate::error::source::SourceFailureKind;
    if schema.fields().is_empty() {
        return RecordBatch::try_new_with_options(
            Arc::new(datafusion::arrow::datatypes::Schema::empty()),
            vec![],
            &datafusion::arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|_| SourceFailureKind::Changed);
    }
    let arrays = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| column(i, f.data_type()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    RecordBatch::try_new(Arc::clone(schema), arrays).map_err(|_| SourceFailureKind::Changed)
}

/// Where a connection's password comes from. Read when a connection
/// opens, never kept in the catalog, never logged.
#[derive(Clone)]
struct Password {
    env: Option<String>,
    file: Option<PathBuf>,
    connection: String,
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Password")
            .field("env", &self.env)
            .field("file", &self.file)
            .finish()
    }
}

impl Password {
    /// The password, or none if the connection declares no source.
    fn read(&self) -> Result<Option<String>> {
        if let Some(var) = &self.env {
            return match std::env::var(var) {
                Ok(v) => Ok(Some(v)),
                Err(_) => Err(VeilError::FailedPrecondition(format!(
                    "connection '{}': the environment variable {var} (password_env) is not set in Veil's environment",
                    self.connection
                ))),
            };
        }
        if let Some(path) = &self.file {
            return match std::fs::read_to_string(path) {
                Ok(text) => Ok(Some(text.lines().next().unwrap_or_default().to_string())),
                Err(e) => Err(VeilError::FailedPrecondition(format!(
                    "connection '{}': cannot read its password_file {}: {}",
                    self.connection,
                    path.display(),
                    e.kind()
                ))),
            };
        }
        Ok(None)
    }
}

/// Trusted roots for a TLS connection: `ca_file`'s certificates, or the
/// system's.
fn tls_roots(connection: &str, ca_file: Option<&std::path::Path>) -> Result<rustls::RootCertStore> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|i| i.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| {
                    VeilError::FailedPrecondition(format!(
                        "connection '{connection}': cannot read the certificates of ca_file {}: {e}",
                        path.display()
                    ))
                })?;
            for c in certs {
                roots.add(c).map_err(|e| {
                    VeilError::FailedPrecondition(format!(
                        "connection '{connection}': a certificate of ca_file {} is not valid: {e}",
                        path.display()
                    ))
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = roots.add(c);
            }
        }
    }
    if roots.is_empty() {
        return Err(VeilError::FailedPrecondition(format!(
            "connection '{connection}': tls = \"require\" but no trusted certificate was found; set ca_file"
        )));
    }
    Ok(roots)
}

/// A client TLS configuration over `roots`, with the ring provider Veil's
/// own TLS uses.
fn tls_config(connection: &str, roots: rustls::RootCertStore) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            VeilError::FailedPrecondition(format!("connection '{connection}': TLS setup: {e}"))
        })?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
