//! Which policies apply to one principal on one dataset, and what they do.
//!
//! Combining rules (README "Policies"):
//! * subscription: owners may always read. Otherwise every applicable
//!   subscription policy must admit the principal (AND); with none, only
//!   owners may read. A principal a policy does not admit can't see the
//!   dataset, except under an *on request* policy, which shows it to
//!   everyone and admits approved requesters.
//! * data policies: each applicable policy resolves, for the principal, to
//!   one rule or to an exemption: the first step of its chain whose `who`
//!   matches decides (an *everyone except* policy is a two-step chain). A
//!   principal is exempt only if every applicable policy exempts them.
//! * masks: of the rules on a column, the most restrictive applies (null >
//!   constant > hash, reversible > regex/rounding/format-preserving; a hash
//!   beats a reversible mask), never a chain of masks. Two
//!   incomparable rules of the lowest rank (two regexes, a regex and a
//!   rounding) make the column hashed; of two roundings the coarser applies.
//!   A conditional mask applies on the rows its condition holds (or is
//!   unknown) for, where it is more restrictive than the unconditional one.
//! * row filters: every rule applies (AND). A principal without the
//!   attribute a matching filter needs sees no rows.

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::logical_expr::Expr;
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use crate::error::{Result, VeilError};
use crate::model::dataset::DatasetRecord;
use crate::model::identity::{Identity, Principal};
use crate::model::policy::{Condition, DataRule, MaskSpec, Policy, PolicyRule, RowRuleSpec};
use crate::policy::differential_privacy::DpPolicy;
use crate::policy::masks::mask_output_type;
use crate::policy::predicate::POLICY_SQL;
use crate::policy::rules::{ConditionExt, MaskSpecExt, SubscriptionExt, tag_covers};

/// May the principal read a dataset, see it, or neither?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    /// Visible; readable once an access request is approved.
    Request,
    Hidden,
}

/// Why a policy did what it did to one principal (for `explain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub policy: String,
    pub label: String,
    pub scope: &'static str,
    pub outcome: String,
}

/// A mask chosen for a column, on the rows `when` holds for (all if none).
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedMask {
    pub mask: MaskSpec,
    pub policy: String,
    pub when: Option<Expr>,
    pub when_sql: Option<String>,
}

/// Everything masking one column: the first candidate whose condition holds
/// applies; unconditional candidates come last (at most one).
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnMask {
    pub candidates: Vec<AppliedMask>,
}

impl ColumnMask {
    /// Each candidate with its condition's SQL, for those who may read the
    /// policies (`explain`).
    pub fn label(&self) -> String {
        self.labelled(|w| format!(" where {w}"))
    }

    /// Each candidate, a condition only said to exist: a reader learns
    /// how the column is masked, not the condition's literals (values of
    /// rows a row policy may hide from them, thresholds).
    pub fn reader_label(&self) -> String {
        self.labelled(|_| " on some rows".into())
    }

    fn labelled(&self, condition: impl Fn(&str) -> String) -> String {
        self.candidates
            .iter()
            .map(|c| match &c.when_sql {
                None => c.mask.label(),
                Some(w) => format!("{}{}", c.mask.label(), condition(w)),
            })
            .collect::<Vec<_>>()
            .join("; otherwise ")
    }

    /// Some rows may keep their raw value (every candidate is conditional).
    pub fn is_conditional(&self) -> bool {
        self.candidates.iter().all(|c| c.when.is_some())
    }

    /// The column's type once masked.
    pub fn output_type(&self, dt: &DataType) -> Result<DataType> {
        let mut out = dt.clone();
        for c in &self.candidates {
            let t = mask_output_type(&c.mask, dt)?;
            if t != *dt {
                out = t;
            }
        }
        Ok(out)
    }
}

/// One row rule, bound to the principal.
#[derive(Debug, Clone, PartialEq)]
pub enum RowRuleKind {
    /// Keep rows whose `column` holds one of `values` (none: keep no rows).
    Matching {
        column: String,
        values: BTreeSet<String>,
    },
    /// Keep rows where this bound condition is true.
    Where(Expr),
    /// Keep rows whose `column` is within the last `seconds` of the request.
    Window { column: String, seconds: i64 },
    /// Keep the stable `percent`% sample keyed on these columns.
    Sample { columns: Vec<String>, percent: f64 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct RowRule {
    pub kind: RowRuleKind,
    pub policy: String,
    pub description: String,
}

/// What one principal gets from one dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectivePolicy {
    pub masks: BTreeMap<String, ColumnMask>,
    pub row_rules: Vec<RowRule>,
    /// k-anonymization groups, one per applicable policy.
    pub kanon: Vec<KAnonGroup>,
    /// Differential privacy: only aggregate queries, answered with noise.
    pub dp: Option<DpRule>,
    /// `policy-id@version` of every policy that applied.
    pub applied: Vec<String>,
    /// How each applicable policy resolved for this principal.
    pub decisions: Vec<Decision>,
}

impl EffectivePolicy {
    pub fn rows_filtered(&self) -> bool {
        !self.row_rules.is_empty()
    }

    /// Whether anything but the differential privacy rule reads `column`:
    /// a mask on it or a mask's condition, a row rule, k-anonymization.
    pub fn reads_column(&self, column: &str) -> bool {
        let named = |e: &Expr| e.column_refs().iter().any(|c| c.name == column);
        self.masks.contains_key(column)
            || self
                .masks
                .values()
                .flat_map(|m| &m.candidates)
                .any(|c| c.when.as_ref().is_some_and(named))
            || self.row_rules.iter().any(|r| match &r.kind {
                RowRuleKind::Matching { column: c, .. } | RowRuleKind::Window { column: c, .. } => {
                    c == column
                }
                RowRuleKind::Where(e) => named(e),
                RowRuleKind::Sample { columns, .. } => columns.iter().any(|c| c == column),
            })
            || self
                .kanon
                .iter()
                .any(|g| g.columns.iter().any(|c| c == column))
    }

