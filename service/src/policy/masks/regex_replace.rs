//! The regex mask: every match of the policy's pattern replaced, as
//! DataFusion's `regexp_replace(value, pattern, replacement, 'g')` does
//! (including its `\1` for `${1}` in the replacement), with the pattern
//! compiled once when the view is planned. `regexp_replace` compiles it
//! again for every batch, which costs more than masking a small read.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use regex::Regex;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, LazyLock};

use super::invoke_unary;
use crate::error::{Result, VeilError};
use crate::sql::bounded::{MAX_FUNCTION_OUTPUT_BYTES, too_large};

#[derive(Debug)]
pub struct MaskRegex {
    pattern: String,
    replacement: String,
    /// `replacement` with `\N` written as `${N}`, as `regexp_replace` reads it.
    expansion: String,
    re: Regex,
    signature: Signature,
}

impl PartialEq for MaskRegex {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern && self.replacement == other.replacement
    }
}

impl Eq for MaskRegex {}

impl Hash for MaskRegex {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.pattern.hash(state);
        self.replacement.hash(state);
    }
}

/// `\N` (or `\\N`) in a replacement is capture group N, as in
/// `regexp_replace`.
fn expansion(replacement: &str) -> String {
    static GROUP: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\\{1,2}(\d+)").expect("a valid pattern"));
    GROUP.replace_all(replacement, "$${$1}").into_owned()
}

impl MaskRegex {
    /// The mask, or `FailedPrecondition` if the pattern does not compile.
    pub fn new(pattern: &str, replacement: &str) -> Result<Self> {
        let re = Regex::new(pattern).map_err(|_| {
            VeilError::FailedPrecondition(
                "a regex mask's pattern is not a valid regular expression; change the policy"
                    .into(),
            )
        })?;
        Ok(Self {
            pattern: pattern.to_string(),
            replacement: replacement.to_string(),
            expansion: expansion(replacement),
            re,
            signature: Signature::any(1, Volatility::Immutable),
        })
    }

    fn replace_array(&self, array: &ArrayRef) -> datafusion::common::Result<ArrayRef> {
        let text = match array.data_type() {
            DataType::Utf8 => Arc::clone(array),
            _ => cast(array, &DataType::Utf8)?,
        };
        let values = text.as_string::<i32>();
        let mut out = StringBuilder::with_capacity(values.len(), values.value_data().len());
        let mut bytes = 0usize;
        for v in values.iter() {
            match v {
                None => out.append_null(),
                Some(v) => {
                    let masked = self.re.replace_all(v, self.expansion.as_str());
                    bytes += masked.len();
                    if bytes > MAX_FUNCTION_OUTPUT_BYTES && bytes > values.value_data().len() {
                        return Err(too_large("a regex mask", bytes));
                    }
                    out.append_value(masked);
                }
            }
        }
        Ok(Arc::new(out.finish()))
    }
}

impl ScalarUDFImpl for MaskRegex {
    fn name(&self) -> &str {
        "veil_mask_regex"
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
        invoke_unary(self.name(), args, |a| self.replace_array(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;
    use datafusion::prelude::*;

    /// The mask answers exactly what `regexp_replace(.., 'g')` answers,
    /// capture groups in both spellings included.
    #[tokio::test]
    async fn answers_as_regexp_replace_does() {
        let values = [
            Some("name-1234"),
            None,
            Some("a1b22c333"),
            Some(""),
            Some("héllo wörld 42"),
        ];
        let cases = [
            (r"\d+$", "XXX"),
            (r"[0-9]", "#"),
            (r"(\w)(\d)", r"\2\1"),
            (r"(\w)(\d)", "${2}$1"),
            (r"(?P<w>[a-z]+)", "<$w>"),
            ("^", "pre-"),
        ];
        let ctx = SessionContext::new();
        let array: ArrayRef = Arc::new(StringArray::from(values.to_vec()));
        let batch = datafusion::arrow::record_batch::RecordBatch::try_from_iter([(
            "v",
            Arc::clone(&array),
        )])
        .unwrap();
        ctx.register_batch("t", batch).unwrap();
        for (pattern, replacement) in cases {
            let mask = MaskRegex::new(pattern, replacement).unwrap();
            let ours = mask.replace_array(&array).unwrap();
            let sql = format!(
                "SELECT regexp_replace(v, '{}', '{}', 'g') AS r FROM t",
                pattern.replace('\'', "''"),
                replacement.replace('\'', "''")
            );
            let theirs = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
            assert_eq!(
                ours.as_ref(),
                theirs[0].column(0).as_ref(),
                "{pattern} -> {replacement}"
            );
        }
    }

    #[test]
    fn an_invalid_pattern_is_refused() {
        assert!(MaskRegex::new("(", "x").is_err());
    }
}
