//! The kinds of dataset source, and what each allows. Every place that
//! treats sources differently asks here and matches exhaustively, so a new
//! kind (a database table) is one more variant the compiler walks you
//! through, never a name compared in six places.

use super::dataset::{DatasetRecord, FileFormatKind};

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
    /// Veil's own audit trail, read from the state store.
    AuditTrail,
}

impl SourceKind {
    pub fn of(d: &DatasetRecord) -> SourceKind {
        if d.id == AUDIT_TRAIL_ID && d.source.location == AUDIT_TRAIL_LOCATION {
            SourceKind::AuditTrail
        } else {
            SourceKind::Files(d.source.format)
        }
    }

    /// How `describe` names the source's format.
    pub fn label(self) -> &'static str {
        match self {
            SourceKind::Files(format) => format.as_str(),
            SourceKind::AuditTrail => "veil audit trail",
        }
    }

    /// Veil's own: its dictionary is built in, so it can't be edited,
    /// dropped or sampled for discovery; it is governed by policies.
    pub fn is_builtin(self) -> bool {
        match self {
            SourceKind::Files(_) => false,
            SourceKind::AuditTrail => true,
        }
    }

    /// Can its rows be split over several endpoints (by file and row
    /// group)? Otherwise a read is one stream.
    pub fn splits(self) -> bool {
        match self {
            SourceKind::Files(_) => true,
            SourceKind::AuditTrail => false,
        }
    }
}
