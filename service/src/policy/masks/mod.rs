//! Mask expressions.
//!
//! The keyed hash is a UDF that is **never registered** in a session (DESIGN
//! invariant 3): users cannot call it to build a dictionary of hashes. Its key
//! lives inside the struct, never as a literal argument, so `EXPLAIN` and
//! error messages can't show it. Null and constant masks are typed literals.
//!
//! Hash byte encoding (documented contract, see README "Masks"):
//! * strings: their UTF-8 bytes; binary: the bytes;
//! * booleans: one byte, 0 or 1;
//! * integers of any width and signedness: the value as a 16-byte big-endian
//!   two's-complement i128, so `5_i32` and `5_u64` hash alike;
//! * floats: the f64 value's IEEE-754 bits, big-endian, with -0.0 as 0.0 and
//!   every NaN as the canonical NaN;
//! * dates, times, timestamps and decimals: their Arrow text form (ISO-8601
//!   for temporal values).
//!
//! The output is the first 16 bytes of HMAC-SHA256(key, bytes) in lowercase
//! hex (32 characters); nulls stay null.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type,
    UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::common::{DataFusionError, ScalarValue, exec_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::sync::Arc;

use crate::error::{Result, VeilError};
use crate::model::policy::MaskSpec;
use crate::secrets::{KeyPurpose, MasterKey, SecretKey};
use reversible::{FormatPreserving, SivTokens};

#[cfg(test)]
mod crypto_vectors;
pub mod kanon;
pub mod reversible;
pub mod rounding;
pub mod sampling;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Keyed hash mask for one dataset.
#[derive(PartialEq, Eq, Hash)]
pub struct MaskHash {
    key: SecretKey,
    signature: Signature,
}

impl fmt::Debug for MaskHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MaskHash(<keyed>)")
    }
}

impl MaskHash {
    pub fn new(key: SecretKey) -> Self {
        Self {
            key,
            signature: Signature::any(1, Volatility::Immutable),
        }
    }

    /// Types the hash accepts.
    pub fn supports(dt: &DataType) -> bool {
        dt.is_primitive()
            || matches!(
                dt,
                DataType::Utf8
                    | DataType::LargeUtf8
                    | DataType::Utf8View
                    | DataType::Binary
                    | DataType::LargeBinary
                    | DataType::BinaryView
                    | DataType::Boolean
                    | DataType::Null
            )
    }

    /// Hash every value of `array`.
    pub fn hash_array(&self, array: &ArrayRef) -> datafusion::common::Result<ArrayRef> {
        let base = Hmac::<Sha256>::new_from_slice(self.key.bytes()).expect("any key length");
        let n = array.len();
        let mut out = StringBuilder::with_capacity(n, n * 32);
        let mut buf = [0u8; 32];
        for_each_value_bytes(array, |bytes| match bytes {
            None => out.append_null(),
            Some(b) => {
                let tag = base.clone().chain_update(b).finalize().into_bytes();
                for (i, byte) in tag[..16].iter().enumerate() {
                    buf[2 * i] = HEX[(byte >> 4) as usize];
                    buf[2 * i + 1] = HEX[(byte & 15) as usize];
                }
                // Only hex digits were written.
                out.append_value(std::str::from_utf8(&buf).expect("hex is ASCII"));
            }
        })?;
        Ok(Arc::new(out.finish()))
    }
}

