//! Noise on the exact bounded aggregates ([`super::bounding`]): which
//! groups are released and what each measure answers. Pure over an Arrow
//! batch and a random generator, so the privacy audit in the tests runs it
//! directly on neighbouring datasets.
//!
//! Each raw quantity of a group gets one independent draw; every measure
//! is computed from the noisy quantities (post-processing): counts are
//! floored at zero, an average is the noisy sum over the noisy count,
//! clamped to the column's bounds. Group keys: public keys (declared in the
//! policy) are each answered, noisy zeros included, whatever the data;
//! private keys are released only when their noisy unit count reaches the
//! threshold τ that bounds, by δ, the chance that a key held by one unit
//! shows.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Int64Type, SchemaRef};
use datafusion::common::ScalarValue;
use num_bigint::BigInt;
use rand::{CryptoRng, Rng};
use std::collections::HashMap;
use std::sync::Arc;

use super::bounding::{Raw, group_column, raw_column};
use super::query::{DpQuery, Measure};
use crate::dp::accounting::{Noise, QueryPrivacy, Sensitivity};
use crate::dp::noise::to_i128;
use crate::error::{Result, VeilError};
use crate::policy::differential_privacy::DpPolicy;

/// The noise of each raw quantity, and how private keys are released.
#[derive(Debug, Clone)]
pub struct NoisePlan {
    pub raws: Vec<Raw>,
    pub noises: Vec<Noise>,
    /// Private keys: the index of the `Units` quantity and τ.
    pub threshold: Option<(usize, u64)>,
    /// Public keys: every combination to answer, in order.
    pub public: Option<Vec<Vec<ScalarValue>>>,
}

/// How many groups one unit may reach in this query.
pub fn groups_per_unit(q: &DpQuery, policy: &DpPolicy) -> u64 {
    if q.groups.is_empty() {
        return 1;
    }
    let public = q.groups.iter().try_fold(1u64, |n, g| {
        policy
            .public_keys
            .get(g)
            .map(|k| n.saturating_mul(k.len() as u64))
    });
    public.map_or(policy.max_groups, |p| p.min(policy.max_groups))
}

impl NoisePlan {
    /// Split `privacy` among the quantities and scale each one's noise to
    /// its sensitivity.
    pub fn new(
        q: &DpQuery,
        policy: &DpPolicy,
        privacy: &QueryPrivacy,
        raws: Vec<Raw>,
        public: Option<Vec<Vec<ScalarValue>>>,
    ) -> Result<Self> {
        let groups = groups_per_unit(q, policy);
        let rows = u128::from(policy.max_rows);
        let k = raws.len() as u32;
        let mut noises = Vec::with_capacity(raws.len());
        for r in &raws {
            let per_group = match r {
                Raw::Rows | Raw::NonNull(_) => rows,
                Raw::Sum(c) => {
                    let b = policy.columns.get(c).ok_or_else(|| {
                        VeilError::Internal(format!("no bounds for summed column '{c}'"))
                    })?;
                    rows.saturating_mul(b.magnitude().max(1))
                }
                Raw::Units => 1,
            };
            noises.push(privacy.noise(k, Sensitivity::bounded(groups, per_group)));
        }
        let threshold = match (&public, q.groups.is_empty()) {
            (None, false) => {
                let j = raws.iter().position(|r| *r == Raw::Units).ok_or_else(|| {
                    VeilError::Internal("private keys without a unit count".into())
                })?;
                let delta = privacy.selection_delta().ok_or_else(|| {
                    VeilError::Internal("private keys without δ reached release".into())
                })?;
                Some((j, noises[j].threshold(delta, groups)))
            }
            _ => None,
        };
        Ok(Self {
            raws,
            noises,
            threshold,
            public,
        })
    }
}

/// The exact value of quantity column `j` in row `i` (null: zero).
fn exact_at(batch: &RecordBatch, j: usize, i: usize) -> Result<i128> {
    let a = batch
        .column_by_name(&raw_column(j))
        .ok_or_else(|| VeilError::Internal(format!("exact column {j} missing")))?;
    if a.is_null(i) {
        return Ok(0);
    }
    match a.data_type() {
        DataType::Int64 => Ok(i128::from(a.as_primitive::<Int64Type>().value(i))),
        DataType::Decimal128(..) => Ok(a.as_primitive::<Decimal128Type>().value(i)),
        other => Err(VeilError::Internal(format!(
            "an exact quantity of type {other}"
        ))),
    }
}

fn noisy(exact: i128, noise: &Noise, rng: &mut (impl Rng + CryptoRng)) -> Result<i128> {
    let draw: BigInt = noise.sample(rng);
    to_i128(&draw)
        .and_then(|d| exact.checked_add(d))
        .ok_or_else(|| {
            VeilError::FailedPrecondition(
                "the noise this policy needs is too large to add; a governor should lower the column bounds or scale".into(),
            )
        })
}

