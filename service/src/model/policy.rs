//! Policies as written (`[[policies]]` in the config file, and admin
//! actions: one serde form serves both) and their validated form. Checking
//! a spec and applying a policy to a principal live in `crate::policy`.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

use super::Origin;
use super::identity::{Identity, Permission};

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
    /// Holders of any of these permissions (`["AUDIT"]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<Permission>,
}

impl Condition {
    fn names_into(&self, names: &mut PrincipalNames) {
        names.groups.extend(self.groups.iter().cloned());
        names.attributes.extend(self.attributes.keys().cloned());
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
            && self.attributes.is_empty()
            && self.users.is_empty()
            && self.permissions.is_empty()
    }
}

/// Who may read a dataset (and know it exists). Exactly one kind:
///
/// | kind | config | visible to | readable by |
/// |---|---|---|---|
/// | anyone | `anyone = true` | everyone | everyone |
/// | on request | `on_request = true` (+ `approvers`) | everyone | approved requesters |
/// | groups/attributes | `groups`, `attributes` | those users | those users |
/// | individual users | `users` | those users | those users |
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSpec {
    /// Everyone may see and read.
    #[serde(default)]
    pub anyone: bool,
    /// Everyone may see it; reading needs an approved access request.
    #[serde(default)]
    pub on_request: bool,
    /// Who may approve requests (only with `on_request`); empty: the
    /// dataset's owners.
    #[serde(default, skip_serializing_if = "Condition::is_empty")]
    pub approvers: Condition,
    /// Users in any of these groups or holding any of these attribute values.
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, Vec<String>>,
    /// Hand-picked users; the dataset stays invisible to everyone else.
    #[serde(default)]
    pub users: Vec<UserRefSpec>,
    /// Holders of any of these permissions (as `veil.audit` is read by
    /// `AUDIT` holders).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<Permission>,
}

impl SubscriptionSpec {
    pub fn kind(&self) -> &'static str {
        if self.anyone {
            "anyone"
        } else if self.on_request {
            "anyone who asks and is approved"
        } else if !self.users.is_empty() {
            "individual users"
        } else {
            "users with groups/attributes/permissions"
        }
    }
}

/// Calendar units dates and timestamps are rounded (truncated) to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeUnit {
    Hour,
    Day,
    Month,
    Year,
}

impl TimeUnit {
    pub fn as_str(&self) -> &'static str {
        match self {
            TimeUnit::Hour => "hour",
            TimeUnit::Day => "day",
            TimeUnit::Month => "month",
            TimeUnit::Year => "year",
        }
    }
}

/// How a rounding mask removes precision. Exactly one field is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundSpec {
    /// Numbers: round half away from zero to this many decimal places
    /// (negative: to tens, hundreds, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digits: Option<i32>,
    /// Numbers: down to a multiple of this width (`floor(x / w) * w`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<f64>,
    /// Dates and timestamps: down to the start of this unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<TimeUnit>,
}

/// A regular-expression replacement: every match of `pattern` becomes
/// `replacement` (`$1` / `${name}` refer to capture groups).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexSpec {
    pub pattern: String,
    pub replacement: String,
}

/// How a column's values are replaced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskSpec {
    /// Keyed HMAC-SHA256 per dataset, rendered as 32 hex characters.
    Hash,
    /// Deterministic authenticated encryption (AES-SIV) per dataset and
    /// column; unmasked through unmask requests (see
    /// `policy::masks::reversible`).
    Reversible,
    /// Format-preserving encryption (FF1) of text per dataset and column;
    /// unmasked through unmask requests.
    FormatPreserving,
    /// Null of the column's type.
    Null,
    /// A constant, cast to the column's type.
    Constant(serde_json::Value),
    /// Regular-expression replace on strings.
    Regex(RegexSpec),
    /// Rounding of numbers, dates and timestamps; keeps the column's type.
    Round(RoundSpec),
    /// k-anonymization: the policy's columns are quasi-identifiers counted
    /// jointly; values of combinations seen fewer than `k` times become
    /// null (rows are kept). A suppression on top of the column's other
    /// masks, not a replacement (see `policy::masks::kanon`).
    KAnonymity(KAnonymitySpec),
}

/// Parameters of a k-anonymization mask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KAnonymitySpec {
    /// Smallest group size shown (at least 2).
    pub k: u64,
}

impl MaskSpec {
    /// Higher is more restrictive: null > constant > hash > regex/rounding.
    pub fn restrictiveness(&self) -> u8 {
        match self {
            MaskSpec::Null => 4,
            MaskSpec::Constant(_) => 3,
            MaskSpec::Hash | MaskSpec::Reversible => 2,
            MaskSpec::Regex(_) | MaskSpec::Round(_) | MaskSpec::FormatPreserving => 1,
            // Never ranked: k-anonymization nulls values on top of the
            // column's mask rather than competing with it.
            MaskSpec::KAnonymity(_) => 0,
        }
    }

