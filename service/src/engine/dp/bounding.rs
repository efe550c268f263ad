//! The exact, contribution-bounded aggregates a DP answer adds noise to,
//! rebuilt from the accepted query ([`super::query::DpQuery`]) over the
//! principal's secure view (its masks and row policies below everything).
//!
//! 1. Rows: the user's `WHERE`, a known privacy unit, and (for public
//!    group keys) a declared key. Summed values are clamped per row to the
//!    policy's bounds and taken to fixed point (integers: no float sums).
//! 2. Per unit and group: row counts capped at `max_rows_per_unit`, sums
//!    clamped to `max_rows_per_unit × [min(0, lower), max(0, upper)]`: a
//!    unit moves one group's answer by at most that, whatever its number of
//!    rows. When every unit of the secure view has one row (checked once
//!    per version of the files, [`bounded_unique`]), steps 2 and 3 change
//!    nothing and are skipped.
//! 3. Per unit: at most `max_groups_per_unit` groups, kept in a keyed
//!    pseudo-random order (HMAC of the unit and the group, keyed per
//!    dataset), so which groups a unit keeps is fixed, unguessable and
//!    independent of the data.
//! 4. Per group: the sums of those bounded contributions, and how many
//!    units contributed.

use datafusion::arrow::array::{ArrayRef, UInt64Builder};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{DataFusionError, ScalarValue, TableReference};
use datafusion::dataframe::DataFrame;
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::{
    ColumnarValue, ExprFunctionExt, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility, cast, when,
};
use datafusion::prelude::{Expr, SessionContext, col, ident, lit};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::sync::Arc;

use super::query::{DpQuery, Measure};
use crate::engine::short_text_in::ShortTextKeys;
use crate::error::query::from_datafusion;
use crate::error::{Result, VeilError};
use crate::policy::differential_privacy::{Clamp, DpPolicy};
use crate::secrets::SecretKey;

/// A quantity measured per group before noise.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Raw {
    /// Rows (each unit's capped).
    Rows,
    /// Rows where the column is not null.
    NonNull(String),
    /// The column's fixed-point sum (each unit's clamped).
    Sum(String),
    /// Distinct units.
    Units,
}

/// The quantities a query's measures need, each once (`AVG(x)` and
/// `SUM(x)` share the sum); `Units` too when private group keys are
/// released by their noisy unit count.
pub fn raw_quantities(q: &DpQuery, private_keys: bool) -> Vec<Raw> {
    let mut out: Vec<Raw> = Vec::new();
    let mut add = |r: Raw| {
        if !out.contains(&r) {
            out.push(r);
        }
    };
    for m in &q.measures {
        match m {
            Measure::CountRows => add(Raw::Rows),
            Measure::Count(c) => add(Raw::NonNull(c.clone())),
            Measure::Sum(c) => add(Raw::Sum(c.clone())),
            Measure::Avg(c) => {
                add(Raw::Sum(c.clone()));
                add(Raw::NonNull(c.clone()));
            }
            Measure::CountUnits => add(Raw::Units),
        }
    }
    if private_keys {
        add(Raw::Units);
    }
    out
}

/// Names of the exact frame's columns: `__g{i}` per group, `__m{j}` per
/// raw quantity.
pub fn group_column(i: usize) -> String {
    format!("__g{i}")
}

pub fn raw_column(j: usize) -> String {
    format!("__m{j}")
}

fn df(e: datafusion::common::DataFusionError) -> VeilError {
    from_datafusion(e)
}

fn clamp_of<'a>(policy: &'a DpPolicy, c: &str) -> Result<&'a Clamp> {
    policy
        .columns
        .get(c)
        .ok_or_else(|| VeilError::Internal(format!("column '{c}' reached bounding without bounds")))
}

fn decimal(v: i128) -> Expr {
    lit(ScalarValue::Decimal128(Some(v), 38, 0))
}

/// `x` clamped to `[lo, hi]`, null staying null.
fn clamped(x: Expr, lo: Expr, hi: Expr) -> Result<Expr> {
    when(x.clone().lt(lo.clone()), lo)
        .when(x.clone().gt(hi.clone()), hi)
        .otherwise(x)
        .map_err(df)
}

