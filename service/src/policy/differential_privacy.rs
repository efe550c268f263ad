//! A differential privacy policy, checked: the exact per-query privacy,
//! contribution bounds in fixed point, what may be grouped by, budgets.
//! Checked once when written ([`DpPolicy::validate`]) and against a
//! dataset's dictionary ([`DpPolicy::check_on`]); the engine answers
//! queries under it (`crate::engine::dp`).

use std::collections::{BTreeMap, BTreeSet};

use datafusion::arrow::datatypes::{DataType, Schema};

use super::rules::parse_duration;
use crate::dp::accounting::QueryPrivacy;
use crate::error::{Result, VeilError};
use crate::model::policy::{DifferentialPrivacySpec, DpMechanism};

/// Largest fixed-point magnitude a bound may have: sums of a billion
/// rows stay within an `i128` with room for noise.
const MAX_FIXED: f64 = (1u64 << 52) as f64;
/// Most combinations of public group keys one query may answer.
pub const MAX_PUBLIC_GROUPS: usize = 10_000;

/// Clamping bounds of one column, in fixed point (`value × scale`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Clamp {
    pub lower: i64,
    pub upper: i64,
    pub scale: u32,
}

impl Clamp {
    /// The largest magnitude a clamped value has.
    pub fn magnitude(&self) -> u128 {
        u128::from(self.lower.unsigned_abs().max(self.upper.unsigned_abs()))
    }
}

/// Budgets per user and per dataset over a tumbling period, in the
/// ledger's unit ([`QueryPrivacy::unit`]), and of δ.
#[derive(Debug, Clone, PartialEq)]
pub struct Budgets {
    pub user: Option<f64>,
    pub dataset: Option<f64>,
    /// As written (ε), for messages.
    pub user_epsilon: Option<f64>,
    pub dataset_epsilon: Option<f64>,
    /// δ each ledger may spend in a period (releasing private group keys
    /// spends the policy's δ for it per answer): as written, else what the
    /// ε budget allows at the policy's own ε ([`Budgets::default_delta`]).
    pub user_delta: Option<f64>,
    pub dataset_delta: Option<f64>,
    pub period_secs: i64,
}

impl Budgets {
    /// The δ budget an ε budget implies: as many answers as it pays for at
    /// the policy's own privacy (`budget` and `cost` in the ledger's unit,
    /// ε or ρ), each spending the δ of releasing private keys. It binds
    /// only when queries ask for less ε than the policy's (`OPTIONS
    /// (epsilon => ...)`), so many cheap queries can't add up δ past what
    /// the policy's own queries could.
    /// Rounded to 12 significant digits, so a budget of 10 queries at
    /// δ = 1e-6 reads 1e-5, not 9.999999999999999e-6.
    pub fn default_delta(budget: f64, cost: f64, selection_delta: f64) -> f64 {
        let exact = budget / cost * selection_delta;
        format!("{exact:.11e}").parse().unwrap_or(exact)
    }
}

/// A validated [`DifferentialPrivacySpec`].
#[derive(Debug, Clone, PartialEq)]
pub struct DpPolicy {
    pub unit: String,
    pub epsilon: f64,
    pub delta: Option<f64>,
    pub mechanism: DpMechanism,
    pub privacy: QueryPrivacy,
    pub tolerance_secs: i64,
    pub max_groups: u64,
    pub max_rows: u64,
    pub columns: BTreeMap<String, Clamp>,
    pub groupable: BTreeSet<String>,
    /// Columns with public keys, each with every key (as JSON values);
    /// a bucketed column's keys are its edges.
    pub public_keys: BTreeMap<String, Vec<serde_json::Value>>,
    /// Bucketed columns and their ascending edges.
    pub buckets: BTreeMap<String, Vec<f64>>,
    pub budgets: Option<Budgets>,
    pub force: bool,
}

fn fixed(column: &str, what: &str, x: f64, scale: u32) -> std::result::Result<i64, String> {
    let v = (x * f64::from(scale)).round();
    if !x.is_finite() || v.abs() > MAX_FIXED {
        return Err(format!(
            "column '{column}': `{what} = {x}` times `scale = {scale}` is outside ±2^52"
        ));
    }
    Ok(v as i64)
}