    /// How a column is masked, as `explain` shows it (empty: served as
    /// stored).
    pub fn mask_label(&self, column: &str) -> String {
        self.labelled(column, ColumnMask::label)
    }

    /// How a column is masked, as its reader is told (`describe`, errors):
    /// a mask's condition is only said to exist.
    pub fn reader_mask_label(&self, column: &str) -> String {
        self.labelled(column, ColumnMask::reader_label)
    }

    fn labelled(&self, column: &str, label: impl Fn(&ColumnMask) -> String) -> String {
        let mut parts: Vec<String> = self.masks.get(column).map(label).into_iter().collect();
        for g in self
            .kanon
            .iter()
            .filter(|g| g.columns.iter().any(|c| c == column))
        {
            parts.push(format!(
                "k-anonymity(k={}) over {}",
                g.k,
                g.columns.join(", ")
            ));
        }
        parts.join("; then ")
    }

    /// Columns whose values a policy changes (masked or k-anonymized).
    pub fn masked_columns(&self) -> BTreeSet<String> {
        self.masks
            .keys()
            .cloned()
            .chain(self.kanon.iter().flat_map(|g| g.columns.iter().cloned()))
            .collect()
    }
}

/// The differential privacy policy that applies to a principal.
#[derive(Debug, Clone, PartialEq)]
pub struct DpRule {
    pub policy: DpPolicy,
    /// `policy-id@version`: answers are kept per version of the policy.
    pub label: String,
    /// The policy's name, for messages.
    pub name: String,
}

/// One k-anonymization group: these quasi-identifier columns, counted
/// jointly after the row rules; combinations seen fewer than `k` times are
/// nulled.
#[derive(Debug, Clone, PartialEq)]
pub struct KAnonGroup {
    pub columns: Vec<String>,
    pub k: u64,
    pub policy: String,
}

/// The Arrow field of a dictionary column.
pub fn dictionary_field(name: &str, data_type: &str, nullable: bool) -> Result<Field> {
    let dt = DataType::from_str(data_type).map_err(|e| {
        VeilError::Internal(format!(
            "the dictionary type '{data_type}' of column '{name}' does not parse: {e}"
        ))
    })?;
    Ok(Field::new(name, dt, nullable))
}

/// The dataset's dictionary as an Arrow schema (what policies are checked
/// and parsed against).
pub fn dictionary_schema(d: &DatasetRecord) -> Result<Schema> {
    let fields = d
        .columns
        .iter()
        .map(|c| dictionary_field(&c.name, &c.data_type, c.nullable))
        .collect::<Result<Vec<_>>>()?;
    Ok(Schema::new(fields))
}

/// Does the policy apply to the dataset? Local: by name. Global: by a tag
/// on the dataset (subscriptions) or on the dataset or a column (data
/// policies). Restricted global: only where a listed user owns the dataset.
pub fn applies_to(p: &Policy, d: &DatasetRecord, default_issuer: &str) -> bool {
    if let Some(name) = &p.spec.dataset {
        return name == &d.name;
    }
    if !p.spec.restricted_to.is_empty()
        && !p
            .spec
            .restricted_to
            .iter()
            .any(|u| d.is_owner(&u.resolve(default_issuer)))
    {
        return false;
    }
    let dataset_tag = p
        .spec
        .tags
        .iter()
        .any(|t| d.tags.iter().any(|dt| tag_covers(t, dt)));
    match p.rule {
        PolicyRule::Subscription(_) => dataset_tag,
        PolicyRule::Data(_) => {
            dataset_tag
                || p.spec.tags.iter().any(|t| {
                    d.columns
                        .iter()
                        .any(|c| c.tags.iter().any(|ct| tag_covers(t, ct)))
                })
        }
    }
}

pub fn describe_condition(c: &Condition) -> String {
    let mut parts = Vec::new();
    if !c.groups.is_empty() {
        parts.push(format!("members of {}", c.groups.join(", ")));
    }
    for (k, vs) in &c.attributes {
        parts.push(format!("holders of {k} = {}", vs.join(" or ")));
    }
    if !c.permissions.is_empty() {
        let perms: Vec<&str> = c.permissions.iter().map(|p| p.as_str()).collect();
        parts.push(format!("holders of the {} permission", perms.join(" or ")));
    }
    if !c.users.is_empty() {
        let users: Vec<String> = c
            .users
            .iter()
            .map(|u| match u {
                crate::model::policy::UserRefSpec::Subject(s) => s.clone(),
                crate::model::policy::UserRefSpec::Full { issuer, subject } => {
                    format!("{subject} ({issuer})")
                }
            })
            .collect();
        parts.push(format!("users {}", users.join(", ")));
    }
    if parts.is_empty() {
        "no one".into()
    } else {
        parts.join("; ")
    }
}

/// May `principal` read (or see) `dataset`? `approved` holds the
/// principals whose access requests for it were approved.
pub fn access(
    principal: &Principal,
    dataset: &DatasetRecord,
    policies: &[Policy],
    approved: &BTreeSet<Identity>,
    default_issuer: &str,
    mut decisions: Option<&mut Vec<Decision>>,
) -> Access {
    if dataset.is_owner(&principal.identity) {
        if let Some(d) = decisions.as_deref_mut() {
            d.push(Decision {
                policy: String::new(),
                label: String::new(),
                scope: "owner",
                outcome: "owners always read their datasets".into(),
            });
        }
        return Access::Read;
    }
    let mut verdict: Option<Access> = None;
    for p in policies {
        let PolicyRule::Subscription(s) = &p.rule else {
            continue;
        };
        if !applies_to(p, dataset, default_issuer) {
            continue;
        }
        let exempt = p.spec.except.matches(principal, default_issuer);
        let (this, why) = if exempt {
            (
                Access::Read,
                format!(
                    "admitted: excepted ({})",
                    describe_condition(&p.spec.except)
                ),
            )
        } else if s.on_request {
            if approved.contains(&principal.identity) {
                (
                    Access::Read,
                    "admitted: access request approved".to_string(),
                )
            } else {
                (
                    Access::Request,
                    "visible; readable after an approved access request".to_string(),
                )
            }
        } else if s.admits(principal, default_issuer) {
            (Access::Read, format!("admitted ({})", s.kind()))
        } else {
            (
                Access::Hidden,
                format!("not admitted ({}): the dataset is hidden", s.kind()),
            )
        };
        if let Some(d) = decisions.as_deref_mut() {
            d.push(Decision {
                policy: p.spec.name.clone(),
                label: p.label(),
                scope: p.spec.scope(),
                outcome: why,
            });
        }
        verdict = Some(match (verdict, this) {
            (Some(Access::Hidden), _) | (_, Access::Hidden) => Access::Hidden,
            (Some(Access::Request), _) | (_, Access::Request) => Access::Request,
            _ => Access::Read,
        });
    }
    match verdict {
        Some(v) => v,
        None => {
            if let Some(d) = decisions {
                d.push(Decision {
                    policy: String::new(),
                    label: String::new(),
                    scope: "default",
                    outcome: "no subscription policy applies: only owners may read".into(),
                });
            }
            Access::Hidden
        }
    }
}

/// The columns of `d` a mask policy targets; errors when a local policy
/// names a column the dataset lacks.
/// The quasi-identifier columns `p` k-anonymizes on `d`, if any step of
/// `p` is a k-anonymization.
pub fn kanon_columns(p: &Policy, d: &DatasetRecord) -> Result<Option<Vec<String>>> {
    let PolicyRule::Data(clauses) = &p.rule else {
        return Ok(None);
    };
    if !clauses
        .iter()
        .any(|c| matches!(c.rule, Some(DataRule::Mask(MaskSpec::KAnonymity(_)))))
    {
        return Ok(None);
    }
    Ok(Some(
        mask_columns(p, d)?
            .into_iter()
            .map(str::to_string)
            .collect(),
    ))
}

fn mask_columns<'a>(p: &'a Policy, d: &'a DatasetRecord) -> Result<Vec<&'a str>> {
    if p.spec.dataset.is_some() {
        for c in &p.spec.columns {
            if d.column(c).is_none() {
                return Err(VeilError::FailedPrecondition(format!(
                    "policy '{}' masks column '{c}', which dataset '{}' does not have; the policy cannot be enforced, so no data is served",
                    p.spec.name, d.name
                )));
            }
        }
        return Ok(p.spec.columns.iter().map(String::as_str).collect());
    }
    Ok(d.columns
        .iter()
        .filter(|c| {
            c.tags
                .iter()
                .any(|ct| p.spec.tags.iter().any(|t| tag_covers(t, ct)))
        })
        .map(|c| c.name.as_str())
        .collect())
}

fn column_type(d: &DatasetRecord, schema: &Schema, column: &str, policy: &str) -> Result<DataType> {
    schema
        .field_with_name(column)
        .map(|f| f.data_type().clone())
        .map_err(|_| {
            VeilError::FailedPrecondition(format!(
                "policy '{policy}' names column '{column}', which dataset '{}' does not have; the policy cannot be enforced, so no data is served",
                d.name
            ))
        })
}

/// The row rule's columns on `d`, checked.
/// The columns of `d` tagged `tag`, for a row policy that reads them. None
/// means the policy can't be enforced on `d`: it fails closed rather than
/// keep every row.
fn tagged_columns(p: &Policy, d: &DatasetRecord, tag: &str) -> Result<Vec<String>> {
    let found: Vec<String> = d
        .columns
        .iter()
        .filter(|c| c.tags.iter().any(|ct| tag_covers(tag, ct)))
        .map(|c| c.name.clone())
        .collect();
    if found.is_empty() {
        return Err(VeilError::FailedPrecondition(format!(
            "row policy '{}' applies to dataset '{}' but no column of it is tagged '{tag}'; the policy cannot be enforced, so no data is served (tag the column, or narrow the policy)",
            p.spec.name, d.name
        )));
    }
    Ok(found)
}

fn row_columns(
    p: &Policy,
    rule: &RowRuleSpec,
    d: &DatasetRecord,
    schema: &Schema,
) -> Result<Vec<String>> {
    match rule {
        RowRuleSpec::Matching {
            column: Some(c), ..
        } => {
            column_type(d, schema, c, &p.spec.name)?;
            Ok(vec![c.clone()])
        }
        RowRuleSpec::Matching {
            column_tag: Some(tag),
            ..
        } => tagged_columns(p, d, tag),
        RowRuleSpec::Window { column, .. } => {
            let Some(c) = column.clone().or_else(|| d.event_time.clone()) else {
                return Err(VeilError::FailedPrecondition(format!(
                    "time-window policy '{}' needs an event-time column, and dataset '{}' declares none: set `event_time` on the dataset or `column` on the policy",
                    p.spec.name, d.name
                )));
            };
            let dt = column_type(d, schema, &c, &p.spec.name)?;
            if !matches!(
                dt,
                DataType::Timestamp(..) | DataType::Date32 | DataType::Date64
            ) {
                return Err(VeilError::FailedPrecondition(format!(
                    "time-window policy '{}': column '{c}' of '{}' is {dt}, not a date or timestamp",
                    p.spec.name, d.name
                )));
            }
            Ok(vec![c])
        }
        RowRuleSpec::Sample {
            column, column_tag, ..
        } => {
            let keys: Vec<String> = match (column, column_tag) {
                (Some(c), _) => vec![c.clone()],
                (_, Some(tag)) => tagged_columns(p, d, tag)?,
                _ => vec![],
            };
            for c in &keys {
                let dt = column_type(d, schema, c, &p.spec.name)?;
                if !crate::policy::masks::sampling::supports(&dt) {
                    return Err(VeilError::FailedPrecondition(format!(
                        "sampling policy '{}': column '{c}' of '{}' is {dt}, which can't be a row key; choose a text, number, date or binary column",
                        p.spec.name, d.name
                    )));
                }
            }
            Ok(keys)
        }
        _ => Ok(vec![]),
    }
}

/// Check that everything `p` can do to `d` is enforceable: the columns
/// exist, masks support their types, conditions parse. Used when a policy
/// is written (so mistakes are refused with `FailedPrecondition`) and,
/// implicitly, on every read.
pub fn check_policy_on(p: &Policy, d: &DatasetRecord) -> Result<()> {
    let PolicyRule::Data(clauses) = &p.rule else {
        return Ok(());
    };
    let schema = dictionary_schema(d)?;
    let what = format!("policy '{}' on {}", p.spec.name, d.name);
    if let Some(w) = &p.spec.mask_where {
        POLICY_SQL.parse(w, &schema, &what)?;
    }
    for rule in clauses.iter().filter_map(|c| c.rule.as_ref()) {
        match rule {
            DataRule::Mask(m) => {
                for c in mask_columns(p, d)? {
                    let dt = column_type(d, &schema, c, &p.spec.name)?;
                    mask_output_type(m, &dt).map_err(|e| {
                        VeilError::FailedPrecondition(format!(
                            "{what}, column '{c}': {}",
                            e.message()
                        ))
                    })?;
                }
            }
            DataRule::RowFilter(r) => {
                row_columns(p, r, d, &schema)?;
                if let RowRuleSpec::Where(sql) = r {
                    POLICY_SQL.parse(sql, &schema, &what)?;
                }
            }
            DataRule::DifferentialPrivacy(spec) => {
                DpPolicy::validate(spec)
                    .map_err(|m| VeilError::InvalidArgument(format!("{what}: {m}")))?
                    .check_on(&schema, &what)?;
            }
        }
    }
    Ok(())
}

/// The columns of `d` whose stored values `p` reads to decide what to
/// serve, in every step of its chain: a mask's condition (`mask_where`),
/// row rules (attribute matching, windows, samples, `where`),
/// k-anonymization's counts and differential privacy's columns. The
/// columns an ordinary mask replaces are not among them: what the mask
/// reads it never shows.
pub fn columns_read(p: &Policy, d: &DatasetRecord) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let PolicyRule::Data(clauses) = &p.rule else {
        return Ok(out);
    };
    let schema = dictionary_schema(d)?;
    let what = format!("policy '{}' on {}", p.spec.name, d.name);
    let sql_columns = |sql: &str| -> Result<Vec<String>> {
        let e = POLICY_SQL.parse(sql, &schema, &what)?;
        Ok(e.column_refs()
            .into_iter()
            .map(|c| c.name.clone())
            .collect())
    };
    if let Some(w) = &p.spec.mask_where {
        out.extend(sql_columns(w)?);
    }
    for rule in clauses.iter().filter_map(|c| c.rule.as_ref()) {
        match rule {
            DataRule::Mask(MaskSpec::KAnonymity(_)) => {
                out.extend(mask_columns(p, d)?.into_iter().map(str::to_string))
            }
            DataRule::Mask(_) => {}
            DataRule::RowFilter(r) => {
                out.extend(row_columns(p, r, d, &schema)?);
                if let RowRuleSpec::Where(sql) = r {
                    out.extend(sql_columns(sql)?);
                }
            }
            DataRule::DifferentialPrivacy(spec) => {
                let dp = DpPolicy::validate(spec)
                    .map_err(|m| VeilError::InvalidArgument(format!("{what}: {m}")))?;
                out.insert(dp.unit.clone());
                out.extend(dp.columns.keys().cloned());
                out.extend(dp.groupable.iter().cloned());
            }
        }
    }
    Ok(out)
}

