//! The catalog: datasets, their dictionaries, and where their files are.

pub mod copy_scan;
pub mod database;
pub mod dictionary;
pub mod discovery;
pub mod files;
pub mod object_stores;
pub mod profiling;
pub mod roots;
pub mod search;
pub mod source_table;
pub mod state;

use std::collections::BTreeMap;

use crate::config::ColumnConfig;
use crate::error::{Result, VeilError};
use crate::model::Origin;
use crate::model::dataset::{
    DatabaseRelation, DatabaseSource, DatasetRecord, FileFormatKind, SourceSpec,
};
use crate::model::identity::Identity;

/// Where a new dataset's rows come from.
#[derive(Debug, Clone)]
pub enum NewSource {
    Files {
        format: String,
        /// Confined to a root already: a canonical local path or a remote URL.
        location: String,
        hive_partitioned: bool,
    },
    Database {
        connection: String,
        relation: DatabaseRelation,
        /// An integer column reads split over endpoints by (default: a
        /// primary key of one integer column).
        partition_column: Option<String>,
        /// Keep and serve a local copy.
        acceleration: Option<crate::model::dataset::Acceleration>,
    },
}

impl NewSource {
    /// A database relation from a registration's words: `table` as
    /// `schema.table`, or a `query`; exactly one of them.
    pub fn database(
        connection: &str,
        table: Option<&str>,
        query: Option<&str>,
        partition_column: Option<&str>,
    ) -> Result<Self> {
        let relation = match (
            table.filter(|t| !t.is_empty()),
            query.filter(|q| !q.is_empty()),
        ) {
            (Some(t), None) => {
                let Some((schema, name)) = t.split_once('.') else {
                    return Err(VeilError::InvalidArgument(format!(
                        "table '{}' must be schema.table (for MySQL, database.table)",
                        t.chars().take(128).collect::<String>()
                    )));
                };
                if t.chars().any(char::is_control) {
                    // A NUL can't travel to a database (PostgreSQL refuses
                    // it as the connection failing).
                    return Err(VeilError::InvalidArgument(
                        "a table name may not hold control characters (NUL, line breaks, tabs)"
                            .into(),
                    ));
                }
                if schema.is_empty() || name.is_empty() || name.contains('.') {
                    return Err(VeilError::InvalidArgument(format!(
                        "table '{}' must be schema.table (for MySQL, database.table)",
                        t.chars().take(128).collect::<String>()
                    )));
                }
                DatabaseRelation::Table {
                    schema: schema.to_string(),
                    name: name.to_string(),
                }
            }
            (None, Some(q)) => {
                let first = q.split_whitespace().next().unwrap_or_default();
                if !first.eq_ignore_ascii_case("select") && !first.eq_ignore_ascii_case("with") {
                    return Err(VeilError::InvalidArgument(
                        "a dataset's query must be a SELECT (or WITH ... SELECT) statement".into(),
                    ));
                }
                if q.trim().trim_end_matches(';').contains(';') {
                    return Err(VeilError::InvalidArgument(
                        "a dataset's query must be one statement".into(),
                    ));
                }
                DatabaseRelation::Query {
                    sql: q.trim().trim_end_matches(';').trim().to_string(),
                }
            }
            _ => {
                return Err(VeilError::InvalidArgument(
                    "a database dataset reads either a table (--table schema.table) or a query (--query 'SELECT ...'), exactly one".into(),
                ));
            }
        };
        Ok(NewSource::Database {
            connection: connection.to_string(),
            relation,
            partition_column: partition_column
                .filter(|c| !c.is_empty())
                .map(str::to_string),
            acceleration: None,
        })
    }

    /// The same source, kept as a local copy with `acceleration` (a
    /// database source; files are read where they are).
    pub fn accelerated(self, acceleration: Option<crate::model::dataset::Acceleration>) -> Self {
        match self {
            NewSource::Database {
                connection,
                relation,
                partition_column,
                ..
            } => NewSource::Database {
                connection,
                relation,
                partition_column,
                acceleration,
            },
            files => files,
        }
    }

