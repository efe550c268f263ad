//! Policies as written: in the config file (`[[policies]]`) and, later, through
//! admin actions. One serde form serves both; [`PolicySpec::validate`] turns it
//! into a [`Policy`] and refuses what cannot be enforced.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::auth::identity::{Identity, Principal};
use crate::error::{Result, VeilError};

/// Where a record was declared. Config-declared records are read-only at run
/// time, so a reload can't resurrect something revoked at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Config,
    Runtime,
}

/// A reference to a user: a bare subject under the default issuer, or both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum UserRefSpec {
    Subject(String),
    Full { issuer: String, subject: String },
}

impl UserRefSpec {
    pub fn resolve(&self, default_issuer: &str) -> Identity {
        match self {
            UserRefSpec::Subject(s) => Identity::new(default_issuer, s.clone()),
            UserRefSpec::Full { issuer, subject } => Identity::new(issuer.clone(), subject.clone()),
        }
    }
}

/// "For everyone except ...": members of any listed group, holders of any
/// listed attribute value, or listed users.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub users: Vec<UserRefSpec>,
}

impl Condition {
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.attributes.is_empty() && self.users.is_empty()
    }

    /// Does the principal satisfy the condition (any listed group, attribute
    /// value or user)?
    pub fn matches(&self, p: &Principal, default_issuer: &str) -> bool {
        self.groups.iter().any(|g| p.in_group(g))
            || self.attributes.iter().any(|(k, vs)| {
                p.attribute(k)
                    .is_some_and(|have| vs.iter().any(|v| have.contains(v)))
            })
            || self
                .users
                .iter()
                .any(|u| u.resolve(default_issuer) == p.identity)
    }
}

/// Who may read a dataset (and know it exists).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSpec {
    /// Everyone may see and read.
    #[serde(default)]
    pub anyone: bool,
    /// Users in any of these groups or holding any of these attribute values.
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, Vec<String>>,
    /// Hand-picked users; the dataset stays invisible to everyone else.
    #[serde(default)]
    pub users: Vec<UserRefSpec>,
}

/// How a column's values are replaced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskSpec {
    /// Keyed HMAC-SHA256 per dataset, rendered as 32 hex characters.
    Hash,
    /// Null of the column's type.
    Null,
    /// A constant, cast to the column's type.
    Constant(serde_json::Value),
}

impl MaskSpec {
    /// Higher is more restrictive: null > constant > hash.
    pub fn restrictiveness(&self) -> u8 {
        match self {
            MaskSpec::Null => 3,
            MaskSpec::Constant(_) => 2,
            MaskSpec::Hash => 1,
        }
    }

    pub fn label(&self) -> String {
        match self {
            MaskSpec::Hash => "hash".into(),
            MaskSpec::Null => "null".into(),
            MaskSpec::Constant(_) => "constant".into(),
        }
    }
}

/// Rows are kept only where `column` (or every column tagged `column_tag`)
/// holds one of the caller's values of `attribute`. A caller without the
/// attribute sees no rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowFilterSpec {
    #[serde(default)]
    pub column: Option<String>,
    #[serde(default)]
    pub column_tag: Option<String>,
    pub attribute: String,
}

/// A policy exactly as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    pub name: String,
    /// Local policy: applies to this dataset only.
    #[serde(default)]
    pub dataset: Option<String>,
    /// Global policy: applies to datasets (subscription) or columns (masks)
    /// carrying any of these tags, hierarchically and case-insensitively.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Columns a local mask applies to.
    #[serde(default)]
    pub columns: Vec<String>,
    #[serde(default)]
    pub subscription: Option<SubscriptionSpec>,
    #[serde(default)]
    pub mask: Option<MaskSpec>,
    #[serde(default)]
    pub row_filter: Option<RowFilterSpec>,
    /// The policy does not apply to principals matching this condition.
    #[serde(default)]
    pub except: Condition,
}

/// What a policy does.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyRule {
    Subscription(SubscriptionSpec),
    Mask(MaskSpec),
    RowFilter(RowFilterSpec),
}

/// A validated policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub id: String,
    pub version: u64,
    pub origin: Origin,
    pub spec: PolicySpec,
    pub rule: PolicyRule,
}

