//! The keyed hash mask, and the byte encoding it hashes values in.
//!
//! The keyed hash is a UDF that is **never registered** in a session (DESIGN
//! invariant 3): users cannot call it to build a dictionary of hashes. Its key
//! lives inside the struct, never as a literal argument, so `EXPLAIN` and
//! error messages can't show it.
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
//! hex (32 characters); nulls stay null. The sampling hash
//! (`super::sampling`) encodes row keys the same way.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type,
    UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::common::exec_err;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::sync::Arc;

use super::invoke_unary;
use crate::secrets::SecretKey;

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
