//! Policies as written: in the config file (`[[policies]]`) and, later, through
//! admin actions. One serde form serves both; [`PolicySpec::validate`] turns it
//! into a [`Policy`] and refuses what cannot be enforced.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::auth::identity::{Identity, Permission, Principal};
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
    /// Holders of any of these permissions (`["AUDIT"]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<Permission>,
}

impl Condition {
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
            && self.attributes.is_empty()
            && self.users.is_empty()
            && self.permissions.is_empty()
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
            || self.permissions.iter().any(|x| p.permissions.contains(x))
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

    /// Does the principal satisfy the subscription itself (approvals apart)?
    pub fn admits(&self, p: &Principal, default_issuer: &str) -> bool {
        self.anyone
            || Condition {
                groups: self.groups.clone(),
                attributes: self.attributes.clone(),
                users: self.users.clone(),
                permissions: self.permissions.clone(),
            }
            .matches(p, default_issuer)
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
    /// column; unmasked through unmask requests (see `policy::reversible`).
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
    /// masks, not a replacement (see `policy::kanon`).
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

    fn validate(&self) -> std::result::Result<(), String> {
        match self {
            MaskSpec::Regex(r) => {
                if r.pattern.is_empty() {
                    return Err("a regex mask needs a non-empty `pattern`".into());
                }
                regex::Regex::new(&r.pattern)
                    .map(|_| ())
                    .map_err(|e| format!("the regex mask's pattern does not compile: {e}"))
            }
            MaskSpec::Round(r) => {
                let set = [r.digits.is_some(), r.bucket.is_some(), r.unit.is_some()];
                if set.iter().filter(|s| **s).count() != 1 {
                    return Err(
                        "a rounding mask is exactly one of `digits`, `bucket` or `unit`".into(),
                    );
                }
                if let Some(d) = r.digits
                    && !(-38..=38).contains(&d)
                {
                    return Err("rounding `digits` must be between -38 and 38".into());
                }
                if let Some(b) = r.bucket
                    && !(b.is_finite() && b > 0.0)
                {
                    return Err("a rounding `bucket` must be a positive number".into());
                }
                Ok(())
            }
            MaskSpec::Constant(v) => match v {
                serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
                    Err("a constant mask's value must be a string, number, boolean or null".into())
                }
                _ => Ok(()),
            },
            MaskSpec::KAnonymity(k) => {
                if !(2..=1_000_000).contains(&k.k) {
                    return Err(
                        "k-anonymity's `k` is between 2 and 1000000 (k = 1 would change nothing)"
                            .into(),
                    );
                }
                Ok(())
            }
            MaskSpec::Hash | MaskSpec::Null | MaskSpec::Reversible | MaskSpec::FormatPreserving => {
                Ok(())
            }
        }
    }

    /// Where this mask sorts among masks of its rank: comparable roundings
    /// coarsest first (see [`MaskSpec::combine_tie`]).
    pub fn tie_order(&self) -> (u8, f64) {
        match self {
            MaskSpec::Round(r) => match (r.digits, r.bucket, r.unit) {
                (Some(d), ..) => (0, f64::from(d)),
                (_, Some(b), _) => (1, -b),
                (.., Some(u)) => (2, -f64::from(u as u8)),
                _ => (3, 0.0),
            },
            _ => (4, 0.0),
        }
    }

