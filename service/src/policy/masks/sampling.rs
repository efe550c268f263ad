//! Minimization: a stable X% sample of a dataset's rows.
//!
//! A row is kept when the keyed hash of its row key falls below
//! `percent / 100` of the hash space. The key is derived per dataset
//! ([`KeyPurpose::Sample`](crate::secrets::KeyPurpose::Sample)), so:
//! * every user sees the same rows (the decision depends only on the row);
//! * appending rows never changes the decision for existing ones;
//! * samples nest: a 10% sample is inside the 20% sample on the same key;
//! * nobody can predict which rows are kept without the key.
//!
//! The row key's values are encoded as the keyed hash mask encodes them
//! (see [`super::hash`]); a composite key (several tagged columns)
//! length-prefixes each value. A row whose key has a null is left out.
//! Like the hash mask, the UDF is never registered in a session.

use datafusion::arrow::array::{ArrayRef, BooleanBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::sync::Arc;

use super::hash::{MaskHash, for_each_value_bytes};
use crate::secrets::SecretKey;

/// The share of the 64-bit hash space a `percent` sample keeps.
pub fn threshold(percent: f64) -> u64 {
    let share = (percent / 100.0).clamp(0.0, 1.0);
    let t = share * 18_446_744_073_709_551_616.0; // 2^64
    if t >= u64::MAX as f64 {
        u64::MAX
    } else {
        t as u64
    }
}

/// Can `dt` be a sampling row key?
pub fn supports(dt: &DataType) -> bool {
    MaskHash::supports(dt) && !matches!(dt, DataType::Null)
}

/// `veil_sample(key, ...)`: true for the rows a sample keeps.
#[derive(PartialEq, Eq, Hash)]
pub struct SampleUdf {
    key: SecretKey,
    threshold: u64,
    signature: Signature,
}

impl fmt::Debug for SampleUdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SampleUdf(<keyed>, threshold={})", self.threshold)
    }
}

impl SampleUdf {
    pub fn new(key: SecretKey, percent: f64) -> Self {
        Self {
            key,
            threshold: threshold(percent),
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }

    /// The predicate keeping the sample, over the row-key columns.
    pub fn predicate(self, keys: Vec<Expr>) -> Expr {
        Expr::ScalarFunction(ScalarFunction::new_udf(
            Arc::new(ScalarUDF::new_from_impl(self)),
            keys,
        ))
    }

    /// Which rows of these key columns are kept.
    pub fn keep(&self, columns: &[ArrayRef]) -> datafusion::common::Result<Vec<bool>> {
        let n = columns.first().map_or(0, |c| c.len());
        let base = Hmac::<Sha256>::new_from_slice(self.key.bytes()).expect("any key length");
        let mut macs: Vec<Option<Hmac<Sha256>>> = vec![Some(base); n];
        let composite = columns.len() > 1;
        for column in columns {
            let mut row = 0;
            for_each_value_bytes(column, |bytes| {
                let slot = &mut macs[row];
                row += 1;
                match (bytes, slot.as_mut()) {
                    (None, _) => *slot = None,
                    (Some(b), Some(mac)) => {
                        if composite {
                            mac.update(&(b.len() as u64).to_be_bytes());
                        }
                        mac.update(b);
                    }
                    (Some(_), None) => {}
                }
            })?;
        }
        Ok(macs
            .into_iter()
            .map(|m| {
                m.is_some_and(|m| {
                    let tag = m.finalize().into_bytes();
                    let h = u64::from_be_bytes(tag[..8].try_into().expect("8 bytes"));
                    h < self.threshold
                })
            })
            .collect())
    }
}

impl ScalarUDFImpl for SampleUdf {
    fn name(&self) -> &str {
        "veil_sample"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        if args.args.is_empty() {
            return Err(DataFusionError::Internal(
                "veil_sample needs a row key".into(),
            ));
        }
        let rows = args.number_rows;
        let arrays = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<datafusion::common::Result<Vec<_>>>()?;
        let keep = self.keep(&arrays)?;
        let mut out = BooleanBuilder::with_capacity(keep.len());
        keep.into_iter().for_each(|k| out.append_value(k));
        let array: ArrayRef = Arc::new(out.finish());
        if args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)))
        {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                &array, 0,
            )?));
        }
        Ok(ColumnarValue::Array(array))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::{KeyPurpose, MasterKey};
    use datafusion::arrow::array::{Int64Array, StringArray};

    fn udf(dataset: &str, percent: f64) -> SampleUdf {
        SampleUdf::new(
            MasterKey::from_bytes([7; 32]).derive(KeyPurpose::Sample {
                dataset_id: dataset,
            }),
            percent,
        )
    }

    fn ids(n: i64) -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(0..n))
    }

    #[test]
    fn keeps_about_the_requested_share() {
        let keep = udf("d", 10.0).keep(&[ids(100_000)]).unwrap();
        let kept = keep.iter().filter(|k| **k).count();
        assert!((9_000..11_000).contains(&kept), "kept {kept} of 100000");
    }

    #[test]
    fn samples_nest_and_depend_on_the_dataset_key() {
        let small = udf("d", 10.0).keep(&[ids(10_000)]).unwrap();
        let large = udf("d", 30.0).keep(&[ids(10_000)]).unwrap();
        assert!(small.iter().zip(&large).all(|(s, l)| !s || *l));
        let other = udf("e", 10.0).keep(&[ids(10_000)]).unwrap();
        assert_ne!(small, other);
    }

    #[test]
    fn appending_rows_keeps_earlier_decisions() {
        let before = udf("d", 25.0).keep(&[ids(1_000)]).unwrap();
        let after = udf("d", 25.0).keep(&[ids(2_000)]).unwrap();
        assert_eq!(before[..], after[..1_000]);
    }

    #[test]
    fn null_keys_are_left_out_and_composite_keys_are_unambiguous() {
        let a: ArrayRef = Arc::new(StringArray::from(vec![None, Some("ab"), Some("a")]));
        let b: ArrayRef = Arc::new(StringArray::from(vec![Some("x"), Some("c"), Some("bc")]));
        let all = udf("d", 99.999).keep(&[Arc::clone(&a), b]).unwrap();
        assert!(!all[0]);
        // ("ab","c") and ("a","bc") concatenate alike but hash apart.
        let u = udf("d", 50.0);
        let mut differ = false;
        for i in 0..64 {
            let x: ArrayRef = Arc::new(StringArray::from(vec![format!("ab{i}"), format!("a")]));
            let y: ArrayRef = Arc::new(StringArray::from(vec![format!("c"), format!("b{i}c")]));
            let k = u.keep(&[x, y]).unwrap();
            differ |= k[0] != k[1];
        }
        assert!(differ);
    }

    #[test]
    fn thresholds_cover_the_edges() {
        assert_eq!(threshold(0.0), 0);
        assert_eq!(threshold(100.0), u64::MAX);
        assert_eq!(threshold(50.0), 1 << 63);
    }
}
