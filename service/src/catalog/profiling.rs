//! Profiling raw columns for k-anonymization policies: how many distinct
//! values and combinations they hold. Reads the source directly (no policy
//! applies: this serves the owners and governors who write such policies)
//! in a session the caller passes (the engine's `raw_session`), so the
//! caller's memory pool applies.

use datafusion::common::DataFusionError;
use datafusion::prelude::SessionContext;

use super::object_stores::ObjectStores;
use crate::catalog::database::Databases;
use crate::error::query::{below_barrier, from_datafusion};
use crate::error::{Result, VeilError};
use crate::model::dataset::DatasetRecord;
use crate::model::policy::Policy;
use crate::model::source_kind::SourceKind;
use crate::policy::effective::{applies_to, kanon_columns};
use crate::policy::masks::kanon::{self, Profile};

/// Profile the raw values of `columns` of dataset `d` (no policy applies:
/// for the owners and governors who write k-anonymization policies), in
/// the caller's session `ctx`, so its memory pool bounds the counting.
pub async fn profile_dataset(
    ctx: &SessionContext,
    d: &DatasetRecord,
    columns: &[String],
    stores: &ObjectStores,
    databases: &Databases,
    max_groups: usize,
) -> Result<Profile> {
    match SourceKind::of(d) {
        SourceKind::Files(_) | SourceKind::Database(_) => {}
        SourceKind::AuditTrail => {
            return Err(VeilError::FailedPrecondition(format!(
                "{} is Veil's audit trail, not a dataset of files or a database: k-anonymization profiles those",
                d.name
            )));
        }
    }
    let source = crate::catalog::raw_source(d, stores, databases).await?;
    // The raw source is read here, with no policy applied: its errors
    // keep their cause and lose their text, as below a policy barrier.
    let fail = |e: DataFusionError| from_datafusion(below_barrier(&d.name, &e));
    let names: Vec<&str> = columns.iter().map(String::as_str).collect();
    let stream = ctx
        .read_table(source)
        .and_then(|t| t.select_columns(&names))
        .map_err(fail)?
        .execute_stream()
        .await
        .map_err(fail)?;
    kanon::profile(stream, max_groups).await.map_err(fail)
}

/// Refuse a policy that k-anonymizes a column with more distinct values
/// than `cutoff` on any dataset it applies to (Immuta's rule: only
/// low-cardinality columns can be quasi-identifiers), or whose columns
/// together have more combinations than a read may count. The refusal
/// doesn't say how many values there are: they are counted over every
/// row, and the author may not see them all.
#[allow(clippy::too_many_arguments)]
pub async fn check_cardinality(
    ctx: &SessionContext,
    p: &Policy,
    datasets: &[&DatasetRecord],
    stores: &ObjectStores,
    databases: &Databases,
    cutoff: u64,
    max_groups: usize,
    default_issuer: &str,
) -> Result<()> {
    for d in datasets.iter().filter(|d| applies_to(p, d, default_issuer)) {
        let Some(columns) = kanon_columns(p, d)? else {
            continue;
        };
        if columns.is_empty() {
            continue;
        }
        let profile = profile_dataset(ctx, d, &columns, stores, databases, max_groups)
            .await
            .map_err(|e| {
                VeilError::FailedPrecondition(format!(
                    "k-anonymization policy '{}' on '{}': {}",
                    p.spec.name,
                    d.name,
                    e.message()
                ))
            })?;
        for (c, n) in columns.iter().zip(&profile.distinct) {
            if *n > cutoff {
                return Err(VeilError::FailedPrecondition(format!(
                    "k-anonymization policy '{}': column '{c}' of '{}' has more distinct values than the cutoff of {cutoff} (engine.kanon_cardinality_cutoff); choose a column with fewer values, or mask this one another way (rounding, hashing)",
                    p.spec.name, d.name
                )));
            }
        }
    }
    Ok(())
}

/// Rows sampled to check a privacy unit's cardinality.
pub const UNIT_SAMPLE_ROWS: usize = 10_000;
/// Least share of distinct values a privacy unit needs in the sample.
pub const UNIT_MIN_DISTINCT: f64 = 0.9;

/// Refuse a differential privacy policy whose privacy unit has fewer than
/// 90% distinct values in a sample of each dataset it applies to (the
/// seed's rule: noise is scaled to one unit's contribution, which a
/// low-cardinality "unit" understates), unless the policy says `force`.
/// The answer names the measured share, never a value.
pub async fn check_privacy_unit(
    ctx: &SessionContext,
    p: &Policy,
    datasets: &[&DatasetRecord],
    stores: &ObjectStores,
    databases: &Databases,
    default_issuer: &str,
) -> Result<()> {
    use crate::model::policy::{DataRule, PolicyRule};
    use datafusion::functions_aggregate::expr_fn::{count, count_distinct};
    use datafusion::prelude::ident;
    let PolicyRule::Data(clauses) = &p.rule else {
        return Ok(());
    };
    for spec in clauses.iter().filter_map(|c| match &c.rule {
        Some(DataRule::DifferentialPrivacy(spec)) => Some(spec),
        _ => None,
    }) {
        if spec.force {
            continue;
        }
        for d in datasets.iter().filter(|d| applies_to(p, d, default_issuer)) {
            if matches!(SourceKind::of(d), SourceKind::AuditTrail) {
                continue;
            }
            let unit = &spec.privacy_unit;
            let source = crate::catalog::raw_source(d, stores, databases).await?;
            let fail = |e: DataFusionError| from_datafusion(below_barrier(&d.name, &e));
            let batches = ctx
                .read_table(source)
                .and_then(|t| t.select(vec![ident(unit)]))
                .and_then(|t| t.limit(0, Some(UNIT_SAMPLE_ROWS)))
                .and_then(|t| {
                    t.aggregate(
                        vec![],
                        vec![
                            count(datafusion::prelude::lit(1i64)).alias("n"),
                            count_distinct(ident(unit)).alias("d"),
                        ],
                    )
                })
                .map_err(fail)?
                .collect()
                .await
                .map_err(fail)?;
            let value = |name: &str| -> u64 {
                batches
                    .first()
                    .and_then(|b| b.column_by_name(name))
                    .and_then(|c| {
                        datafusion::common::ScalarValue::try_from_array(c, 0)
                            .ok()
                            .and_then(|v| match v {
                                datafusion::common::ScalarValue::Int64(Some(n)) => Some(n as u64),
                                _ => None,
                            })
                    })
                    .unwrap_or(0)
            };
            let (rows, distinct) = (value("n"), value("d"));
            if rows == 0 {
                continue;
            }
            let share = distinct as f64 / rows as f64;
            if share < UNIT_MIN_DISTINCT {
                return Err(VeilError::FailedPrecondition(format!(
                    "differential privacy policy '{}': the privacy unit '{unit}' of '{}' has {:.1}% distinct values in a sample of {rows} rows; a privacy unit needs at least {:.0}% (a column identifying whom each row is about, such as a primary key). Choose another column, or set `force = true` to accept it",
                    p.spec.name,
                    d.name,
                    share * 100.0,
                    UNIT_MIN_DISTINCT * 100.0
                )));
            }
        }
    }
    Ok(())
}