/// The rows the exact aggregates of `q` count (step 1): `__u` the unit,
/// `__g*` group keys, `__x*` per-row values of `raws`.
pub async fn rows_frame(
    ctx: &SessionContext,
    table: TableReference,
    q: &DpQuery,
    raws: &[Raw],
) -> Result<DataFrame> {
    let policy = &q.guard.rule().policy;
    let schema = q.guard.view_schema();
    let mut f = ctx.table(table).await.map_err(df)?;
    if let Some(w) = &q.filter {
        f = f.filter(w.clone()).map_err(df)?;
    }
    let column_type = |g: &str| view_type(&schema, g);
    for g in &q.groups {
        if let Some(edges) = policy.buckets.get(g) {
            // Below the first edge: in no bucket.
            let first = cast(lit(edges[0]), column_type(g)?);
            f = f.filter(ident(g).gt_eq(first)).map_err(df)?;
        } else if policy.public_keys.contains_key(g) && !key_test_deferred(q, g, &schema)? {
            f = f
                .filter(public_key_test(ident(g), q, g, &schema)?)
                .map_err(df)?;
        }
    }
    // 1. Per row: unit, groups (a bucketed column as its bucket's edge),
    // and each quantity's per-row value.
    let mut row = vec![ident(&policy.unit).alias("__u")];
    let groups: Vec<String> = (0..q.groups.len()).map(group_column).collect();
    for (i, g) in q.groups.iter().enumerate() {
        let key = match policy.buckets.get(g) {
            None => ident(g),
            Some(edges) => {
                let dt = column_type(g)?;
                let edge = |e: f64| cast(lit(e), dt.clone());
                let mut rev = edges.iter().rev();
                let last = *rev.next().expect("validated: at least one edge");
                let mut case = when(ident(g).gt_eq(edge(last)), edge(last));
                for e in rev {
                    case = case.when(ident(g).gt_eq(edge(*e)), edge(*e));
                }
                case.end().map_err(df)?
            }
        };
        row.push(key.alias(&groups[i]));
    }
    for (j, r) in raws.iter().enumerate() {
        match r {
            // Counted where not null.
            Raw::NonNull(c) => row.push(ident(c).alias(format!("__x{j}"))),
            // Taken to fixed point where it is aggregated ([`fixed_point`]).
            Raw::Sum(c) => {
                let as_type = match column_type(c)? {
                    DataType::Int8
                    | DataType::Int16
                    | DataType::Int32
                    | DataType::Int64
                    | DataType::UInt8
                    | DataType::UInt16
                    | DataType::UInt32 => DataType::Int64,
                    _ => DataType::Float64,
                };
                row.push(cast(ident(c), as_type).alias(format!("__x{j}")));
            }
            Raw::Rows | Raw::Units => {}
        }
    }
    f.select(row).map_err(df)
}

/// The type of column `g` of the secure view.
fn view_type(schema: &datafusion::arrow::datatypes::Schema, g: &str) -> Result<DataType> {
    Ok(schema
        .field_with_name(g)
        .map_err(|_| VeilError::Internal(format!("column '{g}' vanished")))?
        .data_type()
        .clone())
}

/// Group key `name` (of column `g`) of `rows` in the secure view's
/// declared type: the exact aggregates may read a text column as views
/// ([`position_grouped`]), its answer has the type clients see.
fn as_declared(
    rows: &DataFrame,
    name: &str,
    g: &str,
    schema: &datafusion::arrow::datatypes::Schema,
) -> Result<Expr> {
    let declared = view_type(schema, g)?;
    let read = rows
        .schema()
        .field_with_unqualified_name(name)
        .map_err(df)?
        .data_type();
    Ok(match *read == declared {
        true => col(name),
        false => cast(col(name), declared),
    })
}

/// The group columns of `policy` that [`bounded_unique`] groups by their
/// public key's position ([`public_text_keys`]): their values are only
/// looked up, never copied into the answer, so the exact aggregates may
/// read them as views (`SourceTable::with_text_views`).
pub fn position_grouped(
    policy: &DpPolicy,
    schema: &datafusion::arrow::datatypes::Schema,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for g in policy.public_keys.keys() {
        if schema.field_with_name(g).is_ok() && public_text_keys(policy, g, schema)?.is_some() {
            out.push(g.clone());
        }
    }
    Ok(out)
}

