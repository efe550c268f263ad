//! Masks: what replaces a masked column. [`mask_expr`] builds the
//! expression for a column's mask, refusing one its type does not support
//! ([`mask_output_type`]); keyed masks run with one dataset's keys
//! ([`MaskKeys`]) or are only described, to type a view's output
//! ([`MaskFunctions`]). Null and constant masks are typed literals, regex
//! masks [`regex_replace::MaskRegex`] (DataFusion's `regexp_replace`, the
//! pattern compiled once per plan).
//!
//! One module per mechanism: `hash` (the keyed hash and its byte
//! encoding), `reversible` (AES-SIV tokens, and the column cipher of both
//! reversible masks), `format_preserving` (over the FF1 cipher in `ff1`),
//! `rounding`, `kanon` (k-anonymization, an operator over whole groups)
//! and `sampling` (a stable sample of rows, keyed like the hash).

#[cfg(test)]
mod crypto_vectors;
pub mod ff1;
pub mod format_preserving;
pub mod hash;
pub mod kanon;
pub mod regex_replace;
pub mod reversible;
pub mod rounding;
pub mod sampling;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use std::sync::Arc;

use crate::error::{Result, VeilError};
use crate::model::policy::MaskSpec;
use crate::secrets::{KeyPurpose, MasterKey};
use hash::MaskHash;
use reversible::{MaskCipher, reversible_supports};

/// Apply a one-argument, array-at-a-time mask function to a call's argument
/// (an array, or a scalar treated as an array of one).
fn invoke_unary(
    name: &str,
    args: ScalarFunctionArgs,
    f: impl Fn(&ArrayRef) -> datafusion::common::Result<ArrayRef>,
) -> datafusion::common::Result<ColumnarValue> {
    let [arg] = args.args.as_slice() else {
        return Err(DataFusionError::Internal(format!(
            "{name} takes one argument"
        )));
    };
    match arg {
        ColumnarValue::Array(a) => Ok(ColumnarValue::Array(f(a)?)),
        ColumnarValue::Scalar(s) => {
            let out = f(&s.to_array_of_size(1)?)?;
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
        }
    }
}

/// The type a column has once `mask` applies, or `FailedPrecondition` if
/// the mask does not support the column's type (or would change nothing).
pub fn mask_output_type(mask: &MaskSpec, dt: &DataType) -> Result<DataType> {
    let refuse = |why: String| Err(VeilError::FailedPrecondition(why));
    match mask {
        MaskSpec::Hash => {
            if MaskHash::supports(dt) {
                Ok(DataType::Utf8)
            } else {
                refuse(format!(
                    "a hash mask cannot apply to a column of type {dt}; change the policy"
                ))
            }
        }
        MaskSpec::Reversible => {
            if reversible_supports(dt) {
                Ok(DataType::Utf8)
            } else {
                refuse(format!(
                    "a reversible mask cannot apply to a column of type {dt}; use a hash or null"
                ))
            }
        }
        MaskSpec::FormatPreserving => match dt {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ok(dt.clone()),
            _ => refuse(format!(
                "format-preserving masking applies to text columns, not to a column of type {dt}; use a reversible mask (it accepts numbers and dates)"
            )),
        },
        MaskSpec::Null => ScalarValue::try_new_null(dt)
            .map(|_| dt.clone())
            .map_err(|_| {
                VeilError::FailedPrecondition(format!(
                    "a null mask cannot apply to a column of type {dt}"
                ))
            }),
        MaskSpec::Constant(v) => constant_value(v, dt).map(|_| dt.clone()),
        MaskSpec::Regex(_) => match dt {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ok(dt.clone()),
            _ => refuse(format!(
                "a regex mask applies to text columns, not to a column of type {dt}; use rounding, hashing or a constant"
            )),
        },
        MaskSpec::Round(r) => rounding::check(r, dt).map(|_| dt.clone()),
        MaskSpec::KAnonymity(_) => {
            if kanon::supports(dt) {
                Ok(dt.clone())
            } else {
                refuse(format!(
                    "k-anonymization cannot count values of type {dt}; choose other columns"
                ))
            }
        }
    }
}

/// The keys keyed masks (hash, reversible, format-preserving) run with: one
/// dataset's, derived from the real master key. Only reads build them;
/// describing a view's output needs none (see [`MaskFunctions`]).
#[derive(Debug)]
pub struct MaskKeys {
    hash: Arc<ScalarUDF>,
    master: MasterKey,
    dataset_id: String,
}

