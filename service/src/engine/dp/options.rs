//! BigQuery's `SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS (epsilon => 0.5)`
//! clause, read before SQL parsing (sqlparser doesn't know it): a query
//! may spend less than its policy's ε (or δ), never more.

use regex::Regex;
use std::sync::LazyLock;

use crate::dp::accounting::QueryPrivacy;
use crate::error::{Result, VeilError};
use crate::policy::differential_privacy::DpPolicy;

/// The least share of the policy's ε one query may spend.
pub const MIN_FRACTION: f64 = 100.0;

/// What a query asked for in its clause.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DpOptions {
    pub epsilon: Option<f64>,
    pub delta: Option<f64>,
}

static CLAUSE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?is)^(\s*SELECT\s+)WITH\s+DIFFERENTIAL_PRIVACY\b(?:\s+OPTIONS\s*\(([^()]*)\))?")
        .expect("a valid pattern")
});

fn bad(what: String) -> VeilError {
    VeilError::InvalidArgument(format!(
        "[DP_OPTIONS] {what}; write SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS (epsilon => 0.5) ... to spend less than the policy's ε"
    ))
}

/// The query without the clause, and the clause's options if it had one.
pub fn strip(sql: &str) -> Result<(String, Option<DpOptions>)> {
    let Some(m) = CLAUSE.captures(sql) else {
        return Ok((sql.to_string(), None));
    };
    let whole = m.get(0).expect("the match");
    let select = m.get(1).expect("the SELECT").as_str();
    let mut options = DpOptions::default();
    if let Some(body) = m.get(2) {
        for item in body.as_str().split(',').filter(|s| !s.trim().is_empty()) {
            let (name, value) = item
                .split_once("=>")
                .or_else(|| item.split_once('='))
                .ok_or_else(|| bad(format!("option '{}' has no value", item.trim())))?;
            let name = name.trim().to_ascii_lowercase();
            let value: f64 = value
                .trim()
                .parse()
                .map_err(|_| bad(format!("option {name} is not a number")))?;
            let slot = match name.as_str() {
                "epsilon" => &mut options.epsilon,
                "delta" => &mut options.delta,
                other => {
                    return Err(bad(format!(
                        "unknown option '{other}' (the policy sets the privacy unit, bounds and groups; a query may set epsilon and delta)"
                    )));
                }
            };
            if slot.replace(value).is_some() {
                return Err(bad(format!("option {name} is given twice")));
            }
        }
    }
    let rest = &sql[whole.end()..];
    Ok((format!("{select}{rest}"), Some(options)))
}

/// The privacy a query spends under `policy` with `options`: the policy's,
/// or less; and the ε that is.
pub fn privacy_for(policy: &DpPolicy, options: Option<&DpOptions>) -> Result<(QueryPrivacy, f64)> {
    // A floor, so a budget bounds how many questions can be asked.
    let least = policy.epsilon / MIN_FRACTION;
    let (asked_epsilon, asked_delta) = options.map_or((None, None), |o| (o.epsilon, o.delta));
    if asked_epsilon.is_none() && asked_delta.is_none() {
        return Ok((policy.privacy.clone(), policy.epsilon));
    }
    // Either may be given alone; the other is the policy's.
    let epsilon = match asked_epsilon {
        None => policy.epsilon,
        Some(e) if e >= least && e <= policy.epsilon => e,
        Some(e) => {
            return Err(bad(format!(
                "epsilon => {e}: a query spends between 1/{MIN_FRACTION} of the policy's ε and all of it ({least} to {})",
                policy.epsilon
            )));
        }
    };
    let delta = match (asked_delta, policy.delta) {
        (None, d) => d,
        (Some(d), Some(max)) if d > 0.0 && d <= max => Some(d),
        (Some(d), _) => {
            return Err(bad(format!(
                "delta => {d}: a query's δ is above 0 and at most the policy's ({})",
                policy
                    .delta
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "none".into())
            )));
        }
    };
    let privacy = QueryPrivacy::new(policy.mechanism, epsilon, delta).map_err(bad)?;
    Ok((privacy, epsilon))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clause_is_read_and_removed() {
        let (sql, o) =
            strip("select  WITH differential_privacy OPTIONS (epsilon => 0.25, delta=1e-7) count(*) from t")
                .unwrap();
        assert_eq!(sql, "select   count(*) from t");
        assert_eq!(
            o,
            Some(DpOptions {
                epsilon: Some(0.25),
                delta: Some(1e-7)
            })
        );
        let (sql, o) = strip("SELECT WITH DIFFERENTIAL_PRIVACY COUNT(*) FROM t").unwrap();
        assert_eq!(sql, "SELECT  COUNT(*) FROM t");
        assert_eq!(o, Some(DpOptions::default()));
        let (sql, o) = strip("SELECT 1 -- WITH DIFFERENTIAL_PRIVACY").unwrap();
        assert_eq!(
            (sql.as_str(), o),
            ("SELECT 1 -- WITH DIFFERENTIAL_PRIVACY", None)
        );
        assert!(
            strip("SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS (privacy_unit_column => x) 1").is_err()
        );
        assert!(strip("SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS (epsilon => lots) 1").is_err());
        assert!(
            strip("SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS (epsilon => 1, epsilon => 2) 1")
                .is_err()
        );
    }
}
