//! What happened: the audit event record, and how events are stored in
//! each node's hash chain (the chain itself is `crate::audit::chain`).

use serde::{Deserialize, Serialize};

/// One audited action.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Assigned by the store on append.
    #[serde(default)]
    pub seq: Option<u64>,
    pub event_id: String,
    pub time_ms: i64,
    pub node_id: String,
    /// `auth.failure`, `auth.failure.aggregate`, `list`, `plan`, `read.start`, `read.end`, `describe`,
    /// `admin.<action>`, ...
    pub action: String,
    pub issuer: String,
    pub subject: String,
    /// First 16 hex characters of the caller's identity fingerprint.
    pub identity_fingerprint: String,
    pub client_address: String,
    pub user_agent: String,
    /// Purpose or project acted under (empty until projects exist).
    pub purpose: String,
    pub dataset: Option<String>,
    pub columns: Vec<String>,
    /// `policy-id@version` of every policy applied.
    pub policies: Vec<String>,
    pub masked_columns: Vec<String>,
    pub rows_filtered: bool,
    pub rows: Option<u64>,
    pub bytes: Option<u64>,
    pub duration_ms: Option<u64>,
    /// `ok` or the error kind (`not_found`, `permission_denied`, ...).
    pub status: String,
    /// Sanitized message: never literal values, never secrets.
    pub message: String,
    /// Digest of the request with literals removed.
    pub query_fingerprint: String,
}

impl AuditEvent {
    pub fn dataset(mut self, name: &str) -> Self {
        self.dataset = Some(name.to_string());
        self
    }
}

/// The MAC before a node's first event.
pub const GENESIS: [u8; 32] = [0; 32];

/// A node's chain as its head row records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub node_id: String,
    /// Last sequence number appended (0: none yet).
    pub seq: u64,
    pub mac: [u8; 32],
    /// Events up to this sequence number were purged (0: none).
    pub purged_through: u64,
    /// The MAC of event `purged_through` (the genesis MAC if none).
    pub purged_mac: [u8; 32],
}

impl ChainHead {
    pub fn empty(node_id: &str) -> Self {
        Self {
            node_id: node_id.to_string(),
            seq: 0,
            mac: GENESIS,
            purged_through: 0,
            purged_mac: GENESIS,
        }
    }
}

/// One event as stored: the indexed columns, the JSON body, the link MAC.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAuditRow {
    pub node_id: String,
    pub seq: u64,
    pub time_ms: i64,
    pub action: String,
    pub body: String,
    /// Hex; `None` for events written before the chain existed.
    pub mac: Option<String>,
}