/// The columns of `d` an ordinary (not k-anonymity) mask of `p` replaces,
/// each with whether that mask reads the stored value (every mask but
/// `null` and a constant does: a hash shows which rows are equal, a regex
/// or rounding shows part of the value).
pub fn masks_replacing(p: &Policy, d: &DatasetRecord) -> Result<Vec<(String, bool)>> {
    let mut out = Vec::new();
    let PolicyRule::Data(clauses) = &p.rule else {
        return Ok(out);
    };
    for rule in clauses.iter().filter_map(|c| c.rule.as_ref()) {
        if let DataRule::Mask(m) = rule
            && !matches!(m, MaskSpec::KAnonymity(_))
        {
            let reads = !matches!(m, MaskSpec::Null | MaskSpec::Constant(_));
            for c in mask_columns(p, d)? {
                out.push((c.to_string(), reads));
            }
        }
    }
    Ok(out)
}

/// Does data policy `p` exempt the principal (the first step of its chain
/// that matches them applies nothing)?
pub fn exempts(p: &Policy, principal: &Principal, default_issuer: &str) -> bool {
    matches!(p.rule, PolicyRule::Data(_)) && resolve(p, principal, default_issuer).1.is_none()
}

/// The first clause of `p` that applies to the principal.
fn resolve<'a>(
    p: &'a Policy,
    principal: &Principal,
    default_issuer: &str,
) -> (usize, Option<&'a DataRule>, String) {
    let PolicyRule::Data(clauses) = &p.rule else {
        return (0, None, String::new());
    };
    for (i, c) in clauses.iter().enumerate() {
        let matched = match &c.who {
            None => true,
            Some(cond) => cond.matches(principal, default_issuer),
        };
        if matched {
            let what = match &c.rule {
                None => "exempt".to_string(),
                Some(r) => r.describe(),
            };
            // An *everyone except* policy reads as written, not as a chain.
            if p.spec.chain.is_empty() {
                let text = match (&c.who, p.spec.except.is_empty()) {
                    (Some(cond), _) => format!("excepted ({})", describe_condition(cond)),
                    (None, true) => "everyone".to_string(),
                    (None, false) => {
                        format!("everyone except {}", describe_condition(&p.spec.except))
                    }
                };
                return (i, c.rule.as_ref(), format!("{text}: {what}"));
            }
            let who = match &c.who {
                None if clauses.len() == 1 => "everyone".to_string(),
                None => "otherwise".to_string(),
                Some(cond) => describe_condition(cond),
            };
            let step = if clauses.len() > 1 {
                format!("step {} ({who})", i + 1)
            } else {
                who
            };
            return (i, c.rule.as_ref(), format!("{step}: {what}"));
        }
    }
    (clauses.len(), None, "no step matched: exempt".into())
}

