//! Rounding masks: less precision, same type.
//!
//! * `digits = n` rounds numbers half away from zero to `n` decimal places
//!   (negative `n`: to tens, hundreds, ...). Integers and decimals are
//!   rounded exactly, in integer arithmetic.
//! * `bucket = w` rounds numbers down to a multiple of `w`
//!   (`floor(x / w) * w`), so `37` with `w = 10` is `30`.
//! * `unit = "hour" | "day" | "month" | "year"` truncates dates and
//!   timestamps to the start of that unit (in the timestamp's time zone).
//!
//! A rounding that would change nothing for a type (integers to decimal
//! places, dates to hours) is refused when the policy is written: a mask
//! that masks nothing must not look like protection. A value whose rounded
//! form does not fit the column's type fails the read; it never passes raw.

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Decimal128Array, PrimitiveArray, PrimitiveBuilder,
};
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, TimeUnit as ArrowTimeUnit, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::common::{DataFusionError, exec_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, cast,
    lit,
};
use std::sync::Arc;

use crate::error::{Result, VeilError};
use crate::model::policy::{RoundSpec, TimeUnit};

fn refuse<T>(why: String) -> Result<T> {
    Err(VeilError::FailedPrecondition(why))
}

fn is_integer(dt: &DataType) -> bool {
    dt.is_integer()
}

/// Does `spec` round values of `dt` (and change something)?
pub fn check(spec: &RoundSpec, dt: &DataType) -> Result<()> {
    match (spec.digits, spec.bucket, spec.unit) {
        (_, _, Some(unit)) => match dt {
            DataType::Timestamp(..) => Ok(()),
            DataType::Date32 | DataType::Date64
                if matches!(unit, TimeUnit::Month | TimeUnit::Year) =>
            {
                Ok(())
            }
            DataType::Date32 | DataType::Date64 => refuse(format!(
                "a date has no time of day: rounding it to the {} changes nothing; round to month or year",
                unit.as_str()
            )),
            _ => refuse(format!(
                "rounding to a {} applies to dates and timestamps, not to a column of type {dt}",
                unit.as_str()
            )),
        },
        (Some(d), _, _) => match dt {
            dt if is_integer(dt) && d >= 0 => refuse(format!(
                "integers have no decimal places: rounding a {dt} column to {d} digits changes nothing; use negative digits (-2 rounds to hundreds) or a bucket"
            )),
            dt if is_integer(dt) => Ok(()),
            DataType::Float32 | DataType::Float64 if d > 15 => refuse(format!(
                "a floating-point column has no more than 15 significant decimal places; rounding to {d} changes nothing"
            )),
            DataType::Float32 | DataType::Float64 => Ok(()),
            DataType::Decimal128(_, s) if d >= i32::from(*s) => refuse(format!(
                "this {dt} column has {s} decimal places: rounding to {d} changes nothing"
            )),
            DataType::Decimal128(..) => Ok(()),
            _ => refuse(format!(
                "rounding to digits applies to numbers, not to a column of type {dt}"
            )),
        },
        (_, Some(w), _) => match dt {
            dt if is_integer(dt) && (w.fract() != 0.0 || w > 1e30) => refuse(format!(
                "an integer column is bucketed by a whole number, not {w}"
            )),
            dt if is_integer(dt) && w == 1.0 => {
                refuse("a bucket of 1 changes no integer; choose a wider bucket".into())
            }
            dt if is_integer(dt) => Ok(()),
            DataType::Float32 | DataType::Float64 | DataType::Decimal128(..) => Ok(()),
            _ => refuse(format!(
                "rounding to a bucket applies to numbers, not to a column of type {dt}"
            )),
        },
        _ => refuse("a rounding mask is exactly one of `digits`, `bucket` or `unit`".into()),
    }
}

/// The expression rounding `column` of type `dt`.
pub fn round_expr(spec: &RoundSpec, column: Expr, dt: &DataType) -> Result<Expr> {
    check(spec, dt)?;
    if let Some(unit) = spec.unit {
        let truncate = |e: Expr| datafusion::functions::expr_fn::date_trunc(lit(unit.as_str()), e);
        return Ok(match dt {
            // Seconds cover every date a Date32 can hold.
            DataType::Date32 | DataType::Date64 => cast(
                truncate(cast(
                    column,
                    DataType::Timestamp(ArrowTimeUnit::Second, None),
                )),
                dt.clone(),
            ),
            _ => cast(truncate(column), dt.clone()),
        });
    }
    let udf = ScalarUDF::new_from_impl(MaskRound {
        spec: spec.clone(),
        signature: Signature::any(1, Volatility::Immutable),
    });
    Ok(Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::new(udf),
        vec![column],
    )))
}

