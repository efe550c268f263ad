//! Which policies apply to one principal on one dataset, and what they do.
//!
//! Combining rules (README "Policies"):
//! * subscription: owners may always read; otherwise every applicable
//!   subscription policy must admit the principal (AND); with none, only
//!   owners may read. A dataset the principal may not read is also invisible.
//! * masks: of the policies on a column that do not exempt the principal, the
//!   most restrictive applies (null > constant > hash), never a chain.
//! * row filters: every non-exempting one applies (AND). A principal without
//!   the attribute a filter matches sees no rows.

use std::collections::{BTreeMap, BTreeSet};

use crate::auth::identity::Principal;
use crate::error::{Result, VeilError};
use crate::policy::model::{MaskSpec, Policy, PolicyRule, tag_covers};
use crate::store::model::DatasetRecord;

/// A mask chosen for a column.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedMask {
    pub mask: MaskSpec,
    pub policy: String,
}

/// Keep rows whose `column` holds one of `values` (none: keep no rows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowRule {
    pub column: String,
    pub values: BTreeSet<String>,
    pub policy: String,
}

/// What one principal gets from one dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectivePolicy {
    pub masks: BTreeMap<String, AppliedMask>,
    pub row_rules: Vec<RowRule>,
    /// `policy-id@version` of every policy that applied.
    pub applied: Vec<String>,
}

impl EffectivePolicy {
    pub fn rows_filtered(&self) -> bool {
        !self.row_rules.is_empty()
    }
}

fn applies_to_dataset(p: &Policy, d: &DatasetRecord) -> bool {
    match &p.spec.dataset {
        Some(name) => name == &d.name,
        None => p.spec.tags.iter().any(|t| d.tags.iter().any(|dt| tag_covers(t, dt))
            || d.columns.iter().any(|c| c.tags.iter().any(|ct| tag_covers(t, ct)))),
    }
}

fn label(p: &Policy) -> String {
    format!("{}@{}", p.id, p.version)
}

/// May `principal` read (and see) `dataset`?
pub fn may_read(principal: &Principal, dataset: &DatasetRecord, policies: &[Policy], default_issuer: &str) -> bool {
    if dataset.is_owner(&principal.identity) {
        return true;
    }
    let mut any = false;
    for p in policies {
        let PolicyRule::Subscription(s) = &p.rule else { continue };
        // Global subscription policies select datasets by dataset tags only.
        let applies = match &p.spec.dataset {
            Some(name) => name == &dataset.name,
            None => p.spec.tags.iter().any(|t| dataset.tags.iter().any(|dt| tag_covers(t, dt))),
        };
        if !applies {
            continue;
        }
        any = true;
        let admitted = s.anyone
            || s.groups.iter().any(|g| principal.in_group(g))
            || s.attributes.iter().any(|(k, vs)| {
                principal.attribute(k).is_some_and(|have| vs.iter().any(|v| have.contains(v)))
            })
            || s.users.iter().any(|u| u.resolve(default_issuer) == principal.identity)
            || p.spec.except.matches(principal, default_issuer);
        if !admitted {
            return false;
        }
    }
    any
}

/// The data policies for a principal who may read the dataset.
pub fn data_policy(
    principal: &Principal,
    dataset: &DatasetRecord,
    policies: &[Policy],
    default_issuer: &str,
) -> Result<EffectivePolicy> {
    let mut masks: BTreeMap<String, AppliedMask> = BTreeMap::new();
    let mut row_rules = Vec::new();
    let mut applied = BTreeSet::new();
    for p in policies.iter().filter(|p| applies_to_dataset(p, dataset)) {
        if matches!(p.rule, PolicyRule::Subscription(_)) {
            applied.insert(label(p));
            continue;
        }
        if p.spec.except.matches(principal, default_issuer) {
            continue;
        }
        match &p.rule {
            PolicyRule::Subscription(_) => {}
            PolicyRule::Mask(m) => {
                let columns: Vec<&str> = if p.spec.dataset.is_some() {
                    for c in &p.spec.columns {
                        if dataset.column(c).is_none() {
                            return Err(VeilError::FailedPrecondition(format!(
                                "policy '{}' masks column '{c}', which dataset '{}' does not have; the policy cannot be enforced, so no data is served",
                                p.spec.name, dataset.name
                            )));
                        }
                    }
                    p.spec.columns.iter().map(String::as_str).collect()
                } else {
                    dataset
                        .columns
                        .iter()
                        .filter(|c| c.tags.iter().any(|ct| p.spec.tags.iter().any(|t| tag_covers(t, ct))))
                        .map(|c| c.name.as_str())
                        .collect()
                };
                for c in columns {
                    applied.insert(label(p));
                    let replace = masks
                        .get(c)
                        .is_none_or(|cur| m.restrictiveness() > cur.mask.restrictiveness());
                    if replace {
                        masks.insert(c.to_string(), AppliedMask { mask: m.clone(), policy: label(p) });
                    }
                }
            }
            PolicyRule::RowFilter(r) => {
                let columns: Vec<String> = match (&r.column, &r.column_tag) {
                    (Some(c), _) => {
                        if dataset.column(c).is_none() {
                            return Err(VeilError::FailedPrecondition(format!(
                                "row policy '{}' filters on column '{c}', which dataset '{}' does not have; the policy cannot be enforced, so no data is served",
                                p.spec.name, dataset.name
                            )));
                        }
                        vec![c.clone()]
                    }
                    (None, Some(tag)) => dataset
                        .columns
                        .iter()
                        .filter(|c| c.tags.iter().any(|ct| tag_covers(tag, ct)))
                        .map(|c| c.name.clone())
                        .collect(),
                    (None, None) => vec![],
                };
                let values = principal.attribute(&r.attribute).cloned().unwrap_or_default();
                for column in columns {
                    applied.insert(label(p));
                    row_rules.push(RowRule { column, values: values.clone(), policy: label(p) });
                }
            }
        }
    }
    Ok(EffectivePolicy { masks, row_rules, applied: applied.into_iter().collect() })
}