    /// Can values under this mask be turned back by an unmask request?
    pub fn reversible(&self) -> bool {
        matches!(self, MaskSpec::Reversible | MaskSpec::FormatPreserving)
    }

    pub fn label(&self) -> String {
        match self {
            MaskSpec::Hash => "hash".into(),
            MaskSpec::Reversible => "reversible".into(),
            MaskSpec::FormatPreserving => "format_preserving".into(),
            MaskSpec::Null => "null".into(),
            MaskSpec::Constant(_) => "constant".into(),
            MaskSpec::Regex(_) => "regex".into(),
            MaskSpec::Round(r) => match (r.digits, r.bucket, r.unit) {
                (Some(d), _, _) => format!("round(digits={d})"),
                (_, Some(b), _) => format!("round(bucket={b})"),
                (_, _, Some(u)) => format!("round({})", u.as_str()),
                _ => "round".into(),
            },
            MaskSpec::KAnonymity(k) => format!("k-anonymity(k={})", k.k),
        }
    }
}

/// A row-level security rule. Exactly one form:
/// * matching: `{ column = "state", attribute = "state" }` (or `column_tag`)
///   keeps rows whose column holds one of the caller's values of the
///   attribute (a direct string match);
/// * SQL: `{ where = "passenger_count < 2" }`, a boolean expression over the
///   dataset's columns that may use `user_name()`, `user_in_group('g')`,
///   `user_attribute('k')` and `user_has_attribute('k', expr)`;
/// * time window: `{ within = "7 days" }` keeps rows whose event-time column
///   (the dataset's `event_time`, or `column`) lies in the last N minutes,
///   hours or days at the time of each request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowFilterSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column_tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub where_sql: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<String>,
    /// Minimization: keep this percentage of rows (0 < p < 100), chosen
    /// by a keyed hash of the row-key `column` (or the column tagged
    /// `column_tag`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<f64>,
}

/// The validated form of a [`RowFilterSpec`].
#[derive(Debug, Clone, PartialEq)]
pub enum RowRuleSpec {
    Matching {
        column: Option<String>,
        column_tag: Option<String>,
        attribute: String,
    },
    Where(String),
    Window {
        column: Option<String>,
        seconds: i64,
    },
    /// A stable sample of `percent`% of rows, keyed on a row-key column.
    Sample {
        column: Option<String>,
        column_tag: Option<String>,
        percent: f64,
    },
}

/// The noise a differential privacy policy adds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DpMechanism {
    /// Discrete Laplace noise, pure ε-DP.
    #[default]
    Laplace,
    /// Discrete Gaussian noise, ρ-zCDP (from the policy's ε and δ).
    Gaussian,
}

impl DpMechanism {
    pub fn as_str(&self) -> &'static str {
        match self {
            DpMechanism::Laplace => "laplace",
            DpMechanism::Gaussian => "gaussian",
        }
    }
}

/// How much one value of a summed or averaged column may contribute:
/// values are clamped to `[lower, upper]` and counted in units of
/// `1 / scale` (fixed point: `scale = 100` keeps cents).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpColumnSpec {
    pub lower: f64,
    pub upper: f64,
    #[serde(default = "one_u32", skip_serializing_if = "is_one_u32")]
    pub scale: u32,
}

fn one_u32() -> u32 {
    1
}

fn is_one_u32(n: &u32) -> bool {
    *n == 1
}

/// Budgets over a tumbling period (`period = "30d"`): what one user may
/// spend on the dataset, and what every fresh answer together may spend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpBudgetSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_epsilon: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_epsilon: Option<f64>,
    /// δ one user may spend on the dataset in a period (default: what
    /// `user_epsilon` allows at the policy's ε).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_delta: Option<f64>,
    /// δ every fresh answer together may spend in a period (default: what
    /// `dataset_epsilon` allows at the policy's ε).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_delta: Option<f64>,
    pub period: String,
}