impl DpPolicy {
    pub fn validate(spec: &DifferentialPrivacySpec) -> std::result::Result<Self, String> {
        if spec.privacy_unit.trim().is_empty() {
            return Err("`privacy_unit` names the column identifying whom a row is about".into());
        }
        if !(spec.epsilon > 0.0 && spec.epsilon <= 100.0) {
            return Err(format!(
                "`epsilon = {}`: a query's ε is a number in (0, 100]",
                spec.epsilon
            ));
        }
        if let Some(d) = spec.delta
            && !(d > 0.0 && d <= 0.01)
        {
            return Err(format!("`delta = {d}`: δ is a number in (0, 0.01]"));
        }
        let privacy = QueryPrivacy::new(spec.mechanism, spec.epsilon, spec.delta)?;
        let tolerance_secs = parse_duration("latency_tolerance", &spec.latency_tolerance)?;
        for (name, n) in [
            ("max_groups_per_unit", spec.max_groups_per_unit),
            ("max_rows_per_unit", spec.max_rows_per_unit),
        ] {
            if !(1..=1_000).contains(&n) {
                return Err(format!("`{name} = {n}`: a count in 1..=1000"));
            }
        }
        let mut columns = BTreeMap::new();
        for (name, c) in &spec.columns {
            if !(1..=1_000_000).contains(&c.scale) {
                return Err(format!(
                    "column '{name}': `scale = {}` is in 1..=1000000",
                    c.scale
                ));
            }
            let lower = fixed(name, "lower", c.lower, c.scale)?;
            let upper = fixed(name, "upper", c.upper, c.scale)?;
            if lower > upper {
                return Err(format!(
                    "column '{name}': `lower = {}` is above `upper = {}`",
                    c.lower, c.upper
                ));
            }
            columns.insert(
                name.to_string(),
                Clamp {
                    lower,
                    upper,
                    scale: c.scale,
                },
            );
        }
        let mut groupable: BTreeSet<String> = spec.groupable.iter().cloned().collect();
        let mut combos: usize = 1;
        for (column, keys) in &spec.public_groups {
            if keys.is_empty() {
                return Err(format!(
                    "`public_groups.{column}` lists no key: list every key of the column"
                ));
            }
            if keys
                .iter()
                .any(|k| !(k.is_string() || k.is_i64() || k.is_u64() || k.is_boolean()))
            {
                return Err(format!(
                    "`public_groups.{column}`: keys are strings, integers or booleans"
                ));
            }
            combos = combos.saturating_mul(keys.len());
            groupable.insert(column.clone());
        }
        let mut public_keys = spec.public_groups.clone();
        for (column, edges) in &spec.buckets {
            if spec.public_groups.contains_key(column) {
                return Err(format!(
                    "'{column}' has both `public_groups` and `buckets`: choose one"
                ));
            }
            if edges.is_empty() || edges.len() > 1_000 {
                return Err(format!(
                    "`buckets.{column}` lists 1 to 1000 ascending edges"
                ));
            }
            if edges.iter().any(|e| !e.is_finite()) || edges.windows(2).any(|w| w[0] >= w[1]) {
                return Err(format!(
                    "`buckets.{column}`: edges are finite numbers in strictly ascending order"
                ));
            }
            combos = combos.saturating_mul(edges.len());
            groupable.insert(column.clone());
            public_keys.insert(
                column.clone(),
                edges
                    .iter()
                    .map(|e| {
                        if e.fract() == 0.0 && e.abs() < 9e15 {
                            serde_json::json!(*e as i64)
                        } else {
                            serde_json::json!(e)
                        }
                    })
                    .collect(),
            );
        }
        if combos > MAX_PUBLIC_GROUPS {
            return Err(format!(
                "`public_groups` spans {combos} combinations of keys; at most {MAX_PUBLIC_GROUPS}"
            ));
        }
        if groupable.contains(&spec.privacy_unit) {
            return Err(format!(
                "'{}' is the privacy unit: grouping by it would answer about single units, so it can't be groupable",
                spec.privacy_unit
            ));
        }
        let budgets = match &spec.budget {
            None => None,
            Some(b) => {
                for (name, v) in [
                    ("user_epsilon", b.user_epsilon),
                    ("dataset_epsilon", b.dataset_epsilon),
                ] {
                    if let Some(v) = v
                        && !(v.is_finite() && v >= spec.epsilon)
                    {
                        return Err(format!(
                            "`budget.{name} = {v}` is below one query's ε ({}): no query could run",
                            spec.epsilon
                        ));
                    }
                }
                let selection = privacy.selection_delta();
                for (name, v) in [
                    ("user_delta", b.user_delta),
                    ("dataset_delta", b.dataset_delta),
                ] {
                    let Some(v) = v else { continue };
                    let Some(per_query) = selection else {
                        return Err(format!(
                            "`budget.{name}`: this policy spends no δ (set `delta` to group by keys it doesn't list)"
                        ));
                    };
                    if !(v.is_finite() && v >= per_query && v <= 1.0) {
                        return Err(format!(
                            "`budget.{name} = {v}`: a δ budget is at least one query's δ for releasing private keys ({per_query}) and at most 1"
                        ));
                    }
                }
                let delta_cap = |written: Option<f64>, epsilon: Option<f64>| {
                    written.or_else(|| {
                        Some(Budgets::default_delta(
                            privacy.budget_in_unit(epsilon?),
                            privacy.cost(),
                            selection?,
                        ))
                    })
                };
                Some(Budgets {
                    user: b.user_epsilon.map(|e| privacy.budget_in_unit(e)),
                    dataset: b.dataset_epsilon.map(|e| privacy.budget_in_unit(e)),
                    user_epsilon: b.user_epsilon,
                    dataset_epsilon: b.dataset_epsilon,
                    user_delta: delta_cap(b.user_delta, b.user_epsilon),
                    dataset_delta: delta_cap(b.dataset_delta, b.dataset_epsilon),
                    period_secs: parse_duration("budget.period", &b.period)?,
                })
            }
        };
        Ok(Self {
            unit: spec.privacy_unit.clone(),
            epsilon: spec.epsilon,
            delta: spec.delta,
            mechanism: spec.mechanism,
            privacy,
            tolerance_secs,
            max_groups: u64::from(spec.max_groups_per_unit),
            max_rows: u64::from(spec.max_rows_per_unit),
            columns,
            groupable,
            public_keys,
            buckets: spec.buckets.clone(),
            budgets,
            force: spec.force,
        })
    }