/// Numeric rounding. Never registered in a session: it exists only inside
/// secure views.
#[derive(Debug)]
struct MaskRound {
    spec: RoundSpec,
    signature: Signature,
}

impl PartialEq for MaskRound {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
}

impl Eq for MaskRound {}

impl std::hash::Hash for MaskRound {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.spec.digits.hash(state);
        self.spec.bucket.map(f64::to_bits).hash(state);
    }
}

fn pow10(n: u32) -> Option<i128> {
    10i128.checked_pow(n)
}

/// Round an integer-coded value (an integer, or a decimal's unscaled value
/// with `scale` places) as `spec` says; `None` if it does not fit.
fn round_scaled(v: i128, scale: i32, spec: &RoundSpec) -> Option<i128> {
    if let Some(d) = spec.digits {
        let drop = scale - d;
        if drop <= 0 {
            return Some(v);
        }
        let Some(p) = pow10(drop as u32) else {
            // Coarser than any representable value: everything rounds to 0.
            return Some(0);
        };
        let half = p / 2;
        let q = (v.unsigned_abs().checked_add(half as u128)? / p as u128) as i128;
        let r = q.checked_mul(p)?;
        return Some(if v < 0 { -r } else { r });
    }
    if let Some(w) = spec.bucket {
        let scaled = w * 10f64.powi(scale);
        if !(scaled.is_finite() && (1.0..1e37).contains(&scaled)) {
            return None;
        }
        let w = scaled.round() as i128;
        return v.div_euclid(w).checked_mul(w);
    }
    Some(v)
}

fn round_float(x: f64, spec: &RoundSpec) -> f64 {
    if !x.is_finite() {
        return x;
    }
    if let Some(d) = spec.digits {
        let p = 10f64.powi(d);
        let r = (x * p).round() / p;
        return if r.is_finite() { r } else { x };
    }
    if let Some(w) = spec.bucket {
        return (x / w).floor() * w;
    }
    x
}

fn ints<T>(a: &ArrayRef, spec: &RoundSpec) -> datafusion::common::Result<ArrayRef>
where
    T: ArrowPrimitiveType,
    T::Native: Into<i128> + TryFrom<i128>,
{
    let mut out = PrimitiveBuilder::<T>::with_capacity(a.len());
    for v in a.as_primitive::<T>().iter() {
        match v {
            None => out.append_null(),
            Some(x) => {
                match round_scaled(x.into(), 0, spec).and_then(|r| T::Native::try_from(r).ok()) {
                    Some(r) => out.append_value(r),
                    None => {
                        return exec_err!(
                            "a rounded value does not fit the column's type {}",
                            a.data_type()
                        );
                    }
                }
            }
        }
    }
    Ok(Arc::new(out.finish()))
}

fn round_array(a: &ArrayRef, spec: &RoundSpec) -> datafusion::common::Result<ArrayRef> {
    match a.data_type() {
        DataType::Int8 => ints::<Int8Type>(a, spec),
        DataType::Int16 => ints::<Int16Type>(a, spec),
        DataType::Int32 => ints::<Int32Type>(a, spec),
        DataType::Int64 => ints::<Int64Type>(a, spec),
        DataType::UInt8 => ints::<UInt8Type>(a, spec),
        DataType::UInt16 => ints::<UInt16Type>(a, spec),
        DataType::UInt32 => ints::<UInt32Type>(a, spec),
        DataType::UInt64 => ints::<UInt64Type>(a, spec),
        DataType::Float64 => {
            let r: PrimitiveArray<Float64Type> = a
                .as_primitive::<Float64Type>()
                .unary(|x| round_float(x, spec));
            Ok(Arc::new(r))
        }
        DataType::Float32 => {
            let r: PrimitiveArray<Float32Type> = a
                .as_primitive::<Float32Type>()
                .unary(|x| round_float(f64::from(x), spec) as f32);
            Ok(Arc::new(r))
        }
        DataType::Decimal128(p, s) => {
            let (p, s) = (*p, *s);
            let d = a.as_primitive::<datafusion::arrow::datatypes::Decimal128Type>();
            let mut out = Vec::with_capacity(d.len());
            for v in d.iter() {
                match v {
                    None => out.push(None),
                    Some(x) => match round_scaled(x, i32::from(s), spec) {
                        Some(r) => out.push(Some(r)),
                        None => return exec_err!("a rounded value does not fit the column's type"),
                    },
                }
            }
            let r = Decimal128Array::from(out).with_precision_and_scale(p, s)?;
            r.validate_decimal_precision(p).map_err(|_| {
                DataFusionError::Execution(format!(
                    "a rounded value does not fit the column's precision {p}"
                ))
            })?;
            Ok(Arc::new(r))
        }
        other => exec_err!("the rounding mask does not support type {other}"),
    }
}