/// A differential privacy data policy: who it applies to may run only
/// aggregate queries on the dataset, answered with noise (see
/// `crate::dp`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DifferentialPrivacySpec {
    /// The column identifying whom a row is about (the privacy unit).
    pub privacy_unit: String,
    /// ε spent by one query (split evenly among its noisy measurements).
    pub epsilon: f64,
    /// δ: needed by the Gaussian mechanism and by `GROUP BY` on keys the
    /// policy doesn't list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<f64>,
    #[serde(default)]
    pub mechanism: DpMechanism,
    /// How long an answer is kept and served again (`"24h"`, `"30 minutes"`).
    pub latency_tolerance: String,
    /// Most groups one unit contributes to in one query.
    #[serde(default = "one_u32")]
    pub max_groups_per_unit: u32,
    /// Most rows of one unit counted in one group.
    #[serde(default = "one_u32")]
    pub max_rows_per_unit: u32,
    /// Bounds of the columns `SUM` and `AVG` may read.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub columns: BTreeMap<String, DpColumnSpec>,
    /// Columns `GROUP BY` may name (their keys are released only when
    /// enough units have them, unless listed in `public_groups`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groupable: Vec<String>,
    /// Columns whose keys are public, with every key: each is answered,
    /// noisy zeros included, and other keys are dropped.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub public_groups: BTreeMap<String, Vec<serde_json::Value>>,
    /// Numeric columns `GROUP BY` groups into buckets: ascending edges;
    /// a row falls in the bucket of the last edge at or below its value
    /// (rows below the first edge are left out), shown as that edge.
    /// Every bucket is answered, like public keys.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub buckets: BTreeMap<String, Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<DpBudgetSpec>,
    /// Accept a privacy unit with fewer than 90% distinct values.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// One step of an ordered *for everyone who ... / otherwise ...* chain.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BranchSpec {
    /// Whom this step applies to; absent on the closing `otherwise`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub who: Option<Condition>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub otherwise: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<MaskSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_filter: Option<RowFilterSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub differential_privacy: Option<DifferentialPrivacySpec>,
    /// This step applies nothing (the principal is exempt from the policy).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exempt: bool,
}

/// A policy exactly as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    pub name: String,
    /// Local policy: applies to this dataset only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// Global policy: applies to datasets (subscription) or columns (masks)
    /// carrying any of these tags, hierarchically and case-insensitively.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Restricted global policy: applies only to datasets owned by one of
    /// these users (an owner's policy over what they own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restricted_to: Vec<UserRefSpec>,
    /// Columns a local mask applies to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<SubscriptionSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<MaskSpec>,
    /// Conditional masking: mask only rows where this SQL condition over the
    /// dataset's columns holds (rows where it is unknown are masked too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_where: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_filter: Option<RowFilterSpec>,
    /// Aggregate-only access with noise ([`DifferentialPrivacySpec`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub differential_privacy: Option<DifferentialPrivacySpec>,
    /// *For everyone except ...*: principals matching this are exempt.
    #[serde(default, skip_serializing_if = "Condition::is_empty")]
    pub except: Condition,
    /// *For everyone who ... / otherwise ...*: ordered steps, the first that
    /// matches decides, ending with a blanket `otherwise`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<BranchSpec>,
}

/// The groups and attribute keys a policy tests a caller for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrincipalNames {
    pub groups: BTreeSet<String>,
    pub attributes: BTreeSet<String>,
}

impl PolicySpec {
    /// The groups and attribute keys this policy tests a caller for: in
    /// its subscription, approvers, exceptions, steps, attribute matching,
    /// and the `user_in_group('g')`, `user_attribute('k')` and
    /// `user_has_attribute('k', ...)` of its conditions (with a literal
    /// argument).
    pub fn principal_names(&self, names: &mut PrincipalNames) {
        if let Some(s) = &self.subscription {
            names.groups.extend(s.groups.iter().cloned());
            names.attributes.extend(s.attributes.keys().cloned());
            s.approvers.names_into(names);
        }
        self.except.names_into(names);
        let mut filters: Vec<&RowFilterSpec> = self.row_filter.iter().collect();
        for step in &self.chain {
            if let Some(who) = &step.who {
                who.names_into(names);
            }
            filters.extend(step.row_filter.iter());
        }
        let mut sql: Vec<&str> = self.mask_where.iter().map(String::as_str).collect();
        for f in filters {
            names.attributes.extend(f.attribute.iter().cloned());
            sql.extend(f.where_sql.as_deref());
        }
        for text in sql {
            names
                .groups
                .extend(literal_arguments(text, "user_in_group"));
            names
                .attributes
                .extend(literal_arguments(text, "user_attribute"));
            names
                .attributes
                .extend(literal_arguments(text, "user_has_attribute"));
        }
    }
}

/// The quoted first argument of each call of `function` in `sql` (`''`
/// inside a literal is a quote); calls without one are skipped.
fn literal_arguments(sql: &str, function: &str) -> Vec<String> {
    let lower = sql.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = lower[from..].find(function) {
        let start = from + at;
        from = start + function.len();
        let before = lower[..start].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let rest = sql[from..].trim_start();
        let Some(rest) = rest.strip_prefix('(') else {
            continue;
        };
        let Some(rest) = rest.trim_start().strip_prefix('\'') else {
            continue;
        };
        let mut value = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    value.push('\'');
                }
                '\'' => {
                    out.push(value);
                    break;
                }
                c => value.push(c),
            }
        }
    }
    out
}