/// The data policies for a principal who may read the dataset.
pub fn data_policy(
    principal: &Principal,
    dataset: &DatasetRecord,
    policies: &[Policy],
    default_issuer: &str,
) -> Result<EffectivePolicy> {
    let schema = dictionary_schema(dataset)?;
    let mut candidates: BTreeMap<String, Vec<AppliedMask>> = BTreeMap::new();
    let mut row_rules = Vec::new();
    let mut kanon = Vec::new();
    let mut dp: Option<DpRule> = None;
    let mut applied = BTreeSet::new();
    let mut decisions = Vec::new();
    for p in policies
        .iter()
        .filter(|p| applies_to(p, dataset, default_issuer))
    {
        if matches!(p.rule, PolicyRule::Subscription(_)) {
            applied.insert(p.label());
            continue;
        }
        let (_, rule, outcome) = resolve(p, principal, default_issuer);
        decisions.push(Decision {
            policy: p.spec.name.clone(),
            label: p.label(),
            scope: p.spec.scope(),
            outcome,
        });
        let Some(rule) = rule else { continue };
        let what = format!("policy '{}' on {}", p.spec.name, dataset.name);
        match rule {
            DataRule::DifferentialPrivacy(spec) => {
                let policy = DpPolicy::validate(spec)
                    .map_err(|m| VeilError::FailedPrecondition(format!("{what}: {m}")))?;
                policy.check_on(&schema, &what)?;
                if let Some(other) = &dp {
                    // Two noise budgets over one dataset can't be reconciled
                    // safely: no data until a governor keeps one.
                    return Err(VeilError::FailedPrecondition(format!(
                        "two differential privacy policies apply to {} for this user ('{}' and '{}'); no data is served until only one applies",
                        dataset.name, other.name, p.spec.name
                    )));
                }
                applied.insert(p.label());
                dp = Some(DpRule {
                    policy,
                    label: p.label(),
                    name: p.spec.name.clone(),
                });
            }
            DataRule::Mask(m @ MaskSpec::KAnonymity(spec)) => {
                let mut columns = Vec::new();
                for c in mask_columns(p, dataset)? {
                    let dt = column_type(dataset, &schema, c, &p.spec.name)?;
                    mask_output_type(m, &dt)?;
                    columns.push(c.to_string());
                }
                if !columns.is_empty() {
                    applied.insert(p.label());
                    kanon.push(KAnonGroup {
                        columns,
                        k: spec.k,
                        policy: p.label(),
                    });
                }
            }
            DataRule::Mask(m) => {
                let when = match &p.spec.mask_where {
                    None => None,
                    Some(sql) => {
                        let parsed = POLICY_SQL.parse(sql, &schema, &what)?;
                        Some(POLICY_SQL.bind(&parsed, principal, &what)?)
                    }
                };
                for c in mask_columns(p, dataset)? {
                    let dt = column_type(dataset, &schema, c, &p.spec.name)?;
                    mask_output_type(m, &dt)?;
                    applied.insert(p.label());
                    candidates
                        .entry(c.to_string())
                        .or_default()
                        .push(AppliedMask {
                            mask: m.clone(),
                            policy: p.label(),
                            when: when.clone(),
                            when_sql: p.spec.mask_where.clone(),
                        });
                }
            }
            DataRule::RowFilter(r) => {
                let description = rule.describe();
                match r {
                    RowRuleSpec::Matching { attribute, .. } => {
                        let values = principal.attribute(attribute).cloned().unwrap_or_default();
                        for column in row_columns(p, r, dataset, &schema)? {
                            applied.insert(p.label());
                            row_rules.push(RowRule {
                                kind: RowRuleKind::Matching {
                                    column,
                                    values: values.clone(),
                                },
                                policy: p.label(),
                                description: description.clone(),
                            });
                        }
                    }
                    RowRuleSpec::Where(sql) => {
                        let parsed = POLICY_SQL.parse(sql, &schema, &what)?;
                        let bound = POLICY_SQL.bind(&parsed, principal, &what)?;
                        applied.insert(p.label());
                        row_rules.push(RowRule {
                            kind: RowRuleKind::Where(bound),
                            policy: p.label(),
                            description,
                        });
                    }
                    RowRuleSpec::Sample { percent, .. } => {
                        let columns = row_columns(p, r, dataset, &schema)?;
                        applied.insert(p.label());
                        row_rules.push(RowRule {
                            kind: RowRuleKind::Sample {
                                columns,
                                percent: *percent,
                            },
                            policy: p.label(),
                            description,
                        });
                    }
                    RowRuleSpec::Window { seconds, .. } => {
                        for column in row_columns(p, r, dataset, &schema)? {
                            applied.insert(p.label());
                            row_rules.push(RowRule {
                                kind: RowRuleKind::Window {
                                    column,
                                    seconds: *seconds,
                                },
                                policy: p.label(),
                                description: description.clone(),
                            });
                        }
                    }
                }
            }
        }
    }
    // A conditional mask reading a k-anonymized column would show, by
    // whether it applies, the value k-anonymization suppressed.
    let quasi: BTreeSet<&str> = kanon
        .iter()
        .flat_map(|g: &KAnonGroup| g.columns.iter().map(String::as_str))
        .collect();
    for (column, list) in &candidates {
        for m in list {
            if let Some(w) = &m.when
                && let Some(q) = w
                    .column_refs()
                    .iter()
                    .find(|c| quasi.contains(c.name.as_str()))
            {
                return Err(VeilError::FailedPrecondition(format!(
                    "the conditional mask of policy {} on column '{column}' of {} reads '{}', which k-anonymization suppresses; a condition on it would reveal suppressed values, so no data is served (condition the mask on another column)",
                    m.policy, dataset.name, q.name
                )));
            }
        }
    }
    let masks = candidates
        .into_iter()
        .map(|(c, list)| (c, combine_masks(list)))
        .collect();
    Ok(EffectivePolicy {
        masks,
        row_rules,
        kanon,
        dp,
        applied: applied.into_iter().collect(),
        decisions,
    })
}