    /// What identifies the source among datasets (two datasets over the
    /// same files or table would let one shed the other's policies).
    pub fn location(&self) -> String {
        match self {
            NewSource::Files { location, .. } => location.clone(),
            NewSource::Database {
                connection,
                relation,
                ..
            } => database_location(connection, relation),
        }
    }
}

/// `db://connection/schema.table`, or `db://connection/query/<digest>`.
pub fn database_location(connection: &str, relation: &DatabaseRelation) -> String {
    use sha2::Digest;
    match relation {
        DatabaseRelation::Table { schema, name } => format!("db://{connection}/{schema}.{name}"),
        DatabaseRelation::Query { sql } => {
            let digest = sha2::Sha256::digest(sql.as_bytes());
            format!(
                "db://{connection}/query/{}",
                digest[..12]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            )
        }
    }
}

/// Everything needed to register a dataset.
#[derive(Debug, Clone)]
pub struct NewDataset {
    pub name: String,
    pub source: NewSource,
    pub description: String,
    pub owners: Vec<Identity>,
    pub experts: Vec<Identity>,
    pub tags: Vec<String>,
    pub columns: BTreeMap<String, ColumnConfig>,
    pub origin: Origin,
    pub event_time: Option<String>,
}

/// A dataset's rows as stored, with no policy applied: for its owners'
/// and governors' tools (discovery, profiling), never for a principal's
/// plan. Errors read from it must be treated as below a policy barrier.
pub async fn raw_source(
    d: &DatasetRecord,
    stores: &object_stores::ObjectStores,
    databases: &database::Databases,
) -> Result<std::sync::Arc<dyn datafusion::datasource::TableProvider>> {
    use crate::model::source_kind::SourceKind;
    match SourceKind::of(d) {
        SourceKind::Files(_) => Ok(std::sync::Arc::new(
            source_table::SourceTable::open(d, None, stores).await?,
        )),
        SourceKind::Database(_) => {
            let source = d.source.database.as_ref().ok_or_else(|| {
                VeilError::internal("a database dataset", "without its source".to_string())
            })?;
            Ok(std::sync::Arc::new(database::table::DatabaseTable::new(
                d,
                source,
                databases.get(&source.connection)?,
                None,
            )?))
        }
        SourceKind::AuditTrail => Err(VeilError::FailedPrecondition(format!(
            "{} is Veil's audit trail: its rows are read through policies only",
            d.name
        ))),
    }
}

/// Acceleration settings that can be honoured: a freshness bound, and an
/// incremental column of the dictionary with an ordered, exactly
/// comparable type.
pub fn check_acceleration(
    dataset: &str,
    a: &crate::model::dataset::Acceleration,
    columns: &[crate::model::dataset::ColumnRecord],
) -> Result<()> {
    if a.max_staleness_secs == 0 {
        return Err(VeilError::InvalidArgument(format!(
            "{dataset}: max_staleness_secs must be at least 1 (how old a copy may be served)"
        )));
    }
    if let Some(c) = &a.incremental_column {
        let ok = columns.iter().any(|x| {
            &x.name == c
                && (x.data_type.starts_with("Int")
                    || x.data_type.starts_with("UInt")
                    || x.data_type.starts_with("Date")
                    || x.data_type.starts_with("Timestamp"))
        });
        if !ok {
            return Err(VeilError::InvalidArgument(format!(
                "{dataset}: incremental_column '{c}' must be an integer, date or timestamp column of the dataset"
            )));
        }
    }
    Ok(())
}

/// `schema.name`, each part a plain identifier; `veil.*` is reserved.
pub fn validate_dataset_name(name: &str) -> Result<()> {
    let bad = || {
        VeilError::InvalidArgument(format!(
            "dataset name '{}' must be schema.name, each part letters, digits and underscores, starting with a letter",
            name.chars().take(128).collect::<String>()
        ))
    };
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() != 2 {
        return Err(bad());
    }
    for p in &parts {
        let mut chars = p.chars();
        let ok_first = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
        if !ok_first || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') || p.len() > 64 {
            return Err(bad());
        }
    }
    if parts[0].eq_ignore_ascii_case("veil") {
        return Err(VeilError::InvalidArgument(
            "dataset names under 'veil.' are reserved for Veil's own datasets".into(),
        ));
    }
    Ok(())
}