    /// Of two masks of equal restrictiveness, the one to apply: the coarser
    /// of two comparable roundings; otherwise (two different regexes, a
    /// regex and a rounding) neither hides what the other shows, so the
    /// column is hashed instead. `None` means "keep `self`".
    pub fn combine_tie(&self, other: &MaskSpec) -> Option<MaskSpec> {
        // Two constants (or nulls, or hashes) hide the value equally well;
        // of a hash and a reversible mask, the hash (nobody can reverse it).
        if self.restrictiveness() >= 2 {
            return (*other == MaskSpec::Hash && *self != MaskSpec::Hash).then_some(MaskSpec::Hash);
        }
        if self == other {
            return None;
        }
        if let (MaskSpec::Round(a), MaskSpec::Round(b)) = (self, other) {
            match (a.digits, b.digits, a.bucket, b.bucket, a.unit, b.unit) {
                (Some(x), Some(y), ..) => return (y < x).then(|| other.clone()),
                (_, _, Some(x), Some(y), ..) => return (y > x).then(|| other.clone()),
                (.., Some(x), Some(y)) => return (y > x).then(|| other.clone()),
                _ => {}
            }
        }
        Some(MaskSpec::Hash)
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

impl RowFilterSpec {
    fn validate(&self) -> std::result::Result<RowRuleSpec, String> {
        if let Some(percent) = self.sample {
            if self.attribute.is_some() || self.within.is_some() || self.where_sql.is_some() {
                return Err(
                    "a `sample` row filter takes only its row-key `column` or `column_tag`".into(),
                );
            }
            if !(percent.is_finite() && percent > 0.0 && percent < 100.0) {
                return Err(format!(
                    "`sample = {percent}`: the percentage of rows kept must be above 0 and below 100"
                ));
            }
            if self.column.is_some() == self.column_tag.is_some() {
                return Err(
                    "a `sample` row filter needs exactly one row-key `column` or `column_tag` (a high-cardinality column such as the primary key)"
                        .into(),
                );
            }
            return Ok(RowRuleSpec::Sample {
                column: self.column.clone(),
                column_tag: self.column_tag.clone(),
                percent,
            });
        }
        if let Some(sql) = &self.where_sql {
            if self.attribute.is_some()
                || self.within.is_some()
                || self.column.is_some()
                || self.column_tag.is_some()
            {
                return Err("a `where` row filter takes no other fields".into());
            }
            if sql.trim().is_empty() {
                return Err("the row filter's `where` is empty".into());
            }
            return Ok(RowRuleSpec::Where(sql.clone()));
        }
        if let Some(within) = &self.within {
            if self.attribute.is_some() || self.column_tag.is_some() {
                return Err(
                    "a `within` row filter takes only an optional event-time `column`".into(),
                );
            }
            return Ok(RowRuleSpec::Window {
                column: self.column.clone(),
                seconds: parse_window(within)?,
            });
        }
        let Some(attribute) = self.attribute.as_ref().filter(|a| !a.trim().is_empty()) else {
            return Err(
                "a row filter is one of: `column`/`column_tag` with `attribute` (matching), `where`, or `within`"
                    .into(),
            );
        };
        if self.column.is_some() == self.column_tag.is_some() {
            return Err(
                "a matching row filter needs exactly one of `column` or `column_tag`".into(),
            );
        }
        Ok(RowRuleSpec::Matching {
            column: self.column.clone(),
            column_tag: self.column_tag.clone(),
            attribute: attribute.clone(),
        })
    }
}

/// `"90 minutes"`, `"24 hours"`, `"7 days"` (also `min`/`m`, `h`, `d`).
pub fn parse_window(s: &str) -> std::result::Result<i64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: i64 = n
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`within = \"{s}\"`: expected a positive count then minutes, hours or days, as in \"7 days\""))?;
    let per = match unit.trim().to_ascii_lowercase().as_str() {
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3_600,
        "d" | "day" | "days" => 86_400,
        other => {
            return Err(format!(
                "`within = \"{s}\"`: unknown unit '{other}' (use minutes, hours or days)"
            ));
        }
    };
    n.checked_mul(per)
        .filter(|secs| *secs <= 100 * 366 * 86_400)
        .ok_or_else(|| format!("`within = \"{s}\"` is longer than a century"))
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
    /// *For everyone except ...*: principals matching this are exempt.
    #[serde(default, skip_serializing_if = "Condition::is_empty")]
    pub except: Condition,
    /// *For everyone who ... / otherwise ...*: ordered steps, the first that
    /// matches decides, ending with a blanket `otherwise`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<BranchSpec>,
}

