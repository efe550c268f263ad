//! What data exists: datasets, their sources and data dictionaries.

use serde::{Deserialize, Serialize};

use super::Origin;
use super::identity::Identity;
use super::request::TagProposal;

/// File formats Veil reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileFormatKind {
    Parquet,
    Csv,
    /// Newline-delimited JSON.
    Json,
}

impl FileFormatKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            FileFormatKind::Parquet => "parquet",
            FileFormatKind::Csv => "csv",
            FileFormatKind::Json => "json",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "parquet" => Some(Self::Parquet),
            "csv" => Some(Self::Csv),
            "json" | "jsonl" | "ndjson" => Some(Self::Json),
            _ => None,
        }
    }

    /// File name extension used when listing a folder.
    pub fn extension(&self) -> &'static str {
        match self {
            FileFormatKind::Parquet => ".parquet",
            FileFormatKind::Csv => ".csv",
            FileFormatKind::Json => ".json",
        }
    }
}

/// Where a dataset's bytes live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSpec {
    /// Files: their format (a database source records `parquet` and never
    /// reads it; `SourceKind` tells the two apart).
    pub format: FileFormatKind,
    /// A file or folder: an absolute, canonical local path, or a remote
    /// `scheme://bucket/key` (an object, or a prefix read like a folder).
    /// A database source: `db://connection/schema.table` (or
    /// `db://connection/query/<digest>`), which only identifies it.
    pub location: String,
    /// Folder of `key=value/` sub-folders whose keys become columns.
    pub hive_partitioned: bool,
    /// Set for a dataset backed by a database table, view or query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseSource>,
}

/// The database products Veil reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatabaseEngine {
    Postgres,
    /// MySQL and MariaDB.
    Mysql,
}

impl DatabaseEngine {
    pub fn as_str(self) -> &'static str {
        match self {
            DatabaseEngine::Postgres => "postgres",
            DatabaseEngine::Mysql => "mysql",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => Some(Self::Postgres),
            "mysql" | "mariadb" => Some(Self::Mysql),
            _ => None,
        }
    }
}

/// What, in the database, a dataset reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatabaseRelation {
    /// A table or a view (`schema` is the database, for MySQL).
    Table { schema: String, name: String },
    /// A `SELECT` its owner defined; read as a sub-query.
    Query { sql: String },
}

/// A dataset backed by a database: the connection (declared in the config,
/// with its credentials) and the relation it reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseSource {
    pub engine: DatabaseEngine,
    /// The name of a `[[connections]]` entry of the config.
    pub connection: String,
    pub relation: DatabaseRelation,
    /// The primary key's columns, in key order (empty: none known).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub primary_key: Vec<String>,
    /// Each column's type in the database (`character varying(20)`,
    /// `jsonb`): how a statement reads and compares it.
    #[serde(default)]
    pub column_types: std::collections::BTreeMap<String, String>,
    /// The integer column reads are split by, declared by the owner
    /// (default: a primary key of one integer column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_column: Option<String>,
    /// Served from a local copy, kept fresh (`engine::acceleration`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acceleration: Option<Acceleration>,
}

/// How a database dataset's local copy is kept and served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acceleration {
    /// Refresh every this many seconds (0: only on demand).
    #[serde(default)]
    pub refresh_secs: u64,
    /// Serve the copy while it is at most this old; an older copy is never
    /// served (reads go to the database).
    pub max_staleness_secs: u64,
    /// Read only the rows whose value of this column passed the last
    /// refresh's highest (an integer, date or timestamp column, such as
    /// `updated_at`); rows deleted in the database leave the copy at the
    /// next full refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental_column: Option<String>,
}

impl DatabaseSource {
    /// The column reads of this relation split over endpoints by, if any.
    pub fn split_column<'a>(&'a self, columns: &'a [ColumnRecord]) -> Option<&'a str> {
        let integer = |name: &str| {
            columns.iter().any(|c| {
                c.name == name
                    && matches!(
                        c.data_type.as_str(),
                        "Int8" | "Int16" | "Int32" | "Int64" | "UInt8" | "UInt16" | "UInt32"
                    )
            })
        };
        match (&self.partition_column, self.primary_key.as_slice()) {
            (Some(c), _) if integer(c) => Some(c.as_str()),
            (Some(_), _) => None,
            (None, [key]) if integer(key) => Some(key.as_str()),
            _ => None,
        }
    }
}

/// One entry of the data dictionary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnRecord {
    pub name: String,
    /// Arrow type, in `DataType`'s display form (parsed back with `FromStr`).
    pub data_type: String,
    pub nullable: bool,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Comes from a hive partition folder name, not from the files.
    #[serde(default)]
    pub partition: bool,
    /// Its description and tags are declared in the config file, so they
    /// are read-only at run time (a reload re-applies them).
    #[serde(default)]
    pub from_config: bool,
}

/// A registered dataset and its data dictionary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetRecord {
    /// Stable id; keys (hash masks) derive from it, so renaming keeps hashes.
    pub id: String,
    /// `schema.name`
    pub name: String,
    pub source: SourceSpec,
    #[serde(default)]
    pub description: String,
    pub owners: Vec<Identity>,
    /// People to ask about the data (what it means, how it was collected).
    /// Being an expert grants nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub experts: Vec<Identity>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub columns: Vec<ColumnRecord>,
    pub origin: Origin,
    /// The column time-window policies measure rows by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<String>,
    /// Column tags discovery proposed that nobody has decided yet, and
    /// those rejected (kept, so discovery does not propose them again).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tag_proposals: Vec<TagProposal>,
}

impl DatasetRecord {
    pub fn column(&self, name: &str) -> Option<&ColumnRecord> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn is_owner(&self, id: &Identity) -> bool {
        self.owners.contains(id)
    }
}

/// Whether a location names a remote store (`scheme://...`) rather than a
/// local path (see [`SourceSpec::location`]).
pub fn is_remote(location: &str) -> bool {
    location.contains("://")
}