impl MaskKeys {
    pub fn new(master: &MasterKey, dataset_id: &str) -> Self {
        Self {
            hash: Arc::new(ScalarUDF::new_from_impl(MaskHash::new(
                master.derive(KeyPurpose::HashMask { dataset_id }),
            ))),
            master: master.clone(),
            dataset_id: dataset_id.to_string(),
        }
    }

    fn cipher(&self, column: &str, format_preserving: bool) -> Arc<ScalarUDF> {
        let key = if format_preserving {
            self.master.derive(KeyPurpose::FormatPreserving {
                dataset_id: &self.dataset_id,
                column,
            })
        } else {
            self.master.derive(KeyPurpose::Reversible {
                dataset_id: &self.dataset_id,
                column,
            })
        };
        Arc::new(ScalarUDF::new_from_impl(MaskCipher::new(
            key,
            &self.dataset_id,
            column,
            format_preserving,
        )))
    }
}

/// What the keyed masks of an expression become: functions holding the
/// dataset's keys (a read), or keyless descriptions of their output (a
/// listing's or explain's schema). Describing takes no key at all, so no
/// code path makes one up to type a view.
#[derive(Debug, Clone, Copy)]
pub enum MaskFunctions<'a> {
    /// The functions that mask data, with these keys.
    Keyed(&'a MaskKeys),
    /// Calls that only carry the output type: typed, never run.
    Described,
}

impl MaskFunctions<'_> {
    fn hash(self) -> Arc<ScalarUDF> {
        match self {
            Self::Keyed(keys) => Arc::clone(&keys.hash),
            Self::Described => DescribedMask::udf("veil_mask_hash"),
        }
    }

    fn cipher(self, column: &str, format_preserving: bool) -> Arc<ScalarUDF> {
        match self {
            Self::Keyed(keys) => keys.cipher(column, format_preserving),
            Self::Described if format_preserving => DescribedMask::udf("veil_mask_fpe"),
            Self::Described => DescribedMask::udf("veil_mask_reversible"),
        }
    }
}

/// A keyed mask's call as a description: the real function's name,
/// signature and return type (so typing an expression with it gives what
/// the keyed one plans, a test pins that), and no key. Running it fails:
/// a described expression that reached execution serves nothing.
#[derive(Debug, PartialEq, Eq, Hash)]
struct DescribedMask {
    name: &'static str,
    signature: Signature,
}

impl DescribedMask {
    fn udf(name: &'static str) -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(Self {
            name,
            signature: Signature::any(1, Volatility::Immutable),
        }))
    }
}

impl ScalarUDFImpl for DescribedMask {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        _args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        Err(DataFusionError::Internal(format!(
            "{} was described for typing only and cannot mask data",
            self.name
        )))
    }
}

/// The expression that replaces `column` (named `name`, of type `dt`) under
/// `mask`. Refuses, with `FailedPrecondition`, a mask the type does not
/// support. With [`MaskFunctions::Described`] the expression can be typed
/// but not run.
pub fn mask_expr(
    mask: &MaskSpec,
    column: Expr,
    name: &str,
    dt: &DataType,
    functions: MaskFunctions<'_>,
) -> Result<Expr> {
    mask_output_type(mask, dt)?;
    match mask {
        MaskSpec::Hash => Ok(Expr::ScalarFunction(ScalarFunction::new_udf(
            functions.hash(),
            vec![column],
        ))),
        MaskSpec::Reversible => Ok(Expr::ScalarFunction(ScalarFunction::new_udf(
            functions.cipher(name, false),
            vec![column],
        ))),
        MaskSpec::FormatPreserving => Ok(datafusion::logical_expr::cast(
            Expr::ScalarFunction(ScalarFunction::new_udf(
                functions.cipher(name, true),
                vec![column],
            )),
            dt.clone(),
        )),
        MaskSpec::Null => Ok(Expr::Literal(
            ScalarValue::try_new_null(dt)
                .map_err(|e| VeilError::FailedPrecondition(e.to_string()))?,
            None,
        )),
        MaskSpec::Constant(v) => Ok(Expr::Literal(constant_value(v, dt)?, None)),
        MaskSpec::Regex(r) => Ok(datafusion::logical_expr::cast(
            Expr::ScalarFunction(ScalarFunction::new_udf(
                Arc::new(ScalarUDF::new_from_impl(regex_replace::MaskRegex::new(
                    &r.pattern,
                    &r.replacement,
                )?)),
                vec![column],
            )),
            dt.clone(),
        )),
        MaskSpec::Round(r) => rounding::round_expr(r, column, dt),
        // Applied by the k-anonymization operator over whole groups.
        MaskSpec::KAnonymity(_) => Err(VeilError::Internal(
            "k-anonymization is not a per-column expression".into(),
        )),
    }
}