/// `x IN (the public keys of group column g)`. A few short text keys are
/// compared cheaply (`engine::short_text_in`).
fn public_key_test(
    x: Expr,
    q: &DpQuery,
    g: &str,
    schema: &datafusion::arrow::datatypes::Schema,
) -> Result<Expr> {
    let policy = &q.guard.rule().policy;
    let keys = policy
        .public_keys
        .get(g)
        .ok_or_else(|| VeilError::Internal(format!("column '{g}' has no public keys")))?;
    let dt = view_type(schema, g)?;
    let list = public_key_literals(g, keys, &dt)?
        .into_iter()
        .map(lit)
        .collect();
    Ok(x.in_list(list, false))
}

/// Whether the rows frame leaves group column `g`'s public-key test out
/// (it is applied by [`bounded`], and not needed by [`bounded_unique`]):
/// when every group column has public keys, only the public combinations
/// are released, so a row whose key is none of them may fall in a group
/// of its own that nobody sees, as long as no per-unit step counts it
/// (one row per unit: it adds to no other group). Only for keys grouped
/// by their position ([`public_text_keys`]), which tells keys from the
/// rest anyway: one slot-table lookup per row instead of two.
fn key_test_deferred(
    q: &DpQuery,
    g: &str,
    schema: &datafusion::arrow::datatypes::Schema,
) -> Result<bool> {
    let policy = &q.guard.rule().policy;
    let all_public = q.groups.iter().all(|g| policy.public_keys.contains_key(g));
    Ok(all_public && public_text_keys(policy, g, schema)?.is_some())
}

/// Quantity `j`'s per-row value (`__x{j}`, an `Int64` or `Float64`) in
/// fixed point, as an `Int64` (`narrow`) or a `Decimal128(38, 0)`.
fn fixed_point(policy: &DpPolicy, c: &str, j: usize, narrow: bool) -> Result<Expr> {
    let b = clamp_of(policy, c)?;
    Ok(DpFixed::udf(*b, narrow).call(vec![col(format!("__x{j}"))]))
}

/// Rows whose privacy unit is known.
fn with_unit(rows: DataFrame) -> Result<DataFrame> {
    rows.filter(col("__u").is_not_null()).map_err(df)
}

