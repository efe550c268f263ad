//! Who is calling: identity, groups, attributes and permissions.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// A user is identified by the token issuer and the subject it vouches for;
/// the same subject under two issuers is two users.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
}

impl Identity {
    pub fn new(issuer: impl Into<String>, subject: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            subject: subject.into(),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.subject, self.issuer)
    }
}

/// Administrative permissions, as in the seed documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Permission {
    /// Global policies, tags, purposes.
    Governance,
    /// Register datasets (becoming their owner).
    CreateDataSource,
    /// Manage the directory: users, groups, attributes, permissions.
    UserAdmin,
    /// Read the audit trail.
    Audit,
}

impl Permission {
    pub const ALL: [Permission; 4] = [
        Permission::Governance,
        Permission::CreateDataSource,
        Permission::UserAdmin,
        Permission::Audit,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Permission::Governance => "GOVERNANCE",
            Permission::CreateDataSource => "CREATE_DATA_SOURCE",
            Permission::UserAdmin => "USER_ADMIN",
            Permission::Audit => "AUDIT",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                format!(
                    "unknown permission '{s}': expected one of GOVERNANCE, CREATE_DATA_SOURCE, USER_ADMIN, AUDIT"
                )
            })
    }
}

pub type Attributes = BTreeMap<String, BTreeSet<String>>;

/// An authenticated caller, after the token's claims were merged with Veil's
/// directory. Built only by the auth layer (`auth::identity::principal`,
/// which also computes the fingerprint).
#[derive(Debug, Clone)]
pub struct Principal {
    pub identity: Identity,
    pub groups: BTreeSet<String>,
    pub attributes: Attributes,
    pub permissions: BTreeSet<Permission>,
    /// Keyed digest of everything above; a ticket issued under another
    /// fingerprint is re-authorized.
    pub fingerprint: [u8; 32],
    /// Where the call came from, for the audit.
    pub client: ClientInfo,
}

#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub address: String,
    pub user_agent: String,
}

impl Principal {
    pub fn has(&self, p: Permission) -> bool {
        self.permissions.contains(&p)
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.contains(group)
    }

    pub fn attribute(&self, key: &str) -> Option<&BTreeSet<String>> {
        self.attributes.get(key)
    }
}

/// A directory entry: groups and attributes Veil adds to a token's claims.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub groups: BTreeSet<String>,
    pub attributes: Attributes,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_parse_case_insensitively() {
        assert_eq!("audit".parse::<Permission>().unwrap(), Permission::Audit);
        assert!(
            "root"
                .parse::<Permission>()
                .unwrap_err()
                .contains("GOVERNANCE")
        );
    }
}
