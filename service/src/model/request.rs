//! What people ask for: access to a dataset, unmasked values, and the
//! column tags discovery proposes for someone to decide.

use serde::{Deserialize, Serialize};

use super::identity::Identity;

/// Where a discovered tag stands. Accepted proposals become column tags
/// and leave this list, except one accepted as another tag (`--tag-as`),
/// which stays on record so discovery doesn't propose it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalStatus {
    Pending,
    Rejected,
    Accepted,
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
    /// The tag the column was given instead, when accepted as another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_as: Option<String>,
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