/// The exact bounded aggregates (steps 2 to 4) of `rows` ([`rows_frame`]):
/// `__g*` group keys then `__m*` per quantity of `raws`. With `part =
/// (n, k)`, only the units whose hash is `k` modulo `n`: every unit falls
/// in exactly one part, so the parts' aggregates add up to the whole
/// (what bounds memory when a dataset has more units than a query may
/// hold at once).
pub fn bounded(
    rows: DataFrame,
    q: &DpQuery,
    raws: &[Raw],
    rank: Arc<ScalarUDF>,
    part: Option<(u64, u64)>,
) -> Result<DataFrame> {
    let policy = &q.guard.rule().policy;
    let groups: Vec<String> = (0..q.groups.len()).map(group_column).collect();
    let mut f = with_unit(rows)?;
    let schema = q.guard.view_schema();
    // Rows whose key is no public key count toward no unit's groups.
    for (g, name) in q.groups.iter().zip(&groups) {
        if key_test_deferred(q, g, &schema)? {
            f = f
                .filter(public_key_test(col(name), q, g, &schema)?)
                .map_err(df)?;
        }
    }
    // Keys read as views are ranked and answered in their declared type
    // (cast after the key test: only the rows kept are copied).
    for (g, name) in q.groups.iter().zip(&groups) {
        let key = as_declared(&f, name, g, &schema)?;
        f = f.with_column(name, key).map_err(df)?;
    }
    if let Some((n, k)) = part {
        let hash = Expr::ScalarFunction(datafusion::logical_expr::expr::ScalarFunction::new_udf(
            DpPart::udf(),
            vec![col("__u")],
        ));
        f = f.filter((hash % lit(n)).eq(lit(k))).map_err(df)?;
    }
    // 2. Per unit and group: capped counts, clamped sums.
    let mut keys = vec![col("__u")];
    keys.extend(groups.iter().map(col));
    let mut per_unit = vec![count(lit(1i64)).alias("__n")];
    for (j, r) in raws.iter().enumerate() {
        let e = match r {
            Raw::NonNull(_) => count(col(format!("__x{j}"))),
            Raw::Sum(c) => sum(fixed_point(policy, c, j, false)?),
            Raw::Rows | Raw::Units => continue,
        };
        per_unit.push(e.alias(format!("__s{j}")));
    }
    f = f.aggregate(keys, per_unit).map_err(df)?;
    let rows_cap = policy.max_rows as i64;
    let mut bounded = vec![col("__u")];
    bounded.extend(groups.iter().map(col));
    for (j, r) in raws.iter().enumerate() {
        let name = format!("__c{j}");
        let e = match r {
            Raw::Rows => clamped(col("__n"), lit(0i64), lit(rows_cap))?,
            Raw::NonNull(_) => clamped(
                datafusion::prelude::coalesce(vec![col(format!("__s{j}")), lit(0i64)]),
                lit(0i64),
                lit(rows_cap),
            )?,
            Raw::Sum(c) => {
                let b = clamp_of(policy, c)?;
                // A unit's sum over at most `max_rows` rows in [lower,
                // upper]: within [min(0, C·lower), max(0, C·upper)] (a unit
                // with fewer rows is not pulled up to C·lower).
                let cap = i128::from(policy.max_rows);
                clamped(
                    datafusion::prelude::coalesce(vec![col(format!("__s{j}")), decimal(0)]),
                    decimal(cap * i128::from(b.lower.min(0))),
                    decimal(cap * i128::from(b.upper.max(0))),
                )?
            }
            Raw::Units => lit(1i64),
        };
        bounded.push(e.alias(name));
    }
    f = f.select(bounded).map_err(df)?;
    // 3. Per unit: at most `max_groups` groups, in keyed order.
    if !q.groups.is_empty() && public_combinations(q, policy) > policy.max_groups {
        let mut args = vec![col("__u")];
        args.extend(groups.iter().map(col));
        let order = Expr::ScalarFunction(datafusion::logical_expr::expr::ScalarFunction::new_udf(
            rank, args,
        ));
        let numbered = row_number()
            .partition_by(vec![col("__u")])
            .order_by(vec![order.sort(true, false)])
            .build()
            .map_err(df)?
            .alias("__rank");
        f = f.window(vec![numbered]).map_err(df)?;
        f = f
            .filter(col("__rank").lt_eq(lit(policy.max_groups)))
            .map_err(df)?;
    }
    // 4. Per group.
    let mut totals = Vec::new();
    for (j, r) in raws.iter().enumerate() {
        let e = match r {
            Raw::Units => count(lit(1i64)),
            _ => sum(col(format!("__c{j}"))),
        };
        totals.push(e.alias(raw_column(j)));
    }
    f.aggregate(groups.iter().map(col).collect(), totals)
        .map_err(df)
}

/// [`bounded`] when every unit has one row ([`UnitShape::unique`]): each
/// row is its unit's only contribution (counts 1, values clamped, one
/// group), so the per-unit steps change nothing and the aggregates are a
/// plain GROUP BY. Rows without a unit are left out only where the view
/// has some; sums are `Int64` where `rows_bound` rows at the policy's
/// largest magnitude can't come near overflowing one.
pub fn bounded_unique(
    rows: DataFrame,
    q: &DpQuery,
    raws: &[Raw],
    shape: UnitShape,
    rows_bound: Option<u64>,
) -> Result<DataFrame> {
    let policy = &q.guard.rule().policy;
    let groups: Vec<String> = (0..q.groups.len()).map(group_column).collect();
    let rows = match shape.null_units {
        true => with_unit(rows)?,
        false => rows,
    };
    // A text key with public keys is grouped by its key's position (a
    // small integer: no text hashed per row), then named again.
    let schema = q.guard.view_schema();
    let mut keys = Vec::with_capacity(groups.len());
    let mut named = Vec::with_capacity(groups.len() + raws.len());
    for (g, name) in q.groups.iter().zip(&groups) {
        match public_text_keys(policy, g, &schema)? {
            Some((position, value)) => {
                keys.push(position.call(vec![col(name)]).alias(name));
                named.push(value(col(name))?.alias(name));
            }
            None => {
                keys.push(col(name));
                named.push(as_declared(&rows, name, g, &schema)?.alias(name));
            }
        }
    }
    named.extend((0..raws.len()).map(|j| col(raw_column(j))));
    let mut totals = Vec::new();
    for (j, r) in raws.iter().enumerate() {
        let e = match r {
            Raw::Rows | Raw::Units => count(lit(1i64)),
            Raw::NonNull(_) => count(col(format!("__x{j}"))),
            Raw::Sum(c) => {
                // With room to spare (a factor 1024) for files that grew
                // between their footers' reading and this read.
                let b = clamp_of(policy, c)?;
                let narrow = rows_bound.is_some_and(|n| {
                    u128::from(n).saturating_mul(b.magnitude()) <= (i64::MAX >> 10) as u128
                });
                sum(fixed_point(policy, c, j, narrow)?)
            }
        };
        totals.push(e.alias(raw_column(j)));
    }
    rows.aggregate(keys, totals)
        .and_then(|f| f.select(named))
        .map_err(df)
}