/// What a data policy does to a principal it applies to.
#[derive(Debug, Clone, PartialEq)]
pub enum DataRule {
    Mask(MaskSpec),
    RowFilter(RowRuleSpec),
}

impl DataRule {
    pub fn describe(&self) -> String {
        match self {
            DataRule::Mask(m) => format!("mask {}", m.label()),
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

    pub fn validate(&self) -> Result<PolicyRule> {
        let bad = |m: String| VeilError::InvalidArgument(format!("policy '{}': {m}", self.name));
        if self.name.trim().is_empty() || self.name.trim() != self.name || self.name.len() > 200 {
            return Err(VeilError::InvalidArgument(
                "a policy needs a non-empty name without leading or trailing spaces (at most 200 characters)".into(),
            ));
        }
        if self.dataset.is_some() != self.tags.is_empty() {
            return Err(bad(
                "set either `dataset` (a local policy) or `tags` (a global policy), not both or neither"
                    .into(),
            ));
        }
        if self.tags.iter().any(|t| t.trim().is_empty()) {
            return Err(bad("a tag is empty".into()));
        }
        if self.dataset.is_some() && !self.restricted_to.is_empty() {
            return Err(bad(
                "`restricted_to` limits a global policy to datasets its owners own; a local policy already names its dataset".into(),
            ));
        }
        if self.mask_where.is_some()
            && self.mask.is_none()
            && !self.chain.iter().any(|b| b.mask.is_some())
        {
            return Err(bad("`mask_where` only applies to masks".into()));
        }
        if self.mask_where.is_some()
            && self
                .mask
                .iter()
                .chain(self.chain.iter().filter_map(|b| b.mask.as_ref()))
                .any(|m| matches!(m, MaskSpec::KAnonymity(_)))
        {
            return Err(bad(
                "k-anonymization counts whole groups of rows, so it can't be conditional: drop `mask_where`".into(),
            ));
        }
        if let Some(s) = &self.subscription {
            if self.mask.is_some() || self.row_filter.is_some() || !self.chain.is_empty() {
                return Err(bad(
                    "a policy is exactly one of `subscription`, `mask` or `row_filter` (or a `chain` of masks or of row filters)".into(),
                ));
            }
            let kinds = [
                s.anyone,
                s.on_request,
                !(s.groups.is_empty() && s.attributes.is_empty() && s.permissions.is_empty()),
                !s.users.is_empty(),
            ];
            if kinds.iter().filter(|k| **k).count() != 1 {
                return Err(bad("a subscription is exactly one of `anyone = true`, `on_request = true`, `groups`/`attributes`/`permissions`, or `users`".into()));
            }
            if !s.approvers.is_empty() && !s.on_request {
                return Err(bad(
                    "`approvers` only applies to `on_request` subscriptions".into(),
                ));
            }
            if !self.columns.is_empty() {
                return Err(bad("`columns` only applies to masks".into()));
            }
            return Ok(PolicyRule::Subscription(s.clone()));
        }
        let data_rule = |mask: &Option<MaskSpec>,
                         row: &Option<RowFilterSpec>|
         -> std::result::Result<Option<DataRule>, String> {
            match (mask, row) {
                (Some(m), None) => {
                    m.validate()?;
                    Ok(Some(DataRule::Mask(m.clone())))
                }
                (None, Some(r)) => Ok(Some(DataRule::RowFilter(r.validate()?))),
                (None, None) => Ok(None),
                (Some(_), Some(_)) => Err("a step is a mask or a row filter, not both".into()),
            }
        };
        let clauses = if self.chain.is_empty() {
            let Some(rule) = data_rule(&self.mask, &self.row_filter).map_err(bad)? else {
                return Err(bad(
                    "a policy is exactly one of `subscription`, `mask`, `row_filter` or a `chain`"
                        .into(),
                ));
            };
            let mut clauses = Vec::new();
            if !self.except.is_empty() {
                clauses.push(Clause {
                    who: Some(self.except.clone()),
                    rule: None,
                });
            }
            clauses.push(Clause {
                who: None,
                rule: Some(rule),
            });
            clauses
        } else {
            if self.mask.is_some() || self.row_filter.is_some() || !self.except.is_empty() {
                return Err(bad(
                    "a `chain` policy states its masks or row filters (and exemptions) in its steps; drop the top-level `mask`, `row_filter` and `except`".into(),
                ));
            }
            let last = self.chain.len() - 1;
            let mut clauses = Vec::new();
            for (i, b) in self.chain.iter().enumerate() {
                let step = |m: &str| bad(format!("chain step {}: {m}", i + 1));
                match (&b.who, b.otherwise) {
                    (Some(_), true) => {
                        return Err(step("a step has `who` or is the `otherwise`, not both"));
                    }
                    (None, false) => {
                        return Err(step(
                            "a step needs `who = {...}` (or `otherwise = true` on the last one)",
                        ));
                    }
                    (Some(c), false) if c.is_empty() => {
                        return Err(step("`who` names no group, attribute or user"));
                    }
                    (None, true) if i != last => {
                        return Err(step("only the last step may be `otherwise`"));
                    }
                    (Some(_), false) if i == last => {
                        return Err(step(
                            "a chain must end with a blanket `otherwise = true` step",
                        ));
                    }
                    _ => {}
                }
                let rule = data_rule(&b.mask, &b.row_filter).map_err(|m| step(&m))?;
                if rule.is_some() == b.exempt {
                    return Err(step(
                        "a step has exactly one of `mask`, `row_filter` or `exempt = true`",
                    ));
                }
                clauses.push(Clause {
                    who: b.who.clone(),
                    rule,
                });
            }
            if clauses.len() < 2 {
                return Err(bad(
                    "a chain has at least one `who` step before its `otherwise`".into(),
                ));
            }
            let masks = clauses
                .iter()
                .filter(|c| matches!(c.rule, Some(DataRule::Mask(_))))
                .count();
            let rows = clauses
                .iter()
                .filter(|c| matches!(c.rule, Some(DataRule::RowFilter(_))))
                .count();
            if masks > 0 && rows > 0 {
                return Err(bad("a chain is all masks or all row filters".into()));
            }
            if masks + rows == 0 {
                return Err(bad(
                    "every step of this chain is exempt: it does nothing".into()
                ));
            }
            clauses
        };
        let masks = clauses
            .iter()
            .any(|c| matches!(c.rule, Some(DataRule::Mask(_))));
        if masks {
            if self.dataset.is_some() && self.columns.is_empty() {
                return Err(bad("a local mask needs `columns`".into()));
            }
            if !self.tags.is_empty() && !self.columns.is_empty() {
                return Err(bad(
                    "a global mask selects columns by `tags`; drop `columns`".into(),
                ));
            }
        } else if !self.columns.is_empty() {
            return Err(bad("`columns` only applies to masks".into()));
        }
        Ok(PolicyRule::Data(clauses))
    }
}

/// `PII` covers `pii` and `PII.email`, but not `PIIX`.
/// Whether `tag` is a well-formed tag to put on a column: dot-separated
/// parts of letters, digits, `_`, `-`, `:` and `/`, at most 128 bytes. A tag
/// with a space, a comma or an invisible character would look like another
/// tag (or two) while no policy on that tag matched it.
pub fn check_tag(tag: &str) -> std::result::Result<(), String> {
    let shown: String = tag.chars().take(64).filter(|c| !c.is_control()).collect();
    if tag.is_empty() || tag.len() > 128 {
        return Err(format!("tag '{shown}' must be 1 to 128 bytes"));
    }
    let part_ok =
        |p: &str| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || "_-:/".contains(c));
    if !tag.split('.').all(part_ok) {
        return Err(format!(
            "tag '{shown}' must be dot-separated parts of letters, digits, '_', '-', ':' and '/' (like PII.email)"
        ));
    }
    Ok(())
}

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
    fn tags_are_checked_before_they_go_on_a_column() {
        for good in [
            "PII",
            "PII.email",
            "phi.dob",
            "gdpr:art9/health",
            "a_b-c.D1",
        ] {
            assert!(check_tag(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "PII .email",
            "PII\u{200b}.email",
            "a,b",
            "x=y",
            "\x1b[31m",
            "PII.",
            ".PII",
            "PII..email",
            &"x".repeat(129),
        ] {
            assert!(check_tag(bad).is_err(), "{bad:?}");
        }
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
        let PolicyRule::Data(clauses) = s.validate().unwrap() else {
            panic!("a data policy")
        };
        assert_eq!(clauses.len(), 2, "except, then everyone");
        assert_eq!(clauses[0].rule, None);
        assert_eq!(clauses[1].rule, Some(DataRule::Mask(MaskSpec::Hash)));
        let s = spec(
            "name = \"c\"\ndataset = \"x.y\"\ncolumns = [\"ip\"]\nmask = { constant = \"REDACTED\" }",
        );
        assert!(matches!(
            s.validate().unwrap(),
            PolicyRule::Data(c) if matches!(c[0].rule, Some(DataRule::Mask(MaskSpec::Constant(_))))
        ));
        let s = spec(
            "name = \"r\"\ndataset = \"x.y\"\nrow_filter = { column = \"state\", attribute = \"state\" }",
        );
        assert!(matches!(
            s.validate().unwrap(),
            PolicyRule::Data(c) if matches!(c[0].rule, Some(DataRule::RowFilter(RowRuleSpec::Matching { .. })))
        ));
    }

    #[test]
    fn ambiguous_policies_are_refused() {
        for bad in [
            "name = \"a\"\nsubscription = { anyone = true }",
            "name = \"a\"\ndataset = \"x.y\"\ntags = [\"t\"]\nmask = \"null\"",
            "name = \"a\"\ndataset = \"x.y\"\nmask = \"null\"",
            "name = \"a\"\ndataset = \"x.y\"\nsubscription = { anyone = true, groups = [\"g\"] }",
            "name = \"a\"\ndataset = \"x.y\"\nrow_filter = { attribute = \"s\" }",
            "name = \"a\"\ndataset = \"x.y\"\nrow_filter = { where = \"x\", attribute = \"s\" }",
            "name = \"a\"\ndataset = \"x.y\"\nrow_filter = { within = \"7 weeks\" }",
            "name = \"a\"\ndataset = \"x.y\"\ncolumns = [\"c\"]\nmask = { round = { digits = 1, bucket = 5 } }",
            "name = \"a\"\ndataset = \"x.y\"\ncolumns = [\"c\"]\nmask = { regex = { pattern = \"(\", replacement = \"x\" } }",
            "name = \"a\"\ndataset = \"x.y\"\nsubscription = { groups = [\"g\"], approvers = { groups = [\"s\"] } }",
            // Chains: must end with a blanket otherwise; one kind of rule.
            "name = \"a\"\ndataset = \"x.y\"\ncolumns = [\"c\"]\nchain = [{ who = { groups = [\"g\"] }, mask = \"null\" }]",
            "name = \"a\"\ndataset = \"x.y\"\ncolumns = [\"c\"]\nchain = [{ otherwise = true, mask = \"null\" }, { who = { groups = [\"g\"] }, exempt = true }]",
            "name = \"a\"\ndataset = \"x.y\"\ncolumns = [\"c\"]\nchain = [{ who = { groups = [\"g\"] }, mask = \"null\" }, { otherwise = true, row_filter = { where = \"x\" } }]",
            "name = \"a\"\ndataset = \"x.y\"\ncolumns = [\"c\"]\nmask = \"null\"\nchain = [{ who = { groups = [\"g\"] }, exempt = true }, { otherwise = true, mask = \"null\" }]",
            "name = \"a\"\ndataset = \"x.y\"\ncolumns = [\"c\"]\nchain = [{ who = { groups = [\"g\"] }, exempt = true }, { otherwise = true, exempt = true }]",
        ] {
            assert!(spec(bad).validate().is_err(), "{bad}");
        }
    }
}