/// Fold every mask on one column into one per row: the most restrictive
/// unconditional one, preceded by the conditional ones that are stricter.
fn combine_masks(list: Vec<AppliedMask>) -> ColumnMask {
    let stricter = |a: &AppliedMask, b: &AppliedMask| -> AppliedMask {
        use std::cmp::Ordering::*;
        match a.mask.restrictiveness().cmp(&b.mask.restrictiveness()) {
            Greater => a.clone(),
            Less => b.clone(),
            Equal => match a.mask.combine_tie(&b.mask) {
                None => a.clone(),
                Some(m) if m == b.mask => b.clone(),
                Some(m) => AppliedMask {
                    mask: m,
                    policy: format!("{}+{}", a.policy, b.policy),
                    when: a.when.clone(),
                    when_sql: a.when_sql.clone(),
                },
            },
        }
    };
    let (conditional, unconditional): (Vec<_>, Vec<_>) =
        list.into_iter().partition(|m| m.when.is_some());
    let base = unconditional.into_iter().reduce(|a, b| stricter(&a, &b));
    let mut out: Vec<AppliedMask> = Vec::new();
    for c in conditional {
        let effective = match &base {
            None => c,
            Some(b) => {
                let s = stricter(&c, b);
                if s.mask == b.mask {
                    continue;
                }
                AppliedMask {
                    when: c.when.clone(),
                    when_sql: c.when_sql.clone(),
                    ..s
                }
            }
        };
        out.push(effective);
    }
    // Conditional masks of equal rank can hold on the same row. Comparable
    // ones are ordered strictest first (below); an incomparable pair (two
    // regexes, a regex and a rounding) gets a branch of its own where both
    // conditions hold, applying what the pair combines to (a hash).
    let mut pairs = Vec::new();
    for (i, a) in out.iter().enumerate() {
        for b in &out[i + 1..] {
            if a.mask.restrictiveness() != b.mask.restrictiveness() {
                continue;
            }
            if let Some(m) = a.mask.combine_tie(&b.mask)
                && m != b.mask
                && let (Some(wa), Some(wb)) = (&a.when, &b.when)
            {
                pairs.push(AppliedMask {
                    mask: m,
                    policy: format!("{}+{}", a.policy, b.policy),
                    when: Some(wa.clone().and(wb.clone())),
                    when_sql: Some(format!(
                        "({}) AND ({})",
                        a.when_sql.as_deref().unwrap_or_default(),
                        b.when_sql.as_deref().unwrap_or_default()
                    )),
                });
            }
        }
    }
    out.extend(pairs);
    out.sort_by(|a, b| {
        b.mask
            .restrictiveness()
            .cmp(&a.mask.restrictiveness())
            .then_with(|| {
                a.mask
                    .tie_order()
                    .partial_cmp(&b.mask.tie_order())
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .then_with(|| a.policy.cmp(&b.policy))
    });
    out.extend(base);
    ColumnMask { candidates: out }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Origin;
    use crate::model::dataset::{ColumnRecord, FileFormatKind, SourceSpec};
    use crate::model::identity::{ClientInfo, Identity};
    use crate::model::policy::{PolicySpec, RoundSpec};
    use crate::policy::rules::PolicySpecExt;

    fn dataset() -> DatasetRecord {
        let col = |n: &str, t: &str, tags: &[&str]| ColumnRecord {
            name: n.into(),
            data_type: t.into(),
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
                database: None,
            },
            description: String::new(),
            owners: vec![Identity::new("i", "owner")],
            experts: vec![],
            tags: vec!["Clinical".into()],
            columns: vec![
                col("email", "Utf8", &["pii.Email"]),
                col("state", "Utf8", &[]),
                col("note", "Utf8", &[]),
                col("age", "Int64", &[]),
                col("ts", "Timestamp(µs, \"UTC\")", &[]),
            ],
            origin: Origin::Config,
            event_time: None,
            tag_proposals: vec![],
        }
    }

    pub(crate) fn policies(texts: &[&str]) -> Vec<Policy> {
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
        let mut a = crate::model::identity::Attributes::new();
        for (k, v) in attrs {
            a.entry(k.to_string()).or_default().insert(v.to_string());
        }
        Principal {
            identity: Identity::new("i", sub),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            attributes: a,
            permissions: Default::default(),
            // Built by hand: fingerprints belong to `auth`, above this layer.
            fingerprint: [1; 32],
            client: ClientInfo::default(),
        }
    }

    /// May `principal` read `dataset` (approvals ignored)?
    fn may_read(
        principal: &Principal,
        dataset: &DatasetRecord,
        policies: &[Policy],
        default_issuer: &str,
    ) -> bool {
        access(
            principal,
            dataset,
            policies,
            &BTreeSet::new(),
            default_issuer,
            None,
        ) == Access::Read
    }

    fn mask_of(e: &EffectivePolicy, c: &str) -> MaskSpec {
        e.masks[c].candidates.last().unwrap().mask.clone()
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
    fn on_request_datasets_are_visible_and_readable_once_approved() {
        let d = dataset();
        let p =
            policies(&["name = \"r\"\ndataset = \"s.t\"\nsubscription = { on_request = true }"]);
        let x = who("x", &[], &[]);
        let none = BTreeSet::new();
        assert_eq!(access(&x, &d, &p, &none, "i", None), Access::Request);
        let ok: BTreeSet<Identity> = [x.identity.clone()].into();
        assert_eq!(access(&x, &d, &p, &ok, "i", None), Access::Read);
        // Combined with a hiding policy, hidden wins.
        let both = policies(&[
            "name = \"r\"\ndataset = \"s.t\"\nsubscription = { on_request = true }",
            "name = \"g\"\ndataset = \"s.t\"\nsubscription = { groups = [\"g\"] }",
        ]);
        assert_eq!(access(&x, &d, &both, &ok, "i", None), Access::Hidden);
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
        assert_eq!(mask_of(&e, "email"), MaskSpec::Null);
        assert_eq!(
            e.masks["email"].candidates.len(),
            1,
            "one mask, never a chain"
        );
        // Exempt from the null mask only: the next most restrictive applies.
        let e = data_policy(&who("x", &["support"], &[]), &d, &p, "i").unwrap();
        assert_eq!(mask_of(&e, "email").label(), "constant");
        assert!(!e.masks.contains_key("state"));
    }

    #[test]
    fn incomparable_masks_hash_and_roundings_take_the_coarser() {
        let d = dataset();
        let p = policies(&[
            "name = \"a\"\ndataset = \"s.t\"\ncolumns = [\"note\"]\nmask = { regex = { pattern = 'a', replacement = 'x' } }",
            "name = \"b\"\ndataset = \"s.t\"\ncolumns = [\"note\"]\nmask = { regex = { pattern = 'b', replacement = 'x' } }",
            "name = \"c\"\ndataset = \"s.t\"\ncolumns = [\"age\"]\nmask = { round = { digits = -1 } }",
            "name = \"d\"\ndataset = \"s.t\"\ncolumns = [\"age\"]\nmask = { round = { digits = -2 } }",
        ]);
        let e = data_policy(&who("x", &[], &[]), &d, &p, "i").unwrap();
        assert_eq!(mask_of(&e, "note"), MaskSpec::Hash);
        assert_eq!(
            mask_of(&e, "age"),
            MaskSpec::Round(RoundSpec {
                digits: Some(-2),
                ..Default::default()
            })
        );
    }

    #[test]
    fn otherwise_chains_take_the_first_matching_step() {
        let d = dataset();
        let p = policies(&[r#"
name = "ip"
dataset = "s.t"
columns = ["note"]
chain = [
  { who = { groups = ["admins"] }, exempt = true },
  { who = { groups = ["analysts"] }, mask = { regex = { pattern = '\d+$', replacement = 'XXX' } } },
  { otherwise = true, mask = "null" },
]
"#]);
        let admin = data_policy(&who("a", &["admins", "analysts"], &[]), &d, &p, "i").unwrap();
        assert!(admin.masks.is_empty());
        assert!(
            admin.decisions[0].outcome.contains("exempt"),
            "{:?}",
            admin.decisions
        );
        let analyst = data_policy(&who("b", &["analysts"], &[]), &d, &p, "i").unwrap();
        assert_eq!(mask_of(&analyst, "note").label(), "regex");
        let other = data_policy(&who("c", &[], &[]), &d, &p, "i").unwrap();
        assert_eq!(mask_of(&other, "note"), MaskSpec::Null);
        assert!(other.decisions[0].outcome.starts_with("step 3 (otherwise)"));
        let p = policies(&[
            "name = \"n\"\ndataset = \"s.t\"\ncolumns = [\"note\"]\nmask = \"null\"\nexcept = { groups = [\"admins\"] }",
        ]);
        let e = data_policy(&who("c", &[], &[]), &d, &p, "i").unwrap();
        assert_eq!(
            e.decisions[0].outcome,
            "everyone except members of admins: mask null"
        );
        let e = data_policy(&who("c", &["admins"], &[]), &d, &p, "i").unwrap();
        assert_eq!(
            e.decisions[0].outcome,
            "excepted (members of admins): exempt"
        );
    }

    #[test]
    fn conditional_masks_keep_the_stricter_unconditional_one_as_fallback() {
        let d = dataset();
        let p = policies(&[
            "name = \"a\"\ndataset = \"s.t\"\ncolumns = [\"note\"]\nmask = \"null\"\nmask_where = \"state = 'USA'\"",
            "name = \"b\"\ndataset = \"s.t\"\ncolumns = [\"note\"]\nmask = \"hash\"",
        ]);
        let e = data_policy(&who("x", &[], &[]), &d, &p, "i").unwrap();
        let c = &e.masks["note"].candidates;
        assert_eq!(c.len(), 2);
        assert!(c[0].when.is_some() && c[0].mask == MaskSpec::Null);
        assert!(c[1].when.is_none() && c[1].mask == MaskSpec::Hash);
        // A conditional mask weaker than the unconditional one disappears.
        let p = policies(&[
            "name = \"a\"\ndataset = \"s.t\"\ncolumns = [\"note\"]\nmask = \"hash\"\nmask_where = \"state = 'USA'\"",
            "name = \"b\"\ndataset = \"s.t\"\ncolumns = [\"note\"]\nmask = \"null\"",
        ]);
        let e = data_policy(&who("x", &[], &[]), &d, &p, "i").unwrap();
        assert_eq!(e.masks["note"].candidates.len(), 1);
    }

    #[test]
    fn overlapping_conditional_masks_combine_where_both_hold() {
        let d = dataset();
        // Two roundings: the coarser comes first, whatever the names.
        let p = policies(&[
            "name = \"a\"\ndataset = \"s.t\"\ncolumns = [\"age\"]\nmask = { round = { digits = -1 } }\nmask_where = \"state = 'CA'\"",
            "name = \"b\"\ndataset = \"s.t\"\ncolumns = [\"age\"]\nmask = { round = { digits = -4 } }\nmask_where = \"age > 1\"",
        ]);
        let e = data_policy(&who("x", &[], &[]), &d, &p, "i").unwrap();
        let c = &e.masks["age"].candidates;
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].mask.label(), "round(digits=-4)");
        // Two regexes: where both hold, the column is hashed.
        let p = policies(&[
            "name = \"a\"\ndataset = \"s.t\"\ncolumns = [\"note\"]\nmask = { regex = { pattern = 'a', replacement = 'x' } }\nmask_where = \"state = 'CA'\"",
            "name = \"b\"\ndataset = \"s.t\"\ncolumns = [\"note\"]\nmask = { regex = { pattern = 'b', replacement = 'y' } }\nmask_where = \"age > 1\"",
        ]);
        let e = data_policy(&who("x", &[], &[]), &d, &p, "i").unwrap();
        let c = &e.masks["note"].candidates;
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].mask, MaskSpec::Hash);
        assert_eq!(
            c[0].when_sql.as_deref(),
            Some("(state = 'CA') AND (age > 1)")
        );
        // Two different constants: one of them, never a hash.
        let p = policies(&[
            "name = \"a\"\ndataset = \"s.t\"\ncolumns = [\"note\"]\nmask = { constant = \"x\" }",
            "name = \"b\"\ndataset = \"s.t\"\ncolumns = [\"note\"]\nmask = { constant = \"y\" }",
        ]);
        let e = data_policy(&who("x", &[], &[]), &d, &p, "i").unwrap();
        assert!(matches!(mask_of(&e, "note"), MaskSpec::Constant(_)));
    }

    #[test]
    fn row_filters_and_with_missing_attributes_keeping_nothing() {
        let d = dataset();
        let p = policies(&[
            "name = \"r\"\ndataset = \"s.t\"\nrow_filter = { column = \"state\", attribute = \"state\" }\nexcept = { groups = [\"all\"] }",
            "name = \"w\"\ndataset = \"s.t\"\nrow_filter = { where = \"age < 65 OR user_in_group('seniors')\" }",
        ]);
        let e = data_policy(&who("x", &[], &[("state", "CA")]), &d, &p, "i").unwrap();
        assert_eq!(e.row_rules.len(), 2);
        let RowRuleKind::Matching { values, .. } = &e.row_rules[0].kind else {
            panic!("{:?}", e.row_rules)
        };
        assert!(values.contains("CA"));
        let e = data_policy(&who("x", &[], &[]), &d, &p, "i").unwrap();
        assert!(
            matches!(&e.row_rules[0].kind, RowRuleKind::Matching { values, .. } if values.is_empty()),
            "no attribute, no values: no rows"
        );
        let e = data_policy(&who("x", &["all"], &[]), &d, &p, "i").unwrap();
        assert_eq!(e.row_rules.len(), 1, "exempt from one filter only");
    }

    #[test]
    fn restricted_global_policies_apply_only_to_their_owners_datasets() {
        let mut d = dataset();
        let p = policies(&[
            "name = \"r\"\ntags = [\"pii\"]\nrestricted_to = [\"owner\"]\nmask = \"null\"",
        ]);
        let e = data_policy(&who("x", &[], &[]), &d, &p, "i").unwrap();
        assert_eq!(mask_of(&e, "email"), MaskSpec::Null);
        d.owners = vec![Identity::new("i", "someone-else")];
        let e = data_policy(&who("x", &[], &[]), &d, &p, "i").unwrap();
        assert!(e.masks.is_empty());
    }

    #[test]
    fn policies_that_cannot_be_enforced_fail_closed() {
        let d = dataset();
        for t in [
            "name = \"m\"\ndataset = \"s.t\"\ncolumns = [\"gone\"]\nmask = \"null\"",
            "name = \"r\"\ndataset = \"s.t\"\nrow_filter = { column = \"gone\", attribute = \"a\" }",
            "name = \"x\"\ndataset = \"s.t\"\ncolumns = [\"age\"]\nmask = { regex = { pattern = 'a', replacement = 'b' } }",
            "name = \"t\"\ndataset = \"s.t\"\nrow_filter = { within = \"7 days\" }",
            "name = \"t\"\ndataset = \"s.t\"\nrow_filter = { within = \"7 days\", column = \"state\" }",
            "name = \"w\"\ndataset = \"s.t\"\nrow_filter = { where = \"nope > 1\" }",
        ] {
            let p = policies(&[t]);
            assert!(
                matches!(
                    data_policy(&who("x", &[], &[]), &d, &p, "i"),
                    Err(VeilError::FailedPrecondition(_))
                ),
                "{t}"
            );
            assert!(check_policy_on(&p[0], &d).is_err(), "{t}");
        }
        let p = policies(&[
            "name = \"t\"\ndataset = \"s.t\"\nrow_filter = { within = \"7 days\", column = \"ts\" }",
        ]);
        assert!(check_policy_on(&p[0], &d).is_ok());
    }
}