/// A measure's answer from its group's noisy quantities, as a value of
/// `dt` (the type the aggregate has in SQL).
fn answer(
    m: &Measure,
    noisy_of: &dyn Fn(&Raw) -> Result<i128>,
    policy: &DpPolicy,
    dt: &DataType,
) -> Result<ScalarValue> {
    let count = |r: Raw| -> Result<ScalarValue> {
        Ok(ScalarValue::Int64(Some(
            noisy_of(&r)?.clamp(0, i128::from(i64::MAX)) as i64,
        )))
    };
    let value = match m {
        Measure::CountRows => count(Raw::Rows)?,
        Measure::Count(c) => count(Raw::NonNull(c.clone()))?,
        Measure::CountUnits => count(Raw::Units)?,
        Measure::Sum(c) => {
            let b = policy.columns[c];
            let s = noisy_of(&Raw::Sum(c.clone()))?;
            ScalarValue::Float64(Some(s as f64 / f64::from(b.scale)))
        }
        Measure::Avg(c) => {
            let b = policy.columns[c];
            let s = noisy_of(&Raw::Sum(c.clone()))?;
            let n = noisy_of(&Raw::NonNull(c.clone()))?.max(1);
            let mean = (s as f64 / n as f64).clamp(b.lower as f64, b.upper as f64);
            ScalarValue::Float64(Some(mean / f64::from(b.scale)))
        }
    };
    let value = match (&value, dt) {
        // Integers from a float: round, not truncate.
        (ScalarValue::Float64(Some(x)), t) if t.is_integer() => {
            ScalarValue::Float64(Some(x.round()))
        }
        _ => value,
    };
    value
        .cast_to(dt)
        .map_err(|e| VeilError::internal(&format!("an answer as {dt}"), e))
}

/// The released answer: group keys then measures, typed as `out` (the
/// aggregate's output, fields `c0..`).
pub fn release(
    exact: &RecordBatch,
    q: &DpQuery,
    plan: &NoisePlan,
    out: &SchemaRef,
    rng: &mut (impl Rng + CryptoRng),
) -> Result<RecordBatch> {
    let policy = &q.guard.rule().policy;
    let groups = q.groups.len();
    let key_types: Vec<DataType> = (0..groups)
        .map(|i| out.field(i).data_type().clone())
        .collect();
    let measure_types: Vec<DataType> = (groups..out.fields().len())
        .map(|i| out.field(i).data_type().clone())
        .collect();
    let key_of = |i: usize| -> Result<Vec<ScalarValue>> {
        (0..groups)
            .map(|g| {
                let a = exact.column_by_name(&group_column(g)).ok_or_else(|| {
                    VeilError::Internal(format!("exact group column {g} missing"))
                })?;
                ScalarValue::try_from_array(a, i)
                    .map_err(|e| VeilError::internal("reading a group key", e))
            })
            .collect()
    };
    // The rows to answer: (group key, exact row if any).
    let rows: Vec<(Vec<ScalarValue>, Option<usize>)> = match &plan.public {
        Some(combos) => {
            let mut at = HashMap::new();
            for i in 0..exact.num_rows() {
                at.insert(key_of(i)?, i);
            }
            combos
                .iter()
                .map(|k| (k.clone(), at.get(k).copied()))
                .collect()
        }
        None if groups == 0 => vec![(vec![], (exact.num_rows() > 0).then_some(0))],
        None => (0..exact.num_rows())
            .map(|i| Ok((key_of(i)?, Some(i))))
            .collect::<Result<_>>()?,
    };
    let mut keys: Vec<Vec<ScalarValue>> = vec![Vec::new(); groups];
    let mut values: Vec<Vec<ScalarValue>> = vec![Vec::new(); q.measures.len()];
    for (key, row) in rows {
        let exact_of = |j: usize| -> Result<i128> {
            match row {
                Some(i) => exact_at(exact, j, i),
                None => Ok(0),
            }
        };
        let mut drawn: Vec<Option<i128>> = vec![None; plan.raws.len()];
        if let Some((j, tau)) = plan.threshold {
            let units = noisy(exact_of(j)?, &plan.noises[j], rng)?;
            if units < i128::from(tau) {
                continue;
            }
            drawn[j] = Some(units);
        }
        // Every quantity of a released group is drawn once.
        for (j, slot) in drawn.iter_mut().enumerate() {
            if slot.is_none() {
                *slot = Some(noisy(exact_of(j)?, &plan.noises[j], rng)?);
            }
        }
        let noisy_of = |r: &Raw| -> Result<i128> {
            let j = plan
                .raws
                .iter()
                .position(|x| x == r)
                .ok_or_else(|| VeilError::Internal(format!("quantity {r:?} not measured")))?;
            drawn[j].ok_or_else(|| VeilError::Internal("a quantity was not drawn".into()))
        };
        for (g, k) in key.into_iter().enumerate() {
            keys[g].push(k);
        }
        for (m, measure) in q.measures.iter().enumerate() {
            values[m].push(answer(measure, &noisy_of, policy, &measure_types[m])?);
        }
    }
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(out.fields().len());
    for (g, list) in keys.into_iter().enumerate() {
        columns.push(array_of(list, &key_types[g])?);
    }
    for (m, list) in values.into_iter().enumerate() {
        columns.push(array_of(list, &measure_types[m])?);
    }
    RecordBatch::try_new(Arc::clone(out), columns)
        .map_err(|e| VeilError::internal("assembling an answer", e))
}

fn array_of(values: Vec<ScalarValue>, dt: &DataType) -> Result<ArrayRef> {
    if values.is_empty() {
        return Ok(datafusion::arrow::array::new_empty_array(dt));
    }
    let values: Vec<ScalarValue> = values
        .into_iter()
        .map(|v| v.cast_to(dt))
        .collect::<datafusion::common::Result<_>>()
        .map_err(|e| VeilError::internal("an answer column", e))?;
    ScalarValue::iter_to_array(values).map_err(|e| VeilError::internal("an answer column", e))
}