impl ScalarUDFImpl for MaskRound {
    fn name(&self) -> &str {
        "veil_mask_round"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> datafusion::common::Result<DataType> {
        arg_types
            .first()
            .cloned()
            .ok_or_else(|| DataFusionError::Internal("veil_mask_round takes one argument".into()))
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        super::invoke_unary(self.name(), args, |a| round_array(a, &self.spec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, Int32Array, UInt8Array};
    use proptest::prelude::*;

    fn digits(d: i32) -> RoundSpec {
        RoundSpec {
            digits: Some(d),
            ..Default::default()
        }
    }

    fn bucket(w: f64) -> RoundSpec {
        RoundSpec {
            bucket: Some(w),
            ..Default::default()
        }
    }

    #[test]
    fn integers_round_half_away_from_zero_and_bucket_down() {
        let a: ArrayRef = Arc::new(Int32Array::from(vec![
            Some(150),
            Some(-150),
            Some(149),
            None,
        ]));
        let r = round_array(&a, &digits(-2)).unwrap();
        let r = r.as_primitive::<Int32Type>();
        assert_eq!(
            r.iter().collect::<Vec<_>>(),
            vec![Some(200), Some(-200), Some(100), None]
        );
        let a: ArrayRef = Arc::new(Int32Array::from(vec![37, -3]));
        let r = round_array(&a, &bucket(10.0)).unwrap();
        assert_eq!(
            r.as_primitive::<Int32Type>().values().to_vec(),
            vec![30, -10]
        );
    }

    #[test]
    fn overflow_fails_the_read_instead_of_passing_raw() {
        let a: ArrayRef = Arc::new(UInt8Array::from(vec![250u8]));
        assert!(round_array(&a, &digits(-2)).is_err());
    }

    #[test]
    fn floats_and_decimals_keep_their_type() {
        let a: ArrayRef = Arc::new(Float64Array::from(vec![38.8977, -77.0365]));
        let r = round_array(&a, &digits(1)).unwrap();
        assert_eq!(
            r.as_primitive::<Float64Type>().values().to_vec(),
            vec![38.9, -77.0]
        );
        let d: ArrayRef = Arc::new(
            Decimal128Array::from(vec![Some(12_345), Some(-12_355), None])
                .with_precision_and_scale(10, 3)
                .unwrap(),
        );
        let r = round_array(&d, &digits(1)).unwrap();
        assert_eq!(r.data_type(), &DataType::Decimal128(10, 3));
        let v: Vec<_> = r
            .as_primitive::<datafusion::arrow::datatypes::Decimal128Type>()
            .iter()
            .collect();
        assert_eq!(v, vec![Some(12_300), Some(-12_400), None]);
    }

    #[test]
    fn roundings_that_change_nothing_are_refused() {
        assert!(check(&digits(0), &DataType::Int64).is_err());
        assert!(check(&digits(3), &DataType::Decimal128(10, 2)).is_err());
        assert!(check(&bucket(2.5), &DataType::Int64).is_err());
        let day = RoundSpec {
            unit: Some(TimeUnit::Day),
            ..Default::default()
        };
        assert!(check(&day, &DataType::Date32).is_err());
        assert!(check(&day, &DataType::Utf8).is_err());
        assert!(check(&digits(-1), &DataType::Utf8).is_err());
        assert!(
            check(
                &day,
                &DataType::Timestamp(ArrowTimeUnit::Microsecond, Some("UTC".into()))
            )
            .is_ok()
        );
    }

    proptest! {
        #[test]
        fn integer_rounding_is_within_half_a_step_and_idempotent(x in -1_000_000i64..1_000_000, d in 1i32..6) {
            let p = 10i128.pow(d as u32);
            let r = round_scaled(x as i128, 0, &digits(-d)).unwrap();
            prop_assert!((r - x as i128).abs() * 2 <= p);
            prop_assert_eq!(r % p, 0);
            prop_assert_eq!(round_scaled(r, 0, &digits(-d)).unwrap(), r);
        }

        #[test]
        fn buckets_floor(x in -1_000_000i64..1_000_000, w in 2i64..1000) {
            let r = round_scaled(x as i128, 0, &bucket(w as f64)).unwrap();
            prop_assert!(r <= x as i128 && (x as i128) - r < w as i128);
            prop_assert_eq!(r.rem_euclid(w as i128), 0);
        }
    }
}