impl PolicySpec {
    pub fn validate(&self) -> Result<PolicyRule> {
        let bad = |m: String| VeilError::InvalidArgument(format!("policy '{}': {m}", self.name));
        if self.name.trim().is_empty() {
            return Err(VeilError::InvalidArgument(
                "a policy needs a non-empty name".into(),
            ));
        }
        if self.dataset.is_some() != self.tags.is_empty() {
            return Err(bad(
                "set either `dataset` (a local policy) or `tags` (a global policy), not both or neither"
                    .into(),
            ));
        }
        let rule = match (&self.subscription, &self.mask, &self.row_filter) {
            (Some(s), None, None) => {
                let kinds = [
                    s.anyone,
                    !(s.groups.is_empty() && s.attributes.is_empty()),
                    !s.users.is_empty(),
                ];
                if kinds.iter().filter(|k| **k).count() != 1 {
                    return Err(bad("a subscription is exactly one of `anyone = true`, `groups`/`attributes`, or `users`".into()));
                }
                if !self.columns.is_empty() {
                    return Err(bad("`columns` only applies to masks".into()));
                }
                PolicyRule::Subscription(s.clone())
            }
            (None, Some(m), None) => {
                if self.dataset.is_some() && self.columns.is_empty() {
                    return Err(bad("a local mask needs `columns`".into()));
                }
                if !self.tags.is_empty() && !self.columns.is_empty() {
                    return Err(bad(
                        "a global mask selects columns by `tags`; drop `columns`".into(),
                    ));
                }
                PolicyRule::Mask(m.clone())
            }
            (None, None, Some(r)) => {
                if r.column.is_some() == r.column_tag.is_some() {
                    return Err(bad(
                        "a row filter needs exactly one of `column` or `column_tag`".into(),
                    ));
                }
                if r.attribute.trim().is_empty() {
                    return Err(bad(
                        "a row filter needs the user `attribute` to match".into()
                    ));
                }
                PolicyRule::RowFilter(r.clone())
            }
            _ => {
                return Err(bad(
                    "a policy is exactly one of `subscription`, `mask` or `row_filter`".into(),
                ));
            }
        };
        Ok(rule)
    }
}

/// `PII` covers `pii` and `PII.email`, but not `PIIX`.
pub fn tag_covers(policy_tag: &str, tag: &str) -> bool {
    let (p, t) = (policy_tag.to_ascii_lowercase(), tag.to_ascii_lowercase());
    t == p || (t.len() > p.len() && t.starts_with(&p) && t.as_bytes()[p.len()] == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(toml_text: &str) -> PolicySpec {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn tags_are_hierarchical_and_case_insensitive() {
        assert!(tag_covers("PII", "pii"));
        assert!(tag_covers("PII", "pii.Email"));
        assert!(!tag_covers("PII", "PIIX"));
        assert!(!tag_covers("PII.email", "PII"));
    }

    #[test]
    fn config_forms_parse_and_validate() {
        let s = spec("name = \"a\"\ndataset = \"x.y\"\nsubscription = { groups = [\"g\"] }");
        assert!(matches!(s.validate().unwrap(), PolicyRule::Subscription(_)));
        let s = spec(
            "name = \"m\"\ntags = [\"PII\"]\nmask = \"hash\"\nexcept = { groups = [\"admin\"] }",
        );
        assert_eq!(s.validate().unwrap(), PolicyRule::Mask(MaskSpec::Hash));
        let s = spec(
            "name = \"c\"\ndataset = \"x.y\"\ncolumns = [\"ip\"]\nmask = { constant = \"REDACTED\" }",
        );
        assert!(matches!(
            s.validate().unwrap(),
            PolicyRule::Mask(MaskSpec::Constant(_))
        ));
        let s = spec(
            "name = \"r\"\ndataset = \"x.y\"\nrow_filter = { column = \"state\", attribute = \"state\" }",
        );
        assert!(matches!(s.validate().unwrap(), PolicyRule::RowFilter(_)));
    }

    #[test]
    fn ambiguous_policies_are_refused() {
        for bad in [
            "name = \"a\"\nsubscription = { anyone = true }",
            "name = \"a\"\ndataset = \"x.y\"\ntags = [\"t\"]\nmask = \"null\"",
            "name = \"a\"\ndataset = \"x.y\"\nmask = \"null\"",
            "name = \"a\"\ndataset = \"x.y\"\nsubscription = { anyone = true, groups = [\"g\"] }",
            "name = \"a\"\ndataset = \"x.y\"\nrow_filter = { attribute = \"s\" }",
        ] {
            assert!(spec(bad).validate().is_err(), "{bad}");
        }
    }
}