/// The constant of a constant mask, as a value of the column's type.
pub fn constant_value(v: &serde_json::Value, dt: &DataType) -> Result<ScalarValue> {
    let text = match v {
        serde_json::Value::Null => {
            return ScalarValue::try_new_null(dt)
                .map_err(|e| VeilError::FailedPrecondition(e.to_string()));
        }
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::Bool(b) => b.to_string(),
        _ => {
            return Err(VeilError::FailedPrecondition(
                "a constant mask's value must be a string, number, boolean or null".into(),
            ));
        }
    };
    ScalarValue::Utf8(Some(text)).cast_to(dt).map_err(|_| {
        VeilError::FailedPrecondition(format!(
            "the constant mask's value does not fit the column's type {dt}; change the policy"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_types_are_refused_at_compile_time() {
        let keys = MaskFunctions::Described;
        let x = || datafusion::prelude::col("x");
        let list = DataType::new_list(DataType::Int32, true);
        for mask in [
            MaskSpec::Hash,
            MaskSpec::Reversible,
            MaskSpec::FormatPreserving,
        ] {
            assert!(matches!(
                mask_expr(&mask, x(), "x", &list, keys),
                Err(VeilError::FailedPrecondition(_))
            ));
        }
        assert!(matches!(
            mask_expr(
                &MaskSpec::FormatPreserving,
                x(),
                "x",
                &DataType::Int64,
                keys
            ),
            Err(VeilError::FailedPrecondition(_))
        ));
        assert!(matches!(
            mask_expr(&MaskSpec::Reversible, x(), "x", &DataType::Binary, keys),
            Err(VeilError::FailedPrecondition(_))
        ));
        assert!(matches!(
            mask_expr(
                &MaskSpec::Constant("abc".into()),
                x(),
                "x",
                &DataType::Int64,
                keys
            ),
            Err(VeilError::FailedPrecondition(_))
        ));
        assert!(
            mask_expr(
                &MaskSpec::Constant(0.into()),
                x(),
                "x",
                &DataType::Int64,
                keys
            )
            .is_ok()
        );
    }

    /// A described mask types exactly like the keyed one (type and
    /// nullability), and cannot run: describing needs no key and can't mask.
    #[test]
    fn described_masks_type_like_keyed_ones_and_never_run() {
        use datafusion::common::DFSchema;
        use datafusion::logical_expr::ExprSchemable;
        let keys = MaskKeys::new(&crate::secrets::MasterKey::from_bytes([4; 32]), "d");
        for (dt, nullable) in [
            (DataType::Utf8, true),
            (DataType::Utf8, false),
            (DataType::Int64, false),
            (DataType::Date32, true),
        ] {
            let schema = DFSchema::try_from(datafusion::arrow::datatypes::Schema::new(vec![
                datafusion::arrow::datatypes::Field::new("x", dt.clone(), nullable),
            ]))
            .unwrap();
            for mask in [
                MaskSpec::Hash,
                MaskSpec::Reversible,
                MaskSpec::FormatPreserving,
            ] {
                let x = datafusion::prelude::col("x");
                let keyed = mask_expr(&mask, x.clone(), "x", &dt, MaskFunctions::Keyed(&keys));
                let described = mask_expr(&mask, x, "x", &dt, MaskFunctions::Described);
                let (keyed, described) = match (keyed, described) {
                    (Ok(k), Ok(d)) => (k, d),
                    (Err(_), Err(_)) => continue,
                    other => panic!("{mask:?} on {dt}: {other:?}"),
                };
                assert_eq!(
                    keyed.get_type(&schema).unwrap(),
                    described.get_type(&schema).unwrap(),
                    "{mask:?} on {dt}"
                );
                assert_eq!(
                    keyed.nullable(&schema).unwrap(),
                    described.nullable(&schema).unwrap(),
                    "{mask:?} on {dt}"
                );
            }
        }
        let udf = MaskFunctions::Described.hash();
        let arg = Arc::new(datafusion::arrow::datatypes::Field::new(
            "x",
            DataType::Utf8,
            true,
        ));
        let out = udf.invoke_with_args(ScalarFunctionArgs {
            args: vec![ColumnarValue::Scalar(ScalarValue::Utf8(Some("v".into())))],
            arg_fields: vec![arg],
            number_rows: 1,
            return_field: Arc::new(datafusion::arrow::datatypes::Field::new(
                "h",
                DataType::Utf8,
                true,
            )),
            config_options: Arc::new(Default::default()),
        });
        assert!(out.is_err(), "a described mask must not run");
    }
}