/// Call `emit` with the documented byte encoding of every value of
/// `array` (see the module documentation), `None` for nulls. Shared by the
/// keyed hash mask and the sampling hash.
pub(super) fn for_each_value_bytes(
    array: &ArrayRef,
    mut emit: impl FnMut(Option<&[u8]>),
) -> datafusion::common::Result<()> {
    let n = array.len();
    macro_rules! ints {
        ($t:ty) => {{
            for v in array.as_primitive::<$t>().iter() {
                emit(
                    v.map(|x| (x as i128).to_be_bytes())
                        .as_ref()
                        .map(|b| &b[..]),
                );
            }
        }};
    }
    macro_rules! floats {
        ($t:ty) => {{
            for v in array.as_primitive::<$t>().iter() {
                let bytes = v.map(|x| canonical_f64(x as f64).to_be_bytes());
                emit(bytes.as_ref().map(|b| &b[..]));
            }
        }};
    }
    match array.data_type() {
        DataType::Null => (0..n).for_each(|_| emit(None)),
        DataType::Utf8 => array
            .as_string::<i32>()
            .iter()
            .for_each(|v| emit(v.map(str::as_bytes))),
        DataType::LargeUtf8 => array
            .as_string::<i64>()
            .iter()
            .for_each(|v| emit(v.map(str::as_bytes))),
        DataType::Utf8View => array
            .as_string_view()
            .iter()
            .for_each(|v| emit(v.map(str::as_bytes))),
        DataType::Binary => array.as_binary::<i32>().iter().for_each(&mut emit),
        DataType::LargeBinary => array.as_binary::<i64>().iter().for_each(&mut emit),
        DataType::BinaryView => array.as_binary_view().iter().for_each(&mut emit),
        DataType::Boolean => array
            .as_boolean()
            .iter()
            .for_each(|v| emit(v.map(|b| [b as u8]).as_ref().map(|b| &b[..]))),
        DataType::Int8 => ints!(Int8Type),
        DataType::Int16 => ints!(Int16Type),
        DataType::Int32 => ints!(Int32Type),
        DataType::Int64 => ints!(Int64Type),
        DataType::UInt8 => ints!(UInt8Type),
        DataType::UInt16 => ints!(UInt16Type),
        DataType::UInt32 => ints!(UInt32Type),
        DataType::UInt64 => ints!(UInt64Type),
        DataType::Float32 => floats!(Float32Type),
        DataType::Float64 => floats!(Float64Type),
        dt if MaskHash::supports(dt) => {
            let text = cast(array, &DataType::Utf8)?;
            text.as_string::<i32>()
                .iter()
                .for_each(|v| emit(v.map(str::as_bytes)));
        }
        // Reaching this means the compile-time type check was bypassed:
        // fail the read, never pass the raw value through.
        other => return exec_err!("keyed hashing does not support type {other}"),
    }
    Ok(())
}

fn canonical_f64(x: f64) -> u64 {
    if x.is_nan() {
        f64::NAN.to_bits()
    } else if x == 0.0 {
        0.0f64.to_bits()
    } else {
        x.to_bits()
    }
}

impl ScalarUDFImpl for MaskHash {
    fn name(&self) -> &str {
        "veil_mask_hash"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        invoke_unary(self.name(), args, |a| self.hash_array(a))
    }
}

/// Apply a one-argument, array-at-a-time mask function to a call's argument
/// (an array, or a scalar treated as an array of one).
pub(super) fn invoke_unary(
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
        Arc::new(ScalarUDF::new_from_impl(MaskCipher {
            key,
            dataset_id: self.dataset_id.clone(),
            column: column.to_string(),
            format_preserving,
            signature: Signature::any(1, Volatility::Immutable),
        }))
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

/// The reversible and format-preserving masks of one column (never
/// registered in a session, like the hash).
#[derive(PartialEq, Eq, Hash)]
struct MaskCipher {
    key: SecretKey,
    dataset_id: String,
    column: String,
    format_preserving: bool,
    signature: Signature,
}

impl fmt::Debug for MaskCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MaskCipher(<keyed>, {}, fpe={})",
            self.column, self.format_preserving
        )
    }
}

impl MaskCipher {
    fn apply(&self, array: &ArrayRef) -> datafusion::common::Result<ArrayRef> {
        let text = cast(array, &DataType::Utf8)?;
        let values = text.as_string::<i32>();
        if self.format_preserving {
            return Ok(Arc::new(
                FormatPreserving::new(&self.key).encrypt_array(values)?,
            ));
        }
        let mut out = StringBuilder::with_capacity(values.len(), values.len() * 24);
        let siv = SivTokens::new(&self.key, &self.dataset_id, &self.column);
        for v in siv.encrypt_all(values.iter()) {
            out.append_option(v);
        }
        Ok(Arc::new(out.finish()))
    }
}