/// For a group column whose policy lists public text keys that
/// [`ShortTextKeys`] takes: the function giving a value's key position,
/// and the expression naming a position's key again (in the column's
/// type). `None` for every other group column.
#[allow(clippy::type_complexity)]
fn public_text_keys(
    policy: &DpPolicy,
    g: &str,
    schema: &datafusion::arrow::datatypes::Schema,
) -> Result<Option<(ScalarUDF, impl Fn(Expr) -> Result<Expr>)>> {
    let Some(listed) = policy
        .public_keys
        .get(g)
        .filter(|_| !policy.buckets.contains_key(g))
    else {
        return Ok(None);
    };
    let dt = view_type(schema, g)?;
    if !matches!(
        dt,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    ) {
        return Ok(None);
    }
    let Some(texts) = listed
        .iter()
        .map(serde_json::Value::as_str)
        .collect::<Option<Vec<&str>>>()
    else {
        return Ok(None);
    };
    let Some(keys) = ShortTextKeys::new(texts).filter(|k| !k.distinct().is_empty()) else {
        return Ok(None);
    };
    let distinct = keys.distinct().to_vec();
    let value = move |position: Expr| -> Result<Expr> {
        let mut case = datafusion::logical_expr::case(position);
        for (i, k) in distinct.iter().enumerate() {
            case.when(lit(i as u8), lit(k.as_str()));
        }
        Ok(cast(case.end().map_err(df)?, dt.clone()))
    };
    Ok(Some((DpKeyPosition::udf(keys), value)))
}

/// A text's position among a policy's public keys ([`ShortTextKeys`]), as
/// a `UInt8`; null where the text is null or no key.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DpKeyPosition {
    keys: ShortTextKeys,
    signature: Signature,
}

impl DpKeyPosition {
    pub fn udf(keys: ShortTextKeys) -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            keys,
            signature: Signature::uniform(
                1,
                vec![DataType::Utf8, DataType::LargeUtf8, DataType::Utf8View],
                Volatility::Immutable,
            ),
        })
    }
}

impl ScalarUDFImpl for DpKeyPosition {
    fn name(&self) -> &str {
        "veil_dp_key_position"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::UInt8)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let [x] = args.args.as_slice() else {
            return Err(DataFusionError::Internal(
                "veil_dp_key_position takes one argument".into(),
            ));
        };
        let x = x.to_array(args.number_rows)?;
        Ok(ColumnarValue::Array(Arc::new(self.keys.positions(&x)?)))
    }
}

/// What a secure view's privacy units look like, in one version of its
/// files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnitShape {
    /// Every known unit has exactly one row.
    pub unique: bool,
    /// Some rows have no unit (null).
    pub null_units: bool,
}

/// The units of the secure view (`None`: the view has no rows with a
/// unit to tell).
pub async fn unit_shape(view: DataFrame, unit: &str) -> Result<Option<UnitShape>> {
    use datafusion::functions_aggregate::expr_fn::count_distinct;
    let batches = view
        .aggregate(
            vec![],
            vec![
                count(lit(1i64)).alias("rows"),
                count(ident(unit)).alias("n"),
                count_distinct(ident(unit)).alias("d"),
            ],
        )
        .map_err(df)?
        .collect()
        .await
        .map_err(df)?;
    let value = |name: &str| -> Option<i64> {
        let b = batches.first()?;
        let c = b.column_by_name(name)?;
        match ScalarValue::try_from_array(c, 0).ok()? {
            ScalarValue::Int64(Some(n)) => Some(n),
            _ => None,
        }
    };
    Ok(match (value("rows"), value("n"), value("d")) {
        (Some(rows), Some(n), Some(d)) if n > 0 => Some(UnitShape {
            unique: n == d,
            null_units: rows != n,
        }),
        _ => None,
    })
}

