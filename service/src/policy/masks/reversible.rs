//! Reversible masks: values that authorized people can turn back into the
//! original through an unmask request (see `governance::unmask`).
//!
//! * **Reversible** (`mask = "reversible"`): deterministic authenticated
//!   encryption, AES-SIV (RFC 5297, AES-128-SIV with a 256-bit key) under a
//!   key derived per dataset *and* column, with the dataset id and column
//!   name as associated data, so a token decrypts only where it was made.
//!   The plaintext is the value's text form (as the hash mask encodes
//!   dates, decimals, ...); the token is `rv1.` + unpadded base64url. Same
//!   value, same token within a column: counting and grouping still work.
//! * **Format-preserving** (`mask = "format_preserving"`): FF1 on text
//!   columns, every digit and letter keeping its class and every other
//!   character its place (`super::format_preserving`).
//!
//! Here: the AES-SIV tokens, the column cipher that applies either mask to
//! a column (never registered in a session, like the hash), and why a
//! masked value can't be turned back.

use aes_siv::KeyInit as _;
use aes_siv::siv::Aes128Siv;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use std::fmt;
use std::sync::Arc;

use super::format_preserving::FormatPreserving;
use super::hash::MaskHash;
use super::invoke_unary;
use crate::secrets::SecretKey;

/// Prefix of reversible tokens.
pub const TOKEN_PREFIX: &str = "rv1.";

/// Why a masked value can't be turned back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unmaskable {
    /// Not a token this column's key made (or altered).
    NotAToken,
    /// Masked by the small-domain rule: there is nothing to decrypt.
    SmallDomain,
}

impl std::fmt::Display for Unmaskable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unmaskable::NotAToken => f.write_str("not a value this column's mask produced"),
            Unmaskable::SmallDomain => f.write_str(
                "too short to have been encrypted (fewer than 1,000,000 values of its format): it was masked irreversibly",
            ),
        }
    }
}

/// AES-SIV tokens for one dataset column.
pub struct SivTokens {
    key: [u8; 32],
    dataset_id: String,
    column: String,
}

impl std::fmt::Debug for SivTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SivTokens(<keyed>, {}.{})", self.dataset_id, self.column)
    }
}

impl SivTokens {
    pub fn new(key: &SecretKey, dataset_id: &str, column: &str) -> Self {
        Self {
            key: *key.bytes(),
            dataset_id: dataset_id.to_string(),
            column: column.to_string(),
        }
    }

    fn cipher(&self) -> Aes128Siv {
        Aes128Siv::new_from_slice(&self.key).expect("a 32-byte AES-SIV key")
    }

    fn headers(&self) -> [&[u8]; 3] {
        [
            b"veil/v1/reversible",
            self.dataset_id.as_bytes(),
            self.column.as_bytes(),
        ]
    }

    /// The token for `text`.
    pub fn encrypt(&self, text: &str) -> String {
        let sealed = self
            .cipher()
            .encrypt(self.headers(), text.as_bytes())
            .expect("AES-SIV encrypts any length");
        format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(sealed))
    }

    /// Encrypt many values with one key schedule.
    pub fn encrypt_all<'a>(
        &self,
        values: impl Iterator<Item = Option<&'a str>>,
    ) -> Vec<Option<String>> {
        let mut cipher = self.cipher();
        values
            .map(|v| {
                v.map(|t| {
                    let sealed = cipher
                        .encrypt(self.headers(), t.as_bytes())
                        .expect("AES-SIV encrypts any length");
                    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(sealed))
                })
            })
            .collect()
    }

    /// The text a token was made from.
    pub fn decrypt(&self, token: &str) -> Result<String, Unmaskable> {
        let body = token
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(Unmaskable::NotAToken)?;
        let sealed = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| Unmaskable::NotAToken)?;
        let plain = self
            .cipher()
            .decrypt(self.headers(), &sealed)
            .map_err(|_| Unmaskable::NotAToken)?;
        String::from_utf8(plain).map_err(|_| Unmaskable::NotAToken)
    }
}

/// The reversible and format-preserving masks of one column (never
/// registered in a session, like the hash).
#[derive(PartialEq, Eq, Hash)]
pub(super) struct MaskCipher {
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
    pub(super) fn new(
        key: SecretKey,
        dataset_id: &str,
        column: &str,
        format_preserving: bool,
    ) -> Self {
        Self {
            key,
            dataset_id: dataset_id.to_string(),
            column: column.to_string(),
            format_preserving,
            signature: Signature::any(1, Volatility::Immutable),
        }
    }

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
pub(super) fn reversible_supports(dt: &DataType) -> bool {
    MaskHash::supports(dt)
        && !matches!(
            dt,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::Null
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::{KeyPurpose, MasterKey};
    use datafusion::arrow::array::{
        Date32Array, Float64Array, Int32Array, StringArray, UInt64Array,
    };

    fn strings(a: &ArrayRef) -> Vec<Option<String>> {
        a.as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_string))
            .collect()
    }

    #[test]
    fn siv_tokens_are_deterministic_and_bound_to_their_column() {
        let key = |c: &str| {
            MasterKey::from_bytes([4; 32]).derive(KeyPurpose::Reversible {
                dataset_id: "d",
                column: c,
            })
        };
        let a = SivTokens::new(&key("ssn"), "d", "ssn");
        let t = a.encrypt("123-45-6789");
        assert!(t.starts_with(TOKEN_PREFIX));
        assert_eq!(t, a.encrypt("123-45-6789"));
        assert_ne!(t, a.encrypt("123-45-6780"));
        assert_eq!(a.decrypt(&t).unwrap(), "123-45-6789");
        // Another column (even given this column's key) can't open it.
        let b = SivTokens::new(&key("ssn"), "d", "email");
        assert_eq!(b.decrypt(&t), Err(Unmaskable::NotAToken));
        let mut altered = t.clone();
        altered.pop();
        altered.push(if t.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(a.decrypt(&altered), Err(Unmaskable::NotAToken));
        assert_eq!(a.decrypt("123-45-6789"), Err(Unmaskable::NotAToken));
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
}