/// Build the record (dictionary included) for a new dataset. A files
/// location must already be confined to a root by the caller.
pub async fn build_dataset(
    new: NewDataset,
    stores: &object_stores::ObjectStores,
    databases: &database::Databases,
) -> Result<DatasetRecord> {
    validate_dataset_name(&new.name)?;
    let location = new.source.location();
    let (source, columns, description) = match new.source {
        NewSource::Files {
            format,
            location,
            hive_partitioned,
        } => {
            let format = FileFormatKind::parse(&format).ok_or_else(|| {
                VeilError::InvalidArgument(format!(
                    "unknown format '{format}': use parquet, csv or json"
                ))
            })?;
            if hive_partitioned && std::path::Path::new(&location).is_file() {
                return Err(VeilError::InvalidArgument(
                    "a hive-partitioned dataset's location must be a folder".into(),
                ));
            }
            let source = SourceSpec {
                format,
                location,
                hive_partitioned,
                database: None,
            };
            let columns = dictionary::derive_columns(&source, &new.columns, stores).await?;
            (source, columns, new.description)
        }
        NewSource::Database {
            connection,
            relation,
            partition_column,
            acceleration,
        } => {
            let db = databases.get(&connection)?;
            let found = db.discover(&relation).await?;
            let (columns, column_types) =
                dictionary::database_columns(&new.name, &found, &new.columns)?;
            let mut source = SourceSpec {
                format: FileFormatKind::Parquet,
                location,
                hive_partitioned: false,
                database: Some(DatabaseSource {
                    engine: db.engine,
                    connection,
                    relation,
                    primary_key: found.primary_key,
                    column_types,
                    partition_column: partition_column.clone(),
                    acceleration: None,
                }),
            };
            if let Some(a) = acceleration {
                check_acceleration(&new.name, &a, &columns)?;
                if let Some(db) = source.database.as_mut() {
                    db.acceleration = Some(a);
                }
            }
            if let (Some(c), Some(db)) = (&partition_column, &source.database)
                && db.split_column(&columns) != Some(c.as_str())
            {
                return Err(VeilError::InvalidArgument(format!(
                    "partition column '{c}' must be an integer column of the relation"
                )));
            }
            let description = if new.description.is_empty() {
                found.description
            } else {
                new.description
            };
            (source, columns, description)
        }
    };
    if let Some(t) = &new.event_time {
        let Some(c) = columns.iter().find(|c| &c.name == t) else {
            return Err(VeilError::InvalidArgument(format!(
                "event_time names column '{t}', which dataset {} does not have",
                new.name
            )));
        };
        if !(c.data_type.starts_with("Timestamp") || c.data_type.starts_with("Date")) {
            return Err(VeilError::InvalidArgument(format!(
                "event_time column '{t}' of {} is {}, not a date or timestamp",
                new.name, c.data_type
            )));
        }
    }
    Ok(DatasetRecord {
        id: uuid::Uuid::new_v4().to_string(),
        name: new.name,
        source,
        description,
        owners: new.owners,
        experts: new.experts,
        tags: new.tags,
        columns,
        origin: new.origin,
        event_time: new.event_time,
        tag_proposals: vec![],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_table_names_schema_and_table_without_control_characters() {
        assert!(NewSource::database("pg", Some("public.people"), None, None).is_ok());
        for bad in ["people", "a.b.c", "public.people\0", "public.peo\nple"] {
            let e = NewSource::database("pg", Some(bad), None, None).unwrap_err();
            assert!(matches!(e, VeilError::InvalidArgument(_)), "{bad:?}: {e}");
        }
    }

    #[test]
    fn names_are_checked_and_veil_is_reserved() {
        assert!(validate_dataset_name("clinical.trials").is_ok());
        for bad in [
            "trials",
            "a.b.c",
            "1a.b",
            "a.b-c",
            // Users can't register a dataset in Veil's own schema.
            crate::audit::dataset::AUDIT_DATASET,
            "VEIL.x",
            "a.",
            ".b",
            "a.b;drop",
        ] {
            assert!(validate_dataset_name(bad).is_err(), "{bad}");
        }
    }
}