/// How many groups a unit could reach if every key is public (`u64::MAX`
/// when some key is private).
fn public_combinations(q: &DpQuery, policy: &DpPolicy) -> u64 {
    q.groups
        .iter()
        .fold(1u64, |n, g| match policy.public_keys.get(g) {
            Some(keys) => n.saturating_mul(keys.len() as u64),
            None => u64::MAX,
        })
}

/// A policy's public keys of column `g` as values of its type.
pub fn public_key_literals(
    g: &str,
    keys: &[serde_json::Value],
    dt: &DataType,
) -> Result<Vec<ScalarValue>> {
    keys.iter()
        .map(|k| {
            let v = match k {
                serde_json::Value::String(s) => ScalarValue::Utf8(Some(s.clone())),
                serde_json::Value::Bool(b) => ScalarValue::Boolean(Some(*b)),
                serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                    (Some(i), _) => ScalarValue::Int64(Some(i)),
                    (None, Some(u)) => ScalarValue::UInt64(Some(u)),
                    _ => ScalarValue::Float64(n.as_f64()),
                },
                _ => ScalarValue::Null,
            };
            v.cast_to(dt).map_err(|_| {
                VeilError::FailedPrecondition(format!(
                    "the differential privacy policy's public key {k} of '{g}' is not a value of the column's type {dt}; a governor must fix the policy"
                ))
            })
        })
        .collect()
}

/// A summed value per row in fixed point, in one pass: `x × scale`
/// clamped to the policy's bounds and rounded (half away from zero), as
/// an `Int64` (`narrow`: for sums that can't overflow one) or a
/// `Decimal128(38, 0)` (sums never overflow); null stays null (it adds
/// nothing). The same as casting, scaling, clamping, rounding and casting
/// again, without an array per step. An integer column is taken as
/// `Int64` and scaled exactly (saturating), with the same result as
/// through a float: a product beyond ±2^53, where the float is inexact,
/// is far outside the bounds (within ±2^52) either way.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DpFixed {
    clamp: Clamp,
    narrow: bool,
    signature: Signature,
}

impl DpFixed {
    pub fn udf(clamp: Clamp, narrow: bool) -> ScalarUDF {
        use datafusion::logical_expr::TypeSignature;
        ScalarUDF::new_from_impl(Self {
            clamp,
            narrow,
            signature: Signature::one_of(
                vec![
                    TypeSignature::Exact(vec![DataType::Float64]),
                    TypeSignature::Exact(vec![DataType::Int64]),
                ],
                Volatility::Immutable,
            ),
        })
    }

    fn float_bounds(&self) -> (f64, f64, f64) {
        let c = &self.clamp;
        (c.lower as f64, c.upper as f64, f64::from(c.scale))
    }

    fn integer_bounds(&self) -> (i64, i64, i64) {
        let c = &self.clamp;
        (c.lower, c.upper, i64::from(c.scale))
    }
}

/// One float value in fixed point. Comparisons are Arrow's total order
/// of floats (as the expressions it replaces compared): NaN is above every
/// number, so it clamps to the upper bound (a NaN with its sign bit set,
/// to the lower); infinities clamp to the bounds. No branch on the value's
/// fraction (a column of prices would mispredict it half the time).
#[inline(always)]
fn fixed_float(x: f64, lo: f64, hi: f64, scale: f64) -> i64 {
    use std::cmp::Ordering;
    let scaled = x * scale;
    let clamped = if scaled.total_cmp(&lo) == Ordering::Less {
        lo
    } else if scaled.total_cmp(&hi) == Ordering::Greater {
        hi
    } else {
        scaled
    };
    // Bounds are whole numbers within ±2^52, so the clamped value's whole
    // part is exact in an i64 and its fraction is exact too: rounding half
    // away from zero without a libm call.
    let whole = clamped as i64;
    let fraction = clamped - whole as f64;
    whole + i64::from(fraction >= 0.5) - i64::from(fraction <= -0.5)
}