#[cfg(test)]
mod reads_column_tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    fn empty() -> EffectivePolicy {
        EffectivePolicy {
            masks: BTreeMap::new(),
            row_rules: vec![],
            kanon: vec![],
            dp: None,
            applied: vec![],
            decisions: vec![],
        }
    }

    fn rule(kind: RowRuleKind) -> RowRule {
        RowRule {
            kind,
            policy: "p@1".into(),
            description: String::new(),
        }
    }

    fn mask(when: Option<Expr>) -> ColumnMask {
        ColumnMask {
            candidates: vec![AppliedMask {
                mask: MaskSpec::Null,
                policy: "p@1".into(),
                when,
                when_sql: None,
            }],
        }
    }

    /// Each way a policy reads a column is seen, and only for that column.
    #[test]
    fn every_kind_of_rule_that_reads_a_column_is_seen() {
        let mut cases: Vec<EffectivePolicy> = Vec::new();
        let mut p = empty();
        p.masks.insert("g".into(), mask(None));
        cases.push(p);
        let mut p = empty();
        p.masks
            .insert("other".into(), mask(Some(col("g").eq(lit("x")))));
        cases.push(p);
        for kind in [
            RowRuleKind::Matching {
                column: "g".into(),
                values: BTreeSet::new(),
            },
            RowRuleKind::Where(col("a").gt(lit(1)).or(col("g").is_null())),
            RowRuleKind::Window {
                column: "g".into(),
                seconds: 60,
            },
            RowRuleKind::Sample {
                columns: vec!["a".into(), "g".into()],
                percent: 10.0,
            },
        ] {
            let mut p = empty();
            p.row_rules.push(rule(kind));
            cases.push(p);
        }
        let mut p = empty();
        p.kanon.push(KAnonGroup {
            columns: vec!["a".into(), "g".into()],
            k: 5,
            policy: "p@1".into(),
        });
        cases.push(p);
        for p in &cases {
            assert!(p.reads_column("g"), "{p:?}");
            assert!(!p.reads_column("h"), "{p:?}");
        }
        assert!(!empty().reads_column("g"));
    }
}