    /// Check the policy against a dataset's columns: the unit and every
    /// named column exist, bounded columns are numeric.
    pub fn check_on(&self, schema: &Schema, what: &str) -> Result<()> {
        let field = |c: &str| {
            schema.field_with_name(c).map_err(|_| {
                VeilError::FailedPrecondition(format!(
                    "{what}: the dataset has no column '{c}' (named by its differential privacy policy)"
                ))
            })
        };
        field(&self.unit)?;
        for c in self.columns.keys() {
            let f = field(c)?;
            if !(f.data_type().is_numeric() || matches!(f.data_type(), DataType::Decimal128(..))) {
                return Err(VeilError::FailedPrecondition(format!(
                    "{what}: column '{c}' is {}, not a number, so it can't have clamping bounds",
                    f.data_type()
                )));
            }
        }
        for c in &self.groupable {
            field(c)?;
        }
        for (c, edges) in &self.buckets {
            let dt = field(c)?.data_type().clone();
            if !dt.is_numeric() {
                return Err(VeilError::FailedPrecondition(format!(
                    "{what}: column '{c}' is {dt}, not a number, so it can't be bucketed"
                )));
            }
            if dt.is_integer() && edges.iter().any(|e| e.fract() != 0.0) {
                return Err(VeilError::FailedPrecondition(format!(
                    "{what}: column '{c}' holds integers; its bucket edges must be whole numbers"
                )));
            }
        }
        Ok(())
    }

    /// The policy in words, for `veil explain`.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "aggregate queries only (COUNT, SUM, AVG, COUNT(DISTINCT {unit})), answered with {} noise at ε = {}{} per query; privacy unit {unit}: at most {} group(s) per unit, {} row(s) per unit in a group; answers kept {}",
            self.mechanism.as_str(),
            self.epsilon,
            self.delta.map(|d| format!(", δ = {d}")).unwrap_or_default(),
            self.max_groups,
            self.max_rows,
            super::rules::duration_text(self.tolerance_secs),
            unit = self.unit,
        );
        if !self.columns.is_empty() {
            let bounds: Vec<String> = self
                .columns
                .iter()
                .map(|(c, b)| {
                    let s = f64::from(b.scale);
                    format!("{c} in [{}, {}]", b.lower as f64 / s, b.upper as f64 / s)
                })
                .collect();
            out.push_str(&format!("; SUM/AVG on {}", bounds.join(", ")));
        }
        if !self.groupable.is_empty() {
            let groups: Vec<String> = self
                .groupable
                .iter()
                .map(|c| match self.public_keys.get(c) {
                    Some(keys) => format!("{c} (public keys: {})", keys.len()),
                    None => c.clone(),
                })
                .collect();
            out.push_str(&format!("; GROUP BY {}", groups.join(", ")));
        }
        if let Some(b) = &self.budgets {
            let part = |label: &str, e: Option<f64>| e.map(|e| format!("{label} ε {e}"));
            let parts: Vec<String> = [
                part("per user", b.user_epsilon),
                part("per dataset", b.dataset_epsilon),
            ]
            .into_iter()
            .flatten()
            .collect();
            out.push_str(&format!(
                "; budget {} every {}",
                parts.join(", "),
                super::rules::duration_text(b.period_secs)
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `veil explain` shows durations as a person writes them.
    #[test]
    fn the_policy_in_words_shows_durations_as_written() {
        let spec: DifferentialPrivacySpec = toml::from_str(
            r#"
privacy_unit = "participant_id"
epsilon = 1.0
latency_tolerance = "24h"
budget = { user_epsilon = 10, period = "30d" }
"#,
        )
        .unwrap();
        let words = DpPolicy::validate(&spec).unwrap().describe();
        assert!(words.contains("answers kept 1 day"), "{words}");
        assert!(
            words.ends_with("; budget per user ε 10 every 30 days"),
            "{words}"
        );
    }
}