/// What a data policy does to a principal it applies to.
#[derive(Debug, Clone, PartialEq)]
pub enum DataRule {
    Mask(MaskSpec),
    RowFilter(RowRuleSpec),
    DifferentialPrivacy(Box<DifferentialPrivacySpec>),
}

impl DataRule {
    pub fn describe(&self) -> String {
        match self {
            DataRule::Mask(m) => format!("mask {}", m.label()),
            DataRule::DifferentialPrivacy(dp) => format!(
                "aggregate queries only, with differential privacy (privacy unit {}, ε = {} per query, {} noise, answers kept {})",
                dp.privacy_unit,
                dp.epsilon,
                dp.mechanism.as_str(),
                dp.latency_tolerance
            ),
            DataRule::RowFilter(RowRuleSpec::Matching {
                column,
                column_tag,
                attribute,
            }) => match (column, column_tag) {
                (Some(c), _) => format!("keep rows where {c} matches the user's '{attribute}'"),
                (_, Some(t)) => {
                    format!("keep rows where columns tagged {t} match the user's '{attribute}'")
                }
                _ => "row filter".into(),
            },
            DataRule::RowFilter(RowRuleSpec::Where(sql)) => format!("keep rows where {sql}"),
            DataRule::RowFilter(RowRuleSpec::Window { seconds, .. }) => {
                format!("keep rows from the last {seconds} seconds")
            }
            DataRule::RowFilter(RowRuleSpec::Sample {
                column,
                column_tag,
                percent,
            }) => match (column, column_tag) {
                (Some(c), _) => format!("keep a stable {percent}% sample of rows keyed on {c}"),
                (_, Some(t)) => {
                    format!(
                        "keep a stable {percent}% sample of rows keyed on the column tagged {t}"
                    )
                }
                _ => format!("keep a stable {percent}% sample of rows"),
            },
        }
    }
}

/// One step of a resolved chain: the first clause whose `who` matches (or
/// that has none) decides.
#[derive(Debug, Clone, PartialEq)]
pub struct Clause {
    pub who: Option<Condition>,
    /// `None`: exempt.
    pub rule: Option<DataRule>,
}

/// What a policy does.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyRule {
    Subscription(SubscriptionSpec),
    /// Data policies (masks, row filters) as an ordered chain; an
    /// *everyone except* policy is `[except → exempt, otherwise → rule]`.
    Data(Vec<Clause>),
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

impl Policy {
    pub fn label(&self) -> String {
        format!("{}@{}", self.id, self.version)
    }

    /// Is this a tag-driven policy a governor wrote (not restricted to one
    /// owner's datasets)?
    pub fn is_unrestricted_global(&self) -> bool {
        self.spec.dataset.is_none() && self.spec.restricted_to.is_empty()
    }
}

impl PolicySpec {
    /// The kind of policy, for messages and listings.
    pub fn scope(&self) -> &'static str {
        match (&self.dataset, self.restricted_to.is_empty()) {
            (Some(_), _) => "local",
            (None, true) => "global",
            (None, false) => "restricted global",
        }
    }

    /// The namespace the policy's name is unique in: its dataset (local),
    /// the users it is restricted to (restricted global), or the one global
    /// namespace. Everyone who may write a policy into a namespace can list
    /// every policy in it, so a taken name never tells anyone of a policy
    /// they can't see (a policy on a hidden dataset, a governor's global
    /// one).
    pub fn namespace(&self) -> String {
        match (&self.dataset, self.restricted_to.is_empty()) {
            (Some(d), _) => format!("dataset:{}", d.to_ascii_lowercase()),
            (None, true) => "global".into(),
            (None, false) => {
                let mut users: Vec<(&str, &str)> = self
                    .restricted_to
                    .iter()
                    .map(|u| match u {
                        UserRefSpec::Subject(s) => ("", s.as_str()),
                        UserRefSpec::Full { issuer, subject } => {
                            (issuer.as_str(), subject.as_str())
                        }
                    })
                    .collect();
                users.sort_unstable();
                users.dedup();
                // JSON, so no subject can spell another list of users.
                format!(
                    "restricted:{}",
                    serde_json::to_string(&users).unwrap_or_default()
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_names_the_groups_and_attributes_it_tests() {
        let spec: PolicySpec = toml::from_str(
            r#"
name = "p"
dataset = "s.t"
except = { groups = ["privileged"], attributes = { clearance = ["high"] } }
row_filter = { where = "region = user_attribute('region') OR user_in_group( 'it''s' ) OR xuser_in_group('no') OR user_has_attribute('site', site)" }
"#,
        )
        .unwrap();
        let mut names = PrincipalNames::default();
        spec.principal_names(&mut names);
        assert_eq!(
            names.groups.into_iter().collect::<Vec<_>>(),
            ["it's", "privileged"]
        );
        assert_eq!(
            names.attributes.into_iter().collect::<Vec<_>>(),
            ["clearance", "region", "site"]
        );
    }
}
