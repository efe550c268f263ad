//! Records the store holds. Plain data; no behaviour beyond lookups.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::auth::identity::{Attributes, Identity, Permission};
use crate::policy::model::{Origin, Policy};

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
    pub format: FileFormatKind,
    /// A file or folder: an absolute, canonical local path, or a remote
    /// `scheme://bucket/key` (an object, or a prefix read like a folder).
    pub location: String,
    /// Folder of `key=value/` sub-folders whose keys become columns.
    pub hive_partitioned: bool,
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

/// Where a discovered tag stands. Accepted proposals become column tags
/// and leave this list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalStatus {
    Pending,
    Rejected,
}

/// A column tag sensitive data discovery proposed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagProposal {
    pub column: String,
    pub tag: String,
    /// What discovery took the column for (`email`, `ssn`, ...).
    pub kind: String,
    /// 0 to 100.
    pub confidence: u8,
    /// Counts and header words, never a value.
    pub evidence: String,
    pub status: ProposalStatus,
    pub proposed_by: Identity,
    pub proposed_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<Identity>,
}

impl DatasetRecord {
    pub fn column(&self, name: &str) -> Option<&ColumnRecord> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn is_owner(&self, id: &Identity) -> bool {
        self.owners.contains(id)
    }
}

/// A directory entry: groups and attributes Veil adds to a token's claims.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub groups: BTreeSet<String>,
    pub attributes: Attributes,
}

/// Where an access request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    Pending,
    Approved,
    Denied,
    /// Approved, then withdrawn: the requester reads no more.
    Revoked,
}

impl RequestStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            RequestStatus::Pending => "pending",
            RequestStatus::Approved => "approved",
            RequestStatus::Denied => "denied",
            RequestStatus::Revoked => "revoked",
        }
    }
}

/// A request to read an *on request* dataset, and its decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRequest {
    pub id: String,
    /// The dataset's stable id (a dataset dropped and registered again is
    /// another dataset: its approvals do not carry over).
    pub dataset_id: String,
    pub dataset: String,
    pub requester: Identity,
    pub reason: String,
    pub status: RequestStatus,
    #[serde(default)]
    pub decided_by: Option<Identity>,
    #[serde(default)]
    pub decision_note: String,
    pub created_ms: i64,
    #[serde(default)]
    pub decided_ms: Option<i64>,
    /// Set on an unmask request: which masked values, of which column,
    /// under which policy. Stored with access requests (same lifecycle:
    /// pending, approved or denied), but never grants access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmask: Option<UnmaskDetails>,
}

/// What an unmask request asks to see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmaskDetails {
    pub column: String,
    /// The policy whose reversible mask produced the values.
    pub policy: String,
    /// That policy's `id@version` when the request was made: a release
    /// needs the column still masked by exactly that version.
    #[serde(default)]
    pub policy_label: String,
    /// The masked values, as the requester saw them.
    pub values: Vec<String>,
}

/// A decision on an access request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessDecision {
    pub to: RequestStatus,
    pub by: Identity,
    pub note: String,
    pub at_ms: i64,
}

/// Everything policy-relevant, at one version of the store.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub version: u64,
    pub datasets: BTreeMap<String, DatasetRecord>,
    pub policies: Vec<Policy>,
    pub users: HashMap<Identity, UserRecord>,
    /// Directory entries declared in the config file (read-only at run time).
    pub config_users: BTreeSet<Identity>,
    pub grants: HashMap<Identity, BTreeMap<Permission, Origin>>,
    pub disabled: BTreeSet<Identity>,
    /// Approved access requests: dataset id → who may read it.
    pub approvals: BTreeMap<String, BTreeSet<Identity>>,
}