impl ScalarUDFImpl for DpFixed {
    fn name(&self) -> &str {
        "veil_dp_fixed"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(match self.narrow {
            true => DataType::Int64,
            false => DataType::Decimal128(38, 0),
        })
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        use datafusion::arrow::array::AsArray;
        use datafusion::arrow::datatypes::{Float64Type, Int64Type};
        let [x] = args.args.as_slice() else {
            return Err(DataFusionError::Internal(
                "veil_dp_fixed takes one argument".into(),
            ));
        };
        let x = x.to_array(args.number_rows)?;
        match x.data_type() {
            DataType::Int64 => {
                let (lo, hi, scale) = self.integer_bounds();
                self.each(x.as_primitive::<Int64Type>(), move |v| {
                    v.saturating_mul(scale).clamp(lo, hi)
                })
            }
            DataType::Float64 => {
                let (lo, hi, scale) = self.float_bounds();
                self.each(x.as_primitive::<Float64Type>(), move |v| {
                    fixed_float(v, lo, hi, scale)
                })
            }
            other => Err(DataFusionError::Internal(format!(
                "veil_dp_fixed takes Float64 or Int64, not {other}"
            ))),
        }
    }
}

impl DpFixed {
    /// `fixed` of every slot (nulls keep their null bit; their value is
    /// unused), in one pass, as the return type.
    fn each<T: datafusion::arrow::datatypes::ArrowPrimitiveType>(
        &self,
        x: &datafusion::arrow::array::PrimitiveArray<T>,
        fixed: impl Fn(T::Native) -> i64,
    ) -> datafusion::common::Result<ColumnarValue> {
        use datafusion::arrow::datatypes::{Decimal128Type, Int64Type};
        if self.narrow {
            return Ok(ColumnarValue::Array(Arc::new(
                x.unary::<_, Int64Type>(fixed),
            )));
        }
        let wide = x
            .unary::<_, Decimal128Type>(|v| i128::from(fixed(v)))
            .with_precision_and_scale(38, 0)?;
        Ok(ColumnarValue::Array(Arc::new(wide)))
    }
}

/// The keyed order of a unit's groups: HMAC-SHA256 of the row (unit and
/// group keys, in Arrow's row format) under a per-dataset key.
#[derive(PartialEq, Eq, Hash)]
pub struct DpRank {
    key: SecretKey,
    signature: Signature,
}

impl fmt::Debug for DpRank {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DpRank(<keyed>)")
    }
}

impl DpRank {
    pub fn udf(key: SecretKey) -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(Self {
            key,
            signature: Signature::variadic_any(Volatility::Immutable),
        }))
    }
}

impl ScalarUDFImpl for DpRank {
    fn name(&self) -> &str {
        "veil_dp_rank"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::UInt64)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let keyed = <Hmac<Sha256> as Mac>::new_from_slice(self.key.bytes())
            .expect("HMAC takes a key of any length");
        row_hashes(args, |row| {
            let mut mac = keyed.clone();
            mac.update(row);
            let tag = mac.finalize().into_bytes();
            u64::from_be_bytes(tag[..8].try_into().expect("8 bytes"))
        })
    }
}

/// `hash` of each row of a function's arguments, in Arrow's row format
/// (one byte string per row whatever the types).
fn row_hashes(
    args: ScalarFunctionArgs,
    hash: impl Fn(&[u8]) -> u64,
) -> datafusion::common::Result<ColumnarValue> {
    let n = args.number_rows;
    let arrays: Vec<ArrayRef> = args
        .args
        .iter()
        .map(|a| a.to_array(n))
        .collect::<datafusion::common::Result<_>>()?;
    let fields = arrays
        .iter()
        .map(|a| SortField::new(a.data_type().clone()))
        .collect();
    let rows = RowConverter::new(fields)?.convert_columns(&arrays)?;
    let mut out = UInt64Builder::with_capacity(n);
    for r in rows.iter() {
        out.append_value(hash(r.as_ref()));
    }
    Ok(ColumnarValue::Array(Arc::new(out.finish())))
}

/// A unit's part, for aggregating in several passes: a fixed hash of the
/// unit (SipHash with fixed keys over Arrow's row format; it only splits
/// work, so it needn't be secret).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DpPart {
    signature: Signature,
}

impl DpPart {
    pub fn udf() -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(Self {
            signature: Signature::any(1, Volatility::Immutable),
        }))
    }
}

