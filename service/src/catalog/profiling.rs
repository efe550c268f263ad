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
/// together have more combinations than a read may count.
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
                    "k-anonymization policy '{}': column '{c}' of '{}' has {n} distinct values, above the cutoff of {cutoff} (engine.kanon_cardinality_cutoff); choose a column with fewer values, or mask this one another way (rounding, hashing)",
                    p.spec.name, d.name
                )));
            }
        }
    }
    Ok(())
}
