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
        None => p.spec.tags.iter().any(|t| {
            d.tags.iter().any(|dt| tag_covers(t, dt))
                || d.columns
                    .iter()
                    .any(|c| c.tags.iter().any(|ct| tag_covers(t, ct)))
        }),
    }
}

fn label(p: &Policy) -> String {
    format!("{}@{}", p.id, p.version)
}

/// May `principal` read (and see) `dataset`?
pub fn may_read(
    principal: &Principal,
    dataset: &DatasetRecord,
    policies: &[Policy],
    default_issuer: &str,
) -> bool {
    if dataset.is_owner(&principal.identity) {
        return true;
    }
    let mut any = false;
    for p in policies {
        let PolicyRule::Subscription(s) = &p.rule else {
            continue;
        };
        // Global subscription policies select datasets by dataset tags only.
        let applies = match &p.spec.dataset {
            Some(name) => name == &dataset.name,
            None => p
                .spec
                .tags
                .iter()
                .any(|t| dataset.tags.iter().any(|dt| tag_covers(t, dt))),
        };
        if !applies {
            continue;
        }
        any = true;
        let admitted = s.anyone
            || s.groups.iter().any(|g| principal.in_group(g))
            || s.attributes.iter().any(|(k, vs)| {
                principal
                    .attribute(k)
                    .is_some_and(|have| vs.iter().any(|v| have.contains(v)))
            })
            || s.users
                .iter()
                .any(|u| u.resolve(default_issuer) == principal.identity)
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
                        .filter(|c| {
                            c.tags
                                .iter()
                                .any(|ct| p.spec.tags.iter().any(|t| tag_covers(t, ct)))
                        })
                        .map(|c| c.name.as_str())
                        .collect()
                };
                for c in columns {
                    applied.insert(label(p));
                    let replace = masks
                        .get(c)
                        .is_none_or(|cur| m.restrictiveness() > cur.mask.restrictiveness());
                    if replace {
                        masks.insert(
                            c.to_string(),
                            AppliedMask {
                                mask: m.clone(),
                                policy: label(p),
                            },
                        );
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
                let values = principal
                    .attribute(&r.attribute)
                    .cloned()
                    .unwrap_or_default();
                for column in columns {
                    applied.insert(label(p));
                    row_rules.push(RowRule {
                        column,
                        values: values.clone(),
                        policy: label(p),
                    });
                }
            }
        }
    }
    Ok(EffectivePolicy {
        masks,
        row_rules,
        applied: applied.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::identity::{ClientInfo, Identity};
    use crate::policy::model::{Origin, PolicySpec};
    use crate::secrets::{KeyPurpose, MasterKey};
    use crate::store::model::{ColumnRecord, FileFormatKind, SourceSpec};

    fn dataset() -> DatasetRecord {
        let col = |n: &str, tags: &[&str]| ColumnRecord {
            name: n.into(),
            data_type: "Utf8".into(),
            nullable: true,
            description: String::new(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            partition: false,
            from_config: false,
        };
        DatasetRecord {
            id: "d".into(),
            name: "s.t".into(),
            source: SourceSpec {
                format: FileFormatKind::Csv,
                location: "/x".into(),
                hive_partitioned: false,
            },
            description: String::new(),
            owners: vec![Identity::new("i", "owner")],
            tags: vec!["Clinical".into()],
            columns: vec![
                col("email", &["pii.Email"]),
                col("state", &[]),
                col("note", &[]),
            ],
            origin: Origin::Config,
        }
    }

    fn policies(texts: &[&str]) -> Vec<Policy> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let spec: PolicySpec = toml::from_str(t).unwrap();
                let rule = spec.validate().unwrap();
                Policy {
                    id: format!("p{i}"),
                    version: 1,
                    origin: Origin::Config,
                    spec,
                    rule,
                }
            })
            .collect()
    }

    fn who(sub: &str, groups: &[&str], attrs: &[(&str, &str)]) -> Principal {
        let mut a = crate::auth::identity::Attributes::new();
        for (k, v) in attrs {
            a.entry(k.to_string()).or_default().insert(v.to_string());
        }
        Principal::new(
            Identity::new("i", sub),
            groups.iter().map(|g| g.to_string()).collect(),
            a,
            Default::default(),
            &MasterKey::from_bytes([1; 32]).derive(KeyPurpose::Fingerprint),
            ClientInfo::default(),
        )
    }

    #[test]
    fn without_subscription_only_owners_read_and_subscriptions_combine_with_and() {
        let d = dataset();
        assert!(may_read(&who("owner", &[], &[]), &d, &[], "i"));
        assert!(!may_read(&who("x", &["a"], &[]), &d, &[], "i"));
        let p = policies(&[
            "name = \"a\"\ndataset = \"s.t\"\nsubscription = { groups = [\"a\"] }",
            "name = \"b\"\ntags = [\"clinical\"]\nsubscription = { attributes = { region = [\"eu\"] } }",
        ]);
        assert!(may_read(
            &who("x", &["a"], &[("region", "eu")]),
            &d,
            &p,
            "i"
        ));
        assert!(!may_read(&who("x", &["a"], &[]), &d, &p, "i"));
        assert!(!may_read(&who("x", &[], &[("region", "eu")]), &d, &p, "i"));
        let users =
            policies(&["name = \"u\"\ndataset = \"s.t\"\nsubscription = { users = [\"pick\"] }"]);
        assert!(may_read(&who("pick", &[], &[]), &d, &users, "i"));
        assert!(!may_read(&who("other", &[], &[]), &d, &users, "i"));
    }

    #[test]
    fn the_most_restrictive_mask_wins_and_exemption_needs_every_policy() {
        let d = dataset();
        let p = policies(&[
            "name = \"h\"\ntags = [\"PII\"]\nmask = \"hash\"",
            "name = \"n\"\ndataset = \"s.t\"\ncolumns = [\"email\"]\nmask = \"null\"\nexcept = { groups = [\"support\"] }",
            "name = \"c\"\ndataset = \"s.t\"\ncolumns = [\"email\"]\nmask = { constant = \"x\" }",
        ]);
        let e = data_policy(&who("x", &[], &[]), &d, &p, "i").unwrap();
        assert_eq!(e.masks["email"].mask, MaskSpec::Null);
        // Exempt from the null mask only: the next most restrictive applies.
        let e = data_policy(&who("x", &["support"], &[]), &d, &p, "i").unwrap();
        assert_eq!(e.masks["email"].mask.label(), "constant");
        assert!(!e.masks.contains_key("state"));
    }

    #[test]
    fn row_filters_and_with_missing_attributes_keeping_nothing() {
        let d = dataset();
        let p = policies(&[
            "name = \"r\"\ndataset = \"s.t\"\nrow_filter = { column = \"state\", attribute = \"state\" }\nexcept = { groups = [\"all\"] }",
        ]);
        let e = data_policy(&who("x", &[], &[("state", "CA")]), &d, &p, "i").unwrap();
        assert_eq!(e.row_rules.len(), 1);
        assert!(e.row_rules[0].values.contains("CA"));
        let e = data_policy(&who("x", &[], &[]), &d, &p, "i").unwrap();
        assert!(
            e.row_rules[0].values.is_empty(),
            "no attribute, no values: no rows"
        );
        let e = data_policy(&who("x", &["all"], &[]), &d, &p, "i").unwrap();
        assert!(!e.rows_filtered());
    }

    #[test]
    fn policies_on_missing_columns_fail_closed() {
        let d = dataset();
        for t in [
            "name = \"m\"\ndataset = \"s.t\"\ncolumns = [\"gone\"]\nmask = \"null\"",
            "name = \"r\"\ndataset = \"s.t\"\nrow_filter = { column = \"gone\", attribute = \"a\" }",
        ] {
            assert!(matches!(
                data_policy(&who("x", &[], &[]), &d, &policies(&[t]), "i"),
                Err(VeilError::FailedPrecondition(_))
            ));
        }
    }
}
