//! The kinds of dataset source, and what each allows. Every place that
//! treats sources differently asks here and matches exhaustively, so a new
//! kind (a database table) is one more variant the compiler walks you
//! through, never a name compared in six places.

use super::dataset::{DatabaseEngine, DatasetRecord, FileFormatKind};

/// Where Veil's own audit trail "lives": nowhere a root could contain, so
/// no registration can claim it.
pub const AUDIT_TRAIL_LOCATION: &str = "veil-builtin://audit";
/// The audit trail's dataset id (hash-mask keys derive from it).
pub const AUDIT_TRAIL_ID: &str = "builtin:veil.audit";

/// Where a dataset's rows come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// Files in an object store (local, S3, GCS, Azure).
    Files(FileFormatKind),
    /// A table, view or query in a database (PostgreSQL, MySQL/MariaDB).
    Database(DatabaseEngine),
    /// Veil's own audit trail, read from the state store.
    AuditTrail,
}

impl SourceKind {
    pub fn of(d: &DatasetRecord) -> SourceKind {
        if d.id == AUDIT_TRAIL_ID && d.source.location == AUDIT_TRAIL_LOCATION {
            SourceKind::AuditTrail
        } else if let Some(db) = &d.source.database {
            SourceKind::Database(db.engine)
        } else {
            SourceKind::Files(d.source.format)
        }
    }

    /// How `describe` names the source's format.
    pub fn label(self) -> &'static str {
        match self {
            SourceKind::Files(format) => format.as_str(),
            SourceKind::Database(DatabaseEngine::Postgres) => "postgres table",
            SourceKind::Database(DatabaseEngine::Mysql) => "mysql table",
            SourceKind::AuditTrail => "veil audit trail",
        }
    }

    /// Veil's own: its dictionary is built in, so it can't be edited,
    /// dropped or sampled for discovery; it is governed by policies.
    pub fn is_builtin(self) -> bool {
        match self {
            SourceKind::Files(_) | SourceKind::Database(_) => false,
            SourceKind::AuditTrail => true,
        }
    }

    /// Can its rows be split over several endpoints (by file and row
    /// group)? Otherwise a read is one stream.
    pub fn splits(self) -> bool {
        match self {
            SourceKind::Files(_) => true,
            SourceKind::Database(_) | SourceKind::AuditTrail => false,
        }
    }

    /// Are its rows read from files a kept copy of masked values can stand
    /// in for (`engine::kept_masks`)?
    pub fn is_files(self) -> bool {
        matches!(self, SourceKind::Files(_))
    }
}