impl ScalarUDFImpl for DpPart {
    fn name(&self) -> &str {
        "veil_dp_part"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::UInt64)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        use std::hash::{Hash as _, Hasher as _};
        row_hashes(args, |row| {
            let mut h = std::hash::DefaultHasher::new();
            row.hash(&mut h);
            h.finish()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray, Decimal128Array, Float64Array, RecordBatch};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::logical_expr::try_cast;

    /// The fused fixed-point conversion gives exactly what the step-by-step
    /// expressions (cast, scale, clamp, round, cast) give in DataFusion,
    /// on halves, bounds, infinities, NaN, nulls and negative zero, as an
    /// `Int64` or a `Decimal128`; and an integer column, taken exactly,
    /// what those expressions give for it as a float (extremes included).
    #[tokio::test]
    async fn fixed_point_matches_the_expressions_it_replaces() {
        let mut xs: Vec<Option<f64>> = vec![
            None,
            Some(f64::NAN),
            Some(f64::INFINITY),
            Some(f64::NEG_INFINITY),
            Some(-0.0),
            Some(0.005),
            Some(0.015),
            Some(-0.005),
            Some(-2.675),
            Some(49.995),
            Some(50.0),
            Some(50.000001),
            Some(-50.0),
            Some(-50.5),
            Some(1e300),
            Some(f64::MIN_POSITIVE),
            Some(-f64::NAN),
        ];
        let mut ints: Vec<Option<i64>> = vec![
            None,
            Some(0),
            Some(i64::MIN),
            Some(i64::MAX),
            Some((1 << 53) + 1),
            Some(-(1 << 53) - 1),
            Some(-7),
            Some(-3),
            Some(5_000),
            Some(50),
            Some(51),
            Some(-51),
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            xs.push(Some((seed % 20_000_001) as f64 / 100_000.0 - 100.0));
            ints.push(Some((seed % 401) as i64 - 200));
        }
        let floats = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, true)])),
            vec![Arc::new(Float64Array::from(xs))],
        )
        .unwrap();
        let integers = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)])),
            vec![Arc::new(datafusion::arrow::array::Int64Array::from(ints))],
        )
        .unwrap();
        for clamp in [
            Clamp {
                lower: -5_000,
                upper: 5_000,
                scale: 100,
            },
            Clamp {
                lower: 0,
                upper: 100,
                scale: 1,
            },
            Clamp {
                lower: -7,
                upper: -3,
                scale: 3,
            },
        ] {
            for batch in [&floats, &integers] {
                let ctx = SessionContext::new();
                let frame = ctx.read_batch(batch.clone()).unwrap();
                let x = cast(col("x"), DataType::Float64);
                let scaled = x * lit(f64::from(clamp.scale));
                let fixed =
                    clamped(scaled, lit(clamp.lower as f64), lit(clamp.upper as f64)).unwrap();
                let rounded = datafusion::functions::math::expr_fn::round(vec![fixed]);
                let old = cast(
                    try_cast(rounded, DataType::Int64),
                    DataType::Decimal128(38, 0),
                );
                let wide = DpFixed::udf(clamp, false).call(vec![col("x")]);
                let narrow = DpFixed::udf(clamp, true).call(vec![col("x")]);
                let out = frame
                    .select(vec![
                        old.alias("old"),
                        wide.alias("wide"),
                        narrow.alias("narrow"),
                    ])
                    .unwrap()
                    .collect()
                    .await
                    .unwrap();
                for b in out {
                    let decimals = |i: usize| {
                        b.column(i)
                            .as_any()
                            .downcast_ref::<Decimal128Array>()
                            .unwrap()
                            .clone()
                    };
                    let (old, wide) = (decimals(0), decimals(1));
                    let narrow = b
                        .column(2)
                        .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
                    assert_eq!(wide.data_type(), &DataType::Decimal128(38, 0));
                    for i in 0..b.num_rows() {
                        let expected = (!old.is_null(i)).then(|| old.value(i));
                        let what = format!(
                            "row {i} of {:?} under {clamp:?}",
                            batch.column(0).data_type()
                        );
                        assert_eq!(
                            expected,
                            (!wide.is_null(i)).then(|| wide.value(i)),
                            "{what}"
                        );
                        assert_eq!(
                            expected,
                            (!narrow.is_null(i)).then(|| i128::from(narrow.value(i))),
                            "{what}"
                        );
                    }
                }
            }
        }
    }
}