impl ScalarUDFImpl for MaskCipher {
    fn name(&self) -> &str {
        if self.format_preserving {
            "veil_mask_fpe"
        } else {
            "veil_mask_reversible"
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        invoke_unary(self.name(), args, |a| self.apply(a))
    }
}

/// Types a reversible mask accepts: those with a text form that reads back
/// as the value (binary and nested types don't).
fn reversible_supports(dt: &DataType) -> bool {
    MaskHash::supports(dt)
        && !matches!(
            dt,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::Null
        )
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
            datafusion::functions::expr_fn::regexp_replace(
                column,
                datafusion::logical_expr::lit(r.pattern.clone()),
                datafusion::logical_expr::lit(r.replacement.clone()),
                Some(datafusion::logical_expr::lit("g")),
            ),
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
    use datafusion::arrow::array::{
        Date32Array, Float64Array, Int32Array, StringArray, UInt64Array,
    };
    use proptest::prelude::*;

    fn mask(k: u8) -> MaskHash {
        MaskHash::new(
            crate::secrets::MasterKey::from_bytes([k; 32])
                .derive(crate::secrets::KeyPurpose::HashMask { dataset_id: "d" }),
        )
    }

    fn strings(a: &ArrayRef) -> Vec<Option<String>> {
        a.as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_string))
            .collect()
    }

    #[test]
    fn nulls_stay_null_and_output_is_32_hex() {
        let a: ArrayRef = Arc::new(StringArray::from(vec![Some("x"), None]));
        let h = strings(&mask(1).hash_array(&a).unwrap());
        assert_eq!(h[1], None);
        let v = h[0].as_ref().unwrap();
        assert_eq!(v.len(), 32);
        assert!(v.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn integers_hash_by_value_across_widths() {
        let a: ArrayRef = Arc::new(Int32Array::from(vec![5]));
        let b: ArrayRef = Arc::new(UInt64Array::from(vec![5]));
        assert_eq!(
            strings(&mask(1).hash_array(&a).unwrap()),
            strings(&mask(1).hash_array(&b).unwrap())
        );
    }

    #[test]
    fn floats_canonicalise_zero() {
        let a: ArrayRef = Arc::new(Float64Array::from(vec![0.0, -0.0]));
        let h = strings(&mask(1).hash_array(&a).unwrap());
        assert_eq!(h[0], h[1]);
    }

    #[test]
    fn dates_hash_as_text() {
        let a: ArrayRef = Arc::new(Date32Array::from(vec![Some(0), None]));
        let h = strings(&mask(1).hash_array(&a).unwrap());
        let s: ArrayRef = Arc::new(StringArray::from(vec!["1970-01-01"]));
        assert_eq!(h[0], strings(&mask(1).hash_array(&s).unwrap())[0]);
        assert_eq!(h[1], None);
    }

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

    /// A reversible token seals the value's Arrow text form (as the README
    /// says): numbers in decimal, booleans as `true`/`false`, dates in
    /// ISO-8601; nulls stay null.
    #[test]
    fn reversible_tokens_seal_the_values_text() {
        let master = crate::secrets::MasterKey::from_bytes([6; 32]);
        let key = master.derive(KeyPurpose::Reversible {
            dataset_id: "d",
            column: "c",
        });
        let cipher = MaskCipher {
            key: key.clone(),
            dataset_id: "d".into(),
            column: "c".into(),
            format_preserving: false,
            signature: Signature::any(1, Volatility::Immutable),
        };
        let tokens = SivTokens::new(&key, "d", "c");
        let cases: Vec<(ArrayRef, Vec<Option<&str>>)> = vec![
            (
                Arc::new(Int32Array::from(vec![Some(-5), None])),
                vec![Some("-5"), None],
            ),
            (
                Arc::new(UInt64Array::from(vec![u64::MAX])),
                vec![Some("18446744073709551615")],
            ),
            (Arc::new(Float64Array::from(vec![1.5])), vec![Some("1.5")]),
            (
                Arc::new(datafusion::arrow::array::BooleanArray::from(vec![true])),
                vec![Some("true")],
            ),
            (
                Arc::new(Date32Array::from(vec![0])),
                vec![Some("1970-01-01")],
            ),
            (Arc::new(StringArray::from(vec!["Zoë"])), vec![Some("Zoë")]),
        ];
        for (array, texts) in cases {
            let out = strings(&cipher.apply(&array).unwrap());
            let want: Vec<Option<String>> =
                texts.iter().map(|t| t.map(|t| tokens.encrypt(t))).collect();
            assert_eq!(out, want, "{}", array.data_type());
        }
    }

    proptest! {
        #[test]
        fn same_value_same_hash_within_a_key_different_across_keys(s in ".{0,40}") {
            let a: ArrayRef = Arc::new(StringArray::from(vec![s.as_str(), s.as_str()]));
            let h1 = strings(&mask(1).hash_array(&a).unwrap());
            let h2 = strings(&mask(2).hash_array(&a).unwrap());
            prop_assert_eq!(&h1[0], &h1[1]);
            prop_assert_ne!(&h1[0], &h2[0]);
        }
    }
}
